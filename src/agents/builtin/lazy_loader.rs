//! LazyLoader (the agent): the task face of the supervisor's on-demand
//! start mechanism ([`crate::supervisor::lazy`]). No state of its own.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `lazy.ensure` | agent name or `{"agent": NAME}` | `{"agent", "state": "running", "start_ms"}` |
//! | `lazy.status` | ignored | `{"dormant": [NAME], "starting": [NAME], "startup_timeout_seconds"}` |
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::time::Instant;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::{AgentInput, Answer, Behaviour, unknown_type};
use crate::agents::tasks::{Ignored, OrShort, RustTask, decode, encode, rust_task};
use crate::core::Task;
use crate::supervisor::Fleet;
use crate::supervisor::state::AgentState;

/// The task types of LazyLoader.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<AgentInput>, EnsureOutput>(
            "lazy.ensure",
            "Starts an agent and its dependencies on demand, if not running; waits until it runs",
            || vec![json!("ChitchatAgent"), json!({"agent": "ChitchatAgent"})],
        ),
        rust_task::<Ignored, StatusOutput>("lazy.status", "The agents dormant and starting now", || vec![Value::Null]),
    ]
}

/// The LazyLoader behaviour.
pub struct LazyLoaderAgent {
    /// The fleet whose agents it starts.
    pub fleet: Fleet,
}

#[async_trait]
impl Behaviour for LazyLoaderAgent {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "lazy.ensure" => {
                let OrShort(AgentInput { agent }) = decode(t, &task.input)?;
                let t0 = Instant::now();
                self.fleet.ensure(&agent.0).await.map_err(|e| e.to_task_error())?;
                let start_ms = t0.elapsed().as_secs_f64() * 1e3;
                encode(t, EnsureOutput { agent: agent.0, state: Running::Running, start_ms })
            }
            "lazy.status" => {
                let Ignored = decode(t, &task.input)?;
                let records = self.fleet.ctx().snapshot();
                let names =
                    |s: AgentState| records.iter().filter(|r| r.state == s).map(|r| r.name.clone()).collect::<Vec<_>>();
                encode(
                    t,
                    StatusOutput {
                        dormant: names(AgentState::Dormant),
                        starting: names(AgentState::Starting),
                        startup_timeout_seconds: self.fleet.ctx().settings.lazy_loader.startup_timeout_seconds,
                    },
                )
            }
            _ => Err(unknown_type("LazyLoader", &task)),
        }
    }
}

/// The agent, running.
#[derive(Serialize, JsonSchema)]
struct EnsureOutput {
    /// The agent's name.
    agent: String,
    /// Always `running`: the agent runs when the task answers.
    state: Running,
    /// Time the start took, milliseconds (near 0 when it was running already).
    start_ms: f64,
}

/// The state of an ensured agent.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Running {
    Running,
}

/// The on-demand agents now.
#[derive(Serialize, JsonSchema)]
struct StatusOutput {
    /// Agents not started yet (they start on their first task), by name.
    dormant: Vec<String>,
    /// Agents starting now, by name.
    starting: Vec<String>,
    /// How long an on-demand start may take before it fails with
    /// `start_timeout`, seconds (`lazy_loader.startup_timeout_seconds`).
    startup_timeout_seconds: f64,
}
