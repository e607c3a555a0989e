//! Crashes and the restart policy of one agent: capped exponential backoff,
//! restart intensity → `fatal` and escalation, restart types, backoff reset
//! after a clean run, operator restart — for builtin agents (injected
//! panics) and `jsonl` process agents (real child exits, real SIGKILL).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentvisor::config::Settings;
use agentvisor::core::{ErrorCode, Task};
use agentvisor::events::Published as Event;
use agentvisor::supervisor::Fault;
use agentvisor::supervisor::{AgentState, Fleet};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::util::{self, EventLog};

/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(20);

/// First restart delay of these tests, seconds (jitter off, so delays are exact).
const INITIAL_SECS: f64 = 0.02;

/// Settings with fast, exact backoff: `INITIAL_SECS` doubling, no jitter.
fn fast_settings(data: &Path) -> Settings {
    let mut s = util::settings(data);
    s.supervisor.backoff_initial_secs = INITIAL_SECS;
    s.supervisor.backoff_jitter = 0.0;
    s
}

/// The first `topic` event about `agent` with a seq above `after`
/// (`EventLog::wait_agent` would return an older one from an earlier crash).
async fn next_event(log: &mut EventLog, after: u64, topic: &str, agent: &str) -> Arc<Event> {
    log.wait_for(WAIT, &format!("{topic} {agent} after seq {after}"), |e| {
        e.seq > after && e.topic == topic && e.str("agent") == Some(agent)
    })
    .await
}

/// The seq of the newest event received so far (0: none yet).
fn mark(log: &mut EventLog) -> u64 {
    log.drain();
    log.seen.last().map_or(0, |e| e.seq)
}

/// `delay_ms` of an `agent.backoff` event.
fn delay_ms(backoff: &Event) -> f64 {
    backoff.data().get("delay_ms").and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no delay_ms in {backoff:?}"))
}

/// `pid` of an `agent.restarted` / `agent.started` event of a process agent.
fn pid_of(event: &Event) -> u32 {
    let pid = event.data().get("pid").and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no pid in {event:?}"));
    u32::try_from(pid).expect("pid fits u32")
}

fn assert_delay(backoff: &Event, expected_ms: f64) {
    let got = delay_ms(backoff);
    assert!((got - expected_ms).abs() < 1e-6, "backoff delay {got} ms, expected {expected_ms} ms: {backoff:?}");
}

/// Panics `agent` (running now) and waits for the whole restart cycle after
/// seq `after`, checking its order; returns the `agent.backoff` and
/// `agent.restarted` events.
async fn crash_and_restart(fleet: &Fleet, log: &mut EventLog, agent: &str, after: u64) -> (Arc<Event>, Arc<Event>) {
    fleet.inject_fault(agent, Fault::Panic).expect("the running agent takes the fault");
    let failed = next_event(log, after, "agent.failed", agent).await;
    let backoff = next_event(log, failed.seq, "agent.backoff", agent).await;
    let starting = next_event(log, backoff.seq, "agent.starting", agent).await;
    let restarted = next_event(log, starting.seq, "agent.restarted", agent).await;
    (backoff, restarted)
}

/// Panics `agent` until it is `fatal` (`max_restarts` restarts, then one
/// crash more); returns the `agent.fatal` event.
async fn crash_until_fatal(fleet: &Fleet, log: &mut EventLog, agent: &str) -> Arc<Event> {
    let max = fleet.ctx().settings.supervisor.max_restarts;
    let mut after = mark(log);
    for _ in 0..max {
        after = crash_and_restart(fleet, log, agent, after).await.1.seq;
    }
    fleet.inject_fault(agent, Fault::Panic).expect("the running agent takes the fault");
    next_event(log, after, "agent.fatal", agent).await
}

fn echo_task(id: &str, value: i64) -> Task {
    Task::new(id, "x", json!({"op": "echo", "value": value}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_panic_restarts_with_backoff_then_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let agents = util::write_catalog(
        tmp.path(),
        &[
            &util::builtin("A", "core", true, &[]),
            &util::builtin("B", "core", true, &["A"]),
            &util::builtin("C", "core", true, &[]),
        ],
    );
    let fleet = util::fleet(fast_settings(tmp.path()), Some(&agents), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running.len(), 3, "{report:?}");
    let ctx = fleet.ctx().clone();
    let max = ctx.settings.supervisor.max_restarts;
    assert_eq!(max, 3, "the default intensity is 3 restarts");
    let mut log = EventLog::new(&fleet);

    let mut after = 0;
    for i in 0..max {
        let (backoff, restarted) = crash_and_restart(&fleet, &mut log, "A", after).await;
        // Doubling from the initial delay, jitter off.
        assert_delay(&backoff, INITIAL_SECS * 1e3 * f64::from(1u32 << i));
        assert_eq!(restarted.data()["restarts"], json!(i + 1), "{restarted:?}");
        assert_eq!(ctx.record("A").unwrap().restarts, i + 1);
        // The dependent is told, after A is back.
        let told = next_event(&mut log, restarted.seq, "agent.dependency_restarted", "B").await;
        assert_eq!(told.str("dependency"), Some("A"), "{told:?}");
        assert_eq!(ctx.state("C"), Some(AgentState::Running));
        after = told.seq;
    }

    // One crash more than the intensity allows within the window: fatal.
    fleet.inject_fault("A", Fault::Panic).expect("A takes the fault");
    let fatal = next_event(&mut log, after, "agent.fatal", "A").await;
    assert!(fatal.str("reason").is_some_and(|r| r.contains("restart intensity exceeded")), "{fatal:?}");
    let escalated = log
        .wait_for(WAIT, "group.escalated for A", |e| e.topic == "group.escalated" && e.str("agent") == Some("A"))
        .await;
    assert_eq!(escalated.str("group"), Some("core"));
    assert!(escalated.seq > fatal.seq);
    let dep_fatal = next_event(&mut log, after, "agent.dependency_fatal", "B").await;
    assert_eq!(dep_fatal.str("dependency"), Some("A"));
    assert_eq!(ctx.state("A"), Some(AgentState::Fatal));
    assert_eq!(ctx.record("A").unwrap().restarts, max);

    // A fatal agent stays down: nothing restarts it.
    let revived =
        tokio::time::timeout(Duration::from_millis(300), next_event(&mut log, fatal.seq, "agent.starting", "A")).await;
    assert!(revived.is_err(), "a fatal agent was started again: {revived:?}");
    log.drain();

    // A's lifecycle, exactly: three full restart cycles, then fatal.
    let a_lifecycle: Vec<&str> = log.topics_of("A").into_iter().filter(|t| t.starts_with("agent.")).collect();
    let mut expected = Vec::new();
    for _ in 0..max {
        expected.extend(["agent.failed", "agent.backoff", "agent.starting", "agent.restarted"]);
    }
    expected.extend(["agent.failed", "agent.fatal"]);
    assert_eq!(a_lifecycle, expected);

    // B is told, never restarted; C is not touched at all.
    let mut b_expected = vec!["agent.dependency_restarted"; max as usize];
    b_expected.push("agent.dependency_fatal");
    assert_eq!(log.topics_of("B"), b_expected);
    for other in ["B", "C"] {
        let rec = ctx.record(other).unwrap();
        assert_eq!((rec.state, rec.restarts), (AgentState::Running, 0), "{other}");
    }
    assert!(log.topics_of("C").is_empty(), "C saw {:?}", log.topics_of("C"));

    // Every event, in the order received, has the next seq (no loss, no reordering).
    for pair in log.seen.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "{} then {}", pair[0].topic, pair[1].topic);
    }

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_exit_restarts_then_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("p.pids");
    let env = [("FIXTURE_EXIT_AFTER_SECS", "0.3"), ("FIXTURE_PIDFILE", pidfile.to_str().unwrap())];
    let agents = util::write_catalog(
        tmp.path(),
        &[&util::jsonl_agent("P", "procs", true, &[], &env, 10.0), &util::builtin("Q", "procs", true, &[])],
    );
    let mut settings = fast_settings(tmp.path());
    // Four runs of a Python child fit in 5 s, but not on a loaded machine.
    settings.supervisor.within_secs = 60.0;
    let fleet = util::fleet(settings, Some(&agents), "all").await;
    let mut log = EventLog::new(&fleet);
    let report = fleet.boot().await;
    assert_eq!(report.running.len(), 2, "{report:?}");
    let ctx = fleet.ctx().clone();
    let max = ctx.settings.supervisor.max_restarts;

    let first = next_event(&mut log, 0, "agent.started", "P").await;
    let mut pids = vec![pid_of(&first)];
    let mut after = first.seq;
    for i in 0..max {
        let failed = next_event(&mut log, after, "agent.failed", "P").await;
        assert!(failed.str("reason").is_some_and(|r| r.contains("exit status: 3")), "{failed:?}");
        let restarted = next_event(&mut log, failed.seq, "agent.restarted", "P").await;
        assert_eq!(restarted.data()["restarts"], json!(i + 1));
        let pid = pid_of(&restarted);
        assert!(!pids.contains(&pid), "restart {} reused pid {pid}: {pids:?}", i + 1);
        pids.push(pid);
        after = restarted.seq;
    }
    let failed = next_event(&mut log, after, "agent.failed", "P").await;
    assert!(failed.str("reason").is_some_and(|r| r.contains("exit status: 3")), "{failed:?}");
    next_event(&mut log, failed.seq, "agent.fatal", "P").await;
    let rec = ctx.record("P").unwrap();
    assert_eq!((rec.state, rec.restarts, rec.pid), (AgentState::Fatal, max, None));

    // Every child the fixture ever ran is one the supervisor reported, and none is left.
    let written: BTreeSet<u32> =
        std::fs::read_to_string(&pidfile).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(written, pids.iter().copied().collect::<BTreeSet<u32>>());
    util::poll_until(Duration::from_secs(5), "every child of P to be gone", || {
        pids.iter().all(|&p| !util::pid_alive(p))
    })
    .await;

    let q = ctx.record("Q").unwrap();
    assert_eq!((q.state, q.restarts), (AgentState::Running, 0));
    assert!(
        !log.topics_of("Q").iter().any(|t| *t != "agent.starting" && *t != "agent.started"),
        "{:?}",
        log.topics_of("Q")
    );

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child_process_restarts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let agents = util::write_catalog(tmp.path(), &[&util::jsonl_agent("P", "procs", true, &[], &[], 10.0)]);
    let fleet = util::fleet(fast_settings(tmp.path()), Some(&agents), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running, vec!["P".to_string()], "{report:?}");
    let ctx = fleet.ctx().clone();
    let old = ctx.record("P").unwrap().pid.expect("a running process agent has a pid");
    let mut log = EventLog::new(&fleet);

    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("SIGKILL the child");
    let failed = log.wait_agent("agent.failed", "P").await;
    assert!(failed.str("reason").is_some_and(|r| r.contains("signal: 9")), "{failed:?}");
    let restarted = next_event(&mut log, failed.seq, "agent.restarted", "P").await;
    let new = pid_of(&restarted);
    assert_ne!(new, old);
    let rec = ctx.record("P").unwrap();
    assert_eq!((rec.state, rec.pid, rec.restarts), (AgentState::Running, Some(new), 1));
    util::poll_until(Duration::from_secs(5), "the killed child to be reaped", || !util::pid_alive(old)).await;

    // The new child answers tasks.
    let out = fleet.call("P", echo_task("t1", 42)).await.expect("the restarted agent answers").output;
    assert_eq!(out["echo"], json!(42), "{out}");
    assert_eq!(out["pid"], json!(new), "{out}");

    fleet.shutdown(Duration::from_secs(10)).await;
    assert!(!util::pid_alive(new), "shutdown left the child {new} running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_temporary_restart_types() {
    let tmp = tempfile::tempdir().unwrap();
    let transient = util::builtin("T", "kinds", true, &[]) + "restart: {type: transient}\n";
    let temporary = util::builtin("M", "kinds", true, &[]) + "restart: {type: temporary}\n";
    // On demand, so that its 0.2 s lifetime starts after the subscription.
    let env = [("FIXTURE_EXIT_AFTER_SECS", "0.2"), ("FIXTURE_EXIT_CODE", "0")];
    let clean_exit = util::jsonl_agent("E", "kinds", false, &[], &env, 10.0) + "restart: {type: transient}\n";
    let agents = util::write_catalog(tmp.path(), &[&transient, &temporary, &clean_exit]);
    let fleet = util::fleet(fast_settings(tmp.path()), Some(&agents), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running.len(), 2, "{report:?}");
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);
    let quiet = Duration::from_millis(500);

    // transient + abnormal exit (panic): restarted.
    let after = mark(&mut log);
    crash_and_restart(&fleet, &mut log, "T", after).await;
    assert_eq!(ctx.state("T"), Some(AgentState::Running));
    assert_eq!(ctx.record("T").unwrap().restarts, 1);

    // temporary + panic: failed, and it stays failed.
    let after = mark(&mut log);
    fleet.inject_fault("M", Fault::Panic).expect("M takes the fault");
    let failed = next_event(&mut log, after, "agent.failed", "M").await;
    let again = tokio::time::timeout(
        quiet,
        log.wait_for(WAIT, "any restart step of M", |e| {
            e.seq > failed.seq
                && e.str("agent") == Some("M")
                && matches!(e.topic, "agent.backoff" | "agent.starting" | "agent.restarted")
        }),
    )
    .await;
    assert!(again.is_err(), "a temporary agent was restarted: {again:?}");
    let rec = ctx.record("M").unwrap();
    assert_eq!((rec.state, rec.restarts), (AgentState::Failed, 0));

    // transient process whose child exits with status 0: stopped, not restarted.
    let after = mark(&mut log);
    fleet.ensure("E").await.expect("E starts on demand");
    let started = next_event(&mut log, after, "agent.started", "E").await;
    let stopped = next_event(&mut log, started.seq, "agent.stopped", "E").await;
    assert!(stopped.str("reason").is_some_and(|r| r.contains("exited normally")), "{stopped:?}");
    let again = tokio::time::timeout(
        quiet,
        log.wait_for(WAIT, "any restart step of E", |e| {
            e.seq > stopped.seq
                && e.str("agent") == Some("E")
                && matches!(e.topic, "agent.failed" | "agent.backoff" | "agent.starting" | "agent.restarted")
        }),
    )
    .await;
    assert!(again.is_err(), "a transient agent was restarted after a clean exit: {again:?}");
    assert!(!log.topics_of("E").contains(&"agent.failed"), "{:?}", log.topics_of("E"));
    let rec = ctx.record("E").unwrap();
    assert_eq!((rec.state, rec.restarts, rec.pid), (AgentState::Stopped, 0, None));

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let agents = util::write_catalog(tmp.path(), &[&util::builtin("A", "core", true, &[])]);
    let mut settings = fast_settings(tmp.path());
    settings.supervisor.reset_after_secs = 0.2;
    settings.supervisor.max_restarts = 2;
    let fleet = util::fleet(settings, Some(&agents), "all").await;
    fleet.boot().await;
    let ctx = fleet.ctx().clone();
    let mut log = EventLog::new(&fleet);

    let (backoff, restarted) = crash_and_restart(&fleet, &mut log, "A", 0).await;
    assert_delay(&backoff, INITIAL_SECS * 1e3);
    util::poll_until(Duration::from_secs(5), "A to run cleanly past reset_after_secs", || {
        ctx.record("A").and_then(|r| r.uptime()).is_some_and(|up| up > Duration::from_millis(250))
    })
    .await;
    // Without the reset this one would wait twice as long.
    let (backoff, restarted) = crash_and_restart(&fleet, &mut log, "A", restarted.seq).await;
    assert_delay(&backoff, INITIAL_SECS * 1e3);

    // A clean run resets the backoff, not the intensity window: 2 restarts
    // within 5 s are spent, so the next crash is fatal.
    fleet.inject_fault("A", Fault::Panic).expect("A takes the fault");
    next_event(&mut log, restarted.seq, "agent.fatal", "A").await;
    assert_eq!(ctx.record("A").unwrap().restarts, 2);

    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_revives_fatal_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let agents = util::write_catalog(tmp.path(), &[&util::builtin("A", "core", true, &[])]);
    let fleet = util::fleet(fast_settings(tmp.path()), Some(&agents), "all").await;
    fleet.boot().await;
    let ctx = fleet.ctx().clone();
    let max = ctx.settings.supervisor.max_restarts;
    let mut log = EventLog::new(&fleet);

    let fatal = crash_until_fatal(&fleet, &mut log, "A").await;
    assert_eq!(ctx.state("A"), Some(AgentState::Fatal));
    let refused = fleet.call("A", echo_task("t0", 1)).await.expect_err("a fatal agent takes no task");
    assert_eq!(refused.code, ErrorCode::AgentFatal, "{refused}");

    fleet.restart_agent("A").await.expect("operator restart of a fatal agent");
    let started = next_event(&mut log, fatal.seq, "agent.started", "A").await;
    assert_eq!(ctx.state("A"), Some(AgentState::Running));
    // An operator restart is not a supervisor restart.
    assert_eq!(ctx.record("A").unwrap().restarts, max);

    // Its restart intensity and backoff were forgotten: the next crash is
    // restarted after the initial delay instead of being fatal at once.
    let (backoff, _) = crash_and_restart(&fleet, &mut log, "A", started.seq).await;
    assert_delay(&backoff, INITIAL_SECS * 1e3);
    assert_eq!(ctx.state("A"), Some(AgentState::Running));
    assert_eq!(ctx.record("A").unwrap().restarts, max + 1);

    fleet.shutdown(Duration::from_secs(10)).await;
}
