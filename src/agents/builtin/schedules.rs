//! TaskScheduler: delayed and recurring tasks. Each firing submits an
//! AsyncProcessor job (`async.submit`), so firings are as durable as jobs.
//!
//! State: the `schedules` table (written before `schedule.add` answers and
//! after each firing) and, while the agent runs, the same schedules in
//! memory with a timer for the earliest. When the agent starts (after a
//! daemon restart too), firings missed while it was down follow each
//! schedule's `misfire` policy, as cron-like schedulers do: `run_once` (the
//! default) fires once now for all of them, `skip` drops them; then the
//! schedule goes on from now.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `schedule.add` | `{"task", one of "at" / "after_seconds" / "every_seconds" / "cron", "timezone"?, "priority"?, "name"?, "misfire"?}` | `{"schedule_id", "name", "next_fire_at"}` |
//! | `schedule.list` | nothing | `{"schedules": [...]}` |
//! | `schedule.cancel` | `{"schedule_id"}` or the id as text | `{"schedule_id", "cancelled"}` |
//!
//! Cron: the standard 5 fields, or 6 with seconds first, parsed by the
//! `croner` crate; evaluated in `timezone` (IANA, through `chrono-tz`;
//! default UTC).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use parking_lot::Mutex;
use rusqlite::params;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::jobs::JobTask;
use super::{Answer, Background, Behaviour, Empty, Name, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, TaskTable, decode, encode, rust_task};
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::{Store, StoreError};
use crate::supervisor::{Fleet, StartError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "TaskScheduler";

/// A firing this late (seconds) was missed while the daemon was down (or
/// stalled): it is reported as a misfire.
const MISFIRE_GRACE_SECS: f64 = 1.0;

/// The agent each firing submits its job to.
const JOBS_AGENT: &str = "AsyncProcessor";

/// The task types of TaskScheduler.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<AddInput, AddOutput>(
            "schedule.add",
            "Schedules a task once (at, after_seconds) or recurring (every_seconds, cron); each firing is a durable job",
            || {
                vec![
                    json!({"task": {"type": "utils.time"}, "every_seconds": 60, "name": "minute-clock"}),
                    json!({"task": {"type": "utils.echo", "input": "good morning"}, "cron": "0 8 * * 1-5", "timezone": "Europe/London", "name": "morning"}),
                    json!({"task": {"type": "utils.echo", "input": "Time to stretch."}, "after_seconds": 1800, "misfire": "skip"}),
                    json!({"task": {"type": "utils.time"}, "at": "2030-01-01T09:00:00Z"}),
                ]
            },
        ),
        rust_task::<OrShort<Empty>, ListOutput>(
            "schedule.list",
            "The schedules, with their next and last firing",
            || vec![json!({}), Value::Null],
        ),
        rust_task::<OrShort<CancelInput>, CancelOutput>(
            "schedule.cancel",
            "Cancels a schedule (jobs it already submitted are not cancelled)",
            || vec![json!({"schedule_id": "sch-0123456789abcdef"})],
        ),
    ]
}

/// The TaskScheduler behaviour.
pub struct TaskScheduler {
    inner: Arc<Inner>,
    runner: Background,
}

impl TaskScheduler {
    /// The behaviour: schedules in `store`, firings submitted through `fleet`.
    pub fn new(store: Store, fleet: Fleet, table: Arc<TaskTable>, events: EventBus, metrics: Metrics) -> TaskScheduler {
        TaskScheduler {
            inner: Arc::new(Inner {
                store,
                fleet,
                table,
                events,
                metrics,
                schedules: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
            }),
            runner: Background::default(),
        }
    }
}

struct Inner {
    store: Store,
    fleet: Fleet,
    table: Arc<TaskTable>,
    events: EventBus,
    metrics: Metrics,
    /// Active schedules by id.
    schedules: Mutex<BTreeMap<String, Sched>>,
    /// Wakes the timer: a schedule added or cancelled.
    wake: Notify,
}

/// When a schedule fires.
#[derive(Clone)]
enum When {
    /// Once, at this Unix time (`at` and `after_seconds`).
    Once(f64),
    /// Every this many seconds.
    Every(f64),
    /// At each match of the pattern, in the zone.
    Cron(Box<Cron>, Tz),
}

#[derive(Clone)]
struct Sched {
    id: String,
    task: JobTask,
    when: When,
    priority: Option<u8>,
    next_fire_at: Option<f64>,
    firings: u64,
}

impl When {
    /// The first firing strictly after `t` (Unix seconds); `None`: no more.
    fn next_after(&self, t: f64) -> Option<f64> {
        match self {
            When::Once(at) => (*at > t).then_some(*at),
            When::Every(_) => None,
            When::Cron(cron, tz) => {
                let secs = t.floor() as i64;
                let start = tz.timestamp_opt(secs, 0).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp() as f64)
            }
        }
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("schedule store: {e}"))
}

fn invalid(message: String) -> TaskError {
    tracing::info!(agent = AGENT, error = %message, "schedule refused");
    TaskError::new(ErrorCode::InvalidField, message)
}

/// Parses a cron pattern: 5 fields, or 6 with seconds first.
fn parse_cron(pattern: &str) -> Result<Cron, TaskError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| invalid(format!("input of schedule.add: cron {pattern:?}: {e}")))
}

fn parse_tz(name: &str) -> Result<Tz, TaskError> {
    Tz::from_str(name)
        .map_err(|_| invalid(format!("input of schedule.add: unknown timezone {name:?} (IANA, e.g. Europe/Berlin)")))
}

/// `at` as Unix seconds: RFC 3339 with an offset, or a local time in `tz`.
fn parse_at(at: &str, tz: Tz) -> Result<f64, TaskError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(at) {
        return Ok(t.timestamp_millis() as f64 / 1e3);
    }
    let local = NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|e| invalid(format!("input of schedule.add: at {at:?} is not RFC 3339: {e}")))?;
    let t = tz
        .from_local_datetime(&local)
        .earliest()
        .ok_or_else(|| invalid(format!("input of schedule.add: at {at:?} does not exist in {tz}")))?;
    Ok(t.timestamp_millis() as f64 / 1e3)
}

#[async_trait]
impl Behaviour for TaskScheduler {
    async fn start(&self) -> Result<(), StartError> {
        self.inner.load().await.map_err(|e| StartError::Failed {
            agent: AGENT.into(),
            reason: format!("cannot read the schedules table: {e}"),
        })?;
        self.runner.start(self.inner.clone().run());
        Ok(())
    }

    async fn stop(&self) {
        self.runner.stop();
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "schedule.add" => {
                let input: AddInput = decode(t, &task.input)?;
                encode(t, self.inner.add(input).await?)
            }
            "schedule.list" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                encode(t, ListOutput { schedules: self.inner.list().await? })
            }
            "schedule.cancel" => {
                let OrShort(CancelInput { schedule_id: Name(id) }) = decode(t, &task.input)?;
                encode(t, self.inner.cancel(&id).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// One stored schedule.
struct Row {
    id: String,
    kind: String,
    task: String,
    at: Option<String>,
    every_seconds: Option<f64>,
    cron: Option<String>,
    timezone: String,
    priority: Option<u8>,
    misfire: String,
    next_fire_at: Option<f64>,
    firings: u64,
}

impl Inner {
    /// Loads the active schedules; firings missed while down follow each one's misfire policy.
    async fn load(&self) -> Result<(), StoreError> {
        let rows = self
            .store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, kind, task, at, every_seconds, cron, timezone, priority, misfire, next_fire_at, firings
                     FROM schedules WHERE state = 'active'",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(Row {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        task: r.get(2)?,
                        at: r.get(3)?,
                        every_seconds: r.get(4)?,
                        cron: r.get(5)?,
                        timezone: r.get(6)?,
                        priority: r.get::<_, Option<i64>>(7)?.map(|p| p.clamp(0, 9) as u8),
                        misfire: r.get(8)?,
                        next_fire_at: r.get(9)?,
                        firings: r.get::<_, i64>(10)?.max(0) as u64,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        let now = unix_time();
        let mut loaded = BTreeMap::new();
        for row in rows {
            let Ok(task) = serde_json::from_str::<JobTask>(&row.task) else {
                tracing::warn!(schedule = %row.id, "stored task unreadable; schedule skipped");
                continue;
            };
            let tz = Tz::from_str(&row.timezone).unwrap_or(Tz::UTC);
            let when = match (row.kind.as_str(), row.every_seconds, &row.cron) {
                ("every", Some(e), _) => When::Every(e),
                ("cron", _, Some(c)) => match parse_cron(c) {
                    Ok(c) => When::Cron(Box::new(c), tz),
                    Err(_) => continue,
                },
                _ => When::Once(row.next_fire_at.unwrap_or(now)),
            };
            let _ = &row.at;
            let misfire = if row.misfire == "skip" { Misfire::Skip } else { Misfire::RunOnce };
            let mut s = Sched {
                id: row.id,
                task,
                when,
                priority: row.priority,
                next_fire_at: row.next_fire_at,
                firings: row.firings,
            };
            if let Some(due) = s.next_fire_at.filter(|d| *d < now)
                && misfire == Misfire::Skip
            {
                // Missed while down: skipped; go on from now.
                self.metrics.schedule_firings.with_label_values(&["skipped"]).inc();
                self.events.emit(Event::ScheduleSkipped { schedule_id: s.id.clone(), missed_since: due });
                s.next_fire_at = match &s.when {
                    When::Every(e) => Some(due + ((now - due) / e).ceil().max(1.0) * e),
                    w => w.next_after(now),
                };
                self.save(&s).await?;
                if s.next_fire_at.is_none() {
                    self.end(&s.id).await?;
                    continue;
                }
            }
            // run_once: the next (missed) firing is due now; after it, the schedule goes on from now.
            loaded.insert(s.id.clone(), s);
        }
        *self.schedules.lock() = loaded;
        Ok(())
    }

    async fn save(&self, s: &Sched) -> Result<(), StoreError> {
        let (id, next, firings) = (s.id.clone(), s.next_fire_at, s.firings as i64);
        self.store
            .call(move |conn| {
                conn.execute(
                    "UPDATE schedules SET next_fire_at = ?2, firings = ?3 WHERE id = ?1",
                    params![id, next, firings],
                )?;
                Ok(())
            })
            .await
    }

    async fn end(&self, id: &str) -> Result<(), StoreError> {
        let row_id = id.to_string();
        self.store
            .call(move |conn| {
                conn.execute(
                    "UPDATE schedules SET state = 'ended', next_fire_at = NULL WHERE id = ?1",
                    params![row_id],
                )?;
                Ok(())
            })
            .await?;
        self.events.emit(Event::ScheduleEnded { schedule_id: id.to_string() });
        Ok(())
    }

    async fn add(&self, input: AddInput) -> Result<AddOutput, TaskError> {
        let AddInput { task, at, after_seconds, every_seconds, cron, timezone, priority, name, misfire } = input;
        let given = [at.is_some(), after_seconds.is_some(), every_seconds.is_some(), cron.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid(
                "input of schedule.add: give exactly one of at, after_seconds, every_seconds, cron".into(),
            ));
        }
        if task.task_type.is_none() && task.agent.is_none() {
            return Err(invalid("input of schedule.add: task needs type or agent".into()));
        }
        self.fleet.resolve(task.agent.as_deref(), task.task_type.as_deref())?;
        // As the bus: a type with a schema must fit it (a type without one
        // goes to `bus.default_agent`, resolved above).
        if let Some(t) = task.task_type.as_deref().filter(|t| self.table.get(t).is_some()) {
            self.table.decode(t, &task.input)?;
        }
        let tz_name = timezone.map(|Name(n)| n).unwrap_or_else(|| "UTC".into());
        let tz = parse_tz(&tz_name)?;
        let now = unix_time();
        let (kind, when, first) = if let Some(at) = &at {
            let t = parse_at(at, tz)?;
            ("at", When::Once(t), Some(t))
        } else if let Some(s) = after_seconds {
            ("after", When::Once(now + s.0), Some(now + s.0))
        } else if let Some(e) = every_seconds {
            ("every", When::Every(e.0), Some(now + e.0))
        } else {
            let pattern = cron.clone().unwrap_or_default();
            let c = parse_cron(&pattern)?;
            let w = When::Cron(Box::new(c), tz);
            let first = w.next_after(now);
            if first.is_none() {
                return Err(invalid(format!("input of schedule.add: cron {pattern:?} never fires")));
            }
            ("cron", w, first)
        };
        let id = format!("sch-{}", uuid::Uuid::new_v4().simple());
        let misfire = misfire.unwrap_or_default();
        let priority = priority.map(|p| p.0 as u8);
        let body = serde_json::to_string(&task).unwrap_or_default();
        let row = (
            id.clone(),
            name.as_ref().map(|n| n.0.clone()),
            kind,
            body,
            at.clone(),
            every_seconds.map(|e| e.0),
            cron.clone(),
            tz_name,
            priority,
            misfire.as_str(),
            first,
        );
        self.store
            .call(move |conn| {
                let (id, name, kind, body, at, every, cron, tz, priority, misfire, next) = row;
                conn.execute(
                    "INSERT INTO schedules (id, name, kind, task, at, every_seconds, cron, timezone, priority, misfire,
                     state, created_at, next_fire_at, firings)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', ?11, ?12, 0)",
                    params![id, name, kind, body, at, every, cron, tz, priority, misfire, unix_time(), next],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        let name = name.map(|n| n.0);
        self.events.emit(Event::ScheduleAdded {
            schedule_id: id.clone(),
            name: name.clone(),
            kind,
            next_fire_at: first,
        });
        let s = Sched { id: id.clone(), task, when, priority, next_fire_at: first, firings: 0 };
        self.schedules.lock().insert(id.clone(), s);
        self.wake.notify_one();
        Ok(AddOutput { schedule_id: id, name, next_fire_at: first })
    }

    async fn list(&self) -> Result<Vec<ScheduleOutput>, TaskError> {
        self.store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, name, kind, task, at, every_seconds, cron, timezone, misfire, state, next_fire_at,
                     last_fire_at, firings FROM schedules ORDER BY created_at",
                )?;
                let rows = stmt.query_map([], |r| {
                    let task: String = r.get(3)?;
                    let task: Value = serde_json::from_str(&task).unwrap_or_default();
                    Ok(ScheduleOutput {
                        schedule_id: r.get(0)?,
                        name: r.get(1)?,
                        kind: r.get(2)?,
                        task_type: task.get("type").and_then(Value::as_str).map(str::to_string),
                        agent: task.get("agent").and_then(Value::as_str).map(str::to_string),
                        at: r.get(4)?,
                        every_seconds: r.get(5)?,
                        cron: r.get(6)?,
                        timezone: r.get(7)?,
                        misfire: r.get(8)?,
                        state: r.get(9)?,
                        next_fire_at: r.get(10)?,
                        last_fire_at: r.get(11)?,
                        firings: r.get::<_, i64>(12)?.max(0) as u64,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(store_error)
    }

    async fn cancel(&self, id: &str) -> Result<CancelOutput, TaskError> {
        let row_id = id.to_string();
        let (exists, changed) = self
            .store
            .call(move |conn| {
                let exists: i64 =
                    conn.query_row("SELECT COUNT(*) FROM schedules WHERE id = ?1", params![row_id], |r| r.get(0))?;
                let changed = conn.execute(
                    "UPDATE schedules SET state = 'cancelled', next_fire_at = NULL WHERE id = ?1 AND state = 'active'",
                    params![row_id],
                )?;
                Ok((exists > 0, changed > 0))
            })
            .await
            .map_err(store_error)?;
        if !exists {
            tracing::info!(agent = AGENT, schedule_id = id, "unknown schedule id");
            return Err(TaskError::new(ErrorCode::NotFound, format!("no schedule {id}")));
        }
        self.schedules.lock().remove(id);
        self.wake.notify_one();
        if changed {
            self.events.emit(Event::ScheduleCancelled { schedule_id: id.to_string() });
        }
        Ok(CancelOutput { schedule_id: id.to_string(), cancelled: changed })
    }

    /// The timer: fires every due schedule (earliest first), then sleeps
    /// until the next one or a wake. Runs until aborted.
    async fn run(self: Arc<Self>) {
        loop {
            let now = unix_time();
            let due: Vec<Sched> = {
                let s = self.schedules.lock();
                let mut due: Vec<Sched> =
                    s.values().filter(|s| s.next_fire_at.is_some_and(|n| n <= now)).cloned().collect();
                due.sort_by(|a, b| a.next_fire_at.unwrap_or(0.0).total_cmp(&b.next_fire_at.unwrap_or(0.0)));
                due
            };
            for s in due {
                self.fire(s).await;
            }
            let next = self.schedules.lock().values().filter_map(|s| s.next_fire_at).fold(f64::INFINITY, f64::min);
            let wait = if next.is_finite() { (next - unix_time()).clamp(0.0, 60.0) } else { 60.0 };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            }
        }
    }

    /// Fires `s` once: submits its job, then moves it to its next firing
    /// (after a firing missed while down: from now).
    async fn fire(&self, mut s: Sched) {
        let Some(due) = s.next_fire_at else { return };
        let now = unix_time();
        let missed = now - due > MISFIRE_GRACE_SECS;
        let mut submit = json!({"task": s.task});
        if let Some(p) = s.priority {
            submit["priority"] = json!(p);
        }
        let task = Task::new(format!("{}#{}", s.id, s.firings + 1), "async.submit", submit);
        match self.fleet.call(JOBS_AGENT, task).await {
            Ok(out) => {
                let job_id = out.output["job_id"].as_str().unwrap_or_default().to_string();
                let outcome = if missed { "misfire_run" } else { "submitted" };
                self.metrics.schedule_firings.with_label_values(&[outcome]).inc();
                self.events.emit(Event::ScheduleFired {
                    schedule_id: s.id.clone(),
                    job_id,
                    due_at: due,
                    drift_seconds: now - due,
                    misfire: missed,
                });
                s.firings += 1;
            }
            Err(e) => {
                self.metrics.schedule_firings.with_label_values(&["failed"]).inc();
                tracing::warn!(schedule = %s.id, code = e.code.as_str(), error = %e.message, "schedule firing could not submit its job");
                self.events.emit(Event::ScheduleFailed { schedule_id: s.id.clone(), code: e.code.as_str() });
            }
        }
        let after = unix_time();
        s.next_fire_at = match &s.when {
            // In order, without drift: the next slot after the one due; a
            // stall (or downtime) longer than a period resumes from now.
            When::Every(e) => {
                let next = due + e;
                Some(if next > after { next } else { due + ((after - due) / e).ceil() * e })
            }
            w => w.next_after(due.max(if missed { after } else { due })),
        };
        let (id, next, firings) = (s.id.clone(), s.next_fire_at, s.firings as i64);
        let saved = self
            .store
            .call(move |conn| {
                conn.execute(
                    "UPDATE schedules SET next_fire_at = ?2, last_fire_at = ?3, firings = ?4,
                     state = CASE WHEN ?2 IS NULL THEN 'ended' ELSE state END
                     WHERE id = ?1 AND state = 'active'",
                    params![id, next, now, firings],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(schedule = %s.id, error = %e, "schedule state not saved");
        }
        let mut all = self.schedules.lock();
        if s.next_fire_at.is_none() {
            all.remove(&s.id);
            drop(all);
            self.events.emit(Event::ScheduleEnded { schedule_id: s.id });
        } else if all.contains_key(&s.id) {
            all.insert(s.id.clone(), s);
        }
    }
}

/// What to do with firings missed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Misfire {
    /// Fire once, now, for all of them (default).
    #[default]
    RunOnce,
    /// Drop them; go on from the next firing after now.
    Skip,
}

impl Misfire {
    fn as_str(self) -> &'static str {
        match self {
            Misfire::RunOnce => "run_once",
            Misfire::Skip => "skip",
        }
    }
}

/// A task and when to fire it: exactly one of `at`, `after_seconds`,
/// `every_seconds`, `cron`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddInput {
    /// The task envelope (`type` or `agent`, `input`, ...); each firing submits it as a job.
    task: JobTask,
    /// Fire once at this time: RFC 3339 with an offset (e.g.
    /// `2030-01-01T09:00:00Z`), or without one in `timezone`.
    #[serde(default)]
    at: Option<String>,
    /// Fire once after this many seconds.
    #[serde(default)]
    after_seconds: Option<super::resources::NonNegative>,
    /// Fire every this many seconds (the first firing one period from now).
    #[serde(default)]
    every_seconds: Option<super::resources::Positive>,
    /// Standard 5-field cron expression, or 6 fields with seconds first.
    #[serde(default)]
    cron: Option<String>,
    /// IANA zone for `cron` and for `at` without an offset, e.g. `Europe/Berlin`; default UTC.
    #[serde(default)]
    timezone: Option<Name>,
    /// Priority of each firing's job, 0–9; default 5.
    #[serde(default)]
    priority: Option<super::jobs::Bounded<0, 9>>,
    /// A name for listings.
    #[serde(default)]
    name: Option<Name>,
    /// Firings missed while the daemon was down: `run_once` (default) or `skip`.
    #[serde(default)]
    misfire: Option<Misfire>,
}

/// The schedule added.
#[derive(Serialize, JsonSchema)]
struct AddOutput {
    /// The schedule's id (`sch-…`).
    schedule_id: String,
    /// Its name, if given.
    name: Option<String>,
    /// The first firing, Unix seconds.
    next_fire_at: Option<f64>,
}

/// One schedule.
#[derive(Serialize, JsonSchema)]
struct ScheduleOutput {
    /// The schedule's id.
    schedule_id: String,
    /// Its name, if given.
    name: Option<String>,
    /// `at`, `after`, `every` or `cron`.
    kind: String,
    /// The task type, when the envelope names one.
    task_type: Option<String>,
    /// The agent, when the envelope names one.
    agent: Option<String>,
    /// The `at` given.
    at: Option<String>,
    /// The period, seconds.
    every_seconds: Option<f64>,
    /// The cron pattern.
    cron: Option<String>,
    /// The IANA zone.
    timezone: String,
    /// `run_once` or `skip`.
    misfire: String,
    /// `active`, `ended` or `cancelled`.
    state: String,
    /// The next firing, Unix seconds; `null`: no more.
    next_fire_at: Option<f64>,
    /// The last firing, Unix seconds; `null`: never fired.
    last_fire_at: Option<f64>,
    /// Firings so far.
    firings: u64,
}

/// The schedules.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// Oldest first.
    schedules: Vec<ScheduleOutput>,
}

/// The schedule.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CancelInput {
    /// The schedule's id.
    schedule_id: Name,
}

impl Shorthand for CancelInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The schedule's id alone.";
    fn expand(schedule_id: Name) -> CancelInput {
        CancelInput { schedule_id }
    }
}

/// The cancel's outcome.
#[derive(Serialize, JsonSchema)]
struct CancelOutput {
    /// The schedule's id.
    schedule_id: String,
    /// `false` when it had already ended or been cancelled.
    cancelled: bool,
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn cron_takes_five_or_six_fields_in_a_zone() {
        let c = parse_cron("0 8 * * 1-5").unwrap();
        let w = When::Cron(Box::new(c), Tz::Europe__London);
        // 2030-01-01 is a Tuesday; 08:00 London is 08:00 UTC in winter.
        let start = Utc.with_ymd_and_hms(2030, 1, 1, 7, 0, 0).unwrap().timestamp() as f64;
        assert_eq!(w.next_after(start), Some(start + 3600.0));
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("not a cron").is_err());
        assert_eq!(parse_at("2030-01-01T00:00:00Z", Tz::UTC).unwrap(), 1_893_456_000.0);
        assert_eq!(parse_at("2030-01-01T01:00:00", Tz::Europe__Berlin).unwrap(), 1_893_456_000.0);
    }
}
