//! RequestCoordinator: owns the ZeroMQ task bus ([`crate::bus`]). Its start
//! hook binds the ROUTER and PUB sockets (a taken port fails the start with
//! the endpoint named); its stop hook closes them.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `coordinator.status` | ignored | `{"ingress", "events", "queued", "running"}` |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;

use super::{Behaviour, unknown_type};
use crate::agents::actor::StartError;
use crate::agents::task::{Task, TaskReply};
use crate::bus::Bus;
use crate::supervisor::context::FleetCtx;

/// The RequestCoordinator behaviour.
pub struct RequestCoordinator {
    ctx: Arc<FleetCtx>,
    bus: Mutex<Option<Bus>>,
}

impl RequestCoordinator {
    /// A coordinator for the fleet of `ctx` (not bound yet).
    pub fn new(ctx: Arc<FleetCtx>) -> RequestCoordinator {
        RequestCoordinator { ctx, bus: Mutex::new(None) }
    }
}

#[async_trait]
impl Behaviour for RequestCoordinator {
    async fn start(&self) -> Result<(), StartError> {
        let bus = Bus::start(self.ctx.clone())
            .await
            .map_err(|e| StartError::Failed { agent: "RequestCoordinator".into(), reason: e.to_string() })?;
        self.ctx.set_bus_endpoints(bus.ingress.clone(), bus.events.clone());
        *self.bus.lock() = Some(bus);
        Ok(())
    }

    async fn handle(&self, task: Task) -> TaskReply {
        match task.task_type.as_str() {
            "coordinator.status" => {
                let guard = self.bus.lock();
                let (ingress, events, queued, running) = match guard.as_ref() {
                    Some(b) => (
                        Some(b.ingress.clone()),
                        Some(b.events.clone()),
                        b.gauges.queued.load(Ordering::Relaxed),
                        b.gauges.running.load(Ordering::Relaxed),
                    ),
                    None => (None, None, 0, 0),
                };
                Ok(json!({"ingress": ingress, "events": events, "queued": queued, "running": running}))
            }
            _ => Err(unknown_type("RequestCoordinator", &task)),
        }
    }

    async fn stop(&self) {
        let bus = self.bus.lock().take();
        if let Some(bus) = bus {
            bus.stop().await;
        }
    }
}
