//! Memory agents over ZeroMQ: MemoryOrchestratorService stores, gets,
//! searches, deletes and expires memories (the sweeper empties the table);
//! MemoryClient forwards to it and answers `agent_unavailable` once it is
//! stopped; KnowledgeBase adds, ranks (FTS5 bm25) and deletes documents of a
//! small corpus, and survives hostile queries.

use std::time::{Duration, Instant};

use agentvisor::daemon::System;
use agentvisor::supervisor::AgentState;
use serde_json::{Value, json};
use zeromq::DealerSocket;

use crate::util::{self, ask};

/// A booted `full` fleet with its bus on free ports, and a client socket.
async fn start() -> (tempfile::TempDir, System, DealerSocket) {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    for agent in ["MemoryOrchestratorService", "MemoryClient", "KnowledgeBase"] {
        assert_eq!(fleet.ctx().state(agent), Some(AgentState::Running), "{agent}");
    }
    (dir, fleet, util::dealer(&ingress).await)
}

/// Sends `task_type` with `input` (fresh id each time) and returns the reply.
async fn task(sock: &mut DealerSocket, task_type: &str, input: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    ask(sock, json!({"id": id, "type": task_type, "input": input})).await
}

/// The output of a task that must succeed.
async fn ok(sock: &mut DealerSocket, task_type: &str, input: Value) -> Value {
    let r = task(sock, task_type, input.clone()).await;
    assert_eq!(r["status"], "ok", "{task_type} {input}: {r}");
    r["output"].clone()
}

/// The error code of a task that must fail, after checking its message names `needle`.
async fn err(sock: &mut DealerSocket, task_type: &str, input: Value, needle: &str) -> String {
    let r = task(sock, task_type, input.clone()).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{task_type} {input}: {message:?} should name {needle:?}");
    r["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_store_get_search_delete_expire_and_the_client_forwards() {
    let (_dir, fleet, mut sock) = start().await;
    let sock = &mut sock;

    // Store, get, delete.
    let input =
        json!({"text": "Ada prefers green tea", "kind": "preference", "tags": ["drinks", "ada"], "session": "s-1"});
    let id = ok(sock, "memory.store", input).await["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let m = ok(sock, "memory.get", json!({"id": id})).await;
    assert_eq!(m["text"], "Ada prefers green tea");
    assert_eq!(m["kind"], "preference");
    assert_eq!(m["tags"], json!(["drinks", "ada"]));
    assert_eq!(m["session"], "s-1");
    assert_eq!(m["expires_at"], Value::Null);

    // MemoryClient: recall is the authority's get; search reaches memory.search.
    let recalled = ok(sock, "memory.recall", json!({"id": id})).await;
    for key in ["id", "ts", "kind", "text", "tags", "session", "expires_at", "tier", "importance"] {
        assert_eq!(recalled[key], m[key], "{key}");
    }
    // Each read counts (issue 22's tiers: reads restart the decay clock).
    assert_eq!((m["accesses"].as_u64(), recalled["accesses"].as_u64()), (Some(1), Some(2)));
    ok(sock, "memory.store", json!({"text": "Bob drinks coffee", "kind": "fact"})).await;
    let found = ok(sock, "memory.search", json!({"query": "GREEN tea"})).await;
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(results[0]["id"], id.as_str());
    let found = ok(sock, "memory.search", json!({"query": "drinks", "kind": "preference"})).await;
    assert_eq!(found["results"], json!([]), "the tag is not the text; Bob's memory is a fact");

    assert_eq!(ok(sock, "memory.delete", json!({"id": id})).await["deleted"], 1);
    assert_eq!(ok(sock, "memory.delete", json!({"id": id})).await["deleted"], 0);
    assert_eq!(err(sock, "memory.get", json!({"id": id}), &id).await, "invalid_field");
    assert_eq!(err(sock, "memory.recall", json!(id), &id).await, "invalid_field");

    // Bad input names the field.
    assert_eq!(err(sock, "memory.store", json!({"kind": "fact"}), "text").await, "invalid_field");
    assert_eq!(err(sock, "memory.store", json!({"text": "x"}), "kind").await, "invalid_field");
    let bad_ttl = json!({"text": "x", "kind": "fact", "ttl_seconds": -1});
    assert_eq!(err(sock, "memory.store", bad_ttl, "ttl_seconds").await, "invalid_field");
    let bad_tags = json!({"text": "x", "kind": "fact", "tags": [1]});
    assert_eq!(err(sock, "memory.store", bad_tags, "tags").await, "invalid_field");
    assert_eq!(err(sock, "memory.search", json!({"query": "  "}), "query").await, "invalid_field");
    assert_eq!(err(sock, "memory.search", json!({"query": "x", "limit": 0}), "limit").await, "invalid_field");

    // A memory with a TTL: visible, then gone for get, then gone from the table (the sweeper).
    let ttl = json!({"text": "the oven is on", "kind": "fact", "ttl_seconds": 1});
    let short = ok(sock, "memory.store", ttl).await["id"].as_str().unwrap().to_string();
    let m = ok(sock, "memory.get", json!({"id": short})).await;
    assert!(m["expires_at"].as_f64().unwrap() > m["ts"].as_f64().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = task(sock, "memory.get", json!({"id": short})).await;
        if r["status"] == "error" {
            assert_eq!(r["error"]["code"], "invalid_field", "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "the TTL'd memory is still there after 10 s: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let key = short.clone();
        let rows: i64 = fleet
            .services
            .store
            .call(move |conn| Ok(conn.query_row("SELECT count(*) FROM memories WHERE id = ?1", [key], |r| r.get(0))?))
            .await
            .unwrap();
        if rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweeper did not delete the expired row within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without the authority, MemoryClient refuses instead of answering from a copy.
    let kept = ok(sock, "memory.store", json!({"text": "kept", "kind": "fact"})).await["id"].clone();
    fleet.stop_agent("MemoryOrchestratorService", AgentState::Stopped, "test").await.unwrap();
    let code = err(sock, "memory.recall", json!({"id": kept}), "MemoryOrchestratorService").await;
    assert_eq!(code, "agent_unavailable");
    let code = err(sock, "memory.search", json!({"query": "kept"}), "MemoryOrchestratorService").await;
    assert_eq!(code, "agent_unavailable");
    assert_eq!(
        fleet.ctx().state("MemoryOrchestratorService"),
        Some(AgentState::Stopped),
        "not restarted by the client"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// A small corpus: (title, text, source).
const CORPUS: [(&str, &str, &str); 8] = [
    (
        "Rust ownership",
        "Rust guarantees memory safety without a garbage collector. The borrow checker enforces that every \
         reference is valid: either one mutable borrow or any number of shared borrows.",
        "https://doc.rust-lang.org/book/ch04-00-understanding-ownership.html",
    ),
    (
        "Python basics",
        "Python is a dynamically typed language with a garbage collector. Type checkers such as mypy check \
         annotations before the program runs.",
        "https://docs.python.org/3/tutorial/",
    ),
    (
        "The public library",
        "Members may borrow up to ten books at a time. A librarian checks the borrowed books on return.",
        "city library leaflet",
    ),
    (
        "Checkers for beginners",
        "Checkers is played on an 8x8 board; pieces move diagonally and capture by jumping.",
        "games club",
    ),
    (
        "Sourdough bread",
        "Feed the starter, mix flour and water, let the dough rise overnight and bake at 250 degrees.",
        "grandma's notebook",
    ),
    (
        "Tomato soup",
        "Roast tomatoes with garlic, simmer with stock for twenty minutes and blend until smooth.",
        "kitchen notes",
    ),
    (
        "Jupiter",
        "Jupiter is the largest planet of the solar system, a gas giant with a great red spot and many moons.",
        "astronomy for everyone",
    ),
    (
        "Observing the Moon",
        "The Moon is best observed near the terminator, where shadows reveal craters and mountains.",
        "astronomy for everyone",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_base_ranks_with_bm25_deletes_and_survives_hostile_queries() {
    let (_dir, fleet, mut sock) = start().await;
    let sock = &mut sock;

    let mut ids = Vec::new();
    for (title, text, source) in CORPUS {
        let out = ok(sock, "kb.add", json!({"title": title, "text": text, "source": source})).await;
        ids.push(out["id"].as_i64().unwrap());
    }
    let rust = ids[0];

    let out = ok(sock, "kb.search", json!({"query": "rust borrow checker"})).await;
    let results = out["results"].as_array().unwrap();
    assert!(results.len() >= 3, "the library and Python documents match too: {out}");
    assert_eq!(results[0]["id"], rust, "{out}");
    assert_eq!(results[0]["title"], "Rust ownership");
    assert_eq!(results[0]["source"], CORPUS[0].2);
    assert!(results[0]["snippet"].as_str().unwrap().contains("[borrow]"), "{out}");
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    assert!(scores[0] > scores[1], "{scores:?}");

    let out = ok(sock, "kb.search", json!({"query": "largest planet moons", "limit": 1})).await;
    assert_eq!(out["results"].as_array().unwrap().len(), 1);
    assert_eq!(out["results"][0]["title"], "Jupiter", "{out}");
    let out = ok(sock, "kb.search", json!("baking dough")).await;
    assert_eq!(out["results"][0]["title"], "Sourdough bread", "porter stems bake/baking: {out}");

    // Hostile queries: never an SQL error.
    for hostile in [
        "foo\"bar AND (",
        "\"",
        "rust\" OR \"",
        "NEAR(rust borrow",
        "title:rust",
        "* ^ - :",
        "rust*",
        "'; DROP TABLE kb_docs; --",
        "AND OR NOT",
        "(((",
    ] {
        let r = task(sock, "kb.search", json!({"query": hostile})).await;
        assert_eq!(r["status"], "ok", "{hostile:?}: {r}");
        assert!(r["output"]["results"].is_array(), "{hostile:?}: {r}");
    }
    let r = ok(sock, "kb.search", json!({"query": "title:rust"})).await;
    assert_eq!(r["results"][0]["id"], rust, "title: is a word, not a column filter");

    // Bad input.
    assert_eq!(err(sock, "kb.search", json!({"query": ""}), "query").await, "invalid_field");
    assert_eq!(err(sock, "kb.search", json!({"query": "rust", "limit": 101}), "limit").await, "invalid_field");
    assert_eq!(err(sock, "kb.add", json!({"title": "no text"}), "text").await, "invalid_field");
    assert_eq!(err(sock, "kb.delete", json!({"id": "x"}), "id").await, "invalid_field");

    // Delete: gone from the results.
    assert_eq!(ok(sock, "kb.delete", json!({"id": rust})).await["deleted"], 1);
    assert_eq!(ok(sock, "kb.delete", json!(rust)).await["deleted"], 0);
    let out = ok(sock, "kb.search", json!({"query": "rust borrow checker"})).await;
    let results = out["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| r["id"] != rust), "{out}");
    let out = ok(sock, "kb.search", json!({"query": "rust"})).await;
    assert_eq!(out["results"], json!([]), "{out}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
