//! Receipts off the reply path (issue 12, item 2): HybridRouter queues each
//! receipt to the receipt log and replies at once; a writer commits queued
//! receipts in batches of at most `store.receipts_batch`.
//!
//! - A clean stop (SIGTERM of the real daemon) under load — `/v1` requests
//!   and bus `simple_chat` tasks through an LLM agent, with a HybridRouter
//!   panic on the way — loses nothing: the `receipts` table holds exactly
//!   the receipts of the replies that carried one.
//! - A SIGKILL under load loses at most `2 × store.receipts_batch` receipts
//!   of replies that went out.
//! - A full queue is back-pressure, counted, never a drop: with the store
//!   thread held and `store.receipts_batch: 1`, at most 2 replies go out,
//!   every other call waits (counted), and all are stored once it moves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentvisor::config::Tier;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util::{self, Daemon};

/// Concurrent `/v1/chat/completions` clients.
const HTTP_CLIENTS: usize = 12;

/// Concurrent bus clients (one DEALER each, one task at a time).
const BUS_CLIENTS: usize = 4;

/// Most `/v1` requests sent in one run.
const HTTP_REQUESTS: usize = 2000;

/// Replies (HTTP and bus) before the signal: the load is well under way.
const REPLIES_BEFORE_SIGNAL: usize = 1200;

/// The batch size of the SIGKILL test (loss bound 2 × this).
const KILL_BATCH: usize = 4;

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Task ids of replies that carried a receipt (`x_agentvisor_route` or the bus reply's `route`).
    with_receipt: Mutex<BTreeSet<String>>,
    /// Replies without a receipt, by error code (or `transport`).
    without: Mutex<BTreeMap<String, usize>>,
    /// Every reply or failure.
    replies: AtomicUsize,
    /// Requests sent and not yet answered.
    in_flight: AtomicUsize,
    /// Set once a client saw the daemon refuse (`shutting_down`) or vanish.
    stopping: AtomicBool,
    /// The daemon is gone: bus clients stop waiting for replies.
    gone: tokio_util::sync::CancellationToken,
}

impl Seen {
    fn receipt(&self, route: &Value) -> bool {
        match route["task_id"].as_str() {
            Some(id) => {
                assert!(self.with_receipt.lock().insert(id.to_string()), "two replies carried receipt {id}");
                true
            }
            None => false,
        }
    }

    fn other(&self, what: &str) {
        *self.without.lock().entry(what.to_string()).or_default() += 1;
    }
}

/// A profile of the task bus and ChitchatAgent (an `llm` agent: each
/// `simple_chat` is one model call), with their dependencies.
fn write_profile(dir: &Path) -> PathBuf {
    let path = dir.join("receipts.yaml");
    std::fs::write(
        &path,
        "profile: {name: receipts, description: \"the bus and one llm agent\"}\n\
         agent_selection: {include_agents: [RequestCoordinator, ChitchatAgent]}\n",
    )
    .unwrap();
    path
}

/// The real daemon with the fake backend as `local` (L1), the profile of
/// [`write_profile`], fault injection on and `sets`; once ready: it and its
/// ROUTER endpoint.
async fn start_daemon(dir: &Path, fake: &FakeOpenAi, sets: &[&str]) -> (Daemon, String) {
    let config = dir.join("agentvisor.yaml");
    std::fs::write(
        &config,
        format!(
            "backends:\n  local:\n    kind: openai\n    tier: L1\n    base_url: {}\n    model: fake-local\n    \
             first_token_timeout_secs: 10\n    total_timeout_secs: 20\n    max_retries: 0\n\
             routing:\n  tiers: {{high_load_percent: 101}}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let (profile, data) = (write_profile(dir), dir.join("data"));
    let mut args: Vec<String> =
        ["run", "--profile", path(&profile), "--config", path(&config), "--data-dir", path(&data)]
            .map(String::from)
            .to_vec();
    for kv in ["bus.ingress=tcp://127.0.0.1:0", "bus.events=tcp://127.0.0.1:0", "testing.fault_injection=true"]
        .iter()
        .chain(sets)
    {
        args.extend(["--set".to_string(), kv.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(&util::root(), &args, &[]).await;
    d.wait_ready().await;
    let (_, health) = d.get_json("/health").await;
    let ingress = health["bus"]["ingress"].as_str().expect("bus.ingress in /health").to_string();
    (d, ingress)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts the load: [`HTTP_CLIENTS`] `/v1` clients (together at most
/// [`HTTP_REQUESTS`]) and [`BUS_CLIENTS`] bus clients, each until the
/// daemon refuses (`shutting_down`) or vanishes.
fn load(base: &str, ingress: &str, seen: &Arc<Seen>) -> Vec<tokio::task::JoinHandle<()>> {
    let sent = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for _ in 0..HTTP_CLIENTS {
        let (http, url, seen, sent) = (http.clone(), format!("{base}/v1/chat/completions"), seen.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < HTTP_REQUESTS && !seen.stopping.load(Ordering::Relaxed) {
                seen.in_flight.fetch_add(1, Ordering::Relaxed);
                let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
                let r = http.post(&url).json(&body).timeout(Duration::from_secs(60)).send().await;
                let answer = match r {
                    Ok(r) => r.json::<Value>().await.ok(),
                    Err(_) => None,
                };
                seen.in_flight.fetch_sub(1, Ordering::Relaxed);
                seen.replies.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Some(a) if seen.receipt(&a["x_agentvisor_route"]) => {}
                    Some(a) => {
                        let code = a["error"]["code"].as_str().unwrap_or("?").to_string();
                        seen.other(&code);
                        if code == "shutting_down" {
                            seen.stopping.store(true, Ordering::Relaxed);
                        }
                    }
                    None => {
                        seen.other("transport");
                        seen.stopping.store(true, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for c in 0..BUS_CLIENTS {
        let (ingress, seen) = (ingress.to_string(), seen.clone());
        clients.push(tokio::spawn(async move {
            use zeromq::{SocketRecv, SocketSend};
            let mut sock = util::dealer(&ingress).await;
            let mut n = 0;
            while !seen.stopping.load(Ordering::Relaxed) {
                n += 1;
                let task = json!({"id": format!("bus-{c}-{n}"), "type": "simple_chat", "input": "hi"});
                let frames = vec![bytes::Bytes::from(serde_json::to_vec(&task).unwrap())];
                if sock.send(zeromq::ZmqMessage::try_from(frames).unwrap()).await.is_err() {
                    break;
                }
                seen.in_flight.fetch_add(1, Ordering::Relaxed);
                let msg = tokio::select! {
                    biased;
                    msg = sock.recv() => Some(msg),
                    () = seen.gone.cancelled() => None, // killed: no reply will come
                };
                seen.in_flight.fetch_sub(1, Ordering::Relaxed);
                seen.replies.fetch_add(1, Ordering::Relaxed);
                let reply: Option<Value> = msg.and_then(Result::ok).and_then(|m| {
                    let body = m.into_vecdeque().into_iter().rfind(|f| !f.is_empty())?;
                    serde_json::from_slice(&body).ok()
                });
                match reply {
                    Some(r) if seen.receipt(&r["route"]) => {}
                    Some(r) => {
                        let code = r["error"]["code"].as_str().unwrap_or("?").to_string();
                        seen.other(&code);
                        if code == "shutting_down" {
                            seen.stopping.store(true, Ordering::Relaxed);
                        }
                    }
                    None => {
                        seen.other("transport");
                        break;
                    }
                }
            }
        }));
    }
    clients
}

/// Waits until the clients saw `n` replies.
async fn replies_reach(seen: &Seen, n: usize) {
    util::poll_until(Duration::from_secs(120), &format!("{n} replies"), || seen.replies.load(Ordering::Relaxed) >= n)
        .await;
}

/// Task ids of the receipts in `data/agentvisor.db` (opened after the exit).
fn stored(data: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data.join("agentvisor.db")).expect("the database opens");
    let mut stmt = conn.prepare("SELECT task_id FROM receipts ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn signal(d: &Daemon, sig: Signal) {
    let pid = nix::unistd::Pid::from_raw(d.child.id().expect("daemon pid") as i32);
    nix::sys::signal::kill(pid, sig).expect("signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stores_every_receipt_of_every_reply() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("ok".into()));
    let (mut d, ingress) = start_daemon(dir.path(), &fake, &[]).await;
    let seen = Arc::new(Seen::default());
    let t0 = Instant::now();
    let clients = load(&d.base, &ingress, &seen);

    // A HybridRouter panic on the way: its restart keeps the receipt log.
    replies_reach(&seen, REPLIES_BEFORE_SIGNAL / 3).await;
    let (status, body) = d.post("/agents/HybridRouter/fault", json!({"kind": "panic"})).await;
    assert_eq!(status, 200, "{body}");
    replies_reach(&seen, REPLIES_BEFORE_SIGNAL).await;
    // Group commit at work: receipts committed so far and their transactions.
    let metrics = d.get_text("/metrics").await;
    let sample = |name: &str| {
        metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).unwrap_or("?").to_string()
    };
    let (rows_so_far, transactions) =
        (sample("agentvisor_audit_batch_rows_sum{"), sample("agentvisor_audit_batch_rows_count{"));
    let in_flight = seen.in_flight.load(Ordering::Relaxed);
    signal(&d, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(60), d.child.wait())
        .await
        .expect("the daemon exits within 60 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    // A bus task sent as the sockets closed gets no reply: stop waiting
    // (after the replies the daemon sent had time to arrive).
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.gone.cancel();
    for c in clients {
        c.await.unwrap();
    }

    let rows = stored(&dir.path().join("data"));
    let replied = seen.with_receipt.lock().clone();
    let without = seen.without.lock().clone();
    eprintln!(
        "{} replies with a receipt ({} over the bus), {} rows, {in_flight} in flight at SIGTERM, without a receipt: \
         {without:?}, {:.1} s; before SIGTERM {rows_so_far} receipts in {transactions} transactions",
        replied.len(),
        replied.iter().filter(|id| id.starts_with("bus-")).count(),
        rows.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(replied.iter().any(|id| id.starts_with("bus-")), "bus tasks made model calls too");
    let unique: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(unique.len(), rows.len(), "a receipt stored twice");
    let lost: Vec<&String> = replied.difference(&unique).collect();
    assert!(lost.is_empty(), "{} receipts of replies lost in a clean stop: {lost:?}", lost.len());
    let unreplied: Vec<&String> = unique.difference(&replied).collect();
    assert!(unreplied.is_empty(), "receipts of calls whose reply no client saw: {unreplied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_at_most_two_batches_of_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("ok".into()));
    let batch = format!("store.receipts_batch={KILL_BATCH}");
    let (mut d, ingress) = start_daemon(dir.path(), &fake, &[&batch]).await;
    let seen = Arc::new(Seen::default());
    let clients = load(&d.base, &ingress, &seen);
    replies_reach(&seen, REPLIES_BEFORE_SIGNAL).await;
    let in_flight = seen.in_flight.load(Ordering::Relaxed);
    signal(&d, Signal::SIGKILL);
    let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait()).await.expect("killed").expect("wait");
    assert!(!status.success());
    // Replies the daemon sent before it died may still be on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.gone.cancel();
    for c in clients {
        c.await.unwrap();
    }

    let rows: BTreeSet<String> = stored(&dir.path().join("data")).into_iter().collect();
    let replied = seen.with_receipt.lock().clone();
    let lost: Vec<&String> = replied.difference(&rows).collect();
    let bound = 2 * KILL_BATCH;
    eprintln!(
        "{} replies with a receipt, {} rows, {} lost (bound {bound}), {in_flight} in flight at SIGKILL",
        replied.len(),
        rows.len(),
        lost.len()
    );
    assert!(replied.len() >= REPLIES_BEFORE_SIGNAL / 2, "the load ran: {} receipts", replied.len());
    assert!(lost.len() <= bound, "{} receipts of replies lost, more than 2 × batch = {bound}: {lost:?}", lost.len());
}

/// An in-process daemon (the real `System`) with the fake backend as
/// `local`, a one-agent profile, `store.receipts_batch` = `batch`, and its
/// HTTP routes served on a free port: it, the `/v1/chat/completions` URL and
/// the server task.
async fn in_process(
    dir: &Path,
    fake: &FakeOpenAi,
    batch: usize,
) -> (agentvisor::daemon::System, String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let mut s = util::settings(dir);
    s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
    s.routing.tiers.high_load_percent = 101.0;
    s.store.receipts_batch = batch.try_into().unwrap();
    let profile = dir.join("utils.yaml");
    std::fs::write(
        &profile,
        "profile: {name: utils, description: \"one builtin agent\"}\nagent_selection: {include_agents: [UnifiedUtilsAgent]}\n",
    )
    .unwrap();
    let fleet = util::fleet(s, None, path(&profile)).await;
    fleet.boot().await;
    let (base, server) = util::serve_http(&fleet).await;
    let url = format!("{base}/v1/chat/completions");
    (fleet, url, server)
}

/// Holds the store thread (a slow disk, a long checkpoint) until the
/// returned sender sends or drops.
async fn hold_store(fleet: &agentvisor::daemon::System) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (holding, is_held) = tokio::sync::oneshot::channel::<()>();
    let store = fleet.services.store.clone();
    tokio::spawn(async move {
        store
            .call(move |_| {
                let _ = holding.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
    });
    // Held from here on: the receipts writer's next commit waits.
    is_held.await.expect("the store thread runs the holding call");
    release
}

/// `calls` concurrent `/v1` requests; each task ends with the task id of
/// its reply's receipt, and counts itself in `answered`.
fn fire(url: &str, calls: usize, answered: &Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<String>> {
    let http = reqwest::Client::new();
    (0..calls)
        .map(|_| {
            let (http, url, answered) = (http.clone(), url.to_string(), answered.clone());
            tokio::spawn(async move {
                let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
                let r = http.post(&url).json(&body).send().await.expect("reply");
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
                v["x_agentvisor_route"]["task_id"].as_str().expect("a receipt").to_string()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_receipt_queue_holds_replies_back_counted_and_loses_nothing() {
    const CALLS: usize = 12;
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("ok".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, url, server) = in_process(dir.path(), &fake, 1).await;
    let release = hold_store(&fleet).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let calls = fire(&url, CALLS, &answered);

    // One receipt in the writer's hands, one queued: every other call waits.
    let m = &fleet.services.metrics;
    let backpressure = m.audit_backpressure.with_label_values(&["receipts"]);
    util::poll_until(Duration::from_secs(30), "every call beyond the queue to wait", || {
        backpressure.get() as usize >= CALLS - 2
    })
    .await;
    let early = answered.load(Ordering::SeqCst);
    assert!(early <= 2, "{early} replies went out with the store held; at most 2 × batch = 2 may");

    release.send(()).unwrap();
    let mut replied = BTreeSet::new();
    for c in calls {
        replied.insert(c.await.unwrap());
    }
    fleet.shutdown(Duration::from_secs(10)).await;
    server.abort();
    let rows: BTreeSet<String> = stored(dir.path()).into_iter().collect();
    assert_eq!(rows, replied, "every receipt stored once the store moved");
    assert_eq!(m.audit_rows.with_label_values(&["receipts", "batched"]).get() as usize, CALLS);
    assert_eq!(m.audit_rows.with_label_values(&["receipts", "failed"]).get(), 0);
    let text = m.render();
    assert!(text.contains("agentvisor_audit_backpressure_total{log=\"receipts\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_only_after_every_queued_receipt_is_committed() {
    const CALLS: usize = 40; // fewer than 2 × the batch of 64: all answered with the store held
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("ok".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, url, server) = in_process(dir.path(), &fake, 64).await;
    let release = hold_store(&fleet).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut replied = BTreeSet::new();
    for c in fire(&url, CALLS, &answered) {
        replied.insert(c.await.unwrap());
    }
    // Every reply is out, no receipt is committed yet. Stop the daemon:
    // the router stops, and the stop waits for the receipts.
    let fleet = Arc::new(fleet);
    let stopping = {
        let fleet = fleet.clone();
        tokio::spawn(async move { fleet.shutdown(Duration::from_secs(10)).await })
    };
    util::poll_until(Duration::from_secs(30), "HybridRouter to stop", || fleet.services.router.actor().is_none()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "the stop returned with {CALLS} receipts not committed");
    assert!(stored(dir.path()).is_empty());
    release.send(()).unwrap();
    stopping.await.unwrap();
    // Read at once, from another connection: the stop already committed them.
    let rows: BTreeSet<String> = stored(dir.path()).into_iter().collect();
    assert_eq!(rows, replied);
    server.abort();
}
