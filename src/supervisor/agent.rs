//! The contract between a supervisor and the agent actors it supervises:
//! the agent's message enum, why a start fails, and the faults tests inject.
//! (The factory the supervisors spawn agents through and the [`Peers`] view
//! are in [`super::fleet`].)
//!
//! [`Peers`]: super::fleet::Peers

use ractor::RpcReplyPort;

pub use crate::core::Fault;
use crate::core::{ErrorCode, Task, TaskError, TaskReply};

/// Why an agent did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    /// Cannot run here: missing program, not configured. No restart loop.
    #[error("{agent} is unavailable: {reason}")]
    Unavailable {
        /// The agent.
        agent: String,
        /// Why (names the program or setting).
        reason: String,
    },
    /// Did not become ready before the start deadline (the start SLA).
    #[error("{agent} did not start within {secs:.3} s")]
    Timeout {
        /// The agent.
        agent: String,
        /// The time it had, seconds.
        secs: f64,
    },
    /// The start hook failed (program exited before ready, readiness check failed, ...).
    #[error("{agent} failed to start: {reason}")]
    Failed {
        /// The agent.
        agent: String,
        /// What failed.
        reason: String,
    },
    /// The agent is `fatal` and needs an operator restart.
    #[error("{agent} is fatal: restart intensity exceeded; restart it explicitly")]
    Fatal {
        /// The agent.
        agent: String,
    },
    /// No agent of that name in this run.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// The start was stopped (rollback or stop request) before it finished.
    #[error("start of {agent} was cancelled")]
    Cancelled {
        /// The agent.
        agent: String,
    },
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl StartError {
    /// The task error code this start error answers a task with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StartError::Unavailable { .. } => ErrorCode::AgentUnavailable,
            StartError::Timeout { .. } => ErrorCode::StartTimeout,
            StartError::Failed { .. } | StartError::Cancelled { .. } => ErrorCode::StartFailed,
            StartError::Fatal { .. } => ErrorCode::AgentFatal,
            StartError::UnknownAgent(_) => ErrorCode::UnknownAgent,
            StartError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }

    /// As a task error.
    pub(crate) fn to_task_error(&self) -> TaskError {
        TaskError::new(self.code(), self.to_string())
    }
}

/// Messages of an agent actor (`agents::actor::AgentActor` implements them).
#[expect(
    clippy::large_enum_variant,
    reason = "one task per message, moved not copied: a Box would add an allocation per task on the hot path"
)]
pub enum AgentMsg {
    /// Answer one task.
    Task(Task, RpcReplyPort<TaskReply>),
    /// Answer one task that the policy's validator agent allowed (it is not
    /// checked again; boxed: rare, after a model call).
    Checked(Box<Task>, RpcReplyPort<TaskReply>),
    /// A dependency restarted (it is a new actor now; re-resolve it by name).
    DependencyRestarted {
        /// The dependency's name.
        dependency: String,
    },
    /// Crash on purpose (ignored unless fault injection is enabled).
    InjectFault(Fault),
    /// A builtin task handler panicked: the agent fails (and restarts).
    TaskPanicked {
        /// The task.
        task_id: String,
        /// The panic message.
        message: String,
    },
    /// The child program of a process agent exited.
    ChildExited {
        /// `true` for exit status 0.
        success: bool,
        /// Exit status as text (`exit status: 3`, `signal: 9 (SIGKILL)`).
        status: String,
    },
}

/// The text of a caught panic (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
