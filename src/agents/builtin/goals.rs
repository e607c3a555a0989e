//! GoalManager: decomposes a goal into subtasks through the arbiter
//! (ModelOrchestrator picks a specialist, which answers the plan as JSON),
//! runs each subtask — a real task to the agent that handles its type — as
//! an AsyncProcessor job (directly, one after the other, when the run has no
//! AsyncProcessor), and tracks them until every one has ended.
//!
//! State: the `goals` table ([`crate::store::goals`]), written before
//! `goal.create` answers and at each subtask change; in memory, one watcher
//! per running goal (polling its jobs every [`POLL`]). Durable: when the
//! agent starts (after a daemon restart too) it watches the goals the table
//! has as `running` again; their jobs are AsyncProcessor's durable jobs.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `goal.create` | `{"text"}` | the goal: `{"goal_id", "text", "state", "subtasks": [...], ...}` |
//! | `goal.status` | `{"goal_id"}` or the id as text | the goal with each subtask's state, output, error |
//! | `goal.list` | nothing, or `{"state"?, "limit"?}` | `{"goals": [...]}`, newest first |
//! | `goal.cancel` | `{"goal_id"}` or the id as text | `{"goal_id", "cancelled", "state"}` |
//!
//! Errors: a plan that is not a JSON list of 1..=[`MAX_SUBTASKS`] known,
//! allowed task types with valid inputs is `invalid_output` (no goal is
//! stored); an unknown goal is `not_found`; the arbiter's own errors
//! (`no_backend`, ...) are passed on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Null;
use super::{Answer, Behaviour, Name, Text, extract_json, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, TaskTable, decode, encode, rust_task};
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::{Store, StoreError};
use crate::supervisor::{Peers, StartError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "GoalManager";

/// The arbiter asked for the plan.
const ARBITER: &str = "ModelOrchestrator";

/// The job agent the subtasks run on.
const JOBS: &str = "AsyncProcessor";

/// Most subtasks of a goal.
pub(crate) const MAX_SUBTASKS: usize = 8;

/// How often a watcher looks at its goal's jobs.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Default goals `goal.list` returns.
const DEFAULT_LIST_LIMIT: u32 = 50;

/// Task types a plan may not use: the fleet's own machinery.
const REFUSED_PREFIXES: &[&str] =
    &["goal.", "async.", "schedule.", "system.", "lazy.", "resource.", "registry.", "models.", "identity."];

/// The task types of GoalManager.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<CreateInput, GoalOutput>(
            "goal.create",
            "Decomposes a goal into subtasks through the arbiter and runs them as tracked jobs",
            || {
                vec![
                    json!({"text": "Plan a three-day trip to Lisbon in May: flights, a hotel near the centre and a day-by-day itinerary."}),
                ]
            },
        ),
        rust_task::<OrShort<GoalInput>, GoalOutput>(
            "goal.status",
            "A goal and the state, output or error of each of its subtasks",
            || vec![json!({"goal_id": "goal-7f3a"}), json!("goal-7f3a")],
        ),
        rust_task::<OrShort<ListInput>, ListOutput>(
            "goal.list",
            "The goals, newest first, optionally only those in one state",
            || vec![json!({}), json!({"state": "running", "limit": 10})],
        ),
        rust_task::<OrShort<GoalInput>, CancelOutput>(
            "goal.cancel",
            "Cancels a goal and its subtasks that have not finished",
            || vec![json!({"goal_id": "goal-7f3a"})],
        ),
    ]
}

/// The GoalManager behaviour.
pub struct GoalManager {
    goals: Arc<Goals>,
}

/// What the handlers and the watchers share.
struct Goals {
    store: Store,
    peers: Arc<dyn Peers>,
    table: Arc<TaskTable>,
    events: EventBus,
    metrics: Metrics,
    /// Serialises read-modify-write of goal rows (watchers, cancel).
    write: tokio::sync::Mutex<()>,
    /// The watcher of each running goal.
    watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl GoalManager {
    /// The behaviour: goals in `store`, planned and run through `peers`,
    /// subtask inputs checked against `table`.
    pub fn new(
        store: Store,
        peers: Arc<dyn Peers>,
        table: Arc<TaskTable>,
        events: EventBus,
        metrics: Metrics,
    ) -> GoalManager {
        GoalManager {
            goals: Arc::new(Goals {
                store,
                peers,
                table,
                events,
                metrics,
                write: tokio::sync::Mutex::new(()),
                watchers: Mutex::new(HashMap::new()),
            }),
        }
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("goal store: {e}"))
}

fn not_found(id: &str) -> TaskError {
    TaskError::new(ErrorCode::NotFound, format!("no goal {id:?}"))
}

fn invalid_plan(what: impl std::fmt::Display) -> TaskError {
    TaskError::new(ErrorCode::InvalidOutput, format!("the goal's plan is not usable: {what}"))
}

#[async_trait]
impl Behaviour for GoalManager {
    async fn start(&self) -> Result<(), StartError> {
        let running = self
            .goals
            .ids_in("running")
            .await
            .map_err(|e| StartError::Failed { agent: AGENT.to_string(), reason: format!("goals not read: {e}") })?;
        if !running.is_empty() {
            tracing::info!(goals = running.len(), "watching running goals again");
        }
        for id in running {
            self.goals.watch(id);
        }
        Ok(())
    }

    async fn stop(&self) {
        for (_, w) in self.goals.watchers.lock().drain() {
            w.abort();
        }
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "goal.create" => {
                let CreateInput { text } = decode(t, &task.input)?;
                encode(t, self.goals.create(&task, text.trimmed()).await?)
            }
            "goal.status" => {
                let OrShort(GoalInput { goal_id: Name(id) }) = decode(t, &task.input)?;
                encode(t, self.goals.load(&id).await?.ok_or_else(|| not_found(&id))?)
            }
            "goal.list" => {
                let OrShort(ListInput { state, limit }) = decode(t, &task.input)?;
                let limit = limit.map_or(DEFAULT_LIST_LIMIT, |l| l.clamp(1, 1000));
                encode(t, ListOutput { goals: self.goals.list(state, limit).await? })
            }
            "goal.cancel" => {
                let OrShort(GoalInput { goal_id: Name(id) }) = decode(t, &task.input)?;
                encode(t, self.goals.cancel(&id).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

impl Goals {
    /// Asks the arbiter for a plan and checks it: (the specialist, the subtasks).
    async fn plan(&self, task: &Task, text: &str) -> Result<(Option<String>, Vec<Subtask>), TaskError> {
        let mut menu = String::new();
        for def in self.table.iter().filter(|d| d.runtime == "llm" && d.agent != ARBITER) {
            menu.push_str(&format!(
                "- {} ({}): {}; example input: {}\n",
                def.task_type, def.agent, def.summary, def.example
            ));
        }
        let prompt = format!(
            "Decompose this goal into 3 to {MAX_SUBTASKS} subtasks, each one task for one agent of the fleet. \
             Answer with only a JSON object {{\"subtasks\": [{{\"type\": \"<task type>\", \"input\": <its input>}}, ...]}}, \
             in the order they should run. Task types:\n{menu}\nGoal: {text}"
        );
        let mut ask = Task::new(format!("{}-plan", task.id), "orchestrate", json!(prompt));
        ask.session = task.session.clone();
        ask.user = task.user.clone();
        ask.deadline = task.deadline;
        ask.cancel = task.cancel.clone();
        let out = self.peers.call(ARBITER, ask).await?.output;
        let planner = out.get("specialist").and_then(Value::as_str).map(str::to_string);
        let answer = out.get("answer").cloned().unwrap_or(Value::Null);
        let plan = match &answer {
            Value::String(s) => extract_json(s),
            Value::Object(_) => Some(answer.clone()),
            _ => None,
        }
        .ok_or_else(|| invalid_plan(format!("no JSON object in the answer {answer}")))?;
        let items = plan.get("subtasks").and_then(Value::as_array).ok_or_else(|| invalid_plan("no `subtasks` list"))?;
        if items.is_empty() || items.len() > MAX_SUBTASKS {
            return Err(invalid_plan(format!("{} subtasks (1 to {MAX_SUBTASKS} allowed)", items.len())));
        }
        let mut subtasks = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let task_type = item.get("type").and_then(Value::as_str).unwrap_or_default().trim().to_string();
            let def = self
                .table
                .get(&task_type)
                .filter(|_| !REFUSED_PREFIXES.iter().any(|p| task_type.starts_with(p)))
                .ok_or_else(|| invalid_plan(format!("subtask {index}: task type {task_type:?} is not allowed")))?;
            let input = item.get("input").cloned().unwrap_or(Value::Null);
            self.table
                .decode(&task_type, &input)
                .map_err(|e| invalid_plan(format!("subtask {index}: {}", e.message)))?;
            subtasks.push(Subtask {
                index: index as u32,
                task_type,
                agent: Some(def.agent.clone()),
                input,
                job_id: None,
                state: SubState::Pending,
                output: None,
                error: None,
            });
        }
        Ok((planner, subtasks))
    }

    async fn create(self: &Arc<Self>, task: &Task, text: String) -> Result<GoalOutput, TaskError> {
        let (planner, mut subtasks) = self.plan(task, &text).await.inspect_err(|e| {
            tracing::warn!(task_id = %task.id, code = e.code.as_str(), error = %e.message, "goal not planned");
            self.metrics.goals.with_label_values(&["unplanned"]).inc();
        })?;
        let goal_id = format!("goal-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let mut goal = GoalOutput {
            goal_id: goal_id.clone(),
            text,
            state: GoalState::Running,
            planner,
            subtasks: Vec::new(),
            created_at: unix_time(),
            finished_at: None,
        };
        // Jobs where available; else the watcher runs them one by one.
        if self.peers.state(JOBS).is_some() {
            for s in &mut subtasks {
                let submit = json!({"task": {"type": s.task_type, "input": s.input, "session": task.session, "user": task.user}});
                let mut t = Task::new(format!("{}-{}", goal_id, s.index), "async.submit", strip_nulls(submit));
                t.user = task.user.clone();
                match self.peers.call(JOBS, t).await {
                    Ok(out) => {
                        s.job_id = out.output.get("job_id").and_then(Value::as_str).map(str::to_string);
                        s.state = SubState::Queued;
                    }
                    Err(e) => {
                        s.state = SubState::Failed;
                        s.error = Some(ErrorOutput { code: e.code.as_str().to_string(), message: e.message });
                    }
                }
            }
        }
        goal.subtasks = subtasks;
        let (user, session) = (task.user.clone(), task.session.clone());
        let row = goal.clone();
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO goals (id, text, user, session, state, subtasks, planner, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![row.goal_id, row.text, user, session, row.state.as_str(), subtasks_json(&row.subtasks), row.planner, row.created_at],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        self.metrics.goals.with_label_values(&["running"]).inc();
        self.events.emit(Event::GoalCreated { goal_id: goal_id.clone(), subtasks: goal.subtasks.len() });
        tracing::info!(goal_id, subtasks = goal.subtasks.len(), "goal created");
        self.watch(goal_id);
        Ok(goal)
    }

    /// Starts the watcher of a running goal.
    fn watch(self: &Arc<Self>, goal_id: String) {
        let me = self.clone();
        let id = goal_id.clone();
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                match me.step(&id).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => tracing::warn!(goal_id = %id, error = %e, "goal not updated"),
                }
            }
            me.watchers.lock().remove(&id);
        });
        if let Some(old) = self.watchers.lock().insert(goal_id, handle) {
            old.abort();
        }
    }

    /// One look at a running goal's subtasks; `false` once it has ended.
    async fn step(&self, id: &str) -> Result<bool, TaskError> {
        let Some(goal) = self.load(id).await? else { return Ok(false) };
        if goal.state != GoalState::Running {
            return Ok(false);
        }
        // What the jobs say now (outside the write lock: calls take time).
        let mut news: Vec<(u32, SubState, Option<Value>, Option<ErrorOutput>)> = Vec::new();
        for s in goal.subtasks.iter().filter(|s| !s.state.is_final()) {
            match &s.job_id {
                Some(job) => {
                    let q = Task::new(format!("{id}-{}-poll", s.index), "async.result", json!({"job_id": job}));
                    let r = self.peers.call(JOBS, q).await?.output;
                    let state = match r.get("state").and_then(Value::as_str) {
                        Some("queued") => SubState::Queued,
                        Some("running") => SubState::Running,
                        Some("done") => SubState::Done,
                        Some("failed") => SubState::Failed,
                        Some("cancelled") => SubState::Cancelled,
                        _ => continue,
                    };
                    let error = r.get("error").and_then(|e| serde_json::from_value(e.clone()).ok());
                    if state != s.state || state.is_final() {
                        news.push((s.index, state, r.get("output").cloned().filter(|v| !v.is_null()), error));
                    }
                }
                None => {
                    // No AsyncProcessor: run it here, in order.
                    let t = Task::new(format!("{id}-{}", s.index), s.task_type.clone(), s.input.clone());
                    let agent = s.agent.clone().unwrap_or_default();
                    news.push(match self.peers.call(&agent, t).await {
                        Ok(out) => (s.index, SubState::Done, Some(out.output), None),
                        Err(e) => (
                            s.index,
                            SubState::Failed,
                            None,
                            Some(ErrorOutput { code: e.code.as_str().to_string(), message: e.message }),
                        ),
                    });
                    break;
                }
            }
        }
        let _guard = self.write.lock().await;
        let Some(mut goal) = self.load(id).await? else { return Ok(false) };
        if goal.state != GoalState::Running {
            return Ok(false);
        }
        for (index, state, output, error) in news {
            if let Some(s) = goal.subtasks.iter_mut().find(|s| s.index == index) {
                s.state = state;
                s.output = output;
                s.error = error;
            }
        }
        let ended = goal.subtasks.iter().all(|s| s.state.is_final());
        if ended {
            goal.state = if goal.subtasks.iter().all(|s| s.state == SubState::Done) {
                GoalState::Done
            } else {
                GoalState::Failed
            };
            goal.finished_at = Some(unix_time());
        }
        self.save(&goal).await?;
        if ended {
            self.finished(&goal);
        }
        Ok(!ended)
    }

    fn finished(&self, goal: &GoalOutput) {
        let done = goal.subtasks.iter().filter(|s| s.state == SubState::Done).count();
        self.metrics.goals.with_label_values(&[goal.state.as_str()]).inc();
        self.events.emit(Event::GoalFinished {
            goal_id: goal.goal_id.clone(),
            state: goal.state.as_str(),
            subtasks_done: done,
            subtasks_total: goal.subtasks.len(),
        });
        tracing::info!(goal_id = %goal.goal_id, state = goal.state.as_str(), done, total = goal.subtasks.len(), "goal ended");
    }

    async fn cancel(&self, id: &str) -> Result<CancelOutput, TaskError> {
        let _guard = self.write.lock().await;
        let mut goal = self.load(id).await?.ok_or_else(|| not_found(id))?;
        if goal.state.is_final() {
            return Ok(CancelOutput { goal_id: goal.goal_id, cancelled: false, state: goal.state });
        }
        if let Some(w) = self.watchers.lock().remove(id) {
            w.abort();
        }
        for s in goal.subtasks.iter_mut().filter(|s| !s.state.is_final()) {
            if let Some(job) = &s.job_id {
                let t = Task::new(format!("{id}-{}-cancel", s.index), "async.cancel", json!({"job_id": job}));
                if let Err(e) = self.peers.call(JOBS, t).await {
                    tracing::warn!(goal_id = id, job, error = %e, "job not cancelled");
                }
            }
            s.state = SubState::Cancelled;
        }
        goal.state = GoalState::Cancelled;
        goal.finished_at = Some(unix_time());
        self.save(&goal).await?;
        self.finished(&goal);
        Ok(CancelOutput { goal_id: goal.goal_id, cancelled: true, state: goal.state })
    }

    async fn save(&self, goal: &GoalOutput) -> Result<(), TaskError> {
        let g = goal.clone();
        self.store
            .call(move |conn| {
                conn.execute(
                    "UPDATE goals SET state = ?2, subtasks = ?3, finished_at = ?4 WHERE id = ?1",
                    params![g.goal_id, g.state.as_str(), subtasks_json(&g.subtasks), g.finished_at],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }

    async fn load(&self, id: &str) -> Result<Option<GoalOutput>, TaskError> {
        let id = id.to_string();
        self.store
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, text, state, subtasks, planner, created_at, finished_at FROM goals WHERE id = ?1",
                        params![id],
                        read,
                    )
                    .optional()?)
            })
            .await
            .map_err(store_error)
    }

    async fn ids_in(&self, state: &'static str) -> Result<Vec<String>, StoreError> {
        self.store
            .call(move |conn| {
                let mut stmt = conn.prepare("SELECT id FROM goals WHERE state = ?1")?;
                let ids = stmt.query_map(params![state], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(ids)
            })
            .await
    }

    async fn list(&self, state: Option<GoalState>, limit: u32) -> Result<Vec<GoalSummary>, TaskError> {
        let state = state.map(GoalState::as_str);
        self.store
            .call(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, text, state, subtasks, planner, created_at, finished_at FROM goals
                     WHERE ?1 IS NULL OR state = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![state, limit], read)?;
                let mut out = Vec::new();
                for g in rows {
                    let g = g?;
                    out.push(GoalSummary {
                        subtasks_done: g.subtasks.iter().filter(|s| s.state == SubState::Done).count() as u32,
                        subtasks_total: g.subtasks.len() as u32,
                        goal_id: g.goal_id,
                        text: g.text,
                        state: g.state,
                        created_at: g.created_at,
                    });
                }
                Ok(out)
            })
            .await
            .map_err(store_error)
    }
}

/// An envelope without its null fields (AsyncProcessor's envelope refuses
/// no field that is null, but a smaller job row is easier to read).
fn strip_nulls(mut v: Value) -> Value {
    if let Some(task) = v.get_mut("task").and_then(Value::as_object_mut) {
        task.retain(|_, x| !x.is_null());
    }
    v
}

fn subtasks_json(subtasks: &[Subtask]) -> String {
    // Serialising plain data (strings, JSON values) cannot fail.
    serde_json::to_string(subtasks).unwrap_or_else(|_| "[]".into())
}

fn read(r: &rusqlite::Row) -> rusqlite::Result<GoalOutput> {
    let subtasks: String = r.get(3)?;
    let state: String = r.get(2)?;
    Ok(GoalOutput {
        goal_id: r.get(0)?,
        text: r.get(1)?,
        state: GoalState::parse(&state),
        subtasks: serde_json::from_str(&subtasks).unwrap_or_default(),
        planner: r.get(4)?,
        created_at: r.get(5)?,
        finished_at: r.get(6)?,
    })
}

/// A goal's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum GoalState {
    /// Being decomposed (never stored: a goal is stored once planned).
    Planning,
    /// Subtasks running.
    Running,
    /// Every subtask done.
    Done,
    /// Every subtask ended, at least one failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl GoalState {
    fn as_str(self) -> &'static str {
        match self {
            GoalState::Planning => "planning",
            GoalState::Running => "running",
            GoalState::Done => "done",
            GoalState::Failed => "failed",
            GoalState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> GoalState {
        match s {
            "planning" => GoalState::Planning,
            "running" => GoalState::Running,
            "done" => GoalState::Done,
            "cancelled" => GoalState::Cancelled,
            _ => GoalState::Failed,
        }
    }
    fn is_final(self) -> bool {
        matches!(self, GoalState::Done | GoalState::Failed | GoalState::Cancelled)
    }
}

/// A subtask's state (its job's, or `pending` before it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum SubState {
    /// Not submitted yet.
    Pending,
    /// Its job waits to run.
    Queued,
    /// Running.
    Running,
    /// Answered.
    Done,
    /// Failed (after its retries).
    Failed,
    /// Cancelled.
    Cancelled,
}

impl SubState {
    fn is_final(self) -> bool {
        matches!(self, SubState::Done | SubState::Failed | SubState::Cancelled)
    }
}

/// An error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct ErrorOutput {
    /// Stable code.
    code: String,
    /// What went wrong.
    message: String,
}

/// One subtask: a task to one agent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Subtask {
    /// Its place in the plan, from 0.
    index: u32,
    /// The task type.
    #[serde(rename = "type")]
    task_type: String,
    /// The agent that handles it.
    agent: Option<String>,
    /// Its input (any JSON).
    input: Value,
    /// Its AsyncProcessor job, when jobs are available.
    job_id: Option<String>,
    /// Its state.
    state: SubState,
    /// Its output once done (any JSON).
    #[serde(default)]
    output: Option<Value>,
    /// Its error once failed.
    #[serde(default)]
    error: Option<ErrorOutput>,
}

/// A goal and its subtasks.
#[derive(Debug, Clone, Serialize, JsonSchema)]
struct GoalOutput {
    /// The goal's id (`goal-…`).
    goal_id: String,
    /// The goal, as given.
    text: String,
    /// Its state.
    state: GoalState,
    /// The specialist that wrote the plan, as the arbiter chose it.
    planner: Option<String>,
    /// The subtasks, in plan order.
    subtasks: Vec<Subtask>,
    /// Created, Unix seconds.
    created_at: f64,
    /// Ended, Unix seconds.
    finished_at: Option<f64>,
}

/// A goal to decompose and run.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    /// The goal, in natural language.
    text: Text,
}

/// A goal.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GoalInput {
    /// The goal's id (`goal-…`).
    goal_id: Name,
}

impl Shorthand for GoalInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The goal's id alone.";
    fn expand(goal_id: Name) -> GoalInput {
        GoalInput { goal_id }
    }
}

/// Which goals to list.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListInput {
    /// Only goals in this state.
    #[serde(default)]
    state: Option<GoalState>,
    /// Most goals returned, 1–1000; default 50.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

impl Shorthand for ListInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: the latest 50 goals.";
    fn expand(_: Null) -> ListInput {
        ListInput { state: None, limit: None }
    }
}

/// One goal of a list.
#[derive(Serialize, JsonSchema)]
struct GoalSummary {
    /// The goal's id.
    goal_id: String,
    /// The goal, as given.
    text: String,
    /// Its state.
    state: GoalState,
    /// Subtasks done.
    subtasks_done: u32,
    /// All its subtasks.
    subtasks_total: u32,
    /// Created, Unix seconds.
    created_at: f64,
}

/// The goals.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// Newest first.
    goals: Vec<GoalSummary>,
}

/// The cancel's outcome.
#[derive(Serialize, JsonSchema)]
struct CancelOutput {
    /// The goal's id.
    goal_id: String,
    /// `false` when the goal had already ended.
    cancelled: bool,
    /// Its state now.
    state: GoalState,
}
