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
    /// The content estimate (content-aware routing), when the call or the
    /// arbiter asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<RouteEstimate>,
    /// The arbiter's steps, in order (only on an arbiter's reply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<RouteStep>,
    /// How the arbiter's loop ended (`accepted`, `needs_input`,
    /// `max_iterations`, `deadline`, `unreviewed`; only on an arbiter's reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbiter: Option<String>,
}

/// A request's kind and complexity estimated from its content (issue 15).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RouteEstimate {
    /// The matched route (`coding`, `chitchat`, ...: `routes/content.yaml`).
    pub route: String,
    /// The route's complexity, 0.0–1.0.
    pub complexity: f64,
    /// 0.0–1.0: the route's share of the nearest examples' votes.
    pub confidence: f64,
    /// The route's specialist (the arbiter consults it).
    pub specialist: String,
    /// The estimate decided (confidence at or above `routing.content.min_confidence`);
    /// `false`: the configured complexity or the arbiter's model decided.
    pub used: bool,
}

/// One step of the arbiter's loop: a specialist consulted and the review's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RouteStep {
    /// The specialist consulted.
    pub specialist: String,
    /// The tier of its model call (`none` when it made none).
    pub tier: String,
    /// The backend that answered it.
    pub backend: Option<String>,
    /// The step's time, milliseconds (the consultation and its review).
    pub ms: f64,
    /// The review of its answer: `accept`, `revise`, `change_phase`,
    /// `continue_current_phase`, `request_user_input`, `unreviewed` (no
    /// iteration or time left), `failed` (the specialist answered an error).
    pub verdict: String,
}
