//! TieredResponder: answers from the cheapest tier that fits — the response
//! cache, then a local model (L1), then the cloud (L2) — by urgency and
//! system load. It does not route by itself: it asks HybridRouter with a
//! preference (`prefer: local|cloud`) and a cacheable, greedy call, and the
//! reply's receipt says which tier answered and why.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `basic_qa` | the question, as text | the answer, as text |
//! | `tiered_response` | `{"text", "urgency"?: "low"\|"normal"\|"high"}` | `{"answer", "tier": "cache"\|"L1"\|"L2"\|"L3", "reason"}` |
//!
//! Rules (CPU load from SystemDigitalTwin, `routing.tiers.high_load_percent`
//! = H, 90 by default):
//!
//! - the cache first: TieredResponder starts CacheManager on demand, and the
//!   same question (same user) is answered from it while it is cached;
//! - `low` urgency: local (the cheapest), whatever the load;
//! - `normal` (the default, and `basic_qa`): local, or the cloud when the
//!   load is at or above H;
//! - `high`: local, or the cloud when the load is at or above H / 2 (a
//!   busy local model would keep the user waiting);
//! - with no load reading yet: local.
//!
//! The reply's route is HybridRouter's receipt with the rule prepended to its
//! `reason`; a cache hit has `backend: cache`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::decode;
use crate::core::{ChatMessage, ErrorCode, GenParams, Prefer, Task, TaskError, TaskOutput, TaskReply};
use crate::routing::router::{LoadProbe, ModelCall, RouterHandle};
use crate::supervisor::Peers;

/// The agent's name.
pub(crate) const AGENT: &str = "TieredResponder";

/// The role prompt of its model calls.
const PROMPT: &str = "You answer questions briefly and accurately, in one to three sentences.";

/// Most tokens of an answer.
const MAX_TOKENS: u32 = 256;

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "snake_case")]
enum Urgency {
    Low,
    Normal,
    High,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TieredInput {
    text: String,
    urgency: Option<Urgency>,
}

/// The TieredResponder behaviour.
pub struct TieredResponder {
    router: RouterHandle,
    load: LoadProbe,
    high_load_percent: f64,
    call_timeout: Duration,
    peers: std::sync::Arc<dyn Peers>,
}

impl TieredResponder {
    /// The behaviour: model calls through `router`, load from `load`.
    pub(crate) fn new(
        router: RouterHandle,
        load: LoadProbe,
        high_load_percent: f64,
        call_timeout: Duration,
        peers: std::sync::Arc<dyn Peers>,
    ) -> TieredResponder {
        TieredResponder { router, load, high_load_percent, call_timeout, peers }
    }
}

/// The preference for `urgency` at `load` percent, and why.
fn rule(urgency: Urgency, load: Option<f64>, high: f64) -> (Prefer, String) {
    let (limit, name) = match urgency {
        Urgency::Low => return (Prefer::Local, "urgency low: the cheapest tier, local".into()),
        Urgency::Normal => (high, "normal"),
        Urgency::High => (high / 2.0, "high"),
    };
    match load {
        None => (Prefer::Local, format!("urgency {name}, no load reading yet: local")),
        Some(load) if load >= limit => {
            (Prefer::Cloud, format!("urgency {name}, load {load:.0}% >= {limit:.0}%: cloud"))
        }
        Some(load) => (Prefer::Local, format!("urgency {name}, load {load:.0}% < {limit:.0}%: local")),
    }
}

impl TieredResponder {
    async fn respond(
        &self,
        task: &Task,
        text: &str,
        urgency: Urgency,
    ) -> Result<(String, String, String, TaskOutput), TaskError> {
        if text.trim().is_empty() {
            return Err(TaskError::new(
                ErrorCode::InvalidField,
                format!("input of {}: the text must not be blank", task.task_type),
            ));
        }
        // Cache first: CacheManager on demand (without it, calls go on uncached).
        if let Err(e) = self.peers.ensure("CacheManager").await {
            tracing::warn!(agent = AGENT, error = %e, "CacheManager not started; answering uncached");
        }
        let (prefer, why) = rule(urgency, self.load.percent(), self.high_load_percent);
        let call = ModelCall {
            task_id: task.id.clone(),
            agent: AGENT.into(),
            task_type: task.task_type.clone(),
            complexity: task.complexity,
            agent_complexity: 0.3,
            prefer: Some(task.prefer.unwrap_or(prefer)),
            user: task.user.clone(),
            messages: vec![ChatMessage::new("system", PROMPT), ChatMessage::new("user", text.trim())],
            params: GenParams { max_tokens: Some(MAX_TOKENS), ..Default::default() },
            schedule: task.schedule,
            cancel: task.cancel.clone(),
            queue_ms: task.queue_ms,
            cache: true,
            ..Default::default()
        };
        let timeout =
            task.deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())).unwrap_or(self.call_timeout);
        match self.router.call(call, timeout).await {
            Ok(a) => {
                let mut receipt = a.receipt;
                let tier = if receipt.backend.as_deref() == Some("cache") {
                    "cache".to_string()
                } else {
                    receipt.tier.clone()
                };
                let reason = if tier == "cache" {
                    format!("cache hit ({why} was the rule)")
                } else {
                    format!("{why}; {}", receipt.reason)
                };
                receipt.reason = format!("{AGENT}: {reason}");
                let answer = a.response.content;
                Ok((answer.clone(), tier, reason, TaskOutput { output: Value::Null, route: Some(receipt) }))
            }
            Err(f) => Err(f.error.with_route(f.receipt.map(|r| *r))),
        }
    }
}

#[async_trait]
impl Behaviour for TieredResponder {
    async fn handle(&self, task: Task) -> Answer {
        self.reply(task).await.map(|o| o.output)
    }

    async fn reply(&self, task: Task) -> TaskReply {
        let t = task.task_type.as_str();
        match t {
            "basic_qa" => {
                let text: String = decode(t, &task.input)?;
                let (answer, _, _, mut out) = self.respond(&task, &text, Urgency::Normal).await?;
                out.output = Value::String(answer);
                Ok(out)
            }
            "tiered_response" => {
                let TieredInput { text, urgency } = decode(t, &task.input)?;
                let (answer, tier, reason, mut out) =
                    self.respond(&task, &text, urgency.unwrap_or(Urgency::Normal)).await?;
                out.output = json!({"answer": answer, "tier": tier, "reason": reason});
                Ok(out)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgency_and_load_pick_the_side() {
        assert_eq!(rule(Urgency::Normal, None, 90.0).0, Prefer::Local);
        assert_eq!(rule(Urgency::Low, Some(99.0), 90.0).0, Prefer::Local);
        assert_eq!(rule(Urgency::Normal, Some(60.0), 90.0).0, Prefer::Local);
        assert_eq!(rule(Urgency::Normal, Some(95.0), 90.0).0, Prefer::Cloud);
        assert_eq!(rule(Urgency::High, Some(60.0), 90.0).0, Prefer::Cloud);
        assert_eq!(rule(Urgency::High, Some(30.0), 90.0).0, Prefer::Local);
        assert!(rule(Urgency::High, Some(60.0), 90.0).1.contains("60%"));
    }
}
