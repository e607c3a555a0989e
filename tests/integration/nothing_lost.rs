//! Nothing accepted is lost: restarts of RequestCoordinator, of the agent
//! serving the tasks and of an agent others depend on, and failures of the
//! infrastructure components (HybridRouter, ModelScheduler, BusDispatcher)
//! while tasks are in flight — every task gets exactly one reply, over the
//! real ZeroMQ bus, and the same client socket goes on afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentvisor::core::Fault;
use serde_json::{Value, json};
use zeromq::DealerSocket;

use crate::fake_openai::{Behaviour, FakeOpenAi, local_and_cloud};
use crate::util::{self, EventLog};

/// Collects replies to `ids` until each has one (panics after `wait`),
/// then listens `quiet` longer for duplicates. Chunks are not sent here.
/// Returns every reply by id (a duplicate makes a `Vec` of two).
async fn collect(bus: &mut DealerSocket, ids: &[String], wait: Duration) -> BTreeMap<String, Vec<Value>> {
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let deadline = Instant::now() + wait;
    while got.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {} of {} tasks answered", got.len(), ids.len());
        let reply = util::recv_json_within(bus, left).await;
        let id = reply["id"].as_str().unwrap_or_default().to_string();
        got.entry(id).or_default().push(reply);
    }
    // Anything more is a duplicate (or a stray): listen a little longer.
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(300), zeromq::SocketRecv::recv(bus)).await {
        let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).unwrap_or_default();
        let reply: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        got.entry(reply["id"].as_str().unwrap_or_default().to_string()).or_default().push(reply);
    }
    got
}

/// Asserts exactly one reply per id and nothing else; the error codes seen.
fn exactly_once(got: &BTreeMap<String, Vec<Value>>, ids: &[String]) -> BTreeMap<String, usize> {
    for id in ids {
        let n = got.get(id).map_or(0, Vec::len);
        assert_eq!(n, 1, "task {id} got {n} replies: {:?}", got.get(id));
    }
    assert_eq!(
        got.len(),
        ids.len(),
        "replies to unknown ids: {:?}",
        got.keys().filter(|k| !ids.contains(k)).collect::<Vec<_>>()
    );
    let mut codes = BTreeMap::new();
    for replies in got.values() {
        let r = &replies[0];
        let code =
            if r["status"] == "ok" { "ok".to_string() } else { r["error"]["code"].as_str().unwrap_or("?").to_string() };
        *codes.entry(code).or_insert(0) += 1;
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_300_slow_tasks_in_flight_answer_every_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut bus = util::dealer(&ingress).await;
    // The operator's own client: restarts go over the bus as `system.restart`.
    let mut admin = util::dealer(&ingress).await;
    let mut log = EventLog::new(&fleet);
    // The agent named after the bus, the serving agent, and its dependency.
    for target in ["RequestCoordinator", "UnifiedUtilsAgent", "ObservabilityHub_PC2"] {
        let ids: Vec<String> = (0..300).map(|i| format!("{target}-{i}")).collect();
        for id in &ids {
            util::send_json(&mut bus, &json!({"id": id, "type": "utils.sleep", "input": 0.2})).await;
        }
        // Let the first tasks run, then restart while the rest are queued or running.
        util::poll_until(Duration::from_secs(20), "tasks running", || {
            fleet.bus.to_json()["running"].as_u64().unwrap_or(0) > 0
        })
        .await;
        let restarted = util::ask(
            &mut admin,
            json!({"id": format!("restart-{target}"), "type": "system.restart", "input": target}),
        )
        .await;
        assert_eq!(restarted["output"]["state"], "running", "{restarted}");
        log.wait_agent("agent.started", target).await;
        let got = collect(&mut bus, &ids, Duration::from_secs(60)).await;
        let codes = exactly_once(&got, &ids);
        eprintln!("restart {target}: {codes:?}");
        if target != "UnifiedUtilsAgent" {
            // Neither the bus nor the serving agent went away: every task is done.
            assert_eq!(codes.get("ok"), Some(&300), "{target}: {codes:?}");
        } else {
            // Tasks running in the restarted agent fail; the rest are served.
            assert!(
                codes.keys().all(|c| ["ok", "agent_failed", "agent_not_running"].contains(&c.as_str())),
                "{codes:?}"
            );
            assert!(codes.get("ok").copied().unwrap_or(0) >= 200, "{codes:?}");
        }
        // The same client socket goes on.
        let reply =
            util::ask(&mut bus, json!({"id": format!("after-{target}"), "type": "utils.echo", "input": "still here"}))
                .await;
        assert_eq!(reply["output"], "still here", "{reply}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_failures_under_load_answer_every_task_once_and_restart() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Delay(Duration::from_millis(20), Box::new(Behaviour::Answer("fine".into()))));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| local_and_cloud(s, &fake)).await;
    let mut bus = util::dealer(&ingress).await;
    let mut log = EventLog::new(&fleet);
    for component in ["HybridRouter", "ModelScheduler", "BusDispatcher"] {
        let ids: Vec<String> = (0..200).map(|i| format!("{component}-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            if i == 100 {
                fleet.infra.inject_fault(component, Fault::Panic).unwrap();
            }
            util::send_json(&mut bus, &json!({"id": id, "type": "simple_chat", "input": "hello"})).await;
        }
        let got = collect(&mut bus, &ids, Duration::from_secs(60)).await;
        let codes = exactly_once(&got, &ids);
        eprintln!("{component} failed under load: {codes:?}");
        // Calls in flight finish across the restart; calls still in the crashed
        // router's mailbox are sent again to the new one.
        assert_eq!(codes.get("ok"), Some(&200), "{component}: {codes:?}");

        let restarted = log
            .wait_for(Duration::from_secs(20), &format!("infra.restarted {component}"), |e| {
                e.topic == "infra.restarted" && e.str("component") == Some(component)
            })
            .await;
        assert_eq!(restarted.data()["restarts"], 1, "{:?}", restarted.data());
        assert!(log.seen.iter().any(|e| e.topic == "infra.failed" && e.str("component") == Some(component)));
        assert_eq!(fleet.infra.status()[component]["state"], "running", "{}", fleet.infra.status());
        let metrics = fleet.ctx().metrics.render();
        let line = format!("agentvisor_infra_restarts_total{{component=\"{component}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}");
    }
    // Callers reach the new instances: a model call, the local scheduler, the bus.
    let reply = util::ask(&mut bus, json!({"id": "after-chat", "type": "simple_chat", "input": "hello"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let reply = util::ask(&mut bus, json!({"id": "after-models", "type": "models.status"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infrastructure_component_past_its_restart_intensity_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, _) = util::bus_fleet(dir.path(), "core", |s| s.supervisor.backoff_jitter = 0.0).await;
    let mut log = EventLog::new(&fleet);
    // max_restarts 3 within 5 s: the fourth failure is one too many.
    for n in 1..=4u32 {
        util::poll_until(Duration::from_secs(10), "ModelScheduler running", || {
            fleet.infra.status()["ModelScheduler"]["state"] == "running"
        })
        .await;
        fleet.infra.inject_fault("ModelScheduler", Fault::Panic).unwrap();
        if n < 4 {
            log.wait_for(Duration::from_secs(10), "infra.restarted", |e| {
                e.topic == "infra.restarted" && e.data()["restarts"] == n
            })
            .await;
        }
    }
    let why = tokio::time::timeout(Duration::from_secs(10), fleet.infra.fatal()).await.expect("fatal in time");
    assert!(why.contains("ModelScheduler") && why.contains("restart intensity"), "{why}");
    log.wait_for(Duration::from_secs(5), "infra.fatal", |e| e.topic == "infra.fatal").await;
    assert_eq!(fleet.infra.status()["ModelScheduler"]["state"], "fatal");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// The same rule through the binary: the daemon exits non-zero after an
/// orderly stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exits_non_zero_when_its_infrastructure_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "run",
        "--profile",
        "core",
        "--data-dir",
        data.to_str().unwrap(),
        "--set",
        "testing.fault_injection=true",
        "--set",
        "bus.ingress=tcp://127.0.0.1:0",
        "--set",
        "bus.events=tcp://127.0.0.1:0",
    ];
    let mut d = util::Daemon::start(&util::root(), &args, &[]).await;
    d.wait_ready().await;
    // max_restarts 3 within 5 s: three restarts, then the fourth failure is fatal.
    for _ in 0..4 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, health) = d.get_json("/health").await;
            if health["infrastructure"]["BusDispatcher"]["state"] == "running" {
                break;
            }
            assert!(Instant::now() < deadline, "BusDispatcher not running again: {health}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (code, body) = d.post("/agents/BusDispatcher/fault", json!({"kind": "panic"})).await;
        assert_eq!(code, 200, "{body}");
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), d.child.wait()).await.expect("the daemon exits").unwrap();
    assert_eq!(exit.code(), Some(2), "{exit:?}");
}
