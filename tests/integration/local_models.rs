//! Local models with the real SmolLM2 GGUF through the real llama.cpp engine:
//! answers and streaming, the priority queue and hot-model fairness,
//! cancellation between tokens, the memory budget with LRU eviction, the
//! `degrade_to_tiny` failover through HybridRouter, idle unload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentvisor::backends::ChatMessage;
use agentvisor::config::ModelSettings;
use agentvisor::core::GenParams;
use agentvisor::events::EventBus;
use agentvisor::models::local::Finish;
use agentvisor::models::manager::{LocalError, LocalRequest, ModelManager};
use agentvisor::models::{DEFAULT_MODEL_FILE, DEFAULT_MODEL_NAME};
use agentvisor::telemetry::metrics::Metrics;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::util;

fn manager(dir: &Path, tweak: impl FnOnce(&mut ModelSettings)) -> (Arc<ModelManager>, EventBus, Metrics) {
    let metrics = Metrics::new();
    let events = EventBus::new(metrics.events.clone());
    let mut s = ModelSettings { threads: 2, ..Default::default() };
    tweak(&mut s);
    (Arc::new(ModelManager::new(s, dir.to_path_buf(), events.clone(), metrics.clone())), events, metrics)
}

fn request(model: &str, prompt: &str, max_tokens: u32) -> LocalRequest {
    LocalRequest {
        model: model.to_string(),
        messages: vec![ChatMessage::new("user", prompt)],
        params: GenParams { max_tokens: Some(max_tokens), ..Default::default() },
        schedule: Default::default(),
        deltas: None,
        cancel: CancellationToken::new(),
        over_budget_ok: false,
    }
}

/// A models dir holding the default model under each of `names` (hard links).
fn linked_models(dir: &Path, names: &[&str]) -> PathBuf {
    let src = util::models_dir().join(DEFAULT_MODEL_FILE);
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for n in names {
        let to = models.join(format!("{n}.gguf"));
        if std::fs::hard_link(&src, &to).is_err() {
            std::fs::copy(&src, &to).unwrap();
        }
    }
    models
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_streams_and_reports_metadata() {
    let dir = util::models_dir();
    let (m, events, metrics) = manager(&dir, |_| {});
    let mut ev = events.subscribe();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = request(DEFAULT_MODEL_NAME, "What is the capital of France?", 48);
    r.deltas = Some(tx);
    let answer = m.generate(r).await.expect("answer");
    let mut chunks = Vec::new();
    while let Ok(c) = rx.try_recv() {
        chunks.push(c);
    }
    assert!(answer.output.text.contains("Paris"), "{answer:?}");
    assert!(chunks.len() > 2, "streamed in several chunks: {chunks:?}");
    assert_eq!(chunks.concat(), answer.output.text);
    assert!(answer.output.tokens_in > 5 && answer.output.tokens_out > 2, "{answer:?}");
    assert!(answer.first_token.is_some());
    let loaded = ev.recv().await.unwrap();
    assert_eq!((loaded.topic, loaded.str("model")), ("model.loaded", Some(DEFAULT_MODEL_NAME)));

    // JSON mode with a schema: valid by construction (grammar).
    let schema = r#"{"type":"object","properties":{"label":{"type":"string","enum":["joy","sadness","anger","fear","neutral"]},"intensity":{"type":"number"}},"required":["label","intensity"]}"#;
    let mut r = request(DEFAULT_MODEL_NAME, "I am so happy today! Detect the emotion.", 40);
    r.params.json_schema = Some(serde_json::from_str(schema).unwrap());
    let answer = m.generate(r).await.expect("json answer");
    let v: serde_json::Value = serde_json::from_str(&answer.output.text).expect("valid JSON");
    assert!(v["label"].is_string() && v["intensity"].is_number(), "{v}");

    let list = m.list().await.unwrap();
    let entry = list.iter().find(|e| e["name"] == DEFAULT_MODEL_NAME).expect("listed");
    assert_eq!(entry["state"], "loaded");
    assert!(entry["context_length"].as_u64().unwrap() >= 2048, "{entry}");
    assert!(entry["kv_bytes_per_token"].as_u64().unwrap() > 0, "{entry}");
    // 134.5 M parameters, counted from the GGUF tensor table (the file has no parameter_count).
    assert!((130_000_000..140_000_000).contains(&entry["parameters"].as_u64().unwrap()), "{entry}");
    let text = metrics.render();
    for needle in [
        "agentvisor_models_loaded 1",
        "agentvisor_local_tokens_total{direction=\"out\",model=\"SmolLM2-135M-Instruct.Q4_1\"}",
        "agentvisor_local_time_to_first_token_seconds_count{model=\"SmolLM2-135M-Instruct.Q4_1\"} 2",
        "agentvisor_model_loads_total{model=\"SmolLM2-135M-Instruct.Q4_1\",outcome=\"ok\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    let unknown = m.generate(request("no-such-model", "hi", 4)).await.unwrap_err();
    assert_eq!(unknown.code(), "unknown_model");
    let text = metrics.render();
    assert!(text.contains("agentvisor_local_requests_total{model=\"_unknown\",outcome=\"unknown_model\"} 1"), "{text}");
    m.shutdown().await;
}

/// Submits `label` and records it in `order` when it completes.
fn tracked(
    m: &Arc<ModelManager>,
    order: &Arc<Mutex<Vec<String>>>,
    label: &str,
    r: LocalRequest,
) -> tokio::task::JoinHandle<()> {
    let (m, order, label) = (m.clone(), order.clone(), label.to_string());
    tokio::spawn(async move {
        m.generate(r).await.expect("answer");
        order.lock().push(label);
    })
}

/// Waits until a generation runs and nothing waits.
async fn running(m: &ModelManager) {
    for _ in 0..1000 {
        let s = m.status().await;
        if s["running"].as_u64() == Some(1) && s["queue_depth"].as_u64() == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing started: {}", m.status().await);
}

/// Waits until the manager reports `n` queued requests.
async fn queued(m: &ModelManager, n: u64) {
    for _ in 0..500 {
        if m.status().await["queue_depth"].as_u64() == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("queue never reached {n}: {}", m.status().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_is_priority_then_fifo_with_push_to_front() {
    let dir = util::models_dir();
    let (m, _, _) = manager(&dir, |_| {});
    let order = Arc::new(Mutex::new(Vec::new()));
    // Saturate the single generation slot with a long request.
    let blocker = tracked(&m, &order, "blocker", request(DEFAULT_MODEL_NAME, "Count from 1 to 200.", 160));
    running(&m).await;
    let mut handles = vec![blocker];
    let mut n = 0;
    for (label, priority, front) in
        [("p1-a", 1, false), ("p1-b", 1, false), ("p9-a", 9, false), ("p5-a", 5, false), ("p9-b", 9, false)]
            .into_iter()
            .chain([("urgent", 0, true)])
    {
        let mut r = request(DEFAULT_MODEL_NAME, "Say hi.", 2);
        r.schedule.priority = priority;
        r.schedule.push_to_front = front;
        handles.push(tracked(&m, &order, label, r));
        n += 1;
        queued(&m, n).await; // submission order is the order written here
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(*order.lock(), ["blocker", "urgent", "p9-a", "p9-b", "p5-a", "p1-a", "p1-b"]);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_model_preference_is_bounded_by_the_fairness_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = linked_models(tmp.path(), &["hot", "cold"]);
    let (m, _, _) = manager(&dir, |s| s.hot_model_fairness = 2);
    m.load("cold").await.expect("cold loads");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = vec![tracked(&m, &order, "hot-blocker", request("hot", "Count from 1 to 200.", 160))];
    running(&m).await;
    let mut n = 0;
    for (label, model) in [("cold-1", "cold"), ("hot-1", "hot"), ("hot-2", "hot"), ("hot-3", "hot"), ("hot-4", "hot")] {
        handles.push(tracked(&m, &order, label, request(model, "Say hi.", 2)));
        n += 1;
        queued(&m, n).await;
    }
    for h in handles {
        h.await.unwrap();
    }
    // cold-1 is older, but the hot model goes first — at most twice.
    assert_eq!(*order.lock(), ["hot-blocker", "hot-1", "hot-2", "cold-1", "hot-3", "hot-4"]);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_generation_between_tokens() {
    let dir = util::models_dir();
    let (m, _, _) = manager(&dir, |_| {});
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = request(DEFAULT_MODEL_NAME, "Write a long story about a dragon.", 400);
    r.deltas = Some(tx);
    let cancel = r.cancel.clone();
    let task = tokio::spawn({
        let m = m.clone();
        async move { m.generate(r).await }
    });
    let mut received = 0u32;
    while received < 8 {
        rx.recv().await.expect("a delta");
        received += 1;
    }
    cancel.cancel();
    let answer = task.await.unwrap().expect("answer");
    assert_eq!(answer.output.finish, Finish::Cancelled);
    let after = answer.output.tokens_out.saturating_sub(received);
    assert!(after <= 2, "{after} tokens generated after the cancel ({} in all)", answer.output.tokens_out);

    // Cancelled while queued: answered at once, never generated.
    let blocker = tokio::spawn({
        let m = m.clone();
        async move { m.generate(request(DEFAULT_MODEL_NAME, "Count from 1 to 200.", 160)).await }
    });
    running(&m).await;
    let r = request(DEFAULT_MODEL_NAME, "Say hi.", 4);
    let cancel = r.cancel.clone();
    let waiting = tokio::spawn({
        let m = m.clone();
        async move { m.generate(r).await }
    });
    queued(&m, 1).await;
    cancel.cancel();
    let answer = waiting.await.unwrap().expect("answer");
    assert_eq!((answer.output.finish, answer.output.tokens_out), (Finish::Cancelled, 0));
    assert!(!blocker.is_finished(), "the queued request was answered before the running one ended");
    blocker.await.unwrap().expect("blocker answers");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_evicts_the_idle_model_never_a_busy_one_and_unloads_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = linked_models(tmp.path(), &["model-a", "model-b"]);
    let file = agentvisor::models::scan(&dir).unwrap().remove(0);
    let one = file.estimated_bytes(ModelSettings::default().context_tokens);
    let (m, events, metrics) = manager(&dir, |s| {
        s.memory_budget_bytes = Some(one + one / 2);
        s.idle_timeout_secs = 3.0;
    });
    let mut ev = events.subscribe();
    m.generate(request("model-a", "Say hi.", 2)).await.expect("a answers");
    m.generate(request("model-b", "Say hi.", 2)).await.expect("b answers");
    let mut topics = Vec::new();
    while let Ok(e) = ev.try_recv() {
        topics.push((e.topic, e.str("model").map(str::to_string), e.str("for").map(str::to_string)));
    }
    assert_eq!(
        topics,
        [
            ("model.loaded", Some("model-a".into()), None),
            ("model.evicted", Some("model-a".into()), Some("model-b".into())),
            ("model.loaded", Some("model-b".into()), None),
        ]
    );
    // model-b busy: a request for model-a cannot evict it.
    let busy = tokio::spawn({
        let m = m.clone();
        async move { m.generate(request("model-b", "Count from 1 to 200.", 120)).await }
    });
    running(&m).await;
    let err = m.generate(request("model-a", "Say hi.", 2)).await.unwrap_err();
    assert!(matches!(err, LocalError::MemoryExhausted { .. }), "{err:?}");
    assert!(!busy.is_finished(), "model-b was still serving");
    busy.await.unwrap().expect("model-b kept serving");
    let text = metrics.render();
    assert!(text.contains("agentvisor_model_unloads_total{model=\"model-a\",reason=\"evicted\"} 1"), "{text}");
    assert!(
        text.contains("agentvisor_local_requests_total{model=\"model-a\",outcome=\"memory_exhausted\"} 1"),
        "{text}"
    );
    // Idle for idle_timeout_secs: unloaded.
    let unloaded = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = ev.recv().await.unwrap();
            if e.topic == "model.unloaded" {
                return e;
            }
        }
    })
    .await
    .expect("idle unload");
    assert_eq!((unloaded.str("model"), unloaded.str("reason")), (Some("model-b"), Some("idle")));
    assert_eq!(m.status().await["loaded"].as_array().unwrap().len(), 0);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_picks_the_least_recently_used_idle_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = linked_models(tmp.path(), &["model-a", "model-b", "model-c"]);
    let one = agentvisor::models::scan(&dir).unwrap()[0].estimated_bytes(ModelSettings::default().context_tokens);
    let (m, events, _) = manager(&dir, |s| s.memory_budget_bytes = Some(2 * one + one / 2)); // room for two
    let mut ev = events.subscribe();
    for model in ["model-a", "model-b", "model-a"] {
        m.generate(request(model, "Say hi.", 2)).await.expect("answer");
    }
    // model-b is now the least recently used: loading model-c evicts it, not model-a.
    m.generate(request("model-c", "Say hi.", 2)).await.expect("c answers");
    let mut evicted = Vec::new();
    while let Ok(e) = ev.try_recv() {
        if e.topic == "model.evicted" {
            evicted.push((e.str("model").unwrap().to_string(), e.str("for").unwrap().to_string()));
        }
    }
    assert_eq!(evicted, [("model-b".to_string(), "model-c".to_string())]);
    let loaded: Vec<String> = m.status().await["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(loaded, ["model-a", "model-c"]);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_job_end_to_end_over_zeromq_with_the_real_model() {
    util::models_dir();
    let data = tempfile::tempdir().unwrap();
    let (mut d, ingress, events) = util::Daemon::full_on_free_ports(data.path()).await;
    let Some(r) = util::python_report("local_e2e.py", &[&ingress, &events], "zmq").await else { return };

    let local = |reply: &serde_json::Value, agent: &str| {
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["agent"], agent, "{reply}");
        let route = &reply["route"];
        assert_eq!((route["tier"].as_str(), route["backend"].as_str()), (Some("L1"), Some("local")), "{reply}");
        assert_eq!(route["model"], DEFAULT_MODEL_NAME, "{reply}");
        assert!(route["tokens_out"].as_u64().unwrap() > 0, "{reply}");
    };
    assert_eq!(r["chitchat_before"]["output"]["state"], "dormant", "{}", r["chitchat_before"]);
    local(&r["chat"], "ChitchatAgent");
    assert!(r["chat"]["output"].as_str().unwrap().contains("Paris"), "{}", r["chat"]);
    assert_eq!(r["chitchat_after"]["output"]["state"], "running", "{}", r["chitchat_after"]);
    local(&r["translation"], "TranslationService");
    assert!(!r["translation"]["output"].as_str().unwrap().trim().is_empty());
    local(&r["emotion"], "EmotionEngine");
    let emotion = &r["emotion"]["output"];
    let labels = ["joy", "sadness", "anger", "fear", "surprise", "disgust", "neutral"];
    assert!(labels.contains(&emotion["label"].as_str().unwrap_or("")), "{emotion}");
    assert!((0.0..=1.0).contains(&emotion["intensity"].as_f64().unwrap()), "{emotion}");
    // Cloud preferred by rule, no cloud configured: local answers and the receipt says so.
    local(&r["code"], "CodeGenerator");
    assert_eq!(r["code"]["route"]["fallbacks"], serde_json::json!(["fallback_to_local"]), "{}", r["code"]);
    local(&r["stream"], "ChitchatAgent");
    let chunks: Vec<&str> = r["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert_eq!(chunks.concat(), r["stream"]["output"].as_str().unwrap());

    let seen = r["events"].as_array().unwrap();
    let has = |topic: &str, key: &str, value: &str| seen.iter().any(|e| e["topic"] == topic && e[key] == value);
    assert!(has("model.loaded", "model", DEFAULT_MODEL_NAME), "{seen:?}");
    assert!(has("agent.started", "agent", "ChitchatAgent"), "{seen:?}");
    assert!(seen.iter().filter(|e| e["topic"] == "route.decided").count() >= 5, "{seen:?}");

    let metrics = d.get_text("/metrics").await;
    for needle in [
        "agentvisor_tasks_total{agent=\"ChitchatAgent\",outcome=\"ok\"} 2",
        "agentvisor_tasks_total{agent=\"CodeGenerator\",outcome=\"ok\"} 1",
        "agentvisor_lazy_starts_total{outcome=\"ok\"}",
        "agentvisor_model_loads_total{model=\"SmolLM2-135M-Instruct.Q4_1\",outcome=\"ok\"} 1",
        "agentvisor_models_loaded 1",
        "agentvisor_local_tokens_total{direction=\"out\",model=\"SmolLM2-135M-Instruct.Q4_1\"}",
        "agentvisor_llm_tokens_total{backend=\"local\",direction=\"out\"}",
        "agentvisor_local_time_to_first_token_seconds_count{model=\"SmolLM2-135M-Instruct.Q4_1\"}",
        "agentvisor_device_memory_bytes{kind=\"total\",source=\"host\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    assert!(d.terminate(Duration::from_secs(20)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_memory_degrades_to_the_tiny_model_with_a_receipt() {
    use agentvisor::routing::router::ModelCall;
    let data = tempfile::tempdir().unwrap();
    let models = linked_models(data.path(), &["model-a", "model-b", "tiny"]);
    let one = agentvisor::models::scan(&models).unwrap()[0].estimated_bytes(ModelSettings::default().context_tokens);
    let mut s = util::settings(data.path());
    s.models_dir = models;
    s.models.memory_budget_bytes = Some(one + one / 2);
    s.models.tiny_model = Some("tiny".into());
    s.models.threads = 2;
    s.backends = agentvisor::config::Settings::default().backends; // `local`: embedded, L1
    let fleet = util::fleet(s, None, "core").await;
    fleet.boot().await;
    let ctx = fleet.ctx().clone();
    let mut ev = ctx.events.subscribe();
    let router = fleet.services.router.clone();
    let models = fleet.services.models.clone();
    let call = |model: &str, max_tokens: u32| {
        let router = router.clone();
        let call = ModelCall {
            task_id: format!("t-{model}-{max_tokens}"),
            agent: "test".into(),
            task_type: "simple_chat".into(),
            agent_complexity: 0.2,
            model: Some(model.to_string()),
            messages: vec![ChatMessage::new("user", "Count from 1 to 100.")],
            params: agentvisor::core::GenParams { max_tokens: Some(max_tokens), ..Default::default() },
            ..Default::default()
        };
        async move { router.call(call, Duration::from_secs(120)).await }
    };
    let first = call("model-a", 2).await.unwrap_or_else(|f| panic!("{:?}", f.error));
    assert_eq!(first.receipt.model.as_deref(), Some("model-a"));
    let second = call("model-b", 2).await.unwrap_or_else(|f| panic!("{:?}", f.error));
    assert_eq!(second.receipt.model.as_deref(), Some("model-b"));
    // model-b busy with a long answer; model-a cannot evict it and degrades.
    let busy = tokio::spawn(call("model-b", 150));
    running(&models).await;
    let degraded = call("model-a", 4).await.unwrap_or_else(|f| panic!("{:?}", f.error));
    let receipt = &degraded.receipt;
    assert_eq!(receipt.model.as_deref(), Some("tiny"), "{receipt:?}");
    assert_eq!(receipt.fallbacks, ["degrade_to_tiny:tiny"], "{receipt:?}");
    assert_eq!(
        (receipt.tier.as_str(), receipt.backend.as_deref(), receipt.outcome.as_str()),
        ("L1", Some("local"), "ok")
    );
    let long = busy.await.unwrap().unwrap_or_else(|f| panic!("{:?}", f.error));
    assert_eq!(long.receipt.model.as_deref(), Some("model-b"));

    // Evictions to make room for a load (VRAMOptimizerAgent may later evict idle
    // models with `for: budget`, since the tiny model loaded over the budget).
    let mut evicted = Vec::new();
    while let Ok(e) = ev.try_recv() {
        if e.topic == "model.evicted" && e.str("for") != Some("budget") {
            evicted.push((e.str("model").unwrap().to_string(), e.str("for").unwrap().to_string()));
        }
    }
    assert_eq!(evicted, [("model-a".to_string(), "model-b".to_string())], "model-b was never evicted while busy");
    let text = ctx.metrics.render();
    assert!(text.contains("agentvisor_model_unloads_total{model=\"model-a\",reason=\"evicted\"} 1"), "{text}");
    assert!(text.contains("agentvisor_local_requests_total{model=\"model-a\",outcome=\"memory_exhausted\"} 1"));
    assert!(text.contains("agentvisor_local_requests_total{model=\"tiny\",outcome=\"ok\"} 1"));
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[cfg(feature = "embedded")]
#[test]
fn every_catalog_output_schema_becomes_a_grammar() {
    use agentvisor::config::spec::RuntimeSpec;
    let catalog = agentvisor::config::catalog::Catalog::load(&util::root().join("agents")).unwrap();
    let mut seen = Vec::new();
    for (name, spec) in &catalog.agents {
        if let RuntimeSpec::Llm { output_schema: Some(schema), .. } = &spec.runtime {
            let grammar = agentvisor::models::engine::schema_grammar(&schema.to_string())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(grammar.contains("root ::="), "{name}: {grammar}");
            seen.push(name.clone());
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_priorities_reach_the_local_model_queue() {
    let data = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(data.path(), "full", |s| {
        s.models_dir = util::models_dir();
        s.models.threads = 2;
        s.backends = agentvisor::config::Settings::default().backends; // `local`: embedded, L1
        // The last of six queued answers may wait long on a machine busy with other tests.
        if let Some(local) = s.backends.get_mut("local") {
            local.total_timeout_secs = 300.0;
        }
    })
    .await;
    let models = fleet.services.models.clone();
    let mut bus = util::dealer(&ingress).await;
    // A generous deadline (the default is 30 s): the machine may be busy with other tests.
    let send = |id: &str, priority: u8, input: &str| serde_json::json!({"id": id, "type": "simple_chat", "input": input, "priority": priority, "deadline_ms": 300_000});
    // A long answer saturates the single generation slot (ChitchatAgent starts on demand).
    util::send_json(&mut bus, &send("blocker", 5, "Count from 1 to 300, separated by commas.")).await;
    running(&models).await;
    let mut n = 0;
    for (id, priority) in [("p1-a", 1), ("p1-b", 1), ("p9-a", 9), ("p9-b", 9), ("urgent", 0)] {
        let mut envelope = send(id, priority, "Say hi.");
        envelope["push_to_front"] = serde_json::json!(id == "urgent");
        util::send_json(&mut bus, &envelope).await;
        n += 1;
        queued(&models, n).await; // the manager holds it: submission order is fixed
    }
    let mut order = Vec::new();
    while order.len() < 6 {
        let reply = util::recv_json_within(&mut bus, Duration::from_secs(300)).await;
        assert_eq!(reply["status"], "ok", "{reply} after {order:?}");
        order.push(reply["id"].as_str().unwrap().to_string());
    }
    assert_eq!(order, ["blocker", "urgent", "p9-a", "p9-b", "p1-a", "p1-b"]);
    fleet.shutdown(Duration::from_secs(10)).await;
}
