//! LazyLoader (the agent): the task face of the supervisor's on-demand
//! start mechanism ([`crate::supervisor::lazy`]). No state of its own.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `lazy.ensure` | agent name or `{"agent": NAME}` | `{"agent", "state": "running", "start_ms"}` |
//! | `lazy.status` | ignored | `{"dormant": [..], "starting": [..], "startup_timeout_seconds"}` |

use std::time::Instant;

use async_trait::async_trait;
use serde_json::json;

use super::{Answer, Behaviour, agent_arg, unknown_type};
use crate::core::Task;
use crate::supervisor::Fleet;
use crate::supervisor::state::AgentState;

/// The LazyLoader behaviour.
pub struct LazyLoaderAgent {
    /// The fleet whose agents it starts.
    pub fleet: Fleet,
}

#[async_trait]
impl Behaviour for LazyLoaderAgent {
    async fn handle(&self, task: Task) -> Answer {
        match task.task_type.as_str() {
            "lazy.ensure" => {
                let agent = agent_arg(&task)?;
                let t0 = Instant::now();
                self.fleet.ensure(&agent).await.map_err(|e| e.to_task_error())?;
                Ok(json!({"agent": agent, "state": "running", "start_ms": t0.elapsed().as_secs_f64() * 1e3}))
            }
            "lazy.status" => {
                let records = self.fleet.ctx().snapshot();
                let names =
                    |s: AgentState| records.iter().filter(|r| r.state == s).map(|r| r.name.clone()).collect::<Vec<_>>();
                Ok(json!({
                    "dormant": names(AgentState::Dormant),
                    "starting": names(AgentState::Starting),
                    "startup_timeout_seconds": self.fleet.ctx().settings.lazy_loader.startup_timeout_seconds,
                }))
            }
            _ => Err(unknown_type("LazyLoader", &task)),
        }
    }
}
