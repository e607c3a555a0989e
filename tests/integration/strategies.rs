//! Group restart strategies (OTP's `one_for_one`, `one_for_all`,
//! `rest_for_one`): which siblings of a crashed agent are stopped and
//! restarted with it, in which order, and that nothing outside is touched.

use std::sync::Arc;
use std::time::Duration;

use agentvisor::daemon::System;
use agentvisor::events::Published as Event;
use agentvisor::supervisor::AgentState;
use agentvisor::supervisor::Fault;
use serde_json::json;

use crate::util::{self, EventLog};

/// A fleet over `specs` with `strategy` for `group`, booted,
/// with exact backoff (no jitter) from `backoff_secs`; every agent must be running.
async fn booted(dir: &std::path::Path, specs: &[&str], (group, strategy): (&str, &str), backoff_secs: f64) -> System {
    let agents = util::write_catalog(dir, specs);
    util::set_strategy(&agents, group, strategy);
    let mut settings = util::settings(dir);
    settings.supervisor.backoff_initial_secs = backoff_secs;
    settings.supervisor.backoff_jitter = 0.0;
    let fleet = util::fleet(settings, Some(&agents), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running.len(), specs.len(), "{report:?}");
    fleet
}

/// `agent`'s own lifecycle topics (without the `agent.dependency_*` notices
/// it gets about others).
fn lifecycle(log: &EventLog, agent: &str) -> Vec<&'static str> {
    log.topics_of(agent)
        .into_iter()
        .filter(|t| t.starts_with("agent.") && !t.starts_with("agent.dependency_"))
        .collect()
}

/// The only `topic` event about `agent` seen.
fn only(log: &EventLog, topic: &str, agent: &str) -> Arc<Event> {
    let found: Vec<&Arc<Event>> =
        log.seen.iter().filter(|e| e.topic == topic && e.str("agent") == Some(agent)).collect();
    assert_eq!(found.len(), 1, "{topic} {agent}: {found:?}");
    found[0].clone()
}

/// First restart delay, seconds: small, so that restarts are quick.
const FAST: f64 = 0.02;

/// Own topics of the agent that crashed, then of a sibling restarted with it.
const FAILED_CYCLE: [&str; 4] = ["agent.failed", "agent.backoff", "agent.starting", "agent.restarted"];
const SIBLING_CYCLE: [&str; 4] = ["agent.stopping", "agent.stopped", "agent.starting", "agent.restarted"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_sibling() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        util::builtin("X", "g", true, &[]),
        util::builtin("Y", "g", true, &["X"]),
        util::builtin("Z", "g", true, &[]),
        util::builtin("W", "h", true, &[]),
    ];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = booted(tmp.path(), &specs, ("g", "one_for_all"), FAST).await;
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);

    fleet.inject_fault("Y", Fault::Panic).expect("Y takes the fault");
    for agent in ["X", "Y", "Z"] {
        log.wait_agent("agent.restarted", agent).await;
    }
    log.drain();

    assert_eq!(lifecycle(&log, "Y"), FAILED_CYCLE);
    let backoff = only(&log, "agent.backoff", "Y");
    let mut with = backoff.data()["restart_with"].as_array().cloned().unwrap_or_default();
    with.sort_by_key(|v| v.to_string());
    assert_eq!(with, vec![json!("X"), json!("Z")], "{backoff:?}");
    for sibling in ["X", "Z"] {
        assert_eq!(lifecycle(&log, sibling), SIBLING_CYCLE, "{sibling}");
        let stopping = only(&log, "agent.stopping", sibling);
        assert!(stopping.str("reason").is_some_and(|r| r.contains("group restart")), "{stopping:?}");
        // Every sibling is down before any agent of the group starts again.
        let stopped = only(&log, "agent.stopped", sibling);
        for agent in ["X", "Y", "Z"] {
            assert!(stopped.seq < only(&log, "agent.starting", agent).seq, "{sibling} stopped after {agent} started");
        }
    }
    for agent in ["X", "Y", "Z"] {
        let rec = ctx.record(agent).unwrap();
        assert_eq!((rec.state, rec.restarts), (AgentState::Running, 1), "{agent}");
    }
    // The other group is not touched.
    assert!(log.topics_of("W").is_empty(), "W saw {:?}", log.topics_of("W"));
    let w = ctx.record("W").unwrap();
    assert_eq!((w.state, w.restarts), (AgentState::Running, 0));

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_in_start_order() {
    // Start order of g is X, Z (wave 1), Y (wave 2: it depends on X). OTP and
    // DESIGN §2 ("dependencies first") restart the group in that order.
    let tmp = tempfile::tempdir().unwrap();
    let specs =
        [util::builtin("X", "g", true, &[]), util::builtin("Y", "g", true, &["X"]), util::builtin("Z", "g", true, &[])];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = booted(tmp.path(), &specs, ("g", "one_for_all"), FAST).await;
    let mut log = EventLog::new(&fleet);

    fleet.inject_fault("Y", Fault::Panic).expect("Y takes the fault");
    for agent in ["X", "Y", "Z"] {
        log.wait_agent("agent.restarted", agent).await;
    }
    let starting = |agent: &str| only(&log, "agent.starting", agent).seq;
    assert!(starting("X") < starting("Y"), "Y was restarted before its dependency X: {:?}", log.topics_of("Y"));
    assert!(starting("Z") < starting("Y"), "Y (wave 2) was restarted before Z (wave 1)");
    // Hence Y, restarted after X, needs no `agent.dependency_restarted` about it.
    assert!(!log.topics_of("Y").contains(&"agent.dependency_restarted"), "{:?}", log.topics_of("Y"));

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_later_siblings() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        util::builtin("R1", "chain", true, &[]),
        util::builtin("R2", "chain", true, &["R1"]),
        util::builtin("R3", "chain", true, &["R2"]),
    ];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = booted(tmp.path(), &specs, ("chain", "rest_for_one"), FAST).await;
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);

    fleet.inject_fault("R2", Fault::Panic).expect("R2 takes the fault");
    log.wait_agent("agent.restarted", "R2").await;
    log.wait_agent("agent.restarted", "R3").await;
    log.drain();

    assert_eq!(lifecycle(&log, "R2"), FAILED_CYCLE);
    assert_eq!(only(&log, "agent.backoff", "R2").data()["restart_with"], json!(["R3"]));
    assert_eq!(lifecycle(&log, "R3"), SIBLING_CYCLE);
    // R3 is down before R2 starts again, and starts after it (start order).
    assert!(only(&log, "agent.stopped", "R3").seq < only(&log, "agent.starting", "R2").seq);
    assert!(only(&log, "agent.starting", "R2").seq < only(&log, "agent.starting", "R3").seq);
    for agent in ["R2", "R3"] {
        let rec = ctx.record(agent).unwrap();
        assert_eq!((rec.state, rec.restarts), (AgentState::Running, 1), "{agent}");
    }
    // R1, started before R2, is untouched.
    assert!(log.topics_of("R1").is_empty(), "R1 saw {:?}", log.topics_of("R1"));
    let r1 = ctx.record("R1").unwrap();
    assert_eq!((r1.state, r1.restarts), (AgentState::Running, 0));

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_touches_only_the_failed_agent() {
    let tmp = tempfile::tempdir().unwrap();
    // O1 starts first, so one_for_all or rest_for_one would take O2 and O3 with it.
    let specs = [
        util::builtin("O1", "solo", true, &[]),
        util::builtin("O2", "solo", true, &["O1"]),
        util::builtin("O3", "solo", true, &[]),
    ];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = booted(tmp.path(), &specs, ("solo", "one_for_one"), FAST).await;
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);

    fleet.inject_fault("O1", Fault::Panic).expect("O1 takes the fault");
    let restarted = log.wait_agent("agent.restarted", "O1").await;
    // The dependent is told once O1 is back; it is not restarted.
    let told = log.wait_agent("agent.dependency_restarted", "O2").await;
    assert_eq!(told.str("dependency"), Some("O1"));
    assert!(told.seq > restarted.seq);
    log.drain();

    assert_eq!(lifecycle(&log, "O1"), FAILED_CYCLE);
    assert_eq!(only(&log, "agent.backoff", "O1").data()["restart_with"], json!([]));
    assert_eq!(log.topics_of("O2"), vec!["agent.dependency_restarted"]);
    assert!(log.topics_of("O3").is_empty(), "O3 saw {:?}", log.topics_of("O3"));
    assert_eq!(ctx.record("O1").unwrap().restarts, 1);
    for agent in ["O2", "O3"] {
        let rec = ctx.record(agent).unwrap();
        assert_eq!((rec.state, rec.restarts), (AgentState::Running, 0), "{agent}");
    }
    assert_eq!(ctx.state("O1"), Some(AgentState::Running));

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_sibling_during_backoff_keeps_the_restart() {
    // one_for_all: Y crashes, X and Z are stopped with it, all three wait for
    // Y's backoff (1 s). An operator then stops X: that cancels X's restart,
    // not Y's — Y must still come back.
    let tmp = tempfile::tempdir().unwrap();
    let specs =
        [util::builtin("X", "g", true, &[]), util::builtin("Y", "g", true, &[]), util::builtin("Z", "g", true, &[])];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = booted(tmp.path(), &specs, ("g", "one_for_all"), 1.0).await;
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);

    fleet.inject_fault("Y", Fault::Panic).expect("Y takes the fault");
    log.wait_agent("agent.backoff", "Y").await;
    log.wait_agent("agent.stopped", "X").await;
    fleet.stop_agent("X", AgentState::Stopped, "operator stop").await.expect("X stops");
    let back = tokio::time::timeout(Duration::from_secs(5), log.wait_agent("agent.restarted", "Y")).await;
    assert!(back.is_ok(), "Y never restarted; Y is {:?}, Z is {:?}", ctx.state("Y"), ctx.state("Z"));
    assert_eq!(ctx.state("Y"), Some(AgentState::Running));
    assert_eq!(ctx.state("X"), Some(AgentState::Stopped), "the operator's stop holds");

    fleet.shutdown(Duration::from_secs(10)).await;
}
