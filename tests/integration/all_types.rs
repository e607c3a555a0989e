//! The whole catalog answers: every task type's example input (from the
//! task table: `agentvisor tasks --json`) goes over the real ZeroMQ bus to
//! the `full` profile, llm agents answered by a local OpenAI-compatible
//! server. No reply may be `not_implemented` — except from the agents of
//! [`PENDING`], the builtin agents whose behaviour is not written yet, which
//! must answer exactly that. The list only shrinks: an agent that gets its
//! behaviour leaves it (this test fails until it does), and the open issues
//! empty it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agentvisor::config::Tier;
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// Builtin agents without a behaviour yet, each answering `not_implemented`
/// (the issue that builds it in brackets).
const PENDING: &[&str] = &[
    "ActiveLearningMonitor",        // learning loop
    "LearningAdjusterAgent",        // learning loop
    "LearningOrchestrationService", // learning loop
    "PredictiveHealthMonitor",      // learning loop
    "StreamingInterruptHandler",    // ears and eyes
    "StreamingSpeechRecognition",   // ears and eyes
];

/// Types that run the local model: `not_implemented` in a build without the
/// `embedded` feature.
const LOCAL_MODEL_TYPES: &[&str] = &["models.load", "tiny_generation"];

/// Types whose example would take an agent away from the rest of the run
/// (stopping or restarting it), or lock the doors (the first token makes
/// every door ask for one): sent last, one at a time, the token last of all.
const DISRUPTIVE: &[&str] = &["system.stop", "system.restart", "auth.token_create"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_type_answers_and_only_pending_agents_say_not_implemented() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("{\"answer\": \"fine\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear(); // every call goes to the local (fake) backend
        s.web.allowed_hosts = vec!["web.test".into()]; // web_fetch's examples: refused, no network
    })
    .await;
    let table = fleet.services.tasks.clone();
    assert!(table.len() >= 177, "{} task types", table.len());
    let catalog_agents: BTreeSet<&str> = table.iter().map(|d| d.agent.as_str()).collect();
    for agent in PENDING {
        assert!(catalog_agents.contains(agent), "{agent} of PENDING handles no task type");
    }

    let mut bus = util::dealer(&ingress).await;
    let (calm, mut disruptive): (Vec<_>, Vec<_>) =
        table.iter().partition(|d| !DISRUPTIVE.contains(&d.task_type.as_str()));
    disruptive.sort_by_key(|d| d.task_type == "auth.token_create");
    let mut replies: BTreeMap<String, Value> = BTreeMap::new();
    // Everything calm at once (DEALER: many in flight), then the disruptive ones in turn.
    for def in &calm {
        let envelope = json!({"id": def.task_type, "type": def.task_type, "input": def.example, "deadline_ms": 60_000});
        util::send_json(&mut bus, &envelope).await;
    }
    while replies.len() < calm.len() {
        let msg = util::recv_json_within(&mut bus, Duration::from_secs(90)).await;
        if msg.get("event").is_some() {
            continue; // a streamed chunk
        }
        let id = msg["id"].as_str().expect("reply id").to_string();
        assert!(replies.insert(id.clone(), msg).is_none(), "two replies for {id}");
    }
    for def in &disruptive {
        let envelope = json!({"id": def.task_type, "type": def.task_type, "input": def.example, "deadline_ms": 60_000});
        let reply = loop {
            let msg = util::ask(&mut bus, envelope.clone()).await;
            if msg.get("event").is_none() {
                break msg;
            }
        };
        replies.insert(def.task_type.clone(), reply);
    }

    let mut wrong = Vec::new();
    for def in table.iter() {
        let reply = &replies[&def.task_type];
        let code = reply["error"]["code"].as_str();
        // Without llama.cpp (the lean build) the local model agents say so.
        let lean = !cfg!(feature = "embedded") && LOCAL_MODEL_TYPES.contains(&def.task_type.as_str());
        let pending = PENDING.contains(&def.agent.as_str()) || lean;
        if pending != (code == Some("not_implemented")) {
            wrong.push(format!("{} ({}, pending: {pending}): {reply}", def.task_type, def.agent));
        }
        // An example is a valid input: it never fails the input check
        // ("input of TYPE at PATH: ..."; an agent's own "no such id" may follow).
        let refused = format!("input of {} at ", def.task_type);
        if code == Some("invalid_field") && reply["error"]["message"].as_str().is_some_and(|m| m.starts_with(&refused))
        {
            wrong.push(format!("{}: the example was refused: {reply}", def.task_type));
        }
        // What an agent answers fits its output schema.
        if reply["status"] == "ok"
            && let Err(e) = def.check_output(&reply["output"])
        {
            wrong.push(format!("{}: {e}", def.task_type));
        }
    }
    assert!(wrong.is_empty(), "{} of {} task types answered wrongly:\n{}", wrong.len(), table.len(), wrong.join("\n"));
    fleet.shutdown(Duration::from_secs(10)).await;
}
