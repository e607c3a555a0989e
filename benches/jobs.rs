//! Background jobs and the resource ledger end to end, on the real actors
//! and the real SQLite store, with tasks sent over the real ZeroMQ ingress:
//!
//! - `jobs`: `async.submit` of a no-op job (`utils.echo`) at a fixed rate
//!   (default 1 000 jobs/s) for a fixed count (default 3 000), one DEALER
//!   socket; each job's latency runs from its submit message leaving the
//!   client to its `job.done` event (the event stream in process): the
//!   submit, the job row written, queued, run through the dispatch, the
//!   result written. Prints the achieved submit rate and p50/p99/max.
//! - `resources`: `resource.request` then `resource.release` of one CPU
//!   core, one after the other on one DEALER socket, for 2 s: round trips
//!   per second (each write-through to SQLite before its answer).
//!
//! Profile: `tests/fixtures/pc2_jobs.yaml` (the bus, UnifiedUtilsAgent and
//! the pc2 services); `async.max_running` 8.
//!
//! Run: `cargo bench --bench jobs [-- JOBS RATE]`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::daemon::{System, load_plan};
use agentvisor::telemetry::latency::Samples;
use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

async fn send(s: &mut DealerSocket, v: &Value) {
    let body = Bytes::from(serde_json::to_vec(v).expect("json"));
    s.send(ZmqMessage::from(body)).await.expect("send");
}

async fn recv(s: &mut DealerSocket) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(30), s.recv()).await.expect("reply in time").expect("recv");
    let body = msg.into_vec().into_iter().rfind(|f| !f.is_empty()).expect("body");
    serde_json::from_slice(&body).expect("json reply")
}

async fn start(data: &Path) -> (System, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut s = Settings {
        agents_dir: root.join("agents"),
        profiles_dir: root.join("profiles"),
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    s.backends.clear();
    s.bus.ingress = "tcp://127.0.0.1:0".into();
    s.bus.events = "tcp://127.0.0.1:0".into();
    s.jobs.max_running = Some(8);
    let profile = root.join("tests/fixtures/pc2_jobs.yaml");
    let (catalog, plan) = load_plan(&s, None, &profile.display().to_string()).expect("profile resolves");
    let system = System::start(s, catalog, plan).await.expect("starts");
    system.boot().await;
    let (ingress, _) = system.bus_endpoints().expect("bus bound");
    (system, ingress)
}

async fn jobs(system: &System, ingress: &str, count: usize, rate: f64) {
    let mut events = system.services.events.subscribe();
    let mut bus = DealerSocket::new();
    bus.connect(ingress).await.expect("connect");
    // Warm up: the utils agent starts on demand.
    send(&mut bus, &json!({"id": "warm", "type": "utils.echo", "input": 0})).await;
    recv(&mut bus).await;
    let t0 = Instant::now();
    // Sent at, Unix seconds: compared with each event's own `ts` (its
    // emission), so reading the events after the run costs nothing.
    let unix = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let sent: HashMap<String, f64> = {
        let (mut tx, mut rx) = bus.split();
        let sender = async {
            let mut sent = HashMap::new();
            for i in 0..count {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let id = format!("s{i}");
                sent.insert(id.clone(), unix());
                let v =
                    json!({"id": id, "type": "async.submit", "input": {"task": {"type": "utils.echo", "input": i}}});
                tx.send(ZmqMessage::from(Bytes::from(serde_json::to_vec(&v).expect("json")))).await.expect("send");
            }
            sent
        };
        let receiver = async {
            let mut jobs = HashMap::new();
            for _ in 0..count {
                let msg = rx.recv().await.expect("recv");
                let body = msg.into_vec().into_iter().rfind(|f| !f.is_empty()).expect("body");
                let r: Value = serde_json::from_slice(&body).expect("json");
                let job = r["output"]["job_id"].as_str().unwrap_or_else(|| panic!("submit failed: {r}")).to_string();
                jobs.insert(r["id"].as_str().expect("id").to_string(), job);
            }
            jobs
        };
        let (sent, jobs) = tokio::join!(sender, receiver);
        sent.into_iter().map(|(id, at)| (jobs[&id].clone(), at)).collect()
    };
    let submitted_in = t0.elapsed().as_secs_f64();
    let t0_unix = unix() - t0.elapsed().as_secs_f64();
    let mut ends = t0_unix;
    let mut samples = Samples::default();
    while samples.ok + samples.errors < count {
        let e =
            tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("jobs finish").expect("event");
        let Some(at) = e.str("job_id").and_then(|id| sent.get(id)).copied() else { continue };
        ends = ends.max(e.ts);
        match e.topic {
            "job.done" => samples.ok += 1,
            "job.failed" | "job.cancelled" => samples.errors += 1,
            _ => continue,
        }
        samples.latencies_ms.push((e.ts - at) * 1e3);
    }
    samples.seconds = ends - t0_unix;
    let s = samples.summary();
    println!(
        "jobs: {count} no-op jobs submitted at {:.0}/s (asked {rate:.0}/s), {} done, {} failed; submit -> done p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} jobs/s end to end",
        count as f64 / submitted_in,
        s.ok,
        s.errors,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.per_second
    );
}

async fn resources(ingress: &str, seconds: f64) {
    let mut bus = DealerSocket::new();
    bus.connect(ingress).await.expect("connect");
    let t0 = Instant::now();
    let mut trips = 0usize;
    let mut lat = Samples::default();
    while t0.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        send(&mut bus, &json!({"type": "resource.request", "input": {"holder": "bench", "cpu": 1}})).await;
        let r = recv(&mut bus).await;
        let id = r["output"]["reservation_id"].clone();
        assert!(id.is_string(), "{r}");
        send(&mut bus, &json!({"type": "resource.release", "input": {"reservation_id": id}})).await;
        let r = recv(&mut bus).await;
        assert_eq!(r["status"], "ok", "{r}");
        trips += 2;
        lat.ok += 1;
        lat.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.seconds = t0.elapsed().as_secs_f64();
    let s = lat.summary();
    println!(
        "resources: {trips} round trips in {:.2} s = {:.0} round trips/s ({:.0} request+release pairs/s, pair p50 {:.3} ms, p99 {:.3} ms)",
        s.seconds,
        trips as f64 / s.seconds,
        s.per_second,
        s.p50_ms,
        s.p99_ms
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let rate: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (system, ingress) = start(dir.path()).await;
        jobs(&system, &ingress, count, rate).await;
        resources(&ingress, 2.0).await;
        system.shutdown(Duration::from_secs(10)).await;
    });
}
