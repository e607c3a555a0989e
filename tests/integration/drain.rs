//! The graceful drain of the real daemon binary: SIGTERM while slow tasks
//! run and wait in the queue. Accepted tasks that finish within
//! `supervisor.drain_timeout_secs` are answered `ok`, the rest
//! `shutting_down`, a task sent while draining is refused `shutting_down`,
//! every task gets exactly one reply, the process exits 0 within the drain
//! and shutdown deadlines, and no child process (the Executor and the
//! snippets it runs) is left behind.
//!
//! Also the helpers the chaos loop (`chaos.rs`) shares: the profile, a
//! daemon on free bus ports, process descendants.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zeromq::{Socket, SocketRecv, SubSocket};

use crate::util::{self, Daemon, dealer, recv_json_within, send_json};

/// The drain in this test, seconds (`supervisor.drain_timeout_secs`).
const DRAIN_SECS: f64 = 2.0;

/// The shutdown deadline in this test, seconds (`supervisor.shutdown_deadline_secs`).
const SHUTDOWN_DEADLINE_SECS: f64 = 5.0;

/// What the exit may take beyond the drain and the shutdown deadline: the
/// supervisors' and the HTTP server's own stops.
const EXIT_SLACK_SECS: f64 = 5.0;

/// Short `utils.sleep` tasks: they finish within the drain.
const SHORT: usize = 40;

/// Long `utils.sleep` tasks (60 s): the drain abandons them.
const LONG: usize = 3;

/// `code.execute` snippets running `sleep 30` (the Executor's `max_concurrency`).
const SNIPPETS: usize = 4;

/// The profile of the drain and chaos tests: RequestCoordinator (the bus),
/// UnifiedUtilsAgent and the Executor, with their dependencies.
pub(crate) fn profile() -> String {
    util::fixture("bus_utils_exec.yaml").display().to_string()
}

/// `agentvisor run --profile bus_utils_exec.yaml` in the project root with
/// `data` as data dir, both bus sockets on free ports and the extra `--set`
/// overrides `sets`, once ready: the daemon and its ROUTER endpoint.
pub(crate) async fn start(data: &Path, sets: &[String]) -> (Daemon, String) {
    let (d, ingress, _) = Daemon::with_bus(&profile(), data, sets, &[]).await;
    (d, ingress)
}

/// `POST /agents/NAME/start`: the agent's record once it runs.
pub(crate) async fn start_agent(d: &Daemon, name: &str) -> Value {
    let (status, body) = d.post(&format!("/agents/{name}/start"), json!({})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("running")), "start {name}: {body}");
    body
}

/// The parent pid of every process, from `/proc/PID/stat`.
fn parents() -> HashMap<u32, u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Every live descendant of `pid` (children, grandchildren, ...).
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let parents = parents();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (&child, _) in parents.iter().filter(|&(_, &parent)| parent == p) {
            if util::pid_alive(child) {
                found.push(child);
            }
            frontier.push(child);
        }
    }
    found.sort_unstable();
    found
}

/// The command name of `pid` (`/proc/PID/comm`), or `""` when it is gone.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// `GET /health`, or `None` when the daemon no longer answers (it exited).
async fn health(d: &Daemon) -> Option<Value> {
    let r = d.http.get(format!("{}/health", d.base)).timeout(Duration::from_secs(2)).send().await.ok()?;
    r.json().await.ok()
}

/// The next event on `sub` (a `[topic][json]` message) within `wait`.
async fn next_event(sub: &mut SubSocket, wait: Duration) -> Option<Value> {
    let msg = tokio::time::timeout(wait, sub.recv()).await.ok()?.ok()?;
    serde_json::from_slice(msg.into_vec().get(1)?).ok()
}

/// A SUB socket on `events` for the topics `prefixes`, once it gets events:
/// probes with `utils.echo` tasks over `sock` until one shows up (the
/// subscription reaches the PUB side some time after the connect).
async fn subscribe(events: &str, prefixes: &[&str], sock: &mut zeromq::DealerSocket) -> SubSocket {
    let mut sub = SubSocket::new();
    sub.connect(events).await.expect("connect to the PUB socket");
    for p in prefixes {
        sub.subscribe(p).await.expect("subscribe");
    }
    for n in 0..100 {
        let r = util::ask(sock, json!({"id": format!("probe-{n}"), "type": "utils.echo", "input": n})).await;
        assert_eq!(r["status"], "ok", "{r}");
        if next_event(&mut sub, Duration::from_millis(100)).await.is_some() {
            while next_event(&mut sub, Duration::from_millis(100)).await.is_some() {}
            return sub;
        }
    }
    panic!("the SUB socket never got an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_accepted_tasks_answers_each_once_and_leaves_no_child() {
    let data = tempfile::tempdir().unwrap();
    let sets = [
        format!("supervisor.drain_timeout_secs={DRAIN_SECS}"),
        format!("supervisor.shutdown_deadline_secs={SHUTDOWN_DEADLINE_SECS}"),
        // The snippets' own wall-clock limit stays out of the way: the drain ends them.
        "executor.timeout_secs=120".to_string(),
    ];
    let (mut d, ingress) = start(data.path(), &sets).await;
    let (_, h) = d.get_json("/health").await;
    let events = h["bus"]["events"].as_str().expect("bus.events in /health").to_string();
    start_agent(&d, "UnifiedUtilsAgent").await;
    let executor = start_agent(&d, "Executor").await["pid"].as_u64().expect("the Executor's pid") as u32;
    assert!(util::pid_alive(executor));
    let mut sock = dealer(&ingress).await;
    let mut sub = subscribe(&events, &["task.accepted", "fleet.drain"], &mut sock).await;

    // The mix, over one DEALER: the long ones first, so they hold their
    // agents' slots while the short ones queue behind them.
    let mut kinds: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..LONG {
        let id = format!("long-{i}");
        send_json(&mut sock, &json!({"id": id, "type": "utils.sleep", "input": 60})).await;
        kinds.insert(id, "long");
    }
    for i in 0..SNIPPETS {
        let id = format!("exec-{i}");
        let input = json!({"language": "sh", "code": "sleep 30"});
        send_json(&mut sock, &json!({"id": id, "type": "code.execute", "input": input})).await;
        kinds.insert(id, "exec");
    }
    for i in 0..SHORT {
        let id = format!("short-{i}");
        send_json(&mut sock, &json!({"id": id, "type": "utils.sleep", "input": {"seconds": 0.3}})).await;
        kinds.insert(id, "short");
    }
    let sent = kinds.len();

    // Every task accepted (its `task.accepted` event), and the snippets'
    // `sleep 30` processes running under the Executor.
    let mut accepted = 0;
    while accepted < sent {
        let e = next_event(&mut sub, Duration::from_secs(10)).await;
        let e = e.unwrap_or_else(|| panic!("only {accepted} of {sent} tasks accepted"));
        assert_eq!(e["topic"], "task.accepted", "{e}");
        assert!(kinds.contains_key(e["id"].as_str().unwrap_or("")), "{e}");
        accepted += 1;
    }
    let until = Instant::now() + Duration::from_secs(20);
    let snippets = loop {
        let below = descendants(executor);
        if below.iter().filter(|p| comm(**p) == "sleep").count() == SNIPPETS {
            break below;
        }
        assert!(Instant::now() < until, "the snippets' sleeps never all ran; under the Executor: {below:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let signalled = Instant::now();
    let pid = nix::unistd::Pid::from_raw(d.child.id().expect("daemon pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");

    // While draining (the long tasks hold the drain open for its whole
    // timeout), /health says so and a new task is refused `shutting_down`.
    let mut saw_draining = false;
    while signalled.elapsed() < Duration::from_secs_f64(DRAIN_SECS) {
        match health(&d).await {
            Some(h) if h["admission"] == "draining" => {
                assert_eq!(h["status"], "draining", "{h}");
                saw_draining = true;
                break;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            None => break,
        }
    }
    let late_reply = if saw_draining {
        let mut late = dealer(&ingress).await;
        send_json(&mut late, &json!({"id": "late", "type": "utils.echo", "input": "too late"})).await;
        Some(recv_json_within(&mut late, Duration::from_secs(10)).await)
    } else {
        eprintln!("the daemon was not seen draining (it stopped answering HTTP first); no late task sent");
        None
    };

    // Every task sent is answered once: collect until all are, then wait
    // for the exit and take whatever else arrived (a second reply would).
    let mut replies: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let bound = Duration::from_secs_f64(DRAIN_SECS + SHUTDOWN_DEADLINE_SECS + EXIT_SLACK_SECS);
    let mut take = |msg: zeromq::ZmqMessage| {
        let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("a body frame");
        let r: Value = serde_json::from_slice(&body).expect("a JSON reply");
        replies.entry(r["id"].as_str().unwrap_or("?").to_string()).or_default().push(r);
    };
    for _ in 0..sent {
        let left = bound.saturating_sub(signalled.elapsed());
        let Ok(Ok(msg)) = tokio::time::timeout(left, sock.recv()).await else { break };
        take(msg);
    }
    let left = bound.saturating_sub(signalled.elapsed());
    let status = tokio::time::timeout(left, d.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the daemon did not exit within {bound:?} of SIGTERM"))
        .expect("wait");
    let exited = signalled.elapsed();
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(300), sock.recv()).await {
        take(msg);
    }
    eprintln!("exit {status:?} {exited:?} after SIGTERM (bound {bound:?})");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited >= Duration::from_secs_f64(DRAIN_SECS),
        "the drain waits its {DRAIN_SECS} s for the long tasks; exited after {exited:?}"
    );

    let unanswered: Vec<&String> = kinds.keys().filter(|id| !replies.contains_key(*id)).collect();
    assert!(unanswered.is_empty(), "tasks never answered: {unanswered:?}");
    let twice: Vec<(&String, &Vec<Value>)> = replies.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(twice.is_empty(), "tasks answered more than once: {twice:?}");
    let strangers: Vec<&String> = replies.keys().filter(|id| !kinds.contains_key(*id)).collect();
    assert!(strangers.is_empty(), "replies to tasks never sent: {strangers:?}");
    for (id, kind) in &kinds {
        let r = &replies[id][0];
        if *kind == "short" {
            assert_eq!(r["status"], "ok", "{id} finishes within the drain: {r}");
            assert_eq!(r["output"]["slept_seconds"], 0.3, "{r}");
        } else {
            assert_eq!(r["status"], "error", "{id} outlives the drain: {r}");
            assert_eq!(r["error"]["code"], "shutting_down", "{id}: {r}");
        }
    }
    if let Some(r) = late_reply {
        assert_eq!((r["id"].as_str(), r["status"].as_str()), (Some("late"), Some("error")), "{r}");
        assert_eq!(r["error"]["code"], "shutting_down", "a task sent while draining: {r}");
    }
    // The drain's own account: what was in flight at SIGTERM finished or
    // was abandoned (the long ones and the snippets).
    let draining = next_event(&mut sub, Duration::from_secs(1)).await.expect("fleet.draining");
    let drained = next_event(&mut sub, Duration::from_secs(1)).await.expect("fleet.drained");
    assert_eq!(
        (draining["topic"].as_str(), drained["topic"].as_str()),
        (Some("fleet.draining"), Some("fleet.drained"))
    );
    assert_eq!(draining["deadline_secs"], DRAIN_SECS, "{draining}");
    assert_eq!(drained["abandoned"], LONG + SNIPPETS, "{drained}");
    assert_eq!(draining["in_flight"], drained["finished"].as_u64().unwrap() + drained["abandoned"].as_u64().unwrap());
    assert!(
        draining["in_flight"].as_u64().unwrap() > (LONG + SNIPPETS) as u64,
        "short tasks were in flight: {draining}"
    );

    // No process left: the Executor, the snippets' shells and their sleeps.
    let mut gone = vec![executor];
    gone.extend(&snippets);
    util::poll_until(Duration::from_secs(2), "the Executor and its snippets to be gone", || {
        gone.iter().all(|p| !util::pid_alive(*p))
    })
    .await;
}

/// A second SIGTERM during the drain stops the daemon at once (exit 130),
/// as users of service managers expect of a second stop signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    // A drain long enough that only the second signal can end it in time.
    let (mut d, ingress) = start(data.path(), &["supervisor.drain_timeout_secs=60".to_string()]).await;
    start_agent(&d, "UnifiedUtilsAgent").await;
    let mut sock = dealer(&ingress).await;
    send_json(&mut sock, &json!({"id": "long", "type": "utils.sleep", "input": 60})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&d).await.is_none_or(|h| h["bus"]["running"] != 1) {
        assert!(Instant::now() < deadline, "the task never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(d.child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&d).await.is_some_and(|h| h["admission"] != "draining") {
        assert!(Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), d.child.wait()).await.expect("exits").unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
}
