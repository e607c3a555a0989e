//! The `process` runtime: an external program under supervision.
//!
//! Start: the command (the catalog's `runtime.command`, or
//! `agent_commands.<Agent>` from the settings) runs in its own process group
//! in the project root, with `AGENT_NAME`, `AGENT_PORT` and
//! `HEALTH_CHECK_PORT` set. A program that cannot be found, or an empty
//! command, makes the agent `unavailable` (no restart loop).
//!
//! Readiness: `jsonl` programs print `{"ready": true}` (or
//! `{"unavailable": "reason"}` and exit); `compat` programs answer
//! `GET http://127.0.0.1:<health_port>/health` with 200. The wait ends at
//! `ready_timeout_secs` or the start deadline, whichever comes first.
//!
//! Running: a watcher task owns the child and tells the actor when it exits
//! (exit = crash). stderr lines go to the log; `jsonl` stdout lines are
//! replies routed by `id`.
//!
//! Stop: SIGTERM to the process group, `shutdown_timeout_secs` to exit, then
//! SIGKILL to the group. Dropping a [`ProcessChild`] SIGKILLs the group, so no
//! path leaves an orphan; children also get SIGKILL if the daemon dies
//! (`PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use ractor::{ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::spec::{AgentSpec, ProcessProtocol, RuntimeSpec};
use crate::core::{ErrorCode, Task, TaskError, TaskReply};
use crate::supervisor::AgentTable;
use crate::supervisor::{AgentMsg, StartError};

/// A task waiting for the child's answer, and the watcher that cancels it.
struct Waiting {
    reply: RpcReplyPort<TaskReply>,
    watcher: tokio::task::AbortHandle,
}

type Pending = Arc<Mutex<HashMap<String, Waiting>>>;

/// Takes a waiting task out of `pending`, stopping its cancel watcher.
fn take(pending: &Pending, id: &str) -> Option<RpcReplyPort<TaskReply>> {
    pending.lock().remove(id).map(|w| {
        w.watcher.abort();
        w.reply
    })
}

/// A running child program of a process agent.
pub struct ProcessChild {
    agent: String,
    pid: u32,
    /// Cleared by the watcher when the child has exited and been reaped.
    alive: Arc<AtomicBool>,
    /// Asks the watcher to stop the child (grace period).
    stop_tx: Option<oneshot::Sender<Duration>>,
    /// Resolves when the watcher is done.
    done_rx: Option<oneshot::Receiver<()>>,
    /// Lines to the child's stdin (`jsonl`).
    stdin_tx: Option<mpsc::Sender<String>>,
    pending: Pending,
}

impl ProcessChild {
    /// Starts the program of `spec` and waits until it is ready.
    ///
    /// # Errors
    /// [`StartError::Unavailable`] (no command, program not found, the
    /// program said so), [`StartError::Timeout`] (the start deadline passed
    /// before readiness), [`StartError::Failed`] (exited before ready, not
    /// ready within `ready_timeout_secs`, spawn error).
    pub async fn start(
        spec: &AgentSpec,
        ctx: &Arc<AgentTable>,
        actor: ActorRef<AgentMsg>,
        deadline: Option<Instant>,
    ) -> Result<ProcessChild, StartError> {
        let RuntimeSpec::Process { command, protocol, ready_timeout_secs, env, cwd, health_port, unconfigured_reason } =
            &spec.runtime
        else {
            return Err(StartError::Failed { agent: spec.name.clone(), reason: "not a process agent".into() });
        };
        let t0 = Instant::now();
        let agent = spec.name.clone();
        let command = ctx.settings.agent_commands.get(&agent).unwrap_or(command);
        let Some((program, args)) = command.split_first() else {
            let reason = unconfigured_reason
                .clone()
                .unwrap_or_else(|| format!("no command configured: set agent_commands.{agent} in agentvisor.yaml"));
            return Err(StartError::Unavailable { agent, reason });
        };
        let root = ctx.catalog.root.clone();
        let workdir = cwd.as_ref().map(|c| root.join(c)).unwrap_or(root);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&workdir)
            .envs(env)
            .envs(ctx.settings.process_env(&agent))
            .env("AGENT_NAME", &agent)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(port) = spec.port {
            cmd.env("AGENT_PORT", port.to_string());
        }
        if let Some(port) = health_port {
            cmd.env("HEALTH_CHECK_PORT", port.to_string());
        }
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe,
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                StartError::Unavailable { agent: agent.clone(), reason: format!("program not found: {program}") }
            }
            _ => StartError::Failed { agent: agent.clone(), reason: format!("cannot run {program}: {e}") },
        })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(agent, pid, program, "child process started");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stdin = child.stdin.take();
        let alive = Arc::new(AtomicBool::new(true));
        let (exit_tx, exit_rx) = watch::channel::<Option<String>>(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        ctx.metrics.children.inc();
        tokio::spawn(watch_child(child, agent.clone(), actor, stop_rx, exit_tx, done_tx, alive.clone(), ctx.clone()));
        if let Some(stderr) = stderr {
            let agent = agent.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(agent, stream = "stderr", "{line}");
                }
            });
        }
        let mut this = ProcessChild {
            agent: agent.clone(),
            pid,
            alive,
            stop_tx: Some(stop_tx),
            done_rx: Some(done_rx),
            stdin_tx: None,
            pending: Arc::new(Mutex::new(HashMap::new())),
        };
        let ready_limit = Duration::from_secs_f64(ready_timeout_secs.max(0.0));
        let by_ready = t0 + ready_limit;
        let (limit, deadline_first) = match deadline {
            Some(d) if d < by_ready => (d, true),
            _ => (by_ready, false),
        };
        let mut stdout_lines = stdout.map(|s| BufReader::new(s).lines());
        let ready = match protocol {
            ProcessProtocol::Jsonl => match stdout_lines.as_mut() {
                Some(lines) => {
                    tokio::time::timeout_at(limit.into(), wait_jsonl_ready(&agent, lines, exit_rx.clone())).await
                }
                None => Ok(Err(StartError::Failed { agent: agent.clone(), reason: "no stdout".into() })),
            },
            ProcessProtocol::Compat => {
                if let Some(lines) = stdout_lines.take() {
                    tokio::spawn(log_lines(agent.clone(), lines));
                }
                tokio::time::timeout_at(limit.into(), wait_http_ready(&agent, *health_port, exit_rx.clone())).await
            }
        };
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) if deadline_first => {
                let secs = limit.saturating_duration_since(t0).as_secs_f64();
                return Err(StartError::Timeout { agent, secs });
            }
            Err(_elapsed) => {
                let reason = format!("not ready within ready_timeout_secs = {ready_timeout_secs}");
                return Err(StartError::Failed { agent, reason });
            }
        }
        if *protocol == ProcessProtocol::Jsonl {
            if let Some(lines) = stdout_lines {
                tokio::spawn(route_replies(agent.clone(), lines, this.pending.clone(), ctx.clone()));
            }
            if let Some(mut stdin) = stdin {
                let (tx, mut rx) = mpsc::channel::<String>(1024);
                let agent = agent.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        if let Err(e) = stdin.write_all(line.as_bytes()).await {
                            tracing::warn!(agent, error = %e, "cannot write to child stdin");
                            break;
                        }
                    }
                });
                this.stdin_tx = Some(tx);
            }
        }
        ctx.set_pid(&agent, Some(pid));
        Ok(this)
    }

    /// Child process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one task to a `jsonl` child; the reply comes back through the
    /// stdout router. When the task is cancelled (client, deadline) before the
    /// answer, the caller gets `cancelled` at once and the child gets a
    /// `{"cancel": "<id>"}` line (programs may ignore it; a late answer is
    /// dropped). A `compat` child takes no tasks here.
    pub fn request(&self, task: Task, reply: RpcReplyPort<TaskReply>) {
        let Some(stdin) = &self.stdin_tx else {
            let _ = reply.send(Err(TaskError::new(
                ErrorCode::NotImplemented,
                format!("{} is a compatibility agent: tasks over its ZeroMQ port are not bridged yet", self.agent),
            )));
            return;
        };
        let line = json!({"id": task.id, "type": task.task_type, "input": task.input}).to_string() + "\n";
        let watcher = {
            let (pending, stdin, id, cancel) =
                (self.pending.clone(), stdin.clone(), task.id.clone(), task.cancel.clone());
            tokio::spawn(async move {
                cancel.cancelled().await;
                let waiting = pending.lock().remove(&id);
                if let Some(w) = waiting {
                    let _ = w.reply.send(Err(TaskError::new(ErrorCode::Cancelled, format!("task {id} was cancelled"))));
                    let _ = stdin.try_send(json!({"cancel": id}).to_string() + "\n");
                }
            })
            .abort_handle()
        };
        self.pending.lock().insert(task.id.clone(), Waiting { reply, watcher });
        if stdin.try_send(line).is_err()
            && let Some(reply) = take(&self.pending, &task.id)
        {
            let _ = reply.send(Err(TaskError::new(ErrorCode::Busy, format!("{}: stdin queue full", self.agent))));
        }
    }

    /// The watcher saw the exit.
    pub(crate) fn mark_exited(&mut self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Stops the child: SIGTERM to its process group, `grace_secs` to exit,
    /// then SIGKILL. Returns when the child is reaped (or after grace + 1 s).
    pub async fn stop(&mut self, grace_secs: f64) {
        let grace = Duration::from_secs_f64(grace_secs.max(0.0));
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(grace);
        }
        if let Some(done) = self.done_rx.take() {
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), done).await;
        }
        self.fail_pending("the agent stopped");
    }

    fn fail_pending(&self, why: &str) {
        for (_, w) in self.pending.lock().drain() {
            w.watcher.abort();
            let _ = w.reply.send(Err(TaskError::new(ErrorCode::AgentFailed, format!("{}: {why}", self.agent))));
        }
    }
}

impl Drop for ProcessChild {
    fn drop(&mut self) {
        self.fail_pending("the agent exited");
        if self.alive.load(Ordering::Acquire) && self.pid > 0 {
            // The group may already be gone; ESRCH is fine.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

/// Owns the child: reports its exit to the actor, or stops it on request.
#[allow(clippy::too_many_arguments)]
async fn watch_child(
    mut child: Child,
    agent: String,
    actor: ActorRef<AgentMsg>,
    stop_rx: oneshot::Receiver<Duration>,
    exit_tx: watch::Sender<Option<String>>,
    done_tx: oneshot::Sender<()>,
    alive: Arc<AtomicBool>,
    ctx: Arc<AgentTable>,
) {
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let status: io::Result<ExitStatus> = tokio::select! {
        status = child.wait() => {
            let text = describe(&status);
            tracing::info!(agent, status = %text, "child process exited");
            let success = matches!(&status, Ok(s) if s.success());
            let _ = exit_tx.send(Some(text.clone()));
            // The actor may be gone already (stopping); then nobody needs this.
            let _ = actor.cast(AgentMsg::ChildExited { success, status: text });
            status
        }
        grace = stop_rx => {
            let grace = grace.unwrap_or(Duration::ZERO);
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
            }
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::warn!(agent, grace_secs = grace.as_secs_f64(), "child ignored SIGTERM; sending SIGKILL");
                    if let Some(pgid) = pgid {
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    child.wait().await
                }
            }
        }
    };
    // Stragglers of the group (grandchildren that ignored SIGTERM) go too.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    tracing::debug!(agent, status = %describe(&status), "child reaped");
    alive.store(false, Ordering::Release);
    ctx.metrics.children.dec();
    let _ = done_tx.send(());
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

async fn wait_jsonl_ready(
    agent: &str,
    lines: &mut Lines<BufReader<ChildStdout>>,
    mut exited: watch::Receiver<Option<String>>,
) -> Result<(), StartError> {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("ready") == Some(&Value::Bool(true)) => return Ok(()),
                Ok(v) if v.get("unavailable").is_some() => {
                    let reason =
                        v["unavailable"].as_str().map(str::to_string).unwrap_or_else(|| v["unavailable"].to_string());
                    return Err(StartError::Unavailable { agent: agent.to_string(), reason });
                }
                _ => tracing::info!(agent, stream = "stdout", "{line}"),
            },
            Ok(None) | Err(_) => {
                let status = exited.wait_for(Option::is_some).await.ok().and_then(|s| s.clone());
                let reason = format!("exited before ready ({})", status.unwrap_or_else(|| "stdout closed".into()));
                return Err(StartError::Failed { agent: agent.to_string(), reason });
            }
        }
    }
}

async fn wait_http_ready(
    agent: &str,
    port: Option<u16>,
    exited: watch::Receiver<Option<String>>,
) -> Result<(), StartError> {
    let Some(port) = port else {
        return Err(StartError::Failed {
            agent: agent.to_string(),
            reason: "compat agent without health_check_port".into(),
        });
    };
    let url = format!("http://127.0.0.1:{port}/health");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| StartError::Failed { agent: agent.to_string(), reason: e.to_string() })?;
    loop {
        if let Some(status) = exited.borrow().clone() {
            return Err(StartError::Failed {
                agent: agent.to_string(),
                reason: format!("exited before ready ({status})"),
            });
        }
        if let Ok(resp) = client.get(&url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_lines(agent: String, mut lines: Lines<BufReader<ChildStdout>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(agent, stream = "stdout", "{line}");
    }
}

/// Routes `{"id", "output"|"error"}` lines to the waiting callers.
async fn route_replies(
    agent: String,
    mut lines: Lines<BufReader<ChildStdout>>,
    pending: Pending,
    ctx: Arc<AgentTable>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::info!(agent, stream = "stdout", "{line}");
            continue;
        };
        let Some(id) =
            v.get("id").and_then(|i| i.as_str().map(str::to_string).or_else(|| i.as_u64().map(|n| n.to_string())))
        else {
            tracing::warn!(agent, line = %line, "child reply without id");
            continue;
        };
        let Some(reply) = take(&pending, &id) else {
            // Cancelled or timed out meanwhile: the caller has had its answer.
            tracing::debug!(agent, task_id = %id, "child reply for no pending task dropped");
            continue;
        };
        let answer = match (v.get("output"), v.get("error")) {
            (_, Some(err)) => {
                let code = err.get("code").and_then(Value::as_str).unwrap_or("error");
                let msg =
                    err.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| err.to_string());
                Err(TaskError::new(ErrorCode::AgentError, format!("{agent}: {code}: {msg}")))
            }
            (Some(out), None) => Ok(out.clone().into()),
            (None, None) => {
                Err(TaskError::new(ErrorCode::AgentError, format!("{agent}: reply has neither output nor error")))
            }
        };
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        ctx.metrics.tasks.with_label_values(&[&agent, outcome]).inc();
        let _ = reply.send(answer);
    }
}
