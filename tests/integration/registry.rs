//! ServiceRegistry: external services registered over ZeroMQ (in-process
//! fleet, events from the event bus) and over HTTP (the daemon binary,
//! events from its PUB socket), heartbeats, the monitor marking a silent
//! service `down` after 2 missed beats and deregistering it after 3,
//! discovery with the fleet's own agents, promotion, and the table
//! surviving a daemon restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::util::{self, Daemon, EventLog, root};

/// Heartbeat interval of the short-lived services, seconds.
const INTERVAL_S: f64 = 0.2;

async fn ask(sock: &mut DealerSocket, task_type: &str, input: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    sock.send(ZmqMessage::from(json!({"id": id, "type": task_type, "input": input}).to_string())).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), sock.recv()).await.expect("reply in time").unwrap();
    let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).unwrap();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["id"], id.as_str(), "{reply}");
    reply
}

/// The output of an `ok` reply.
async fn ok(sock: &mut DealerSocket, task_type: &str, input: Value) -> Value {
    let r = ask(sock, task_type, input).await;
    assert_eq!(r["status"], "ok", "{task_type}: {r}");
    r["output"].clone()
}

/// The error of a failed reply.
async fn err(sock: &mut DealerSocket, task_type: &str, input: Value) -> Value {
    let r = ask(sock, task_type, input).await;
    assert_eq!(r["status"], "error", "{task_type}: {r}");
    r["error"].clone()
}

fn names(discovered: &Value) -> Vec<String> {
    discovered["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(discovered: &'a Value, name: &str) -> Option<&'a Value> {
    discovered["services"].as_array().expect("services").iter().find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_over_zeromq_heartbeats_monitor_discover_and_promote() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut events = EventLog::new(&fleet);
    let mut sock = util::dealer(&ingress).await;

    // Validation names the field.
    let e = err(&mut sock, "registry.register", json!({"name": "x", "type": "robot"})).await;
    assert_eq!(e["code"], "invalid_field");
    assert!(e["message"].as_str().unwrap().contains(" at /type: "), "{e}");
    let e = err(&mut sock, "registry.register", json!({"name": "x", "type": "model", "role": "boss"})).await;
    assert!(e["message"].as_str().unwrap().contains(" at /role: "), "{e}");
    let e = err(&mut sock, "registry.register", json!({"name": "x", "type": "model", "colour": "red"})).await;
    assert!(e["message"].as_str().unwrap().contains(" at /colour: unknown field"), "{e}");
    let e = err(&mut sock, "registry.register", json!({"name": "x", "type": "model", "id": "agent:Mine"})).await;
    assert!(e["message"].as_str().unwrap().contains(" at /id: "), "{e}");

    // A short-lived service heartbeats, then falls silent.
    let reg = ok(
        &mut sock,
        "registry.register",
        json!({"name": "fake-llm", "type": "model", "role": "canary", "url": "http://127.0.0.1:9/v1",
               "caps": ["infer", "classify"], "ctx_limit": 8192, "cost_hint_usd_per_1k": 0.002,
               "heartbeat_interval_s": INTERVAL_S}),
    )
    .await;
    let id = reg["id"].as_str().expect("generated id").to_string();
    assert_eq!(
        (reg["status"].as_str(), reg["role"].as_str(), reg["managed"].as_bool()),
        (Some("ok"), Some("canary"), Some(false))
    );
    assert!((reg["ttl_s"].as_f64().unwrap() - 3.0 * INTERVAL_S).abs() < 1e-9, "{reg}");
    assert_eq!(reg["ctx_limit"], 8192);
    let registered = events
        .wait_for(Duration::from_secs(5), "registry.registered", |e| {
            e.topic == "registry.registered" && e.str("service") == Some(&id)
        })
        .await;
    assert_eq!(registered.str("name"), Some("fake-llm"));

    let mut last_seen = 0.0;
    for i in 0..6 {
        let status = if i == 3 { "degraded" } else { "ok" };
        let row = ok(
            &mut sock,
            "registry.heartbeat",
            json!({"id": id, "status": status, "p95_ms": 40.0 + i as f64, "queue_depth": i, "load": 0.25}),
        )
        .await;
        assert_eq!(
            (row["status"].as_str(), row["p95_ms"].as_f64(), row["queue_depth"].as_u64()),
            (Some(status), Some(40.0 + i as f64), Some(i))
        );
        last_seen = row["last_heartbeat_ts"].as_f64().unwrap();
        // Pacing at half the interval: the service keeps its promise.
        tokio::time::sleep(Duration::from_secs_f64(INTERVAL_S / 2.0)).await;
    }
    let found = ok(&mut sock, "registry.discover", json!({"name": "fake-llm"})).await;
    assert_eq!(find(&found, "fake-llm").unwrap()["status"], "ok", "{found}");
    events.drain();
    assert!(
        !events.seen.iter().any(|e| e.topic == "alert.heartbeat_missed" && e.str("service") == Some(&id)),
        "marked down while heartbeating"
    );

    // Silent: down after 2 intervals, gone after 3, with the events, in order.
    let alert = events
        .wait_for(Duration::from_secs(10), "alert.heartbeat_missed", |e| {
            e.topic == "alert.heartbeat_missed" && e.str("service") == Some(&id)
        })
        .await;
    assert_eq!(alert.data()["missed"], 2);
    assert_eq!(alert.data()["last_seen"].as_f64(), Some(last_seen));
    assert!(alert.ts - last_seen > 2.0 * INTERVAL_S, "down too early: {} s of silence", alert.ts - last_seen);
    let gone = events
        .wait_for(Duration::from_secs(10), "registry.deregistered", |e| {
            e.topic == "registry.deregistered" && e.str("service") == Some(&id)
        })
        .await;
    assert!(gone.seq > alert.seq);
    assert_eq!(gone.str("reason"), Some("3 heartbeats missed"));
    assert!(gone.ts - last_seen > 3.0 * INTERVAL_S, "removed too early: {} s of silence", gone.ts - last_seen);
    let found = ok(&mut sock, "registry.discover", json!({"name": "fake-llm"})).await;
    assert_eq!(found["services"], json!([]));
    let e = err(&mut sock, "registry.heartbeat", json!({"id": id})).await;
    assert_eq!(e["code"], "invalid_field");
    assert!(e["message"].as_str().unwrap().contains(&format!("no service {id}")), "{e}");

    // A silent service with a long ttl stays listed as down, and a
    // heartbeat brings it back.
    let quiet = ok(
        &mut sock,
        "registry.register",
        json!({"id": "quiet-1", "name": "quiet", "type": "agent", "heartbeat_interval_s": INTERVAL_S, "ttl_s": 60}),
    )
    .await;
    assert_eq!(quiet["role"], "experimental");
    events
        .wait_for(Duration::from_secs(10), "quiet marked down", |e| {
            e.topic == "alert.heartbeat_missed" && e.str("service") == Some("quiet-1")
        })
        .await;
    let down = ok(&mut sock, "registry.discover", json!({"status": "down", "managed": false})).await;
    assert_eq!(names(&down), ["quiet"]);
    let back = ok(&mut sock, "registry.heartbeat", json!({"id": "quiet-1"})).await;
    assert_eq!(back["status"], "ok");
    events
        .wait_for(Duration::from_secs(5), "quiet recovered", |e| {
            e.topic == "registry.recovered" && e.str("service") == Some("quiet-1")
        })
        .await;
    ok(&mut sock, "registry.deregister", json!("quiet-1")).await;

    // Discovery by type, role, capability and status.
    let a = json!({"id": "svc-a", "name": "embedder", "type": "model", "role": "production",
                   "caps": ["infer", "test-embed"], "heartbeat_interval_s": 60});
    let b = json!({"id": "svc-b", "name": "searcher", "type": "tool", "role": "staging",
                   "caps": ["test-search"], "heartbeat_interval_s": 60});
    ok(&mut sock, "registry.register", a).await;
    ok(&mut sock, "registry.register", b).await;
    ok(&mut sock, "registry.heartbeat", json!({"id": "svc-b", "status": "degraded"})).await;
    assert_eq!(names(&ok(&mut sock, "registry.discover", json!({"type": "model"})).await), ["embedder"]);
    assert_eq!(names(&ok(&mut sock, "registry.discover", json!({"role": "staging"})).await), ["searcher"]);
    assert_eq!(names(&ok(&mut sock, "registry.discover", json!({"cap": "test-embed"})).await), ["embedder"]);
    assert_eq!(
        names(&ok(&mut sock, "registry.discover", json!({"cap": ["infer", "test-search"]})).await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&ok(&mut sock, "registry.discover", json!({"type": "tool", "status": "degraded"})).await),
        ["searcher"]
    );
    assert_eq!(
        names(&ok(&mut sock, "registry.discover", json!({"type": "tool", "status": "ok"})).await),
        Vec::<String>::new()
    );
    let e = err(&mut sock, "registry.discover", json!({"status": "sleepy"})).await;
    assert!(e["message"].as_str().unwrap().contains(" at /status: "), "{e}");

    // The fleet's agents, with their live state.
    let all = ok(&mut sock, "registry.discover", Value::Null).await;
    assert_eq!(all["services"].as_array().unwrap().len(), 2 + fleet.ctx().snapshot().len(), "{all}");
    let agents = ok(&mut sock, "registry.discover", json!({"type": "agent", "managed": true})).await;
    let me = find(&agents, "ServiceRegistry").expect("ServiceRegistry listed");
    assert_eq!(
        (me["id"].as_str(), me["status"].as_str(), me["state"].as_str()),
        (Some("agent:ServiceRegistry"), Some("ok"), Some("running"))
    );
    assert!(me["caps"].as_array().unwrap().contains(&json!("registry.discover")), "{me}");
    assert_eq!(me["managed"], true);
    let dormant = find(&agents, "CodeGenerator").expect("CodeGenerator listed");
    assert_eq!((dormant["status"].as_str(), dormant["state"].as_str()), (Some("down"), Some("dormant")), "{dormant}");
    let running = ok(&mut sock, "registry.discover", json!({"type": "agent", "status": "ok"})).await;
    assert!(find(&running, "ServiceRegistry").is_some() && find(&running, "CodeGenerator").is_none());
    let coders = ok(&mut sock, "registry.discover", json!({"cap": "code_generation"})).await;
    assert_eq!(names(&coders), ["CodeGenerator"]);
    let e = err(&mut sock, "registry.heartbeat", json!({"id": "agent:ServiceRegistry"})).await;
    assert_eq!(e["code"], "invalid_field");

    // Promotion.
    let promoted = ok(&mut sock, "registry.promote", json!({"id": "svc-a", "role": "canary"})).await;
    assert_eq!(promoted["role"], "canary");
    let ev = events
        .wait_for(Duration::from_secs(5), "registry.promoted", |e| {
            e.topic == "registry.promoted" && e.str("service") == Some("svc-a")
        })
        .await;
    assert_eq!((ev.str("from"), ev.str("to")), (Some("production"), Some("canary")));
    assert_eq!(names(&ok(&mut sock, "registry.discover", json!({"role": "canary"})).await), ["embedder"]);
    let e = err(&mut sock, "registry.promote", json!({"id": "svc-a", "role": "king"})).await;
    assert!(e["message"].as_str().unwrap().contains(" at /role: "), "{e}");
    let e = err(&mut sock, "registry.promote", json!({"id": "nope", "role": "staging"})).await;
    assert!(e["message"].as_str().unwrap().contains("no service nope"), "{e}");

    // Deregistration.
    assert_eq!(ok(&mut sock, "registry.deregister", json!({"id": "svc-b"})).await, json!({"deregistered": true}));
    assert_eq!(ok(&mut sock, "registry.deregister", json!("svc-b")).await, json!({"deregistered": false}));
    let ev = events
        .wait_for(Duration::from_secs(5), "registry.deregistered svc-b", |e| {
            e.topic == "registry.deregistered" && e.str("service") == Some("svc-b")
        })
        .await;
    assert_eq!(ev.str("reason"), Some("requested"));
    assert_eq!(names(&ok(&mut sock, "registry.discover", json!({"managed": false})).await), ["embedder"]);
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// Next `(topic, data)` from the PUB socket, within `timeout`.
async fn next_event(sub: &mut SubSocket, timeout: Duration) -> (String, Value) {
    let msg = tokio::time::timeout(timeout, sub.recv()).await.expect("event in time").expect("recv");
    let frames = msg.into_vec();
    assert_eq!(frames.len(), 2, "[topic, json] frames");
    (String::from_utf8_lossy(&frames[0]).into_owned(), serde_json::from_slice(&frames[1]).expect("json event"))
}

/// Waits for `topic` about `service` on the PUB socket; returns its data.
async fn wait_event(sub: &mut SubSocket, topic: &str, service: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (t, data) = next_event(sub, deadline.saturating_duration_since(Instant::now())).await;
        if t == topic && data["service"] == service {
            return data;
        }
    }
}

async fn put(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let r = d.http.put(format!("{}{path}", d.base)).json(&body).send().await.expect("http put");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    let r = d.http.delete(format!("{}{path}", d.base)).send().await.expect("http delete");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn start_daemon(data: &std::path::Path) -> Daemon {
    let args = [
        "run",
        "--profile",
        "core",
        "--data-dir",
        data.to_str().unwrap(),
        "--set",
        "bus.ingress=tcp://127.0.0.1:0",
        "--set",
        "bus.events=tcp://127.0.0.1:0",
    ];
    let d = Daemon::start(&root(), &args, &[]).await;
    d.wait_ready().await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_over_http_on_the_daemon_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut d = start_daemon(data.path()).await;
    let (_, health) = d.get_json("/health").await;
    let mut sub = SubSocket::new();
    sub.connect(health["bus"]["events"].as_str().expect("events endpoint")).await.unwrap();
    sub.subscribe("alert.").await.unwrap();
    sub.subscribe("registry.").await.unwrap();

    // Errors as {"error": {"code", "message"}}.
    let (status, body) = d.post("/registry/register", json!({"name": "x", "type": "gadget"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_field")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(" at /type: "), "{body}");
    let r = d
        .http
        .post(format!("{}/registry/register", d.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");
    let (status, body) = put(&d, "/registry/heartbeat", json!({"id": "nope"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("invalid_field")), "{body}");

    // Register, heartbeat, fall silent.
    let (status, reg) = d
        .post(
            "/registry/register",
            json!({"name": "http-svc", "type": "tool", "caps": ["test-search"], "heartbeat_interval_s": INTERVAL_S}),
        )
        .await;
    assert_eq!(status, 200, "{reg}");
    let id = reg["id"].as_str().unwrap().to_string();
    assert_eq!((reg["role"].as_str(), reg["status"].as_str()), (Some("experimental"), Some("ok")));
    for load in [0.1, 0.2, 0.3, 0.4] {
        let (status, row) = put(&d, "/registry/heartbeat", json!({"id": id, "load": load})).await;
        assert_eq!((status, row["status"].as_str(), row["load"].as_f64()), (200, Some("ok"), Some(load)), "{row}");
        tokio::time::sleep(Duration::from_secs_f64(INTERVAL_S / 2.0)).await;
    }
    let (_, found) = d.get_json("/registry/discover?type=tool&cap=test-search&status=ok").await;
    assert_eq!(names(&found), ["http-svc"]);
    let alert = wait_event(&mut sub, "alert.heartbeat_missed", &id).await;
    assert_eq!(alert["missed"], 2);
    let gone = wait_event(&mut sub, "registry.deregistered", &id).await;
    assert_eq!(gone["reason"], "3 heartbeats missed");
    let (_, found) = d.get_json("/registry/discover?name=http-svc").await;
    assert_eq!(found["services"], json!([]));

    // The fleet's agents over HTTP.
    let (_, agents) = d.get_json("/registry/discover?type=agent&status=ok&managed=true").await;
    assert_eq!(find(&agents, "ServiceRegistry").expect("ServiceRegistry listed")["state"], "running");

    // A long-lived service, promoted, survives a restart.
    let (status, reg) = d
        .post(
            "/registry/register",
            json!({"id": "persist-1", "name": "persist", "type": "model", "role": "staging",
                   "url": "http://127.0.0.1:8050", "caps": ["infer"], "labels": {"zone": "a"}, "heartbeat_interval_s": 60}),
        )
        .await;
    assert_eq!(status, 200, "{reg}");
    let (status, promoted) = d.post("/registry/promote", json!({"id": "persist-1", "role": "production"})).await;
    assert_eq!((status, promoted["role"].as_str()), (200, Some("production")), "{promoted}");
    let (_, found) = d.get_json("/registry/discover?role=production&managed=false").await;
    assert_eq!(names(&found), ["persist"]);
    assert!(d.terminate(Duration::from_secs(30)).await.success());
    drop(d);

    let mut d = start_daemon(data.path()).await;
    let (_, found) = d.get_json("/registry/discover?name=persist").await;
    let row = find(&found, "persist").unwrap_or_else(|| panic!("persist survived the restart: {found}"));
    assert_eq!((row["role"].as_str(), row["status"].as_str()), (Some("production"), Some("ok")));
    assert_eq!((&row["labels"], &row["registered_at"]), (&json!({"zone": "a"}), &reg["registered_at"]));
    assert_eq!(delete(&d, "/registry/persist-1").await, (200, json!({"deregistered": true})));
    assert_eq!(delete(&d, "/registry/persist-1").await, (200, json!({"deregistered": false})));
    let (_, found) = d.get_json("/registry/discover?managed=false").await;
    assert_eq!(found["services"], json!([]));
    assert!(d.terminate(Duration::from_secs(30)).await.success());
}
