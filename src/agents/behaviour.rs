//! The behaviour of a builtin or llm agent: what the agent actor runs for
//! each task, and the small helpers every behaviour uses to read a task.

use async_trait::async_trait;
use serde_json::Value;

use crate::core::{ErrorCode, Task, TaskError, TaskReply};
use crate::supervisor::StartError;

/// What a builtin handler answers: its output, or an error.
pub(crate) type Answer = Result<Value, TaskError>;

/// A builtin behaviour. Tasks run concurrently (each in its own tokio
/// task), so handlers take `&self`; state lives behind interior mutability.
#[async_trait]
pub trait Behaviour: Send + Sync + 'static {
    /// Start hook, run in the actor's `pre_start` (bind sockets, open
    /// files). The agent is `running` only after it returned `Ok`.
    async fn start(&self) -> Result<(), StartError> {
        Ok(())
    }

    /// Answers one task with its output. Dropping the future
    /// (cancellation, deadline) must stop the work.
    async fn handle(&self, task: Task) -> Result<Value, TaskError>;

    /// Answers one task with its output and the route of its model call;
    /// behaviours that call a model override it (the default has no route).
    async fn reply(&self, task: Task) -> TaskReply {
        self.handle(task).await.map(Into::into)
    }

    /// Stop hook, run in the actor's `post_stop`.
    async fn stop(&self) {}
}

/// `invalid_field` error for a task input.
pub(crate) fn bad_input(task: &Task, why: impl std::fmt::Display) -> TaskError {
    TaskError::new(ErrorCode::InvalidField, format!("input of {}: {why}", task.task_type))
}

/// `unknown_task_type` error for a type this behaviour does not handle.
pub(crate) fn unknown_type(agent: &str, task: &Task) -> TaskError {
    TaskError::new(ErrorCode::UnknownTaskType, format!("{agent} does not handle task type {}", task.task_type))
}

/// The agent name a task input names: a string, or `{"agent": NAME}`.
pub(crate) fn agent_arg(task: &Task) -> Result<String, TaskError> {
    name_arg(task, "agent")
}

/// The name a task input gives: a non-empty string, or `{KEY: NAME}`.
pub(crate) fn name_arg(task: &Task, key: &str) -> Result<String, TaskError> {
    let found = match &task.input {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Object(m) => m.get(key).and_then(|a| a.as_str()).map(str::to_string),
        _ => None,
    };
    found.ok_or_else(|| bad_input(task, format!("expected a name (string) or {{\"{key}\": NAME}}")))
}
