//! Memory agents: MemoryOrchestratorService, MemoryClient, KnowledgeBase. (Being written.)

use std::sync::Arc;

use super::Behaviour;
use crate::supervisor::context::FleetCtx;

/// The behaviour of the memory agent `name`, if it is one of them.
pub fn behaviour(_name: &str, _ctx: &Arc<FleetCtx>) -> Option<Arc<dyn Behaviour>> {
    None
}
