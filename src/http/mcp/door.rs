//! The MCP server's way into the fleet: the daemon's task bus, as any
//! client uses it (a DEALER connection per task to the ROUTER endpoint,
//! `{"cancel": id}` on the same connection), and the SQLite store in
//! `data_dir` for the receipts (read as `agentvisor receipts` reads it).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::tools::{Call, Served};
use crate::bus::client;
use crate::bus::envelope::Reply;
use crate::core::{ErrorCode, Receipt, TaskError};

/// Seconds the answer may take beyond the task's deadline (the daemon
/// answers `deadline_exceeded` itself at the deadline).
const REPLY_SLACK: Duration = Duration::from_secs(5);

/// The bus endpoint and the store of one daemon.
#[derive(Debug, Clone)]
pub struct Door {
    endpoint: String,
    data_dir: PathBuf,
    /// Every task's `deadline_ms` (`tasks.call_timeout_secs`).
    deadline: Duration,
    /// The API token every task carries (the stdio server's `--token`, or
    /// the HTTP request's Bearer token).
    token: Option<String>,
}

impl Door {
    /// The daemon whose ROUTER is `endpoint` and whose store is under
    /// `data_dir`; tasks get `deadline` (then `deadline_exceeded`).
    pub fn new(endpoint: String, data_dir: PathBuf, deadline: Duration) -> Door {
        Door { endpoint, data_dir, deadline, token: None }
    }

    /// This door with `token` on every task it sends.
    pub fn with_token(mut self, token: Option<String>) -> Door {
        self.token = token;
        self
    }

    /// The envelope of `call` with id `task_id`.
    fn envelope(&self, task_id: &str, call: Call, stream: bool) -> Value {
        let mut env = json!({
            "id": task_id, "type": call.task_type, "input": call.input, "stream": stream,
            "deadline_ms": self.deadline.as_millis().max(1) as u64,
        });
        if let Some(m) = call.model {
            env["model"] = json!(m);
        }
        if let Some(p) = call.prefer {
            env["prefer"] = json!(p);
        }
        if let Some(t) = &self.token {
            env["token"] = json!(t);
        }
        env
    }

    /// Sends `call` as task `task_id` and returns its final reply;
    /// `on_chunk` sees each streamed chunk (`stream`); `cancel` cancels it.
    ///
    /// # Errors
    /// `internal` when the bus cannot be reached or stops answering.
    pub(crate) async fn ask(
        &self,
        task_id: &str,
        call: Call,
        stream: bool,
        cancel: &CancellationToken,
        on_chunk: impl FnMut(&Value),
    ) -> Result<Reply, TaskError> {
        let env = self.envelope(task_id, call, stream);
        client::call(&self.endpoint, &env, self.deadline + REPLY_SLACK, on_chunk, cancel)
            .await
            .map_err(|e| unreachable_bus(&self.endpoint, &e))
    }

    /// Sends one task of `task_type` with `input`, no streaming.
    ///
    /// # Errors
    /// As [`Door::ask`].
    pub(crate) async fn ask_simple(&self, task_type: &str, input: Value) -> Result<Reply, TaskError> {
        let call = Call { task_type: task_type.into(), input, model: None, prefer: None };
        let id = format!("mcp-{}", uuid::Uuid::new_v4().simple());
        self.ask(&id, call, false, &CancellationToken::new(), |_| {}).await
    }

    /// The task types the run serves (`coordinator.tasks`).
    ///
    /// # Errors
    /// The bus cannot be reached, or the task fails (its error), or its
    /// answer is not the declared shape (`internal`).
    pub(crate) async fn served(&self) -> Result<Served, TaskError> {
        let reply = self.ask_simple("coordinator.tasks", Value::Null).await?;
        if let Some(e) = reply.error {
            return Err(e);
        }
        serde_json::from_value(reply.output.unwrap_or(Value::Null)).map_err(|e| {
            TaskError::new(ErrorCode::Internal, format!("coordinator.tasks answered an unexpected shape: {e}"))
        })
    }

    /// The newest `last` receipts, newest last.
    ///
    /// # Errors
    /// `internal`: no store under `data_dir`, or it cannot be read.
    pub(crate) async fn receipts(&self, last: u32) -> Result<Vec<Receipt>, TaskError> {
        let path = self.data_dir.join("agentvisor.db");
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                return Err(TaskError::new(ErrorCode::Internal, format!("no store at {}", path.display())));
            }
            let conn = crate::store::open_connection(&path)
                .map_err(|e| TaskError::new(ErrorCode::Internal, format!("cannot open the store: {e}")))?;
            crate::store::receipts::last(&conn, last)
                .map_err(|e| TaskError::new(ErrorCode::Internal, format!("cannot read receipts: {e}")))
        })
        .await
        .map_err(|e| TaskError::new(ErrorCode::Internal, format!("the receipts reader failed: {e}")))?
    }
}

fn unreachable_bus(endpoint: &str, e: &anyhow::Error) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("the daemon's task bus at {endpoint}: {e:#}"))
}
