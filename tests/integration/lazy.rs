//! On-demand starts: dependency chains in order, single flight, the start
//! SLA with rollback.

use std::time::{Duration, Instant};

use agentvisor::core::{ErrorCode, Task};
use agentvisor::supervisor::AgentState;
use agentvisor::supervisor::StartError;
use futures::future::join_all;
use serde_json::json;

use crate::util::{self, EventLog, builtin, jsonl_agent, write_catalog};

fn task(id: &str) -> Task {
    Task::new(id, "reasoning", json!("why?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_chain_starts_dependencies_first() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = util::fleet(util::settings(dir.path()), None, "learning").await;
    fleet.boot().await;
    let ctx = fleet.ctx();
    assert_eq!(ctx.state("ChainOfThoughtAgent"), Some(AgentState::Dormant));
    assert_eq!(ctx.state("GoTToTAgent"), Some(AgentState::Dormant));
    let mut log = EventLog::new(&fleet);

    fleet.ensure("GoTToTAgent").await.expect("starts");

    assert_eq!(ctx.state("ChainOfThoughtAgent"), Some(AgentState::Running));
    assert_eq!(ctx.state("GoTToTAgent"), Some(AgentState::Running));
    let started = log.wait_for(Duration::from_secs(5), "lazy.started", |e| e.topic == "lazy.started").await;
    assert_eq!(started.data()["agent"], "GoTToTAgent");
    let cot = log.wait_agent("agent.started", "ChainOfThoughtAgent").await.seq;
    let got_starting = log.wait_agent("agent.starting", "GoTToTAgent").await.seq;
    assert!(cot < got_starting, "the dependency runs before its dependent starts");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_cause_one_start() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = util::fleet(util::settings(dir.path()), None, "learning").await;
    fleet.boot().await;
    let mut log = EventLog::new(&fleet);

    let results = join_all((0..50).map(|_| fleet.ensure("CognitiveModelAgent"))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    log.drain();
    let starts =
        |agent: &str| log.seen.iter().filter(|e| e.topic == "agent.starting" && e.str("agent") == Some(agent)).count();
    assert_eq!(starts("CognitiveModelAgent"), 1);
    assert_eq!(starts("ChainOfThoughtAgent"), 1);
    let lazy = log.seen.iter().filter(|e| e.topic == "lazy.started").count();
    assert_eq!(lazy, 1, "one on-demand start for 50 requests");
    let metrics = fleet.ctx().metrics.render();
    assert!(metrics.contains("agentvisor_lazy_starts_total{outcome=\"ok\"} 1"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_past_the_sla_times_out_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let pidfile_s = pidfile.display().to_string();
    let agents = write_catalog(
        dir.path(),
        &[
            &builtin("Base", "infra", true, &[]),
            &builtin("Middle", "lazy", false, &["Base"]),
            &jsonl_agent(
                "NeverReady",
                "lazy",
                false,
                &["Middle"],
                &[("FIXTURE_NEVER_READY", "1"), ("FIXTURE_PIDFILE", &pidfile_s)],
                60.0,
            ),
        ],
    );
    let mut settings = util::settings(dir.path());
    settings.lazy_loader.startup_timeout_seconds = 1.0;
    let fleet = util::fleet(settings, Some(&agents), "all").await;
    fleet.boot().await;
    let mut log = EventLog::new(&fleet);

    let t0 = Instant::now();
    let err = fleet.ensure("NeverReady").await.unwrap_err();
    assert!(matches!(err, StartError::Timeout { ref agent, .. } if agent == "NeverReady"), "{err:?}");
    assert_eq!(err.code(), ErrorCode::StartTimeout);
    assert!(t0.elapsed() < Duration::from_secs(10), "the SLA bounds the wait");

    // Rolled back: no half-started dependency remains.
    let ctx = fleet.ctx();
    util::poll_until(Duration::from_secs(5), "rollback", || {
        ctx.state("Middle") == Some(AgentState::Dormant) && ctx.state("NeverReady") == Some(AgentState::Dormant)
    })
    .await;
    assert_eq!(ctx.state("Base"), Some(AgentState::Running), "essential agents are not rolled back");
    let failed = log.wait_for(Duration::from_secs(5), "lazy.failed", |e| e.topic == "lazy.failed").await;
    assert_eq!(failed.data()["code"], "start_timeout");
    let pids: Vec<u32> =
        std::fs::read_to_string(&pidfile).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!pids.is_empty(), "the child was started");
    util::poll_until(Duration::from_secs(5), "child gone", || pids.iter().all(|p| !util::pid_alive(*p))).await;

    // A task for it gets the same code.
    let reply = fleet.call("NeverReady", task("t1")).await.unwrap_err();
    assert_eq!(reply.code, ErrorCode::StartTimeout, "{reply:?}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_start_dormant_agents_and_never_get_fake_answers() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = util::fleet(util::settings(dir.path()), None, "learning").await;
    fleet.boot().await;
    // An llm agent with no model backend configured says so.
    let err = fleet.call("CognitiveModelAgent", task("t1")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NoBackend, "{err:?}");
    assert!(err.message.contains("no model backend is configured"), "{err:?}");
    assert_eq!(fleet.ctx().state("CognitiveModelAgent"), Some(AgentState::Running));
    let err = fleet.call("NoSuchAgent", task("t2")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownAgent);
    fleet.shutdown(Duration::from_secs(10)).await;

    // A builtin agent whose behaviour is not written says so (a catalog of
    // its own: the reference catalog's agents all get behaviours in time).
    let dir = tempfile::tempdir().unwrap();
    let agents = write_catalog(dir.path(), &[&builtin("Unwritten", "lazy", false, &[])]);
    let fleet = util::fleet(util::settings(dir.path()), Some(&agents), "all").await;
    fleet.boot().await;
    let err = fleet.call("Unwritten", Task::new("t3", "unwritten.do", json!({}))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotImplemented, "{err:?}");
    assert!(err.message.contains("Unwritten (builtin runtime) has no task behaviour yet"), "{err:?}");
    assert_eq!(fleet.ctx().state("Unwritten"), Some(AgentState::Running), "started on demand, then answered");
    fleet.shutdown(Duration::from_secs(10)).await;
}
