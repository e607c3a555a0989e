//! The routing receipt: the record of one model-routing decision and its
//! outcome (DESIGN §5).

use serde::{Deserialize, Serialize};

/// The record of one routing decision and its outcome. Also the `route`
/// field of a reply and the `route.decided` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Receipt {
    /// Unix time of the decision, seconds.
    pub ts: f64,
    /// The task (or gateway request) id.
    pub task_id: String,
    /// The agent that asked (`gateway` for `/v1` requests).
    pub agent: String,
    /// Who asked (the envelope's `user`, the `/v1` request's `user`).
    #[serde(default)]
    pub user: Option<String>,
    /// Task type used for the rules.
    pub task_type: String,
    /// `L1`, `L2` or `L3`.
    pub tier: String,
    /// The backend that answered (or the last one tried).
    pub backend: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Complexity used, 0.0–1.0.
    pub complexity: f64,
    /// Why this tier and backend.
    pub reason: String,
    /// HTTP attempts across all backends tried.
    pub attempts: u32,
    /// Failover steps taken (`fallback_to_local`, `next_backend:<name>`, ...).
    pub fallbacks: Vec<String>,
    /// `ok` or the error code.
    pub outcome: String,
    /// Decision time, microseconds.
    pub decide_us: f64,
    /// Waiting before the decision (bus queue), milliseconds.
    pub queue_ms: f64,
    /// Time to first token, milliseconds.
    pub first_token_ms: Option<f64>,
    /// Decision to answer, milliseconds.
    pub total_ms: f64,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Estimated cost, USD (the backend's configured prices per 1k tokens).
    pub cost_usd: f64,
}
