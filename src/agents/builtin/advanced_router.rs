//! AdvancedRouter: capability-based routing across the fleet's agents and
//! the services of ServiceRegistry, from a provider matrix (the earlier
//! system's `providers.matrix.json`). State: none; the matrix is built at
//! each task from the task table, the `services` table and the `receipts`
//! table.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `router.route` | `{"capability", "strategy"?: "cheapest"\|"fastest", "exclude"?: [id]}` or the capability as text | `{"capability", "strategy", "chosen": PROVIDER or null, "candidates": [PROVIDER], "reason"}` |
//! | `router.capabilities` | `{"capability"?}` or nothing | `{"capabilities": [{"capability", "providers": [PROVIDER]}]}` |
//!
//! `PROVIDER` is `{"id", "name", "kind", "cost_usd_per_1k", "predicted_latency_seconds", "trust", "calls"}`:
//!
//! - the fleet's agents (`id` `agent:NAME`, `kind` `agent`) provide the
//!   task types they handle; their cost per 1 000 tokens and predicted
//!   latency (the mean time of a model call) come from their answered
//!   receipts of the last 7 days (`calls` of them); without receipts both
//!   are null. Agents that are `fatal` or `unavailable` are left out.
//! - registered services (`kind` `service`, their registry id) provide
//!   their capabilities (`caps`); cost is their `cost_hint_usd_per_1k`,
//!   predicted latency their reported p95 (`p95_ms` / 1000). Services
//!   `down` are left out.
//! - `trust` is AgentTrustScorer's score of an agent when that agent is
//!   running and answers `trust.score`; otherwise null (it is not built
//!   yet: the reason says so). Services have no trust score.
//!
//! `cheapest` orders by cost, then predicted latency; `fastest` by
//! predicted latency, then cost; unknown values last, then the higher
//! trust, then the id. `chosen` is the first candidate not in `exclude`;
//! null when none is left. Metrics: `agentvisor_provider_routes_total{strategy,outcome}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Behaviour, Name, Null, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, TaskTable, decode, encode, rust_task};
use crate::core::{ErrorCode, Task, TaskError, unix_time};
use crate::store::provider_stats::{self, AgentStats};
use crate::store::services::{self, Filter, Status};
use crate::store::{Store, StoreError};
use crate::supervisor::Peers;
use crate::supervisor::state::AgentState;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "AdvancedRouter";
/// The agent whose scores are the trust column.
const TRUST_SCORER: &str = "AgentTrustScorer";
/// Receipts older than this do not count, seconds (7 days).
const STATS_WINDOW_SECS: f64 = 7.0 * 86_400.0;

/// The task types of AdvancedRouter.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<RouteInput>, RouteOutput>(
            "router.route",
            "Chooses the provider of a capability (an agent or a registered service), cheapest or fastest, from the provider matrix",
            || {
                vec![
                    json!({"capability": "translation", "strategy": "cheapest"}),
                    json!({"capability": "code_generation", "strategy": "fastest", "exclude": ["agent:CodeGenerator"]}),
                    json!("translation"),
                ]
            },
        ),
        rust_task::<OrShort<CapabilitiesInput>, CapabilitiesOutput>(
            "router.capabilities",
            "The provider matrix: each capability with its candidate providers, cost, predicted latency and trust",
            || vec![json!({}), json!({"capability": "translation"}), json!(null)],
        ),
    ]
}

/// How to choose.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum Strategy {
    /// Lowest cost per 1 000 tokens first.
    #[default]
    Cheapest,
    /// Lowest predicted latency first.
    Fastest,
}

impl Strategy {
    fn as_str(self) -> &'static str {
        match self {
            Strategy::Cheapest => "cheapest",
            Strategy::Fastest => "fastest",
        }
    }
}

/// A routing question.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RouteInput {
    /// A task type or a registry capability, e.g. `translation`.
    capability: Name,
    /// `cheapest` (default) or `fastest`.
    #[serde(default)]
    strategy: Option<Strategy>,
    /// Provider ids to pass over (`agent:NAME` or a registry id).
    #[serde(default)]
    exclude: Option<Vec<Name>>,
}

impl Shorthand for RouteInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The capability alone: the cheapest provider.";
    fn expand(capability: Name) -> RouteInput {
        RouteInput { capability, strategy: None, exclude: None }
    }
}

/// One provider of a capability.
#[derive(Serialize, JsonSchema, Clone, Debug)]
struct Provider {
    /// `agent:NAME` for the fleet's agents, else the registry id.
    id: String,
    /// The agent's or the service's name.
    name: String,
    /// `agent` or `service`.
    kind: ProviderKind,
    /// Cost per 1 000 tokens, US dollars; null: unknown.
    #[schemars(range(min = 0.0))]
    cost_usd_per_1k: Option<f64>,
    /// Predicted time of a call, seconds; null: unknown.
    #[schemars(range(min = 0.0))]
    predicted_latency_seconds: Option<f64>,
    /// AgentTrustScorer's score, 0–1; null: no score.
    #[schemars(range(min = 0.0, max = 1.0))]
    trust: Option<f64>,
    /// Answered receipts behind the agent's figures (0 for services).
    calls: u64,
}

/// What provides a capability.
#[derive(Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ProviderKind {
    /// An agent of this fleet.
    Agent,
    /// A service of ServiceRegistry.
    Service,
}

/// The choice.
#[derive(Serialize, JsonSchema)]
struct RouteOutput {
    /// The capability asked about.
    capability: String,
    /// The strategy used.
    strategy: Strategy,
    /// The provider chosen; null when there is none.
    chosen: Option<Provider>,
    /// Every provider considered, best first (excluded ones included).
    candidates: Vec<Provider>,
    /// Why this one, and what was missing (trust, figures).
    reason: String,
}

/// Which capabilities to list.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct CapabilitiesInput {
    /// Only this capability.
    #[serde(default)]
    capability: Option<Name>,
}

impl Shorthand for CapabilitiesInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: every capability.";
    fn expand(_: Null) -> CapabilitiesInput {
        CapabilitiesInput::default()
    }
}

/// One row of the matrix.
#[derive(Serialize, JsonSchema)]
struct CapabilityRow {
    /// The capability.
    capability: String,
    /// Its providers, cheapest first.
    providers: Vec<Provider>,
}

/// The provider matrix.
#[derive(Serialize, JsonSchema)]
struct CapabilitiesOutput {
    /// Capabilities by name.
    capabilities: Vec<CapabilityRow>,
}

/// The AdvancedRouter behaviour.
pub struct AdvancedRouter {
    store: Store,
    table: Arc<TaskTable>,
    peers: Arc<dyn Peers>,
    metrics: Metrics,
}

impl AdvancedRouter {
    /// The behaviour: agents from `table` (their states from `peers`),
    /// services and receipts from `store`.
    pub fn new(store: Store, table: Arc<TaskTable>, peers: Arc<dyn Peers>, metrics: Metrics) -> AdvancedRouter {
        AdvancedRouter { store, table, peers, metrics }
    }

    /// Trust scores by agent, or why there are none.
    async fn trust(&self) -> Result<BTreeMap<String, f64>, String> {
        match self.peers.state(TRUST_SCORER) {
            Some(AgentState::Running) => {}
            Some(s) => return Err(format!("no trust scores: {TRUST_SCORER} is {}", s.as_str())),
            None => return Err(format!("no trust scores: {TRUST_SCORER} is not in this profile")),
        }
        let task = Task::new(format!("advanced-router-{}", uuid::Uuid::new_v4()), "trust.score", Value::Null);
        match self.peers.call(TRUST_SCORER, task).await {
            Ok(out) => Ok(out.output["scores"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["agent"].as_str()?.to_string(), s["score"].as_f64()?.clamp(0.0, 1.0))))
                .collect()),
            Err(e) => Err(format!("no trust scores: {TRUST_SCORER} answered {}", e.code)),
        }
    }

    /// The matrix: capability → providers (unordered), and the trust note.
    async fn matrix(&self, only: Option<&str>) -> Result<(BTreeMap<String, Vec<Provider>>, Option<String>), TaskError> {
        let since = unix_time() - STATS_WINDOW_SECS;
        let (stats, rows) = self
            .store
            .call(move |conn| {
                Ok((provider_stats::agent_stats(conn, since)?, services::list(conn, &Filter::default())?))
            })
            .await
            .map_err(store_error)?;
        let (trust, note) = match self.trust().await {
            Ok(t) => (t, None),
            Err(why) => (BTreeMap::new(), Some(why)),
        };
        let mut m: BTreeMap<String, Vec<Provider>> = BTreeMap::new();
        for def in self.table.iter() {
            if only.is_some_and(|c| c != def.task_type) {
                continue;
            }
            if matches!(self.peers.state(&def.agent), None | Some(AgentState::Fatal | AgentState::Unavailable)) {
                continue;
            }
            let s: Option<&AgentStats> = stats.get(&def.agent);
            m.entry(def.task_type.clone()).or_default().push(Provider {
                id: format!("agent:{}", def.agent),
                name: def.agent.clone(),
                kind: ProviderKind::Agent,
                cost_usd_per_1k: s.and_then(|s| s.cost_usd_per_1k),
                predicted_latency_seconds: s.map(|s| s.mean_seconds),
                trust: trust.get(&def.agent).copied(),
                calls: s.map_or(0, |s| s.calls),
            });
        }
        for svc in rows.into_iter().filter(|s| s.status != Status::Down) {
            for cap in &svc.caps {
                if only.is_some_and(|c| c != cap) {
                    continue;
                }
                m.entry(cap.clone()).or_default().push(Provider {
                    id: svc.id.clone(),
                    name: svc.name.clone(),
                    kind: ProviderKind::Service,
                    cost_usd_per_1k: svc.cost_hint_usd_per_1k,
                    predicted_latency_seconds: svc.p95_ms.map(|ms| ms / 1000.0),
                    trust: None,
                    calls: 0,
                });
            }
        }
        Ok((m, note))
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("registry/receipts store: {e}"))
}

/// Orders `providers` best first under `strategy`.
fn rank(providers: &mut [Provider], strategy: Strategy) {
    let key = |v: Option<f64>| v.unwrap_or(f64::INFINITY);
    // (first key, second key) of a provider under the strategy.
    let keys = |p: &Provider| match strategy {
        Strategy::Cheapest => (key(p.cost_usd_per_1k), key(p.predicted_latency_seconds)),
        Strategy::Fastest => (key(p.predicted_latency_seconds), key(p.cost_usd_per_1k)),
    };
    providers.sort_by(|a, b| {
        let ((a1, a2), (b1, b2)) = (keys(a), keys(b));
        a1.total_cmp(&b1)
            .then(a2.total_cmp(&b2))
            .then(b.trust.unwrap_or(-1.0).total_cmp(&a.trust.unwrap_or(-1.0)))
            .then(a.id.cmp(&b.id))
    });
}

#[async_trait]
impl Behaviour for AdvancedRouter {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "router.route" => {
                let OrShort(RouteInput { capability: Name(capability), strategy, exclude }) = decode(t, &task.input)?;
                let strategy = strategy.unwrap_or_default();
                let exclude: Vec<String> = exclude.unwrap_or_default().into_iter().map(|Name(n)| n).collect();
                let (mut m, note) = self.matrix(Some(&capability)).await?;
                let mut candidates = m.remove(&capability).unwrap_or_default();
                rank(&mut candidates, strategy);
                let chosen = candidates.iter().find(|p| !exclude.contains(&p.id)).cloned();
                let outcome = if chosen.is_some() { "chosen" } else { "none" };
                self.metrics.provider_routes.with_label_values(&[strategy.as_str(), outcome]).inc();
                let mut reason = match &chosen {
                    Some(p) => format!(
                        "{} of {} provider(s) of {capability} by {}: cost {} USD/1k tokens, predicted latency {} s",
                        p.id,
                        candidates.len(),
                        strategy.as_str(),
                        p.cost_usd_per_1k.map_or("unknown".into(), |c| format!("{c}")),
                        p.predicted_latency_seconds.map_or("unknown".into(), |l| format!("{l:.3}")),
                    ),
                    None if candidates.is_empty() => format!("no agent or running service provides {capability}"),
                    None => format!("every provider of {capability} is excluded"),
                };
                if let Some(note) = note {
                    reason.push_str("; ");
                    reason.push_str(&note);
                }
                encode(t, RouteOutput { capability, strategy, chosen, candidates, reason })
            }
            "router.capabilities" => {
                let OrShort(CapabilitiesInput { capability }) = decode(t, &task.input)?;
                let only = capability.map(|Name(c)| c);
                let (m, _) = self.matrix(only.as_deref()).await?;
                let capabilities = m
                    .into_iter()
                    .map(|(capability, mut providers)| {
                        rank(&mut providers, Strategy::Cheapest);
                        CapabilityRow { capability, providers }
                    })
                    .collect();
                encode(t, CapabilitiesOutput { capabilities })
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, cost: Option<f64>, latency: Option<f64>) -> Provider {
        Provider {
            id: id.into(),
            name: id.into(),
            kind: ProviderKind::Service,
            cost_usd_per_1k: cost,
            predicted_latency_seconds: latency,
            trust: None,
            calls: 0,
        }
    }

    #[test]
    fn cheapest_and_fastest_order_unknowns_last() {
        let mut v = vec![p("a", Some(2.0), Some(0.1)), p("b", Some(0.5), Some(0.9)), p("c", None, None)];
        rank(&mut v, Strategy::Cheapest);
        assert_eq!(v.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["b", "a", "c"]);
        rank(&mut v, Strategy::Fastest);
        assert_eq!(v.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
