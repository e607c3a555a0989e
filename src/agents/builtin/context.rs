//! ContextManager (the token governor's tasks) and ProactiveContextMonitor
//! (summaries ahead of the hard max). The governor itself — measures,
//! admission of llm prompts, summaries, the summary file — is
//! [`crate::agents::governor`]; ContextManager running is what switches it
//! on for llm prompts.
//!
//! State: the `context_states` table ([`crate::store::context`]) and
//! `data_dir/runs/<run_id>_summary.md`.
//!
//! | agent | type | input | output |
//! | --- | --- | --- | --- |
//! | ContextManager | `context.usage` | `{"session"}` | `{"session", "tokens", "window", "ratio", "state", "model", "estimated", "prompt_tokens", "summary", ...}` |
//! | ContextManager | `context.save_state` | `{"session"}` | `{"session", "saved_at", "summary_path", "turns"}` |
//! | ContextManager | `context.summarize` | `{"session"}` | `{"session", "summary", "tokens_before", "tokens_after", "turns_summarized", "summary_path"}` |
//! | ContextManager | `context.resume` | `{"session"}` | `{"session", "resumed", "summary", "tokens", "window", "turns"}` |
//! | ProactiveContextMonitor | `context_monitor.status` | nothing | `{"trigger_ratio", "hard_max_ratio", "watched_sessions", "summaries_triggered", "last_check_at"}` |
//! | ProactiveContextMonitor | `context_monitor.check` | nothing or `{"session"}` | `{"checked", "triggered": [session]}` |
//!
//! The schemas are the specs' (`agents/pc2_core/ContextManager.yaml`,
//! `agents/pc2_utility_services/ProactiveContextMonitor.yaml`).
//!
//! ProactiveContextMonitor, while it runs, listens to `context.usage` events:
//! a session at or above `context.monitor_ratio` is summarised in the
//! background (one summary per session at a time), so the user's next turn
//! finds it under the target and does not wait.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Answer, Background, Behaviour, unknown_type};
use crate::agents::governor::Governor;
use crate::agents::tasks::decode;
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::supervisor::StartError;

/// ContextManager's name.
pub(crate) const MANAGER: &str = "ContextManager";
/// ProactiveContextMonitor's name.
pub(crate) const MONITOR: &str = "ProactiveContextMonitor";

/// `{"session"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    session: String,
}

fn session_of(task: &Task) -> Result<String, TaskError> {
    let SessionInput { session } = decode(&task.task_type, &task.input)?;
    let session = session.trim().to_string();
    if session.is_empty() {
        return Err(TaskError::new(
            ErrorCode::InvalidField,
            format!("input of {} at /session: the session must not be blank", task.task_type),
        ));
    }
    Ok(session)
}

/// The ContextManager behaviour.
pub struct ContextManager {
    governor: Governor,
}

impl ContextManager {
    /// The behaviour over the daemon's governor.
    pub(crate) fn new(governor: Governor) -> ContextManager {
        ContextManager { governor }
    }
}

#[async_trait]
impl Behaviour for ContextManager {
    async fn handle(&self, task: Task) -> Answer {
        let g = &self.governor;
        match task.task_type.as_str() {
            "context.usage" => g.usage(&session_of(&task)?).await,
            "context.save_state" => g.save_state(&session_of(&task)?).await,
            "context.summarize" => {
                let s = g.summarize(&session_of(&task)?, "task").await?;
                serde_json::to_value(s).map_err(|e| TaskError::new(ErrorCode::Internal, e.to_string()))
            }
            "context.resume" => g.resume(&session_of(&task)?).await,
            _ => Err(unknown_type(MANAGER, &task)),
        }
    }
}

/// What the monitor saw and did.
#[derive(Default)]
struct MonitorState {
    /// Sessions seen in `context.usage` events, with their last ratio.
    watched: BTreeMap<String, f64>,
    /// Summaries running now.
    in_flight: BTreeSet<String>,
    last_check_at: Option<f64>,
}

/// The ProactiveContextMonitor behaviour.
pub struct ContextMonitor {
    inner: Arc<MonitorInner>,
    runner: Background,
}

struct MonitorInner {
    governor: Governor,
    events: EventBus,
    state: Mutex<MonitorState>,
    triggered: AtomicU64,
}

impl ContextMonitor {
    /// The behaviour over the daemon's governor and events.
    pub(crate) fn new(governor: Governor, events: EventBus) -> ContextMonitor {
        ContextMonitor {
            inner: Arc::new(MonitorInner {
                governor,
                events,
                state: Mutex::new(MonitorState::default()),
                triggered: AtomicU64::new(0),
            }),
            runner: Background::default(),
        }
    }
}

impl MonitorInner {
    fn trigger_ratio(&self) -> f64 {
        self.governor.settings().monitor_ratio
    }

    /// Starts the session's summary unless one runs; whether it started.
    fn trigger(self: &Arc<Self>, session: &str) -> bool {
        if !self.state.lock().in_flight.insert(session.to_string()) {
            return false;
        }
        self.triggered.fetch_add(1, Ordering::Relaxed);
        let (me, session) = (self.clone(), session.to_string());
        tokio::spawn(async move {
            let _ = me.governor.summarize(&session, "monitor").await;
            me.state.lock().in_flight.remove(&session);
        });
        true
    }

    async fn run(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<Arc<crate::events::Published>>) {
        loop {
            match events.recv().await {
                Ok(p) => {
                    if let Event::ContextUsage { session, ratio, .. } = &p.event {
                        self.state.lock().watched.insert(session.clone(), *ratio);
                        if *ratio >= self.trigger_ratio() {
                            self.trigger(session);
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(agent = MONITOR, missed = n, "context monitor missed events")
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn check(self: &Arc<Self>, only: Option<String>) -> Result<Value, TaskError> {
        let sessions = self.governor.active_sessions(0.0).await?;
        let mut checked = 0;
        let mut triggered = Vec::new();
        for (session, ratio) in sessions {
            if only.as_ref().is_some_and(|o| *o != session) {
                continue;
            }
            checked += 1;
            self.state.lock().watched.insert(session.clone(), ratio);
            if ratio >= self.trigger_ratio() && self.trigger(&session) {
                triggered.push(session);
            }
        }
        self.state.lock().last_check_at = Some(unix_time());
        Ok(json!({"checked": checked, "triggered": triggered}))
    }
}

/// `context_monitor.check`'s input: nothing or `{"session"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckInput {
    session: Option<String>,
}

#[async_trait]
impl Behaviour for ContextMonitor {
    async fn start(&self) -> Result<(), StartError> {
        let events = self.inner.events.subscribe();
        self.runner.start(self.inner.clone().run(events));
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "context_monitor.status" => {
                let st = self.inner.state.lock();
                Ok(json!({
                    "trigger_ratio": self.inner.trigger_ratio(),
                    "hard_max_ratio": self.inner.governor.settings().hard_max_ratio,
                    "watched_sessions": st.watched.len(),
                    "summaries_triggered": self.inner.triggered.load(Ordering::Relaxed),
                    "summaries_running": st.in_flight.len(),
                    "last_check_at": st.last_check_at,
                }))
            }
            "context_monitor.check" => {
                let only = match &task.input {
                    Value::Null => None,
                    v => decode::<CheckInput>(t, v)?.session.map(|s| s.trim().to_string()),
                };
                self.inner.check(only).await
            }
            _ => Err(unknown_type(MONITOR, &task)),
        }
    }

    async fn stop(&self) {
        self.runner.stop();
    }
}
