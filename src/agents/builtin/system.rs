//! UnifiedSystemAgent: the admin interface as tasks. Holds no state of its
//! own: it reads and drives the supervisor.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `system.agents` | ignored | `{"profile", "agents": [AGENT]}` (AGENT as in `GET /agents/{name}`) |
//! | `system.status` | agent name or `{"agent": NAME}` | AGENT |
//! | `system.start` | agent name | AGENT after an on-demand start (dependencies included) |
//! | `system.stop` | agent name | AGENT, now `stopped` |
//! | `system.restart` | agent name | AGENT after an operator restart (a `fatal` agent comes back) |
//!
//! Errors: `unknown_agent`, `start_timeout`, `agent_unavailable`, `agent_fatal`, `start_failed`.

use async_trait::async_trait;
use serde_json::json;

use super::{Answer, Behaviour, agent_arg, unknown_type};
use crate::core::{Task, TaskError};
use crate::supervisor::state::AgentState;
use crate::supervisor::{Fleet, StartError};

/// The UnifiedSystemAgent behaviour.
pub struct SystemAdmin {
    /// The fleet it administers.
    pub fleet: Fleet,
}

impl SystemAdmin {
    fn status(&self, agent: &str) -> Answer {
        self.fleet
            .ctx()
            .record(agent)
            .map(|r| r.to_json())
            .ok_or_else(|| StartError::UnknownAgent(agent.to_string()).to_task_error())
    }
}

#[async_trait]
impl Behaviour for SystemAdmin {
    async fn handle(&self, task: Task) -> Answer {
        let fleet = &self.fleet;
        match task.task_type.as_str() {
            "system.agents" => {
                let agents: Vec<_> = fleet.ctx().snapshot().iter().map(|r| r.to_json()).collect();
                Ok(json!({"profile": fleet.ctx().plan.name, "agents": agents}))
            }
            "system.status" => self.status(&agent_arg(&task)?),
            "system.start" => {
                let agent = agent_arg(&task)?;
                fleet.ensure(&agent).await.map_err(|e| e.to_task_error())?;
                self.status(&agent)
            }
            "system.stop" => {
                let agent = agent_arg(&task)?;
                if agent == "UnifiedSystemAgent" {
                    return Err(TaskError::new(
                        crate::core::ErrorCode::InvalidField,
                        "UnifiedSystemAgent cannot stop itself over a task; use POST /agents/UnifiedSystemAgent/stop",
                    ));
                }
                fleet
                    .stop_agent(&agent, AgentState::Stopped, "stopped by system.stop")
                    .await
                    .map_err(|e| e.to_task_error())?;
                self.status(&agent)
            }
            "system.restart" => {
                let agent = agent_arg(&task)?;
                fleet.restart_agent(&agent).await.map_err(|e| e.to_task_error())?;
                self.status(&agent)
            }
            _ => Err(unknown_type("UnifiedSystemAgent", &task)),
        }
    }
}
