//! How many tokens a prompt takes on the model that would serve it, against
//! that model's context window: the token governor's measure (issue 14).
//!
//! Order: HybridRouter decides first (the backend its chain starts with);
//! then the prompt is counted for that backend's model:
//!
//! - **embedded** models: exactly, with the GGUF's own chat template and
//!   tokenizer ([`crate::models::manager::ModelManager::count_tokens`]) —
//!   the same count the generation reports as `tokens_in`; the window is the
//!   context the model was loaded with;
//! - **remote** (OpenAI-compatible) models, which expose no tokenizer: an
//!   estimate ([`estimate_prompt`]), the window being the backend's
//!   `context_tokens`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{BackendKind, BackendSettings};
use crate::core::{ChatMessage, estimate_tokens};
use crate::models::manager::ModelManager;

/// A prompt measured against the serving model's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measure {
    /// Prompt tokens.
    pub tokens: u32,
    /// The model's context window, tokens.
    pub window: u32,
    /// The backend that would serve the prompt.
    pub backend: String,
    /// Its model.
    pub model: String,
    /// `true`: an estimate (a remote model, or a local model whose tokenizer could not be used).
    pub estimated: bool,
}

impl Measure {
    /// `tokens / window`.
    pub fn ratio(&self) -> f64 {
        f64::from(self.tokens) / f64::from(self.window.max(1))
    }
}

/// Tokens framing each message in OpenAI's chat format (role and
/// separators: "every message follows <|start|>{role}\n{content}<|end|>\n",
/// OpenAI cookbook, "How to count tokens with tiktoken").
const PER_MESSAGE_TOKENS: u32 = 4;
/// Tokens priming the assistant's reply (same source).
const REPLY_PRIMING_TOKENS: u32 = 3;

/// Estimated prompt tokens of `messages` for a model without a tokenizer at
/// hand: 4 characters per token for each content
/// ([`crate::core::estimate_tokens`]) plus 4 tokens of framing per message
/// and 3 priming the reply.
pub fn estimate_prompt(messages: &[ChatMessage]) -> u32 {
    let content: u32 = messages.iter().map(|m| estimate_tokens(m.content.chars().count())).sum();
    content + PER_MESSAGE_TOKENS * messages.len() as u32 + REPLY_PRIMING_TOKENS
}

/// Measures `messages` for `backend` of `backends` (its `model`, or the
/// backend's own); local models through `models`.
pub(crate) async fn measure(
    backends: &BTreeMap<String, BackendSettings>,
    models: &ModelManager,
    backend: &str,
    model: Option<String>,
    messages: Vec<ChatMessage>,
) -> Measure {
    let settings = backends.get(backend);
    let model = model.or_else(|| settings.map(|b| b.model.clone())).unwrap_or_default();
    let remote_window = settings.map_or(models.settings().context_tokens, |b| b.context_tokens);
    if settings.is_some_and(|b| b.kind == BackendKind::Embedded) {
        match models.count_tokens(&model, messages.clone()).await {
            Ok((tokens, window)) => {
                return Measure { tokens, window, backend: backend.to_string(), model, estimated: false };
            }
            Err(e) => {
                tracing::warn!(backend, model = %model, error = %e, "prompt not counted by the model's tokenizer; estimating");
                let window = models.settings().context_tokens;
                return Measure {
                    tokens: estimate_prompt(&messages),
                    window,
                    backend: backend.to_string(),
                    model,
                    estimated: true,
                };
            }
        }
    }
    Measure {
        tokens: estimate_prompt(&messages),
        window: remote_window,
        backend: backend.to_string(),
        model,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_content_and_framing() {
        let m = [ChatMessage::new("system", "abcd"), ChatMessage::new("user", "abcdefgh")];
        assert_eq!(estimate_prompt(&m), 1 + 2 + 2 * 4 + 3);
        assert_eq!(estimate_prompt(&[]), 3);
        let half = Measure { tokens: 256, window: 512, backend: "b".into(), model: "m".into(), estimated: false };
        assert!((half.ratio() - 0.5).abs() < 1e-12);
    }
}
