//! Types shared by the embedded engine and the model manager, built with or
//! without the `embedded` cargo feature.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// How a model is loaded (from `models:` in the settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// Context size, tokens (capped by the model's training context).
    pub context_tokens: u32,
    /// CPU threads for prompt and generation.
    pub threads: u32,
    /// Prompt tokens decoded per batch.
    pub batch_tokens: u32,
}

/// What llama.cpp reports about a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Parameters.
    pub n_params: u64,
    /// Tensor bytes.
    pub size_bytes: u64,
    /// Training context, tokens.
    pub n_ctx_train: u32,
    /// The context created, tokens.
    pub n_ctx: u32,
}

/// A generation's [`crate::core::GenParams`] as the engine runs it: length
/// and seed resolved, the JSON schema serialised for the grammar.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// `None` or 0: greedy; above 0: top-k 40 / top-p / temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (default 0.95), used with a temperature.
    pub top_p: Option<f32>,
    /// Seed of the random draw.
    pub seed: u32,
    /// A JSON schema (serialized) the answer must follow, enforced by a grammar.
    pub json_schema: Option<String>,
}

/// JSON mode without a schema: any JSON object.
const ANY_OBJECT_SCHEMA: &str = r#"{"type": "object"}"#;

impl Sampling {
    /// Resolves `params`: `max_tokens` defaults to `default_max_tokens`, the
    /// seed to a random one, JSON mode without a schema to any object.
    pub fn resolve(params: &crate::core::GenParams, default_max_tokens: u32) -> Sampling {
        let json_schema = match (&params.json_schema, params.json) {
            (Some(schema), _) => Some(schema.to_string()),
            (None, true) => Some(ANY_OBJECT_SCHEMA.to_string()),
            (None, false) => None,
        };
        Sampling {
            max_tokens: params.max_tokens.unwrap_or(default_max_tokens),
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed.unwrap_or_else(rand::random),
            json_schema,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
}

impl Finish {
    /// OpenAI's `finish_reason` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// One finished (or cancelled) generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// The text.
    pub text: String,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Generated tokens.
    pub tokens_out: u32,
    /// Why it ended.
    pub finish: Finish,
    /// From the job's start on the model thread to the first token.
    pub first_token: Option<Duration>,
    /// Whole job time on the model thread.
    pub total_time: Duration,
}

impl GenOutput {
    /// A job cancelled before it produced anything.
    pub(crate) fn cancelled_before_start() -> GenOutput {
        GenOutput {
            text: String::new(),
            tokens_in: 0,
            tokens_out: 0,
            finish: Finish::Cancelled,
            first_token: None,
            total_time: Duration::ZERO,
        }
    }

    /// Generation speed after the first token, tokens per second.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let first = self.first_token?;
        let decode = self.total_time.checked_sub(first)?.as_secs_f64();
        (self.tokens_out > 1 && decode > 0.0).then(|| f64::from(self.tokens_out - 1) / decode)
    }
}

/// Errors of the embedded engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The GGUF file is missing.
    #[error("model file {0} not found (run `agentvisor models fetch` for the default model)")]
    NotFound(PathBuf),
    /// llama.cpp could not load the file or create a context.
    #[error("loading failed: {0}")]
    Load(String),
    /// The chat template could not be applied.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt does not fit the context.
    #[error("the prompt is {tokens} tokens; the context holds {context}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context tokens.
        context: usize,
    },
    /// A decode step failed.
    #[error("decode: {0}")]
    Decode(String),
    /// The JSON schema could not become a grammar.
    #[error("{0}")]
    Grammar(String),
    /// Built without the `embedded` feature.
    #[error("this binary was built without the `embedded` feature (llama.cpp)")]
    NotBuilt,
}

/// GGUF metadata read without loading the tensors.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GgufMeta {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: Option<String>,
    /// Training context, tokens (`<arch>.context_length`).
    pub context_length: Option<u32>,
    /// Parameters (`general.parameter_count`, when the file records it).
    pub parameters: Option<u64>,
    /// KV-cache bytes per context token (f16 keys and values), from the
    /// layer count, embedding width and attention head counts.
    pub kv_bytes_per_token: Option<u64>,
}
