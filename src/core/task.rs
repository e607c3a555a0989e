//! Tasks as agents see them, and what an agent answers: its output and the
//! routing receipt of its model call, as a return value.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::chat::Schedule;
use super::error::TaskError;
use super::receipt::Receipt;

/// A user's routing preference (`prefer` in the task envelope and in
/// routing rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// Local models.
    Local,
    /// Cloud APIs.
    Cloud,
}

/// One task handed to an agent.
#[derive(Debug, Clone)]
pub struct Task {
    /// Task id (client's, or generated).
    pub id: String,
    /// Task type (`utils.echo`, `simple_chat`, ...).
    pub task_type: String,
    /// Input: text or JSON.
    pub input: Value,
    /// When the answer is due; `None`: the caller's default
    /// (`tasks.call_timeout_secs`).
    pub deadline: Option<Instant>,
    /// Where streamed pieces of the answer go (`stream: true`); `None`:
    /// the client wants only the final answer.
    pub chunks: Option<mpsc::UnboundedSender<String>>,
    /// Cancelled when the client cancels, leaves, or the deadline passes;
    /// the agent stops the work.
    pub cancel: CancellationToken,
    /// Conversation session, when the client set one.
    pub session: Option<String>,
    /// Who is asking (the envelope's `user`; later a token's subject).
    /// Carried into receipts; preferences, costs and tokens hang on it.
    pub user: Option<String>,
    /// A backend model the client asked for (the envelope's `model`),
    /// checked against the configured backends before the task runs.
    pub model: Option<String>,
    /// Routing preference of the client.
    pub prefer: Option<Prefer>,
    /// Explicit complexity 0.0–1.0 from the client.
    pub complexity: Option<f64>,
    /// Milliseconds the task waited in the bus's admission queue and for an
    /// on-demand start before reaching the agent (0 for direct calls).
    pub queue_ms: f64,
    /// Priority and queue jump, carried unchanged to the local model queue.
    pub schedule: Schedule,
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
            user: None,
            model: None,
            prefer: None,
            complexity: None,
            queue_ms: 0.0,
            schedule: Schedule::default(),
        }
    }

    /// Sends one streamed piece when the client asked for streaming.
    pub(crate) fn emit(&self, delta: impl Into<String>) {
        if let Some(tx) = &self.chunks {
            let _ = tx.send(delta.into());
        }
    }

    /// The input as text: a JSON string as is, anything else as JSON text.
    pub(crate) fn input_text(&self) -> String {
        match &self.input {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A successful answer: the output and, when the agent called a model, the
/// routing receipt (the reply's `route`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutput {
    /// The answer: text or JSON.
    pub output: Value,
    /// The receipt of the model call that produced it.
    pub route: Option<Receipt>,
}

impl From<Value> for TaskOutput {
    fn from(output: Value) -> TaskOutput {
        TaskOutput { output, route: None }
    }
}

/// What an agent answers: its output (with the route), or an error (which
/// may carry the route of a failed model call).
pub type TaskReply = Result<TaskOutput, TaskError>;

/// A fault to inject (crash tests; the daemon honours it only with
/// `testing.fault_injection: true`): into an agent or an infrastructure
/// component (HybridRouter, ModelScheduler, BusDispatcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Panic inside the message handler.
    Panic,
    /// Return an error from the message handler.
    Error,
}
