//! ModelManager: the local models of one daemon (DESIGN §6). ModelManagerSuite
//! answers tasks about it, VRAMOptimizerAgent feeds it memory readings, and
//! the `embedded` backend sends every local inference request through it.
//!
//! One scheduler task owns the model table and the queue (no locks on the
//! hot path); callers talk to it over a channel:
//!
//! - **Files**: the `.gguf` files under `models_dir`, rescanned when a request
//!   names a model it does not know.
//! - **Load on first use**: a request for a model that is not loaded starts
//!   its load at once (on a blocking thread) and waits in the queue.
//! - **Memory budget**: a load needs the file plus its KV cache
//!   ([`ModelFile::estimated_bytes`]). When that would exceed the budget
//!   (`models.memory_budget_bytes`, else `models.vram_budget_percentage` of
//!   the device memory VRAMOptimizerAgent reads), least-recently-used *idle*
//!   models are evicted (`model.evicted`) — never a model serving or owed a
//!   request. When even that cannot make room the request fails with
//!   `memory_exhausted` and HybridRouter degrades it to the tiny model
//!   (`degrade_to_tiny`), which is the one model allowed to load over budget.
//! - **One priority queue**: requests are served highest priority first,
//!   FIFO within a priority; `push_to_front` requests go before all others
//!   (latest first, like a deque's front). `models.parallel` generations run
//!   at once (default 1: generation is CPU-bound).
//! - **Hot-model preference**: among requests of the best priority, one for
//!   the model that served last goes before one that would switch models, but
//!   a request for another model is passed over at most
//!   `models.hot_model_fairness` times.
//! - **Idle unload**: models unused for `models.idle_timeout_secs` are
//!   unloaded (`model.unloaded`, reason `idle`).
//!
//! Metrics: `agentvisor_models_loaded`, `agentvisor_model_memory_bytes{model}`,
//! `agentvisor_model_loads_total{model,outcome}`, `agentvisor_model_unloads_total{model,reason}`,
//! `agentvisor_local_queue_depth`, `agentvisor_local_time_to_first_token_seconds{model}`,
//! `agentvisor_local_tokens_per_second{model}`, `agentvisor_local_tokens_total{model,direction}`,
//! `agentvisor_local_requests_total{model,outcome}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ModelFile;
use super::local::{EngineError, GenOutput, LoadOptions, Sampling};
use super::memory::{self, MemoryProbe, MemoryReading};
use crate::config::ModelSettings;
use crate::core::{ChatMessage, Event, Fault, GenParams, Schedule};
use crate::events::EventBus;
use crate::store::resources::{Amounts, Ask, Ledger, LedgerError, Owner};
use crate::telemetry::metrics::Metrics;

#[cfg(feature = "embedded")]
type Loaded = super::engine::LoadedModel;

/// Stand-in when llama.cpp is not built in: it can never be constructed.
#[cfg(not(feature = "embedded"))]
enum Loaded {}

#[cfg(not(feature = "embedded"))]
impl Loaded {
    fn generate(
        &self,
        _: Vec<ChatMessage>,
        _: Sampling,
        _: Option<mpsc::UnboundedSender<String>>,
        _: CancellationToken,
    ) -> oneshot::Receiver<Result<GenOutput, EngineError>> {
        match *self {}
    }

    fn count_tokens(&self, _: &[ChatMessage]) -> Result<u32, EngineError> {
        match *self {}
    }

    fn info(&self) -> &super::local::ModelInfo {
        match *self {}
    }
}

/// Loads `path` on the manager's engine (started on first use). Blocking.
fn load_blocking(shared: &Shared, path: &Path, options: LoadOptions) -> Result<Loaded, EngineError> {
    #[cfg(feature = "embedded")]
    {
        let engine = shared
            .engine
            .get_or_init(|| super::engine::Engine::new(shared.settings.parallel, options).map(Arc::new))
            .clone()?;
        engine.load(path)
    }
    #[cfg(not(feature = "embedded"))]
    {
        let _ = (shared, path, options);
        Err(EngineError::NotBuilt)
    }
}

/// One local inference request.
pub struct LocalRequest {
    /// Model name (file name without `.gguf`).
    pub model: String,
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Sampling and length (`max_tokens` defaults to `models.default_max_tokens`).
    pub params: GenParams,
    /// Priority (0–9, 9 first) and push-to-front.
    pub schedule: Schedule,
    /// Text deltas, as they decode.
    pub deltas: Option<mpsc::UnboundedSender<String>>,
    /// Stops the request, queued or generating.
    pub cancel: CancellationToken,
    /// The degrade target: may load over the memory budget.
    pub over_budget_ok: bool,
}

/// A served request.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    /// The model that answered.
    pub model: String,
    /// The generation (`finish: cancelled` when cancelled).
    pub output: GenOutput,
    /// Submission to first token.
    pub first_token: Option<Duration>,
}

/// Why a local request or command failed. [`LocalError::code`] is stable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LocalError {
    /// No such GGUF file.
    #[error("model {model} is not in {dir} (see `agentvisor models list`)")]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// `models_dir`.
        dir: PathBuf,
    },
    /// The budget cannot hold the model, even after evicting idle models.
    #[error(
        "model memory exhausted: {model} needs {need_bytes} bytes; {held_bytes} of the {budget_bytes}-byte budget are held by models in use"
    )]
    MemoryExhausted {
        /// The model to load.
        model: String,
        /// Its estimated bytes.
        need_bytes: u64,
        /// The budget, bytes.
        budget_bytes: u64,
        /// Bytes of loaded models that could not be evicted.
        held_bytes: u64,
    },
    /// Too many requests waiting.
    #[error("the local model queue is full ({0} requests)")]
    QueueFull(usize),
    /// The model is in use (operator unload).
    #[error("model {0} is serving or owed requests")]
    Busy(String),
    /// The engine failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The manager stopped.
    #[error("the model manager is shutting down")]
    ShuttingDown,
    /// The scheduler failed and is restarting (its queue was lost); retry.
    #[error("the model scheduler is restarting; retry")]
    Restarting,
}

impl LocalError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            LocalError::UnknownModel { .. } => "unknown_model",
            LocalError::MemoryExhausted { .. } => "memory_exhausted",
            LocalError::QueueFull(_) => "queue_full",
            LocalError::Busy(_) => "model_busy",
            LocalError::Engine(EngineError::NotFound(_)) => "model_not_found",
            LocalError::Engine(EngineError::PromptTooLong { .. }) => "prompt_too_long",
            LocalError::Engine(EngineError::NotBuilt) => "not_implemented",
            LocalError::Engine(EngineError::Grammar(_)) => "bad_schema",
            LocalError::Engine(_) => "engine_error",
            LocalError::ShuttingDown => "shutting_down",
            LocalError::Restarting => "agent_not_running",
        }
    }
}

/// The `model` label of requests for a model that does not exist.
const UNKNOWN_MODEL_LABEL: &str = "_unknown";

type Reply<T> = oneshot::Sender<Result<T, LocalError>>;

enum Cmd {
    Submit(Box<Pending>),
    Cancel(u64),
    Load(String, Reply<Value>),
    Unload(String, Reply<Value>),
    EvictIdle(oneshot::Sender<Vec<String>>),
    /// The loaded model named so, when it is ready.
    Ready(String, oneshot::Sender<Option<Arc<Loaded>>>),
    Status(oneshot::Sender<Value>),
    LoadDone(String, Result<Loaded, EngineError>, Duration),
    JobDone(String),
    Shutdown(oneshot::Sender<()>),
    Fault(Fault),
}

struct Pending {
    seq: u64,
    request: LocalRequest,
    submitted: Instant,
    skipped: u32,
    reply: Reply<LocalAnswer>,
}

enum SlotState {
    Loading(Vec<Reply<Value>>),
    Ready(Arc<Loaded>),
}

struct Slot {
    state: SlotState,
    bytes: u64,
    busy: usize,
    last_used: Instant,
    loaded_at: Instant,
}

/// What the daemon's parts share with the scheduler.
struct Shared {
    settings: ModelSettings,
    models_dir: PathBuf,
    events: EventBus,
    metrics: Metrics,
    /// `u64::MAX` until a reading or a fixed budget says otherwise.
    budget: AtomicU64,
    reading: RwLock<Option<MemoryReading>>,
    /// ResourceManager's ledger, when the profile includes it: each loaded
    /// model holds a reservation of its bytes (holder: the model's name).
    ledger: OnceLock<Arc<Ledger>>,
    probe: OnceLock<Arc<dyn MemoryProbe>>,
    /// llama.cpp's worker threads, started with the first load.
    #[cfg(feature = "embedded")]
    engine: OnceLock<Result<Arc<super::engine::Engine>, EngineError>>,
}

/// The local model manager; cheap to share (`Arc`).
pub struct ModelManager {
    shared: Arc<Shared>,
    /// The running scheduler's channel; replaced by [`ModelManager::start_scheduler`].
    tx: RwLock<Option<mpsc::UnboundedSender<Cmd>>>,
    seq: AtomicU64,
}

impl ModelManager {
    /// A manager for `models_dir`. Its scheduler starts on first use (inside
    /// a tokio runtime).
    pub fn new(settings: ModelSettings, models_dir: PathBuf, events: EventBus, metrics: Metrics) -> ModelManager {
        let budget = settings.memory_budget_bytes.unwrap_or(u64::MAX);
        metrics.model_memory_budget.set(i64::try_from(budget).unwrap_or(i64::MAX));
        ModelManager {
            shared: Arc::new(Shared {
                settings,
                models_dir,
                events,
                metrics,
                budget: AtomicU64::new(budget),
                reading: RwLock::new(None),
                probe: OnceLock::new(),
                ledger: OnceLock::new(),
                #[cfg(feature = "embedded")]
                engine: OnceLock::new(),
            }),
            tx: RwLock::new(None),
            seq: AtomicU64::new(0),
        }
    }

    /// Reserves each model's memory through ResourceManager's `ledger` from
    /// now on (`gpu_memory_bytes` when the ledger has GPUs, else
    /// `memory_bytes`; holder: the model's name), so that the budget and the
    /// ledger agree. Without it, the manager keeps its own budget alone.
    /// Set once, before the first load (a second call is ignored).
    pub fn use_ledger(&self, ledger: Arc<Ledger>) {
        let _ = self.shared.ledger.set(ledger);
    }

    /// Starts a fresh scheduler (the model table and the queue start
    /// empty) and makes it the one requests go to: the infrastructure
    /// supervisor calls it at start and after a crash (ModelScheduler).
    /// Without a supervisor, the first request starts one.
    pub fn start_scheduler(&self) -> tokio::task::JoinHandle<()> {
        let mut slot = self.tx.write();
        let (tx, handle) = self.spawn_scheduler();
        *slot = Some(tx);
        handle
    }

    fn spawn_scheduler(&self) -> (mpsc::UnboundedSender<Cmd>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        // Models of a crashed scheduler were dropped with it.
        if let Some(ledger) = self.shared.ledger.get() {
            ledger.release_owned_now(Owner::Model, "model_unloaded");
        }
        self.shared.metrics.models_loaded.set(0);
        self.shared.metrics.model_memory.reset();
        let sched = Sched {
            shared: self.shared.clone(),
            files: BTreeMap::new(),
            slots: BTreeMap::new(),
            queue: Vec::new(),
            scanned: None,
            hot: None,
            tx: tx.downgrade(),
        };
        (tx, tokio::spawn(sched.run(rx)))
    }

    fn sender(&self) -> mpsc::UnboundedSender<Cmd> {
        if let Some(tx) = self.tx.read().as_ref() {
            return tx.clone();
        }
        let mut slot = self.tx.write();
        match slot.as_ref() {
            Some(tx) => tx.clone(),
            None => slot.insert(self.spawn_scheduler().0).clone(),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.sender().send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// Makes the scheduler panic (fault injection; the daemon calls it only
    /// with `testing.fault_injection: true`). `false` when none runs.
    pub fn inject_fault(&self, fault: Fault) -> bool {
        self.tx.read().as_ref().is_some_and(|tx| tx.send(Cmd::Fault(fault)).is_ok())
    }

    /// `models.*` settings.
    pub fn settings(&self) -> &ModelSettings {
        &self.shared.settings
    }

    /// The folder of GGUF files (`models_dir`).
    pub fn models_dir(&self) -> &std::path::Path {
        &self.shared.models_dir
    }

    /// Runs one request through the queue. Cancelling `request.cancel`
    /// removes a queued request at once and stops a generating one before
    /// its next token; either way the answer comes back with
    /// `finish: cancelled` and the tokens generated so far.
    ///
    /// # Errors
    /// [`LocalError`] for an unknown model, exhausted memory, a full queue or
    /// an engine failure.
    pub async fn generate(&self, request: LocalRequest) -> Result<LocalAnswer, LocalError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let cancel = request.cancel.clone();
        let (tx, mut rx) = oneshot::channel();
        let pending = Pending { seq, request, submitted: Instant::now(), skipped: 0, reply: tx };
        let sender = self.sender();
        sender.send(Cmd::Submit(Box::new(pending))).map_err(|_| LocalError::Restarting)?;
        tokio::select! {
            r = &mut rx => return r.unwrap_or(Err(LocalError::Restarting)),
            _ = cancel.cancelled() => {}
        }
        let _ = sender.send(Cmd::Cancel(seq));
        rx.await.unwrap_or(Err(LocalError::Restarting))
    }

    /// Loads `model` now (operator `models.load`): `{"model", "state", "bytes"}`.
    ///
    /// # Errors
    /// As [`ModelManager::generate`].
    pub async fn load(&self, model: &str) -> Result<Value, LocalError> {
        self.ask(|tx| Cmd::Load(model.to_string(), tx)).await.unwrap_or(Err(LocalError::Restarting))
    }

    /// Unloads an idle `model` (operator `models.unload`).
    ///
    /// # Errors
    /// [`LocalError::Busy`] when it serves or is owed a request;
    /// [`LocalError::UnknownModel`] when it is not loaded.
    pub async fn unload(&self, model: &str) -> Result<Value, LocalError> {
        self.ask(|tx| Cmd::Unload(model.to_string(), tx)).await.unwrap_or(Err(LocalError::Restarting))
    }

    /// Evicts least-recently-used idle models until the loaded bytes fit the
    /// budget; the evicted names.
    pub(crate) async fn evict_idle_over_budget(&self) -> Vec<String> {
        self.ask(Cmd::EvictIdle).await.unwrap_or_default()
    }

    /// Prompt tokens of `messages` for `model` exactly as its next
    /// generation will count them (`tokens_in`: chat template and
    /// tokenizer of the file), and the model's context window, tokens:
    /// `(tokens, window)`. Loads the model first when it is not loaded (the
    /// generation that follows needs it anyway).
    ///
    /// # Errors
    /// As [`ModelManager::load`]; `not_implemented` in a build without llama.cpp.
    pub async fn count_tokens(&self, model: &str, messages: Vec<ChatMessage>) -> Result<(u32, u32), LocalError> {
        let loaded = match self.ask(|tx| Cmd::Ready(model.to_string(), tx)).await.flatten() {
            Some(l) => l,
            None => {
                self.load(model).await?;
                self.ask(|tx| Cmd::Ready(model.to_string(), tx)).await.flatten().ok_or(LocalError::Restarting)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let tokens = loaded.count_tokens(&messages)?;
            Ok((tokens, loaded.info().n_ctx))
        })
        .await
        .map_err(|_| LocalError::Restarting)?
        .map_err(LocalError::Engine)
    }

    /// `{"budget_bytes", "used_bytes", "queue_depth", "running", "hot", "loaded": [...]}`.
    pub async fn status(&self) -> Value {
        self.ask(Cmd::Status).await.unwrap_or(Value::Null)
    }

    /// Every file under `models_dir` with its state (`loaded`, `loading`,
    /// `available`) and, when loaded, its bytes.
    ///
    /// # Errors
    /// [`super::ModelError`] when the folder cannot be read.
    pub async fn list(&self) -> Result<Vec<Value>, super::ModelError> {
        let files = scan_blocking(&self.shared.models_dir).await?;
        let status = self.status().await;
        let loaded: BTreeMap<String, Value> = status["loaded"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["model"].as_str()?.to_string(), m.clone())))
            .collect();
        Ok(files
            .into_iter()
            .map(|f| {
                let mut v = serde_json::to_value(&f).unwrap_or(Value::Null);
                let state = loaded.get(&f.name).map_or("available", |m| m["state"].as_str().unwrap_or("loaded"));
                v["state"] = json!(state);
                let s = &self.shared.settings;
                v["estimated_bytes"] = json!(f.estimated_bytes_with(s.context_tokens, s.parallel.max(1) as u64));
                if let Some(m) = loaded.get(&f.name) {
                    v["loaded_bytes"] = m["bytes"].clone();
                    if v["parameters"].is_null() {
                        v["parameters"] = m["info"]["n_params"].clone();
                    }
                }
                v
            })
            .collect())
    }

    /// The degrade target: `models.tiny_model`, else the smallest file.
    pub async fn tiny_model(&self) -> Option<String> {
        if let Some(t) = &self.shared.settings.tiny_model {
            return Some(t.clone());
        }
        // File sizes only: no GGUF header is read on this (degrade) path.
        let dir = self.shared.models_dir.clone();
        let files = tokio::task::spawn_blocking(move || super::gguf_files(&dir)).await.ok()?.ok()?;
        files.into_iter().min_by_key(|(name, size)| (*size, name.clone())).map(|(name, _)| name)
    }

    /// The memory probe (NVML or host), detected on first use. Blocking.
    pub fn probe(&self) -> Arc<dyn MemoryProbe> {
        self.shared
            .probe
            .get_or_init(|| Arc::from(memory::detect(self.shared.settings.gpu, self.shared.settings.gpu_device)))
            .clone()
    }

    /// Records a memory reading (VRAMOptimizerAgent): sets the budget when
    /// it comes from the percentage, and the device memory metrics.
    pub(crate) fn record_reading(&self, reading: MemoryReading) {
        let s = &self.shared;
        if s.settings.memory_budget_bytes.is_none() {
            let budget = memory::budget_bytes(reading.total_bytes, s.settings.vram_budget_percentage);
            s.budget.store(budget, Ordering::Relaxed);
            s.metrics.model_memory_budget.set(i64::try_from(budget).unwrap_or(i64::MAX));
        }
        let src = reading.source.as_str();
        for (kind, v) in [("total", reading.total_bytes), ("used", reading.used_bytes), ("free", reading.free_bytes)] {
            s.metrics.device_memory.with_label_values(&[src, kind]).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        *s.reading.write() = Some(reading);
    }

    /// The latest memory reading.
    pub(crate) fn reading(&self) -> Option<MemoryReading> {
        self.shared.reading.read().clone()
    }

    /// The budget in force, bytes (`None` while unknown).
    pub(crate) fn budget_bytes(&self) -> Option<u64> {
        match self.shared.budget.load(Ordering::Relaxed) {
            u64::MAX => None,
            b => Some(b),
        }
    }

    /// Fails queued requests and unloads every model (ModelManagerSuite's
    /// stop, daemon shutdown). The manager stays usable: a later request
    /// loads its model again.
    pub async fn shutdown(&self) {
        if self.tx.read().is_some() {
            let _ = self.ask(Cmd::Shutdown).await;
        }
    }
}

async fn scan_blocking(dir: &Path) -> Result<Vec<ModelFile>, super::ModelError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || super::scan(&dir)).await.unwrap_or_else(|_| Ok(Vec::new()))
}

/// The scheduler's state, owned by its task.
struct Sched {
    shared: Arc<Shared>,
    files: BTreeMap<String, ModelFile>,
    slots: BTreeMap<String, Slot>,
    queue: Vec<Pending>,
    /// `models_dir`'s modification time at the last scan: a request for an
    /// unknown model rescans only when the folder changed since.
    scanned: Option<std::time::SystemTime>,
    hot: Option<String>,
    tx: mpsc::WeakUnboundedSender<Cmd>,
}

impl Sched {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let idle = Duration::from_secs_f64(self.shared.settings.idle_timeout_secs.max(0.01));
        let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Shutdown(done)) => {
                        // Unload everything; a later request loads again.
                        self.shutdown();
                        let _ = done.send(());
                    }
                    Some(cmd) => self.on(cmd).await,
                    None => {
                        self.shutdown();
                        return;
                    }
                },
                _ = tick.tick() => self.unload_idle(idle),
            }
            self.shared.metrics.local_queue_depth.set(self.queue.len() as i64);
        }
    }

    async fn on(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit(p) => self.submit(*p).await,
            Cmd::Cancel(seq) => {
                if let Some(i) = self.queue.iter().position(|p| p.seq == seq) {
                    let p = self.queue.remove(i);
                    self.count(&p.request.model, "cancelled");
                    let answer = LocalAnswer {
                        model: p.request.model,
                        output: GenOutput::cancelled_before_start(),
                        first_token: None,
                    };
                    let _ = p.reply.send(Ok(answer));
                }
            }
            Cmd::Load(model, reply) => self.operator_load(model, reply).await,
            Cmd::Unload(model, reply) => {
                let r = match self.slots.get(&model) {
                    None => Err(LocalError::UnknownModel { model, dir: self.shared.models_dir.clone() }),
                    Some(s) if s.busy > 0 || self.owed(&model) || matches!(s.state, SlotState::Loading(_)) => {
                        Err(LocalError::Busy(model))
                    }
                    Some(_) => {
                        let bytes = self.unload(&model, "operator", None);
                        Ok(json!({"model": model, "state": "unloaded", "bytes": bytes}))
                    }
                };
                let _ = reply.send(r);
            }
            Cmd::EvictIdle(reply) => {
                let budget = self.shared.budget.load(Ordering::Relaxed);
                let mut evicted = Vec::new();
                while self.used() > budget {
                    let Some(victim) = self.evictable().into_iter().next() else { break };
                    self.unload(&victim, "evicted", Some("budget"));
                    evicted.push(victim);
                }
                let _ = reply.send(evicted);
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Cmd::Ready(model, reply) => {
                let ready = match self.slots.get(&model) {
                    Some(Slot { state: SlotState::Ready(l), .. }) => Some(l.clone()),
                    _ => None,
                };
                let _ = reply.send(ready);
            }
            Cmd::LoadDone(model, result, took) => self.load_done(model, result, took),
            Cmd::JobDone(model) => {
                if let Some(s) = self.slots.get_mut(&model) {
                    s.busy = s.busy.saturating_sub(1);
                    s.last_used = Instant::now();
                }
            }
            Cmd::Shutdown(_) => {}
            Cmd::Fault(fault) => panic!("fault injection ({fault:?}): the model scheduler fails"),
        }
        self.pump();
    }

    /// Looks `model` up, rescanning the folder when it is unknown and the
    /// folder changed since the last scan (a stream of requests for a missing
    /// model must not re-read every GGUF header each time).
    async fn file(&mut self, model: &str) -> Option<ModelFile> {
        if !self.files.contains_key(model) {
            let dir = self.shared.models_dir.clone();
            let mtime = tokio::task::spawn_blocking(move || std::fs::metadata(dir).and_then(|m| m.modified()).ok())
                .await
                .ok()
                .flatten();
            if mtime.is_none() || mtime != self.scanned {
                if let Ok(files) = scan_blocking(&self.shared.models_dir).await {
                    self.files = files.into_iter().map(|f| (f.name.clone(), f)).collect();
                }
                self.scanned = mtime;
            }
        }
        self.files.get(model).cloned()
    }

    /// Generations running now.
    fn running(&self) -> usize {
        self.slots.values().map(|s| s.busy).sum()
    }

    async fn submit(&mut self, p: Pending) {
        let limit = self.shared.settings.queue_limit;
        if self.queue.len() >= limit {
            self.count(&p.request.model, "queue_full");
            let _ = p.reply.send(Err(LocalError::QueueFull(limit)));
            return;
        }
        if !self.slots.contains_key(&p.request.model) {
            let Some(file) = self.file(&p.request.model).await else {
                let e =
                    LocalError::UnknownModel { model: p.request.model.clone(), dir: self.shared.models_dir.clone() };
                tracing::warn!(error = %e, "local request refused");
                // The label is fixed: a name from a request is not a closed set.
                self.count(UNKNOWN_MODEL_LABEL, "unknown_model");
                let _ = p.reply.send(Err(e));
                return;
            };
            if let Err(e) = self.make_room(&file, p.request.over_budget_ok) {
                tracing::warn!(model = %file.name, error = %e, "local request refused");
                self.count(&file.name, "memory_exhausted");
                let _ = p.reply.send(Err(e));
                return;
            }
            self.start_load(file, Vec::new());
        }
        self.queue.push(p);
    }

    async fn operator_load(&mut self, model: String, reply: Reply<Value>) {
        match self.slots.get_mut(&model) {
            Some(Slot { state: SlotState::Loading(waiters), .. }) => waiters.push(reply),
            Some(s) => {
                let _ = reply.send(Ok(json!({"model": model, "state": "loaded", "bytes": s.bytes})));
            }
            None => {
                let Some(file) = self.file(&model).await else {
                    let _ = reply.send(Err(LocalError::UnknownModel { model, dir: self.shared.models_dir.clone() }));
                    return;
                };
                match self.make_room(&file, false) {
                    Ok(()) => self.start_load(file, vec![reply]),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    fn used(&self) -> u64 {
        self.slots.values().map(|s| s.bytes).sum()
    }

    /// Requests are queued for `model`.
    fn owed(&self, model: &str) -> bool {
        self.queue.iter().any(|p| p.request.model == model)
    }

    /// Loaded models that serve nothing and are owed nothing, least recently used first.
    fn evictable(&self) -> Vec<String> {
        let mut idle: Vec<(&String, &Slot)> = self
            .slots
            .iter()
            .filter(|(name, s)| s.busy == 0 && matches!(s.state, SlotState::Ready(_)) && !self.owed(name))
            .collect();
        idle.sort_by_key(|(_, s)| s.last_used);
        idle.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// Makes room for `file` by evicting LRU idle models, or says why it cannot.
    fn make_room(&mut self, file: &ModelFile, over_budget_ok: bool) -> Result<(), LocalError> {
        let budget = self.shared.budget.load(Ordering::Relaxed);
        let s = &self.shared.settings;
        let need = file.estimated_bytes_with(s.context_tokens, s.parallel.max(1) as u64);
        let used = self.used();
        if used.saturating_add(need) <= budget {
            return self.reserve(file, need, budget, used, over_budget_ok);
        }
        let victims = self.evictable();
        let freeable: u64 = victims.iter().filter_map(|v| self.slots.get(v)).map(|s| s.bytes).sum();
        if used - freeable + need > budget {
            if over_budget_ok {
                tracing::warn!(model = %file.name, need_bytes = need, budget_bytes = budget, used_bytes = used,
                    "loading the degrade target over the memory budget");
                return self.reserve(file, need, budget, used, true);
            }
            return Err(LocalError::MemoryExhausted {
                model: file.name.clone(),
                need_bytes: need,
                budget_bytes: budget,
                held_bytes: used - freeable,
            });
        }
        for victim in victims {
            if self.used() + need <= budget {
                break;
            }
            self.unload(&victim, "evicted", Some(&file.name));
        }
        let used = self.used();
        self.reserve(file, need, budget, used, over_budget_ok)
    }

    /// Reserves `need` bytes for `file` in ResourceManager's ledger, when
    /// there is one: a denial (other holders have the memory) refuses the
    /// load like an exhausted budget, except for the degrade target
    /// (`over_budget_ok`), which loads anyway.
    fn reserve(
        &self,
        file: &ModelFile,
        need: u64,
        budget: u64,
        used: u64,
        over_budget_ok: bool,
    ) -> Result<(), LocalError> {
        let Some(ledger) = self.shared.ledger.get() else { return Ok(()) };
        let on_gpu = ledger.capacity().amounts.gpu > 0;
        let amounts = if on_gpu {
            Amounts { gpu_memory_bytes: need, ..Default::default() }
        } else {
            Amounts { memory_bytes: need, ..Default::default() }
        };
        let ask =
            Ask { holder: file.name.clone(), amounts, ttl_seconds: None, wait: Duration::ZERO, owner: Owner::Model };
        match ledger.reserve_now(ask) {
            Ok(_) => Ok(()),
            Err(e @ LedgerError::Denied { .. }) if over_budget_ok => {
                tracing::warn!(model = %file.name, error = %e, "loading the degrade target without a reservation");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(model = %file.name, error = %e, "the resource ledger refused the model's memory");
                Err(LocalError::MemoryExhausted {
                    model: file.name.clone(),
                    need_bytes: need,
                    budget_bytes: budget,
                    held_bytes: used,
                })
            }
        }
    }

    /// Releases `model`'s reservation in the ledger, when there is one.
    fn release(&self, model: &str) {
        if let Some(ledger) = self.shared.ledger.get() {
            ledger.release_holder_now(model, "model_unloaded");
        }
    }

    fn start_load(&mut self, file: ModelFile, waiters: Vec<Reply<Value>>) {
        let settings = &self.shared.settings;
        let threads = match settings.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        };
        let options =
            LoadOptions { context_tokens: settings.context_tokens, threads, batch_tokens: settings.batch_tokens };
        let now = Instant::now();
        self.slots.insert(
            file.name.clone(),
            Slot {
                state: SlotState::Loading(waiters),
                bytes: file.estimated_bytes_with(settings.context_tokens, settings.parallel.max(1) as u64),
                busy: 0,
                last_used: now,
                loaded_at: now,
            },
        );
        tracing::info!(model = %file.name, path = %file.path.display(), "loading model");
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let result = load_blocking(&shared, &file.path, options);
            match tx.upgrade() {
                Some(tx) => {
                    let _ = tx.send(Cmd::LoadDone(file.name, result, t0.elapsed()));
                }
                None => drop(result),
            }
        });
    }

    fn load_done(&mut self, model: String, result: Result<Loaded, EngineError>, took: Duration) {
        let Some(slot) = self.slots.get_mut(&model) else {
            // Shut down while loading: free it off the runtime.
            tokio::task::spawn_blocking(move || drop(result));
            return;
        };
        let m = &self.shared.metrics;
        match result {
            Ok(loaded) => {
                let waiters = match std::mem::replace(&mut slot.state, SlotState::Ready(Arc::new(loaded))) {
                    SlotState::Loading(w) => w,
                    SlotState::Ready(_) => Vec::new(),
                };
                slot.loaded_at = Instant::now();
                slot.last_used = slot.loaded_at;
                let bytes = slot.bytes;
                m.model_loads.with_label_values(&[&model, "ok"]).inc();
                m.model_load_seconds.with_label_values(&[&model]).observe(took.as_secs_f64());
                m.model_memory.with_label_values(&[&model]).set(bytes as i64);
                let info = match &slot.state {
                    SlotState::Ready(l) => ready_info(l),
                    SlotState::Loading(_) => Value::Null,
                };
                m.models_loaded.set(self.slots.len() as i64);
                tracing::info!(model = %model, bytes, load_seconds = took.as_secs_f64(), "model loaded");
                self.shared.events.emit(Event::ModelLoaded {
                    model: model.clone(),
                    bytes,
                    load_seconds: took.as_secs_f64(),
                    info: serde_json::to_value(&info).unwrap_or_default(),
                });
                for w in waiters {
                    let _ = w.send(Ok(json!({"model": model, "state": "loaded", "bytes": bytes})));
                }
            }
            Err(e) => {
                let waiters = match self.slots.remove(&model).map(|s| s.state) {
                    Some(SlotState::Loading(w)) => w,
                    _ => Vec::new(),
                };
                self.release(&model);
                m.model_loads.with_label_values(&[&model, "failed"]).inc();
                tracing::error!(model = %model, error = %e, "model load failed");
                self.shared.events.emit(Event::ModelLoadFailed { model: model.clone(), error: e.to_string() });
                for w in waiters {
                    let _ = w.send(Err(LocalError::Engine(e.clone())));
                }
                let (failed, rest): (Vec<Pending>, Vec<Pending>) =
                    std::mem::take(&mut self.queue).into_iter().partition(|p| p.request.model == model);
                self.queue = rest;
                for p in failed {
                    self.count(&model, "load_failed");
                    let _ = p.reply.send(Err(LocalError::Engine(e.clone())));
                }
            }
        }
    }

    /// Removes `model` and frees it off the runtime; its bytes.
    fn unload(&mut self, model: &str, reason: &'static str, for_model: Option<&str>) -> u64 {
        let Some(slot) = self.slots.remove(model) else { return 0 };
        self.release(model);
        let m = &self.shared.metrics;
        m.model_unloads.with_label_values(&[model, reason]).inc();
        m.model_memory.with_label_values(&[model]).set(0);
        m.models_loaded.set(self.slots.len() as i64);
        if self.hot.as_deref() == Some(model) {
            self.hot = None;
        }
        let idle_secs = slot.last_used.elapsed().as_secs_f64();
        tracing::info!(model, reason, bytes = slot.bytes, for_model, "model unloaded");
        if reason == "evicted" {
            self.shared.events.emit(Event::ModelEvicted {
                model: model.to_string(),
                bytes: slot.bytes,
                for_model: for_model.map(str::to_string),
                idle_seconds: idle_secs,
            });
        } else {
            self.shared.events.emit(Event::ModelUnloaded {
                model: model.to_string(),
                bytes: slot.bytes,
                reason,
                idle_seconds: idle_secs,
            });
        }
        if let SlotState::Ready(loaded) = slot.state {
            tokio::task::spawn_blocking(move || drop(loaded));
        }
        slot.bytes
    }

    fn unload_idle(&mut self, idle: Duration) {
        let stale: Vec<String> = self
            .slots
            .iter()
            .filter(|(n, s)| {
                s.busy == 0 && matches!(s.state, SlotState::Ready(_)) && s.last_used.elapsed() >= idle && !self.owed(n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for model in stale {
            self.unload(&model, "idle", None);
        }
    }

    /// The next request to serve (see the module docs), among those whose
    /// model is loaded.
    fn pick(&mut self) -> Option<usize> {
        let ready =
            |p: &Pending| matches!(self.slots.get(&p.request.model), Some(Slot { state: SlotState::Ready(_), .. }));
        let key = |p: &Pending| {
            (
                p.request.schedule.push_to_front,
                p.request.schedule.priority,
                if p.request.schedule.push_to_front { p.seq } else { u64::MAX - p.seq },
            )
        };
        let best =
            self.queue.iter().enumerate().filter(|(_, p)| ready(p)).max_by_key(|(_, p)| key(p)).map(|(i, _)| i)?;
        let b = &self.queue[best];
        if b.request.schedule.push_to_front || b.skipped >= self.shared.settings.hot_model_fairness {
            return Some(best);
        }
        let Some(hot) = self.hot.as_deref() else { return Some(best) };
        if b.request.model == hot {
            return Some(best);
        }
        let priority = b.request.schedule.priority;
        let hot_choice = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.request.model == hot && p.request.schedule.priority == priority && !p.request.schedule.push_to_front
            })
            .min_by_key(|(_, p)| p.seq)
            .map(|(i, _)| i);
        match hot_choice {
            Some(h) => {
                self.queue[best].skipped += 1;
                Some(h)
            }
            None => Some(best),
        }
    }

    fn pump(&mut self) {
        // Requests whose caller went away (cancelled, timed out) leave the queue.
        self.queue.retain(|p| !p.reply.is_closed());
        while self.running() < self.shared.settings.parallel.max(1) {
            let Some(i) = self.pick() else { break };
            let p = self.queue.remove(i);
            let Some(slot) = self.slots.get_mut(&p.request.model) else { continue };
            let SlotState::Ready(loaded) = &slot.state else { continue };
            let loaded = loaded.clone();
            slot.busy += 1;
            slot.last_used = Instant::now();
            self.hot = Some(p.request.model.clone());
            self.dispatch(p, loaded);
        }
    }

    fn dispatch(&self, p: Pending, loaded: Arc<Loaded>) {
        let Pending { request, submitted, reply, .. } = p;
        let LocalRequest { model, messages, params, deltas, cancel, .. } = request;
        let queued = submitted.elapsed();
        let sampling = Sampling::resolve(&params, self.shared.settings.default_max_tokens);
        let rx = loaded.generate(messages, sampling, deltas, cancel);
        drop(loaded);
        let tx = self.tx.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let result = rx.await.unwrap_or_else(|_| Err(EngineError::Decode("the model thread ended".into())));
            let answer = match result {
                Ok(output) => {
                    let first_token = output.first_token.map(|f| queued + f);
                    let outcome = if output.finish == super::local::Finish::Cancelled { "cancelled" } else { "ok" };
                    metrics.local_requests.with_label_values(&[&model, outcome]).inc();
                    metrics.local_tokens.with_label_values(&[&model, "in"]).inc_by(u64::from(output.tokens_in));
                    metrics.local_tokens.with_label_values(&[&model, "out"]).inc_by(u64::from(output.tokens_out));
                    if let Some(f) = first_token {
                        metrics.local_ttft.with_label_values(&[&model]).observe(f.as_secs_f64());
                    }
                    if let Some(tps) = output.tokens_per_second() {
                        metrics.local_tokens_per_second.with_label_values(&[&model]).observe(tps);
                    }
                    Ok(LocalAnswer { model: model.clone(), output, first_token })
                }
                Err(e) => {
                    metrics.local_requests.with_label_values(&[&model, "failed"]).inc();
                    Err(LocalError::Engine(e))
                }
            };
            // The scheduler hears of the end before the caller does: a caller's next
            // request (same channel, later) then finds the model idle, not busy.
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Cmd::JobDone(model));
            }
            let _ = reply.send(answer);
        });
    }

    fn count(&self, model: &str, outcome: &str) {
        self.shared.metrics.local_requests.with_label_values(&[model, outcome]).inc();
    }

    fn status(&self) -> Value {
        let budget = self.shared.budget.load(Ordering::Relaxed);
        let loaded: Vec<Value> = self
            .slots
            .iter()
            .map(|(name, s)| {
                let (state, info) = match &s.state {
                    SlotState::Loading(_) => ("loading", Value::Null),
                    SlotState::Ready(l) => ("loaded", ready_info(l)),
                };
                json!({
                    "model": name, "state": state, "bytes": s.bytes, "busy": s.busy,
                    "queued": self.queue.iter().filter(|p| &p.request.model == name).count(),
                    "idle_seconds": s.last_used.elapsed().as_secs_f64(),
                    "loaded_seconds": s.loaded_at.elapsed().as_secs_f64(),
                    "info": info,
                })
            })
            .collect();
        json!({
            "budget_bytes": (budget != u64::MAX).then_some(budget),
            "used_bytes": self.used(),
            "queue_depth": self.queue.len(),
            "running": self.running(),
            "parallel": self.shared.settings.parallel,
            "hot": self.hot,
            "loaded": loaded,
        })
    }

    fn shutdown(&mut self) {
        for p in self.queue.drain(..) {
            let _ = p.reply.send(Err(LocalError::ShuttingDown));
        }
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for model in names {
            self.unload(&model, "shutdown", None);
        }
    }
}

#[cfg(feature = "embedded")]
fn ready_info(l: &Loaded) -> Value {
    serde_json::to_value(l.info()).unwrap_or(Value::Null)
}

#[cfg(not(feature = "embedded"))]
fn ready_info(l: &Loaded) -> Value {
    match *l {}
}
