//! Shared helpers of the integration tests: temp catalogs, fleets on real
//! actors, the real daemon binary, event logs, polling with a timeout.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::config::catalog::Catalog;
use agentvisor::config::profile;
use agentvisor::daemon::System;
use agentvisor::events::Published as Event;
use agentvisor::supervisor::Fleet;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `agentvisor` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentvisor"))
}

/// The repo's `models/` with the default model, fetched when missing.
pub fn models_dir() -> PathBuf {
    let dir = root().join("models");
    agentvisor::models::fetch_default(&dir).expect("the default model is in models/ (agentvisor models fetch)");
    dir
}

/// A fixture file under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Settings for an in-process fleet: the repo's catalog and profiles, a
/// temp data dir, a unique actor-name prefix, fault injection on.
pub fn settings(data: &Path) -> Settings {
    let mut s = Settings {
        agents_dir: root().join("agents"),
        profiles_dir: root().join("profiles"),
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    s.http.listen = "127.0.0.1:0".into();
    // No model backend unless a test configures one (the default embedded one
    // would answer LLM tasks with the real model).
    s.backends.clear();
    s.testing.fault_injection = true;
    s.testing.actor_name_prefix = format!("t{}-{}/", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    s
}

/// Starts (not boots) a fleet of `profile` over the catalog at `catalog`
/// (`None`: the repo's).
pub async fn fleet(settings: Settings, catalog: Option<&Path>, profile_name: &str) -> System {
    let catalog = Catalog::load(catalog.unwrap_or(&settings.agents_dir)).expect("catalog loads");
    let spec = profile::load_profile(&settings.profiles_dir, profile_name).expect("profile loads");
    let plan = profile::resolve(&catalog, &spec).expect("profile resolves");
    System::start(settings, catalog, plan).await.expect("fleet starts")
}

/// Writes a catalog folder: each entry is one agent spec in YAML (its
/// `group` decides the folder). Returns the `agents` folder.
pub fn write_catalog(dir: &Path, specs: &[&str]) -> PathBuf {
    let agents = dir.join("agents");
    for text in specs {
        let v: serde_norway::Value = serde_norway::from_str(text).expect("spec yaml");
        let name = v["name"].as_str().expect("name").to_string();
        let group = v["group"].as_str().expect("group").to_string();
        std::fs::create_dir_all(agents.join(&group)).unwrap();
        std::fs::write(agents.join(&group).join(format!("{name}.yaml")), text).unwrap();
    }
    agents
}

/// Sets the strategy of `group` in a catalog written by [`write_catalog`].
pub fn set_strategy(agents: &Path, group: &str, strategy: &str) {
    std::fs::write(agents.join(group).join("_group.yaml"), format!("strategy: {strategy}\n")).unwrap();
}

/// A builtin agent spec.
pub fn builtin(name: &str, group: &str, required: bool, deps: &[&str]) -> String {
    let autoload = if required { "on_startup" } else { "on_demand" };
    format!(
        "name: {name}\ngroup: {group}\nrequired: {required}\nautoload: {autoload}\ndependencies: [{}]\nruntime: {{kind: builtin}}\n",
        deps.join(", ")
    )
}

/// A `jsonl` process agent running `tests/fixtures/jsonl_agent.py` with
/// the given `FIXTURE_*` environment.
pub fn jsonl_agent(
    name: &str,
    group: &str,
    required: bool,
    deps: &[&str],
    env: &[(&str, &str)],
    ready_secs: f64,
) -> String {
    let autoload = if required { "on_startup" } else { "on_demand" };
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}: '{v}'")).collect();
    format!(
        "name: {name}\ngroup: {group}\nrequired: {required}\nautoload: {autoload}\ndependencies: [{}]\n\
         runtime: {{kind: process, protocol: jsonl, command: [python3, '{}'], ready_timeout_secs: {ready_secs}, env: {{{}}}}}\n",
        deps.join(", "),
        fixture("jsonl_agent.py").display(),
        env.join(", ")
    )
}

/// Collects events from a subscription.
pub struct EventLog {
    rx: broadcast::Receiver<Arc<Event>>,
    /// Every event received so far.
    pub seen: Vec<Arc<Event>>,
}

impl EventLog {
    /// Subscribes to `fleet`'s events from now on.
    pub fn new(fleet: &Fleet) -> EventLog {
        EventLog { rx: fleet.ctx().events.subscribe(), seen: Vec::new() }
    }

    /// Waits until an event matches `pred` (checking those seen first);
    /// panics after `timeout`.
    pub async fn wait_for(&mut self, timeout: Duration, what: &str, pred: impl Fn(&Event) -> bool) -> Arc<Event> {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Ok(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("event log lagged by {n}"),
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("event bus closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; seen: {:?}",
                    self.seen.iter().map(|e| format!("{} {:?}", e.topic, e.str("agent"))).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for `topic` about `agent`.
    pub async fn wait_agent(&mut self, topic: &str, agent: &str) -> Arc<Event> {
        self.wait_for(Duration::from_secs(20), &format!("{topic} {agent}"), |e| {
            e.topic == topic && e.str("agent") == Some(agent)
        })
        .await
    }

    /// Takes whatever arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// Topics seen for `agent`, in order.
    pub fn topics_of(&self, agent: &str) -> Vec<&'static str> {
        self.seen.iter().filter(|e| e.str("agent") == Some(agent)).map(|e| e.topic).collect()
    }
}

/// Polls `cond` every 10 ms until true; panics after `timeout`.
pub async fn poll_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `true` while a process with `pid` exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The real daemon binary, started with `args`; killed on drop.
pub struct Daemon {
    /// The child.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Stdout lines after the listening line.
    pub stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Daemon {
    /// Starts `agentvisor ARGS --http-listen 127.0.0.1:0` in `cwd` with
    /// `env`, and waits for its HTTP address.
    pub async fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args)
            .args(["--http-listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("daemon starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("http: listening on ") {
                    return format!("http://{addr}");
                }
            }
            panic!("daemon exited before listening");
        })
        .await
        .expect("daemon listens within 30 s");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        Daemon { child, base, stdout: rx, http: reqwest::Client::new() }
    }

    /// `run --profile PROFILE` (a name or a file) in the repo root with
    /// `data` as data dir, both bus sockets on free ports, the extra
    /// `--set` overrides `sets` and environment `env`, once ready: the daemon
    /// and its ROUTER and PUB endpoints (from `GET /health`).
    pub async fn with_bus(
        profile: &str,
        data: &Path,
        sets: &[String],
        env: &[(&str, &str)],
    ) -> (Daemon, String, String) {
        let mut args = vec![
            "run".to_string(),
            "--profile".into(),
            profile.into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--set".into(),
            "bus.ingress=tcp://127.0.0.1:0".into(),
            "--set".into(),
            "bus.events=tcp://127.0.0.1:0".into(),
        ];
        for kv in sets {
            args.extend(["--set".to_string(), kv.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start(&root(), &args, env).await;
        d.wait_ready().await;
        let (_, health) = d.get_json("/health").await;
        let ingress = health["bus"]["ingress"].as_str().expect("ingress in /health").to_string();
        let events = health["bus"]["events"].as_str().expect("events in /health").to_string();
        (d, ingress, events)
    }

    /// [`Daemon::with_bus`] with the `full` profile.
    pub async fn full_on_free_ports(data: &Path) -> (Daemon, String, String) {
        Daemon::with_bus("full", data, &[], &[]).await
    }

    /// GET `path` as JSON (any status).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("http get");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// GET `path` as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("http get").text().await.expect("text")
    }

    /// POST `path` with a JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("http post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Polls `/ready` until 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get_json("/ready").await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "daemon not ready: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit status (at most `timeout`).
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).expect("kill");
        tokio::time::timeout(timeout, self.child.wait()).await.expect("daemon exits in time").expect("wait")
    }
}

/// [`settings`] with both bus sockets on free ports.
pub fn bus_settings(data: &Path) -> Settings {
    let mut s = settings(data);
    s.bus.ingress = "tcp://127.0.0.1:0".into();
    s.bus.events = "tcp://127.0.0.1:0".into();
    s
}

/// A booted fleet of `profile` (repo catalog) with its bus on free ports,
/// after `tweak` edits the settings; returns it and the ROUTER endpoint.
pub async fn bus_fleet(data: &Path, profile_name: &str, tweak: impl FnOnce(&mut Settings)) -> (System, String) {
    let mut s = bus_settings(data);
    tweak(&mut s);
    let fleet = fleet(s, None, profile_name).await;
    fleet.boot().await;
    let (ingress, _) = fleet.bus_endpoints().expect("bus bound");
    (fleet, ingress)
}

/// A DEALER socket connected to `endpoint`.
pub async fn dealer(endpoint: &str) -> zeromq::DealerSocket {
    use zeromq::Socket;
    let mut s = zeromq::DealerSocket::new();
    s.connect(endpoint).await.expect("connect");
    s
}

/// Sends one message of `frames`.
pub async fn send_frames(s: &mut zeromq::DealerSocket, frames: Vec<bytes::Bytes>) {
    use zeromq::SocketSend;
    s.send(zeromq::ZmqMessage::try_from(frames).expect("frames")).await.expect("send");
}

/// Sends one JSON envelope.
pub async fn send_json(s: &mut zeromq::DealerSocket, v: &serde_json::Value) {
    send_frames(s, vec![bytes::Bytes::from(serde_json::to_vec(v).expect("json"))]).await;
}

/// The next message's body as JSON (a reply or a chunk); panics after 20 s.
pub async fn recv_json(s: &mut zeromq::DealerSocket) -> serde_json::Value {
    recv_json_within(s, Duration::from_secs(20)).await
}

/// The next message's body as JSON; panics after `wait`.
pub async fn recv_json_within(s: &mut zeromq::DealerSocket, wait: Duration) -> serde_json::Value {
    use zeromq::SocketRecv;
    let msg = tokio::time::timeout(wait, s.recv()).await.expect("reply in time").expect("recv");
    let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("body");
    serde_json::from_slice(&body).expect("json reply")
}

/// Sends one envelope and returns the next message.
pub async fn ask(s: &mut zeromq::DealerSocket, v: serde_json::Value) -> serde_json::Value {
    send_json(s, &v).await;
    recv_json(s).await
}

/// Runs the Python interop check `tests/fixtures/<script>` with `args` and
/// returns the JSON report it prints. `None` (skip) when the Python package
/// `module` is missing outside CI; CI installs it and must run the check.
pub async fn python_report(script: &str, args: &[&str], module: &str) -> Option<serde_json::Value> {
    let out =
        tokio::process::Command::new("python3").arg(fixture(script)).args(args).output().await.expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains(&format!("No module named '{module}'")) {
        assert!(std::env::var_os("CI").is_none(), "the Python package {module} is required in CI");
        eprintln!("Python package {module} not installed; skipping (scripts/setup.sh installs it)");
        return None;
    }
    assert!(out.status.success(), "{script} failed: {stderr}");
    Some(serde_json::from_slice(&out.stdout).expect("json report"))
}

/// A `code.execute` envelope: `code` in `language` (`python` or `sh`).
pub fn exec_task(id: &str, language: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "type": "code.execute", "input": {"language": language, "code": code}})
}

/// The output of an `ok` Executor reply.
#[track_caller]
pub fn exec_output(reply: &serde_json::Value) -> &serde_json::Value {
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["agent"], "Executor", "{reply}");
    &reply["output"]
}

/// Serves `fleet`'s HTTP routes on a free loopback port until the test
/// ends: the base URL (`http://127.0.0.1:PORT`) and the server task.
pub async fn serve_http(fleet: &System) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = agentvisor::http::router(fleet.http_app());
    (base, tokio::spawn(agentvisor::http::serve(listener, router, std::future::pending())))
}
