//! Model backends behind one trait (DESIGN §5): `openai` (any
//! OpenAI-compatible `/v1/chat/completions`: Ollama, llama.cpp server, vLLM,
//! LM Studio, DeepInfra, OpenAI, Gemini's OpenAI endpoint) and `embedded`
//! (GGUF files in-process through llama.cpp, see [`crate::models`]).
//!
//! Where it sits: HybridRouter ([`crate::routing`]) picks a backend and
//! calls [`ChatBackend::chat`]; agents never call a backend directly.

pub mod embedded;
pub mod openai;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::core::{ChatMessage, ChatRequest, ChatResponse};

/// What went wrong with a backend call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendErrorKind {
    /// Connection refused, DNS, reset before any answer. Retryable.
    Unreachable,
    /// Connect, first-token or total timeout. Retryable (connect only).
    Timeout,
    /// HTTP 429. Retryable after `Retry-After`.
    RateLimited,
    /// HTTP 401/403 or a missing API key. Not retryable.
    Auth,
    /// HTTP 400/404/422. Not retryable.
    BadRequest,
    /// HTTP 5xx. Retryable.
    Server,
    /// The answer did not follow the OpenAI protocol (bad JSON, bad SSE, dropped mid-stream).
    Protocol,
    /// The caller cancelled.
    Cancelled,
    /// Local model memory is exhausted (nothing idle to evict). Not retryable;
    /// the router's `degrade_to_tiny` failover applies.
    ResourceExhausted,
}

impl BackendErrorKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendErrorKind::Unreachable => "unreachable",
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::RateLimited => "rate_limited",
            BackendErrorKind::Auth => "auth",
            BackendErrorKind::BadRequest => "bad_request",
            BackendErrorKind::Server => "server",
            BackendErrorKind::Protocol => "protocol",
            BackendErrorKind::Cancelled => "cancelled",
            BackendErrorKind::ResourceExhausted => "resource_exhausted",
        }
    }
}

/// A typed backend error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{backend}: {}: {message}", kind.as_str())]
pub struct BackendError {
    /// Backend name.
    pub backend: String,
    /// Kind.
    pub kind: BackendErrorKind,
    /// Details (never the API key).
    pub message: String,
    /// HTTP status, when there was one.
    pub status: Option<u16>,
    /// Attempts made before giving up.
    pub attempts: u32,
}

/// A place a model runs.
#[async_trait]
pub trait ChatBackend: Send + Sync + 'static {
    /// One chat completion. When `deltas` is set, the answer streams and
    /// each text delta is sent there as it arrives. Cancelling `cancel`
    /// aborts the HTTP request.
    ///
    /// # Errors
    /// [`BackendError`] after retries on retryable errors.
    async fn chat(
        &self,
        request: ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
        cancel: CancellationToken,
    ) -> Result<ChatResponse, BackendError>;

    /// Models the backend serves (cached with a TTL).
    ///
    /// # Errors
    /// [`BackendError`] when the list cannot be fetched.
    async fn models(&self) -> Result<Vec<String>, BackendError>;
}
