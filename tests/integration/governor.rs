//! The token governor and the response tiers (issue 14) over real ZeroMQ
//! against the real fleet with a real SQLite file: CacheManager's response
//! cache in front of HybridRouter (bus and `/v1`), TieredResponder, the two
//! ObservabilityHub agents, ContextManager refusing a session above the
//! hard max when its summariser fails, ProactiveAgent's `context_above`
//! rule fed by the governor's `context.usage` events, and — with the real
//! default model (`embedded` build) — a multi-turn session summarised at the
//! target with the governor's token count equal to each generation's
//! `tokens_in`.
//!
//! Model outputs in the fake-upstream tests are **fixed outputs** of the
//! project's fake OpenAI server (`fake_openai.rs`), not a real model: they
//! count upstream requests (a cache hit sends none) and fail on purpose (the
//! summariser that answers 500).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentvisor::config::Tier;
use serde_json::{Value, json};

use crate::conversation::{call, code, ok};
use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings, local_and_cloud};
use crate::util;

/// Sends one envelope and returns its reply (chunks collected into the
/// reply's `chunks`).
async fn send(bus: &mut zeromq::DealerSocket, envelope: Value) -> Value {
    let id = envelope["id"].clone();
    util::send_json(bus, &envelope).await;
    let mut chunks = Vec::new();
    loop {
        let r = util::recv_json_within(bus, Duration::from_secs(120)).await;
        if r["id"] != id {
            continue;
        }
        if r.get("event").is_some() {
            chunks.push(r["delta"].clone());
            continue;
        }
        let mut r = r;
        r["chunks"] = Value::Array(chunks);
        return r;
    }
}

fn chat(id: &str, input: &str, user: &str) -> Value {
    json!({"id": id, "type": "simple_chat", "input": input, "user": user, "deadline_ms": 60_000})
}

/// A copy of the repo's catalog under `dir` with `edit(agent yaml)` applied
/// to `agent`'s spec (its `agents/` folder).
fn catalog_with(dir: &Path, agent: &str, edit: impl Fn(String) -> String) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    let to = dir.join("agents");
    copy(&util::root().join("agents"), &to);
    let spec =
        walk(&to).into_iter().find(|p| p.file_name().is_some_and(|f| f == format!("{agent}.yaml").as_str())).unwrap();
    let text = std::fs::read_to_string(&spec).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed {agent}'s spec");
    std::fs::write(&spec, edited).unwrap();
    to
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_requests_are_answered_from_the_cache_while_cache_manager_runs() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("Paris is the capital of France.".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.cache.ttl_secs = 1.5;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    // CacheManager is on demand and not running: calls go on uncached.
    for id in ["u1", "u2"] {
        let r = send(&mut bus, chat(id, "What is the capital of France?", "ann")).await;
        assert_eq!((r["status"].as_str(), r["route"]["backend"].as_str()), (Some("ok"), Some("local")), "{r}");
    }
    assert_eq!(fake.requests().len(), 2);

    // Started (its first task): the same request twice, the second from the cache.
    let stats = ok(&mut bus, "cache.stats", json!({})).await;
    assert_eq!((stats["running"].as_bool(), stats["entries"].as_u64()), (Some(true), Some(0)), "{stats}");
    let first = send(&mut bus, chat("c1", "What is the capital of France?", "ann")).await;
    assert_eq!(first["route"]["backend"], "local", "{first}");
    let hit = send(&mut bus, chat("c2", "What is the capital of France?", "ann")).await;
    assert_eq!(hit["status"], "ok", "{hit}");
    assert_eq!(hit["output"], first["output"]);
    assert_eq!(hit["route"]["backend"], "cache", "{hit}");
    assert_eq!(hit["route"]["cost_usd"], 0.0, "{hit}");
    assert_eq!((hit["route"]["tokens_in"].as_u64(), hit["route"]["tokens_out"].as_u64()), (Some(0), Some(0)));
    assert!(hit["route"]["reason"].as_str().unwrap().starts_with("cache_hit"), "{hit}");
    assert_eq!(fake.requests().len(), 3, "the hit sent nothing upstream");
    // Streamed: the cached answer replayed as one chunk.
    let mut streamed = chat("c3", "What is the capital of France?", "ann");
    streamed["stream"] = json!(true);
    let s = send(&mut bus, streamed).await;
    assert_eq!(s["route"]["backend"], "cache", "{s}");
    assert_eq!(s["chunks"], json!([first["output"]]), "{s}");
    // Another user: no answer crosses users.
    let bob = send(&mut bus, chat("c4", "What is the capital of France?", "bob")).await;
    assert_eq!(bob["route"]["backend"], "local", "{bob}");
    assert_eq!(fake.requests().len(), 4);

    // /v1: only `temperature: 0` is deterministic (OpenAI's default is 1).
    let (base, server) = util::serve_http(&fleet).await;
    let http = reqwest::Client::new();
    let v1 = |temperature: Option<f64>| {
        let mut body = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8});
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        let req = http.post(format!("{base}/v1/chat/completions")).json(&body).send();
        async move { req.await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = fake.requests().len();
    let a = v1(Some(0.0)).await;
    let b = v1(Some(0.0)).await;
    assert_eq!(a["x_agentvisor_route"]["backend"], "local", "{a}");
    assert_eq!(b["x_agentvisor_route"]["backend"], "cache", "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], a["choices"][0]["message"]["content"]);
    for t in [Some(0.7), Some(0.7), None, None] {
        let r = v1(t).await;
        assert_eq!(r["x_agentvisor_route"]["backend"], "local", "temperature {t:?}: {r}");
    }
    assert_eq!(fake.requests().len(), before + 5, "temperature > 0 and the default are never cached");
    server.abort();

    // Values put by task share the cache (their own TTL); invalidation by prefix and all.
    let big = "x".repeat(8 * 1024);
    for i in 0..12 {
        let p = ok(&mut bus, "cache.put", json!({"key": format!("blob:{i}"), "value": big, "ttl_seconds": 600})).await;
        assert_eq!(p["stored"], true, "{p}");
    }
    let got = ok(&mut bus, "cache.get", json!({"key": "blob:11"})).await;
    assert_eq!((got["hit"].as_bool(), got["value"].as_str()), (Some(true), Some(big.as_str())), "{got}");
    let stats = ok(&mut bus, "cache.stats", json!(null)).await;
    assert!(stats["hits"].as_u64().unwrap() >= 4 && stats["misses"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(ok(&mut bus, "cache.invalidate", json!({"prefix": "blob:"})).await["invalidated"], 12);
    assert_eq!(ok(&mut bus, "cache.get", json!({"key": "blob:3"})).await["hit"], false);
    assert!(ok(&mut bus, "cache.invalidate", json!({"all": true})).await["invalidated"].is_u64());
    assert_eq!(ok(&mut bus, "cache.stats", json!({})).await["entries"], 0);

    // The TTL (1.5 s): a hit within it, a miss after it.
    let before = fake.requests().len();
    assert_eq!(send(&mut bus, chat("c6", "What is the capital of France?", "ann")).await["route"]["backend"], "local");
    assert_eq!(send(&mut bus, chat("c7", "What is the capital of France?", "ann")).await["route"]["backend"], "cache");
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let expired = send(&mut bus, chat("c8", "What is the capital of France?", "ann")).await;
    assert_eq!(expired["route"]["backend"], "local", "after the TTL: {expired}");
    assert_eq!(fake.requests().len(), before + 2);

    // Bad inputs: stable codes.
    for (t, input) in [
        ("cache.get", json!({})),
        ("cache.get", json!({"key": ""})),
        ("cache.put", json!({"key": "k"})),
        ("cache.put", json!({"key": "k", "value": 1, "ttl_seconds": 0})),
        ("cache.invalidate", json!({"key": "k", "all": true})),
        ("cache.invalidate", json!({"all": false})),
        ("cache.stats", json!({"verbose": true})),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, "invalid_field", "{t} {input}");
    }
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_cache_lookups_total{outcome=\"hit\"}"), "{metrics}");
    assert!(metrics.contains("agentvisor_cache_lookups_total{outcome=\"miss\"}"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_bound_evicts_and_an_agent_or_the_setting_turns_the_cache_off() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("A fixed answer.".into()));
    let dir = tempfile::tempdir().unwrap();
    // ChitchatAgent opts out in its spec; a tiny size bound.
    let agents = catalog_with(dir.path(), "ChitchatAgent", |y| {
        y.replace("  max_tokens: 256\n", "  max_tokens: 256\n  cache: false\n")
    });
    let (fleet, ingress) = util::bus_fleet(&dir.path().join("data"), "full", |s| {
        s.agents_dir = agents;
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.cache.max_bytes = 4096;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    ok(&mut bus, "cache.stats", json!({})).await;
    for id in ["o1", "o2"] {
        let r = send(&mut bus, chat(id, "Hello there", "ann")).await;
        assert_eq!(r["route"]["backend"], "local", "the opted-out agent is never cached: {r}");
    }
    // Another llm agent (TranslationService) is cached.
    let tr = |id: &str| json!({"id": id, "type": "translation", "input": "Bonjour", "user": "ann"});
    assert_eq!(send(&mut bus, tr("t1")).await["route"]["backend"], "local");
    assert_eq!(send(&mut bus, tr("t2")).await["route"]["backend"], "cache");
    // 1 KiB values in a 4 KiB cache: evicted by size, never above the bound.
    for i in 0..10 {
        ok(&mut bus, "cache.put", json!({"key": format!("k{i}"), "value": "y".repeat(1024)})).await;
    }
    let stats = ok(&mut bus, "cache.stats", json!({})).await;
    assert!(stats["size_bytes"].as_u64().unwrap() <= 4096, "{stats}");
    assert!(stats["evictions"].as_u64().unwrap() >= 1, "{stats}");
    assert!(fleet.services.metrics.render().contains("agentvisor_cache_evictions_total{cause=\"size\"}"));
    let too_big = ok(&mut bus, "cache.put", json!({"key": "huge", "value": "z".repeat(5000)})).await;
    assert_eq!(too_big["stored"], false, "{too_big}");
    // CacheManager stopped: calls go on uncached.
    ok(&mut bus, "system.stop", json!("CacheManager")).await;
    assert_eq!(send(&mut bus, tr("t3")).await["route"]["backend"], "local");
    fleet.shutdown(Duration::from_secs(10)).await;

    // `cache.enabled: false`: nothing cached even with CacheManager running.
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.cache.enabled = false;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    assert_eq!(ok(&mut bus, "cache.stats", json!({})).await["enabled"], false);
    assert_eq!(send(&mut bus, tr("d1")).await["route"]["backend"], "local");
    assert_eq!(send(&mut bus, tr("d2")).await["route"]["backend"], "local");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_responder_answers_from_the_tier_its_rules_say_with_the_reason() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("2.54 centimetres.".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        local_and_cloud(s, &fake);
        s.routing.rules.clear();
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    let q = |id: &str| json!({"id": id, "type": "basic_qa", "input": "How many centimetres are in an inch?", "user": "ann"});
    let first = send(&mut bus, q("q1")).await;
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["output"], "2.54 centimetres.");
    assert_eq!(first["route"]["tier"], "L1", "{first}");
    assert_eq!(first["route"]["agent"], "TieredResponder", "{first}");
    let reason = first["route"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("TieredResponder: ") && reason.contains("local"), "{reason}");
    // The same question: the cache tier (TieredResponder started CacheManager).
    let again = send(&mut bus, q("q2")).await;
    assert_eq!(again["route"]["backend"], "cache", "{again}");
    assert!(again["route"]["reason"].as_str().unwrap().contains("cache hit"), "{again}");
    // Low urgency: the cheapest tier, local.
    let low =
        ok(&mut bus, "tiered_response", json!({"text": "Explain how a heat pump works.", "urgency": "low"})).await;
    assert_eq!((low["tier"].as_str(), low["answer"].as_str()), (Some("L1"), Some("2.54 centimetres.")), "{low}");
    assert!(low["reason"].as_str().unwrap().contains("urgency low"), "{low}");
    let cached =
        ok(&mut bus, "tiered_response", json!({"text": "Explain how a heat pump works.", "urgency": "low"})).await;
    assert_eq!(cached["tier"], "cache", "{cached}");
    // A user's preference for the cloud is kept: L2.
    let cloud = send(
        &mut bus,
        json!({"id": "q3", "type": "tiered_response", "input": {"text": "Quick dinner with eggs?", "urgency": "high"}, "prefer": "cloud"}),
    )
    .await;
    assert_eq!(cloud["output"]["tier"], "L2", "{cloud}");
    for (t, input) in [
        ("tiered_response", json!({"text": ""})),
        ("tiered_response", json!({"text": "x", "urgency": "asap"})),
        ("tiered_response", json!({"text": "x", "mood": "calm"})),
        ("basic_qa", json!({"text": "x"})),
        ("basic_qa", json!("   ")),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, "invalid_field", "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_hubs_report_the_fleet_and_the_pc2_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut bus = util::dealer(&ingress).await;
    for _ in 0..3 {
        ok(&mut bus, "utils.echo", json!("hi")).await;
    }
    let s = ok(&mut bus, "observability.status", json!({})).await;
    assert!(s["uptime_seconds"].as_f64().unwrap() > 0.0, "{s}");
    let running = s["agents"]["running"].as_u64().unwrap();
    assert!(running >= 20, "{s}");
    assert!(s["agents"]["dormant"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["resident_memory_bytes"].as_u64().unwrap() > 1 << 20, "{s}");
    assert!(s["open_breakers"].is_array() && s["tasks_per_second"].as_f64().unwrap() >= 0.0, "{s}");
    assert_eq!(s["run_id"].as_str(), Some(fleet.services.run_id.as_str()));
    let m = ok(&mut bus, "observability.metrics", json!({"prefix": "agentvisor_tasks"})).await;
    let families = m["metrics"].as_array().unwrap();
    assert!(
        !families.is_empty() && families.iter().all(|f| f["name"].as_str().unwrap().starts_with("agentvisor_tasks")),
        "{m}"
    );
    let tasks = families.iter().find(|f| f["name"] == "agentvisor_tasks_total").expect("tasks counter");
    assert_eq!(tasks["type"], "counter");
    let echo = tasks["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["labels"]["agent"] == "UnifiedUtilsAgent" && x["labels"]["outcome"] == "ok")
        .expect("UnifiedUtilsAgent's tasks");
    assert!(echo["value"].as_f64().unwrap() >= 3.0, "{echo}");
    let all = ok(&mut bus, "observability.metrics", json!(null)).await;
    assert!(all["metrics"].as_array().unwrap().iter().any(|f| f["type"] == "histogram"), "histograms too");

    let p = ok(&mut bus, "observability.pc2.status", json!(null)).await;
    assert_eq!(p["scope"], "pc2", "{p}");
    let groups: Vec<&str> = p["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert!(groups.contains(&"pc2_core") && !groups.contains(&"infrastructure_registry"), "{groups:?}");
    let pc2_running = p["agents"]["running"].as_u64().unwrap();
    assert!(pc2_running >= 6 && pc2_running < running, "{p}");
    let pm = ok(&mut bus, "observability.pc2.metrics", json!({"prefix": "agentvisor_agent_up"})).await;
    let up = &pm["metrics"][0]["samples"];
    let agents: Vec<&str> = up.as_array().unwrap().iter().map(|x| x["labels"]["agent"].as_str().unwrap()).collect();
    assert!(agents.contains(&"ContextManager") && !agents.contains(&"ServiceRegistry"), "{agents:?}");
    for (t, input) in [
        ("observability.metrics", json!({"prefix": 5})),
        ("observability.metrics", json!({"name": "x"})),
        ("observability.status", json!({"x": 1})),
        ("observability.pc2.metrics", json!("agentvisor")),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, "invalid_field", "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_hard_max_a_failing_summariser_gives_context_exhausted_never_a_truncated_prompt() {
    use agentvisor::config::{ProactiveRule, ProactiveWhen};
    let chat_model = FakeOpenAi::start().await;
    let words = "The harbour lights flicker while gulls argue over the last fishing boats coming home.";
    chat_model.set_default(Behaviour::Answer(words.repeat(2)));
    let summariser = FakeOpenAi::start().await;
    summariser.set_default(Behaviour::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        let mut local = backend_settings(Tier::L1, "fake-local", chat_model.base_url());
        local.context_tokens = 600;
        s.backends = [
            ("local".to_string(), local),
            ("broken".to_string(), backend_settings(Tier::L2, "fake-summariser", summariser.base_url())),
        ]
        .into();
        s.routing.rules.clear();
        // A busy test machine must not send the chat to L2 (the broken backend).
        s.routing.tiers.high_load_percent = 101.0;
        s.context.summarizer_backend = Some("broken".into());
        s.proactive.rules = vec![ProactiveRule {
            name: "compact".into(),
            when: ProactiveWhen { context_above: Some(0.6), ..Default::default() },
            prompt: "Suggest wrapping up.".into(),
            agent: None,
            session: None,
            enabled: true,
        }];
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    let mut events = fleet.services.events.subscribe();
    ok(&mut bus, "proactive.triggers", json!({})).await; // ProactiveAgent runs (it is on demand)
    assert_eq!(code(&mut bus, "context.usage", json!({"session": "harbour"})).await, "not_found");

    let mut ratios = Vec::new();
    let refused = loop {
        assert!(ratios.len() < 12, "never refused: {ratios:?}");
        let sent = chat_model.requests().len();
        let r = call(
            &mut bus,
            json!({"id": format!("turn-{}", ratios.len()), "type": "simple_chat", "input": words, "session": "harbour", "user": "ann"}),
        )
        .await;
        if r["status"] == "error" {
            assert_eq!(chat_model.requests().len(), sent, "a refused prompt is not sent, not even truncated");
            break r;
        }
        let u = ok(&mut bus, "context.usage", json!({"session": "harbour"})).await;
        assert_eq!(u["estimated"], true, "a remote model: an estimate ({u})");
        assert_eq!(u["window"], 600, "{u}");
        ratios.push(u["ratio"].as_f64().unwrap());
    };
    assert_eq!(refused["error"]["code"], "context_exhausted", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("hard max") && message.contains("summarising the session failed"), "{message}");
    assert!(ratios.windows(2).all(|w| w[1] > w[0]), "usage grows turn by turn: {ratios:?}");
    // At the target the governor tried to summarise (the summariser answered 500) and sent the prompt anyway.
    assert!(ratios.iter().any(|r| (0.5..=0.75).contains(r)), "{ratios:?}");
    assert!(!summariser.requests().is_empty(), "the summariser was asked");
    let asked = summariser.requests()[0].body["messages"].to_string();
    assert!(asked.contains("Summarise the conversation") && asked.contains("harbour lights"), "{asked}");
    let u = ok(&mut bus, "context.usage", json!({"session": "harbour"})).await;
    assert!(u["state"] == "over_target" || u["state"] == "over_hard_max", "{u}");
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_context_exhausted_total{agent=\"ChitchatAgent\"} 1"), "{metrics}");
    assert!(metrics.contains("agentvisor_context_summaries_total{outcome=\"failed\""), "{metrics}");
    // The summary attempts went through HybridRouter: receipts of ContextManager.
    fleet.receipts.flush().await;
    let stored = fleet.services.store.call(|conn| agentvisor::store::receipts::last(conn, 50)).await.unwrap();
    assert!(stored.iter().any(|r| r.agent == "ContextManager" && r.outcome == "backend_error"), "{stored:?}");
    // ProactiveAgent's context rule fired on the governor's usage events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(p) = tokio::time::timeout_at(deadline, events.recv()).await.expect("a compact suggestion") else {
            continue; // lagged: the suggestion may still come
        };
        if p.topic == "proactive.suggestion" && p.str("trigger") == Some("compact") {
            break;
        }
    }
    for (t, input) in [
        ("context.usage", json!({})),
        ("context.usage", json!({"session": " "})),
        ("context.summarize", json!("harbour")),
        ("context.resume", json!({"session": "harbour", "force": true})),
        ("context_monitor.check", json!({"session": 3})),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, "invalid_field", "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// The real default model, a 512-token window: usage grows turn by turn,
/// the governor's count equals each generation's `tokens_in` (chat template
/// included), crossing the target summarises the session with a real model
/// output, the summary file is written, and the next answer's prompt holds
/// the summary.
#[cfg(feature = "embedded")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_session_is_summarised_at_the_target_and_counted_like_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    // Short answers keep the test short: 24 tokens per answer.
    let agents = catalog_with(dir.path(), "ChitchatAgent", |y| y.replace("  max_tokens: 256\n", "  max_tokens: 24\n"));
    let data = dir.path().join("data");
    let (fleet, ingress) = util::bus_fleet(&data, "full", |s| {
        s.agents_dir = agents;
        s.models_dir = util::models_dir();
        s.models.threads = 2;
        s.models.context_tokens = 512;
        s.backends = agentvisor::config::Settings::default().backends; // `local`: embedded, L1
        if let Some(local) = s.backends.get_mut("local") {
            local.total_timeout_secs = 300.0;
        }
        // Every earlier turn is summarised, in at most 40 tokens.
        s.context.summary_max_tokens = 40;
        s.context.keep_turns = 0;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    let inputs = [
        "Hi! My name is Ada, I live in Lisbon near the river, and I work as a baker who starts every day at four in the morning.",
        "My favourite bread is a dark rye loaf with sunflower seeds, and on Sundays I walk my dog Pico along the river to Belém.",
        "Next month I am opening a second bakery in Porto, close to the old bridge, and I need a name for it that people remember.",
        "Can you remind me where I live and what my dog is called?",
        "What do you think I should name the new bakery in Porto?",
    ];
    let mut last_tokens = 0;
    let mut summarized_at = None;
    for (i, input) in inputs.iter().enumerate() {
        let r = send(
            &mut bus,
            json!({"id": format!("real-{i}"), "type": "simple_chat", "input": input, "session": "ada", "deadline_ms": 300_000}),
        )
        .await;
        assert_eq!(r["status"], "ok", "{r}");
        let u = ok(&mut bus, "context.usage", json!({"session": "ada"})).await;
        assert_eq!(u["estimated"], false, "counted by the model's tokenizer: {u}");
        assert_eq!(u["window"], 512, "{u}");
        // The governor's count of the prompt it admitted is what the generation reports.
        assert_eq!(u["prompt_tokens"], r["route"]["tokens_in"], "turn {i}: {u} vs {}", r["route"]);
        let tokens = u["tokens"].as_u64().unwrap();
        if u["turns_summarized"].as_u64().unwrap() > 0 {
            // Summarised before this turn's prompt was sent: the answer used the
            // session through the summary (counted in `prompt_tokens` above).
            summarized_at = Some(i);
            let ratio = u["prompt_tokens"].as_f64().unwrap() / 512.0;
            assert!(ratio < 0.5, "the prompt after the summary is below the target: {u}");
            assert!(u["summary"].as_str().is_some_and(|s| !s.trim().is_empty()), "{u}");
            break;
        }
        assert!(tokens > last_tokens, "usage grows turn by turn: {tokens} after {last_tokens}");
        last_tokens = tokens;
    }
    let at = summarized_at.expect("the session crossed the target and was summarised");
    assert!(at >= 1, "not before the target was crossed");
    // The summary was a model call through HybridRouter, with its own receipt.
    fleet.receipts.flush().await;
    let stored = fleet.services.store.call(|conn| agentvisor::store::receipts::last(conn, 50)).await.unwrap();
    assert!(stored.iter().any(|r| r.agent == "ContextManager" && r.outcome == "ok" && r.tokens_out > 0), "{stored:?}");
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_context_summaries_total{outcome=\"ok\",trigger=\"target\"}"), "{metrics}");
    // The readable summary file of this run.
    let file = data.join("runs").join(format!("{}_summary.md", fleet.services.run_id));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(text.contains("Session `ada`") && text.contains("turns summarised"), "{text}");
    let u = ok(&mut bus, "context.usage", json!({"session": "ada"})).await;
    assert!(text.contains(u["summary"].as_str().unwrap().trim()), "{text}");
    // Save-state and resume.
    let saved = ok(&mut bus, "context.save_state", json!({"session": "ada"})).await;
    assert_eq!(saved["summary_path"].as_str(), Some(file.display().to_string().as_str()), "{saved}");
    let resumed = ok(&mut bus, "context.resume", json!({"session": "ada"})).await;
    assert_eq!((resumed["resumed"].as_bool(), &resumed["summary"]), (Some(true), &u["summary"]), "{resumed}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
