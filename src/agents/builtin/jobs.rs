//! AsyncProcessor: background jobs. A job is any task envelope, run
//! through the normal dispatch (the agent resolved as the bus does, its
//! input checked against the task table, the agent called through the
//! fleet: same agents, same routing, same receipts), retried with capped
//! exponential backoff on retryable errors up to `max_attempts`.
//!
//! State: the `jobs` table (written before each answer and at each state
//! change), and in memory the queue (priority 9 first, FIFO within a
//! priority) and the running jobs. At most `async.max_running` jobs run at
//! once. Durable: when the agent starts (after a daemon restart too), jobs
//! the table has as `running` go back to `queued` and run again
//! (at-least-once; `attempts` shows it); finished jobs keep their result
//! for `async.retention_secs`.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `async.submit` | `{"task": {envelope}, "priority"?, "max_attempts"?}` | `{"job_id", "state"}` at once |
//! | `async.status` | `{"job_id"}` or the id as text | the job's state, attempts and timings |
//! | `async.result` | `{"job_id"}` or the id as text | `{"job_id", "state", "attempts", "output", "route", "error"}` |
//! | `async.cancel` | `{"job_id"}` or the id as text | `{"job_id", "cancelled", "state"}` |
//! | `async.list` | nothing, or `{"state"?, "limit"?}` | `{"jobs": [status, ...]}`, newest first |

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{OptionalExtension, params};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Answer, Background, Behaviour, Name, Null, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, TaskTable, decode, encode, rust_task};
use crate::config::JobSettings;
use crate::core::{ErrorCode, Event, JobChange, Schedule, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::{Store, StoreError};
use crate::supervisor::{Fleet, StartError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "AsyncProcessor";

/// Default attempts of a job.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Default jobs `async.list` returns.
const DEFAULT_LIST_LIMIT: u32 = 100;

/// How often finished jobs past their retention are deleted.
const RETENTION_SWEEP: Duration = Duration::from_secs(60);

/// Job states.
const STATES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// The task types of AsyncProcessor.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<SubmitInput, SubmitOutput>(
            "async.submit",
            "Queues any task as a durable background job (retried with backoff); answers its job id at once",
            || {
                vec![
                    json!({"task": {"type": "utils.sleep", "input": 0.01}, "max_attempts": 3}),
                    json!({"task": {"type": "utils.echo", "input": "hello"}, "priority": 3}),
                ]
            },
        ),
        rust_task::<OrShort<JobInput>, JobStatus>("async.status", "A job's state, attempts and timings", || {
            vec![json!({"job_id": "job-0123456789abcdef"}), json!("job-0123456789abcdef")]
        }),
        rust_task::<OrShort<JobInput>, ResultOutput>(
            "async.result",
            "A job's result: the task's output and route when done, its error when failed",
            || vec![json!({"job_id": "job-0123456789abcdef"})],
        ),
        rust_task::<OrShort<JobInput>, CancelOutput>("async.cancel", "Cancels a queued or running job", || {
            vec![json!({"job_id": "job-0123456789abcdef"})]
        }),
        rust_task::<OrShort<ListInput>, ListOutput>(
            "async.list",
            "The jobs, newest first (optionally of one state)",
            || vec![json!({}), json!({"state": "running", "limit": 10})],
        ),
    ]
}

/// The AsyncProcessor behaviour.
pub struct AsyncProcessor {
    jobs: Arc<Jobs>,
    /// The runner while the agent runs (aborted on stop, with the jobs it runs).
    runner: Background,
}

impl AsyncProcessor {
    /// The behaviour: jobs in `store`, run through `fleet`, their inputs
    /// checked against `table`.
    pub fn new(
        store: Store,
        fleet: Fleet,
        table: Arc<TaskTable>,
        settings: JobSettings,
        events: EventBus,
        metrics: Metrics,
    ) -> AsyncProcessor {
        AsyncProcessor {
            jobs: Arc::new(Jobs {
                store,
                fleet,
                table,
                settings,
                events,
                metrics,
                state: Mutex::new(Queue::default()),
                wake: Notify::new(),
            }),
            runner: Background::default(),
        }
    }
}

/// What the runner shares with the handlers.
struct Jobs {
    store: Store,
    fleet: Fleet,
    table: Arc<TaskTable>,
    settings: JobSettings,
    events: EventBus,
    metrics: Metrics,
    state: Mutex<Queue>,
    /// Wakes the runner: a job queued or finished.
    wake: Notify,
}

/// The in-memory queue.
#[derive(Default)]
struct Queue {
    /// Queued jobs: priority (9 first), then submission order.
    heap: BinaryHeap<(u8, Reverse<i64>, String)>,
    /// Running jobs and their cancel tokens.
    running: HashMap<String, CancellationToken>,
    /// Jobs cancelled while queued or waiting to retry (skipped when popped).
    cancelled: HashSet<String>,
    /// Last submission number.
    seq: i64,
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("job store: {e}"))
}

fn not_found(id: &str) -> TaskError {
    tracing::info!(agent = AGENT, job_id = id, "unknown job id");
    TaskError::new(ErrorCode::NotFound, format!("no job {id}"))
}

#[async_trait]
impl Behaviour for AsyncProcessor {
    async fn start(&self) -> Result<(), StartError> {
        let recovered = self.jobs.recover().await.map_err(|e| StartError::Failed {
            agent: AGENT.into(),
            reason: format!("cannot read the jobs table: {e}"),
        })?;
        if recovered > 0 {
            tracing::info!(jobs = recovered, "jobs queued or running before the restart run again");
        }
        self.runner.start(self.jobs.clone().run());
        Ok(())
    }

    async fn stop(&self) {
        self.runner.stop();
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "async.submit" => {
                let input: SubmitInput = decode(t, &task.input)?;
                encode(t, self.jobs.submit(input).await?)
            }
            "async.status" => {
                let OrShort(JobInput { job_id: Name(id) }) = decode(t, &task.input)?;
                let row = self.jobs.row(&id).await?.ok_or_else(|| not_found(&id))?;
                encode(t, row.status())
            }
            "async.result" => {
                let OrShort(JobInput { job_id: Name(id) }) = decode(t, &task.input)?;
                let row = self.jobs.row(&id).await?.ok_or_else(|| not_found(&id))?;
                encode(t, row.result())
            }
            "async.cancel" => {
                let OrShort(JobInput { job_id: Name(id) }) = decode(t, &task.input)?;
                encode(t, self.jobs.cancel(&id).await?)
            }
            "async.list" => {
                let OrShort(ListInput { state, limit }) = decode(t, &task.input)?;
                let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT).min(10_000);
                encode(t, ListOutput { jobs: self.jobs.list(state.map(JobState::as_str), limit).await? })
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

impl Jobs {
    /// Puts jobs left `running` back to `queued`, loads the queue, deletes
    /// finished jobs past retention, and sets the gauges; the jobs queued.
    async fn recover(&self) -> Result<usize, StoreError> {
        let retention = self.settings.retention_secs;
        let (queued, max_seq) = self
            .store
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'", [])?;
                tx.execute(
                    "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1",
                    params![unix_time() - retention],
                )?;
                let queued = {
                    let mut stmt = tx.prepare("SELECT id, priority, seq FROM jobs WHERE state = 'queued'")?;
                    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u8>(1)?, r.get(2)?)))?;
                    rows.collect::<Result<Vec<(String, u8, i64)>, _>>()?
                };
                let max_seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM jobs", [], |r| r.get(0))?;
                tx.commit()?;
                Ok((queued, max_seq))
            })
            .await?;
        let n = queued.len();
        {
            let mut q = self.state.lock();
            q.heap.clear();
            q.running.clear();
            q.seq = q.seq.max(max_seq);
            for (id, priority, seq) in queued {
                q.heap.push((priority, Reverse(seq), id));
            }
        }
        self.refresh_gauges().await;
        Ok(n)
    }

    /// `agentvisor_jobs{state}` from the table.
    async fn refresh_gauges(&self) {
        let counts = self
            .store
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                Ok(rows.collect::<Result<HashMap<String, i64>, _>>()?)
            })
            .await
            .unwrap_or_default();
        for s in STATES {
            self.metrics.jobs.with_label_values(&[s]).set(counts.get(s).copied().unwrap_or(0));
        }
    }

    /// One job moved from `from` to `to` (`agentvisor_jobs{state}`).
    fn move_gauge(&self, from: JobState, to: JobState) {
        self.metrics.jobs.with_label_values(&[from.as_str()]).dec();
        self.metrics.jobs.with_label_values(&[to.as_str()]).inc();
    }

    fn emit(
        &self,
        job_id: &str,
        state: &'static str,
        attempts: u32,
        task_type: Option<String>,
        code: Option<&'static str>,
    ) {
        let topic = match state {
            "queued" if attempts > 0 => "job.retrying",
            "queued" => "job.queued",
            "running" => "job.running",
            "done" => "job.done",
            "failed" => "job.failed",
            _ => "job.cancelled",
        };
        self.events.emit(Event::Job(JobChange {
            job_id: job_id.to_string(),
            state,
            topic,
            attempts,
            task_type,
            code,
            retry_in_seconds: None,
        }));
    }

    async fn submit(&self, input: SubmitInput) -> Result<SubmitOutput, TaskError> {
        let SubmitInput { task, priority, max_attempts } = input;
        if task.task_type.is_none() && task.agent.is_none() {
            tracing::info!(agent = AGENT, "job refused: neither type nor agent");
            return Err(TaskError::new(ErrorCode::InvalidField, "input of async.submit: task needs type or agent"));
        }
        // Refuse now what could never run: an unknown agent or type, an input its type refuses.
        self.fleet.resolve(task.agent.as_deref(), task.task_type.as_deref())?;
        // As the bus: a type with a schema must fit it (a type without one
        // goes to `bus.default_agent`, resolved above).
        if let Some(t) = task.task_type.as_deref().filter(|t| self.table.get(t).is_some()) {
            self.table.decode(t, &task.input)?;
        }
        let priority = priority.map_or(5, |p| p.0 as u8);
        let max_attempts = max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| m.0 as u32);
        let id = format!("job-{}", uuid::Uuid::new_v4().simple());
        let seq = {
            let mut q = self.state.lock();
            q.seq += 1;
            q.seq
        };
        let body = serde_json::to_string(&task).unwrap_or_default();
        let (row_id, task_type, agent) = (id.clone(), task.task_type.clone(), task.agent.clone());
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO jobs (id, seq, state, priority, attempts, max_attempts, task, task_type, agent, created_at)
                     VALUES (?1, ?2, 'queued', ?3, 0, ?4, ?5, ?6, ?7, ?8)",
                    params![row_id, seq, priority, max_attempts, body, task_type, agent, unix_time()],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        self.metrics.jobs.with_label_values(&["queued"]).inc();
        self.emit(&id, "queued", 0, task.task_type.clone(), None);
        self.state.lock().heap.push((priority, Reverse(seq), id.clone()));
        self.wake.notify_one();
        Ok(SubmitOutput { job_id: id, state: JobState::Queued })
    }

    async fn row(&self, id: &str) -> Result<Option<JobRow>, TaskError> {
        let id = id.to_string();
        self.store
            .call(move |conn| {
                Ok(conn.query_row(&format!("{SELECT} WHERE id = ?1"), params![id], JobRow::read).optional()?)
            })
            .await
            .map_err(store_error)
    }

    async fn list(&self, state: Option<&'static str>, limit: u32) -> Result<Vec<JobStatus>, TaskError> {
        self.store
            .call(move |conn| {
                let sql = format!("{SELECT} WHERE (?1 IS NULL OR state = ?1) ORDER BY seq DESC LIMIT ?2");
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(params![state, limit], JobRow::read)?;
                Ok(rows.map(|r| r.map(|r| r.status())).collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(store_error)
    }

    async fn cancel(&self, id: &str) -> Result<CancelOutput, TaskError> {
        let row = self.row(id).await?.ok_or_else(|| not_found(id))?;
        let state = JobState::parse(&row.state);
        if !matches!(state, JobState::Queued | JobState::Running) {
            return Ok(CancelOutput { job_id: id.to_string(), cancelled: false, state });
        }
        {
            let mut q = self.state.lock();
            if let Some(token) = q.running.get(id) {
                token.cancel();
            }
            q.cancelled.insert(id.to_string());
        }
        self.finish(id, state, row.attempts, JobState::Cancelled, None, None, row.task_type.clone(), None).await?;
        Ok(CancelOutput { job_id: id.to_string(), cancelled: true, state: JobState::Cancelled })
    }

    /// Ends job `id` in `state` with its output or error (not over a job
    /// already finished: a cancel wins over the attempt it stopped).
    #[expect(clippy::too_many_arguments, reason = "one row update; the fields are the row's")]
    async fn finish(
        &self,
        id: &str,
        from: JobState,
        attempts: u32,
        state: JobState,
        output: Option<(Value, Option<Value>)>,
        error: Option<&TaskError>,
        task_type: Option<String>,
        created_at: Option<f64>,
    ) -> Result<(), TaskError> {
        let (row_id, s) = (id.to_string(), state.as_str());
        let (out, route) = match output {
            Some((o, r)) => (Some(o.to_string()), r.map(|r| r.to_string())),
            None => (None, None),
        };
        let (code, message) = match error {
            Some(e) => (Some(e.code.as_str()), Some(e.message.clone())),
            None => (None, None),
        };
        let changed = self
            .store
            .call(move |conn| {
                Ok(conn.execute(
                    "UPDATE jobs SET state = ?2, finished_at = ?3, output = ?4, route = ?5, error_code = ?6,
                     error_message = ?7, next_attempt_at = NULL
                     WHERE id = ?1 AND state IN ('queued', 'running')",
                    params![row_id, s, unix_time(), out, route, code, message],
                )?)
            })
            .await
            .map_err(store_error)?;
        if changed > 0 {
            self.emit(id, s, attempts, task_type, error.map(|e| e.code.as_str()));
            if let Some(c) = created_at {
                self.metrics.job_duration.observe((unix_time() - c).max(0.0));
            }
            self.move_gauge(from, state);
        }
        Ok(())
    }

    /// The runner: starts queued jobs while fewer than `max_running` run;
    /// deletes finished jobs past retention now and then. Runs until aborted
    /// (the jobs it started are aborted with it: they run again at the next
    /// start).
    async fn run(self: Arc<Self>) {
        let max = self.settings.max_running();
        let mut running = tokio::task::JoinSet::new();
        let mut last_sweep = Instant::now();
        loop {
            loop {
                let next = {
                    let mut q = self.state.lock();
                    if q.running.len() >= max {
                        None
                    } else {
                        let mut next = None;
                        while let Some((_, _, id)) = q.heap.pop() {
                            if q.cancelled.remove(&id) {
                                continue;
                            }
                            let token = CancellationToken::new();
                            q.running.insert(id.clone(), token.clone());
                            next = Some((id, token));
                            break;
                        }
                        next
                    }
                };
                let Some((id, token)) = next else { break };
                let jobs = self.clone();
                running.spawn(async move { jobs.attempt(id, token).await });
            }
            if last_sweep.elapsed() >= RETENTION_SWEEP {
                last_sweep = Instant::now();
                let cutoff = unix_time() - self.settings.retention_secs;
                let _ = self
                    .store
                    .call(move |conn| {
                        Ok(conn.execute(
                            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1",
                            params![cutoff],
                        )?)
                    })
                    .await;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                Some(_) = running.join_next() => {}
                () = tokio::time::sleep(RETENTION_SWEEP) => {}
            }
        }
    }

    /// One attempt of job `id`: marks it running, runs its task, then ends
    /// it (done, failed, or queued again for a retry after a backoff).
    async fn attempt(self: Arc<Self>, id: String, token: CancellationToken) {
        let outcome = self.try_attempt(&id, &token).await;
        if let Err(e) = outcome {
            tracing::error!(job_id = %id, error = %e, "job attempt could not be recorded");
        }
        self.state.lock().running.remove(&id);
        self.wake.notify_one();
    }

    async fn try_attempt(self: &Arc<Self>, id: &str, token: &CancellationToken) -> Result<(), TaskError> {
        let row_id = id.to_string();
        let row = self
            .store
            .call(move |conn| {
                let changed = conn.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?2, next_attempt_at = NULL
                     WHERE id = ?1 AND state = 'queued'",
                    params![row_id, unix_time()],
                )?;
                if changed == 0 {
                    return Ok(None);
                }
                Ok(conn.query_row(&format!("{SELECT} WHERE id = ?1"), params![row_id], JobRow::read).optional()?)
            })
            .await
            .map_err(store_error)?;
        let Some(row) = row else { return Ok(()) };
        self.move_gauge(JobState::Queued, JobState::Running);
        self.emit(id, "running", row.attempts, row.task_type.clone(), None);
        let envelope: JobTask = match serde_json::from_str(&row.task) {
            Ok(t) => t,
            Err(e) => {
                let e = TaskError::new(ErrorCode::Internal, format!("stored task of job {id} unreadable: {e}"));
                return self
                    .finish(
                        id,
                        JobState::Running,
                        row.attempts,
                        JobState::Failed,
                        None,
                        Some(&e),
                        row.task_type,
                        Some(row.created_at),
                    )
                    .await;
            }
        };
        let answer = tokio::select! {
            r = self.run_task(id, row.attempts, &envelope, token) => r,
            () = token.cancelled() => Err(TaskError::new(ErrorCode::Cancelled, format!("job {id} was cancelled"))),
        };
        self.metrics
            .job_attempts
            .with_label_values(&[match &answer {
                Ok(_) => "ok",
                Err(e) => e.code.as_str(),
            }])
            .inc();
        match answer {
            Ok((output, route)) => {
                self.finish(
                    id,
                    JobState::Running,
                    row.attempts,
                    JobState::Done,
                    Some((output, route)),
                    None,
                    row.task_type,
                    Some(row.created_at),
                )
                .await
            }
            Err(e) if e.code == ErrorCode::Cancelled => Ok(()),
            Err(e) if e.code.is_retryable() && row.attempts < row.max_attempts => {
                let s = &self.settings;
                let base = s.retry_initial_secs.max(0.0) * 2f64.powi(row.attempts.saturating_sub(1).min(30) as i32);
                let delay = base.min(s.retry_max_secs.max(0.0)) * (0.8 + 0.4 * rand::random::<f64>());
                let (row_id, code) = (id.to_string(), e.code.as_str());
                let message = e.message.clone();
                self.store
                    .call(move |conn| {
                        Ok(conn.execute(
                            "UPDATE jobs SET state = 'queued', next_attempt_at = ?2, error_code = ?3, error_message = ?4
                             WHERE id = ?1 AND state = 'running'",
                            params![row_id, unix_time() + delay, code, message],
                        )?)
                    })
                    .await
                    .map_err(store_error)?;
                tracing::info!(
                    job_id = id,
                    attempt = row.attempts,
                    code,
                    retry_in_seconds = delay,
                    "job attempt failed; retrying"
                );
                self.events.emit(Event::Job(JobChange {
                    job_id: id.to_string(),
                    state: "queued",
                    topic: "job.retrying",
                    attempts: row.attempts,
                    task_type: row.task_type.clone(),
                    code: Some(e.code.as_str()),
                    retry_in_seconds: Some(delay),
                }));
                self.move_gauge(JobState::Running, JobState::Queued);
                let (jobs, id, priority, seq) = (self.clone(), id.to_string(), row.priority, row.seq);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                    jobs.state.lock().heap.push((priority, Reverse(seq), id));
                    jobs.wake.notify_one();
                });
                Ok(())
            }
            Err(e) => {
                tracing::info!(job_id = id, attempt = row.attempts, code = e.code.as_str(), error = %e.message, "job failed");
                self.finish(
                    id,
                    JobState::Running,
                    row.attempts,
                    JobState::Failed,
                    None,
                    Some(&e),
                    row.task_type,
                    Some(row.created_at),
                )
                .await
            }
        }
    }

    /// Runs the job's task through the normal dispatch: the agent resolved
    /// as the bus resolves it, the input checked against the task table, the
    /// agent called through the fleet (started on demand).
    async fn run_task(
        &self,
        id: &str,
        attempt: u32,
        task: &JobTask,
        token: &CancellationToken,
    ) -> Result<(Value, Option<Value>), TaskError> {
        let agent = self.fleet.resolve(task.agent.as_deref(), task.task_type.as_deref())?;
        let ctx = self.fleet.ctx();
        let task_type = match &task.task_type {
            Some(t) => t.clone(),
            None => ctx.catalog.get(&agent).and_then(|s| s.handles.first().cloned()).unwrap_or_default(),
        };
        if self.table.get(&task_type).is_some() {
            self.table.decode(&task_type, &task.input)?;
        }
        let work = Task {
            id: format!("{id}#{attempt}"),
            task_type,
            input: task.input.clone(),
            deadline: task.deadline_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
            chunks: None,
            cancel: token.child_token(),
            session: task.session.clone(),
            user: task.user.clone(),
            model: None,
            prefer: None,
            complexity: None,
            queue_ms: 0.0,
            schedule: Schedule::default(),
        };
        let out = self.fleet.call(&agent, work).await?;
        let route = out.route.as_ref().and_then(|r| serde_json::to_value(r).ok());
        Ok((out.output, route))
    }
}

/// The columns [`JobRow::read`] reads.
const SELECT: &str = "SELECT id, seq, state, priority, attempts, max_attempts, task, task_type, agent, created_at,
    started_at, finished_at, next_attempt_at, output, route, error_code, error_message FROM jobs";

struct JobRow {
    id: String,
    seq: i64,
    state: String,
    priority: u8,
    attempts: u32,
    max_attempts: u32,
    task: String,
    task_type: Option<String>,
    agent: Option<String>,
    created_at: f64,
    started_at: Option<f64>,
    finished_at: Option<f64>,
    next_attempt_at: Option<f64>,
    output: Option<String>,
    route: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

impl JobRow {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
        Ok(JobRow {
            id: r.get(0)?,
            seq: r.get(1)?,
            state: r.get(2)?,
            priority: r.get(3)?,
            attempts: r.get(4)?,
            max_attempts: r.get(5)?,
            task: r.get(6)?,
            task_type: r.get(7)?,
            agent: r.get(8)?,
            created_at: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            next_attempt_at: r.get(12)?,
            output: r.get(13)?,
            route: r.get(14)?,
            error_code: r.get(15)?,
            error_message: r.get(16)?,
        })
    }

    fn status(&self) -> JobStatus {
        JobStatus {
            job_id: self.id.clone(),
            state: JobState::parse(&self.state),
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            task_type: self.task_type.clone(),
            agent: self.agent.clone(),
            priority: self.priority,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            next_attempt_at: self.next_attempt_at,
        }
    }

    fn result(&self) -> ResultOutput {
        let state = JobState::parse(&self.state);
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        let error = match (&self.error_code, &self.error_message, state) {
            (Some(code), Some(message), JobState::Failed | JobState::Queued | JobState::Running) => {
                Some(ErrorOutput { code: code.clone(), message: message.clone() })
            }
            _ => None,
        };
        ResultOutput {
            job_id: self.id.clone(),
            state,
            attempts: self.attempts,
            output: if state == JobState::Done { parse(&self.output) } else { None },
            route: parse(&self.route),
            error,
        }
    }
}

/// A bounded integer: `MIN..=MAX`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounded<const MIN: i64, const MAX: i64>(pub i64);

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(deserializer)?;
        if (MIN..=MAX).contains(&v) {
            Ok(Bounded(v))
        } else {
            Err(de::Error::custom(format!("must be within {MIN}..={MAX}, got {v}")))
        }
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for Bounded<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Bounded{MIN}to{MAX}").into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": MIN, "maximum": MAX})
    }
}

/// A task envelope as a job runs it (the bus envelope's fields that a job
/// keeps; there is no field for a credential, so none is ever stored).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobTask {
    /// The task type; selects the agent through the catalog's `handles`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Names the agent directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The task's input (any JSON).
    #[serde(default)]
    pub input: Value,
    /// Conversation session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who is asking (reaches the routing receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Milliseconds each attempt may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// The task to run as a job, and how.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitInput {
    /// The task envelope (`type` or `agent`, `input`, ...); it runs through the normal dispatch.
    pub task: JobTask,
    /// 0–9, 9 first; default 5.
    #[serde(default)]
    priority: Option<Bounded<0, 9>>,
    /// Attempts on retryable errors, 1–100; default 3.
    #[serde(default)]
    max_attempts: Option<Bounded<1, 100>>,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Queued,
        }
    }
}

/// The job submitted.
#[derive(Serialize, JsonSchema)]
pub(crate) struct SubmitOutput {
    /// The job's id (`job-…`).
    pub job_id: String,
    /// `queued`.
    state: JobState,
}

/// The job.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobInput {
    /// The job's id.
    job_id: Name,
}

impl Shorthand for JobInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The job's id alone.";
    fn expand(job_id: Name) -> JobInput {
        JobInput { job_id }
    }
}

/// A job's state, attempts and timings.
#[derive(Serialize, JsonSchema)]
struct JobStatus {
    /// The job's id.
    job_id: String,
    /// Its state.
    state: JobState,
    /// Attempts started so far (a job running at a crash counts one more when it runs again).
    attempts: u32,
    /// Attempts allowed.
    max_attempts: u32,
    /// The task type, when the envelope named one.
    task_type: Option<String>,
    /// The agent, when the envelope named one.
    agent: Option<String>,
    /// 0–9.
    priority: u8,
    /// Submitted, Unix seconds.
    created_at: f64,
    /// The latest attempt's start, Unix seconds.
    started_at: Option<f64>,
    /// Finished, Unix seconds.
    finished_at: Option<f64>,
    /// The next attempt, Unix seconds, while waiting to retry.
    next_attempt_at: Option<f64>,
}

/// An error.
#[derive(Serialize, JsonSchema)]
struct ErrorOutput {
    /// Stable code.
    code: String,
    /// What went wrong.
    message: String,
}

/// A job's result.
#[derive(Serialize, JsonSchema)]
struct ResultOutput {
    /// The job's id.
    job_id: String,
    /// Its state.
    state: JobState,
    /// Attempts started.
    attempts: u32,
    /// The task's output when done (any JSON).
    output: Option<Value>,
    /// The routing receipt of the last attempt, when a model was called.
    route: Option<Value>,
    /// The last attempt's error (failed; or queued for a retry).
    error: Option<ErrorOutput>,
}

/// The cancel's outcome.
#[derive(Serialize, JsonSchema)]
struct CancelOutput {
    /// The job's id.
    job_id: String,
    /// `false` when the job had already finished.
    cancelled: bool,
    /// Its state now.
    state: JobState,
}

/// Which jobs to list.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListInput {
    /// Only jobs in this state.
    #[serde(default)]
    state: Option<JobState>,
    /// Most jobs to list, 1–10 000; default 100.
    #[serde(default)]
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<u32>,
}

impl Shorthand for ListInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: the latest 100 jobs.";
    fn expand(_: Null) -> ListInput {
        ListInput { state: None, limit: None }
    }
}

/// The jobs.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// Newest first.
    jobs: Vec<JobStatus>,
}
