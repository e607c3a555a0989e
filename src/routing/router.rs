//! `HybridRouter`: the actor every model call goes through (DESIGN §5). Its
//! own actor under the root supervisor, not one of the 77 agents.
//!
//! Messages ([`RouterMsg`]): `Call` (decide, call the chain, answer with the
//! response and its receipt), `Outcome` (a backend call finished: feeds the
//! circuit breakers), `Status` (breaker states, for `/v1/models` and tests).
//!
//! State: the compiled [`Policy`], one [`CircuitBreaker`] per backend, the
//! backends themselves. The handler only decides (microseconds); the HTTP
//! calls run in tracked tasks that report each backend's outcome back, so a
//! slow backend never blocks other decisions.
//!
//! Receipts: every call, answered or not, leaves a [`Receipt`] — stored in
//! SQLite (`receipts`), published as `route.decided`, and returned to the
//! caller (the reply's `route`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::breaker::CircuitBreaker;
use super::policy::{DEGRADE_TO_TINY, Policy, RouteInput, tier_str};
use crate::agents::task::{ErrorCode, TaskError};
use crate::backends::embedded::EmbeddedBackend;
use crate::backends::openai::OpenAiBackend;
use crate::backends::{BackendErrorKind, ChatBackend, ChatMessage, ChatRequest, ChatResponse};
use crate::config::{BackendKind, Prefer};
use crate::store::receipts::{self, Receipt};
use crate::supervisor::context::FleetCtx;

/// Actor name of the router (prefixed like every actor name).
pub const ROUTER_NAME: &str = "HybridRouter";

/// One model call.
#[derive(Debug, Clone, Default)]
pub struct ModelCall {
    /// Task id (receipt key).
    pub task_id: String,
    /// The asking agent (`gateway` for `/v1` requests).
    pub agent: String,
    /// Task type, for the rules.
    pub task_type: String,
    /// Explicit complexity from the task.
    pub complexity: Option<f64>,
    /// The agent's default complexity.
    pub agent_complexity: f64,
    /// The user's preference.
    pub prefer: Option<Prefer>,
    /// Use exactly this backend (gateway `model` naming a backend).
    pub backend: Option<String>,
    /// Model override (gateway `model` naming a model).
    pub model: Option<String>,
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Most tokens in the answer.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Ask for a JSON object.
    pub json: bool,
    /// The JSON schema of the answer (the embedded backend enforces it).
    pub json_schema: Option<Value>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Task priority 0–9.
    pub priority: u8,
    /// Serve before every queued local request.
    pub push_to_front: bool,
    /// Streamed text deltas go here.
    pub deltas: Option<mpsc::UnboundedSender<String>>,
    /// Cancels the HTTP call.
    pub cancel: CancellationToken,
    /// Milliseconds the task waited before this call (bus queue).
    pub queue_ms: f64,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct ModelAnswer {
    /// The answer.
    pub response: ChatResponse,
    /// Its receipt.
    pub receipt: Receipt,
}

/// A failed call: the error and, when a decision was made, its receipt.
#[derive(Debug, Clone)]
pub struct ModelFailure {
    /// `no_backend`, `backend_error`, `cancelled`.
    pub error: TaskError,
    /// The receipt, when routing got that far.
    pub receipt: Option<Receipt>,
}

/// Messages of [`HybridRouter`].
pub enum RouterMsg {
    /// Route and run one model call.
    Call(Box<ModelCall>, RpcReplyPort<Result<ModelAnswer, ModelFailure>>),
    /// Internal: a backend call ended.
    Outcome {
        /// Backend name.
        backend: String,
        /// `Some(true)` success, `Some(false)` failure, `None` abandoned (cancelled).
        success: Option<bool>,
    },
    /// Breaker states and backends: `{"backends": [{"name", "tier", "model", "breaker"}]}`.
    Status(RpcReplyPort<Value>),
}

/// The router actor.
pub struct HybridRouter;

/// State of the router.
pub struct RouterState {
    ctx: Arc<FleetCtx>,
    policy: Arc<Policy>,
    backends: BTreeMap<String, Arc<dyn ChatBackend>>,
    breakers: BTreeMap<String, CircuitBreaker>,
    calls: JoinSet<()>,
    /// An enabled embedded backend serves L1: free model memory matters.
    has_embedded_l1: bool,
}

impl Actor for HybridRouter {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Arc<FleetCtx>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        ctx: Arc<FleetCtx>,
    ) -> Result<RouterState, ActorProcessingErr> {
        let settings = &ctx.settings;
        let policy = Policy::new(&settings.routing, &settings.backends)?;
        let mut backends: BTreeMap<String, Arc<dyn ChatBackend>> = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        for (name, b) in settings.backends.iter().filter(|(_, b)| b.enabled) {
            match b.kind {
                BackendKind::Openai => {
                    backends.insert(name.clone(), Arc::new(OpenAiBackend::new(name, b)?));
                    breakers.insert(name.clone(), CircuitBreaker::new(&settings.routing.breaker));
                }
                BackendKind::Embedded => {
                    backends.insert(name.clone(), Arc::new(EmbeddedBackend::new(name, b, ctx.models.clone())));
                    breakers.insert(name.clone(), CircuitBreaker::new(&settings.routing.breaker));
                }
            }
        }
        tracing::info!(backends = ?backends.keys().collect::<Vec<_>>(), "HybridRouter ready");
        let has_embedded_l1 = settings
            .backends
            .values()
            .any(|b| b.enabled && b.kind == BackendKind::Embedded && b.tier == crate::config::Tier::L1);
        Ok(RouterState { ctx, policy: Arc::new(policy), backends, breakers, calls: JoinSet::new(), has_embedded_l1 })
    }

    async fn post_stop(&self, _myself: ActorRef<RouterMsg>, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        state.calls.abort_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        while st.calls.try_join_next().is_some() {}
        match msg {
            RouterMsg::Call(call, reply) => st.call(myself, *call, reply),
            RouterMsg::Outcome { backend, success } => {
                let now = Instant::now();
                if let Some(b) = st.breakers.get_mut(&backend) {
                    match success {
                        Some(true) => b.on_success(),
                        Some(false) => b.on_failure(now),
                        None => b.on_abandoned(),
                    }
                    let state = b.state(now);
                    st.ctx.metrics.breaker_state.with_label_values(&[&backend]).set(state as i64);
                }
            }
            RouterMsg::Status(reply) => {
                let now = Instant::now();
                let list: Vec<Value> = st
                    .ctx
                    .settings
                    .backends
                    .iter()
                    .map(|(name, b)| {
                        json!({
                            "name": name, "tier": tier_str(b.tier), "model": b.model, "enabled": b.enabled,
                            "breaker": st.breakers.get(name).map(|br| br.state(now).as_str()),
                        })
                    })
                    .collect();
                let _ = reply.send(json!({"backends": list}));
            }
        }
        Ok(())
    }
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Rough token estimate (4 characters per token) for the routing input.
fn estimate_tokens(messages: &[ChatMessage]) -> u32 {
    (messages.iter().map(|m| m.content.len()).sum::<usize>() / 4) as u32
}

impl RouterState {
    fn call(
        &mut self,
        myself: ActorRef<RouterMsg>,
        call: ModelCall,
        reply: RpcReplyPort<Result<ModelAnswer, ModelFailure>>,
    ) {
        let t0 = Instant::now();
        let now = Instant::now();
        let mut input = RouteInput::new(&call.task_type, call.agent_complexity);
        input.complexity = call.complexity;
        input.prefer = call.prefer;
        input.context_tokens = estimate_tokens(&call.messages);
        input.local_load_percent = self.ctx.system_load_percent();
        if self.has_embedded_l1 {
            input.free_model_memory_bytes = self.ctx.models.reading().map(|r| r.free_bytes);
        }
        let breakers = RefCell::new(&mut self.breakers);
        let decision = match &call.backend {
            Some(forced) => self
                .policy
                .decide(&input, &|b| b == forced && breakers.borrow().get(b).is_some_and(|br| br.would_allow(now))),
            None => self.policy.decide(&input, &|b| breakers.borrow().get(b).is_some_and(|br| br.would_allow(now))),
        };
        let decide_us = t0.elapsed().as_secs_f64() * 1e6;
        self.ctx.metrics.route_decide_seconds.observe(decide_us / 1e6);
        let mut receipt = Receipt {
            ts: now_unix(),
            task_id: call.task_id.clone(),
            agent: call.agent.clone(),
            task_type: call.task_type.clone(),
            decide_us,
            queue_ms: call.queue_ms,
            ..Default::default()
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                let open: Vec<String> =
                    self.breakers.iter().filter(|(_, b)| !b.would_allow(now)).map(|(n, _)| n.clone()).collect();
                receipt.tier = "none".into();
                receipt.reason = e.to_string();
                receipt.fallbacks = open.iter().map(|n| format!("skip_open_breaker:{n}")).collect();
                receipt.outcome = ErrorCode::NoBackend.as_str().into();
                let hint = if self.backends.is_empty() {
                    "no model backend is configured: add one under backends: in agentvisor.yaml (see README)"
                        .to_string()
                } else if !open.is_empty() {
                    format!("{e} (circuit breaker open for {})", open.join(", "))
                } else {
                    e.to_string()
                };
                let failure =
                    ModelFailure { error: TaskError::new(ErrorCode::NoBackend, hint), receipt: Some(receipt.clone()) };
                self.finish_later(receipt);
                let _ = reply.send(Err(failure));
                return;
            }
        };
        receipt.tier = tier_str(decision.tier).to_string();
        receipt.complexity = decision.complexity;
        receipt.reason = decision.reason.clone();
        receipt.fallbacks = decision.fallbacks.clone();
        // Take the breakers' permission (marks a half-open probe) as we go.
        let chain: Vec<(String, Arc<dyn ChatBackend>)> = decision
            .chain
            .iter()
            .filter_map(|name| self.backends.get(name).map(|b| (name.clone(), b.clone())))
            .collect();
        let ctx = self.ctx.clone();
        let prices: BTreeMap<String, (f64, f64, String)> = chain
            .iter()
            .filter_map(|(n, _)| {
                ctx.settings
                    .backends
                    .get(n)
                    .map(|b| (n.clone(), (b.price_per_1k_input_usd, b.price_per_1k_output_usd, b.model.clone())))
            })
            .collect();
        let permits: Vec<bool> =
            chain.iter().map(|(n, _)| self.breakers.get_mut(n).is_some_and(|b| b.allow(now))).collect();
        let kinds: BTreeMap<String, BackendKind> =
            chain.iter().filter_map(|(n, _)| ctx.settings.backends.get(n).map(|b| (n.clone(), b.kind))).collect();
        let pre_degraded = decision.fallbacks.iter().any(|f| f == DEGRADE_TO_TINY);
        let degrade_on_exhaustion = ctx.settings.routing.failover.vram_exhausted == DEGRADE_TO_TINY;
        self.calls.spawn(async move {
            let tiny = if pre_degraded { ctx.models.tiny_model().await } else { None };
            let t_call = Instant::now();
            let mut attempts = 0;
            let mut last_error: Option<TaskError> = None;
            let streamed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Backends whose breaker let us through but that we never call
            // (an earlier one answered) give their half-open probe back.
            let give_back = |rest: &[(String, bool)]| {
                for (name, permitted) in rest {
                    if *permitted {
                        let _ = myself.cast(RouterMsg::Outcome { backend: name.clone(), success: None });
                    }
                }
            };
            let untried: Vec<(String, bool)> =
                chain.iter().map(|(n, _)| n.clone()).zip(permits.iter().copied()).collect();
            for (i, ((name, backend), permitted)) in chain.into_iter().zip(permits).enumerate() {
                if !permitted {
                    receipt.fallbacks.push(format!("skip_open_breaker:{name}"));
                    continue;
                }
                if i > 0 && last_error.is_some() {
                    receipt.fallbacks.push(format!("next_backend:{name}"));
                }
                let (price_in, price_out, default_model) = prices.get(&name).cloned().unwrap_or_default();
                let mut request = ChatRequest {
                    model: call.model.clone().unwrap_or(default_model),
                    messages: call.messages.clone(),
                    max_tokens: call.max_tokens,
                    temperature: call.temperature,
                    json: call.json,
                    json_schema: call.json_schema.clone(),
                    top_p: call.top_p,
                    priority: call.priority,
                    push_to_front: call.push_to_front,
                    degrade: false,
                };
                let local = kinds.get(&name) == Some(&BackendKind::Embedded);
                if local
                    && pre_degraded
                    && let Some(tiny) = tiny.as_ref()
                {
                    request.model = tiny.clone();
                    request.degrade = true;
                }
                receipt.backend = Some(name.clone());
                let mut result =
                    attempt(&backend, request.clone(), call.deltas.as_ref(), &streamed, &call.cancel).await;
                // Local memory exhausted with nothing idle to evict: the tiny model answers.
                if local
                    && degrade_on_exhaustion
                    && !request.degrade
                    && let Err(e) = &result
                    && e.kind == BackendErrorKind::ResourceExhausted
                    && !streamed.load(std::sync::atomic::Ordering::Acquire)
                    && let Some(tiny) = ctx.models.tiny_model().await
                    && tiny != request.model
                {
                    tracing::warn!(backend = %name, model = %request.model, tiny = %tiny, error = %e,
                        "local model memory exhausted; degrading to the tiny model");
                    receipt.fallbacks.push(format!("{DEGRADE_TO_TINY}:{tiny}"));
                    request.model = tiny;
                    request.degrade = true;
                    result = attempt(&backend, request, call.deltas.as_ref(), &streamed, &call.cancel).await;
                }
                match result {
                    Ok(resp) => {
                        let _ = myself.cast(RouterMsg::Outcome { backend: name.clone(), success: Some(true) });
                        attempts += resp.attempts;
                        receipt.attempts = attempts;
                        receipt.model = Some(resp.model.clone());
                        receipt.tokens_in = resp.tokens_in;
                        receipt.tokens_out = resp.tokens_out;
                        receipt.first_token_ms = resp.first_token.map(|d| d.as_secs_f64() * 1e3);
                        receipt.total_ms = t_call.elapsed().as_secs_f64() * 1e3;
                        receipt.cost_usd = f64::from(resp.tokens_in) / 1000.0 * price_in
                            + f64::from(resp.tokens_out) / 1000.0 * price_out;
                        receipt.outcome = "ok".into();
                        ctx.metrics.llm_tokens.with_label_values(&[&name, "in"]).inc_by(u64::from(resp.tokens_in));
                        ctx.metrics.llm_tokens.with_label_values(&[&name, "out"]).inc_by(u64::from(resp.tokens_out));
                        ctx.metrics.backend_requests.with_label_values(&[&name, "ok"]).inc();
                        give_back(&untried[i + 1..]);
                        finish(&ctx, receipt.clone()).await;
                        let _ = reply.send(Ok(ModelAnswer { response: resp, receipt }));
                        return;
                    }
                    Err(e) => {
                        attempts += e.attempts.max(1);
                        let success = if e.kind == BackendErrorKind::Cancelled { None } else { Some(false) };
                        // A rejected request or a full memory says nothing about the backend's health.
                        let counts = !matches!(
                            e.kind,
                            BackendErrorKind::BadRequest | BackendErrorKind::Auth | BackendErrorKind::ResourceExhausted
                        );
                        let _ = myself.cast(RouterMsg::Outcome {
                            backend: name.clone(),
                            success: if counts { success } else { None },
                        });
                        ctx.metrics.backend_requests.with_label_values(&[&name, e.kind.as_str()]).inc();
                        tracing::warn!(backend = %name, error = %e, "backend call failed");
                        let code = if e.kind == BackendErrorKind::Cancelled {
                            ErrorCode::Cancelled
                        } else {
                            ErrorCode::BackendError
                        };
                        last_error = Some(TaskError::new(code, e.to_string()));
                        if e.kind == BackendErrorKind::Cancelled || streamed.load(std::sync::atomic::Ordering::Acquire)
                        {
                            give_back(&untried[i + 1..]);
                            break; // no failover after cancel or after part of the answer was streamed
                        }
                    }
                }
            }
            let error = last_error.unwrap_or_else(|| {
                TaskError::new(ErrorCode::NoBackend, "every backend of the routing chain has an open circuit breaker")
            });
            receipt.attempts = attempts;
            receipt.outcome = error.code.as_str().into();
            receipt.total_ms = t_call.elapsed().as_secs_f64() * 1e3;
            finish(&ctx, receipt.clone()).await;
            let _ = reply.send(Err(ModelFailure { error, receipt: Some(receipt) }));
        });
    }

    fn finish_later(&mut self, receipt: Receipt) {
        let ctx = self.ctx.clone();
        self.calls.spawn(async move { finish(&ctx, receipt).await });
    }
}

/// One backend call, forwarding its text deltas to `out` and noting in
/// `streamed` that some were sent (no failover after that).
async fn attempt(
    backend: &Arc<dyn ChatBackend>,
    request: ChatRequest,
    out: Option<&mpsc::UnboundedSender<String>>,
    streamed: &Arc<std::sync::atomic::AtomicBool>,
    cancel: &CancellationToken,
) -> Result<ChatResponse, crate::backends::BackendError> {
    let (deltas, forwarder) = match out {
        Some(out) => {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let (out, streamed) = (out.clone(), streamed.clone());
            let forwarder = tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    streamed.store(true, std::sync::atomic::Ordering::Release);
                    let _ = out.send(d);
                }
            });
            (Some(tx), Some(forwarder))
        }
        None => (None, None),
    };
    let result = backend.chat(request, deltas, cancel.clone()).await;
    if let Some(f) = forwarder {
        // The backend dropped its sender: once this ends every delta it sent
        // is forwarded and `streamed` is final.
        let _ = f.await;
    }
    result
}

/// Stores, publishes and counts a receipt.
async fn finish(ctx: &Arc<FleetCtx>, receipt: Receipt) {
    ctx.metrics
        .route_decisions
        .with_label_values(&[&receipt.tier, receipt.backend.as_deref().unwrap_or("none"), &receipt.outcome])
        .inc();
    ctx.events.publish("route.decided", serde_json::to_value(&receipt).unwrap_or(Value::Null));
    let r = receipt.clone();
    if let Err(e) = ctx.store.call(move |conn| receipts::insert(conn, &r)).await {
        tracing::warn!(error = %e, task_id = %receipt.task_id, "receipt not stored");
    }
}
