//! Model backends behind one trait (DESIGN §5): `openai` (any
//! OpenAI-compatible `/v1/chat/completions`: Ollama, llama.cpp server, vLLM,
//! LM Studio, DeepInfra, OpenAI, Gemini's OpenAI endpoint) and `embedded`
//! (GGUF files in-process through llama.cpp, see [`crate::models`]).
//!
//! Where it sits: HybridRouter ([`crate::routing`]) picks a backend and
//! calls [`ChatBackend::chat`]; agents never call a backend directly.

pub mod embedded;
pub mod openai;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One chat message (OpenAI shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.to_string(), content: content.into() }
    }
}

/// A chat request to one backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// Model name as the backend knows it.
    pub model: String,
    /// Conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Most tokens in the answer.
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None`: the backend's default.
    pub temperature: Option<f32>,
    /// Ask for a JSON object answer (`response_format: {"type": "json_object"}`).
    pub json: bool,
    /// The JSON schema the answer must follow (with `json`): the embedded
    /// backend enforces it with a grammar; HTTP backends ignore it.
    pub json_schema: Option<serde_json::Value>,
    /// Nucleus sampling mass, with a temperature.
    pub top_p: Option<f32>,
    /// Task priority 0–9 (the local queue serves 9 first).
    pub priority: u8,
    /// Serve before every queued local request.
    pub push_to_front: bool,
    /// This call is the `degrade_to_tiny` failover: the (tiny) model may load
    /// over the memory budget.
    pub degrade: bool,
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    /// The assistant's text.
    pub content: String,
    /// The model that answered (as reported by the backend).
    pub model: String,
    /// Prompt tokens (from `usage`; estimated when absent).
    pub tokens_in: u32,
    /// Completion tokens (from `usage`; estimated when absent).
    pub tokens_out: u32,
    /// `stop`, `length`, ...
    pub finish_reason: Option<String>,
    /// Time to first token (streaming) or to the whole answer.
    pub first_token: Option<Duration>,
    /// HTTP attempts made (1 = no retry).
    pub attempts: u32,
}

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
    /// The configured backend name.
    fn name(&self) -> &str;

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
