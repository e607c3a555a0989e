//! ServiceRegistry. (Being written.)

use std::sync::Arc;

use super::Behaviour;
use crate::supervisor::Fleet;
use crate::supervisor::context::FleetCtx;

/// The behaviour of ServiceRegistry, if `name` is it.
pub fn behaviour(_name: &str, _ctx: &Arc<FleetCtx>) -> Option<Arc<dyn Behaviour>> {
    None
}

/// HTTP routes of the registry, merged into the ObservabilityHub server.
pub fn routes() -> axum::Router<Fleet> {
    axum::Router::new()
}
