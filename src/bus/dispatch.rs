//! Admission and dispatch: the bounded admission queue (one priority queue
//! per agent: priority 9 first, FIFO within a priority), agent resolution,
//! on-demand starts, per-agent concurrency limits, deadlines, cancellation,
//! and the reply for every accepted message.
//!
//! One tokio task owns all queues ([`Dispatcher::run`]); each dispatched
//! task runs in its own tokio task and reports back with `Cmd::Done`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::envelope::{Reply, Timings, ValidTask};
use super::reply::{ClientAddr, Replier};
use crate::agents::tasks::TaskTable;
use crate::core::{ErrorCode, Event, Schedule, Task, TaskError, TaskOutput};
use crate::routing::router::{known_models, resolve_model};
use crate::supervisor::Fleet;
use crate::supervisor::state::AgentState;

/// A task id as seen by one client: (client identity, task id).
type Key = (Bytes, String);

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
}

struct Queued {
    priority: u8,
    seq: u64,
    key: Key,
    client: ClientAddr,
    task: ValidTask,
    agent: String,
    received: Instant,
    deadline: Option<Instant>,
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
    running: usize,
    limit: usize,
}

enum Slot {
    Queued,
    Running(CancellationToken),
}

/// Live numbers for `coordinator.status`.
#[derive(Default)]
pub struct Gauges {
    /// Tasks waiting in the admission queue.
    pub queued: AtomicUsize,
    /// Tasks being worked on.
    pub running: AtomicUsize,
}

/// The dispatcher state, owned by its loop.
pub struct Dispatcher {
    fleet: Fleet,
    tasks: Arc<TaskTable>,
    replier: Replier,
    queues: HashMap<String, AgentQueue>,
    slots: HashMap<Key, Slot>,
    queued_total: usize,
    seq: u64,
    tx: mpsc::UnboundedSender<Cmd>,
    running: JoinSet<()>,
    gauges: Arc<Gauges>,
}

impl Dispatcher {
    /// A dispatcher answering through `replier`; `tx` must be the sender of
    /// the channel later passed to [`Dispatcher::run`].
    pub fn new(
        fleet: Fleet,
        tasks: Arc<TaskTable>,
        replier: Replier,
        tx: mpsc::UnboundedSender<Cmd>,
        gauges: Arc<Gauges>,
    ) -> Dispatcher {
        Dispatcher {
            fleet,
            tasks,
            replier,
            queues: HashMap::new(),
            slots: HashMap::new(),
            queued_total: 0,
            seq: 0,
            tx,
            running: JoinSet::new(),
            gauges,
        }
    }

    /// The loop: commands in, dispatches out; sweeps expired deadlines of
    /// queued tasks every 50 ms. Ends when every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut sweep = tokio::time::interval(Duration::from_millis(50));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                _ = sweep.tick(), if self.queued_total > 0 => self.sweep_deadlines().await,
            }
            while self.running.try_join_next().is_some() {}
            self.gauges.queued.store(self.queued_total, AtomicOrdering::Relaxed);
            self.gauges.running.store(self.slots.len().saturating_sub(self.queued_total), AtomicOrdering::Relaxed);
            self.fleet.ctx().metrics.queue_depth.set(self.queued_total as i64);
        }
        self.running.abort_all();
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Admit { client, task, received } => self.admit(client, task, received).await,
            Cmd::Cancel { client, id, target } => self.cancel(client, id, target).await,
            Cmd::ClientGone(identity) => {
                let gone: Vec<Key> = self.slots.keys().filter(|k| k.0 == identity).cloned().collect();
                for key in gone {
                    if let Some(Slot::Running(token)) = self.slots.get(&key) {
                        token.cancel();
                    } else {
                        self.drop_queued(&key);
                    }
                }
            }
            Cmd::Done { agent, key } => {
                self.slots.remove(&key);
                if let Some(q) = self.queues.get_mut(&agent) {
                    q.running = q.running.saturating_sub(1);
                }
                self.pump(&agent).await;
            }
        }
    }

    /// Resolves the agent: `agent`, else `type` through the catalog's
    /// `handles`, else `bus.default_agent`.
    fn resolve(&self, task: &ValidTask) -> Result<String, TaskError> {
        let ctx = self.fleet.ctx();
        let in_plan = |a: &str| ctx.plan.agents.contains(a);
        if let Some(agent) = &task.agent {
            return if in_plan(agent) {
                Ok(agent.clone())
            } else if ctx.catalog.get(agent).is_some() {
                Err(TaskError::new(
                    ErrorCode::UnknownAgent,
                    format!("agent {agent} is not in profile {}", ctx.plan.name),
                ))
            } else {
                Err(TaskError::new(ErrorCode::UnknownAgent, format!("no agent named {agent}")))
            };
        }
        let task_type = task.task_type.as_deref().unwrap_or_default();
        match ctx.catalog.handlers.get(task_type) {
            Some(agent) if in_plan(agent) => Ok(agent.clone()),
            Some(agent) => Err(TaskError::new(
                ErrorCode::UnknownTaskType,
                format!(
                    "task type {task_type} is handled by {agent}, which profile {} does not include",
                    ctx.plan.name
                ),
            )),
            None => match &ctx.settings.bus.default_agent {
                Some(d) if in_plan(d) => Ok(d.clone()),
                _ => Err(TaskError::new(ErrorCode::UnknownTaskType, format!("no agent handles task type {task_type}"))),
            },
        }
    }

    /// A task's `model` must name something a backend serves.
    fn check_model(&self, task: &ValidTask) -> Result<(), TaskError> {
        let Some(model) = &task.model else { return Ok(()) };
        let settings = &self.fleet.ctx().settings;
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
        match task.task_type.as_deref().and_then(|t| self.tasks.get(t)) {
            Some(def) => def.decode(&task.input),
            None => Ok(()),
        }
    }

    async fn admit(&mut self, client: ClientAddr, mut task: ValidTask, received: Instant) {
        let id = task.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        task.id = Some(id.clone());
        let key = (client.identity.clone(), id.clone());
        if self.slots.contains_key(&key) {
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
        if self.queued_total >= self.fleet.ctx().settings.bus.max_queue {
            let e = TaskError::new(
                ErrorCode::Busy,
                format!("admission queue full ({} tasks, bus.max_queue); retry later", self.queued_total),
            );
            return self.reject(&client, Some(id), Some(agent), e).await;
        }
        let ctx = self.fleet.ctx();
        ctx.events.emit(Event::TaskAccepted {
            id: id.clone(),
            agent: agent.clone(),
            task_type: task.task_type.clone(),
            priority: task.priority,
        });
        let limit = ctx.catalog.get(&agent).map(|s| s.max_concurrency as usize).unwrap_or(16).max(1);
        self.seq += 1;
        let deadline = task.deadline_ms.map(|ms| received + Duration::from_millis(ms));
        let q = self.queues.entry(agent.clone()).or_default();
        q.limit = limit;
        q.heap.push(Queued {
            priority: task.priority,
            seq: self.seq,
            key: key.clone(),
            client,
            task,
            agent: agent.clone(),
            received,
            deadline,
        });
        self.queued_total += 1;
        self.slots.insert(key, Slot::Queued);
        self.pump(&agent).await;
    }

    /// Dispatches queued tasks of `agent` while it has free capacity.
    async fn pump(&mut self, agent: &str) {
        loop {
            let Some(q) = self.queues.get_mut(agent) else { return };
            if q.running >= q.limit {
                return;
            }
            let Some(item) = q.heap.pop() else { return };
            self.queued_total -= 1;
            if !matches!(self.slots.get(&item.key), Some(Slot::Queued)) {
                continue; // cancelled while queued; already answered
            }
            if item.deadline.is_some_and(|d| d <= Instant::now()) {
                self.expire(item).await;
                continue;
            }
            q.running += 1;
            let token = CancellationToken::new();
            self.slots.insert(item.key.clone(), Slot::Running(token.clone()));
            let (fleet, replier, tx) = (self.fleet.clone(), self.replier.clone(), self.tx.clone());
            self.running.spawn(execute(fleet, replier, tx, item, token));
        }
    }

    async fn expire(&mut self, item: Queued) {
        self.slots.remove(&item.key);
        let waited = item.received.elapsed().as_secs_f64() * 1e3;
        let e = TaskError::new(
            ErrorCode::DeadlineExceeded,
            format!("deadline_ms = {} passed after {waited:.1} ms in the queue", item.task.deadline_ms.unwrap_or(0)),
        );
        let timings = Timings { queue: waited, total: waited, ..Default::default() };
        self.finish_error(&item.client, item.key.1.clone(), Some(item.agent), e, Some(timings)).await;
    }

    async fn sweep_deadlines(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for q in self.queues.values_mut() {
            if q.heap.iter().any(|i| i.deadline.is_some_and(|d| d <= now)) {
                let (gone, keep): (Vec<Queued>, Vec<Queued>) =
                    q.heap.drain().partition(|i| i.deadline.is_some_and(|d| d <= now));
                q.heap = keep.into_iter().collect();
                expired.extend(gone);
            }
        }
        for item in expired {
            self.queued_total -= 1;
            if matches!(self.slots.get(&item.key), Some(Slot::Queued)) {
                self.expire(item).await;
            }
        }
    }

    fn drop_queued(&mut self, key: &Key) {
        // The heap entry is skipped when popped (its slot is gone).
        self.slots.remove(key);
    }

    async fn cancel(&mut self, client: ClientAddr, id: Option<String>, target: String) {
        let key = (client.identity.clone(), target.clone());
        let ack = match self.slots.get(&key) {
            Some(Slot::Running(token)) => {
                token.cancel();
                Ok(())
            }
            Some(Slot::Queued) => {
                self.drop_queued(&key);
                let e = TaskError::new(ErrorCode::Cancelled, format!("task {target} was cancelled while queued"));
                self.finish_error(&client, target.clone(), None, e, None).await;
                Ok(())
            }
            None => Err(TaskError::new(
                ErrorCode::InvalidField,
                format!("field cancel: no task {target} in flight from this client"),
            )),
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
        self.replier.send(&client, reply.to_bytes()).await;
    }

    async fn reject(&mut self, client: &ClientAddr, id: Option<String>, agent: Option<String>, e: TaskError) {
        let ctx = self.fleet.ctx();
        ctx.metrics.bad_requests.with_label_values(&[e.code.as_str()]).inc();
        tracing::info!(task_id = ?id, code = e.code.as_str(), error = %e.message, "task rejected");
        self.replier.send(client, Reply::error(id, agent, e, None).to_bytes()).await;
    }

    async fn finish_error(
        &mut self,
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
            cancelled: false,
        });
        self.replier.send(client, Reply::error(Some(id), agent, e, timings).to_bytes()).await;
    }
}

/// Runs one dispatched task: on-demand start, the agent's work (with
/// streaming, cancellation and the deadline), the reply.
async fn execute(
    fleet: Fleet,
    replier: Replier,
    tx: mpsc::UnboundedSender<Cmd>,
    item: Queued,
    token: CancellationToken,
) {
    let Queued { key, client, task, agent, received, deadline, .. } = item;
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
    let _ = tx.send(Cmd::Done { agent, key });
}

fn deadline_error(task: &ValidTask) -> TaskError {
    TaskError::new(ErrorCode::DeadlineExceeded, format!("deadline_ms = {} passed", task.deadline_ms.unwrap_or(0)))
}

fn cancelled(id: &str) -> TaskError {
    TaskError::new(ErrorCode::Cancelled, format!("task {id} was cancelled"))
}
