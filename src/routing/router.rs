//! `HybridRouter`: the actor every model call goes through (DESIGN §5). Its
//! own actor under the root supervisor, not one of the 77 agents.
//!
//! Messages ([`RouterMsg`]): `Call` (decide, call the chain, answer with the
//! response and its receipt), `Outcome` (a backend call finished: feeds the
//! circuit breakers), `Status` (breaker states, for `/v1/models` and tests).
//!
//! State: the compiled [`Policy`], one [`CircuitBreaker`] per backend, the
//! backends themselves. A call has three steps, one function each:
//! [`RouterState::decide`] in the handler (microseconds), then
//! [`run_chain`] in its own task (the backend calls, failover, the
//! breakers' outcomes sent back to the actor), then [`finish`] (the
//! receipt queued for storage, published and counted). A slow backend never blocks
//! other decisions.
//!
//! Supervision: the router is an infrastructure component
//! (`supervisor::infra`), restarted when it fails. Calls in flight run in
//! tasks of their own and finish across a restart (their late breaker
//! outcomes are lost: the new router starts with closed breakers); callers
//! reach the router by name ([`RouterHandle`]), so they get the new one, or
//! `agent_not_running` while it restarts.
//!
//! Receipts: every call, answered or not, leaves a [`Receipt`] — queued to
//! the [`ReceiptLog`] (committed to SQLite `receipts` in batches, off the
//! reply path), published as `route.decided`, and returned to the caller
//! (the reply's `route`). A reply carrying a receipt goes out only after
//! the receipt is queued, so the log's crash bound (`2 ×
//! store.receipts_batch`) counts replies; a full queue slows the call's
//! task (counted back-pressure), never drops a receipt.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::breaker::CircuitBreaker;
use super::cache::ResponseCache;
use super::content::{self, ContentRouter};
use super::measure::Measure;
use super::policy::{DEGRADE_TO_TINY, Decision, Policy, RouteInput, tier_str};
use crate::backends::embedded::EmbeddedBackend;
use crate::backends::openai::OpenAiBackend;
use crate::backends::{BackendError, BackendErrorKind, ChatBackend};
use crate::config::{BackendKind, BackendSettings, RoutingSettings, Tier};
use crate::core::chat::estimate_messages;
use crate::core::{
    ChatMessage, ChatRequest, ChatResponse, ErrorCode, Event, Fault, GenParams, Prefer, Receipt, Schedule, TaskError,
};
use crate::events::EventBus;
use crate::models::manager::ModelManager;
use crate::store::receipts::ReceiptLog;
use crate::telemetry::metrics::Metrics;

/// The machine's CPU load as SystemDigitalTwin last measured it, shared with
/// the router (a routing input). Cheap to clone.
#[derive(Clone)]
pub struct LoadProbe(Arc<AtomicU64>);

impl Default for LoadProbe {
    fn default() -> LoadProbe {
        LoadProbe(Arc::new(AtomicU64::new(u64::MAX)))
    }
}

impl LoadProbe {
    /// Records the CPU load, percent.
    pub(crate) fn set_percent(&self, percent: f64) {
        self.0.store((percent.clamp(0.0, 100.0) * 100.0) as u64, Ordering::Relaxed);
    }

    /// The latest CPU load, percent; `None` until it was measured.
    pub fn percent(&self) -> Option<f64> {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v as f64 / 100.0),
        }
    }
}

/// What the router needs from the daemon (given by the composition root).
#[derive(Clone)]
pub struct RouterArgs {
    /// Routing rules, tiers, failover, breakers.
    pub routing: RoutingSettings,
    /// Backends by name.
    pub backends: BTreeMap<String, BackendSettings>,
    /// `models_dir`, to accept a GGUF file name as a model.
    pub models_dir: PathBuf,
    /// The local model manager (embedded backends, free memory, tiny model).
    pub models: Arc<ModelManager>,
    /// CPU load.
    pub load: LoadProbe,
    /// Receipts go here (one writer shared by every router instance, so a
    /// restart keeps its queue).
    pub receipts: ReceiptLog,
    /// `route.decided`.
    pub events: EventBus,
    /// Routing and backend metrics.
    pub metrics: Metrics,
    /// The response cache (consulted for cacheable calls while CacheManager runs).
    pub cache: ResponseCache,
}

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
    /// Who asked (the envelope's or the `/v1` request's `user`), for the receipt.
    pub user: Option<String>,
    /// Use exactly this backend (a `model` naming a backend, or its model).
    pub backend: Option<String>,
    /// Model override (a `model` naming a model of that backend or a GGUF file).
    pub model: Option<String>,
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Sampling and length.
    pub params: GenParams,
    /// Local queue position.
    pub schedule: Schedule,
    /// Streamed text deltas go here.
    pub deltas: Option<mpsc::UnboundedSender<String>>,
    /// Cancels the HTTP call.
    pub cancel: CancellationToken,
    /// Milliseconds the task waited before this call (bus queue).
    pub queue_ms: f64,
    /// Estimate the complexity from the request's content (`routing.content`):
    /// `/v1` with `model: auto` or none, task types that opt in.
    pub content_routing: bool,
    /// May be answered from the response cache (and its answer stored
    /// there): a deterministic request whose asker allows it (see
    /// [`super::cache`]). A temperature above 0 is never cached.
    pub cache: bool,
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
    pub receipt: Option<Box<Receipt>>,
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
    /// Decide the call, then count its prompt for the model that would
    /// serve it (the token governor's measure; nothing is generated).
    Measure(Box<ModelCall>, RpcReplyPort<Result<Measure, ModelFailure>>),
    /// Fail on purpose (fault injection; the daemon sends it only with
    /// `testing.fault_injection: true`).
    Fault(Fault),
}

/// The router actor.
pub struct HybridRouter;

/// State of the router.
pub struct RouterState {
    /// Shared with each call's task (an `Arc`: a call clones a pointer, not the settings).
    args: Arc<RouterArgs>,
    policy: Arc<Policy>,
    backends: BTreeMap<String, Arc<dyn ChatBackend>>,
    breakers: BTreeMap<String, CircuitBreaker>,
    /// An enabled embedded backend serves L1: free model memory matters.
    has_embedded_l1: bool,
    /// Content-aware routing; `None`: off (or its routes failed to load, logged).
    content: Option<Arc<ContentRouter>>,
}

impl Actor for HybridRouter {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        let policy = Policy::new(&args.routing, &args.backends)?;
        let mut backends: BTreeMap<String, Arc<dyn ChatBackend>> = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        for (name, b) in args.backends.iter().filter(|(_, b)| b.enabled) {
            let backend: Arc<dyn ChatBackend> = match b.kind {
                BackendKind::Openai => Arc::new(OpenAiBackend::new(name, b)?),
                BackendKind::Embedded => Arc::new(EmbeddedBackend::new(name, b, args.models.clone())),
            };
            backends.insert(name.clone(), backend);
            breakers.insert(name.clone(), CircuitBreaker::new(&args.routing.breaker));
        }
        tracing::info!(backends = ?backends.keys().collect::<Vec<_>>(), "HybridRouter ready");
        let has_embedded_l1 =
            args.backends.values().any(|b| b.enabled && b.kind == BackendKind::Embedded && b.tier == Tier::L1);
        let content = match content::load(&args.routing.content) {
            Ok(c) => c.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, code = e.code(), "content-aware routing is off: its routes did not load");
                None
            }
        };
        Ok(RouterState { args: Arc::new(args), policy: Arc::new(policy), backends, breakers, has_embedded_l1, content })
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
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
                    st.args.metrics.breaker_state.with_label_values(&[&backend]).set(state as i64);
                }
            }
            RouterMsg::Status(reply) => {
                let now = Instant::now();
                let list: Vec<Value> = st
                    .args
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
            RouterMsg::Measure(call, reply) => st.measure(*call, reply),
            RouterMsg::Fault(Fault::Panic) => panic!("fault injection: HybridRouter panics in its handler"),
            RouterMsg::Fault(Fault::Error) => return Err("fault injection: HybridRouter fails in its handler".into()),
        }
        Ok(())
    }
}

/// What the call task needs of the router, copied out of its state.
struct ChainRun {
    call: ModelCall,
    /// Backends of the decision's chain with their breaker permits.
    chain: Vec<(String, Arc<dyn ChatBackend>, bool)>,
    receipt: Receipt,
    pre_degraded: bool,
    degrade_on_exhaustion: bool,
    args: Arc<RouterArgs>,
    /// The response cache key and the backend it is for, when the answer may be cached.
    cache_key: Option<(String, String)>,
}

impl RouterState {
    /// Step 1: the routing decision and the receipt's first fields. On
    /// `Err` the receipt says why no backend can serve the call.
    fn decide(&mut self, call: &ModelCall) -> Result<(Decision, Receipt), ModelFailure> {
        let t0 = Instant::now();
        let mut input = RouteInput::new(&call.task_type, call.agent_complexity);
        input.complexity = call.complexity;
        input.prefer = call.prefer;
        input.context_tokens = estimate_messages(&call.messages);
        input.local_load_percent = self.args.load.percent();
        // Content-aware routing: a confident estimate replaces the configured complexity.
        let estimate = match &self.content {
            Some(c) if call.content_routing && call.complexity.is_none() => {
                Some(c.estimate_with(content::request_text(&call.messages), self.args.routing.content.min_confidence))
            }
            _ => None,
        };
        if let Some(e) = estimate.as_ref().filter(|e| e.used) {
            input.complexity = Some(e.complexity);
        }
        if self.has_embedded_l1 {
            input.free_model_memory_bytes = self.args.models.reading().map(|r| r.free_bytes);
        }
        let breakers = RefCell::new(&mut self.breakers);
        let allowed = |b: &str| {
            call.backend.as_deref().is_none_or(|forced| forced == b)
                && breakers.borrow().get(b).is_some_and(|br| br.would_allow(t0))
        };
        let decision = self.policy.decide(&input, &allowed);
        let decide_us = t0.elapsed().as_secs_f64() * 1e6;
        self.args.metrics.route_decide_seconds.observe(decide_us / 1e6);
        let mut receipt = Receipt {
            ts: crate::core::unix_time(),
            task_id: call.task_id.clone(),
            agent: call.agent.clone(),
            user: call.user.clone(),
            task_type: call.task_type.clone(),
            decide_us,
            queue_ms: call.queue_ms,
            ..Default::default()
        };
        let estimated = |reason: String, e: &Option<crate::core::RouteEstimate>| match e {
            Some(e) => format!(
                "{reason}; content: {} ({:.2}{})",
                e.route,
                e.confidence,
                if e.used { "" } else { ", not used" }
            ),
            None => reason,
        };
        match decision {
            Ok(d) => {
                receipt.tier = tier_str(d.tier).to_string();
                receipt.complexity = d.complexity;
                receipt.reason = estimated(d.reason.clone(), &estimate);
                receipt.fallbacks = d.fallbacks.clone();
                receipt.estimate = estimate;
                Ok((d, receipt))
            }
            Err(e) => {
                let open: Vec<String> =
                    self.breakers.iter().filter(|(_, b)| !b.would_allow(t0)).map(|(n, _)| n.clone()).collect();
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
                Err(ModelFailure {
                    error: TaskError::new(ErrorCode::NoBackend, hint),
                    receipt: Some(Box::new(receipt)),
                })
            }
        }
    }

    fn call(
        &mut self,
        myself: ActorRef<RouterMsg>,
        call: ModelCall,
        reply: RpcReplyPort<Result<ModelAnswer, ModelFailure>>,
    ) {
        let (decision, receipt) = match self.decide(&call) {
            Ok(d) => d,
            Err(failure) => {
                // Queued first, then answered (the reply carries the receipt).
                let args = self.args.clone();
                tokio::spawn(async move {
                    if let Some(r) = failure.receipt.clone() {
                        finish(&args, *r).await;
                    }
                    let _ = reply.send(Err(failure));
                });
                return;
            }
        };
        let cache_key = self.cache_key(&call, &decision);
        if let Some((key, _)) = &cache_key
            && let Some(hit) = self.args.cache.answer(key)
        {
            let args = self.args.clone();
            tokio::spawn(async move {
                let _ = reply.send(cached(&args, call, receipt, hit).await);
            });
            return;
        }
        // Take the breakers' permission (marks a half-open probe) as we go.
        let now = Instant::now();
        let chain = decision
            .chain
            .iter()
            .filter_map(|name| self.backends.get(name).map(|b| (name.clone(), b.clone())))
            .map(|(n, b)| {
                let permitted = self.breakers.get_mut(&n).is_some_and(|br| br.allow(now));
                (n, b, permitted)
            })
            .collect();
        let run = ChainRun {
            call,
            chain,
            receipt,
            pre_degraded: decision.fallbacks.iter().any(|f| f == DEGRADE_TO_TINY),
            degrade_on_exhaustion: self.args.routing.failover.vram_exhausted == DEGRADE_TO_TINY,
            args: self.args.clone(),
            cache_key,
        };
        tokio::spawn(async move {
            let result = run_chain(run, &myself).await;
            let _ = reply.send(result);
        });
    }
}

impl RouterState {
    /// The response cache key of `call` on the first backend of `decision`,
    /// when the cache may answer it (see [`super::cache`]).
    fn cache_key(&self, call: &ModelCall, decision: &Decision) -> Option<(String, String)> {
        if !call.cache || !super::cache::deterministic(&call.params) || !self.args.cache.is_active() {
            return None;
        }
        let backend = decision.chain.first()?;
        let model = call.model.clone().or_else(|| self.args.backends.get(backend).map(|b| b.model.clone()))?;
        let key = super::cache::answer_key(backend, &model, &call.messages, &call.params, call.user.as_deref());
        Some((key, backend.clone()))
    }

    /// [`RouterMsg::Measure`]: decides, then counts in a task of its own
    /// (a tokenizer may need its model loaded first).
    fn measure(&mut self, call: ModelCall, reply: RpcReplyPort<Result<Measure, ModelFailure>>) {
        match self.decide(&call) {
            Ok((decision, _)) => {
                let Some(backend) = decision.chain.first().cloned() else {
                    let error = TaskError::new(ErrorCode::NoBackend, "the routing chain is empty");
                    let _ = reply.send(Err(ModelFailure { error, receipt: None }));
                    return;
                };
                let args = self.args.clone();
                tokio::spawn(async move {
                    let m = super::measure::measure(
                        &args.backends,
                        &args.models,
                        &backend,
                        call.model.clone(),
                        call.messages,
                    )
                    .await;
                    let _ = reply.send(Ok(m));
                });
            }
            Err(failure) => {
                let _ = reply.send(Err(ModelFailure { error: failure.error, receipt: None }));
            }
        }
    }
}

/// A cache hit: the receipt says `backend: cache`, zero cost and tokens, the
/// time to find it; a streamed call gets the answer as one chunk.
async fn cached(
    args: &RouterArgs,
    call: ModelCall,
    mut receipt: Receipt,
    hit: super::cache::CachedAnswer,
) -> Result<ModelAnswer, ModelFailure> {
    let t0 = Instant::now();
    if let Some(d) = &call.deltas {
        let _ = d.send(hit.response.content.clone());
    }
    receipt.backend = Some("cache".into());
    receipt.model = Some(hit.response.model.clone());
    receipt.reason = format!(
        "cache_hit: a deterministic request answered by {} {:.1} s ago ({})",
        hit.backend, hit.age_seconds, receipt.reason
    );
    receipt.outcome = "ok".into();
    receipt.first_token_ms = Some(0.0);
    receipt.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    finish(args, receipt.clone()).await;
    Ok(ModelAnswer { response: hit.response, receipt })
}

/// Step 2: walks the chain: each permitted backend in order, the tiny
/// model when local memory is exhausted, the next backend on a retryable
/// failure; reports each backend's outcome to the breakers; ends with
/// [`finish`].
async fn run_chain(run: ChainRun, router: &ActorRef<RouterMsg>) -> Result<ModelAnswer, ModelFailure> {
    let ChainRun { call, chain, mut receipt, pre_degraded, degrade_on_exhaustion, args, cache_key } = run;
    let models = &args.models;
    let tiny = if pre_degraded { models.tiny_model().await } else { None };
    let t_call = Instant::now();
    let mut attempts = 0;
    let mut last_error: Option<TaskError> = None;
    let streamed = Arc::new(AtomicBool::new(false));
    // Backends whose breaker let us through but that we never call (an
    // earlier one answered) give their half-open probe back.
    let give_back = |rest: &[(String, Arc<dyn ChatBackend>, bool)]| {
        for (name, _, permitted) in rest {
            if *permitted {
                let _ = router.cast(RouterMsg::Outcome { backend: name.clone(), success: None });
            }
        }
    };
    for (i, (name, backend, permitted)) in chain.iter().enumerate() {
        if !permitted {
            receipt.fallbacks.push(format!("skip_open_breaker:{name}"));
            continue;
        }
        if i > 0 && last_error.is_some() {
            receipt.fallbacks.push(format!("next_backend:{name}"));
        }
        let settings = args.backends.get(name);
        let mut request = ChatRequest {
            model: call.model.clone().or_else(|| settings.map(|b| b.model.clone())).unwrap_or_default(),
            messages: call.messages.clone(),
            params: call.params.clone(),
            schedule: call.schedule,
            degrade: false,
        };
        let local = settings.is_some_and(|b| b.kind == BackendKind::Embedded);
        if local
            && pre_degraded
            && let Some(tiny) = tiny.as_ref()
        {
            request.model = tiny.clone();
            request.degrade = true;
        }
        receipt.backend = Some(name.clone());
        let mut result = attempt(backend, request.clone(), call.deltas.as_ref(), &streamed, &call.cancel).await;
        // Local memory exhausted with nothing idle to evict: the tiny model answers.
        if local
            && degrade_on_exhaustion
            && !request.degrade
            && let Err(e) = &result
            && e.kind == BackendErrorKind::ResourceExhausted
            && !streamed.load(Ordering::Acquire)
            && let Some(tiny) = models.tiny_model().await
            && tiny != request.model
        {
            tracing::warn!(backend = %name, model = %request.model, tiny = %tiny, error = %e,
                "local model memory exhausted; degrading to the tiny model");
            receipt.fallbacks.push(format!("{DEGRADE_TO_TINY}:{tiny}"));
            request.model = tiny;
            request.degrade = true;
            result = attempt(backend, request, call.deltas.as_ref(), &streamed, &call.cancel).await;
        }
        match result {
            Ok(resp) => {
                let _ = router.cast(RouterMsg::Outcome { backend: name.clone(), success: Some(true) });
                attempts += resp.attempts;
                receipt.attempts = attempts;
                answered(&mut receipt, &resp, settings, t_call.elapsed());
                args.metrics.llm_tokens.with_label_values(&[name, "in"]).inc_by(u64::from(resp.tokens_in));
                args.metrics.llm_tokens.with_label_values(&[name, "out"]).inc_by(u64::from(resp.tokens_out));
                args.metrics.backend_requests.with_label_values(&[name, "ok"]).inc();
                give_back(&chain[i + 1..]);
                // A degraded (tiny model) answer is not the keyed model's: not cached.
                if let Some((key, for_backend)) = cache_key.as_ref()
                    && for_backend == name
                    && !receipt.fallbacks.iter().any(|f| f.starts_with(DEGRADE_TO_TINY))
                {
                    args.cache.put_answer(key.clone(), name, &resp);
                }
                finish(&args, receipt.clone()).await;
                return Ok(ModelAnswer { response: resp, receipt });
            }
            Err(e) => {
                attempts += e.attempts.max(1);
                let success = if e.kind == BackendErrorKind::Cancelled { None } else { Some(false) };
                // A rejected request or a full memory says nothing about the backend's health.
                let counts = !matches!(
                    e.kind,
                    BackendErrorKind::BadRequest | BackendErrorKind::Auth | BackendErrorKind::ResourceExhausted
                );
                let _ = router
                    .cast(RouterMsg::Outcome { backend: name.clone(), success: if counts { success } else { None } });
                args.metrics.backend_requests.with_label_values(&[name, e.kind.as_str()]).inc();
                tracing::warn!(backend = %name, error = %e, "backend call failed");
                let code =
                    if e.kind == BackendErrorKind::Cancelled { ErrorCode::Cancelled } else { ErrorCode::BackendError };
                last_error = Some(TaskError::new(code, e.to_string()));
                if e.kind == BackendErrorKind::Cancelled || streamed.load(Ordering::Acquire) {
                    give_back(&chain[i + 1..]);
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
    finish(&args, receipt.clone()).await;
    Err(ModelFailure { error, receipt: Some(Box::new(receipt)) })
}

/// Fills the receipt of an answered call: model, tokens, timings, cost
/// (the backend's configured prices per 1k tokens).
fn answered(receipt: &mut Receipt, resp: &ChatResponse, settings: Option<&BackendSettings>, took: Duration) {
    let (price_in, price_out) = settings.map_or((0.0, 0.0), |b| (b.price_per_1k_input_usd, b.price_per_1k_output_usd));
    receipt.model = Some(resp.model.clone());
    receipt.tokens_in = resp.tokens_in;
    receipt.tokens_out = resp.tokens_out;
    receipt.first_token_ms = resp.first_token.map(|d| d.as_secs_f64() * 1e3);
    receipt.total_ms = took.as_secs_f64() * 1e3;
    receipt.cost_usd = f64::from(resp.tokens_in) / 1000.0 * price_in + f64::from(resp.tokens_out) / 1000.0 * price_out;
    receipt.outcome = "ok".into();
}

/// One backend call, forwarding its text deltas to `out` and noting in
/// `streamed` that some were sent (no failover after that).
async fn attempt(
    backend: &Arc<dyn ChatBackend>,
    request: ChatRequest,
    out: Option<&mpsc::UnboundedSender<String>>,
    streamed: &Arc<AtomicBool>,
    cancel: &CancellationToken,
) -> Result<ChatResponse, BackendError> {
    let (deltas, forwarder) = match out {
        Some(out) => {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let (out, streamed) = (out.clone(), streamed.clone());
            let forwarder = tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    streamed.store(true, Ordering::Release);
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

/// Step 3: counts, publishes and queues a receipt for storage. Returns once
/// it is queued (the reply need not wait for SQLite); waits only while the
/// receipt log's queue is full (back-pressure, counted).
async fn finish(args: &RouterArgs, receipt: Receipt) {
    args.metrics
        .route_decisions
        .with_label_values(&[&receipt.tier, receipt.backend.as_deref().unwrap_or("none"), &receipt.outcome])
        .inc();
    args.events.emit(Event::RouteDecided(Box::new(receipt.clone())));
    args.receipts.append(receipt).await;
}

/// How long a model call waits for a restarting HybridRouter to come back
/// (its first restart delays are `supervisor.backoff_initial_secs` = 10 ms,
/// doubling).
pub const RESTART_WAIT: Duration = Duration::from_secs(5);

/// How agents and the gateway reach HybridRouter: by its registered name,
/// looked up at each call (a restart gives a new actor).
#[derive(Clone)]
pub struct RouterHandle {
    name: String,
}

impl RouterHandle {
    /// The router registered as `name` (`<prefix>HybridRouter`).
    pub fn new(name: String) -> RouterHandle {
        RouterHandle { name }
    }

    /// The running router actor, if any.
    pub fn actor(&self) -> Option<ActorRef<RouterMsg>> {
        ractor::registry::where_is(self.name.clone()).map(Into::into)
    }

    /// The running router other than `not` (one that failed), waiting for
    /// it until `until`.
    async fn wait_actor(&self, until: Instant, not: Option<ractor::ActorId>) -> Option<ActorRef<RouterMsg>> {
        loop {
            if let Some(a) = self.actor().filter(|a| Some(a.get_id()) != not) {
                return Some(a);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Routes and runs one model call, waiting at most `timeout`. While the
    /// router restarts, the call waits for the new one; a call that was
    /// still in the mailbox of a router that crashed (never decided) is sent
    /// again to the new one — both within [`RESTART_WAIT`] (and `timeout`).
    ///
    /// # Errors
    /// The call's [`ModelFailure`]; `agent_not_running` when no router
    /// answered within that wait; `deadline_exceeded` after `timeout`.
    pub async fn call(&self, call: ModelCall, timeout: Duration) -> Result<ModelAnswer, ModelFailure> {
        let t0 = Instant::now();
        let (until, retry_until) = (t0 + timeout, t0 + RESTART_WAIT.min(timeout));
        let failure = |code, message: String| Err(ModelFailure { error: TaskError::new(code, message), receipt: None });
        let mut failed = None;
        loop {
            let Some(router) = self.wait_actor(retry_until, failed).await else {
                return failure(ErrorCode::AgentNotRunning, "HybridRouter is not running (restarting); retry".into());
            };
            let left = until.saturating_duration_since(Instant::now());
            let attempt = Box::new(call.clone());
            match router.call(|reply| RouterMsg::Call(attempt, reply), Some(left)).await {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => {
                    return failure(
                        ErrorCode::DeadlineExceeded,
                        format!("the model call took longer than {:.1} s", timeout.as_secs_f64()),
                    );
                }
                // The router died before deciding: wait for the next one.
                _ => failed = Some(router.get_id()),
            }
        }
    }

    /// Measures `call`'s prompt on the model HybridRouter would pick for it
    /// (see [`super::measure`]), waiting at most `timeout`.
    ///
    /// # Errors
    /// `no_backend` when no backend can serve the call; `agent_not_running`
    /// when the router is down; `deadline_exceeded` after `timeout`.
    pub async fn measure(&self, call: ModelCall, timeout: Duration) -> Result<Measure, TaskError> {
        let Some(router) = self.wait_actor(Instant::now() + RESTART_WAIT.min(timeout), None).await else {
            return Err(TaskError::new(ErrorCode::AgentNotRunning, "HybridRouter is not running (restarting); retry"));
        };
        match router.call(|reply| RouterMsg::Measure(Box::new(call), reply), Some(timeout)).await {
            Ok(CallResult::Success(r)) => r.map_err(|f| f.error),
            Ok(CallResult::Timeout) => Err(TaskError::new(
                ErrorCode::DeadlineExceeded,
                format!("measuring the prompt took longer than {:.1} s", timeout.as_secs_f64()),
            )),
            _ => Err(TaskError::new(ErrorCode::AgentNotRunning, "HybridRouter stopped while measuring; retry")),
        }
    }

    /// Breaker states and backends: `{"backends": [{"name", "tier", "model", "enabled", "breaker"}]}`.
    pub async fn status(&self) -> Option<Value> {
        let router = self.actor()?;
        match router.call(RouterMsg::Status, Some(Duration::from_secs(5))).await {
            Ok(CallResult::Success(v)) => Some(v),
            _ => None,
        }
    }
}

/// Which backend and model a requested `model` names: a backend's name, a
/// backend's configured model, or a GGUF file under `models_dir` (served by
/// the first enabled embedded backend). `None`: unknown.
pub(crate) fn resolve_model(
    backends: &BTreeMap<String, BackendSettings>,
    models_dir: &std::path::Path,
    model: &str,
) -> Option<(String, Option<String>)> {
    if backends.get(model).is_some_and(|b| b.enabled) {
        return Some((model.to_string(), None));
    }
    if let Some((name, _)) = backends.iter().find(|(_, b)| b.enabled && b.model == model) {
        return Some((name.clone(), Some(model.to_string())));
    }
    let (name, _) = backends.iter().find(|(_, b)| b.enabled && b.kind == BackendKind::Embedded)?;
    let file = models_dir.join(format!("{model}.gguf"));
    file.is_file().then(|| (name.clone(), Some(model.to_string())))
}

/// The models a task's `model` may name (for the `invalid_field` message):
/// enabled backends and their configured models.
pub(crate) fn known_models(backends: &BTreeMap<String, BackendSettings>) -> Vec<String> {
    let mut known: Vec<String> =
        backends.iter().filter(|(_, b)| b.enabled).flat_map(|(n, b)| [n.clone(), b.model.clone()]).collect();
    known.sort();
    known.dedup();
    known
}
