//! The conversation agents (issue 21) over real ZeroMQ against the real
//! fleet with a real SQLite file: DynamicIdentityAgent's personas reaching
//! every llm agent's system prompt (seen by the fake OpenAI server), and a
//! stable code for every bad input.
//!
//! Model outputs here are **recorded/fixed outputs** of the project's fake
//! OpenAI server (`fake_openai.rs`), not a real model: these tests are about
//! what the agents send and do with an answer. The real-model versions are
//! in [`embedded`] (built with the `embedded` feature only).

use std::collections::BTreeSet;
use std::time::Duration;

use agentvisor::config::{PersonaSettings, Tier};
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// Sends one task, returns its reply (streamed chunks skipped).
pub(crate) async fn call(bus: &mut zeromq::DealerSocket, envelope: Value) -> Value {
    let id = envelope["id"].clone();
    util::send_json(bus, &envelope).await;
    loop {
        let r = util::recv_json_within(bus, Duration::from_secs(60)).await;
        if r.get("event").is_none() && r["id"] == id {
            return r;
        }
    }
}

/// The output of an `ok` reply to `task_type` with `input`.
pub(crate) async fn ok(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let r = call(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input})).await;
    assert_eq!(r["status"], "ok", "{task_type}: {r}");
    r["output"].clone()
}

/// The error code of an `error` reply to `task_type` with `input`.
pub(crate) async fn code(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> String {
    let r = call(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input})).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    r["error"]["code"].as_str().unwrap_or_default().to_string()
}

const COACH: &str = "You are an upbeat fitness coach; keep answers short and encouraging.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_persona_reaches_every_llm_agents_system_prompt() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("{\"answer\": \"fine\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.identity.personas.insert(
            "butler".into(),
            PersonaSettings {
                system_prompt: "You are a discreet English butler.".into(),
                voice: Some("en-gb".into()),
                tone: Some("formal".into()),
            },
        );
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    // A persona created by task and set on a session.
    let out = ok(
        &mut bus,
        "identity.set",
        json!({"persona": "coach", "definition": {"system_prompt": COACH, "tone": "friendly"}, "session": "gym-1"}),
    )
    .await;
    assert_eq!(out["persona"]["source"], "task", "{out}");
    assert_eq!(out["session"], "gym-1");
    let got = ok(&mut bus, "identity.get", json!({"session": "gym-1"})).await;
    assert_eq!(got["persona"]["name"], "coach", "{got}");
    assert_eq!(ok(&mut bus, "identity.get", json!({"session": "nobody"})).await["persona"], Value::Null);
    let listed = ok(&mut bus, "identity.list", json!(null)).await;
    let names: Vec<(&str, &str)> = listed["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("butler", "yaml"), ("coach", "task")]);

    // Every llm agent of the fleet answers one task of that session.
    let table = fleet.services.tasks.clone();
    let mut agents = BTreeSet::new();
    let mut sent = Vec::new();
    for def in table.iter().filter(|d| d.runtime == "llm") {
        if !agents.insert(def.agent.clone()) {
            continue;
        }
        let id = format!("persona-{}", def.task_type);
        util::send_json(
            &mut bus,
            &json!({"id": id, "type": def.task_type, "input": def.example, "session": "gym-1", "deadline_ms": 60_000}),
        )
        .await;
        sent.push(id);
    }
    assert!(agents.len() >= 20, "{} llm agents", agents.len());
    let mut replies = 0;
    while replies < sent.len() {
        let r = util::recv_json_within(&mut bus, Duration::from_secs(90)).await;
        if r.get("event").is_none() {
            assert!(sent.contains(&r["id"].as_str().unwrap().to_string()), "{r}");
            replies += 1;
        }
    }
    let requests = fake.requests();
    assert!(requests.len() >= agents.len(), "{} requests for {} agents", requests.len(), agents.len());
    for r in &requests {
        let system = r.body["messages"][0]["content"].as_str().unwrap_or_default();
        assert_eq!(r.body["messages"][0]["role"], "system", "{}", r.body);
        assert!(system.starts_with(&format!("{COACH}\nTone: friendly.")), "no persona first: {system:?}");
    }
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_persona_prompts_total{agent=\"ChitchatAgent\"}"), "{metrics}");

    // Another session gets no persona; a YAML persona switched onto it does.
    let before = fake.requests().len();
    let chat = table.iter().find(|d| d.agent == "ChitchatAgent").unwrap().task_type.clone();
    let r = call(&mut bus, json!({"id": "plain", "type": chat, "input": "hi", "session": "plain-1"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let system = fake.requests()[before].body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(!system.contains(COACH), "{system}");
    ok(&mut bus, "identity.set", json!({"persona": "butler", "session": "plain-1"})).await;
    let r = call(&mut bus, json!({"id": "butlered", "type": chat, "input": "hi", "session": "plain-1"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let system = fake.requests().last().unwrap().body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.starts_with("You are a discreet English butler.\nTone: formal."), "{system}");

    // Bad inputs: stable codes.
    for (input, want) in [
        (json!({"persona": "coach"}), "invalid_field"), // neither session nor definition
        (json!({"persona": "ghost", "session": "s"}), "not_found"), // no such persona
        (json!({"persona": " ", "session": "s"}), "invalid_field"), // blank name
        (json!({"persona": "butler", "definition": {"system_prompt": "x"}}), "invalid_field"), // YAML: read-only
        (json!({"persona": "c", "definition": {"system_prompt": ""}}), "invalid_field"),
        (json!({"persona": "c", "session": "s", "mood": "x"}), "invalid_field"), // unknown field
    ] {
        assert_eq!(code(&mut bus, "identity.set", input.clone()).await, want, "{input}");
    }
    for (input, want) in [
        (json!({}), "invalid_field"),
        (json!({"persona": "coach", "session": "gym-1"}), "invalid_field"),
        (json!({"persona": "ghost"}), "not_found"),
        (json!("coach"), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, "identity.get", input.clone()).await, want, "{input}");
    }
    assert_eq!(code(&mut bus, "identity.list", json!({"all": true})).await, "invalid_field");
    fleet.shutdown(Duration::from_secs(10)).await;
}
