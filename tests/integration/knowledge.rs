//! The knowledge and tool agents (issue 22) over real ZeroMQ against a real
//! fleet: UnifiedWebAgent against a local HTTP server (pages, redirects, a
//! huge page, a slow page, robots.txt, private addresses refused);
//! FileSystemAssistantAgent over a real directory (traversal, a symlink
//! escape, a gitignored file, a binary file); DreamingModeAgent over 1 000
//! memories with planted duplicates, running only when the fleet is idle,
//! its summaries written by a model behind a real HTTP server;
//! AdvancedRouter choosing between two registered services; and
//! RemoteConnectorAgent's links to a backend, a dead backend and a node.
//! Each with bad inputs and their stable codes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use agentvisor::config::Tier;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// The knowledge profile (`tests/fixtures/knowledge.yaml`).
fn profile() -> String {
    util::fixture("knowledge.yaml").display().to_string()
}

/// Sends one task, returns its reply (chunks skipped).
async fn call(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    util::send_json(bus, &json!({"id": id, "type": task_type, "input": input, "deadline_ms": 60_000})).await;
    loop {
        let r = util::recv_json_within(bus, Duration::from_secs(60)).await;
        if r.get("event").is_none() && r["id"] == json!(id) {
            return r;
        }
    }
}

/// The output of an `ok` reply.
async fn ok(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let r = call(bus, task_type, input.clone()).await;
    assert_eq!(r["status"], "ok", "{task_type} {input}: {r}");
    r["output"].clone()
}

/// The error (code, message) of an `error` reply.
async fn err(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> (String, String) {
    let r = call(bus, task_type, input.clone()).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    (r["error"]["code"].as_str().unwrap_or("").into(), r["error"]["message"].as_str().unwrap_or("").into())
}

/// A local web site: robots.txt, an article, redirects, a huge page, a slow page.
async fn site() -> SocketAddr {
    let article = "<html><head><title>The Actor Model</title></head><body><nav>menu home about</nav>\
        <article><h1>The Actor Model</h1><p>An actor is a computational entity that, in response to a \
        message it receives, can concurrently send messages to other actors, create new actors, and \
        designate the behaviour to be used for the next message it receives.</p><p>There is no assumed \
        sequence to the above actions and they could be carried out in parallel, which is why the model \
        suits distributed systems, supervision trees and fault tolerance.</p></article></body></html>";
    let app = Router::new()
        .route("/robots.txt", get(|| async { "User-agent: *\nDisallow: /private/\n" }))
        .route("/article", get(move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], article) }))
        .route("/plain", get(|| async { "just some plain words" }))
        .route("/redirect", get(|| async { Redirect::temporary("/article") }))
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route("/to-metadata", get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }))
        .route("/huge", get(|| async { "x".repeat(3 * 1024 * 1024) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .route("/private/secret", get(|| async { "secret" }))
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "nothing here").into_response() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_fetch_reads_pages_and_refuses_what_it_must() {
    let addr = site().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |s| {
        s.web.allowed_networks = vec!["127.0.0.1/32".into()];
        s.web.max_bytes = 1024 * 1024;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    let base = format!("http://{addr}");

    let page = ok(&mut bus, "web_fetch", json!({"url": format!("{base}/article")})).await;
    assert_eq!((page["status"].as_u64(), &page["title"]), (Some(200), &json!("The Actor Model")), "{page}");
    let text = page["text"].as_str().unwrap();
    assert!(text.contains("computational entity") && text.contains("supervision trees"), "{text}");
    assert!(!text.contains("menu home about"), "navigation is not readable text: {text}");
    assert_eq!(page["truncated"], json!(false));

    let redirected = ok(&mut bus, "web_fetch", json!(format!("{base}/redirect"))).await;
    assert_eq!(redirected["url"], json!(format!("{base}/article")));
    assert_eq!(redirected["title"], json!("The Actor Model"));

    let plain = ok(&mut bus, "web_fetch", json!({"url": format!("{base}/plain")})).await;
    assert_eq!((&plain["text"], &plain["title"]), (&json!("just some plain words"), &Value::Null));

    // A huge page is cut at the task's limit, and at the configured one.
    let huge = ok(&mut bus, "web_fetch", json!({"url": format!("{base}/huge"), "max_bytes": 1000})).await;
    assert_eq!((huge["bytes"].as_u64(), &huge["truncated"]), (Some(1000), &json!(true)));
    let huge = ok(&mut bus, "web_fetch", json!({"url": format!("{base}/huge"), "max_bytes": 1_000_000_000})).await;
    assert_eq!((huge["bytes"].as_u64(), &huge["truncated"]), (Some(1024 * 1024), &json!(true)));
    let missing = ok(&mut bus, "web_fetch", json!(format!("{base}/missing"))).await;
    assert_eq!(missing["status"], json!(404));

    // A slow page: the fetch's time limit.
    let (code, msg) = err(&mut bus, "web_fetch", json!({"url": format!("{base}/slow"), "timeout_seconds": 0.5})).await;
    assert_eq!(code, "fetch_failed", "{msg}");
    assert!(msg.contains("longer than 0.5 s"), "{msg}");

    // robots.txt, too many redirects, private addresses (also after a redirect), schemes.
    let (code, msg) = err(&mut bus, "web_fetch", json!(format!("{base}/private/secret"))).await;
    assert_eq!(code, "forbidden");
    assert!(msg.contains("robots.txt"), "{msg}");
    let (code, msg) = err(&mut bus, "web_fetch", json!(format!("{base}/loop"))).await;
    assert_eq!(code, "fetch_failed");
    assert!(msg.contains("redirects"), "{msg}");
    for url in [
        "http://10.0.0.1/".to_string(),
        format!("http://[::1]:{}/article", addr.port()),
        format!("http://127.0.0.2:{}/article", addr.port()),
        format!("{base}/to-metadata"),
    ] {
        let (code, msg) = err(&mut bus, "web_fetch", json!({"url": url})).await;
        assert_eq!(code, "forbidden", "{url}: {msg}");
        assert!(msg.contains("address"), "{url}: {msg}");
    }
    let (code, _) = err(&mut bus, "web_fetch", json!("file:///etc/passwd")).await;
    assert_eq!(code, "forbidden");

    // Bad inputs.
    for input in [
        json!({"url": "not a url"}),
        json!({"url": ""}),
        json!({"url": base.clone(), "max_bytes": 0}),
        json!({"uri": base}),
    ] {
        let (code, msg) = err(&mut bus, "web_fetch", input.clone()).await;
        assert_eq!(code, "invalid_field", "{input}: {msg}");
    }
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_web_fetches_total{outcome=\"forbidden\"} 5"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// A directory tree with a gitignored file, a binary file, a hidden file
/// and a symlink leading out.
fn tree(root: &Path, outside: &Path) {
    std::fs::write(outside.join("secret.txt"), "the secret").unwrap();
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
    std::fs::write(root.join("README.md"), "# Demo\nmax_message_bytes is a setting\n").unwrap();
    std::fs::write(root.join("src/lib.rs"), "pub fn hello() {}\nconst max_message_bytes: usize = 1;\n").unwrap();
    std::fs::write(root.join("src/deep/notes.txt"), "deep notes\nmax_message_bytes again\n").unwrap();
    std::fs::create_dir_all(root.join("target")).unwrap();
    std::fs::write(root.join("target/out.txt"), "max_message_bytes in build output").unwrap();
    std::fs::write(root.join("run.log"), "max_message_bytes in a log").unwrap();
    std::fs::write(root.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR max_message_bytes").unwrap();
    std::fs::write(root.join(".env"), "TOKEN=x").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(outside, root.join("outside_dir")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stay_inside_their_roots_and_skip_what_git_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    tree(repo.path(), outside.path());
    let root = repo.path().to_path_buf();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), move |s| {
        s.files.roots = [("repo".to_string(), root)].into();
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    let listed = ok(&mut bus, "files.list", json!({"recursive": true})).await;
    let paths: Vec<&str> = listed["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["README.md", "escape.txt", "logo.png", "outside_dir", "src", "src/deep", "src/deep/notes.txt", "src/lib.rs"],
        "ignored (target/, *.log) and hidden (.env, .gitignore) entries are skipped; links are not followed"
    );
    let kinds: Vec<&str> = listed["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[1], "symlink");
    assert_eq!(kinds[3], "symlink");
    let top = ok(&mut bus, "files.list", json!({"root": "repo", "path": "src"})).await;
    assert_eq!(top["entries"].as_array().unwrap().len(), 2, "{top}");
    assert_eq!(ok(&mut bus, "files.list", json!(null)).await["entries"].as_array().unwrap().len(), 5);

    let readme = ok(&mut bus, "files.read", json!({"path": "README.md"})).await;
    assert_eq!(
        (&readme["text"], &readme["binary"]),
        (&json!("# Demo\nmax_message_bytes is a setting\n"), &json!(false))
    );
    let part = ok(&mut bus, "files.read", json!({"path": "README.md", "offset_bytes": 2, "max_bytes": 4})).await;
    assert_eq!((&part["text"], &part["truncated"]), (&json!("Demo"), &json!(true)));
    let logo = ok(&mut bus, "files.read", json!({"path": "logo.png"})).await;
    assert_eq!((&logo["binary"], &logo["text"]), (&json!(true), &Value::Null));

    let found = ok(&mut bus, "files.search", json!({"query": "max_message_bytes"})).await;
    let hits: BTreeSet<(String, u64)> = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["path"].as_str().unwrap().to_string(), m["line"].as_u64().unwrap()))
        .collect();
    let want: BTreeSet<(String, u64)> =
        [("README.md", 2), ("src/deep/notes.txt", 2), ("src/lib.rs", 2)].map(|(p, l)| (p.to_string(), l)).into();
    assert_eq!(hits, want, "no ignored, binary or outside file");
    let rs = ok(&mut bus, "files.search", json!({"query": "fn \\w+\\(", "regex": true, "glob": "*.rs"})).await;
    assert_eq!(rs["matches"][0]["text"], json!("pub fn hello() {}"));
    assert_eq!(rs["matches"].as_array().unwrap().len(), 1);
    let cut = ok(&mut bus, "files.search", json!({"query": "max_message_bytes", "limit": 1})).await;
    assert_eq!(cut["truncated"], json!(true));

    for (task_type, input, want) in [
        ("files.read", json!({"path": "../secret.txt"}), "forbidden"),
        ("files.read", json!({"path": "src/../../x"}), "forbidden"),
        ("files.read", json!({"path": "/etc/passwd"}), "forbidden"),
        ("files.read", json!({"path": "escape.txt"}), "forbidden"),
        ("files.list", json!({"path": "outside_dir"}), "forbidden"),
        ("files.read", json!({"path": "run.log"}), "forbidden"),
        ("files.read", json!({"path": "target/out.txt"}), "forbidden"),
        ("files.read", json!({"path": ".env"}), "forbidden"),
        ("files.read", json!({"path": "nope.txt"}), "not_found"),
        ("files.read", json!({"path": "src"}), "invalid_field"),
        ("files.read", json!({"path": "README.md", "root": "other"}), "invalid_field"),
        ("files.read", json!({"path": ""}), "invalid_field"),
        ("files.search", json!({"query": "(unclosed", "regex": true}), "invalid_field"),
        ("files.search", json!({"query": "x", "glob": "{a"}), "invalid_field"),
        ("files.list", json!({"limit": 0}), "invalid_field"),
    ] {
        let (code, msg) = err(&mut bus, task_type, input.clone()).await;
        assert_eq!(code, want, "{task_type} {input}: {msg}");
    }
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_file_ops_total{op=\"read\",outcome=\"forbidden\"} 7"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// The text of unique fact `i` (no two are near duplicates of each other).
fn fact(i: usize) -> String {
    const COLOURS: [&str; 7] = ["red", "green", "blue", "amber", "violet", "teal", "grey"];
    format!("fact {i:04} about person{i:04}: person{i:04} was born in city{} and likes {}", i % 50, COLOURS[i % 7])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dreaming_merges_planted_duplicates_only_when_idle_and_keeps_every_fact() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("A summary of older notes about people, cities and colours.".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.dreaming.idle_seconds = 2.0;
        s.dreaming.check_every_secs = 0.05;
        s.dreaming.summarise_after_secs = 0.0;
        s.dreaming.summary_batch = 40;
        s.dreaming.max_summaries_per_run = 3;
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    // Start the agent (its idle clock starts now).
    assert_eq!(ok(&mut bus, "dreaming.status", json!(null)).await["runs"], json!(0));

    // 900 unique facts; 25 byte-exact copies, 25 copies differing in case and
    // punctuation (exact after normalisation), 50 near copies (one more word).
    let mut texts: Vec<String> = (0..900).map(fact).collect();
    texts.extend((0..25).map(fact));
    texts.extend((25..50).map(|i| format!("  {}!!", fact(i).to_uppercase().replace(':', " -"))));
    texts.extend((50..100).map(|i| format!("{} indeed", fact(i))));
    assert_eq!(texts.len(), 1000);
    for (n, text) in texts.iter().enumerate() {
        let envelope = json!({"id": format!("m{n}"), "type": "memory.store", "input": {"text": text, "kind": "fact"}});
        util::send_json(&mut bus, &envelope).await;
    }
    for _ in 0..texts.len() {
        let r = util::recv_json_within(&mut bus, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "ok", "{r}");
    }

    // Busy (a task just ended): asked without force, it does not run.
    assert_eq!(ok(&mut bus, "memory.stats", json!(null)).await["total"], json!(1000));
    let refused = ok(&mut bus, "dreaming.consolidate", json!({})).await;
    assert_eq!(refused["ran"], json!(false), "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("not idle"), "{refused}");
    let status = ok(&mut bus, "dreaming.status", json!({})).await;
    assert_eq!((&status["idle"], &status["runs"]), (&json!(false), &json!(0)), "{status}");

    // Quiet (only this agent's own tasks): it runs by itself, once.
    let mut status = Value::Null;
    for _ in 0..600 {
        status = ok(&mut bus, "dreaming.status", json!(null)).await;
        if status["runs"] == json!(1) && status["running"] == json!(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = &status["last_result"];
    assert_eq!(status["runs"], json!(1), "{status}");
    assert_eq!(
        (&last["merged_duplicates"], &last["exact_duplicates"], &last["near_duplicates"]),
        (&json!(100), &json!(50), &json!(50)),
        "{last}"
    );
    assert_eq!(
        (&last["promoted"], &last["summaries_added"], &last["summarised"]),
        (&json!(100), &json!(3), &json!(120))
    );
    assert_eq!((&last["memories_before"], &last["memories_after"]), (&json!(1000), &json!(903)), "{last}");
    assert_eq!(fake.requests().len(), 3, "one model call per summary");

    let stats = ok(&mut bus, "memory.stats", json!({})).await;
    assert_eq!((&stats["total"], &stats["long"]), (&json!(903), &json!(103)), "{stats}");
    // Every unique fact is still found, exactly once; the kept one is the original.
    for i in 0..900 {
        let found = ok(&mut bus, "memory.search", json!({"query": format!("person{i:04}"), "kind": "fact"})).await;
        let results = found["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "fact {i}: {found}");
        assert_eq!(results[0]["text"], json!(fact(i)), "the original of fact {i} is kept");
        let mentions = if i < 100 { 2 } else { 1 };
        assert_eq!(results[0]["mentions"], json!(mentions), "fact {i}");
    }
    let summaries = ok(&mut bus, "memory.search", json!({"query": "summary", "kind": "summary", "tier": "long"})).await;
    let summaries = summaries["results"].as_array().unwrap();
    assert_eq!(summaries.len(), 3);
    assert_eq!(summaries[0]["sources"].as_array().unwrap().len(), 40);

    // A second run, forced and dry: no fact left to merge; only the three
    // summaries, which the fake model wrote with the same text.
    let again = ok(&mut bus, "dreaming.consolidate", json!({"force": true, "dry_run": true})).await;
    assert_eq!(
        (&again["ran"], &again["exact_duplicates"], &again["near_duplicates"], &again["dry_run"]),
        (&json!(true), &json!(2), &json!(0), &json!(true))
    );
    for input in [json!({"force": "yes"}), json!({"now": true}), json!(7)] {
        let (code, msg) = err(&mut bus, "dreaming.consolidate", input.clone()).await;
        assert_eq!(code, "invalid_field", "{input}: {msg}");
    }
    let (code, _) = err(&mut bus, "memory.store", json!({"text": "x", "kind": "fact", "importance": 1.5})).await;
    assert_eq!(code, "invalid_field");
    let (code, _) = err(&mut bus, "memory.promote", json!("no-such-id")).await;
    assert_eq!(code, "not_found");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_router_picks_the_cheaper_or_the_faster_service() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |_| {}).await;
    let mut bus = util::dealer(&ingress).await;
    for (id, cost, p95) in [("mt-cheap", 0.2, 900.0), ("mt-fast", 1.5, 120.0)] {
        let row = json!({"id": id, "name": id, "type": "model", "caps": ["translation", "detect_language"], "cost_hint_usd_per_1k": cost, "heartbeat_interval_s": 60});
        ok(&mut bus, "registry.register", row).await;
        ok(&mut bus, "registry.heartbeat", json!({"id": id, "p95_ms": p95})).await;
    }
    let cheapest = ok(&mut bus, "router.route", json!({"capability": "translation"})).await;
    assert_eq!(
        (&cheapest["strategy"], &cheapest["chosen"]["id"]),
        (&json!("cheapest"), &json!("mt-cheap")),
        "{cheapest}"
    );
    assert_eq!(cheapest["chosen"]["cost_usd_per_1k"], json!(0.2));
    let ids: Vec<&str> = cheapest["candidates"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mt-cheap", "mt-fast", "agent:TranslationService"], "unknown figures last");
    assert!(cheapest["reason"].as_str().unwrap().contains("AgentTrustScorer"), "{cheapest}");
    let fastest = ok(&mut bus, "router.route", json!({"capability": "translation", "strategy": "fastest"})).await;
    assert_eq!(fastest["chosen"]["id"], json!("mt-fast"));
    assert_eq!(fastest["chosen"]["predicted_latency_seconds"], json!(0.12));
    let excluded = ok(&mut bus, "router.route", json!({"capability": "translation", "exclude": ["mt-cheap"]})).await;
    assert_eq!(excluded["chosen"]["id"], json!("mt-fast"));
    let none = ok(&mut bus, "router.route", json!("no_such_capability")).await;
    assert_eq!((&none["chosen"], &none["candidates"]), (&Value::Null, &json!([])));

    let matrix = ok(&mut bus, "router.capabilities", json!({"capability": "detect_language"})).await;
    assert_eq!(matrix["capabilities"][0]["providers"].as_array().unwrap().len(), 2, "{matrix}");
    let all = ok(&mut bus, "router.capabilities", json!(null)).await;
    let caps: Vec<&str> =
        all["capabilities"].as_array().unwrap().iter().map(|c| c["capability"].as_str().unwrap()).collect();
    assert!(caps.contains(&"web_fetch") && caps.contains(&"translation"), "{caps:?}");

    // A service down is no candidate.
    ok(&mut bus, "registry.deregister", json!("mt-cheap")).await;
    let after = ok(&mut bus, "router.route", json!({"capability": "translation"})).await;
    assert_eq!(after["chosen"]["id"], json!("mt-fast"));
    for input in [json!({"capability": "translation", "strategy": "slowest"}), json!({"capability": ""}), json!({})] {
        let (code, msg) = err(&mut bus, "router.route", input.clone()).await;
        assert_eq!(code, "invalid_field", "{input}: {msg}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_links_check_backends_and_call_a_node() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |s| {
        s.backends = [("cloud".to_string(), backend_settings(Tier::L2, "fake-cloud", fake.base_url()))].into();
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    let before = ok(&mut bus, "remote.status", json!(null)).await;
    assert_eq!((&before["links"][0]["name"], &before["links"][0]["state"]), (&json!("cloud"), &json!("down")));
    let checked = ok(&mut bus, "remote.status", json!({"check": true})).await;
    let cloud = &checked["links"][0];
    assert_eq!(
        (&cloud["state"], &cloud["configured"], &cloud["breaker"]),
        (&json!("connected"), &json!(true), &json!("closed")),
        "{checked}"
    );
    assert!(cloud["latency_seconds"].as_f64().unwrap() >= 0.0);

    let dead =
        ok(&mut bus, "remote.connect", json!({"name": "dead", "kind": "backend", "url": "http://127.0.0.1:1/v1"}))
            .await;
    assert_eq!(dead["state"], json!("down"));
    assert!(dead["error"].as_str().unwrap().contains("GET /models"), "{dead}");

    // This daemon itself, as a node over its ZeroMQ ingress.
    let node = ok(&mut bus, "remote.connect", json!({"name": "self", "kind": "node", "url": ingress})).await;
    assert_eq!(node["state"], json!("connected"), "{node}");
    let reply =
        ok(&mut bus, "remote.call", json!({"name": "self", "task": {"type": "utils.echo", "input": "ping"}})).await;
    assert_eq!((&reply["status"], &reply["output"]), (&json!("ok"), &json!("ping")), "{reply}");
    let remote_err = ok(&mut bus, "remote.call", json!({"name": "self", "task": {"type": "no.such.type"}})).await;
    assert_eq!((&remote_err["status"], &remote_err["error"]["code"]), (&json!("error"), &json!("unknown_task_type")));

    for (task_type, input, want) in [
        ("remote.call", json!({"name": "nowhere", "task": {"type": "utils.echo"}}), "not_found"),
        ("remote.call", json!({"name": "cloud", "task": {"type": "utils.echo"}}), "invalid_field"),
        ("remote.call", json!({"name": "self", "task": {"input": 1}}), "invalid_field"),
        ("remote.connect", json!({"name": "x", "kind": "node", "url": "http://127.0.0.1:1"}), "invalid_field"),
        ("remote.connect", json!({"name": "x", "kind": "satellite", "url": "tcp://127.0.0.1:1"}), "invalid_field"),
        ("remote.status", json!({"name": "nowhere"}), "not_found"),
    ] {
        let (code, msg) = err(&mut bus, task_type, input.clone()).await;
        assert_eq!(code, want, "{task_type} {input}: {msg}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}
