//! Behaviour behaviours: Rust code answering tasks in-process, one file per
//! behaviour. Each file documents the task types it handles, their input and
//! output JSON, and its state.
//!
//! | agent | file | task types |
//! | --- | --- | --- |
//! | UnifiedUtilsAgent | [`utils`] | `utils.echo`, `utils.time`, `utils.uuid`, `utils.hash`, `utils.sleep` |
//! | UnifiedSystemAgent | [`system`] | `system.agents`, `system.status`, `system.start`, `system.stop`, `system.restart` |
//! | LazyLoader | [`lazy_loader`] | `lazy.ensure`, `lazy.status` |
//! | RequestCoordinator | `bus::coordinator` (registered by the composition root) | `coordinator.status`; owns the ZeroMQ sockets |
//! | SystemDigitalTwin | [`digital_twin`] | `twin.snapshot`, `twin.system_load` |
//! | SessionMemoryAgent | [`session_memory`] | `session.append`, `session.history`, `session.clear` |
//! | MemoryOrchestratorService | [`memory`] | `memory.store`, `memory.get`, `memory.delete`, `memory.search`; TTL expiry |
//! | MemoryClient | [`memory`] | `memory.recall`, `memory.search` (forwarded to MemoryOrchestratorService, else `agent_unavailable`) |
//! | KnowledgeBase | [`memory`] | `kb.add`, `kb.search` (FTS5, bm25), `kb.delete` |
//! | ServiceRegistry | [`service_registry`] | `registry.register`, `registry.heartbeat`, `registry.discover`, `registry.promote`, `registry.deregister` (also over HTTP `/registry/*`) |
//! | StreamingTTSAgent | [`streaming_tts`] | `tts.stream` (through TTSService, one chunk per sentence) |
//! | ModelManagerSuite | [`models`] | `models.list`, `models.load`, `models.unload`, `models.status` |
//! | VRAMOptimizerAgent | [`models`] | `vram.status`, `vram.evict_idle`; polls GPU (NVML) or host memory |
//! | TinyLlamaServiceEnhanced | [`models`] | `tiny_generation`, `tiny.status` |
//!
//! Every other builtin agent answers tasks with `not_implemented` until its
//! issue lands — never with a made-up answer.

pub mod digital_twin;
pub mod lazy_loader;
pub mod memory;
pub mod models;
pub mod service_registry;
pub mod session_memory;
pub mod streaming_tts;
pub mod system;
pub mod utils;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::services::Services;
use crate::config::spec::{AgentSpec, RuntimeSpec};
use crate::core::{ErrorCode, Task, TaskError, TaskReply};
use crate::supervisor::{Fleet, StartError};

/// What a builtin handler answers: its output, or an error.
pub(crate) type Answer = Result<Value, TaskError>;

/// A builtin behaviour. Tasks run concurrently (each in its own tokio
/// task), so handlers take `&self`; state lives behind interior mutability.
#[async_trait]
pub trait Behaviour: Send + Sync + 'static {
    /// Start hook, run in the actor's `pre_start` (bind sockets, open
    /// files). The agent is `running` only after it returned `Ok`.
    async fn start(&self) -> Result<(), StartError> {
        Ok(())
    }

    /// Answers one task with its output. Dropping the future
    /// (cancellation, deadline) must stop the work.
    async fn handle(&self, task: Task) -> Result<Value, TaskError>;

    /// Answers one task with its output and the route of its model call;
    /// behaviours that call a model override it (the default has no route).
    async fn reply(&self, task: Task) -> TaskReply {
        self.handle(task).await.map(Into::into)
    }

    /// Stop hook, run in the actor's `post_stop`.
    async fn stop(&self) {}
}

/// The behaviour of `spec`, when one is built; `None` otherwise. Each
/// behaviour is given only the services it uses.
///
/// # Errors
/// [`StartError::Failed`] when an llm spec's `output_schema` is invalid.
pub fn create(
    spec: &Arc<AgentSpec>,
    services: &Services,
    fleet: &Fleet,
) -> Result<Option<Arc<dyn Behaviour>>, StartError> {
    match &spec.runtime {
        RuntimeSpec::Builtin { .. } => Ok(builtin_for(spec.behaviour_name(), services, fleet)),
        RuntimeSpec::Llm { .. } => match super::llm::LlmAgent::new(spec.clone(), services, fleet) {
            Ok(b) => Ok(b.map(|b| Arc::new(b) as Arc<dyn Behaviour>)),
            Err(reason) => Err(StartError::Failed { agent: spec.name.clone(), reason }),
        },
        RuntimeSpec::Process { .. } => Ok(None),
    }
}

fn builtin_for(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    if let Some(b) = memory::behaviour(name, services, fleet)
        .or_else(|| service_registry::behaviour(name, services, fleet))
        .or_else(|| models::behaviour(name, services, fleet))
    {
        return Some(b);
    }
    match name {
        "UnifiedUtilsAgent" => Some(Arc::new(utils::Utils)),
        "UnifiedSystemAgent" => Some(Arc::new(system::SystemAdmin { fleet: fleet.clone() })),
        "LazyLoader" => Some(Arc::new(lazy_loader::LazyLoaderAgent { fleet: fleet.clone() })),
        "SystemDigitalTwin" => {
            Some(Arc::new(digital_twin::DigitalTwin::new(fleet.ctx().clone(), services.load.clone())))
        }
        "SessionMemoryAgent" => Some(Arc::new(session_memory::SessionMemory { store: services.store.clone() })),
        "StreamingTTSAgent" => Some(Arc::new(streaming_tts::StreamingTts { peers: Arc::new(fleet.clone()) })),
        _ => None,
    }
}
/// `invalid_field` error for a task input.
pub(crate) fn bad_input(task: &Task, why: impl std::fmt::Display) -> TaskError {
    TaskError::new(ErrorCode::InvalidField, format!("input of {}: {why}", task.task_type))
}

/// `unknown_task_type` error for a type this behaviour does not handle.
pub(crate) fn unknown_type(agent: &str, task: &Task) -> TaskError {
    TaskError::new(ErrorCode::UnknownTaskType, format!("{agent} does not handle task type {}", task.task_type))
}

/// The agent name a task input names: a string, or `{"agent": NAME}`.
pub(crate) fn agent_arg(task: &Task) -> Result<String, TaskError> {
    name_arg(task, "agent")
}

/// The name a task input gives: a non-empty string, or `{KEY: NAME}`.
pub(crate) fn name_arg(task: &Task, key: &str) -> Result<String, TaskError> {
    let found = match &task.input {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Object(m) => m.get(key).and_then(|a| a.as_str()).map(str::to_string),
        _ => None,
    };
    found.ok_or_else(|| bad_input(task, format!("expected a name (string) or {{\"{key}\": NAME}}")))
}
