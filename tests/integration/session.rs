//! Session memory: SessionMemoryAgent's tasks over ZeroMQ, and the history
//! feeding the next chat turn of an llm agent (the request the model server
//! receives contains the first turn).

use std::time::Duration;

use serde_json::json;

use crate::fake_openai::{Behaviour, FakeOpenAi};
use crate::util::{self, ask};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_history_feeds_the_second_chat_turn() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let backend =
        format!("{{kind: openai, tier: L1, base_url: '{}', model: fake-local, max_retries: 0}}", fake.base_url());
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends.insert("local".into(), serde_norway::from_str(&backend).unwrap());
    })
    .await;
    let mut sock = util::dealer(&ingress).await;

    fake.push(Behaviour::Answer("Nice to meet you, Ada.".into()));
    fake.push(Behaviour::Answer("Your name is Ada.".into()));
    let r1 =
        ask(&mut sock, json!({"id": "t1", "type": "simple_chat", "input": "My name is Ada.", "session": "s-42"})).await;
    assert_eq!(r1["status"], "ok", "{r1}");
    assert_eq!(r1["agent"], "ChitchatAgent");
    let r2 = ask(&mut sock, json!({"id": "t2", "type": "simple_chat", "input": "What is my name?", "session": "s-42"}))
        .await;
    assert_eq!(r2["output"], "Your name is Ada.", "{r2}");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let second: Vec<(String, String)> = reqs[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(second[0].0, "system");
    assert_eq!(second[1], ("user".to_string(), "My name is Ada.".to_string()), "{second:?}");
    assert_eq!(second[2], ("assistant".to_string(), "Nice to meet you, Ada.".to_string()));
    assert_eq!(second[3], ("user".to_string(), "What is my name?".to_string()));
    // Another session knows nothing of it.
    fake.push(Behaviour::Answer("I don't know.".into()));
    ask(&mut sock, json!({"id": "t3", "type": "simple_chat", "input": "Who am I?", "session": "other"})).await;
    assert_eq!(fake.requests()[2].body["messages"].as_array().unwrap().len(), 2);

    // SessionMemoryAgent's own tasks.
    let h = ask(&mut sock, json!({"id": "h1", "type": "session.history", "input": {"session": "s-42"}})).await;
    let turns = h["output"]["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 4, "{h}");
    assert_eq!(turns[3]["content"], "Your name is Ada.");
    assert_eq!(turns[3]["agent"], "ChitchatAgent");
    let a = ask(
        &mut sock,
        json!({"id": "a1", "type": "session.append", "input": {"session": "s-42", "role": "user", "content": "hi"}}),
    )
    .await;
    assert_eq!(a["output"]["appended"], 1, "{a}");
    let bad = ask(
        &mut sock,
        json!({"id": "a2", "type": "session.append", "input": {"session": "s-42", "role": "robot", "content": "x"}}),
    )
    .await;
    assert_eq!(bad["error"]["code"], "invalid_field");
    let c = ask(&mut sock, json!({"id": "c1", "type": "session.clear", "input": "s-42"})).await;
    assert_eq!(c["output"]["deleted"], 5, "{c}");
    let h = ask(&mut sock, json!({"id": "h2", "type": "session.history", "input": {"session": "s-42"}})).await;
    assert_eq!(h["output"]["turns"].as_array().unwrap().len(), 0);
    fleet.shutdown(Duration::from_secs(10)).await;
}
