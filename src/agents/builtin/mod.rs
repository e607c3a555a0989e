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

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use super::behaviour::{Answer, Behaviour, agent_arg, bad_input, name_arg, unknown_type};
use super::services::Services;
use super::tasks::RustTask;
use crate::supervisor::Fleet;

/// The task types declared in Rust, by behaviour name (the agent name unless
/// its spec sets `runtime.behaviour`): the builtin half of the task-type
/// table ([`crate::agents::tasks::TaskTable::build`]).
pub(crate) fn rust_tasks() -> BTreeMap<&'static str, Vec<RustTask>> {
    BTreeMap::from([("UnifiedUtilsAgent", utils::tasks())])
}

/// The builtin behaviour named `name`, when it is built; each behaviour is
/// given only the services it uses.
pub(crate) fn behaviour_for(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
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
