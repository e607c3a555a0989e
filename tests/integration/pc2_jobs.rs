//! ResourceManager, AsyncProcessor and TaskScheduler (issue 13) against the
//! real daemon binary over real ZeroMQ, with a real SQLite file: resource
//! grants, denials, FIFO waits, TTL expiry and a holder's crash; durable jobs
//! through a SIGKILL; schedules that fire, persist and follow their misfire
//! policy; and a stable code for every bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{self, Daemon, dealer};

/// The profile: the bus, UnifiedUtilsAgent and the three pc2 services.
fn profile() -> String {
    util::fixture("pc2_jobs.yaml").display().to_string()
}

/// The daemon of [`profile`] on free ports with the extra `--set`s; its ROUTER endpoint.
async fn start(data: &Path, sets: &[&str]) -> (Daemon, String) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let (d, ingress, _) = Daemon::with_bus(&profile(), data, &sets, &[]).await;
    (d, ingress)
}

/// Sends one task, returns its reply (chunks skipped).
async fn call(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    util::send_json(bus, &json!({"id": id, "type": task_type, "input": input})).await;
    loop {
        let r = util::recv_json_within(bus, Duration::from_secs(30)).await;
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

/// The error code of an `error` reply.
async fn code(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> String {
    let r = call(bus, task_type, input.clone()).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    r["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Polls `cond` every 20 ms until it holds (at most `secs`).
async fn until<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_granted_denied_waited_for_expired_and_freed_by_a_holders_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut d, ingress) = start(
        dir.path(),
        &[
            "resources.gpu=1",
            "resources.gpu_memory_bytes=8589934592",
            "resources.cpu=4",
            "testing.fault_injection=true",
        ],
    )
    .await;
    let mut bus = dealer(&ingress).await;

    // Larger than capacity: denied at once, naming the resource.
    let r =
        call(&mut bus, "resource.request", json!({"holder": "big", "gpu_memory_bytes": 9 * GIB, "wait_seconds": 5}))
            .await;
    assert_eq!(r["error"]["code"], "resource_denied", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("gpu_memory_bytes"), "{r}");

    // Two holders compete for the last GPU memory: A gets it, B waits and gets it on release.
    let a = ok(&mut bus, "resource.request", json!({"holder": "A", "gpu_memory_bytes": 6 * GIB})).await;
    assert_eq!(a["gpu_memory_bytes"], 6 * GIB);
    let mut bus_b = dealer(&ingress).await;
    let b_id = uuid::Uuid::new_v4().to_string();
    util::send_json(
        &mut bus_b,
        &json!({"id": b_id, "type": "resource.request", "input": {"holder": "B", "gpu_memory_bytes": 4 * GIB, "wait_seconds": 20}}),
    )
    .await;
    until(10, "B waiting", || {
        let bus = &mut bus;
        async move { ok(bus, "resource.status", json!({})).await["waiting"] == 1 }
    })
    .await;
    let released = ok(&mut bus, "resource.release", json!({"reservation_id": a["reservation_id"]})).await;
    assert_eq!(released["released"], 1);
    let b = util::recv_json_within(&mut bus_b, Duration::from_secs(10)).await;
    assert_eq!((&b["status"], &b["output"]["holder"]), (&json!("ok"), &json!("B")), "{b}");
    ok(&mut bus, "resource.release", json!({"holder": "B"})).await;

    // A TTL expiry frees it (and renew moves the expiry).
    let t = ok(&mut bus, "resource.request", json!({"holder": "T", "gpu": 1, "ttl_seconds": 0.5})).await;
    let renewed =
        ok(&mut bus, "resource.renew", json!({"reservation_id": t["reservation_id"], "ttl_seconds": 0.6})).await;
    assert!(renewed["expires_at"].as_f64() > t["expires_at"].as_f64());
    assert_eq!(code(&mut bus, "resource.request", json!({"holder": "U", "gpu": 1})).await, "resource_denied");
    until(10, "the TTL expiry", || {
        let bus = &mut bus;
        async move { ok(bus, "resource.status", json!({})).await["free"]["gpu"] == 1 }
    })
    .await;

    // A holder agent's crash (fault injection) frees its reservations.
    ok(&mut bus, "resource.request", json!({"holder": "UnifiedUtilsAgent", "cpu": 1.5, "ports": 2})).await;
    let held = ok(&mut bus, "resource.status", json!("UnifiedUtilsAgent")).await;
    assert_eq!(held["reservations"][0]["ports"].as_array().map(Vec::len), Some(2), "{held}");
    let (status, _) = d.post("/agents/UnifiedUtilsAgent/fault", json!({"kind": "panic"})).await;
    assert_eq!(status, 200);
    until(10, "the crashed holder's release", || {
        let bus = &mut bus;
        async move { ok(bus, "resource.status", json!({"holder": "UnifiedUtilsAgent"})).await["reservations"] == json!([]) }
    })
    .await;

    // Live reservations survive a restart, with the metrics in base units.
    let kept = ok(&mut bus, "resource.request", json!({"holder": "K", "mem_mb": 1, "cpu": 0.5})).await;
    assert_eq!(kept["memory_bytes"], 1 << 20);
    let metrics = d.get_text("/metrics").await;
    assert!(metrics.contains("agentvisor_resource_reserved{resource=\"memory_bytes\"} 1048576"), "{metrics}");
    assert!(metrics.contains("agentvisor_resource_capacity{resource=\"gpu\"} 1"), "{metrics}");
    d.terminate(Duration::from_secs(20)).await;
    let (_d, ingress) = start(dir.path(), &["resources.gpu=1", "resources.gpu_memory_bytes=8589934592"]).await;
    let mut bus = dealer(&ingress).await;
    let st = ok(&mut bus, "resource.status", json!({})).await;
    let ids: Vec<&Value> = st["reservations"].as_array().unwrap().iter().map(|r| &r["reservation_id"]).collect();
    assert_eq!(ids, [&kept["reservation_id"]], "{st}");

    // Bad input: each gets a stable code.
    for (t, input, want) in [
        ("resource.request", json!({"holder": "x", "bananas": 1}), "invalid_field"),
        ("resource.request", json!({"holder": "x", "cpu": -1}), "invalid_field"),
        ("resource.request", json!({"holder": "x", "memory_bytes": -5}), "invalid_field"),
        ("resource.request", json!({"holder": "x"}), "invalid_field"),
        ("resource.release", json!({"reservation_id": "res-nope"}), "not_found"),
        ("resource.renew", json!({"reservation_id": "res-nope"}), "not_found"),
        ("async.status", json!({"job_id": "job-nope"}), "not_found"),
        ("async.cancel", json!("job-nope"), "not_found"),
        ("async.submit", json!({"task": {"type": "no.such.type"}}), "unknown_task_type"),
        ("async.submit", json!({"task": {"type": "utils.sleep", "input": "forever"}}), "invalid_field"),
        ("async.submit", json!({"task": {"type": "utils.echo"}, "priority": 10}), "invalid_field"),
        ("schedule.cancel", json!({"schedule_id": "sch-nope"}), "not_found"),
        ("schedule.add", json!({"task": {"type": "utils.time"}, "cron": "61 * * * *"}), "invalid_field"),
        ("schedule.add", json!({"task": {"type": "utils.time"}, "cron": "not a cron"}), "invalid_field"),
        (
            "schedule.add",
            json!({"task": {"type": "utils.time"}, "every_seconds": 1, "at": "2030-01-01T00:00:00Z"}),
            "invalid_field",
        ),
        (
            "schedule.add",
            json!({"task": {"type": "utils.time"}, "cron": "* * * * *", "timezone": "Mars/Olympus"}),
            "invalid_field",
        ),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, want, "{t} {input}");
    }
}

/// Jobs of this test.
const JOBS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_sigkill_every_one_ends_done_and_the_running_ones_ran_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sets = ["async.max_running=20"];
    let (mut d, ingress) = start(dir.path(), &sets).await;
    let mut bus = dealer(&ingress).await;
    // A retried job: an agent that is not running yet answers after a start.
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let seconds = if i % 4 == 0 { 0.4 } else { 0.05 };
        let out = ok(
            &mut bus,
            "async.submit",
            json!({"task": {"type": "utils.sleep", "input": seconds}, "priority": i % 10}),
        )
        .await;
        ids.push(out["job_id"].as_str().unwrap().to_string());
    }
    // Kill while some run and some are still queued.
    until(20, "jobs running with some done", || {
        let bus = &mut bus;
        async move {
            let running = ok(bus, "async.list", json!({"state": "running", "limit": 1})).await;
            let done = ok(bus, "async.list", json!({"state": "done", "limit": 1})).await;
            running["jobs"] != json!([]) && done["jobs"] != json!([])
        }
    })
    .await;
    d.child.start_kill().unwrap();
    d.child.wait().await.unwrap();

    // What the table says at the kill.
    let conn = rusqlite::Connection::open(dir.path().join("agentvisor.db")).unwrap();
    let mut at_kill: BTreeMap<String, String> = BTreeMap::new();
    {
        let mut stmt = conn.prepare("SELECT id, state FROM jobs").unwrap();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap() {
            let (id, state) = row.unwrap();
            at_kill.insert(id, state);
        }
    }
    drop(conn);
    assert_eq!(at_kill.len(), JOBS, "every submitted job is in the table");
    let running: BTreeSet<&String> = at_kill.iter().filter(|(_, s)| *s == "running").map(|(id, _)| id).collect();
    assert!(!running.is_empty() && at_kill.values().any(|s| s == "queued"), "{at_kill:?}");

    let (_d, ingress) = start(dir.path(), &sets).await;
    let mut bus = dealer(&ingress).await;
    until(60, "every job done", || {
        let bus = &mut bus;
        async move {
            let done = ok(bus, "async.list", json!({"state": "done", "limit": 10000})).await;
            done["jobs"].as_array().map(Vec::len) == Some(JOBS)
        }
    })
    .await;
    for id in &ids {
        let st = ok(&mut bus, "async.status", json!(id)).await;
        let want = if running.contains(id) { 2 } else { 1 };
        assert_eq!((st["state"].as_str(), st["attempts"].as_u64()), (Some("done"), Some(want)), "{id}: {st}");
        let result = ok(&mut bus, "async.result", json!({"job_id": id})).await;
        assert!(result["output"]["slept_seconds"].as_f64().is_some(), "{result}");
    }
    let cancelled = ok(&mut bus, "async.cancel", json!({"job_id": ids[0]})).await;
    assert_eq!((&cancelled["cancelled"], &cancelled["state"]), (&json!(false), &json!("done")));
    eprintln!("note: {} of {JOBS} jobs were running at the SIGKILL and ran twice", running.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_retried_on_retryable_errors_and_cancelled_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, ingress) = start(dir.path(), &["async.retry_initial_secs=0.05", "testing.fault_injection=true"]).await;
    let mut bus = dealer(&ingress).await;
    // The deadline of each attempt is too short: deadline_exceeded is retryable, 2 attempts, then failed.
    let job = ok(
        &mut bus,
        "async.submit",
        json!({"task": {"type": "utils.sleep", "input": 5, "deadline_ms": 50}, "max_attempts": 2}),
    )
    .await;
    let id = job["job_id"].clone();
    until(20, "the job failed after its attempts", || {
        let (bus, id) = (&mut bus, id.clone());
        async move { ok(bus, "async.status", json!({"job_id": id})).await["state"] == "failed" }
    })
    .await;
    let result = ok(&mut bus, "async.result", json!({"job_id": id})).await;
    assert_eq!((&result["attempts"], &result["error"]["code"]), (&json!(2), &json!("deadline_exceeded")), "{result}");
    // Cancel while running.
    let job = ok(&mut bus, "async.submit", json!({"task": {"type": "utils.sleep", "input": 30}})).await;
    let id = job["job_id"].clone();
    until(10, "running", || {
        let (bus, id) = (&mut bus, id.clone());
        async move { ok(bus, "async.status", json!({"job_id": id})).await["state"] == "running" }
    })
    .await;
    let c = ok(&mut bus, "async.cancel", json!({"job_id": id})).await;
    assert_eq!((&c["cancelled"], &c["state"]), (&json!(true), &json!("cancelled")));
    assert_eq!(ok(&mut bus, "async.status", json!({"job_id": id})).await["state"], "cancelled");
}
