//! The OpenAI-compatible gateway with the official `openai` Python client
//! against the real daemon, answering through HybridRouter from a real
//! local OpenAI-compatible server (FakeOpenAi, scripted).

use std::time::Duration;

use serde_json::Value;

use crate::fake_openai::{Behaviour, FakeOpenAi};
use crate::util::{self, Daemon, root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_talks_to_the_gateway() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agentvisor.yaml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  local:\n    kind: openai\n    tier: L1\n    base_url: {}\n    model: fake-local\n    max_retries: 0\n    price_per_1k_input_usd: 0.5\n    price_per_1k_output_usd: 1.0\n",
            fake.base_url()
        ),
    )
    .unwrap();
    fake.push(Behaviour::Answer("Hello from the fake model".into()));
    fake.push(Behaviour::Answer("one two three four five".into()));
    let mut d = Daemon::start(
        &root(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--profile",
            "core",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--set",
            "bus.ingress=tcp://127.0.0.1:0",
            "--set",
            "bus.events=tcp://127.0.0.1:0",
        ],
        &[],
    )
    .await;
    d.wait_ready().await;
    let base = format!("{}/v1", d.base);
    let Some(r) = util::python_report("openai_client_check.py", &[&base], "openai").await else { return };

    let models: Vec<&str> = r["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(models, ["auto", "fake-local", "local"]);
    assert_eq!(r["plain"]["content"], "Hello from the fake model");
    assert_eq!(r["plain"]["finish_reason"], "stop");
    assert!(r["plain"]["usage"]["total_tokens"].as_u64().unwrap() > 0, "{}", r["plain"]);
    let h = &r["plain"]["headers"];
    assert_eq!(h["x-agentvisor-backend"], "local", "{h}");
    assert_eq!(h["x-agentvisor-tier"], "L1");
    assert!(h["x-agentvisor-route-reason"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(h["x-agentvisor-cost-usd"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{h}");
    let pieces: Vec<&str> = r["stream"]["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert_eq!(pieces.concat(), "one two three four five");
    assert_eq!(r["stream"]["finish_reason"], "stop");
    assert_eq!(r["empty_error"]["status"], 400, "{}", r["empty_error"]);

    // What the gateway sent upstream: the client's messages, the backend's model.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body["model"], "fake-local");
    assert_eq!(reqs[0].body["messages"][0]["content"], "Say hello");
    assert_eq!(reqs[1].body["messages"][0]["role"], "system");
    assert!(reqs[1].streaming());

    // Both calls left receipts.
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("agentvisor_route_decisions_total{backend=\"local\",outcome=\"ok\",tier=\"L1\"} 2"),
        "{metrics}"
    );
    assert!(d.terminate(Duration::from_secs(30)).await.success());
    let out = std::process::Command::new(util::bin())
        .args(["receipts", "--last", "5", "--json", "--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    let receipts: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    assert!(receipts.iter().all(|r| r["agent"] == "gateway" && r["backend"] == "local" && r["outcome"] == "ok"));
}
