//! The task bus over real ZeroMQ: pyzmq and the CLI as clients, a corpus
//! of malformed messages, priorities under load, cancellation, clients that
//! leave, admin tasks, deadlines, a full queue.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::util::{self, Daemon, EventLog, dealer, recv_json, send_frames, send_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzmq_req_dealer_and_sub_against_the_daemon() {
    let data = tempfile::tempdir().unwrap();
    let (mut d, ingress, events) = Daemon::full_on_free_ports(data.path()).await;

    let Some(r) = util::python_report("pyzmq_check.py", &[&ingress, &events], "zmq").await else { return };

    assert_eq!(r["req"]["status"], "ok", "{}", r["req"]);
    assert_eq!(r["req"]["output"], "hello from REQ");
    assert_eq!(r["req"]["agent"], "UnifiedUtilsAgent");
    assert_eq!(r["req_bad"]["error"]["code"], "unknown_task_type");
    let dealer = r["dealer"].as_array().unwrap();
    assert_eq!(dealer.len(), 100);
    assert!(
        dealer.iter().all(|x| x["output"]["hex"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    let chunks: Vec<&str> = r["chunks"].as_array().unwrap().iter().map(|c| c["delta"].as_str().unwrap()).collect();
    assert_eq!(chunks.concat(), "one two three four");
    assert!(chunks.len() >= 4, "{chunks:?}");
    assert_eq!(r["stream"]["output"], "one two three four");
    assert_eq!(r["restart"]["status"], "ok", "{}", r["restart"]);
    // Its on-demand start (first task), then the restart.
    let topics: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(
        topics,
        ["agent.starting", "agent.started", "agent.stopping", "agent.stopped", "agent.starting", "agent.started"],
        "{}",
        r["events"]
    );
    let seqs: Vec<u64> = r["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The Rust CLI, same daemon.
    let bin = util::bin();
    let out = std::process::Command::new(&bin)
        .args(["send", "utils.echo", "from the cli", "--endpoint", &ingress])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from the cli");
    let out = std::process::Command::new(&bin)
        .args(["send", "utils.echo", "a b", "--stream", "--json", "--endpoint", &ingress])
        .output()
        .unwrap();
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l["event"] == "chunk").count(), 2, "{lines:?}");
    assert_eq!(lines.last().unwrap()["status"], "ok");
    let out = std::process::Command::new(&bin).args(["send", "nope", "x", "--endpoint", &ingress]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_task_type"));
    let ev = tokio::process::Command::new(&bin)
        .args(["events", "--topic", "agent.", "--count", "2", "--endpoint", &events])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // slow joiner
    let out = std::process::Command::new(&bin)
        .args(["send", "system.restart", "UnifiedUtilsAgent", "--endpoint", &ingress])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ev = tokio::time::timeout(Duration::from_secs(10), ev.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&ev.stdout);
    assert!(text.starts_with("agent.stopping {"), "{text}");
    assert_eq!(text.lines().count(), 2);
    assert!(d.terminate(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_message_gets_its_error_code_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| s.bus.max_message_bytes = 4096).await;
    let b = |s: &str| Bytes::from(s.to_string());
    let huge = Bytes::from(vec![b'x'; 5000]);
    let big_json = Bytes::from(format!("{{\"type\":\"utils.echo\",\"input\":\"{}\"}}", "y".repeat(5000)));
    let corpus: Vec<(Vec<Bytes>, &str)> = vec![
        (vec![b("{")], "malformed_json"),
        (vec![b("not json")], "malformed_json"),
        (vec![Bytes::from_static(b"\xff\xfe\x00\x01")], "malformed_json"),
        (vec![Bytes::from_static(&[0u8; 16])], "malformed_json"),
        (vec![b("")], "malformed_json"),
        (vec![b("{\"type\": \"utils.echo\",}")], "malformed_json"),
        (vec![b("nul")], "malformed_json"),
        (vec![b("[]")], "invalid_field"),
        (vec![b("42")], "invalid_field"),
        (vec![b("\"text\"")], "invalid_field"),
        (vec![b("null")], "invalid_field"),
        (vec![b("{}")], "invalid_field"),
        (vec![b("{\"input\": \"no type\"}")], "invalid_field"),
        (vec![b("{\"type\": 5}")], "invalid_field"),
        (vec![b("{\"type\": \"\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"priority\": 10}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"priority\": -1}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"priority\": \"high\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"stream\": \"yes\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"deadline_ms\": 0}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"deadline_ms\": \"soon\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"complexity\": 1.5}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"prefer\": \"gpu\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"surprise\": 1}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"id\": {\"a\": 1}}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"id\": \"\"}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"metadata\": [1]}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.echo\", \"agent\": 7}")], "invalid_field"),
        (vec![b("{\"cancel\": \"nope-not-in-flight\"}")], "invalid_field"),
        (vec![b("{\"cancel\": 3.5}")], "invalid_field"),
        (vec![b("{\"cancel\": \"x\", \"type\": \"utils.echo\"}")], "invalid_field"),
        (vec![b("{\"type\": \"no.such.type\"}")], "unknown_task_type"),
        (vec![b("{\"agent\": \"NoSuchAgent\"}")], "unknown_agent"),
        (vec![b("{\"type\": \"utils.hash\", \"input\": 5}")], "invalid_field"),
        (vec![b("{\"type\": \"utils.sleep\", \"input\": -1}")], "invalid_field"),
        (vec![huge], "message_too_large"),
        (vec![big_json], "message_too_large"),
        (vec![b("{\"type\":\"utils.echo\"}"), b("{\"type\":\"utils.echo\"}")], "malformed_message"),
        (vec![b("a"), b("b"), b("c")], "malformed_message"),
        (vec![Bytes::new(), b("x"), b("y")], "malformed_message"),
    ];
    assert!(corpus.len() >= 30);
    let mut sock = dealer(&ingress).await;
    for (i, (frames, expected)) in corpus.iter().enumerate() {
        send_frames(&mut sock, frames.clone()).await;
        let reply = recv_json(&mut sock).await;
        assert_eq!(reply["status"], "error", "case {i}: {reply}");
        assert_eq!(reply["error"]["code"], *expected, "case {i} {frames:?}: {reply}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}: {reply}");
    }
    // The id is kept in error replies when it is readable.
    send_json(&mut sock, &json!({"id": "keep-me", "type": "utils.echo", "priority": 99})).await;
    assert_eq!(recv_json(&mut sock).await["id"], "keep-me");
    // A REQ client (empty delimiter) gets its error and then a valid answer.
    let mut req = ReqSocket::new();
    req.connect(&ingress).await.unwrap();
    req.send(ZmqMessage::from("{oops")).await.unwrap();
    let r: Value = serde_json::from_slice(&req.recv().await.unwrap().into_vec()[0]).unwrap();
    assert_eq!(r["error"]["code"], "malformed_json");
    req.send(ZmqMessage::from(json!({"type": "utils.echo", "input": "still up"}).to_string())).await.unwrap();
    let r: Value = serde_json::from_slice(&req.recv().await.unwrap().into_vec()[0]).unwrap();
    assert_eq!((r["status"].as_str(), r["output"].as_str()), (Some("ok"), Some("still up")));
    let metrics = fleet.ctx().metrics.render();
    assert!(metrics.contains("agentvisor_bad_requests_total{code=\"malformed_json\"} 8"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_in_flight_all_answered_once_and_priority_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut sock = dealer(&ingress).await;
    // Saturate UnifiedUtilsAgent (max_concurrency from its spec) with 2 ms sleeps.
    for i in 0..1000u32 {
        let priority = [0, 9, 5, 1][i as usize % 4];
        send_json(
            &mut sock,
            &json!({"id": format!("t{i}"), "type": "utils.sleep", "input": 0.002, "priority": priority}),
        )
        .await;
    }
    let mut order: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = HashSet::new();
    for n in 0..1000 {
        let r = recv_json(&mut sock).await;
        assert_eq!(r["status"], "ok", "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()), "{id} answered twice");
        order.insert(id, n);
    }
    assert_eq!(seen.len(), 1000);
    // Nothing more arrives: each task was answered exactly once.
    assert!(tokio::time::timeout(Duration::from_millis(300), sock.recv()).await.is_err());
    let mean_position = |p: u32| {
        let v: Vec<usize> =
            (0..1000u32).filter(|i| [0, 9, 5, 1][*i as usize % 4] == p).map(|i| order[&format!("t{i}")]).collect();
        v.iter().sum::<usize>() as f64 / v.len() as f64
    };
    let (p9, p5, p1, p0) = (mean_position(9), mean_position(5), mean_position(1), mean_position(0));
    assert!(p9 < p5 && p5 < p1 && p1 < p0, "mean reply positions by priority 9/5/1/0: {p9} {p5} {p1} {p0}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_and_queued_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut sock = dealer(&ingress).await;
    // Saturate UnifiedUtilsAgent (max_concurrency 16) with long sleeps, then queue one more.
    for i in 0..16 {
        send_json(&mut sock, &json!({"id": format!("run{i}"), "type": "utils.sleep", "input": 30})).await;
    }
    send_json(&mut sock, &json!({"id": "queued", "type": "utils.sleep", "input": 30})).await;
    let mut admin = dealer(&ingress).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = util::ask(&mut admin, json!({"type": "coordinator.status"})).await;
        if s["output"]["running"].as_u64() >= Some(16) && s["output"]["queued"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never saturated: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sorted = |mut r: [Value; 2]| {
        r.sort_by_key(|r| r["id"].as_str().unwrap_or("").to_string());
        r
    };
    // A queued task: answered at once, never reaches the agent.
    send_json(&mut sock, &json!({"id": "c0", "cancel": "queued"})).await;
    let replies = sorted([recv_json(&mut sock).await, recv_json(&mut sock).await]);
    assert_eq!(replies[0]["output"]["cancelled"], "queued", "{replies:?}");
    assert_eq!(replies[1]["id"], "queued");
    assert_eq!(replies[1]["error"]["code"], "cancelled");
    assert!(replies[1]["error"]["message"].as_str().unwrap().contains("while queued"), "{replies:?}");
    // A running task: its agent stops the 30 s sleep.
    send_json(&mut sock, &json!({"id": "c1", "cancel": "run0"})).await;
    let replies = sorted([recv_json(&mut sock).await, recv_json(&mut sock).await]);
    assert_eq!(replies[0]["id"], "c1");
    assert_eq!(replies[0]["output"]["cancelled"], "run0");
    assert_eq!(replies[1]["id"], "run0");
    assert_eq!(replies[1]["error"]["code"], "cancelled");
    assert!(replies[1]["timings_ms"]["total"].as_f64().unwrap() < 10_000.0, "the 30 s sleep stopped");
    // The agent stopped the work: its handler ended as cancelled.
    let metrics = fleet.ctx().metrics.render();
    assert!(
        metrics.contains("agentvisor_tasks_total{agent=\"UnifiedUtilsAgent\",outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_task_disturbs_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |_| {}).await;
    let mut log = EventLog::new(&fleet);
    {
        let mut leaver = dealer(&ingress).await;
        send_json(&mut leaver, &json!({"id": "orphan", "type": "utils.sleep", "input": 20})).await;
        log.wait_for(Duration::from_secs(5), "accepted", |e| {
            e.topic == "task.accepted" && e.str("id") == Some("orphan")
        })
        .await;
    } // dropped: disconnected
    let mut stayer = dealer(&ingress).await;
    for i in 0..20 {
        send_json(&mut stayer, &json!({"id": format!("s{i}"), "type": "utils.echo", "input": i})).await;
        let r = recv_json(&mut stayer).await;
        assert_eq!(r["output"], i);
    }
    // The leaver's task was cancelled when its connection closed.
    let e = log
        .wait_for(Duration::from_secs(10), "orphan cancelled", |e| {
            e.topic == "task.cancelled" && e.str("id") == Some("orphan")
        })
        .await;
    assert_eq!(e.data()["code"], "cancelled");
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tasks_deadlines_and_a_full_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| s.bus.max_queue = 40).await;
    let mut log = EventLog::new(&fleet);
    let mut sock = dealer(&ingress).await;
    let ask = |id: &str, t: &str, input: Value| json!({"id": id, "type": t, "input": input});

    send_json(&mut sock, &ask("a1", "system.start", json!("ChitchatAgent"))).await;
    let r = recv_json(&mut sock).await;
    assert_eq!((r["status"].as_str(), r["output"]["state"].as_str()), (Some("ok"), Some("running")), "{r}");
    log.wait_agent("agent.started", "ChitchatAgent").await;
    send_json(&mut sock, &ask("a2", "system.stop", json!({"agent": "ChitchatAgent"}))).await;
    assert_eq!(recv_json(&mut sock).await["output"]["state"], "stopped");
    log.wait_agent("agent.stopped", "ChitchatAgent").await;
    send_json(&mut sock, &ask("a3", "system.restart", json!("ChitchatAgent"))).await;
    assert_eq!(recv_json(&mut sock).await["output"]["state"], "running");
    send_json(&mut sock, &ask("a4", "system.status", json!("NoSuchAgent"))).await;
    assert_eq!(recv_json(&mut sock).await["error"]["code"], "unknown_agent");
    send_json(&mut sock, &ask("a5", "system.agents", Value::Null)).await;
    assert_eq!(recv_json(&mut sock).await["output"]["agents"].as_array().unwrap().len(), 77);

    // A deadline shorter than the work.
    send_json(&mut sock, &json!({"id": "d1", "type": "utils.sleep", "input": 2, "deadline_ms": 100})).await;
    let r = recv_json(&mut sock).await;
    assert_eq!(r["error"]["code"], "deadline_exceeded", "{r}");

    // A full admission queue answers busy (max_queue 40, the agent saturated by long sleeps).
    for i in 0..80 {
        send_json(
            &mut sock,
            &json!({"id": format!("q{i}"), "type": "utils.sleep", "input": 0.5, "deadline_ms": 60000}),
        )
        .await;
    }
    let mut busy = 0;
    let mut ok = 0;
    for _ in 0..80 {
        let r = recv_json(&mut sock).await;
        match r["status"].as_str() {
            Some("ok") => ok += 1,
            _ if r["error"]["code"] == "busy" => busy += 1,
            _ => panic!("{r}"),
        }
    }
    assert!(busy > 0, "some tasks were refused busy");
    assert_eq!(ok + busy, 80, "every task answered");
    fleet.shutdown(Duration::from_secs(10)).await;
}
