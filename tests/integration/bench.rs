//! `agentvisor bench`: the real binary end to end with tiny numbers — the
//! gateway comparison (one command with `--spawn`; and against a running
//! daemon and `bench upstream`), the bus comparison against a bare ROUTER
//! echo (in-process, and in its own process with `bench echo`), and the
//! plain bus load generator. They check the reports' shape and
//! that both sides were measured, never how fast.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{self, Daemon, root};

/// Runs `agentvisor ARGS` in `cwd`; its exit code, stdout and stderr.
async fn agentvisor(cwd: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(util::bin()).args(args).current_dir(cwd).kill_on_drop(true).output(),
    )
    .await
    .expect("bench finishes within 120 s")
    .expect("agentvisor runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout.into_owned(), stderr.into_owned())
}

/// The address `child` prints on its first line after `prefix`.
async fn listening_on(child: &mut tokio::process::Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}")).to_string()
}

/// One side of a comparison report measured `n` answers per round over
/// `rounds` rounds, all ok, at a positive rate.
fn assert_side(report: &Value, side: &str, what: &str, n: u64, rounds: usize) {
    let s = &report[side];
    assert_eq!(s[what], n * rounds as u64, "{side}: {s}");
    assert_eq!((s["ok"].as_u64(), s["errors"].as_u64()), (Some(n * rounds as u64), Some(0)), "{side}: {s}");
    assert!(s[format!("{what}_per_second")].as_f64().unwrap() > 0.0, "{side}: {s}");
    assert!(s["seconds"].as_f64().unwrap() > 0.0, "{side}: {s}");
    let (p50, p99, max) = (s["p50_ms"].as_f64().unwrap(), s["p99_ms"].as_f64().unwrap(), s["max_ms"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{side}: {s}");
    assert!(s["target"].as_str().is_some_and(|t| !t.is_empty()), "{side}: {s}");
    let per_round = s["rounds"].as_array().expect("rounds");
    assert_eq!(per_round.len(), rounds, "{side}: {s}");
    assert!(per_round.iter().all(|r| r[what] == n && r["errors"] == 0), "{side}: {s}");
}

fn assert_verdict(report: &Value) {
    assert!(report["ratio_percent"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["added_p50_ms"].is_f64() && report["added_p99_ms"].is_f64(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_gateway_spawn_measures_the_upstream_directly_and_through_agentvisor() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "gateway", "--spawn", "--requests", "200", "--rounds", "2", "--connections", "2", "--json"];
    let (code, stdout, stderr) = agentvisor(dir.path(), &args).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!((report["model"].as_str(), report["connections"].as_u64()), (Some("bench"), Some(2)), "{report}");
    assert_eq!((report["rounds"].as_u64(), report["requests_per_round"].as_u64()), (Some(2), Some(200)));
    assert_eq!(report["spawned"], true);
    assert_side(&report, "direct", "requests", 200, 2);
    assert_side(&report, "agentvisor", "requests", 200, 2);
    assert_ne!(report["direct"]["target"], report["agentvisor"]["target"]);
    assert_verdict(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_gateway_against_a_running_daemon_and_bench_upstream_prints_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = tokio::process::Command::new(util::bin())
        .args(["bench", "upstream", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bench upstream starts");
    let addr = listening_on(&mut upstream, "upstream: listening on ").await;
    let upstream_base = format!("http://{addr}/v1");
    let cfg = dir.path().join("agentvisor.yaml");
    std::fs::write(
        &cfg,
        format!("backends:\n  bench: {{kind: openai, tier: L1, base_url: \"{upstream_base}\", model: bench-model}}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(
        &root(),
        &["--config", cfg.to_str().unwrap(), "run", "--profile", "core", "--data-dir", data.to_str().unwrap()]
            .iter()
            .chain(&["--set", "bus.ingress=tcp://127.0.0.1:0", "--set", "bus.events=tcp://127.0.0.1:0"])
            .copied()
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    d.wait_ready().await;
    let gateway = format!("{}/v1", d.base);
    let args = ["bench", "gateway", "--gateway", &gateway, "--upstream", &upstream_base, "--requests", "100"];
    let (code, stdout, stderr) = agentvisor(dir.path(), &[&args[..], &["--rounds", "2"]].concat()).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for round in ["round 1/2  direct      100 requests, 0 errors", "round 2/2  agentvisor  100 requests, 0 errors"] {
        assert!(lines.iter().any(|l| l.starts_with(round)), "no {round:?} in\n{stdout}");
    }
    // The table: side, requests, errors, req/s, p50, p99, max, target.
    let row =
        |side: &str| lines.iter().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.first() == Some(&side));
    let direct = row("direct").expect("a direct row");
    assert_eq!((direct[1], direct[2]), ("200", "0"), "{stdout}");
    assert_eq!(direct[7], format!("{upstream_base}/chat/completions"), "{stdout}");
    let through = row("agentvisor").expect("an agentvisor row");
    assert_eq!((through[1], through[2]), ("200", "0"), "{stdout}");
    assert_eq!(through[7], format!("{gateway}/chat/completions"), "{stdout}");
    let verdict = lines.last().unwrap();
    assert!(
        verdict.starts_with("agentvisor adds p50 ") && verdict.contains("% of direct (1 connection, 2 rounds"),
        "{stdout}"
    );
    // Every request through agentvisor (20 warm-up, 2 × 100 counted) went to the pinned backend.
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("agentvisor_route_decisions_total{backend=\"bench\",outcome=\"ok\",tier=\"L1\"} 220"),
        "{metrics}"
    );
    assert!(d.terminate(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_bus_baseline_measures_the_echo_and_the_daemon_and_plain_bench_still_works() {
    let data = tempfile::tempdir().unwrap();
    let (mut d, ingress) = crate::drain::start(data.path(), &[]).await;
    let args = ["bench", "bus", "--baseline", "--endpoint", &ingress, "--tasks", "200"];
    let json = ["--rounds", "2", "--concurrency", "8", "--connections", "2", "--json"];
    let (code, stdout, stderr) = agentvisor(data.path(), &[&args[..], &json].concat()).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!((report["window"].as_u64(), report["connections"].as_u64()), (Some(8), Some(2)), "{report}");
    assert_eq!((report["rounds"].as_u64(), report["tasks_per_round"].as_u64()), (Some(2), Some(200)));
    assert_side(&report, "echo", "tasks", 200, 2);
    assert_side(&report, "daemon", "tasks", 200, 2);
    assert_eq!(report["daemon"]["target"], ingress.as_str());
    assert_eq!(report["echo_in_process"], true);
    assert_verdict(&report);

    // The text form: rounds, the table, the verdict.
    let (code, stdout, stderr) = agentvisor(data.path(), &[&args[..], &["--rounds", "1"]].concat()).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("round 1/1  daemon  200 tasks, 0 errors")), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("daemon adds p50 "), "{stdout}");

    // The echo in its own process (`bench echo`), measured with `--echo`.
    let mut echo = tokio::process::Command::new(util::bin())
        .args(["bench", "echo", "--listen", "tcp://127.0.0.1:0", "--endpoint", &ingress])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bench echo starts");
    let echo_at = listening_on(&mut echo, "echo: listening on ").await;
    let (code, stdout, stderr) =
        agentvisor(data.path(), &[&args[..], &["--rounds", "1", "--echo", &echo_at, "--json"]].concat()).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(
        (report["echo"]["target"].as_str(), report["echo_in_process"].as_bool()),
        (Some(&echo_at[..]), Some(false))
    );
    assert_side(&report, "echo", "tasks", 200, 1);
    assert_side(&report, "daemon", "tasks", 200, 1);

    // `agentvisor bench` without a mode is the load generator it was.
    let (code, stdout, _) =
        agentvisor(data.path(), &["bench", "--endpoint", &ingress, "--tasks", "100", "--json"]).await;
    assert_eq!(code, 0, "{stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((r["ok"].as_u64(), r["errors"].as_u64()), (Some(100), Some(0)), "{r}");
    for key in ["seconds", "tasks_per_second", "p50_ms", "p99_ms", "max_ms"] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
    }
    assert!(d.terminate(Duration::from_secs(30)).await.success());
}
