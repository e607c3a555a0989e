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
//! | `vram.status` | ignored | `{"reading": {"source": "gpu"\|"host", "device", "total_bytes", "used_bytes", "free_bytes", "processes": [{"pid", "used_bytes"}]}, "budget_bytes", "budget_percentage", "models_bytes"}` |
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::{Answer, Behaviour, bad_input, name_arg, unknown_type};
use crate::agents::services::Services;
use crate::core::{ChatMessage, ErrorCode, GenParams, Task, TaskError};
use crate::models::local::Finish;
use crate::models::manager::{LocalError, LocalRequest, ModelManager};
use crate::supervisor::{Fleet, StartError};

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
        match task.task_type.as_str() {
            "models.list" => {
                let list = m.list().await.map_err(|e| TaskError::new(ErrorCode::AgentError, e.to_string()))?;
                Ok(json!({"models": list}))
            }
            "models.load" => m.load(&name_arg(&task, "model")?).await.map_err(task_error),
            "models.unload" => m.unload(&name_arg(&task, "model")?).await.map_err(task_error),
            "models.status" => Ok(m.status().await),
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
        match task.task_type.as_str() {
            "vram.status" => {
                let status = m.status().await;
                Ok(json!({
                    "reading": m.reading(),
                    "budget_bytes": m.budget_bytes(),
                    "budget_percentage": m.settings().vram_budget_percentage,
                    "fixed_budget": m.settings().memory_budget_bytes.is_some(),
                    "models_bytes": status["used_bytes"],
                }))
            }
            "vram.evict_idle" => Ok(json!({"evicted": m.evict_idle_over_budget().await})),
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
        match task.task_type.as_str() {
            "tiny.status" => {
                let model = m.tiny_model().await;
                let list = m.list().await.unwrap_or_default();
                let state = list.iter().find(|e| Some(e["name"].as_str().unwrap_or("")) == model.as_deref());
                Ok(json!({"model": model, "state": state.map(|e| e["state"].clone())}))
            }
            "tiny_generation" => {
                let Some(model) = m.tiny_model().await else {
                    return Err(TaskError::new(
                        ErrorCode::AgentUnavailable,
                        "no GGUF model in models_dir (run `agentvisor models fetch`)",
                    ));
                };
                let (prompt, max_tokens, temperature) = match &task.input {
                    Value::Object(o) => (
                        o.get("prompt").and_then(Value::as_str).map(str::to_string),
                        o.get("max_tokens").and_then(Value::as_u64).map(|n| n.min(u64::from(u32::MAX)) as u32),
                        o.get("temperature").and_then(Value::as_f64).map(|t| t as f32),
                    ),
                    _ => (Some(task.input_text()), None, None),
                };
                let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
                    return Err(bad_input(&task, "expected a prompt or {\"prompt\": TEXT}"));
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
                Ok(json!({
                    "text": answer.output.text, "model": answer.model,
                    "tokens_in": answer.output.tokens_in, "tokens_out": answer.output.tokens_out,
                    "finish_reason": answer.output.finish.as_str(),
                }))
            }
            _ => Err(unknown_type("TinyLlamaServiceEnhanced", &task)),
        }
    }
}
