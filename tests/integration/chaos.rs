//! The chaos loop against the real daemon binary: senders keep windows of
//! tasks in flight (mostly `utils.echo` carrying their own id, some short
//! `utils.sleep`s and `code.execute` snippets) while a fault injector,
//! seeded, restarts agents (operator restarts), makes agents and the
//! infrastructure components panic, and SIGKILLs the Executor's child
//! process. Every reply is matched by id: nothing accepted is lost, nothing
//! is answered twice, and the daemon is healthy afterwards and exits 0.
//! Also a dispatcher in a crash loop (failing at the start of every run) is
//! restarted after each failure.
//!
//! Sizes from the environment (CI-safe defaults): `CHAOS_TASKS` (5000),
//! `CHAOS_FAULTS` (60), `CHAOS_SEED` (random, printed). `scripts/chaos.sh`
//! runs this test with big numbers. The last line of the output is the
//! report: `chaos report: {"tasks", "faults", "answered", "ok", "errors",
//! "lost", "duplicated", "seconds", "seed", ...}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use zeromq::{SocketRecv, ZmqMessage};

use crate::drain::{start, start_agent};
use crate::util::{self, Daemon, dealer, send_json};

/// DEALER sockets sending at once.
const SOCKETS: usize = 4;

/// Tasks in flight per socket.
const WINDOW: usize = 32;

/// How long a socket waits for a reply before it counts the rest lost.
const GRACE: Duration = Duration::from_secs(20);

/// How long a fault's target may refuse it (restarting) before the
/// injector gives up: restarts take milliseconds, the backoff at most 0.5 s.
const STUCK: Duration = Duration::from_secs(10);

/// How long the daemon may take to exit after SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(40);

/// One fault the injector can cause.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `POST /agents/NAME/restart`.
    Restart(&'static str),
    /// `POST /agents/NAME/fault {"kind": "panic"}` (an agent or an infrastructure component).
    Panic(&'static str),
    /// SIGKILL of the Executor's child process.
    KillExecutor,
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::Restart(a) => format!("restart {a}"),
            Fault::Panic(a) => format!("panic {a}"),
            Fault::KillExecutor => "kill Executor".into(),
        }
    }
}

const FAULTS: [Fault; 8] = [
    Fault::Restart("UnifiedUtilsAgent"),
    Fault::Restart("RequestCoordinator"),
    Fault::Restart("ObservabilityHub_PC2"),
    Fault::Panic("UnifiedUtilsAgent"),
    Fault::KillExecutor,
    Fault::Panic("HybridRouter"),
    Fault::Panic("ModelScheduler"),
    Fault::Panic("BusDispatcher"),
];

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// What an `ok` reply's output must be.
enum Want {
    /// Exactly this.
    Exactly(Value),
    /// An object with at least these fields.
    Fields(Value),
}

impl Want {
    fn met_by(&self, output: &Value) -> bool {
        match self {
            Want::Exactly(v) => output == v,
            Want::Fields(v) => v.as_object().is_some_and(|f| f.iter().all(|(k, v)| output.get(k) == Some(v))),
        }
    }
}

/// Task `k`: its envelope and what its `ok` reply carries. Mostly
/// `utils.echo` of an input holding the id, at every priority; every 50th a
/// short `utils.sleep`, every 250th a `code.execute` snippet (the Executor).
fn task(k: usize) -> (Value, Want) {
    let id = format!("c-{k}");
    if k % 50 == 7 {
        let envelope = json!({"id": id, "type": "utils.sleep", "input": {"seconds": 0.02}});
        (envelope, Want::Exactly(json!({"slept_seconds": 0.02})))
    } else if k % 250 == 11 {
        let input = json!({"language": "sh", "code": format!("echo {id}")});
        let envelope = json!({"id": id, "type": "code.execute", "input": input});
        (envelope, Want::Fields(json!({"stdout": format!("{id}\n"), "exit_code": 0})))
    } else {
        let input = json!({"id": id, "k": k});
        (json!({"id": id, "type": "utils.echo", "input": input, "priority": k % 10}), Want::Exactly(input))
    }
}

/// Shared between the senders and the fault injector.
struct Progress {
    /// The next task number to send.
    next: AtomicUsize,
    /// Tasks sent so far.
    sent: AtomicUsize,
    /// Faults injected so far.
    faults: AtomicUsize,
    /// Every sender finished.
    done: AtomicBool,
    /// Tasks in all.
    tasks: usize,
    /// Faults in all.
    faults_total: usize,
    /// Tasks between two faults.
    segment: usize,
}

impl Progress {
    /// Task `k` may go out: the sender runs at most one segment past the
    /// point where the next pending fault is due, so faults land while
    /// tasks are in flight whatever their speed; free once every fault is in.
    fn may_send(&self, k: usize) -> bool {
        let faults = self.faults.load(Ordering::Acquire);
        faults >= self.faults_total || k < (faults + 2) * self.segment
    }
}

/// What one socket saw.
#[derive(Default)]
struct Tally {
    sent: usize,
    /// Replies per id.
    answered: HashMap<String, usize>,
    ok: usize,
    errors: BTreeMap<String, usize>,
    /// `ok` replies whose output is not what the task asked for.
    mismatched: Vec<Value>,
    /// Replies whose id this socket never sent.
    misrouted: Vec<Value>,
    /// Ids sent and never answered.
    lost: Vec<String>,
    /// When the last reply was counted.
    finished: Option<Instant>,
}

/// One DEALER: keeps up to [`WINDOW`] tasks in flight until every task is
/// sent, then waits for the answers ([`GRACE`] without any counts the rest
/// lost), then listens a little longer for second replies.
async fn drive(endpoint: String, p: Arc<Progress>) -> Tally {
    let mut sock = dealer(&endpoint).await;
    let mut expected: HashMap<String, Want> = HashMap::new();
    let mut t = Tally::default();
    let mut last_reply = Instant::now();
    let count = |t: &mut Tally, expected: &HashMap<String, Want>, msg: ZmqMessage| {
        let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("a body frame");
        let r: Value = serde_json::from_slice(&body).expect("a JSON reply");
        let id = r["id"].as_str().unwrap_or("").to_string();
        let Some(want) = expected.get(&id) else {
            t.misrouted.push(r);
            return;
        };
        *t.answered.entry(id).or_default() += 1;
        match r["status"].as_str() {
            Some("ok") if want.met_by(&r["output"]) => t.ok += 1,
            Some("ok") => t.mismatched.push(r),
            _ => *t.errors.entry(r["error"]["code"].as_str().unwrap_or("?").to_string()).or_default() += 1,
        }
    };
    loop {
        let in_flight = t.sent - t.answered.len();
        let next = p.next.load(Ordering::Acquire);
        if next < p.tasks && in_flight < WINDOW && p.may_send(next) {
            let k = p.next.fetch_add(1, Ordering::AcqRel);
            if k < p.tasks {
                let (envelope, want) = task(k);
                expected.insert(envelope["id"].as_str().expect("id").to_string(), want);
                send_json(&mut sock, &envelope).await;
                t.sent += 1;
                p.sent.fetch_add(1, Ordering::AcqRel);
                continue;
            }
        }
        if next >= p.tasks && in_flight == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(20), sock.recv()).await {
            Ok(msg) => {
                count(&mut t, &expected, msg.expect("recv"));
                last_reply = Instant::now();
                t.finished = Some(last_reply);
            }
            Err(_) if in_flight > 0 && last_reply.elapsed() > GRACE => break,
            Err(_) => {}
        }
    }
    // Second replies would come soon after the first: listen a little more.
    while let Ok(msg) = tokio::time::timeout(Duration::from_millis(500), sock.recv()).await {
        count(&mut t, &expected, msg.expect("recv"));
    }
    t.lost = expected.keys().filter(|id| !t.answered.contains_key(*id)).cloned().collect();
    t.lost.sort();
    t
}

/// POST with a JSON body and a timeout: (status, body), or `None` when
/// the request failed.
async fn post(d: &Daemon, path: &str, body: Value) -> Option<(u16, Value)> {
    let r = d.http.post(format!("{}{path}", d.base)).json(&body).timeout(Duration::from_secs(15)).send().await;
    let r = r.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// GET as JSON with a timeout; `null` when the request failed.
async fn get(d: &Daemon, path: &str) -> Value {
    match d.http.get(format!("{}{path}", d.base)).timeout(Duration::from_secs(15)).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Causes `fault` once; `Err(why)` when it cannot right now (the target is
/// restarting).
async fn inject(d: &Daemon, fault: Fault) -> Result<(), String> {
    match fault {
        Fault::Restart(agent) => match post(d, &format!("/agents/{agent}/restart"), json!({})).await {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
        Fault::Panic(target) => match post(d, &format!("/agents/{target}/fault"), json!({"kind": "panic"})).await {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
        Fault::KillExecutor => {
            let a = get(d, "/agents/Executor").await;
            match (a["state"].as_str(), a["pid"].as_u64()) {
                (Some("running"), Some(pid)) => {
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).map_err(|e| e.to_string())
                }
                (Some("dormant" | "stopped"), _) => {
                    // Not restarted on its own (it stopped cleanly): start it.
                    let _ = post(d, "/agents/Executor/start", json!({})).await;
                    Err(format!("Executor was {}", a["state"]))
                }
                _ => Err(format!("Executor is {}", a["state"])),
            }
        }
    }
}

/// What the fault injector did.
#[derive(Default)]
struct Injected {
    /// Injections by kind.
    kinds: BTreeMap<String, usize>,
    /// Panics repeated as soon as their target accepted them again (it
    /// fails right after its restart: a crash loop).
    crash_loops: usize,
    /// Every injection: tasks sent by then, what, seconds since the start.
    timeline: Vec<(usize, String, f64)>,
    /// Why the injector stopped early: a target refused its fault for
    /// [`STUCK`].
    stuck: Option<String>,
}

/// Injects `faults` faults drawn from [`FAULTS`] with a generator seeded
/// by `seed`, each when the senders reach its (jittered) share of the
/// tasks. A fault whose target is restarting is retried; one panic in four
/// is repeated at once (a crash loop).
async fn inject_faults(d: &Daemon, p: &Progress, faults: usize, seed: u64, t0: Instant) -> Injected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = Injected::default();
    let mut j = 0;
    while j < faults {
        let jitter = rng.random_range(0..p.segment.div_ceil(2).max(1));
        let due = ((j + 1) * p.segment).saturating_sub(jitter);
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let times = if matches!(fault, Fault::Panic(_)) && rng.random_range(0..4) == 0 { 2 } else { 1 };
        while p.sent.load(Ordering::Acquire) < due && !p.done.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for _ in 0..times {
            let since = Instant::now();
            while let Err(why) = inject(d, fault).await {
                if since.elapsed() > STUCK {
                    let health = get(d, "/health").await;
                    let what = fault.name();
                    done.stuck = Some(format!("fault {j} ({what}) refused for {STUCK:?}: {why}; /health: {health}"));
                    p.faults.store(p.faults_total, Ordering::Release); // free the senders
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            *done.kinds.entry(fault.name()).or_default() += 1;
            done.timeline.push((p.sent.load(Ordering::Acquire), fault.name(), t0.elapsed().as_secs_f64()));
            j += 1;
            p.faults.fetch_add(1, Ordering::AcqRel);
        }
        done.crash_loops += times - 1;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loop_loses_and_duplicates_nothing() {
    let tasks: usize = env_number("CHAOS_TASKS", 5000);
    let faults: usize = env_number("CHAOS_FAULTS", 60);
    let seed: u64 = env_number("CHAOS_SEED", rand::random());
    eprintln!("chaos: {tasks} tasks, {faults} faults, seed {seed} (rerun with CHAOS_SEED={seed})");

    let data = tempfile::tempdir().unwrap();
    let sets = [
        "testing.fault_injection=true".to_string(),
        // Many restarts in a short time is the point: no agent or component gives up...
        "supervisor.max_restarts=100000".to_string(),
        // ...and the backoff between restarts stays short.
        "supervisor.backoff_max_secs=0.5".to_string(),
    ];
    let (mut d, ingress) = start(data.path(), &sets).await;
    start_agent(&d, "UnifiedUtilsAgent").await;
    start_agent(&d, "Executor").await;

    let p = Arc::new(Progress {
        next: AtomicUsize::new(0),
        sent: AtomicUsize::new(0),
        faults: AtomicUsize::new(0),
        done: AtomicBool::new(false),
        tasks,
        faults_total: faults,
        segment: (tasks / (faults + 1)).max(1),
    });
    let t0 = Instant::now();
    let senders: Vec<_> = (0..SOCKETS).map(|_| tokio::spawn(drive(ingress.clone(), p.clone()))).collect();
    let collect = async {
        let mut tallies = Vec::new();
        for s in senders {
            tallies.push(s.await.expect("a sender panicked"));
        }
        p.done.store(true, Ordering::Release);
        tallies
    };
    let injector = inject_faults(&d, &p, faults, seed, t0);
    // A watchdog: a hang fails the test with where it stood.
    let limit = Duration::from_secs(120 + tasks as u64 / 100 + faults as u64);
    let Ok((injected, tallies)) = tokio::time::timeout(limit, async { tokio::join!(injector, collect) }).await else {
        let (sent, injected) = (p.sent.load(Ordering::Acquire), p.faults.load(Ordering::Acquire));
        panic!("the chaos loop did not end within {limit:?}: {sent} tasks sent, {injected} faults; seed {seed}");
    };
    let finished = tallies.iter().filter_map(|t| t.finished).max().unwrap_or(t0);

    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tallies {
        for (code, n) in &t.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
    }
    let sum = |f: fn(&Tally) -> usize| tallies.iter().map(f).sum::<usize>();
    let report = json!({
        "tasks": sum(|t| t.sent),
        "faults": injected.kinds.values().sum::<usize>(),
        "answered": sum(|t| t.answered.len()),
        "ok": sum(|t| t.ok),
        "errors": errors,
        "lost": sum(|t| t.lost.len()),
        "duplicated": sum(|t| t.answered.values().filter(|n| **n > 1).count()),
        "mismatched": sum(|t| t.mismatched.len()),
        "misrouted": sum(|t| t.misrouted.len()),
        "seconds": (finished - t0).as_secs_f64(),
        "seed": seed,
        "fault_kinds": injected.kinds,
        "crash_loops": injected.crash_loops,
    });
    println!("chaos report: {report}");

    let stuck = injected.stuck.as_deref().unwrap_or("none");
    let mut lost: Vec<usize> =
        tallies.iter().flat_map(|t| &t.lost).filter_map(|id| id.strip_prefix("c-")?.parse().ok()).collect();
    lost.sort_unstable();
    // The faults around the first lost task (task numbers go out in order).
    let near: Vec<&(usize, String, f64)> = lost.first().map_or(vec![], |&k| {
        let span = 3 * SOCKETS * WINDOW;
        injected.timeline.iter().filter(|(at, _, _)| at + span >= k && *at <= k + span).collect()
    });
    assert!(
        lost.is_empty(),
        "{} tasks never answered, first c-{:?}, last c-{:?}; faults near the first (tasks sent by then, fault, \
         seconds): {near:?}; fault injector stopped: {stuck}; seed {seed}",
        lost.len(),
        lost.first(),
        lost.last()
    );
    let twice: Vec<&String> =
        tallies.iter().flat_map(|t| t.answered.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id)).take(20).collect();
    assert_eq!(report["duplicated"], 0, "tasks answered more than once (first 20): {twice:?}; seed {seed}");
    let wrong: Vec<&Value> = tallies.iter().flat_map(|t| t.mismatched.iter().chain(&t.misrouted)).take(5).collect();
    assert!(wrong.is_empty(), "replies that do not match their task: {wrong:?}; seed {seed}");
    assert!(injected.stuck.is_none(), "the fault injector stopped: {stuck}; seed {seed}");
    assert_eq!(report["tasks"], tasks, "every task was sent");
    assert_eq!(report["answered"], tasks);
    assert!(report["faults"].as_u64().unwrap() >= faults as u64, "{report}");

    // Still healthy: every infrastructure component back to running, and
    // the bus still answers.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = d.get_json("/health").await;
        let infra = h["infrastructure"].as_object().expect("infrastructure in /health");
        if h["status"] == "ok" && infra.len() == 3 && infra.values().all(|c| c["state"] == "running") {
            break;
        }
        assert!(Instant::now() < until, "not healthy after the chaos: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sock = dealer(&ingress).await;
    let r = util::ask(&mut sock, json!({"id": "after", "type": "utils.echo", "input": "still here"})).await;
    assert_eq!((r["status"].as_str(), r["output"].as_str()), (Some("ok"), Some("still here")), "{r}");

    let status = d.terminate(EXIT_WITHIN).await;
    assert!(status.success(), "exit status after the chaos: {status:?}");
}

/// A dispatcher that fails again right at the start of each restarted run
/// (a crash loop: its panics queued at once in the command channel, which
/// outlives it) is restarted after every failure: /health counts each
/// restart and the bus answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_dispatcher_is_restarted_after_every_failure() {
    const LOOPS: u64 = 50;
    let data = tempfile::tempdir().unwrap();
    let sets = [
        "testing.fault_injection=true".to_string(),
        "supervisor.max_restarts=100000".to_string(),
        "supervisor.backoff_max_secs=0.05".to_string(),
    ];
    let (mut d, ingress) = start(data.path(), &sets).await;
    start_agent(&d, "UnifiedUtilsAgent").await;
    for n in 0..LOOPS {
        inject(&d, Fault::Panic("BusDispatcher")).await.unwrap_or_else(|e| panic!("fault {n} refused: {e}"));
    }
    let until = Instant::now() + STUCK;
    loop {
        let h = get(&d, "/health").await;
        let c = &h["infrastructure"]["BusDispatcher"];
        if c["state"] == "running" && c["restarts"].as_u64() >= Some(LOOPS) {
            break;
        }
        assert!(Instant::now() < until, "{LOOPS} failures, yet: {}", h["infrastructure"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sock = dealer(&ingress).await;
    send_json(&mut sock, &json!({"id": "after", "type": "utils.echo", "input": "still here"})).await;
    let r = tokio::time::timeout(Duration::from_secs(10), sock.recv()).await;
    let h = get(&d, "/health").await;
    let r = r.unwrap_or_else(|_| panic!("the bus does not answer after the crash loop; /health: {h}")).expect("recv");
    let body = r.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("a body frame");
    let r: Value = serde_json::from_slice(&body).expect("a JSON reply");
    assert_eq!((r["status"].as_str(), r["output"].as_str()), (Some("ok"), Some("still here")), "{r}");
    assert!(d.terminate(EXIT_WITHIN).await.success());
}
