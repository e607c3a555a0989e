//! The local-model agents (DESIGN §6), all on the daemon's
//! [`ModelManager`](crate::models::manager::ModelManager) (`Services::models`).
//!
//! **ModelManagerSuite** — the model table and the local queue:
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `models.list` | ignored | `{"models": [{"name", "path", "size_bytes", "architecture", "context_length", "parameters", "kv_bytes_per_token", "estimated_bytes", "state": "loaded"\|"loading"\|"available", "loaded_bytes"?}]}` |
//! | `models.load` | `"NAME"` or `{"model": NAME}` | `{"model", "state": "loaded", "bytes"}` (waits for the load) |
//! | `models.unload` | `"NAME"` or `{"model": NAME}` | `{"model", "state": "unloaded", "bytes"}`; `busy` while it serves or is owed requests |
//! | `models.status` | ignored | `{"budget_bytes", "used_bytes", "queue_depth", "running", "parallel", "hot", "loaded": [{"model", "state", "bytes", "busy", "queued", "idle_seconds", "loaded_seconds", "info"}]}` |
//!
//! **VRAMOptimizerAgent** — memory readings and the budget. Reads GPU memory
//! through NVML when present, else host memory, every `models.poll_secs`
//! seconds off the async runtime; each reading sets the budget
//! (`models.vram_budget_percentage` of the total unless
//! `models.memory_budget_bytes` is set), the `agentvisor_device_memory_bytes`
//! gauges and the free memory HybridRouter routes by; when loaded models
//! exceed the budget it evicts idle ones (least recently used first).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `vram.status` | ignored | `{"reading": {"source": "gpu"\|"host", "device", "total_bytes", "used_bytes", "free_bytes", "processes": [{"pid", "used_bytes"}]}, "budget_bytes", "budget_percentage", "fixed_budget", "models_bytes"}` |
//! | `vram.evict_idle` | ignored | `{"evicted": [NAME...]}`: idle models evicted until the loaded ones fit the budget |
//!
//! **TinyLlamaServiceEnhanced** — the smallest local model (`models.tiny_model`,
//! else the smallest file), the `degrade_to_tiny` target; it may load over
//! the budget.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `tiny_generation` | `"PROMPT"` or `{"prompt", "max_tokens"?, "temperature"?}` | `{"text", "model", "tokens_in", "tokens_out", "finish_reason"}`; streams text chunks when asked |
//! | `tiny.status` | ignored | `{"model", "state"}` (`null` model: no GGUF file) |
//!
//! The records the manager makes (a file of `models.list`, a loaded model of
//! `models.status`, a memory reading) stay JSON values here; the objects
//! around them are typed. The input and output types below are the
//! declarations of [`suite_tasks`], [`vram_tasks`] and [`tiny_tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Behaviour, Name, Text, unknown_type};
use crate::agents::services::Services;
use crate::agents::tasks::{Ignored, OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::{ChatMessage, ErrorCode, GenParams, Task, TaskError};
use crate::models::local::Finish;
use crate::models::manager::{LocalError, LocalRequest, ModelManager};
use crate::models::memory::MemoryReading;
use crate::supervisor::{Fleet, StartError};

/// A model name for the examples (the default model file's).
const EXAMPLE_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// The task types of ModelManagerSuite.
pub(crate) fn suite_tasks() -> Vec<RustTask> {
    let model = || vec![json!(EXAMPLE_MODEL), json!({"model": EXAMPLE_MODEL})];
    vec![
        rust_task::<Ignored, ListOutput>(
            "models.list",
            "Every GGUF model file of models_dir with its metadata and state",
            || vec![Value::Null],
        ),
        rust_task::<OrShort<ModelInput>, ModelMemory>(
            "models.load",
            "Loads a local model now and waits until it is loaded",
            model,
        ),
        rust_task::<OrShort<ModelInput>, ModelMemory>(
            "models.unload",
            "Unloads an idle local model (busy while it serves or is owed requests)",
            model,
        ),
        rust_task::<Ignored, ManagerStatus>(
            "models.status",
            "The loaded models, the memory budget and the local request queue",
            || vec![Value::Null],
        ),
    ]
}

/// The task types of VRAMOptimizerAgent.
pub(crate) fn vram_tasks() -> Vec<RustTask> {
    vec![
        rust_task::<Ignored, VramStatus>(
            "vram.status",
            "The latest memory reading (GPU or host), the budget and the memory the models take",
            || vec![Value::Null],
        ),
        rust_task::<Ignored, EvictOutput>(
            "vram.evict_idle",
            "Evicts idle models, least recently used first, until the loaded ones fit the budget",
            || vec![Value::Null],
        ),
    ]
}

/// The task types of TinyLlamaServiceEnhanced.
pub(crate) fn tiny_tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<GenerationInput>, GenerationOutput>(
            "tiny_generation",
            "Answers a prompt with the smallest local model (may load over the budget); streams text chunks",
            || {
                vec![
                    json!("Say hello in French."),
                    json!({"prompt": "Name three colours.", "max_tokens": 32, "temperature": 0.2}),
                ]
            },
        ),
        rust_task::<Ignored, TinyStatus>("tiny.status", "The tiny model and its state", || vec![Value::Null]),
    ]
}

/// The behaviour of `name`, when it is one of these agents.
pub fn behaviour(name: &str, services: &Services, _fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    let models = services.models.clone();
    match name {
        "ModelManagerSuite" => Some(Arc::new(ModelManagerSuite { models })),
        "VRAMOptimizerAgent" => Some(Arc::new(VramOptimizer { models, poller: Mutex::new(None) })),
        "TinyLlamaServiceEnhanced" => Some(Arc::new(TinyLlama { models })),
        _ => None,
    }
}

fn task_error(e: LocalError) -> TaskError {
    let code = match &e {
        LocalError::UnknownModel { .. } => ErrorCode::InvalidField,
        LocalError::Busy(_) | LocalError::QueueFull(_) => ErrorCode::Busy,
        LocalError::ShuttingDown => ErrorCode::ShuttingDown,
        LocalError::Restarting => ErrorCode::AgentNotRunning,
        LocalError::Engine(crate::models::local::EngineError::NotBuilt) => ErrorCode::NotImplemented,
        _ => ErrorCode::AgentError,
    };
    TaskError::new(code, format!("{}: {e}", e.code()))
}

/// ModelManagerSuite.
pub struct ModelManagerSuite {
    models: Arc<ModelManager>,
}

#[async_trait]
impl Behaviour for ModelManagerSuite {
    async fn start(&self) -> Result<(), StartError> {
        match self.models.list().await {
            Ok(list) if list.is_empty() => tracing::warn!(
                models_dir = %self.models.models_dir().display(),
                "no GGUF model found: local inference answers model_not_found until `agentvisor models fetch`"
            ),
            Ok(list) => tracing::info!(models = list.len(), "local models found"),
            Err(e) => tracing::warn!(error = %e, "models_dir unreadable"),
        }
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let m = &self.models;
        let t = task.task_type.as_str();
        match t {
            "models.list" => {
                let Ignored = decode(t, &task.input)?;
                let models = m.list().await.map_err(|e| TaskError::new(ErrorCode::AgentError, e.to_string()))?;
                encode(t, ListOutput { models })
            }
            "models.load" => {
                let OrShort(ModelInput { model: Name(model) }) = decode(t, &task.input)?;
                encode(t, ModelMemory(m.load(&model).await.map_err(task_error)?))
            }
            "models.unload" => {
                let OrShort(ModelInput { model: Name(model) }) = decode(t, &task.input)?;
                encode(t, ModelMemory(m.unload(&model).await.map_err(task_error)?))
            }
            "models.status" => {
                let Ignored = decode(t, &task.input)?;
                encode(t, ManagerStatus(m.status().await))
            }
            _ => Err(unknown_type("ModelManagerSuite", &task)),
        }
    }

    async fn stop(&self) {
        // Unloads every model; a later request loads again.
        self.models.shutdown().await;
    }
}

/// VRAMOptimizerAgent.
pub struct VramOptimizer {
    models: Arc<ModelManager>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl VramOptimizer {
    /// One reading, off the runtime, recorded in the manager; evicts idle
    /// models when the loaded ones exceed the budget.
    async fn poll(models: &Arc<ModelManager>, warned: &mut bool) {
        let probe = {
            let models = models.clone();
            tokio::task::spawn_blocking(move || {
                let probe = models.probe();
                probe.read()
            })
            .await
        };
        match probe {
            Ok(Ok(reading)) => {
                *warned = false;
                models.record_reading(reading);
            }
            Ok(Err(e)) if !*warned => {
                *warned = true;
                tracing::warn!(error = %e, "memory reading failed");
            }
            _ => {}
        }
        let status = models.status().await;
        if let (Some(used), Some(budget)) = (status["used_bytes"].as_u64(), models.budget_bytes())
            && used > budget
        {
            let evicted = models.evict_idle_over_budget().await;
            if !evicted.is_empty() {
                tracing::info!(?evicted, used, budget, "loaded models over the budget: idle ones evicted");
            }
        }
    }
}

#[async_trait]
impl Behaviour for VramOptimizer {
    async fn start(&self) -> Result<(), StartError> {
        let models = self.models.clone();
        let mut warned = false;
        // The first reading before `running`, so the budget is known before the first load.
        Self::poll(&models, &mut warned).await;
        let every = Duration::from_secs_f64(models.settings().poll_secs.max(0.1));
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                Self::poll(&models, &mut warned).await;
            }
        });
        *self.poller.lock() = Some(handle);
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let m = &self.models;
        let t = task.task_type.as_str();
        match t {
            "vram.status" => {
                let Ignored = decode(t, &task.input)?;
                let status = m.status().await;
                encode(
                    t,
                    VramStatus {
                        reading: m.reading(),
                        budget_bytes: m.budget_bytes(),
                        budget_percentage: m.settings().vram_budget_percentage,
                        fixed_budget: m.settings().memory_budget_bytes.is_some(),
                        models_bytes: status["used_bytes"].as_u64(),
                    },
                )
            }
            "vram.evict_idle" => {
                let Ignored = decode(t, &task.input)?;
                encode(t, EvictOutput { evicted: m.evict_idle_over_budget().await })
            }
            _ => Err(unknown_type("VRAMOptimizerAgent", &task)),
        }
    }

    async fn stop(&self) {
        if let Some(h) = self.poller.lock().take() {
            h.abort();
        }
    }
}

/// TinyLlamaServiceEnhanced.
pub struct TinyLlama {
    models: Arc<ModelManager>,
}

#[async_trait]
impl Behaviour for TinyLlama {
    async fn handle(&self, task: Task) -> Answer {
        let m = &self.models;
        let t = task.task_type.as_str();
        match t {
            "tiny.status" => {
                let Ignored = decode(t, &task.input)?;
                let model = m.tiny_model().await;
                let list = m.list().await.unwrap_or_default();
                let state = list
                    .iter()
                    .find(|e| Some(e["name"].as_str().unwrap_or("")) == model.as_deref())
                    .and_then(|e| e["state"].as_str().map(str::to_string));
                encode(t, TinyStatus { model, state })
            }
            "tiny_generation" => {
                let OrShort(GenerationInput { prompt: Text(prompt), max_tokens, temperature }) =
                    decode(t, &task.input)?;
                let Some(model) = m.tiny_model().await else {
                    return Err(TaskError::new(
                        ErrorCode::AgentUnavailable,
                        "no GGUF model in models_dir (run `agentvisor models fetch`)",
                    ));
                };
                let request = LocalRequest {
                    model,
                    messages: vec![ChatMessage::new("user", prompt)],
                    params: GenParams { max_tokens, temperature, ..Default::default() },
                    schedule: task.schedule,
                    deltas: task.chunks.clone(),
                    cancel: task.cancel.clone(),
                    over_budget_ok: true,
                };
                let answer = m.generate(request).await.map_err(task_error)?;
                if answer.output.finish == Finish::Cancelled {
                    return Err(TaskError::new(ErrorCode::Cancelled, "cancelled"));
                }
                encode(
                    t,
                    GenerationOutput {
                        text: answer.output.text,
                        model: answer.model,
                        tokens_in: answer.output.tokens_in,
                        tokens_out: answer.output.tokens_out,
                        finish_reason: answer.output.finish.as_str(),
                    },
                )
            }
            _ => Err(unknown_type("TinyLlamaServiceEnhanced", &task)),
        }
    }
}

/// The model files.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// Every `.gguf` file directly under `models_dir`, by name: `{"name"
    /// (the file name without `.gguf`), "path", "size_bytes",
    /// "architecture", "context_length", "parameters",
    /// "kv_bytes_per_token" (GGUF metadata, `null` when unreadable),
    /// "estimated_bytes" (memory once loaded), "state" (`loaded`,
    /// `loading` or `available`), "loaded_bytes"? (when loaded)}`.
    models: Vec<Value>,
}

/// The model a task acts on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ModelInput {
    /// The model's name: its file name under `models_dir` without `.gguf`.
    model: Name,
}

impl Shorthand for ModelInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The model's name alone.";
    fn expand(model: Name) -> ModelInput {
        ModelInput { model }
    }
}

/// A model's memory after `models.load` or `models.unload`, as the manager
/// made it (schema: [`ModelMemoryShape`]).
#[derive(Serialize)]
#[serde(transparent)]
struct ModelMemory(Value);

impl JsonSchema for ModelMemory {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ModelMemory".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        ModelMemoryShape::json_schema(generator)
    }
}

/// The model and the memory it takes (or took).
#[derive(Serialize, JsonSchema)]
#[allow(dead_code, reason = "the schema of the manager's answer, never built")]
struct ModelMemoryShape {
    /// The model's name.
    model: String,
    /// `loaded` (models.load) or `unloaded` (models.unload).
    state: String,
    /// Memory the model takes, or took before the unload, bytes.
    bytes: u64,
}

/// The manager's status, as it made it (schema: [`ManagerStatusShape`]).
#[derive(Serialize)]
#[serde(transparent)]
struct ManagerStatus(Value);

impl JsonSchema for ManagerStatus {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ManagerStatus".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        ManagerStatusShape::json_schema(generator)
    }
}

/// The loaded models, the budget and the local request queue.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code, reason = "the schema of the manager's status, never built")]
struct ManagerStatusShape {
    /// The memory budget in force, bytes; `null` until the first memory
    /// reading.
    budget_bytes: Option<u64>,
    /// Memory the loaded (and loading) models take, bytes.
    used_bytes: u64,
    /// Local requests waiting in the queue.
    queue_depth: usize,
    /// Local requests being served now.
    running: usize,
    /// Requests one model serves at once (`models.parallel`).
    parallel: usize,
    /// The model locked hot (never evicted), if any.
    hot: Option<String>,
    /// The loaded and loading models: `{"model", "state" (`loaded` or
    /// `loading`), "bytes", "busy" (requests being served), "queued",
    /// "idle_seconds", "loaded_seconds", "info" (engine details, `null`
    /// while loading)}`.
    loaded: Vec<Value>,
}

/// Memory readings and the budget.
#[derive(Serialize, JsonSchema)]
struct VramStatus {
    /// The latest reading, `null` before the first: `{"source" (`gpu` or
    /// `host`), "device" (the GPU's name or `host`), "total_bytes",
    /// "used_bytes", "free_bytes", "processes": [{"pid", "used_bytes"}]}`.
    #[schemars(with = "Option<Value>")]
    reading: Option<MemoryReading>,
    /// The budget in force, bytes; `null` until the first reading.
    budget_bytes: Option<u64>,
    /// The budget as a share of the device's memory, percent
    /// (`models.vram_budget_percentage`; unused when `fixed_budget`).
    budget_percentage: f64,
    /// `true` when `models.memory_budget_bytes` sets the budget.
    fixed_budget: bool,
    /// Memory the loaded models take, bytes.
    models_bytes: Option<u64>,
}

/// The models evicted.
#[derive(Serialize, JsonSchema)]
struct EvictOutput {
    /// Names of the models evicted, in order (empty when the loaded ones fit
    /// the budget or none is idle).
    evicted: Vec<String>,
}

/// The tiny model.
#[derive(Serialize, JsonSchema)]
struct TinyStatus {
    /// The tiny model's name (`models.tiny_model`, else the smallest file);
    /// `null` when there is no GGUF file.
    model: Option<String>,
    /// Its state: `loaded`, `loading` or `available`; `null` when its file is
    /// not found.
    state: Option<String>,
}

/// A prompt for the tiny model.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GenerationInput {
    /// The prompt, sent as one user message; it must have a character other
    /// than white space.
    prompt: Text,
    /// Most tokens to generate, 0–4294967295 (default: the engine's).
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    max_tokens: Option<u32>,
    /// Sampling temperature; absent or 0: greedy decoding.
    #[serde(default)]
    temperature: Option<f32>,
}

impl Shorthand for GenerationInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The prompt alone, with the engine's defaults.";
    fn expand(prompt: Text) -> GenerationInput {
        GenerationInput { prompt, max_tokens: None, temperature: None }
    }
}

/// The tiny model's answer.
#[derive(Serialize, JsonSchema)]
struct GenerationOutput {
    /// The generated text.
    text: String,
    /// The model that answered.
    model: String,
    /// Prompt tokens.
    tokens_in: u32,
    /// Generated tokens.
    tokens_out: u32,
    /// Why the generation ended: `stop` (the model ended it) or `length`
    /// (`max_tokens` reached).
    finish_reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::tasks::TaskTable;
    use crate::config::ModelSettings;
    use crate::events::EventBus;
    use crate::telemetry::metrics::Metrics;

    fn manager(dir: &std::path::Path) -> Arc<ModelManager> {
        let metrics = Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        Arc::new(ModelManager::new(ModelSettings::default(), dir.to_path_buf(), events, metrics))
    }

    fn table() -> TaskTable {
        let specs: Vec<crate::config::spec::AgentSpec> = [
            "{name: ModelManagerSuite, group: g, runtime: {kind: builtin}, \
             handles: [models.list, models.load, models.unload, models.status]}",
            "{name: VRAMOptimizerAgent, group: g, runtime: {kind: builtin}, handles: [vram.status, vram.evict_idle]}",
            "{name: TinyLlamaServiceEnhanced, group: g, runtime: {kind: builtin}, handles: [tiny_generation, tiny.status]}",
        ]
        .iter()
        .map(|yaml| serde_norway::from_str(yaml).unwrap())
        .collect();
        let rust = std::collections::BTreeMap::from([
            ("ModelManagerSuite", suite_tasks()),
            ("VRAMOptimizerAgent", vram_tasks()),
            ("TinyLlamaServiceEnhanced", tiny_tasks()),
        ]);
        TaskTable::build(&specs, &rust).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    /// Every example, run through the handler on an empty `models_dir`,
    /// answers what the output schema says, or the error a missing model
    /// gets.
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let dir = tempfile::tempdir().unwrap();
        let models = manager(dir.path());
        let agents: [(&str, Arc<dyn Behaviour>); 3] = [
            ("ModelManagerSuite", Arc::new(ModelManagerSuite { models: models.clone() })),
            ("VRAMOptimizerAgent", Arc::new(VramOptimizer { models: models.clone(), poller: Mutex::new(None) })),
            ("TinyLlamaServiceEnhanced", Arc::new(TinyLlama { models: models.clone() })),
        ];
        let table = table();
        assert_eq!(table.len(), 8);
        for def in table.iter() {
            let agent = &agents.iter().find(|(name, _)| *name == def.agent).unwrap().1;
            for example in def.input_schema["examples"].as_array().unwrap() {
                let answer = agent.handle(Task::new("t", def.task_type.clone(), example.clone())).await;
                match (def.task_type.as_str(), answer) {
                    (_, Ok(output)) => {
                        def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
                    }
                    ("models.load" | "models.unload", Err(e)) => assert_eq!(e.code, ErrorCode::InvalidField, "{e}"),
                    ("tiny_generation", Err(e)) => assert_eq!(e.code, ErrorCode::AgentUnavailable, "{e}"),
                    (t, Err(e)) => panic!("{t} {example}: {e}"),
                }
            }
        }
        let status = agents[0].1.handle(Task::new("t", "models.status", Value::Null)).await.unwrap();
        assert_eq!(status["loaded"], json!([]));
        let list = agents[0].1.handle(Task::new("t", "models.list", Value::Null)).await.unwrap();
        assert_eq!(list, json!({"models": []}));
        let tiny = agents[2].1.handle(Task::new("t", "tiny.status", Value::Null)).await.unwrap();
        assert_eq!(tiny, json!({"model": null, "state": null}));
    }

    /// A manager status with a loaded model and a memory reading are what
    /// the schemas say (no model can load in a unit test).
    #[test]
    fn manager_records_are_what_the_output_schemas_say() {
        let table = table();
        let status = json!({
            "budget_bytes": 8_000_000_000u64, "used_bytes": 120_000_000, "queue_depth": 1, "running": 1,
            "parallel": 2, "hot": "tiny",
            "loaded": [{"model": "tiny", "state": "loaded", "bytes": 120_000_000, "busy": 1, "queued": 1,
                        "idle_seconds": 0.5, "loaded_seconds": 12.0, "info": {"n_params": 135_000_000}}],
        });
        let output = encode("models.status", ManagerStatus(status)).unwrap();
        table.get("models.status").unwrap().check_output(&output).unwrap_or_else(|e| panic!("{output}: {e}"));
        let loaded =
            encode("models.load", ModelMemory(json!({"model": "tiny", "state": "loaded", "bytes": 1}))).unwrap();
        table.get("models.load").unwrap().check_output(&loaded).unwrap();
        let reading = MemoryReading {
            source: crate::models::memory::MemorySource::Gpu,
            device: "RTX".into(),
            total_bytes: 8,
            used_bytes: 2,
            free_bytes: 6,
            processes: vec![],
        };
        let vram = VramStatus {
            reading: Some(reading),
            budget_bytes: Some(6),
            budget_percentage: 80.0,
            fixed_budget: false,
            models_bytes: Some(0),
        };
        let output = encode("vram.status", vram).unwrap();
        assert_eq!(output["reading"]["source"], "gpu");
        table.get("vram.status").unwrap().check_output(&output).unwrap_or_else(|e| panic!("{output}: {e}"));
    }

    #[test]
    fn wrong_inputs_name_their_path() {
        let table = table();
        let message = |t: &str, input: Value| table.decode(t, &input).unwrap_err().message;
        assert!(message("models.load", json!(" ")).starts_with("input of models.load at the top level: "));
        assert!(message("models.unload", json!({"model": 5})).starts_with("input of models.unload at /model: "));
        assert!(
            message("tiny_generation", json!({"prompt": "hi", "max_tokens": -1}))
                .starts_with("input of tiny_generation at /max_tokens: ")
        );
        assert!(message("tiny_generation", json!({"max_tokens": 5})).contains("missing field `prompt`"));
        assert!(message("tiny_generation", json!(5)).starts_with("input of tiny_generation at the top level: "));
        assert!(table.decode("tiny_generation", &json!({"prompt": " hi ", "temperature": 0.7})).is_ok());
        let too_many = json!({"prompt": "hi", "max_tokens": u64::from(u32::MAX) + 1});
        assert!(message("tiny_generation", too_many).starts_with("input of tiny_generation at /max_tokens: "));
        let schema = &table.get("tiny_generation").unwrap().input_schema;
        assert_eq!(schema["anyOf"][1]["properties"]["max_tokens"]["maximum"], json!(u32::MAX));
    }
}
