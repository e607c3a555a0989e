//! One notion of who is asking: the envelope's `user` and `model` (and the
//! `/v1` request's `user` and `model`) reach HybridRouter and the receipt —
//! in the reply, the `route.decided` event and the SQLite `receipts` table.
//! An unknown `model` is `invalid_field` listing the known ones (on `/v1`
//! with `http.strict_models: true`).

use std::time::Duration;

use agentvisor::store::receipts;
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, local_and_cloud};
use crate::util;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_model_reach_the_receipt_over_the_bus_and_v1() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("an answer".into()));
    let dir = tempfile::tempdir().unwrap();
    // Strict models: /v1 refuses an unknown model too (by default it routes it as auto; see mcp.rs).
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        local_and_cloud(s, &fake);
        s.http.strict_models = true;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    // `model` names the L2 backend's model: a light task goes there anyway.
    let reply = util::ask(
        &mut bus,
        json!({"id": "w1", "type": "simple_chat", "input": "hi", "user": "alice", "model": "fake-cloud"}),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let route = &reply["route"];
    assert_eq!((route["user"].as_str(), route["backend"].as_str()), (Some("alice"), Some("cloud_fast")), "{route}");
    assert_eq!(route["model"], "fake-cloud", "{route}");
    assert_eq!(fake.requests().last().unwrap().body["model"], "fake-cloud");

    // Without `model`, routing decides; `user` still reaches the receipt.
    let reply = util::ask(&mut bus, json!({"id": "w2", "type": "simple_chat", "input": "hi", "user": "bob"})).await;
    assert_eq!((reply["route"]["user"].as_str(), reply["route"]["backend"].as_str()), (Some("bob"), Some("local")));

    // An unknown model is refused before any agent runs, naming the known ones.
    let reply = util::ask(&mut bus, json!({"id": "w3", "type": "simple_chat", "input": "hi", "model": "gpt-9"})).await;
    assert_eq!(reply["error"]["code"], "invalid_field", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("gpt-9") && message.contains("fake-local") && message.contains("cloud_fast"), "{message}");

    // The receipts table keeps who asked (receipts are committed in
    // batches after the reply: flush before reading).
    fleet.receipts.flush().await;
    let stored = fleet.services.store.call(|conn| receipts::last(conn, 10)).await.unwrap();
    let users: Vec<Option<&str>> = stored.iter().map(|r| r.user.as_deref()).collect();
    assert!(users.contains(&Some("alice")) && users.contains(&Some("bob")), "{users:?}");

    // The same through /v1: OpenAI's `user` and `model` fields.
    let (base, server) = util::serve_http(&fleet).await;
    let http = reqwest::Client::new();
    let post = |body: Value| http.post(format!("{base}/v1/chat/completions")).json(&body).send();
    let r = post(json!({"model": "fake-local", "user": "carol", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["x_agentvisor_route"]["user"], "carol", "{body}");
    assert_eq!(body["x_agentvisor_route"]["backend"], "local", "{body}");
    let r = post(json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    server.abort();
    fleet.shutdown(Duration::from_secs(10)).await;
}
