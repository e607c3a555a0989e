//! The embedded llama.cpp engine (DESIGN §6): GGUF models run in-process
//! through `llama-cpp-2`.
//!
//! - One llama.cpp backend per process ([`backend`]), initialised on first
//!   use and never dropped; llama.cpp's own log lines go to `tracing`
//!   (target `llama-cpp-2`, filter it with `log.level`).
//! - A loaded model ([`LoadedModel`]) is the mapped weights and its chat
//!   template, shared (`Arc`); loading runs on the caller's (blocking) thread.
//! - Generation runs on the engine's worker threads (`models.parallel`,
//!   default 1), fed by one channel. A worker keeps one llama context per
//!   model it served (a context is not `Sync` and borrows its model, so it
//!   lives on that OS thread, never in actor state) and frees it once the
//!   model is unloaded. One worker for all models rather than one thread per
//!   model: llama.cpp's CPU threads are an OpenMP team per calling thread,
//!   and two teams on the same cores slowed generation by 38 % here
//!   (SmolLM2, 2 cores: 128 → 79 tokens/s once a second model had run).
//! - Generation: the model's own chat template (ChatML when the file has
//!   none), greedy sampling at temperature 0 (the default) or
//!   top-k/top-p/temperature with a seed, an optional grammar from a JSON
//!   schema (`json_schema_to_grammar`) so JSON answers are valid by
//!   construction, `max_tokens`, cancellation checked before every token, and
//!   UTF-8-safe streaming: a token may end inside a multi-byte character, so
//!   pieces go through an incremental decoder (`encoding_rs`) before they are
//!   sent.
//!
//! Where it sits: [`super::manager::ModelManager`] loads and schedules;
//! nothing else calls this module (benches compare against raw llama.cpp).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::local::{EngineError, Finish, GenOutput, GgufMeta, LoadOptions, ModelInfo, Sampling};
use crate::core::ChatMessage;

/// The process-wide llama.cpp backend, initialised once.
///
/// # Errors
/// [`EngineError::Load`] when llama.cpp cannot initialise.
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(true));
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load(format!("llama.cpp backend: {e}")))
}

/// Creating contexts concurrently is not safe in llama.cpp: one at a time.
static CONTEXT_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// How often an idle worker frees the contexts of unloaded models.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A loaded model: weights, template, and whether it is still loaded.
pub struct LoadedModel {
    id: u64,
    model: Arc<LlamaModel>,
    template: Arc<LlamaChatTemplate>,
    alive: Arc<AtomicBool>,
    info: ModelInfo,
    engine: Arc<Shared>,
}

impl LoadedModel {
    /// What llama.cpp says about the model (context size once prepared).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Prompt tokens of `messages` as a generation of this model counts
    /// them (`tokens_in`): its chat template applied with the assistant
    /// turn opened, then its tokenizer. Runs on the calling thread (no
    /// context needed; microseconds to a few milliseconds): call it off the
    /// async runtime for long prompts.
    ///
    /// # Errors
    /// [`EngineError::Template`] when the template cannot be applied.
    pub fn count_tokens(&self, messages: &[ChatMessage]) -> Result<u32, EngineError> {
        prompt_tokens(&self.model, &self.template, messages).map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX))
    }

    /// Queues one generation on a worker; the answer arrives on the returned
    /// receiver. Text deltas go to `deltas` as they decode.
    pub fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: Sampling,
        deltas: Option<mpsc::UnboundedSender<String>>,
        cancel: CancellationToken,
    ) -> oneshot::Receiver<Result<GenOutput, EngineError>> {
        let (reply, rx) = oneshot::channel();
        let work = Work::Generate { messages, params, deltas, cancel, reply };
        if let Err(job) = self.engine.send(self.job(work))
            && let Work::Generate { reply, .. } = job.work
        {
            let _ = reply.send(Err(EngineError::Decode("the engine's workers are gone".into())));
        }
        rx
    }

    fn job(&self, work: Work) -> Job {
        Job { id: self.id, model: self.model.clone(), template: self.template.clone(), alive: self.alive.clone(), work }
    }
}

impl Drop for LoadedModel {
    /// Marks the model unloaded: workers free its contexts (and with the
    /// last of them the weights) at their next sweep.
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

enum Work {
    /// Create the context now (end of a load).
    Prepare(std_mpsc::SyncSender<Result<(), EngineError>>),
    Generate {
        messages: Vec<ChatMessage>,
        params: Sampling,
        deltas: Option<mpsc::UnboundedSender<String>>,
        cancel: CancellationToken,
        reply: oneshot::Sender<Result<GenOutput, EngineError>>,
    },
}

struct Job {
    id: u64,
    model: Arc<LlamaModel>,
    template: Arc<LlamaChatTemplate>,
    alive: Arc<AtomicBool>,
    work: Work,
}

struct Shared {
    jobs: parking_lot::Mutex<Option<std_mpsc::Sender<Job>>>,
    options: LoadOptions,
}

impl Shared {
    /// Queues `job`; gives it back when the workers are gone.
    fn send(&self, job: Job) -> Result<(), Box<Job>> {
        match self.jobs.lock().as_ref() {
            Some(tx) => tx.send(job).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(job)),
        }
    }
}

/// The engine of one model manager: its worker threads and load options.
pub struct Engine {
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Engine {
    /// Starts `workers` worker threads (at least 1).
    ///
    /// # Errors
    /// [`EngineError::Load`] when llama.cpp cannot initialise or a thread
    /// cannot start.
    pub fn new(workers: usize, options: LoadOptions) -> Result<Engine, EngineError> {
        backend()?;
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("llama-worker-{i}"))
                .spawn(move || worker(&rx, options))
                .map_err(|e| EngineError::Load(format!("cannot start a llama.cpp worker: {e}")))?;
        }
        Ok(Engine {
            shared: Arc::new(Shared { jobs: parking_lot::Mutex::new(Some(tx)), options }),
            next_id: AtomicU64::new(1),
        })
    }

    /// Loads `path` and creates its context on a worker. Blocking (about
    /// 100 ms for a 100 MB file): call it off the async runtime.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for a missing file, [`EngineError::Load`]
    /// when llama.cpp rejects the file or the context.
    pub fn load(&self, path: &Path) -> Result<LoadedModel, EngineError> {
        if !path.is_file() {
            return Err(EngineError::NotFound(path.to_path_buf()));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let template = model
            .chat_template(None)
            .or_else(|_| LlamaChatTemplate::new("chatml"))
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let info = ModelInfo {
            n_params: model.n_params(),
            size_bytes: model.size(),
            n_ctx_train: model.n_ctx_train(),
            n_ctx: context_size(&model, self.shared.options),
        };
        let loaded = LoadedModel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            model: Arc::new(model),
            template: Arc::new(template),
            alive: Arc::new(AtomicBool::new(true)),
            info,
            engine: self.shared.clone(),
        };
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.shared
            .send(loaded.job(Work::Prepare(tx)))
            .map_err(|_| EngineError::Load("the engine's workers are gone".into()))?;
        rx.recv().map_err(|_| EngineError::Load("a worker ended while preparing the model".into()))??;
        Ok(loaded)
    }
}

impl Drop for Engine {
    /// Closes the job channel: the workers end after their current job.
    fn drop(&mut self) {
        self.shared.jobs.lock().take();
    }
}

/// The context size for `model`: `context_tokens`, capped by its training context.
fn context_size(model: &LlamaModel, options: LoadOptions) -> u32 {
    options.context_tokens.min(model.n_ctx_train()).max(64)
}

type Context<'a> = LlamaContext<'a>;

self_cell::self_cell!(
    /// A model and the context a worker created for it.
    struct ModelContext {
        owner: Arc<LlamaModel>,
        #[covariant]
        dependent: Context,
    }
);

struct Cached {
    alive: Arc<AtomicBool>,
    ctx: ModelContext,
}

fn new_context(model: &Arc<LlamaModel>, options: LoadOptions) -> Result<ModelContext, EngineError> {
    let backend = backend()?;
    let threads = i32::try_from(options.threads.max(1)).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_size(model, options)))
        .with_n_batch(options.batch_tokens)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_no_perf(true);
    ModelContext::try_new(model.clone(), |m| {
        let _guard = CONTEXT_LOCK.lock();
        m.new_context(backend, params).map_err(|e| EngineError::Load(format!("context: {e}")))
    })
}

fn worker(jobs: &parking_lot::Mutex<std_mpsc::Receiver<Job>>, options: LoadOptions) {
    let mut cache: HashMap<u64, Cached> = HashMap::new();
    let batch_tokens = options.batch_tokens.max(1) as usize;
    loop {
        let next = jobs.lock().recv_timeout(SWEEP_EVERY);
        cache.retain(|_, c| c.alive.load(Ordering::Acquire));
        let job = match next {
            Ok(job) => job,
            Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let entry = match cache.entry(job.id) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                new_context(&job.model, options).map(|ctx| v.insert(Cached { alive: job.alive.clone(), ctx }))
            }
        };
        match job.work {
            Work::Prepare(reply) => {
                let _ = reply.send(entry.map(|_| ()));
            }
            Work::Generate { messages, params, deltas, cancel, reply } => {
                let out = match entry {
                    Err(e) => Err(e),
                    Ok(_) if cancel.is_cancelled() => Ok(GenOutput::cancelled_before_start()),
                    Ok(c) => {
                        let request = Request { messages, params, deltas, cancel };
                        c.ctx.with_dependent_mut(|model, ctx| {
                            generate(model, ctx, &job.template, batch_tokens, &request)
                        })
                    }
                };
                let _ = reply.send(out);
            }
        }
    }
}

/// One generation's inputs.
struct Request {
    messages: Vec<ChatMessage>,
    params: Sampling,
    deltas: Option<mpsc::UnboundedSender<String>>,
    cancel: CancellationToken,
}

fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    template: &LlamaChatTemplate,
    batch_tokens: usize,
    job: &Request,
) -> Result<GenOutput, EngineError> {
    let t0 = Instant::now();
    ctx.clear_kv_cache();
    let tokens = prompt_tokens(model, template, &job.messages)?;
    let vocab = model.vocab();
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.is_empty() || tokens.len() + 1 >= n_ctx {
        return Err(EngineError::PromptTooLong { tokens: tokens.len(), context: n_ctx });
    }
    let room = (n_ctx - tokens.len()) as u32;
    let max_new = job.params.max_tokens.min(room);

    let mut sampler = sampler(model, &job.params)?;
    let mut batch = LlamaBatch::new(batch_tokens, 1);
    let last = tokens.len() - 1;
    for (chunk_no, chunk) in tokens.chunks(batch_tokens).enumerate() {
        if job.cancel.is_cancelled() {
            return Ok(GenOutput { tokens_in: tokens.len() as u32, ..GenOutput::cancelled_before_start() });
        }
        batch.clear();
        for (i, token) in chunk.iter().enumerate() {
            let pos = chunk_no * batch_tokens + i;
            batch.add(*token, pos as i32, &[0], pos == last).map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        ctx.decode(&mut batch).map_err(|e| EngineError::Decode(e.to_string()))?;
    }

    let mut decoder = encoding_rs::UTF_8.new_decoder_without_bom_handling();
    let mut text = String::new();
    let mut piece = Vec::with_capacity(32);
    let mut chunk = String::with_capacity(64);
    let mut generated: u32 = 0;
    let mut first_token: Option<Duration> = None;
    let mut pos = tokens.len() as i32;
    let mut logits_at = batch.n_tokens() - 1;
    let finish = loop {
        if job.cancel.is_cancelled() {
            break Finish::Cancelled;
        }
        if generated >= max_new {
            break Finish::Length;
        }
        let token = sampler.sample(ctx, logits_at);
        if vocab.is_eog(token) {
            break Finish::Stop;
        }
        generated += 1;
        first_token.get_or_insert_with(|| t0.elapsed());
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        chunk.clear();
        chunk.reserve(piece.len() + 4);
        let _ = decoder.decode_to_string(&piece, &mut chunk, false);
        if !chunk.is_empty() {
            text.push_str(&chunk);
            if let Some(d) = &job.deltas {
                let _ = d.send(chunk.clone());
            }
        }
        batch.clear();
        batch.add(token, pos, &[0], true).map_err(|e| EngineError::Decode(e.to_string()))?;
        pos += 1;
        ctx.decode(&mut batch).map_err(|e| EngineError::Decode(e.to_string()))?;
        logits_at = 0;
    };
    // Flush a character cut short by the end (replacement character, never a panic).
    chunk.clear();
    chunk.reserve(8);
    let _ = decoder.decode_to_string(&[], &mut chunk, true);
    if !chunk.is_empty() {
        text.push_str(&chunk);
        if let Some(d) = &job.deltas {
            let _ = d.send(chunk.clone());
        }
    }
    Ok(GenOutput {
        text,
        tokens_in: tokens.len() as u32,
        tokens_out: generated,
        finish,
        first_token,
        total_time: t0.elapsed(),
    })
}

/// The prompt of `messages`: the model's chat template applied (the
/// assistant turn opened), then tokenized with special tokens parsed. One
/// function for generations and for [`LoadedModel::count_tokens`], so the
/// token governor counts exactly what a generation reports as `tokens_in`.
fn prompt_tokens(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<llama_cpp_2::token::LlamaToken>, EngineError> {
    let chat: Vec<LlamaChatMessage> = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| EngineError::Template(format!("message: {e}")))?;
    let prompt = model.apply_chat_template(template, &chat, true).map_err(|e| EngineError::Template(e.to_string()))?;
    Ok(model.vocab().tokenize(prompt.as_bytes(), true, true))
}

/// The GBNF grammar (root rule `root`) that makes answers follow the JSON
/// schema `schema` (serialized), through llama.cpp's `json_schema_to_grammar`.
///
/// # Errors
/// [`EngineError::Grammar`] for a schema llama.cpp cannot translate.
pub fn schema_grammar(schema: &str) -> Result<String, EngineError> {
    llama_cpp_2::json_schema_to_grammar(schema)
        .map_err(|e| EngineError::Grammar(format!("JSON schema to grammar: {e}")))
}

/// The sampler chain for `params`: an optional grammar, then greedy
/// (temperature absent or 0) or top-k 40 / top-p / temperature / seeded draw.
fn sampler(model: &LlamaModel, params: &Sampling) -> Result<LlamaSampler, EngineError> {
    let mut chain = Vec::new();
    if let Some(schema) = &params.json_schema {
        let grammar = schema_grammar(schema)?;
        chain.push(
            LlamaSampler::grammar(model, &grammar, "root")
                .map_err(|e| EngineError::Grammar(format!("grammar: {e}")))?,
        );
    }
    match params.temperature {
        Some(t) if t > 0.0 => {
            chain.push(LlamaSampler::top_k(40));
            chain.push(LlamaSampler::top_p(params.top_p.unwrap_or(0.95), 1));
            chain.push(LlamaSampler::temp(t));
            chain.push(LlamaSampler::dist(params.seed));
        }
        _ => chain.push(LlamaSampler::greedy()),
    }
    Ok(LlamaSampler::chain_simple(chain))
}

/// GGUF metadata read without loading tensors (see [`super::gguf_meta`]).
pub(crate) fn gguf_metadata(path: &Path) -> Option<GgufMeta> {
    let g = llama_cpp_2::gguf::GgufContext::from_file(path)?;
    // Reading a key with the wrong type aborts inside ggml: check the type first.
    let string = |key: &str| {
        let i = g.find_key(key);
        (i >= 0 && g.kv_type(i) == llama_cpp_sys_2::GGUF_TYPE_STRING)
            .then(|| g.val_str(i).map(str::to_string))
            .flatten()
    };
    let number = |key: &str| {
        let i = g.find_key(key);
        if i < 0 {
            return None;
        }
        match g.kv_type(i) {
            t if t == llama_cpp_sys_2::GGUF_TYPE_UINT32 => Some(u64::from(g.val_u32(i))),
            t if t == llama_cpp_sys_2::GGUF_TYPE_INT32 => u64::try_from(g.val_i32(i)).ok(),
            t if t == llama_cpp_sys_2::GGUF_TYPE_UINT64 => Some(g.val_u64(i)),
            _ => None,
        }
    };
    let architecture = string("general.architecture");
    let arch_key = |k: &str| architecture.as_ref().and_then(|a| number(&format!("{a}.{k}")));
    let kv_bytes_per_token = match (
        arch_key("block_count"),
        arch_key("embedding_length"),
        arch_key("attention.head_count"),
        arch_key("attention.head_count_kv"),
    ) {
        (Some(layers), Some(embd), Some(heads), kv_heads) if heads > 0 => {
            let kv_heads = kv_heads.unwrap_or(heads);
            Some(2 * layers * (embd / heads) * kv_heads * 2)
        }
        _ => None,
    };
    Some(GgufMeta {
        context_length: arch_key("context_length").and_then(|n| u32::try_from(n).ok()),
        parameters: number("general.parameter_count").or_else(|| tensor_parameters(path)),
        kv_bytes_per_token,
        architecture,
    })
}

/// Parameters counted from the GGUF tensor table (bytes of each tensor over
/// its type's bytes per block, times the elements per block), for files
/// without `general.parameter_count`. Reads the header only (`no_alloc`).
fn tensor_parameters(path: &Path) -> Option<u64> {
    struct Gguf(*mut llama_cpp_sys_2::gguf_context);
    impl Drop for Gguf {
        fn drop(&mut self) {
            // SAFETY: the pointer came from gguf_init_from_file, is non-null and freed once.
            unsafe { llama_cpp_sys_2::gguf_free(self.0) }
        }
    }
    let c_path = std::ffi::CString::new(path.to_str()?).ok()?;
    let params = llama_cpp_sys_2::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() };
    // SAFETY: a valid C string and parameters; a null result (unreadable file) is handled.
    let ctx = unsafe { llama_cpp_sys_2::gguf_init_from_file(c_path.as_ptr(), params) };
    if ctx.is_null() {
        return None;
    }
    let g = Gguf(ctx);
    let mut total: u64 = 0;
    // SAFETY: `g.0` is a live gguf context; tensor ids are within 0..n_tensors.
    unsafe {
        for id in 0..llama_cpp_sys_2::gguf_get_n_tensors(g.0) {
            let ty = llama_cpp_sys_2::gguf_get_tensor_type(g.0, id);
            let (block_bytes, block_elems) = (llama_cpp_sys_2::ggml_type_size(ty), llama_cpp_sys_2::ggml_blck_size(ty));
            if block_bytes == 0 || block_elems <= 0 {
                return None;
            }
            let bytes = llama_cpp_sys_2::gguf_get_tensor_size(g.0, id);
            total += (bytes / block_bytes) as u64 * block_elems as u64;
        }
    }
    Some(total)
}
