//! ResourceManager, AsyncProcessor and TaskScheduler (issue 13) against the
//! real daemon binary over real ZeroMQ, with a real SQLite file: resource
//! grants, denials, FIFO waits, TTL expiry and a holder's crash; durable jobs
//! through a SIGKILL; schedules that fire, persist and follow their misfire
//! policy; and a stable code for every bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zeromq::{Socket, SocketRecv, SubSocket};

use crate::util::{self, Daemon, dealer};

/// The profile: the bus, UnifiedUtilsAgent and the three pc2 services.
fn profile() -> String {
    util::fixture("pc2_jobs.yaml").display().to_string()
}

/// The daemon of [`profile`] on free ports with the extra `--set`s; its ROUTER endpoint.
async fn start(data: &Path, sets: &[&str]) -> (Daemon, String) {
    let (d, ingress, _) = start_with_events(data, sets).await;
    (d, ingress)
}

/// [`start`], and the PUB endpoint.
async fn start_with_events(data: &Path, sets: &[&str]) -> (Daemon, String, String) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Daemon::with_bus(&profile(), data, &sets, &[]).await
}

/// A SUB socket on `events` for `schedule.*`, once it gets events (probed
/// with `utils.echo` tasks: the subscription reaches the PUB side some time
/// after the connect).
async fn schedule_events(events: &str, bus: &mut zeromq::DealerSocket) -> SubSocket {
    let mut sub = SubSocket::new();
    sub.connect(events).await.expect("connect to the PUB socket");
    sub.subscribe("schedule.").await.expect("subscribe");
    sub.subscribe("task.completed").await.expect("subscribe");
    for n in 0..200 {
        ok(bus, "utils.echo", json!(n)).await;
        if let Some(e) = next_event(&mut sub, Duration::from_millis(50)).await
            && e["topic"] == "task.completed"
        {
            return sub;
        }
    }
    panic!("no event reached the SUB socket");
}

/// The next event's JSON, if one comes within `wait`.
async fn next_event(sub: &mut SubSocket, wait: Duration) -> Option<Value> {
    let msg = tokio::time::timeout(wait, sub.recv()).await.ok()?.ok()?;
    serde_json::from_slice(msg.into_vec().get(1)?).ok()
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

/// Polls the (awaiting) condition every 20 ms until it holds (at most `secs`).
macro_rules! until {
    ($secs:expr, $what:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        while !$cond {
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
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
    until!(10, "B waiting", { ok(&mut bus, "resource.status", json!({})).await["waiting"] == 1 });
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
    until!(10, "the TTL expiry", { ok(&mut bus, "resource.status", json!({})).await["free"]["gpu"] == 1 });

    // A holder agent's crash (fault injection) frees its reservations
    // (UnifiedUtilsAgent is on demand: a task starts it).
    ok(&mut bus, "utils.echo", json!("wake up")).await;
    ok(&mut bus, "resource.request", json!({"holder": "UnifiedUtilsAgent", "cpu": 1.5, "ports": 2})).await;
    let held = ok(&mut bus, "resource.status", json!("UnifiedUtilsAgent")).await;
    assert_eq!(held["reservations"][0]["ports"].as_array().map(Vec::len), Some(2), "{held}");
    let (status, _) = d.post("/agents/UnifiedUtilsAgent/fault", json!({"kind": "panic"})).await;
    assert_eq!(status, 200);
    until!(10, "the crashed holder's release", {
        ok(&mut bus, "resource.status", json!({"holder": "UnifiedUtilsAgent"})).await["reservations"] == json!([])
    });

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
        let seconds = if i % 4 == 0 { 0.8 } else { 0.1 };
        let out = ok(
            &mut bus,
            "async.submit",
            json!({"task": {"type": "utils.sleep", "input": seconds}, "priority": i % 10}),
        )
        .await;
        ids.push(out["job_id"].as_str().unwrap().to_string());
    }
    // Kill while some run and some are still queued.
    until!(20, "jobs running with some done and some queued", {
        let running = ok(&mut bus, "async.list", json!({"state": "running", "limit": 1})).await;
        let done = ok(&mut bus, "async.list", json!({"state": "done", "limit": 1})).await;
        let queued = ok(&mut bus, "async.list", json!({"state": "queued", "limit": 1})).await;
        running["jobs"] != json!([]) && done["jobs"] != json!([]) && queued["jobs"] != json!([])
    });
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
    until!(60, "every job done", {
        let done = ok(&mut bus, "async.list", json!({"state": "done", "limit": 10000})).await;
        done["jobs"].as_array().map(Vec::len) == Some(JOBS)
    });
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
    // `agentvisor jobs` lists them from the store.
    let listed = cli(&["jobs", "--state", "done", "--last", "1000", "--json", "--data-dir"], dir.path());
    assert_eq!(listed.lines().count(), JOBS, "{listed}");
    let twice = listed.lines().filter(|l| l.contains("\"attempts\":2")).count();
    assert_eq!(twice, running.len(), "{listed}");
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
    until!(20, "the job failed after its attempts", {
        ok(&mut bus, "async.status", json!({"job_id": id})).await["state"] == "failed"
    });
    let result = ok(&mut bus, "async.result", json!({"job_id": id})).await;
    assert_eq!((&result["attempts"], &result["error"]["code"]), (&json!(2), &json!("deadline_exceeded")), "{result}");
    // Cancel while running.
    let job = ok(&mut bus, "async.submit", json!({"task": {"type": "utils.sleep", "input": 30}})).await;
    let id = job["job_id"].clone();
    until!(10, "running", { ok(&mut bus, "async.status", json!({"job_id": id})).await["state"] == "running" });
    let c = ok(&mut bus, "async.cancel", json!({"job_id": id})).await;
    assert_eq!((&c["cancelled"], &c["state"]), (&json!(true), &json!("cancelled")));
    assert_eq!(ok(&mut bus, "async.status", json!({"job_id": id})).await["state"], "cancelled");
}

/// `agentvisor ARGS DATA_DIR`'s stdout (it must exit 0).
fn cli(args: &[&str], data: &Path) -> String {
    let out = std::process::Command::new(util::bin()).args(args).arg(data).output().expect("the CLI runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// RFC 3339 text of now plus `secs`.
fn rfc3339_in(secs: f64) -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs_f64(secs)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_in_order_persist_and_follow_their_misfire_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut d, ingress, events) = start_with_events(dir.path(), &[]).await;
    let mut bus = dealer(&ingress).await;
    let mut sub = schedule_events(&events, &mut bus).await;
    let every = ok(
        &mut bus,
        "schedule.add",
        json!({"task": {"type": "utils.echo", "input": "tick"}, "every_seconds": 1, "name": "tick"}),
    )
    .await;
    let cron = ok(&mut bus, "schedule.add", json!({"task": {"type": "utils.time"}, "cron": "* * * * * *"})).await;
    let at = ok(&mut bus, "schedule.add", json!({"task": {"type": "utils.time"}, "at": rfc3339_in(1.0)})).await;
    let (every, cron, at) = (every["schedule_id"].clone(), cron["schedule_id"].clone(), at["schedule_id"].clone());
    let mut fired: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fired.get(every.as_str().unwrap()).map_or(0, Vec::len) < 10 {
        assert!(Instant::now() < deadline, "10 firings of every_seconds: 1 within 30 s: {fired:?}");
        if let Some(e) = next_event(&mut sub, Duration::from_secs(2)).await
            && e["topic"] == "schedule.fired"
        {
            fired.entry(e["schedule_id"].as_str().unwrap().to_string()).or_default().push(e);
        }
    }
    let ticks = &fired[every.as_str().unwrap()];
    let due: Vec<f64> = ticks.iter().map(|e| e["due_at"].as_f64().unwrap()).collect();
    for w in due.windows(2) {
        assert!((w[1] - w[0] - 1.0).abs() < 1e-6, "in order, one second apart: {due:?}");
    }
    let drift: Vec<String> =
        ticks.iter().map(|e| format!("{:.1}", e["drift_seconds"].as_f64().unwrap() * 1e3)).collect();
    eprintln!("note: every_seconds: 1 drift per firing, ms: {}", drift.join(", "));
    assert!(fired.get(cron.as_str().unwrap()).is_some_and(|v| !v.is_empty()), "the cron schedule fired");
    assert_eq!(fired.get(at.as_str().unwrap()).map(Vec::len), Some(1), "the at schedule fired once");
    // Each firing is a job that ran.
    let job = ticks[0]["job_id"].clone();
    until!(10, "the first tick's job done", {
        ok(&mut bus, "async.result", json!({"job_id": job})).await["output"] == "tick"
    });
    for id in [&every, &cron] {
        assert_eq!(ok(&mut bus, "schedule.cancel", json!({"schedule_id": id})).await["cancelled"], true);
    }
    assert_eq!(ok(&mut bus, "schedule.cancel", json!(every)).await["cancelled"], false);

    // Down while firings are due: run_once fires once, skip does not.
    let kept = ok(
        &mut bus,
        "schedule.add",
        json!({"task": {"type": "utils.time"}, "every_seconds": 0.5, "misfire": "run_once"}),
    )
    .await;
    let once = ok(
        &mut bus,
        "schedule.add",
        json!({"task": {"type": "utils.time"}, "after_seconds": 1, "misfire": "run_once"}),
    )
    .await;
    let skip =
        ok(&mut bus, "schedule.add", json!({"task": {"type": "utils.time"}, "after_seconds": 1, "misfire": "skip"}))
            .await;
    let skip_every =
        ok(&mut bus, "schedule.add", json!({"task": {"type": "utils.time"}, "every_seconds": 0.5, "misfire": "skip"}))
            .await;
    d.child.start_kill().unwrap();
    d.child.wait().await.unwrap();
    let down_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < down_until {
        tokio::time::sleep(Duration::from_millis(100)).await; // the daemon stays down past the firings
    }
    let (d, ingress) = start(dir.path(), &[]).await;
    let mut bus = dealer(&ingress).await;
    let by_id = |list: &Value, id: &Value| -> Value {
        list["schedules"].as_array().unwrap().iter().find(|s| s["schedule_id"] == *id).cloned().unwrap_or_default()
    };
    until!(10, "the missed firings handled", {
        let list = ok(&mut bus, "schedule.list", json!({})).await;
        by_id(&list, &once["schedule_id"])["state"] == "ended"
            && by_id(&list, &kept["schedule_id"])["firings"].as_u64() >= Some(2)
    });
    let list = ok(&mut bus, "schedule.list", Value::Null).await;
    let (o, s, k, se) = (
        by_id(&list, &once["schedule_id"]),
        by_id(&list, &skip["schedule_id"]),
        by_id(&list, &kept["schedule_id"]),
        by_id(&list, &skip_every["schedule_id"]),
    );
    assert_eq!((&o["firings"], &o["state"]), (&json!(1), &json!("ended")), "run_once ran once: {o}");
    assert_eq!((&s["firings"], &s["state"]), (&json!(0), &json!("ended")), "skip did not run: {s}");
    assert_eq!(k["state"], "active", "the recurring schedule survived the restart: {k}");
    assert_eq!(se["state"], "active", "{se}");
    let metrics = d.get_text("/metrics").await;
    assert!(metrics.contains("agentvisor_schedule_firings_total{outcome=\"misfire_run\"}"), "{metrics}");
    let listed = cli(&["schedules", "--data-dir"], dir.path());
    assert!(
        listed.starts_with("SCHEDULE") && listed.contains("* * * * * * UTC") && listed.contains("cancelled"),
        "{listed}"
    );
    assert!(metrics.contains("agentvisor_schedule_firings_total{outcome=\"skipped\"} 2"), "{metrics}");
}

/// Waits for the next event on `sub` that `pred` accepts (at most 10 s).
async fn wait_event(sub: &mut SubSocket, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no {what} event within 10 s");
        if let Some(e) = next_event(sub, Duration::from_millis(500)).await
            && pred(&e)
        {
            return e;
        }
    }
}

/// The model manager reserves a model's memory through the ledger before
/// its load and releases it when the load fails (a GGUF file that is not a
/// model), in every build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_load_reserves_through_the_ledger_and_a_failed_load_releases() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("not-a-model.gguf"), vec![0u8; 4096]).unwrap();
    let models_dir = format!("models_dir={}", models.display());
    let (_d, ingress, events) = start_with_events(&dir.path().join("data"), &[&models_dir, "resources.gpu=0"]).await;
    let mut bus = dealer(&ingress).await;
    let mut sub = SubSocket::new();
    sub.connect(&events).await.unwrap();
    sub.subscribe("resource.").await.unwrap();
    // The subscription reaches the PUB side some time after the connect: probe.
    for n in 0..200 {
        ok(&mut bus, "resource.request", json!({"holder": "probe", "cpu": 0.01})).await;
        ok(&mut bus, "resource.release", json!({"holder": "probe"})).await;
        if next_event(&mut sub, Duration::from_millis(50)).await.is_some() {
            break;
        }
        assert!(n < 199, "no event reached the SUB socket");
    }
    let r = call(&mut bus, "models.load", json!({"model": "not-a-model"})).await;
    assert_eq!(r["status"], "error", "{r}");
    let granted =
        wait_event(&mut sub, "resource.granted", |e| e["topic"] == "resource.granted" && e["holder"] == "not-a-model")
            .await;
    assert!(granted["memory_bytes"].as_u64() > Some(4096), "host memory on a machine without a GPU: {granted}");
    let released = wait_event(&mut sub, "resource.released", |e| {
        e["topic"] == "resource.released" && e["holder"] == "not-a-model"
    })
    .await;
    assert_eq!(released["reason"], "model_unloaded");
    assert_eq!(ok(&mut bus, "resource.status", json!("not-a-model")).await["reservations"], json!([]));
}

/// Loading the real model reserves its memory in the ledger (the model is
/// the holder) and unloading releases it. Needs llama.cpp (the `embedded`
/// feature).
#[cfg(feature = "embedded")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_the_real_model_shows_it_as_holder_until_unloaded() {
    use agentvisor::models::DEFAULT_MODEL_NAME;
    let dir = tempfile::tempdir().unwrap();
    let models_dir = format!("models_dir={}", util::models_dir().display());
    let (_d, ingress) = start(dir.path(), &[&models_dir]).await;
    let mut bus = dealer(&ingress).await;
    let loaded = ok(&mut bus, "models.load", json!({"model": DEFAULT_MODEL_NAME})).await;
    let st = ok(&mut bus, "resource.status", json!({"holder": DEFAULT_MODEL_NAME})).await;
    let held = &st["reservations"][0];
    let bytes = held["memory_bytes"].as_u64().unwrap_or(0) + held["gpu_memory_bytes"].as_u64().unwrap_or(0);
    assert_eq!(Some(bytes), loaded["bytes"].as_u64(), "{st} vs {loaded}");
    ok(&mut bus, "models.unload", json!({"model": DEFAULT_MODEL_NAME})).await;
    let st = ok(&mut bus, "resource.status", json!({"holder": DEFAULT_MODEL_NAME})).await;
    assert_eq!(st["reservations"], json!([]), "{st}");
}

/// A process agent whose spec asks for a GPU is `unavailable` on a machine
/// without one, with that reason (LocalFineTunerAgent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fine_tuner_is_unavailable_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = util::settings(dir.path());
    s.resources.gpu = Some(0);
    s.resources.gpu_memory_bytes = Some(0);
    let fleet = util::fleet(s, None, "learning").await;
    fleet.boot().await;
    let e = fleet.ensure("LocalFineTunerAgent").await.expect_err("no GPU here");
    let message = e.to_string();
    assert!(message.contains("gpu: needs 1, the machine has 0"), "{message}");
    let record = fleet.ctx().record("LocalFineTunerAgent").unwrap();
    assert_eq!(record.state, agentvisor::supervisor::AgentState::Unavailable, "{record:?}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
