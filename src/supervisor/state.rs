//! Lifecycle states and the live table of agents (DESIGN §2, "Agent lifecycle").
//!
//! `dormant` → `starting` → `running` → `stopping` → `stopped`; on failure
//! `running` → `failed` → `backoff` → `starting`; too many restarts →
//! `fatal`; a process agent whose program is missing → `unavailable`.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::spec::RuntimeKind;

/// Lifecycle state of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// On-demand, not started.
    Dormant,
    /// Start hook running (for a process agent: waiting for readiness).
    Starting,
    /// Start hook finished; takes tasks.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped on request (or exited normally and not restarted).
    Stopped,
    /// Exited abnormally; the restart policy decides what follows.
    Failed,
    /// Waiting for its restart delay.
    Backoff,
    /// Restart intensity exceeded; down until an operator restarts it.
    Fatal,
    /// Cannot run here (missing program, not configured); no restart loop.
    Unavailable,
}

impl AgentState {
    /// Every state, for metrics.
    pub(crate) const ALL: [AgentState; 9] = [
        AgentState::Dormant,
        AgentState::Starting,
        AgentState::Running,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Failed,
        AgentState::Backoff,
        AgentState::Fatal,
        AgentState::Unavailable,
    ];

    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Dormant => "dormant",
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Stopping => "stopping",
            AgentState::Stopped => "stopped",
            AgentState::Failed => "failed",
            AgentState::Backoff => "backoff",
            AgentState::Fatal => "fatal",
            AgentState::Unavailable => "unavailable",
        }
    }

    /// The event topic announcing this state.
    pub fn topic(self) -> &'static str {
        match self {
            AgentState::Dormant => "agent.dormant",
            AgentState::Starting => "agent.starting",
            AgentState::Running => "agent.started",
            AgentState::Stopping => "agent.stopping",
            AgentState::Stopped => "agent.stopped",
            AgentState::Failed => "agent.failed",
            AgentState::Backoff => "agent.backoff",
            AgentState::Fatal => "agent.fatal",
            AgentState::Unavailable => "agent.unavailable",
        }
    }
}

/// The live record of one agent (what `/agents` shows).
#[derive(Debug, Clone)]
pub struct AgentRecord {
    /// Agent name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// Runtime kind.
    pub runtime: RuntimeKind,
    /// Essential (`required: true`).
    pub essential: bool,
    /// Current state.
    pub state: AgentState,
    /// Restarts by the supervisor since the daemon started.
    pub restarts: u32,
    /// When the agent last became `running`.
    pub running_since: Option<Instant>,
    /// Child process id of a running process agent.
    pub pid: Option<u32>,
    /// Why the agent is `failed`, `fatal`, `unavailable` or `stopped`.
    pub reason: Option<String>,
    /// Its dependencies.
    pub dependencies: Vec<String>,
}

impl AgentRecord {
    /// Seconds running, when running.
    pub fn uptime(&self) -> Option<Duration> {
        match self.state {
            AgentState::Running => self.running_since.map(|t| t.elapsed()),
            _ => None,
        }
    }
}

impl AgentRecord {
    /// The JSON of `GET /agents/{name}` and `system.status`: `{"name",
    /// "group", "state", "runtime", "essential", "restarts",
    /// "uptime_seconds", "pid", "reason", "dependencies"}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "group": self.group, "state": self.state.as_str(), "runtime": self.runtime.as_str(),
            "essential": self.essential, "restarts": self.restarts,
            "uptime_seconds": self.uptime().map(|d| d.as_secs_f64()), "pid": self.pid, "reason": self.reason,
            "dependencies": self.dependencies,
        })
    }
}
