//! The real daemon binary: `run --profile full`, the HTTP endpoints,
//! promtool, ordered shutdown without orphans.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{self, Daemon, EventLog, builtin, jsonl_agent, root, write_catalog};

fn agents_by_name(body: &Value) -> BTreeMap<String, Value> {
    body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["agents"].as_array().expect("agents").iter().cloned())
        .map(|a| (a["name"].as_str().unwrap().to_string(), a))
        .collect()
}

/// `promtool check metrics` on `text`; `None` when promtool is missing
/// outside CI (CI installs it and must run it).
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "promtool is required in CI: {e}");
            eprintln!("promtool not installed; skipping the lint (apt-get install prometheus)");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_full_profile_serves_agents_metrics_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut d =
        Daemon::start(&root(), &["run", "--profile", "full", "--data-dir", data.path().to_str().unwrap()], &[]).await;
    d.wait_ready().await;

    let (status, health) = d.get_json("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let (_, body) = d.get_json("/agents").await;
    assert_eq!(body["profile"], "full");
    let agents = agents_by_name(&body);
    assert_eq!(agents.len(), 77);
    let autoloaded = ["EmotionEngine", "NLUAgent", "ChainOfThoughtAgent", "LearningManager", "AgentTrustScorer"];
    let mut child_pids = Vec::new();
    for (name, a) in &agents {
        let state = a["state"].as_str().unwrap();
        if a["essential"] == json!(true) || autoloaded.contains(&name.as_str()) {
            match state {
                "running" => {}
                "unavailable" => assert!(a["reason"].as_str().is_some_and(|r| !r.is_empty()), "{name}: {a}"),
                other => panic!("{name} is {other}: {a}"),
            }
        } else {
            assert_eq!(state, "dormant", "{name}: {a}");
        }
        if let Some(pid) = a["pid"].as_u64() {
            child_pids.push(pid as u32);
        }
    }
    assert_eq!(agents["AudioCapture"]["state"], "unavailable");
    assert!(agents["STTService"]["reason"].as_str().unwrap().contains("no STT engine configured"));
    assert_eq!(
        agents["ChainOfThoughtAgent"]["dependencies"],
        json!(["ModelManagerSuite", "SystemDigitalTwin", "ObservabilityHub"])
    );

    // An on-demand start over HTTP.
    let (status, chit) = d.post("/agents/ChitchatAgent/start", json!({})).await;
    assert_eq!(status, 200, "{chit}");
    assert_eq!(chit["state"], "running");
    let (status, err) = d.post("/agents/NoSuchAgent/start", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "unknown_agent");
    // Fault injection is off by default: the route does not exist.
    let r = d
        .http
        .post(format!("{}/agents/ChitchatAgent/fault", d.base))
        .json(&json!({"kind": "panic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let metrics = d.get_text("/metrics").await;
    let running = agents.values().filter(|a| a["state"] == "running").count() + 1; // + ChitchatAgent
    assert!(metrics.contains(&format!("agentvisor_agents{{state=\"running\"}} {running}")), "{metrics}");
    assert!(metrics.contains("agentvisor_agents{state=\"dormant\"} 47"), "{metrics}");
    assert!(metrics.contains("agentvisor_agent_up{agent=\"ChitchatAgent\",group=\"language_services\"} 1"));
    assert!(metrics.contains("agentvisor_lazy_starts_total{outcome=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("agentvisor_agent_start_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("agentvisor_build_info{version="), "{metrics}");
    if let Some((ok, report)) = promtool(&metrics) {
        assert!(ok, "promtool check metrics failed:\n{report}");
    }

    let status = d.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    for pid in child_pids {
        assert!(!util::pid_alive(pid), "child {pid} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_goes_in_reverse_dependency_order() {
    let dir = tempfile::tempdir().unwrap();
    let agents = write_catalog(
        dir.path(),
        &[
            &builtin("Bottom", "g1", true, &[]),
            &builtin("Middle", "g2", true, &["Bottom"]),
            &builtin("Top", "g1", true, &["Middle"]),
            &builtin("Side", "g2", true, &["Bottom"]),
        ],
    );
    let fleet = util::fleet(util::settings(dir.path()), Some(&agents), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running.len(), 4);
    let mut log = EventLog::new(&fleet);
    fleet.shutdown(Duration::from_secs(10)).await;
    log.wait_for(Duration::from_secs(5), "fleet.stopped", |e| e.topic == "fleet.stopped").await;
    let stopped = |a: &str| {
        log.seen.iter().find(|e| e.topic == "agent.stopped" && e.str("agent") == Some(a)).map(|e| e.seq).expect(a)
    };
    let stopping = |a: &str| {
        log.seen.iter().find(|e| e.topic == "agent.stopping" && e.str("agent") == Some(a)).map(|e| e.seq).expect(a)
    };
    assert!(stopped("Top") < stopping("Middle"), "Top stops before Middle starts stopping");
    assert!(stopped("Middle") < stopping("Bottom"));
    assert!(stopped("Side") < stopping("Bottom"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_no_child_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let pf = pidfile.display().to_string();
    let agents = write_catalog(
        dir.path(),
        &[
            &builtin("Core", "g", true, &[]),
            &jsonl_agent(
                "Polite",
                "g",
                true,
                &["Core"],
                &[("FIXTURE_SPAWN_GRANDCHILD", "1"), ("FIXTURE_PIDFILE", &pf)],
                10.0,
            ),
            &jsonl_agent(
                "Stubborn",
                "g",
                true,
                &["Core"],
                &[("FIXTURE_IGNORE_SIGTERM", "1"), ("FIXTURE_SPAWN_GRANDCHILD", "1"), ("FIXTURE_PIDFILE", &pf)],
                10.0,
            ),
        ],
    );
    let mut d = Daemon::start(
        dir.path(),
        &[
            "run",
            "--profile",
            "all",
            "--catalog",
            agents.to_str().unwrap(),
            "--set",
            "supervisor.shutdown_timeout_secs=0.5",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    d.wait_ready().await;
    let pids: Vec<u32> =
        std::fs::read_to_string(&pidfile).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 4, "two agents and their grandchildren: {pids:?}");
    assert!(pids.iter().all(|p| util::pid_alive(*p)));
    let status = d.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!util::pid_alive(pid), "process {pid} left behind");
    }
}
