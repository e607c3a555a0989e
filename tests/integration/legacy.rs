//! The earlier system's single-file catalog: `script_path` agents become
//! compatibility process agents (HTTP `/health` readiness, `AGENT_*`
//! environment).

use std::time::Duration;

use agentvisor::config::catalog::Catalog;
use agentvisor::config::spec::{ProcessProtocol, RuntimeSpec};
use agentvisor::supervisor::AgentState;
use agentvisor::supervisor::StartError;

use crate::util::{self, fixture};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Copies the legacy fixture into `dir` with free health ports; returns
/// the YAML path and the ports by agent.
fn legacy_fixture(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(String, u16)>) {
    let src = fixture("legacy");
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    for f in std::fs::read_dir(src.join("agents")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join("agents").join(f.file_name().unwrap())).unwrap();
    }
    let mut text = std::fs::read_to_string(src.join("startup_config.yaml")).unwrap();
    let mut ports = Vec::new();
    for (agent, old) in [
        ("LegacyHealthAgent", 18801),
        ("LegacyWorkerAgent", 18802),
        ("LegacyOnDemandAgent", 18803),
        ("LegacyMissingScript", 18804),
    ] {
        let port = free_port();
        text = text.replace(&format!("health_check_port: {old}"), &format!("health_check_port: {port}"));
        ports.push((agent.to_string(), port));
    }
    let path = dir.join("startup_config.yaml");
    std::fs::write(&path, text).unwrap();
    (path, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_single_file_catalog_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ports) = legacy_fixture(dir.path());
    let port_of = |a: &str| ports.iter().find(|(n, _)| n == a).unwrap().1;

    let catalog = Catalog::load(&path).expect("legacy catalog loads");
    assert_eq!(catalog.agents.len(), 4);
    let worker = catalog.get("LegacyWorkerAgent").unwrap();
    assert_eq!(worker.group, "core_services");
    assert_eq!(worker.dependencies, vec!["LegacyHealthAgent".to_string()]);
    let RuntimeSpec::Process { protocol, env, command, .. } = &worker.runtime else { panic!("process agent") };
    assert_eq!(*protocol, ProcessProtocol::Compat);
    assert_eq!(env.get("AGENT_CONFIG_MODE").map(String::as_str), Some("fast"));
    assert_eq!(command[0], "python3");

    let fleet = util::fleet(util::settings(dir.path()), Some(&path), "all").await;
    let report = fleet.boot().await;
    assert_eq!(report.running, vec!["LegacyHealthAgent".to_string(), "LegacyWorkerAgent".to_string()], "{report:?}");
    let ctx = fleet.ctx();
    assert_eq!(ctx.state("LegacyOnDemandAgent"), Some(AgentState::Dormant));

    // The worker got its config through AGENT_CONFIG_* (it exits 2 without it).
    let url = format!("http://127.0.0.1:{}/health", port_of("LegacyWorkerAgent"));
    let health: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(health["agent"], "LegacyWorkerAgent");
    assert_eq!(health["config"]["mode"], "fast");
    assert_eq!(health["port"], "17802");

    fleet.ensure("LegacyOnDemandAgent").await.expect("on-demand legacy agent starts");
    let pid = ctx.record("LegacyOnDemandAgent").unwrap().pid.expect("pid");
    assert!(util::pid_alive(pid));

    let err = fleet.ensure("LegacyMissingScript").await.unwrap_err();
    assert!(matches!(&err, StartError::Unavailable { reason, .. } if reason.contains("script not found")), "{err:?}");
    assert_eq!(ctx.state("LegacyMissingScript"), Some(AgentState::Unavailable));

    let pids: Vec<u32> = ctx.snapshot().iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3);
    fleet.shutdown(Duration::from_secs(10)).await;
    for p in pids {
        assert!(!util::pid_alive(p), "{p} left behind");
    }
}

#[test]
fn check_accepts_the_legacy_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = legacy_fixture(dir.path());
    let out = std::process::Command::new(util::bin())
        .args(["check", "--profile", "all", "--catalog", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("profile all: 4 agents"), "{text}");
    assert!(text.contains("wave 2: LegacyWorkerAgent"), "{text}");
}
