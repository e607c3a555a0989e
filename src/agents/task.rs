//! Tasks as agents see them, and the task error with its stable codes.
//!
//! The codes are the wire's `error.code` (DESIGN §4) and the `outcome`
//! label of `agentvisor_tasks_total`.

use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One task handed to an agent.
#[derive(Debug, Clone)]
pub struct Task {
    /// Task id (client's, or generated).
    pub id: String,
    /// Task type (`utils.echo`, `simple_chat`, ...).
    pub task_type: String,
    /// Input: text or JSON.
    pub input: Value,
    /// When the answer is due; `None`: the caller's default.
    pub deadline: Option<Instant>,
    /// Where streamed pieces of the answer go (`stream: true`); `None`:
    /// the client wants only the final answer.
    pub chunks: Option<mpsc::UnboundedSender<String>>,
    /// Cancelled when the client cancels, leaves, or the deadline passes;
    /// the agent stops the work.
    pub cancel: CancellationToken,
    /// Conversation session, when the client set one.
    pub session: Option<String>,
    /// Routing preference of the client.
    pub prefer: Option<crate::config::Prefer>,
    /// Explicit complexity 0.0–1.0 from the client.
    pub complexity: Option<f64>,
    /// Milliseconds the task waited in the bus's admission queue and for an
    /// on-demand start before reaching the agent (0 for direct calls).
    pub queue_ms: f64,
    /// Where the agent leaves the routing receipt of its model call (the
    /// reply's `route`).
    pub receipt: std::sync::Arc<parking_lot::Mutex<Option<crate::store::receipts::Receipt>>>,
    /// Priority 0–9 from the envelope (default 5); local model requests are
    /// served by it.
    pub priority: u8,
    /// Local model requests of this task go before every queued one.
    pub push_to_front: bool,
}

impl Task {
    /// A task with no deadline, no streaming and no session.
    pub fn new(id: impl Into<String>, task_type: impl Into<String>, input: Value) -> Task {
        Task {
            id: id.into(),
            task_type: task_type.into(),
            input,
            deadline: None,
            chunks: None,
            cancel: CancellationToken::new(),
            session: None,
            prefer: None,
            complexity: None,
            queue_ms: 0.0,
            receipt: Default::default(),
            priority: 5,
            push_to_front: false,
        }
    }

    /// Sends one streamed piece when the client asked for streaming.
    pub fn emit(&self, delta: impl Into<String>) {
        if let Some(tx) = &self.chunks {
            let _ = tx.send(delta.into());
        }
    }

    /// The input as text: a JSON string as is, anything else as JSON text.
    pub fn input_text(&self) -> String {
        match &self.input {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// What an agent answers: its output, or an error.
pub type TaskReply = Result<Value, TaskError>;

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message body is not JSON.
    MalformedJson,
    /// The message's frames are not `[identity][(empty)][body]`.
    MalformedMessage,
    /// A field is missing, of the wrong type, out of range or unknown.
    InvalidField,
    /// The message is larger than `bus.max_message_bytes`.
    MessageTooLarge,
    /// The agent's behaviour is not built yet.
    NotImplemented,
    /// No agent of that name in the run.
    UnknownAgent,
    /// No agent handles that task type.
    UnknownTaskType,
    /// The agent cannot run here (missing program, not configured).
    AgentUnavailable,
    /// The agent exceeded its restart intensity and stays down.
    AgentFatal,
    /// The agent is not running (stopped, failed, in backoff).
    AgentNotRunning,
    /// An on-demand start did not finish within the start SLA.
    StartTimeout,
    /// The agent failed to start.
    StartFailed,
    /// The agent crashed while working on the task.
    AgentFailed,
    /// The agent's program answered with an error (its code is in the message).
    AgentError,
    /// The answer was not ready by the task's deadline.
    DeadlineExceeded,
    /// Too much work queued.
    Busy,
    /// The task was cancelled.
    Cancelled,
    /// The daemon is stopping.
    ShuttingDown,
    /// No model backend can serve the call (none configured, all breakers open).
    NoBackend,
    /// Every backend of the routing chain failed (the last error is in the message).
    BackendError,
    /// The model's answer did not match the agent's output schema, even after one repair.
    InvalidOutput,
    /// A bug or an unexpected condition.
    Internal,
}

impl ErrorCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::UnknownTaskType => "unknown_task_type",
            ErrorCode::AgentUnavailable => "agent_unavailable",
            ErrorCode::AgentFatal => "agent_fatal",
            ErrorCode::AgentNotRunning => "agent_not_running",
            ErrorCode::StartTimeout => "start_timeout",
            ErrorCode::StartFailed => "start_failed",
            ErrorCode::AgentFailed => "agent_failed",
            ErrorCode::AgentError => "agent_error",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Busy => "busy",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NoBackend => "no_backend",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::InvalidOutput => "invalid_output",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: `{"code", "message"}` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TaskError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation naming the agent or input concerned.
    pub message: String,
}

impl TaskError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError { code, message: message.into() }
    }
}
