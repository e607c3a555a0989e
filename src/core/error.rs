//! The task error and its stable codes: the wire's `error.code` (DESIGN §4)
//! and the `outcome` label of `agentvisor_tasks_total`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::receipt::Receipt;

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
    /// A resource request cannot be granted: the message names each
    /// resource that is short (asked, free, capacity).
    ResourceDenied,
    /// No reservation, job or schedule with that id.
    NotFound,
    /// The configuration does not allow it: a URL's scheme, host or address
    /// (SSRF protection), a path outside the configured roots, robots.txt;
    /// or a valid token without the scope the request needs (HTTP 403).
    Forbidden,
    /// A remote server could not be reached or failed (a web page, a remote backend).
    FetchFailed,
    /// A session's context is above the token governor's hard max and
    /// summarising it failed: the prompt is refused, never truncated.
    ContextExhausted,
    /// No credentials, or credentials that are unknown, expired or revoked
    /// (HTTP 401).
    Unauthorized,
    /// Too many failed authentication attempts from this client: wait
    /// (HTTP 429).
    RateLimited,
    /// A policy check (IntentionValidatorAgent) refused a risky task; the
    /// message gives the reason.
    DeniedByPolicy,
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
            ErrorCode::ResourceDenied => "resource_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::FetchFailed => "fetch_failed",
            ErrorCode::ContextExhausted => "context_exhausted",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::DeniedByPolicy => "denied_by_policy",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// Whether a task that failed with this code may succeed when tried
    /// again later (AsyncProcessor's retries): the agent or a backend was
    /// down, busy or too slow, not the input wrong.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::AgentNotRunning
                | ErrorCode::AgentFailed
                | ErrorCode::StartTimeout
                | ErrorCode::StartFailed
                | ErrorCode::DeadlineExceeded
                | ErrorCode::ShuttingDown
                | ErrorCode::NoBackend
                | ErrorCode::BackendError
                | ErrorCode::ResourceDenied
        )
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
    /// The routing receipt of a model call that failed, returned with the
    /// error (the reply's `route`); not part of the error's own JSON.
    #[serde(skip)]
    pub route: Option<Box<Receipt>>,
}

impl TaskError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError { code, message: message.into(), route: None }
    }

    /// The same error carrying the receipt of the failed model call.
    pub(crate) fn with_route(mut self, route: Option<Receipt>) -> TaskError {
        self.route = route.map(Box::new);
        self
    }
}
