//! The `llm` runtime and hybrid routing end to end (DESIGN §4, §5, §7):
//! tasks over a real ZeroMQ DEALER, the real fleet and HybridRouter, model
//! backends pointed at [`FakeOpenAi`] (a real local OpenAI-compatible HTTP
//! server), receipts in the real SQLite file, the real daemon binary and CLI.
//!
//! Every model answer in this file is a scripted answer pushed into the fake
//! server, standing in for a model: none of them is a model's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentvisor::config::catalog::Catalog;
use agentvisor::config::spec::RuntimeSpec;
use agentvisor::config::{BackendKind, BackendSettings, BreakerSettings, Settings, Tier};
use agentvisor::daemon::System;
use agentvisor::supervisor::AgentState;
use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::fake_openai::{Behaviour, FakeOpenAi, PROMPT_TOKENS, Received};
use crate::util::{self, Daemon, EventLog, root};

// ---------------------------------------------------------------------------
// Helpers (the bus ones are small copies of those in bus.rs).

/// A backend on `base_url` with small timeouts and no retries: "local" (L1,
/// free) or "cloud" (L2, priced per 1k tokens).
fn backend(tier: Tier, base_url: String) -> BackendSettings {
    let cloud = tier != Tier::L1;
    BackendSettings {
        kind: BackendKind::Openai,
        tier,
        enabled: true,
        base_url: Some(base_url),
        api_key_env: None,
        model: if cloud { "fake-cloud".into() } else { "fake-local".into() },
        connect_timeout_secs: 1.0,
        first_token_timeout_secs: 2.0,
        total_timeout_secs: 5.0,
        max_retries: 0,
        retry_initial_secs: 0.05,
        retry_max_secs: 0.2,
        price_per_1k_input_usd: if cloud { 0.001 } else { 0.0 },
        price_per_1k_output_usd: if cloud { 0.002 } else { 0.0 },
        models_ttl_secs: 60.0,
        context_tokens: 8192,
    }
}

/// A booted fleet of `profile` with these backends and its bus on free
/// ports; returns it and the ROUTER endpoint.
async fn llm_fleet(
    dir: &Path,
    profile: &str,
    backends: Vec<(&str, BackendSettings)>,
    tweak: impl FnOnce(&mut Settings),
) -> (System, String) {
    let mut s = util::settings(dir);
    s.bus.ingress = "tcp://127.0.0.1:0".into();
    s.bus.events = "tcp://127.0.0.1:0".into();
    s.backends = backends.into_iter().map(|(name, b)| (name.to_string(), b)).collect();
    // The arbiter as a single choice: its review loop and content routing
    // are tested in arbiter.rs.
    s.arbiter.review = false;
    s.routing.content.enabled = false;
    tweak(&mut s);
    let fleet = util::fleet(s, None, profile).await;
    fleet.boot().await;
    let (ingress, _) = fleet.bus_endpoints().expect("bus bound");
    (fleet, ingress)
}

/// A DEALER client of the task bus.
struct Bus {
    sock: DealerSocket,
}

impl Bus {
    async fn connect(endpoint: &str) -> Bus {
        let mut sock = DealerSocket::new();
        sock.connect(endpoint).await.expect("connect");
        Bus { sock }
    }

    async fn send(&mut self, v: &Value) {
        let frames = vec![Bytes::from(serde_json::to_vec(v).expect("json"))];
        self.sock.send(ZmqMessage::try_from(frames).expect("frames")).await.expect("send");
    }

    /// The next message (reply or chunk), within 20 s.
    async fn recv(&mut self) -> Value {
        let msg = tokio::time::timeout(Duration::from_secs(20), self.sock.recv())
            .await
            .expect("reply in time")
            .expect("recv");
        let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("body");
        serde_json::from_slice(&body).expect("json reply")
    }

    /// Sends `task` and returns its final reply (the only message expected).
    async fn ask(&mut self, task: Value) -> Value {
        self.send(&task).await;
        let reply = self.recv().await;
        assert_eq!(reply["id"], task["id"], "reply to another task: {reply}");
        reply
    }
}

/// Polls an async condition every 20 ms; panics after `timeout`.
async fn poll_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample of the Prometheus text `metrics`: metric `name`
/// with (at least) these labels.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches =
            metric == name && labels.iter().all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if matches { value.parse().ok() } else { None }
    })
}

/// The breaker state HybridRouter reports for `backend` (`closed`, `open`, `half_open`).
async fn breaker(fleet: &System, backend: &str) -> String {
    let status = fleet.services.router.status().await.expect("HybridRouter answers its status");
    let entry = status["backends"]
        .as_array()
        .and_then(|list| list.iter().find(|b| b["name"] == backend))
        .unwrap_or_else(|| panic!("{backend} not in {status}"));
    entry["breaker"].as_str().unwrap_or("none").to_string()
}

/// One `llm` agent of the catalog.
#[derive(Debug, Clone)]
struct LlmSpec {
    name: String,
    task_type: String,
    role: Option<String>,
    system_prompt: String,
    max_tokens: u32,
    schema: Option<Value>,
}

fn llm_specs() -> BTreeMap<String, LlmSpec> {
    let catalog = Catalog::load(&root().join("agents")).expect("catalog loads");
    catalog
        .agents
        .values()
        .filter_map(|spec| match &spec.runtime {
            RuntimeSpec::Llm { system_prompt, max_tokens, output_schema, .. } => Some((
                spec.name.clone(),
                LlmSpec {
                    name: spec.name.clone(),
                    task_type: spec.handles.first().cloned().expect("an llm agent handles a task type"),
                    role: spec.role.clone(),
                    system_prompt: system_prompt.clone(),
                    max_tokens: *max_tokens,
                    schema: output_schema.clone(),
                },
            )),
            _ => None,
        })
        .collect()
}

/// The messages of a received chat request.
fn messages(r: &Received) -> Vec<Value> {
    r.body["messages"].as_array().cloned().unwrap_or_default()
}

/// Whether `r` is a request of the agent with this system prompt for this input.
fn is_request_of(r: &Received, system_prompt: &str, input: &str) -> bool {
    let m = messages(r);
    m.first() == Some(&json!({"role": "system", "content": system_prompt}))
        && m.iter().any(|x| x["role"] == "user" && x["content"].as_str().is_some_and(|c| c.contains(input)))
}

/// Asserts `route` is the receipt of a call answered by `backend` at `tier`.
fn assert_receipt(route: &Value, id: &str, tier: &str, backend: &str, answer_words: usize) {
    assert_eq!(route["task_id"], id, "{route}");
    assert_eq!(route["tier"], tier, "{route}");
    assert_eq!(route["backend"], backend, "{route}");
    assert_eq!(route["outcome"], "ok", "{route}");
    assert_eq!(route["tokens_in"], PROMPT_TOKENS, "{route}");
    assert_eq!(route["tokens_out"], answer_words, "{route}");
    assert!(route["attempts"].as_u64().is_some_and(|a| a >= 1), "{route}");
    assert!(route["reason"].as_str().is_some_and(|r| !r.is_empty()), "{route}");
    assert!(route["total_ms"].as_f64().is_some_and(|t| t > 0.0), "{route}");
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// A scripted answer valid for each JSON agent's `output_schema`.
fn scripted_json(agent: &str) -> Value {
    match agent {
        "EmotionEngine" => json!({"label": "joy", "intensity": 0.8}),
        "ToneDetector" => json!({"tone": "friendly", "confidence": 0.9}),
        "NLUAgent" => json!({"intent": "greeting", "entities": {}}),
        "IntentionValidatorAgent" => json!({"decision": "allow", "reason": "scripted: the user asked for it"}),
        other => panic!("no scripted JSON answer for {other}"),
    }
}

/// A profile like `full` but with every on-demand agent dormant at boot
/// (`full` autoloads NLUAgent and ChainOfThoughtAgent, two specialists).
fn dormant_profile(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("profiles/full.yaml")).expect("full profile");
    let mut v: serde_norway::Value = serde_norway::from_str(&text).expect("profile yaml");
    v["profile"]["name"] = "llm_dormant".into();
    v["agent_selection"]["autoload_on_startup"] = serde_norway::Value::Sequence(Vec::new());
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("llm_dormant.yaml"), serde_norway::to_string(&v).unwrap()).unwrap();
    profiles
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_llm_agent_answers_through_the_router_with_its_own_prompt() {
    let specs = llm_specs();
    assert_eq!(specs.len(), 22, "llm agents in the catalog: {:?}", specs.keys());
    let json_agents: Vec<&str> = specs.values().filter(|s| s.schema.is_some()).map(|s| s.name.as_str()).collect();
    assert_eq!(json_agents, ["EmotionEngine", "IntentionValidatorAgent", "NLUAgent", "ToneDetector"]);
    let coder = specs["CodeGenerator"].clone();

    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let (fleet, ingress) =
        llm_fleet(dir.path(), "full", vec![("local", backend(Tier::L1, fake.base_url()))], |_| {}).await;
    let mut bus = Bus::connect(&ingress).await;

    for (i, spec) in specs.values().enumerate() {
        let name = spec.name.as_str();
        let id = format!("every-{i}");
        let input = format!("scripted test input {i} for {name}: hello there");
        let arbiter = spec.role.as_deref() == Some("arbiter");
        // Scripted answers, standing in for the model.
        let (expected, specialist_text) = if arbiter {
            let text = format!("scripted CodeGenerator answer for task {id}");
            fake.push(Behaviour::AnswerJson(json!({"specialist": "CodeGenerator", "reason": "scripted: code"})));
            fake.push(Behaviour::Answer(text.clone()));
            (json!({"specialist": "CodeGenerator", "reason": "scripted: code", "answer": text}), Some(text))
        } else if let Some(schema) = &spec.schema {
            let v = scripted_json(name);
            let validator = jsonschema::validator_for(schema).expect("schema compiles");
            assert!(validator.is_valid(&v), "the scripted answer for {name} fits its schema");
            fake.push(Behaviour::AnswerJson(v.clone()));
            (v, None)
        } else {
            let text = format!("scripted answer of {name} for task {id}");
            fake.push(Behaviour::Answer(text.clone()));
            (json!(text), None)
        };
        let before = fake.requests().len();

        let reply = bus.ask(json!({"id": id, "agent": name, "type": spec.task_type, "input": input})).await;

        assert_eq!(reply["status"], "ok", "{name}: {reply}");
        assert_eq!(reply["agent"], name, "{reply}");
        assert_eq!(reply["output"], expected, "{name}: {reply}");
        let received: Vec<Received> = fake.requests()[before..].to_vec();
        assert_eq!(received.len(), if arbiter { 2 } else { 1 }, "{name}: model calls");
        let own = &received[0];
        assert_eq!(
            messages(own).first(),
            Some(&json!({"role": "system", "content": spec.system_prompt})),
            "{name}: the system prompt is the spec's, exactly"
        );
        assert!(is_request_of(own, &spec.system_prompt, &input), "{name}: the user message holds the input");
        assert_eq!(own.body["model"], "fake-local");
        // The arbiter's own decisions are short (`arbiter.decision_max_tokens`).
        let max_tokens = if arbiter { Settings::default().arbiter.decision_max_tokens } else { spec.max_tokens };
        assert_eq!(own.body["max_tokens"], max_tokens, "{name}: max_tokens from the spec");
        let wants_json = spec.schema.is_some() || arbiter;
        // A schema is a forced tool (issue 15), not `response_format`.
        assert_eq!(own.body["tool_choice"]["type"] == "function", wants_json, "{name}: {}", own.body);
        assert!(own.body.get("response_format").is_none(), "{name}: {}", own.body);
        assert!(!own.streaming());

        let route = &reply["route"];
        let answered_by = if arbiter { coder.name.as_str() } else { name };
        let answer_text = match &specialist_text {
            Some(t) => t.clone(),
            None if spec.schema.is_some() => expected.to_string(),
            None => expected.as_str().unwrap_or_default().to_string(),
        };
        assert_receipt(route, &id, "L1", "local", words(&answer_text));
        assert_eq!(route["model"], "fake-local", "{route}");
        assert_eq!(route["agent"], answered_by, "{route}");
        if let Some(text) = specialist_text {
            // The arbiter forwarded the task to the coding specialist, with its own prompt.
            let forwarded = &received[1];
            assert!(is_request_of(forwarded, &coder.system_prompt, &input), "{:?}", messages(forwarded));
            assert_eq!(forwarded.body["max_tokens"], coder.max_tokens);
            assert_eq!(reply["output"]["answer"], text);
        }
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_agent_repairs_once_then_invalid_output() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let (fleet, ingress) =
        llm_fleet(dir.path(), "full", vec![("local", backend(Tier::L1, fake.base_url()))], |_| {}).await;
    let prompt = llm_specs()["EmotionEngine"].system_prompt.clone();
    let mut bus = Bus::connect(&ingress).await;

    // Scripted: an answer outside the schema's enum, then a valid one.
    let invalid = json!({"label": "happy", "intensity": 0.7});
    let valid = json!({"label": "joy", "intensity": 0.7});
    fake.push(Behaviour::AnswerJson(invalid.clone()));
    fake.push(Behaviour::AnswerJson(valid.clone()));
    let input = "I finally passed my exam!";
    let reply = bus.ask(json!({"id": "e1", "type": "emotion_detection", "input": input})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["agent"], "EmotionEngine");
    assert_eq!(reply["output"], valid);
    let r = fake.requests();
    assert_eq!(r.len(), 2, "one answer and one repair");
    let repair = messages(&r[1]);
    assert_eq!(repair.len(), 4, "{repair:?}");
    assert_eq!(repair[0], json!({"role": "system", "content": prompt}));
    assert_eq!(repair[1], json!({"role": "user", "content": input}));
    assert_eq!(
        repair[2],
        json!({"role": "assistant", "content": invalid.to_string()}),
        "the first answer is shown back"
    );
    assert_eq!(repair[3]["role"], "user");
    assert!(repair[3]["content"].as_str().unwrap().contains("not valid"), "{}", repair[3]);
    assert_eq!(reply["route"]["outcome"], "ok");

    // Scripted: prose, then a number out of range: two invalid answers.
    fake.push(Behaviour::Answer("I would say the writer feels joyful".into()));
    fake.push(Behaviour::AnswerJson(json!({"label": "joy", "intensity": 1.5})));
    let reply = bus.ask(json!({"id": "e2", "type": "emotion_detection", "input": input})).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_output", "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("EmotionEngine"), "{reply}");
    let r = fake.requests();
    assert_eq!(r.len(), 4, "exactly one repair attempt, no third call");
    assert_eq!(messages(&r[3])[2], json!({"role": "assistant", "content": "I would say the writer feels joyful"}));
    let metrics = fleet.ctx().metrics.render();
    assert_eq!(
        sample(&metrics, "agentvisor_tasks_total", &[("agent", "EmotionEngine"), ("outcome", "invalid_output")]),
        Some(1.0),
        "{metrics}"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbiter_picks_the_specialist_for_four_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dormant_profile(dir.path());
    let fake = FakeOpenAi::start().await;
    let data = dir.path().join("data");
    let (fleet, ingress) = llm_fleet(&data, "llm_dormant", vec![("local", backend(Tier::L1, fake.base_url()))], |s| {
        s.profiles_dir = profiles.clone();
    })
    .await;
    let specs = llm_specs();
    let arbiter_prompt = specs["ModelOrchestrator"].system_prompt.clone();
    let mut bus = Bus::connect(&ingress).await;

    let nlu_answer = json!({"intent": "set_reminder", "entities": {"time": "2030-01-01T09:00:00"}});
    // (request, how the scripted choice names the specialist, the specialist, its scripted answer)
    let cases = [
        (
            "write a Python function that reverses a string",
            "CodeGenerator",
            "CodeGenerator",
            json!("scripted code answer"),
        ),
        (
            "if Ann is older than Bob and Bob older than Cy, who is youngest?",
            "reasoning",
            "ChainOfThoughtAgent",
            json!("scripted reasoning answer: Cy"),
        ),
        (
            "compare these two designs and check the trade-offs",
            "CognitiveModelAgent",
            "CognitiveModelAgent",
            json!("scripted analysis answer"),
        ),
        ("remind me at 9 on new year's day 2030", "NLUAgent", "NLUAgent", nlu_answer.clone()),
    ];
    for (i, (request, named, specialist, answer)) in cases.iter().enumerate() {
        let id = format!("auto-{i}");
        assert_eq!(fleet.ctx().state(specialist), Some(AgentState::Dormant), "{specialist} dormant before");
        // Scripted: the arbiter's choice, then the specialist's answer.
        fake.push(Behaviour::AnswerJson(json!({"specialist": named, "reason": format!("scripted reason {i}")})));
        match answer {
            Value::String(text) => fake.push(Behaviour::Answer(text.clone())),
            other => fake.push(Behaviour::AnswerJson(other.clone())),
        };
        let before = fake.requests().len();
        let reply = bus.ask(json!({"id": id, "type": "auto", "input": request})).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["agent"], "ModelOrchestrator", "{reply}");
        assert_eq!(reply["output"]["specialist"], *specialist, "{reply}");
        assert_eq!(reply["output"]["reason"], format!("scripted reason {i}"), "{reply}");
        assert_eq!(reply["output"]["answer"], *answer, "{reply}");
        assert_eq!(fleet.ctx().state(specialist), Some(AgentState::Running), "{specialist} started on demand");
        let received = fake.requests()[before..].to_vec();
        assert_eq!(received.len(), 2, "the choice and the specialist's answer");
        assert!(is_request_of(&received[0], &arbiter_prompt, request), "{:?}", messages(&received[0]));
        assert!(
            is_request_of(&received[1], &specs[*specialist].system_prompt, request),
            "{specialist} used its own prompt: {:?}",
            messages(&received[1])
        );
        assert_eq!(reply["route"]["agent"], *specialist, "{reply}");
        assert_eq!(reply["route"]["backend"], "local", "{reply}");
    }

    // Scripted: a malformed choice (prose), repaired through NLUAgent, then the coder.
    fake.push(Behaviour::Answer("I think the coder".into()));
    fake.push(Behaviour::AnswerJson(json!({
        "intent": "choose_specialist",
        "entities": {"specialist": "CodeGenerator", "reason": "scripted: repaired choice"}
    })));
    fake.push(Behaviour::Answer("scripted code answer after repair".into()));
    let before = fake.requests().len();
    let reply = bus.ask(json!({"id": "auto-repair", "type": "auto", "input": "fix my bash script"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["output"]["specialist"], "CodeGenerator", "{reply}");
    assert_eq!(reply["output"]["reason"], "scripted: repaired choice", "{reply}");
    assert_eq!(reply["output"]["answer"], "scripted code answer after repair", "{reply}");
    let received = fake.requests()[before..].to_vec();
    assert_eq!(received.len(), 3, "choice, repair, specialist");
    assert!(
        is_request_of(&received[1], &specs["NLUAgent"].system_prompt, "I think the coder"),
        "{:?}",
        messages(&received[1])
    );
    assert!(is_request_of(&received[2], &specs["CodeGenerator"].system_prompt, "fix my bash script"));

    // Scripted: a malformed choice the repair cannot fix: invalid_output, no specialist called.
    fake.push(Behaviour::Answer("hmm, hard to say".into()));
    fake.push(Behaviour::AnswerJson(json!({"intent": "unknown", "entities": {}})));
    let before = fake.requests().len();
    let reply = bus.ask(json!({"id": "auto-lost", "type": "auto", "input": "do the thing"})).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_output", "{reply}");
    assert_eq!(fake.requests().len() - before, 2, "no specialist was asked");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_failure_fails_over_to_local_and_the_receipt_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let backends = vec![
        ("cloud", backend(Tier::L2, FakeOpenAi::refused_base_url())),
        ("local", backend(Tier::L1, fake.base_url())),
    ];
    let (fleet, ingress) = llm_fleet(dir.path(), "full", backends, |_| {}).await;
    let mut log = EventLog::new(&fleet);
    let mut bus = Bus::connect(&ingress).await;

    // Scripted local answer.
    let text = "scripted local answer def f(): pass";
    fake.push(Behaviour::Answer(text.into()));
    let reply = bus.ask(json!({"id": "fo-1", "type": "code_generation", "input": "write f"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["agent"], "CodeGenerator");
    assert_eq!(reply["output"], text);
    let route = &reply["route"];
    assert_eq!(route["tier"], "L2", "the decision was cloud: {route}");
    assert_eq!(route["backend"], "local", "{route}");
    assert_eq!(route["model"], "fake-local", "{route}");
    assert_eq!(route["outcome"], "ok", "{route}");
    assert_eq!(route["attempts"], 2, "one refused cloud attempt, one local: {route}");
    let fallbacks: Vec<&str> = route["fallbacks"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(fallbacks.contains(&"next_backend:local"), "{route}");
    assert!(route["reason"].as_str().unwrap().contains("rule code_generation"), "{route}");
    assert_eq!(route["cost_usd"], 0.0, "local prices are zero: {route}");
    assert_eq!(fake.requests().len(), 1);

    // The same receipt went out as route.decided and into the metrics.
    let e = log
        .wait_for(Duration::from_secs(5), "route.decided fo-1", |e| {
            e.topic == "route.decided" && e.str("task_id") == Some("fo-1")
        })
        .await;
    assert_eq!(e.str("backend"), Some("local"));
    assert_eq!(e.data()["fallbacks"], route["fallbacks"]);
    let metrics = fleet.ctx().metrics.render();
    assert_eq!(
        sample(&metrics, "agentvisor_backend_requests_total", &[("backend", "cloud"), ("outcome", "unreachable")]),
        Some(1.0),
        "{metrics}"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_half_opens_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let (fleet, ingress) = llm_fleet(dir.path(), "full", vec![("local", backend(Tier::L1, fake.base_url()))], |s| {
        s.routing.breaker = BreakerSettings { failure_threshold: 2, cooldown_secs: 0.3 };
    })
    .await;
    let ctx = fleet.ctx().clone();
    let gauge = |ctx: &agentvisor::supervisor::AgentTable| {
        sample(&ctx.metrics.render(), "agentvisor_backend_breaker_state", &[("backend", "local")])
    };
    let mut bus = Bus::connect(&ingress).await;
    let chat = |id: &str| json!({"id": id, "type": "simple_chat", "input": "hello"});

    // Scripted: two server errors, then answers.
    fake.push(Behaviour::Status(500)).push(Behaviour::Status(500));
    fake.set_default(Behaviour::Answer("scripted answer after recovery".into()));
    for id in ["b1", "b2"] {
        let reply = bus.ask(chat(id)).await;
        assert_eq!(reply["error"]["code"], "backend_error", "{reply}");
        assert_eq!(reply["route"]["outcome"], "backend_error", "{reply}");
        assert_eq!(reply["route"]["backend"], "local", "{reply}");
    }
    assert_eq!(fake.requests().len(), 2);
    util::poll_until(Duration::from_secs(5), "breaker gauge open (1)", || gauge(&ctx) == Some(1.0)).await;
    assert_eq!(breaker(&fleet, "local").await, "open");

    // Open: refused without reaching the backend.
    let reply = bus.ask(chat("b3")).await;
    assert_eq!(reply["error"]["code"], "no_backend", "{reply}");
    assert_eq!(reply["route"]["outcome"], "no_backend", "{reply}");
    assert_eq!(fake.requests().len(), 2, "an open breaker lets nothing through");

    // After the cooldown: exactly one probe goes through while it is in flight.
    poll_async(Duration::from_secs(5), "cooldown over (half_open)", || async {
        breaker(&fleet, "local").await == "half_open"
    })
    .await;
    fake.push(Behaviour::Delay(
        Duration::from_millis(1000),
        Box::new(Behaviour::Answer("scripted probe answer".into())),
    ));
    bus.send(&chat("probe")).await;
    util::poll_until(Duration::from_secs(5), "the probe reaches the fake", || fake.requests().len() == 3).await;
    bus.send(&chat("during-probe")).await;
    let mut replies = [bus.recv().await, bus.recv().await];
    replies.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
    let [during, probe] = replies;
    assert_eq!(during["id"], "during-probe");
    assert_eq!(during["error"]["code"], "no_backend", "a second call while the probe is in flight: {during}");
    assert_eq!(probe["id"], "probe");
    assert_eq!(probe["status"], "ok", "{probe}");
    assert_eq!(probe["output"], "scripted probe answer");
    assert_eq!(fake.requests().len(), 3, "one probe only");

    // Closed again.
    util::poll_until(Duration::from_secs(5), "breaker gauge closed (0)", || gauge(&ctx) == Some(0.0)).await;
    assert_eq!(breaker(&fleet, "local").await, "closed");
    let reply = bus.ask(chat("b4")).await;
    assert_eq!(reply["output"], "scripted answer after recovery", "{reply}");
    assert_eq!(fake.requests().len(), 4);
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_from_an_open_breaker_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let (fleet, ingress) = llm_fleet(dir.path(), "full", vec![("local", backend(Tier::L1, fake.base_url()))], |s| {
        s.routing.breaker = BreakerSettings { failure_threshold: 1, cooldown_secs: 60.0 };
    })
    .await;
    let mut bus = Bus::connect(&ingress).await;
    fake.push(Behaviour::Status(500));
    let reply = bus.ask(json!({"id": "n1", "type": "simple_chat", "input": "hi"})).await;
    assert_eq!(reply["error"]["code"], "backend_error", "{reply}");
    poll_async(Duration::from_secs(5), "breaker open", || async { breaker(&fleet, "local").await == "open" }).await;
    let reply = bus.ask(json!({"id": "n2", "type": "simple_chat", "input": "hi"})).await;
    assert_eq!(reply["error"]["code"], "no_backend", "{reply}");
    let says = |v: &Value| v.to_string().contains("breaker");
    assert!(
        says(&reply["error"]["message"]) || says(&reply["route"]["reason"]) || says(&reply["route"]["fallbacks"]),
        "nothing says the breaker of local is open: {reply}"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// Regression: the router used to take every chain backend's half-open probe up
/// front and never give back those it did not call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_ready_backend_is_not_left_half_open_by_a_call_it_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (local, cloud) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let backends = vec![("local", backend(Tier::L1, local.base_url())), ("cloud", backend(Tier::L2, cloud.base_url()))];
    let (fleet, ingress) = llm_fleet(dir.path(), "full", backends, |s| {
        s.routing.breaker = BreakerSettings { failure_threshold: 2, cooldown_secs: 0.3 };
    })
    .await;
    let mut bus = Bus::connect(&ingress).await;
    // `prefer: local` keeps the chain to local only (and off L2 under load).
    let local_chat = |id: &str| json!({"id": id, "type": "simple_chat", "input": "hi", "prefer": "local"});

    // Scripted: local fails twice (breaker opens), then answers.
    local.push(Behaviour::Status(500)).push(Behaviour::Status(500));
    local.set_default(Behaviour::Answer("scripted local answer".into()));
    cloud.set_default(Behaviour::Answer("scripted cloud answer".into()));
    for id in ["h1", "h2"] {
        assert_eq!(bus.ask(local_chat(id)).await["error"]["code"], "backend_error");
    }
    poll_async(Duration::from_secs(5), "local half-open after the cooldown", || async {
        breaker(&fleet, "local").await == "half_open"
    })
    .await;
    // A cloud task: chain [cloud, local]; cloud answers, local is never called.
    let reply = bus.ask(json!({"id": "h3", "type": "code_generation", "input": "code"})).await;
    assert_eq!(reply["route"]["backend"], "cloud", "{reply}");
    assert_eq!(local.requests().len(), 2);

    // Local must still get its probe.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    loop {
        n += 1;
        let reply = bus.ask(local_chat(&format!("h4-{n}"))).await;
        if reply["route"]["backend"] == "local" {
            assert_eq!(reply["output"], "scripted local answer", "{reply}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "local was never probed again (breaker {}); last reply: {reply}",
            breaker(&fleet, "local").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_over_the_bus_aborts_the_http_call() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let mut local = backend(Tier::L1, fake.base_url());
    // Long timeouts: only the cancellation may end these calls.
    local.first_token_timeout_secs = 60.0;
    local.total_timeout_secs = 120.0;
    let (fleet, ingress) = llm_fleet(dir.path(), "full", vec![("local", local)], |_| {}).await;
    let mut log = EventLog::new(&fleet);
    fake.set_default(Behaviour::Stall);
    let mut bus = Bus::connect(&ingress).await;

    // 1. A cancel message.
    bus.send(&json!({"id": "c1", "agent": "ChitchatAgent", "type": "simple_chat", "input": "tell me a story"})).await;
    util::poll_until(Duration::from_secs(10), "the fake receives the call", || fake.requests().len() == 1).await;
    assert_eq!(fake.disconnects(), 0);
    bus.send(&json!({"id": "c1-cancel", "cancel": "c1"})).await;
    let mut replies = [bus.recv().await, bus.recv().await];
    replies.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
    assert_eq!(replies[0]["id"], "c1");
    assert_eq!(replies[0]["error"]["code"], "cancelled", "{}", replies[0]);
    assert_eq!(replies[1]["output"]["cancelled"], "c1", "{}", replies[1]);
    util::poll_until(Duration::from_secs(5), "the fake sees the client go", || fake.disconnects() == 1).await;
    let e = log
        .wait_for(Duration::from_secs(5), "route.decided c1", |e| {
            e.topic == "route.decided" && e.str("task_id") == Some("c1")
        })
        .await;
    assert_eq!(e.str("outcome"), Some("cancelled"), "{:?}", e.data());

    // 2. A deadline.
    let reply =
        bus.ask(json!({"id": "c2", "type": "simple_chat", "input": "another story", "deadline_ms": 1000})).await;
    assert_eq!(reply["error"]["code"], "deadline_exceeded", "{reply}");
    util::poll_until(Duration::from_secs(5), "the deadline aborts the call", || fake.disconnects() == 2).await;

    // 3. The client leaves.
    {
        let mut leaver = Bus::connect(&ingress).await;
        leaver.send(&json!({"id": "c3", "type": "simple_chat", "input": "a third story"})).await;
        util::poll_until(Duration::from_secs(10), "the fake receives the call", || fake.requests().len() == 3).await;
    }
    util::poll_until(Duration::from_secs(5), "the leaver's call is aborted", || fake.disconnects() == 3).await;

    // A cancelled call says nothing about the backend: the breaker stays closed.
    assert_eq!(breaker(&fleet, "local").await, "closed");
    let metrics = fleet.ctx().metrics.render();
    assert_eq!(
        sample(&metrics, "agentvisor_backend_requests_total", &[("backend", "local"), ("outcome", "cancelled")]),
        Some(3.0),
        "{metrics}"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_chunks_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    let (fleet, ingress) =
        llm_fleet(dir.path(), "full", vec![("local", backend(Tier::L1, fake.base_url()))], |_| {}).await;
    let mut bus = Bus::connect(&ingress).await;
    // Scripted answer, streamed by the fake in three pieces.
    let text = "scripted streamed answer in several words";
    fake.push(Behaviour::Answer(text.into()));
    bus.send(&json!({"id": "s1", "agent": "ChitchatAgent", "type": "chat", "input": "hi", "stream": true})).await;
    let mut chunks = Vec::new();
    let reply = loop {
        let m = bus.recv().await;
        assert_eq!(m["id"], "s1", "{m}");
        if m["event"] == "chunk" {
            chunks.push(m);
        } else {
            break m;
        }
    };
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["output"], text);
    assert!(chunks.len() >= 2, "{chunks:?}");
    let deltas: Vec<&str> = chunks.iter().map(|c| c["delta"].as_str().expect("delta")).collect();
    assert_eq!(deltas.concat(), text, "{deltas:?}");
    let seqs: Vec<u64> = chunks.iter().map(|c| c["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let r = fake.requests();
    assert_eq!(r.len(), 1);
    assert!(r[0].streaming(), "the backend call streamed: {}", r[0].body);
    assert!(reply["route"]["first_token_ms"].as_f64().is_some(), "{reply}");
    assert_eq!(reply["route"]["tokens_out"], words(text));

    // Through the arbiter: its choice is not streamed, the specialist's answer is.
    fake.push(Behaviour::AnswerJson(json!({"specialist": "CodeGenerator", "reason": "scripted: code"})));
    let code = "scripted streamed code answer from the specialist";
    fake.push(Behaviour::Answer(code.into()));
    bus.send(&json!({"id": "s2", "type": "auto", "input": "write code", "stream": true})).await;
    let mut deltas = Vec::new();
    let reply = loop {
        let m = bus.recv().await;
        match m["event"].as_str() {
            Some("chunk") => deltas.push(m["delta"].as_str().expect("delta").to_string()),
            _ => break m,
        }
    };
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["output"]["answer"], code, "{reply}");
    assert!(deltas.len() >= 2, "{deltas:?}");
    assert_eq!(deltas.concat(), code);
    let r = fake.requests();
    assert_eq!(r.len(), 3);
    assert!(!r[1].streaming(), "the choice is one JSON object");
    assert!(r[2].streaming(), "the specialist streams");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// Runs the CLI with `args` in `cwd`; returns (exit code, stdout, stderr).
async fn cli(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out =
        tokio::process::Command::new(util::bin()).args(args).current_dir(cwd).output().await.expect("the CLI runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `agentvisor receipts --last 5 --json` over `data`.
async fn receipts(cwd: &Path, data: &Path) -> Vec<Value> {
    let (code, out, err) = cli(cwd, &["receipts", "--last", "5", "--json", "--data-dir", data.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "receipts failed: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_restart_and_the_cli_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("scripted daemon answer".into()));
    let config = dir.path().join("agentvisor.yaml");
    std::fs::write(
        &config,
        format!(
            "backends:\n  local:\n    kind: openai\n    tier: L1\n    base_url: {}\n    model: fake-local\n    \
             first_token_timeout_secs: 5\n    total_timeout_secs: 10\n    max_retries: 0\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let (config, data_arg) = (config.to_str().unwrap().to_string(), data.to_str().unwrap().to_string());
    let args = [
        "run",
        "--profile",
        "full",
        "--config",
        &config,
        "--data-dir",
        &data_arg,
        "--set",
        "bus.ingress=tcp://127.0.0.1:0",
        "--set",
        "bus.events=tcp://127.0.0.1:0",
    ];
    let send = |ingress: String| {
        let cwd = dir.path().to_path_buf();
        async move {
            let (code, out, err) = cli(&cwd, &["send", "simple_chat", "hi", "--endpoint", &ingress]).await;
            assert_eq!(code, Some(0), "send failed: {err}");
            assert_eq!(out.trim(), "scripted daemon answer");
        }
    };
    let ingress = |d: &Daemon| {
        let d = d.base.clone();
        async move {
            let body: Value = reqwest::get(format!("{d}/health")).await.expect("health").json().await.expect("json");
            body["bus"]["ingress"].as_str().expect("ingress in /health").to_string()
        }
    };

    let mut d = Daemon::start(&root(), &args, &[]).await;
    d.wait_ready().await;
    send(ingress(&d).await).await;
    send(ingress(&d).await).await;
    assert!(d.terminate(Duration::from_secs(30)).await.success());
    assert_eq!(fake.requests().len(), 2);

    let first = receipts(dir.path(), &data).await;
    assert_eq!(first.len(), 2, "{first:?}");
    for r in &first {
        assert_eq!(r["backend"], "local", "{r}");
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["agent"], "ChitchatAgent", "{r}");
        assert_eq!(r["task_type"], "simple_chat", "{r}");
        assert_eq!(r["tier"], "L1", "{r}");
        assert_eq!(r["tokens_in"], PROMPT_TOKENS, "{r}");
    }
    assert_ne!(first[0]["task_id"], first[1]["task_id"]);

    // The table form prints them too.
    let (code, table, _) = cli(dir.path(), &["receipts", "--data-dir", &data_arg]).await;
    assert_eq!(code, Some(0));
    for r in &first {
        let id: String = r["task_id"].as_str().unwrap().chars().take(22).collect();
        assert!(table.contains(&id), "{table}");
    }

    let mut d = Daemon::start(&root(), &args, &[]).await;
    d.wait_ready().await;
    assert_eq!(receipts(dir.path(), &data).await, first, "the store survived the restart");
    send(ingress(&d).await).await;
    // Receipts are committed in batches after the reply; the clean stop commits every one.
    assert!(d.terminate(Duration::from_secs(30)).await.success());
    let all = receipts(dir.path(), &data).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[..2], first[..]);
    assert_eq!(all[2]["backend"], "local");
    assert_eq!(all[2]["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tokens_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let (local, cloud) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let backends = vec![("local", backend(Tier::L1, local.base_url())), ("cloud", backend(Tier::L2, cloud.base_url()))];
    let (fleet, ingress) = llm_fleet(dir.path(), "full", backends, |_| {}).await;
    let mut bus = Bus::connect(&ingress).await;

    // Scripted answers: two local, one cloud.
    local.push(Behaviour::Answer("scripted local answer one".into()));
    local.push(Behaviour::Answer("scripted local answer two".into()));
    cloud.push(Behaviour::Answer("scripted cloud answer".into()));
    for id in ["m1", "m2"] {
        // `prefer: local` keeps these local even when the machine is busy.
        let reply = bus.ask(json!({"id": id, "type": "simple_chat", "input": "hi", "prefer": "local"})).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_receipt(&reply["route"], id, "L1", "local", 4);
        assert_eq!(reply["route"]["cost_usd"], 0.0);
    }
    let reply = bus.ask(json!({"id": "m3", "type": "code_generation", "input": "code"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_receipt(&reply["route"], "m3", "L2", "cloud", 3);
    assert_eq!(reply["route"]["model"], "fake-cloud");
    let cost = reply["route"]["cost_usd"].as_f64().unwrap();
    let expected = f64::from(PROMPT_TOKENS) / 1000.0 * 0.001 + 3.0 / 1000.0 * 0.002;
    assert!((cost - expected).abs() < 1e-12, "cost {cost} != {expected}");

    let m = fleet.ctx().metrics.render();
    let get = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels);
    let tokens = "agentvisor_llm_tokens_total";
    assert_eq!(get(tokens, &[("backend", "local"), ("direction", "in")]), Some(2.0 * f64::from(PROMPT_TOKENS)), "{m}");
    assert_eq!(get(tokens, &[("backend", "local"), ("direction", "out")]), Some(8.0), "{m}");
    assert_eq!(get(tokens, &[("backend", "cloud"), ("direction", "in")]), Some(f64::from(PROMPT_TOKENS)), "{m}");
    assert_eq!(get(tokens, &[("backend", "cloud"), ("direction", "out")]), Some(3.0), "{m}");
    let routes = "agentvisor_route_decisions_total";
    assert_eq!(get(routes, &[("tier", "L1"), ("backend", "local"), ("outcome", "ok")]), Some(2.0), "{m}");
    assert_eq!(get(routes, &[("tier", "L2"), ("backend", "cloud"), ("outcome", "ok")]), Some(1.0), "{m}");
    let requests = "agentvisor_backend_requests_total";
    assert_eq!(get(requests, &[("backend", "local"), ("outcome", "ok")]), Some(2.0), "{m}");
    assert_eq!(get(requests, &[("backend", "cloud"), ("outcome", "ok")]), Some(1.0), "{m}");
    assert_eq!(get("agentvisor_backend_breaker_state", &[("backend", "local")]), Some(0.0), "{m}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_mid_way_does_not_fail_over_but_a_whole_answer_does() {
    let dir = tempfile::tempdir().unwrap();
    let (local, cloud) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let backends = vec![("local", backend(Tier::L1, local.base_url())), ("cloud", backend(Tier::L2, cloud.base_url()))];
    // No load ever counts as high: simple_chat's chain is [local, cloud] whatever the machine does.
    let (fleet, ingress) = llm_fleet(dir.path(), "full", backends, |s| s.routing.tiers.high_load_percent = 100.0).await;
    let mut bus = Bus::connect(&ingress).await;
    cloud.set_default(Behaviour::Answer("scripted cloud answer".into()));

    // Streaming: local breaks off after two pieces; the client has them, so no failover.
    local.push(Behaviour::DropMidStream);
    bus.send(&json!({"id": "d1", "type": "simple_chat", "input": "hi", "stream": true})).await;
    let mut deltas = Vec::new();
    let reply = loop {
        let m = bus.recv().await;
        match m["event"].as_str() {
            Some("chunk") => deltas.push(m["delta"].as_str().expect("delta").to_string()),
            _ => break m,
        }
    };
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "backend_error", "{reply}");
    assert_eq!(deltas, crate::fake_openai::partial_pieces()[..2], "the pieces sent before the break");
    assert_eq!(reply["route"]["backend"], "local", "{reply}");
    assert_eq!(cloud.requests().len(), 0, "no failover after part of the answer was streamed");

    // Not streaming: the broken answer reached no one, so cloud answers instead.
    local.push(Behaviour::DropMidStream);
    let reply = bus.ask(json!({"id": "d2", "type": "simple_chat", "input": "hi"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["output"], "scripted cloud answer");
    assert_eq!(reply["route"]["tier"], "L1", "{reply}");
    assert_eq!(reply["route"]["backend"], "cloud", "{reply}");
    assert!(reply["route"]["fallbacks"].as_array().unwrap().contains(&json!("next_backend:cloud")), "{reply}");
    assert_eq!(cloud.requests().len(), 1);
    fleet.shutdown(Duration::from_secs(10)).await;
}
