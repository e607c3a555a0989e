//! Admission and dispatch: the admission gate, the bounded admission
//! queue (one priority queue per agent: priority 9 first, FIFO within a
//! priority), agent resolution, on-demand starts, per-agent concurrency
//! limits, deadlines, cancellation, and the reply for every accepted message.
//!
//! One loop ([`run`], the BusDispatcher infrastructure component) owns the
//! queues; each dispatched task runs in its own tokio task and reports back
//! with `Cmd::Done`. What must survive the loop lives in [`Shared`]: the
//! command channel (commands wait there while the loop restarts), the
//! [`Ledger`] of accepted tasks (a restarted loop rebuilds its queues from
//! it; running tasks are not the loop's children and finish on their own),
//! and the replier.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::{Reply, Timings, ValidTask};
use super::gate::Gate;
use super::ledger::{Entry, Key, Ledger, Stage, Started};
use super::reply::{ClientAddr, Replier};
use crate::agents::tasks::TaskTable;
use crate::core::{ErrorCode, Event, Fault, Schedule, Task, TaskError, TaskOutput};
use crate::routing::router::{known_models, resolve_model};
use crate::supervisor::Fleet;
use crate::supervisor::state::AgentState;

/// Commands to the dispatcher loop.
#[expect(
    clippy::large_enum_variant,
    reason = "one task per message, moved not copied: a Box would add an allocation per task on the hot path"
)]
pub enum Cmd {
    /// A decoded task from a client.
    Admit {
        /// Who sent it.
        client: ClientAddr,
        /// The task.
        task: ValidTask,
        /// When the message was received.
        received: Instant,
    },
    /// `{"cancel": target}` from a client.
    Cancel {
        /// Who sent it (only its own tasks can be cancelled).
        client: ClientAddr,
        /// The cancel message's own id.
        id: Option<String>,
        /// The task to cancel.
        target: String,
    },
    /// A client disconnected: cancel its tasks, no replies.
    ClientGone(Bytes),
    /// A dispatched task finished.
    Done {
        /// Its agent.
        agent: String,
        /// Its key.
        key: Key,
    },
    /// Fail on purpose (fault injection; sent only with `testing.fault_injection: true`).
    Fault(Fault),
}

/// What outlives the dispatcher loop (see the module docs).
pub struct Shared {
    pub(crate) fleet: Fleet,
    pub(crate) tasks: Arc<TaskTable>,
    pub(crate) replier: Replier,
    pub(crate) gate: Arc<Gate>,
    /// Accepted, unanswered tasks.
    pub ledger: Ledger,
    pub(crate) tx: mpsc::UnboundedSender<Cmd>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Cmd>>,
}

impl Shared {
    /// The state of a bus answering through `replier`.
    pub(crate) fn new(fleet: Fleet, tasks: Arc<TaskTable>, replier: Replier, gate: Arc<Gate>) -> Shared {
        let (tx, rx) = mpsc::unbounded_channel();
        Shared { fleet, tasks, replier, gate, ledger: Ledger::default(), tx, rx: tokio::sync::Mutex::new(rx) }
    }

    /// Answers with `e` a task the caller took from the ledger: counted,
    /// `task.failed`, sent.
    pub(crate) async fn answer_error(
        &self,
        client: &ClientAddr,
        id: String,
        agent: Option<String>,
        e: TaskError,
        timings: Option<Timings>,
    ) {
        let ctx = self.fleet.ctx();
        ctx.metrics.bad_requests.with_label_values(&[e.code.as_str()]).inc();
        ctx.events.emit(Event::TaskFailed {
            id: id.clone(),
            agent: agent.clone(),
            code: e.code.as_str(),
            cancelled: e.code == ErrorCode::Cancelled,
        });
        self.replier.send(client, Reply::error(Some(id), agent, e, timings).to_bytes()).await;
    }
}

/// A queue position: the task itself waits in the ledger.
struct Queued {
    priority: u8,
    seq: u64,
    key: Key,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Max-heap order: higher priority first, then earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct AgentQueue {
    heap: BinaryHeap<Queued>,
    running: HashSet<Key>,
    limit: usize,
}

/// The dispatcher loop: takes the command channel, rebuilds its queues from
/// the ledger, then serves commands and sweeps expired deadlines of queued
/// tasks every 50 ms. Runs until aborted.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.rx.lock().await;
    let mut d = Dispatcher { shared: shared.clone(), queues: HashMap::new(), seq: 0 };
    d.rebuild().await;
    let mut sweep = tokio::time::interval(Duration::from_millis(50));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = shared.fleet.ctx().metrics.clone();
    let mut queued = shared.ledger.counts().0;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => d.command(cmd).await,
                None => return,
            },
            _ = sweep.tick(), if queued > 0 => d.sweep_deadlines().await,
        }
        queued = shared.ledger.counts().0;
        metrics.queue_depth.set(queued as i64);
    }
}

struct Dispatcher {
    shared: Arc<Shared>,
    queues: HashMap<String, AgentQueue>,
    seq: u64,
}

impl Dispatcher {
    /// Queues and running sets from the ledger (empty at first start; after
    /// a restart, what the previous loop left).
    async fn rebuild(&mut self) {
        let outline = self.shared.ledger.outline();
        if !outline.is_empty() {
            tracing::info!(tasks = outline.len(), "dispatcher restarted: queues rebuilt from the ledger");
        }
        for (key, agent, priority, seq, running) in outline {
            self.seq = self.seq.max(seq);
            let q = self.queue(&agent);
            if running {
                q.running.insert(key);
            } else {
                q.heap.push(Queued { priority, seq, key });
            }
        }
        let agents: Vec<String> = self.queues.keys().cloned().collect();
        for agent in agents {
            self.pump(&agent).await;
        }
    }

    fn queue(&mut self, agent: &str) -> &mut AgentQueue {
        if !self.queues.contains_key(agent) {
            let ctx = self.shared.fleet.ctx();
            let limit = ctx.catalog.get(agent).map(|s| s.max_concurrency as usize).unwrap_or(16).max(1);
            self.queues.insert(agent.to_string(), AgentQueue { limit, ..Default::default() });
        }
        self.queues.get_mut(agent).expect("inserted above")
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Admit { client, task, received } => self.admit(client, task, received).await,
            Cmd::Cancel { client, id, target } => self.cancel(client, id, target).await,
            Cmd::ClientGone(identity) => {
                for key in self.shared.ledger.keys_of(&identity) {
                    match self.shared.ledger.token(&key) {
                        Some(token) => token.cancel(),
                        // Queued: no reply to a gone client; its heap entry is skipped.
                        None => drop(self.shared.ledger.take(&key)),
                    }
                }
            }
            Cmd::Done { agent, key } => {
                if let Some(q) = self.queues.get_mut(&agent) {
                    q.running.remove(&key);
                }
                self.pump(&agent).await;
            }
            Cmd::Fault(fault) => panic!("fault injection ({fault:?}): the bus dispatcher fails"),
        }
    }

    /// Resolves the agent ([`Fleet::resolve`]).
    fn resolve(&self, task: &ValidTask) -> Result<String, TaskError> {
        self.shared.fleet.resolve(task.agent.as_deref(), task.task_type.as_deref())
    }

    /// A task's `model` must name something a backend serves.
    fn check_model(&self, task: &ValidTask) -> Result<(), TaskError> {
        let Some(model) = &task.model else { return Ok(()) };
        let settings = &self.shared.fleet.ctx().settings;
        match resolve_model(&settings.backends, &settings.models_dir, model) {
            Some(_) => Ok(()),
            None => Err(TaskError::new(
                ErrorCode::InvalidField,
                format!(
                    "field model: {model:?} is not served here; known: {} (or a GGUF file in models_dir)",
                    known_models(&settings.backends).join(", ")
                ),
            )),
        }
    }

    /// The decoding layer: a task of a known type must fit its input
    /// schema (`invalid_field` naming the JSON path), before any agent runs
    /// or starts. Types without a schema (a direct `agent` without `type`,
    /// `bus.default_agent`'s unknown types) pass.
    fn check_input(&self, task: &ValidTask) -> Result<(), TaskError> {
        match task.task_type.as_deref().and_then(|t| self.shared.tasks.get(t)) {
            Some(def) => def.decode(&task.input),
            None => Ok(()),
        }
    }

    async fn admit(&mut self, client: ClientAddr, mut task: ValidTask, received: Instant) {
        let id = task.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        task.id = Some(id.clone());
        if let Err(e) = self.shared.gate.check() {
            return self.reject(&client, Some(id), None, e).await;
        }
        let key = (client.identity.clone(), id.clone());
        if self.shared.ledger.contains(&key) {
            let e = TaskError::new(ErrorCode::InvalidField, format!("field id: task {id} is already in flight"));
            return self.reject(&client, Some(id), None, e).await;
        }
        let agent = match self.resolve(&task) {
            Ok(a) => a,
            Err(e) => return self.reject(&client, Some(id), None, e).await,
        };
        if let Err(e) = self.check_model(&task).and_then(|()| self.check_input(&task)) {
            return self.reject(&client, Some(id), Some(agent), e).await;
        }
        let queued = self.shared.ledger.counts().0;
        let ctx = self.shared.fleet.ctx().clone();
        if queued >= ctx.settings.bus.max_queue {
            let e = TaskError::new(
                ErrorCode::Busy,
                format!("admission queue full ({queued} tasks, bus.max_queue); retry later"),
            );
            return self.reject(&client, Some(id), Some(agent), e).await;
        }
        ctx.events.emit(Event::TaskAccepted {
            id: id.clone(),
            agent: agent.clone(),
            task_type: task.task_type.clone(),
            priority: task.priority,
            user: task.user.clone(),
        });
        self.seq += 1;
        let (priority, seq) = (task.priority, self.seq);
        let deadline = task.deadline_ms.map(|ms| received + Duration::from_millis(ms));
        let entry = Entry {
            client,
            agent: agent.clone(),
            priority,
            seq,
            received,
            deadline,
            stage: Stage::Queued(Box::new(task)),
        };
        self.shared.ledger.admit(key.clone(), entry);
        self.queue(&agent).heap.push(Queued { priority, seq, key });
        self.pump(&agent).await;
    }

    /// Dispatches queued tasks of `agent` while it has free capacity.
    async fn pump(&mut self, agent: &str) {
        loop {
            let Some(q) = self.queues.get_mut(agent) else { return };
            if q.running.len() >= q.limit {
                return;
            }
            let Some(item) = q.heap.pop() else { return };
            let token = CancellationToken::new();
            // Answered meanwhile (cancelled, expired, drained): skip.
            let Some(started) = self.shared.ledger.start(&item.key, token.clone()) else { continue };
            q.running.insert(item.key.clone());
            tokio::spawn(execute(self.shared.clone(), item.key, agent.to_string(), started, token));
        }
    }

    async fn sweep_deadlines(&mut self) {
        let now = Instant::now();
        for key in self.shared.ledger.expired(now) {
            let Some(entry) = self.shared.ledger.take(&key) else { continue };
            let waited = entry.received.elapsed().as_secs_f64() * 1e3;
            let due = entry.deadline.map(|d| d.saturating_duration_since(entry.received).as_millis()).unwrap_or(0);
            let e = TaskError::new(
                ErrorCode::DeadlineExceeded,
                format!("deadline_ms = {due} passed after {waited:.1} ms in the queue"),
            );
            let timings = Timings { queue: waited, total: waited, ..Default::default() };
            self.shared.answer_error(&entry.client, key.1, Some(entry.agent), e, Some(timings)).await;
        }
    }

    async fn cancel(&mut self, client: ClientAddr, id: Option<String>, target: String) {
        let key = (client.identity.clone(), target.clone());
        let ledger = &self.shared.ledger;
        let ack = if let Some(token) = ledger.token(&key) {
            token.cancel();
            Ok(())
        } else if let Some(entry) = ledger.take(&key) {
            let e = TaskError::new(ErrorCode::Cancelled, format!("task {target} was cancelled while queued"));
            self.shared.answer_error(&client, target.clone(), Some(entry.agent), e, None).await;
            Ok(())
        } else {
            Err(TaskError::new(
                ErrorCode::InvalidField,
                format!("field cancel: no task {target} in flight from this client"),
            ))
        };
        let reply = match ack {
            Ok(()) => Reply {
                id,
                status: "ok".into(),
                agent: None,
                output: Some(json!({"cancelled": target})),
                route: None,
                timings_ms: None,
                error: None,
            },
            Err(e) => Reply::error(id, None, e, None),
        };
        self.shared.replier.send(&client, reply.to_bytes()).await;
    }

    async fn reject(&mut self, client: &ClientAddr, id: Option<String>, agent: Option<String>, e: TaskError) {
        let ctx = self.shared.fleet.ctx();
        ctx.metrics.bad_requests.with_label_values(&[e.code.as_str()]).inc();
        tracing::info!(task_id = ?id, code = e.code.as_str(), error = %e.message, "task rejected");
        self.shared.replier.send(client, Reply::error(id, agent, e, None).to_bytes()).await;
    }
}

/// Runs one dispatched task: on-demand start, the agent's work (with
/// streaming, cancellation and the deadline), the reply.
async fn execute(shared: Arc<Shared>, key: Key, agent: String, started: Started, token: CancellationToken) {
    let Started { task, client, received, deadline } = started;
    let (fleet, replier) = (&shared.fleet, &shared.replier);
    let ctx = fleet.ctx().clone();
    let id = key.1.clone();
    let mut timings = Timings { queue: received.elapsed().as_secs_f64() * 1e3, ..Default::default() };
    let limit = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let result: Result<TaskOutput, TaskError> = async {
        tokio::pin!(limit);
        if ctx.state(&agent) != Some(AgentState::Running) {
            let t0 = Instant::now();
            tokio::select! {
                r = fleet.ensure(&agent) => r.map_err(|e| e.to_task_error())?,
                _ = &mut limit => return Err(deadline_error(&task)),
                _ = token.cancelled() => return Err(cancelled(&id)),
            }
            timings.start = t0.elapsed().as_secs_f64() * 1e3;
        }
        let task_type = task
            .task_type
            .clone()
            .unwrap_or_else(|| ctx.catalog.get(&agent).and_then(|s| s.handles.first().cloned()).unwrap_or_default());
        let (chunk_tx, mut chunk_rx) = mpsc::unbounded_channel::<String>();
        let forward = task.stream.then(|| {
            let (replier, client, id) = (replier.clone(), client.clone(), id.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while let Some(delta) = chunk_rx.recv().await {
                    seq += 1;
                    let msg = json!({"id": id, "event": "chunk", "seq": seq, "delta": delta});
                    replier.send(&client, serde_json::to_vec(&msg).unwrap_or_default()).await;
                }
            })
        });
        let work = Task {
            id: id.clone(),
            task_type,
            input: task.input.clone(),
            deadline,
            chunks: task.stream.then_some(chunk_tx),
            cancel: token.clone(),
            session: task.session.clone(),
            user: task.user.clone(),
            model: task.model.clone(),
            prefer: task.prefer,
            complexity: task.complexity,
            queue_ms: timings.queue + timings.start,
            schedule: Schedule { priority: task.priority, push_to_front: task.push_to_front },
        };
        let t0 = Instant::now();
        let answer = tokio::select! {
            r = fleet.call(&agent, work) => r,
            _ = &mut limit => Err(deadline_error(&task)),
            _ = token.cancelled() => Err(cancelled(&id)),
        };
        token.cancel(); // stop whatever is still running for this task
        timings.backend = t0.elapsed().as_secs_f64() * 1e3;
        if let Some(forward) = forward {
            // Chunks first, then the final reply; a stuck agent does not hold the reply.
            let abort = forward.abort_handle();
            if tokio::time::timeout(Duration::from_millis(200), forward).await.is_err() {
                abort.abort();
            }
        }
        answer
    }
    .await;
    timings.total = received.elapsed().as_secs_f64() * 1e3;
    let done = Cmd::Done { agent: agent.clone(), key: key.clone() };
    if shared.ledger.take(&key).is_none() {
        // Answered already (the drain's deadline): exactly one reply.
        let _ = shared.tx.send(done);
        return;
    }
    let route = match &result {
        Ok(out) => out.route.as_ref(),
        Err(e) => e.route.as_deref(),
    };
    if let Some(r) = route {
        timings.route = r.decide_us / 1e3;
    }
    let route = route.and_then(|r| serde_json::to_value(r).ok());
    ctx.metrics.task_duration.with_label_values(&[&agent]).observe(timings.total / 1e3);
    let reply = match result {
        Ok(out) => {
            ctx.events.emit(Event::TaskCompleted { id: id.clone(), agent: agent.clone(), total_ms: timings.total });
            Reply { route, ..Reply::ok(id.clone(), agent.clone(), out.output, timings) }
        }
        Err(e) => {
            ctx.events.emit(Event::TaskFailed {
                id: id.clone(),
                agent: Some(agent.clone()),
                code: e.code.as_str(),
                cancelled: e.code == ErrorCode::Cancelled,
            });
            tracing::info!(task_id = %id, agent, code = e.code.as_str(), error = %e.message, "task failed");
            Reply { route, ..Reply::error(Some(id.clone()), Some(agent.clone()), e, Some(timings)) }
        }
    };
    replier.send(&client, reply.to_bytes()).await;
    let _ = shared.tx.send(done);
}

fn deadline_error(task: &ValidTask) -> TaskError {
    TaskError::new(ErrorCode::DeadlineExceeded, format!("deadline_ms = {} passed", task.deadline_ms.unwrap_or(0)))
}

fn cancelled(id: &str) -> TaskError {
    TaskError::new(ErrorCode::Cancelled, format!("task {id} was cancelled"))
}
