//! The `embedded` backend: GGUF models under `models_dir` run in-process
//! through llama.cpp, by way of the daemon's [`ModelManager`] (its queue,
//! memory budget and model threads).
//!
//! The request's `model` names a file under `models_dir` without `.gguf`
//! (the backend's configured `model` when empty). Errors map to backend
//! error kinds: an unknown or missing model, a prompt longer than the
//! context and a build without llama.cpp are `bad_request` (no retry, the
//! breaker does not count them); exhausted memory is `resource_exhausted`
//! (the router degrades to the tiny model); a full queue is `rate_limited`;
//! a cancelled request is `cancelled` with the tokens generated so far; a
//! request not answered within the backend's `total_timeout_secs` (queue,
//! load and generation) is cancelled and answered `timeout`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{BackendError, BackendErrorKind, ChatBackend, ChatRequest, ChatResponse};
use crate::config::BackendSettings;
use crate::models::local::{EngineError, Finish};
use crate::models::manager::{LocalError, LocalRequest, ModelManager};

/// A backend serving local GGUF models.
pub struct EmbeddedBackend {
    name: String,
    model: String,
    total_timeout: Duration,
    manager: Arc<ModelManager>,
}

impl EmbeddedBackend {
    /// The backend `name` with its settings, on the daemon's model manager.
    pub fn new(name: &str, settings: &BackendSettings, manager: Arc<ModelManager>) -> EmbeddedBackend {
        let total_timeout = Duration::try_from_secs_f64(settings.total_timeout_secs).unwrap_or(Duration::MAX);
        EmbeddedBackend { name: name.to_string(), model: settings.model.clone(), total_timeout, manager }
    }

    fn error(&self, kind: BackendErrorKind, message: String) -> BackendError {
        BackendError { backend: self.name.clone(), kind, message, status: None, attempts: 1 }
    }
}

#[async_trait]
impl ChatBackend for EmbeddedBackend {
    async fn chat(
        &self,
        request: ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
        cancel: CancellationToken,
    ) -> Result<ChatResponse, BackendError> {
        let model = if request.model.is_empty() { self.model.clone() } else { request.model.clone() };
        let local = LocalRequest {
            model,
            messages: request.messages,
            params: request.params,
            schedule: request.schedule,
            deltas,
            cancel: cancel.child_token(),
            over_budget_ok: request.degrade,
        };
        // `total_timeout_secs` covers the queue, the load and the generation;
        // past it the request is cancelled like any other.
        let stop = local.cancel.clone();
        let run = self.manager.generate(local);
        tokio::pin!(run);
        let result = match tokio::time::timeout(self.total_timeout, &mut run).await {
            Ok(r) => r,
            Err(_) => {
                stop.cancel();
                let _ = run.await;
                return Err(self.error(
                    BackendErrorKind::Timeout,
                    format!("no answer within total_timeout_secs ({:.1} s)", self.total_timeout.as_secs_f64()),
                ));
            }
        };
        let answer = result.map_err(|e| {
            let kind = match &e {
                LocalError::MemoryExhausted { .. } => BackendErrorKind::ResourceExhausted,
                LocalError::QueueFull(_) => BackendErrorKind::RateLimited,
                LocalError::ShuttingDown | LocalError::Restarting => BackendErrorKind::Unreachable,
                LocalError::UnknownModel { .. }
                | LocalError::Busy(_)
                | LocalError::Engine(
                    EngineError::NotFound(_)
                    | EngineError::PromptTooLong { .. }
                    | EngineError::NotBuilt
                    | EngineError::Grammar(_),
                ) => BackendErrorKind::BadRequest,
                LocalError::Engine(_) => BackendErrorKind::Server,
            };
            self.error(kind, format!("{}: {e}", e.code()))
        })?;
        let out = answer.output;
        if out.finish == Finish::Cancelled {
            return Err(
                self.error(BackendErrorKind::Cancelled, format!("cancelled after {} generated tokens", out.tokens_out))
            );
        }
        Ok(ChatResponse {
            content: out.text,
            model: answer.model,
            tokens_in: out.tokens_in,
            tokens_out: out.tokens_out,
            finish_reason: Some(out.finish.as_str().to_string()),
            first_token: answer.first_token,
            attempts: 1,
        })
    }

    async fn models(&self) -> Result<Vec<String>, BackendError> {
        let list = self.manager.list().await.map_err(|e| self.error(BackendErrorKind::Server, e.to_string()))?;
        Ok(list.iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect())
    }
}
