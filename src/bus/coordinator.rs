//! RequestCoordinator: owns the ZeroMQ task bus. Its start hook binds the
//! ROUTER and PUB sockets (a taken port fails the start with the endpoint
//! named); its stop hook closes them. The composition root registers this
//! behaviour for the catalog's RequestCoordinator agent and shares a
//! [`BusStatus`] with the HTTP server (`/health`) and the CLI's boot lines.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `coordinator.status` | `{}` | `{"ingress", "events", "queued", "running"}` (endpoints `null` while unbound) |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use super::Bus;
use super::dispatch::Gauges;
use crate::agents::behaviour::{Behaviour, unknown_type};
use crate::agents::tasks::TaskTable;
use crate::core::{Task, TaskError};
use crate::supervisor::{Fleet, StartError};

/// The bus as others see it: bound endpoints and queue numbers, shared
/// across coordinator restarts.
#[derive(Default)]
pub struct BusStatus {
    bound: RwLock<Option<(String, String, Arc<Gauges>)>>,
}

impl BusStatus {
    /// The bound endpoints (ROUTER, PUB), while the bus runs.
    pub fn endpoints(&self) -> Option<(String, String)> {
        self.bound.read().as_ref().map(|(i, e, _)| (i.clone(), e.clone()))
    }

    /// `{"ingress", "events", "queued", "running"}`.
    pub(crate) fn to_json(&self) -> Value {
        match self.bound.read().as_ref() {
            Some((ingress, events, g)) => json!({
                "ingress": ingress, "events": events,
                "queued": g.queued.load(Ordering::Relaxed), "running": g.running.load(Ordering::Relaxed),
            }),
            None => json!({"ingress": null, "events": null, "queued": 0, "running": 0}),
        }
    }
}

/// The RequestCoordinator behaviour.
pub struct Coordinator {
    fleet: Fleet,
    status: Arc<BusStatus>,
    tasks: Arc<TaskTable>,
    bus: Mutex<Option<Bus>>,
}

impl Coordinator {
    /// A coordinator for `fleet` (not bound yet) reporting into `status`,
    /// checking task inputs against `tasks`.
    pub fn new(fleet: Fleet, status: Arc<BusStatus>, tasks: Arc<TaskTable>) -> Coordinator {
        Coordinator { fleet, status, tasks, bus: Mutex::new(None) }
    }
}

#[async_trait]
impl Behaviour for Coordinator {
    async fn start(&self) -> Result<(), StartError> {
        let bus = Bus::start(self.fleet.clone(), self.tasks.clone())
            .await
            .map_err(|e| StartError::Failed { agent: "RequestCoordinator".into(), reason: e.to_string() })?;
        *self.status.bound.write() = Some((bus.ingress.clone(), bus.events.clone(), bus.gauges.clone()));
        *self.bus.lock() = Some(bus);
        Ok(())
    }

    async fn handle(&self, task: Task) -> Result<Value, TaskError> {
        match task.task_type.as_str() {
            "coordinator.status" => Ok(self.status.to_json()),
            _ => Err(unknown_type("RequestCoordinator", &task)),
        }
    }

    async fn stop(&self) {
        *self.status.bound.write() = None;
        let bus = self.bus.lock().take();
        if let Some(bus) = bus {
            bus.stop().await;
        }
    }
}
