//! Chat types in the OpenAI shape, shared by the agents that ask, the
//! router that decides, the backends that answer and the local model queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Sampling and length of one generation, carried unchanged from the agent
/// (or the `/v1` request) through the router and the backend to the local
/// model queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenParams {
    /// Most tokens in the answer; `None`: the backend's default
    /// (`models.default_max_tokens` for embedded models).
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None` or 0: greedy decoding.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (default 0.95), used with a temperature.
    pub top_p: Option<f32>,
    /// Seed of the random draw; `None`: a random one.
    pub seed: Option<u32>,
    /// Ask for a JSON object answer (`response_format: {"type": "json_object"}`).
    pub json: bool,
    /// The JSON schema the answer must follow (with `json`): the embedded
    /// backend enforces it with a grammar; HTTP backends ignore it.
    pub json_schema: Option<Value>,
}

/// Where a request goes in the local model queue: priority 0–9 (9 first,
/// FIFO within a priority) and the push-to-front flag (seed 000's priority
/// request queue). Carried unchanged from the envelope to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// 0–9, 9 first; 5 by default.
    pub priority: u8,
    /// Serve before every queued request.
    pub push_to_front: bool,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule { priority: 5, push_to_front: false }
    }
}

/// A chat request to one backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// Model name as the backend knows it.
    pub model: String,
    /// Conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Sampling and length.
    pub params: GenParams,
    /// Local queue position.
    pub schedule: Schedule,
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

/// Estimated tokens of a conversation (see [`super::estimate_tokens`]).
pub(crate) fn estimate_messages(messages: &[ChatMessage]) -> u32 {
    super::estimate_tokens(messages.iter().map(|m| m.content.chars().count()).sum())
}
