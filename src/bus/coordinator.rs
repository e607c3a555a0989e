//! RequestCoordinator: the task bus's face as an agent. The bus itself
//! (sockets, ledger, dispatcher) is infrastructure bound by the composition
//! root and outlives this agent's restarts; the agent answers questions
//! about it. The composition root registers this behaviour for the catalog's
//! RequestCoordinator agent and shares the [`BusStatus`] with the HTTP
//! server (`/health`) and the CLI's boot lines.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `coordinator.status` | `{}` | `{"ingress", "events", "queued", "running", "admission"}` (endpoints `null` without a bus) |
//! | `coordinator.tasks` | `{}` | `{"profile", "types": [{"type", "agent", "runtime", "summary", "input_schema", "output_schema", "example"}]}`: the task types this run serves (an agent of the profile handles them), as `GET /tasks` shows each; what the MCP server's tools are made of |

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Bus;
use super::dispatch::Shared;
use crate::agents::behaviour::{Behaviour, unknown_type};
use crate::core::{ErrorCode, Task, TaskError};

/// The bus as others see it: the bound bus, once bound.
#[derive(Default)]
pub struct BusStatus {
    bound: OnceLock<Arc<Bus>>,
}

impl BusStatus {
    /// Records the bound bus (once, by the composition root).
    pub fn set(&self, bus: Arc<Bus>) {
        let _ = self.bound.set(bus);
    }

    /// The bound bus.
    pub fn bus(&self) -> Option<&Arc<Bus>> {
        self.bound.get()
    }

    /// The bound endpoints (ROUTER, PUB).
    pub fn endpoints(&self) -> Option<(String, String)> {
        self.bound.get().map(|b| (b.ingress.clone(), b.events.clone()))
    }

    /// `{"ingress", "events", "queued", "running", "admission"}`.
    pub fn to_json(&self) -> Value {
        match self.bound.get() {
            Some(bus) => {
                let shared = bus.shared();
                let (queued, running) = shared.ledger.counts();
                json!({
                    "ingress": bus.ingress, "events": bus.events, "queued": queued, "running": running,
                    "admission": shared.gate.admission().as_str(),
                })
            }
            None => json!({"ingress": null, "events": null, "queued": 0, "running": 0, "admission": null}),
        }
    }
}

/// The RequestCoordinator behaviour.
pub struct Coordinator {
    status: Arc<BusStatus>,
}

impl Coordinator {
    /// A coordinator reporting on `status`.
    pub fn new(status: Arc<BusStatus>) -> Coordinator {
        Coordinator { status }
    }
}

#[async_trait]
impl Behaviour for Coordinator {
    async fn handle(&self, task: Task) -> Result<Value, TaskError> {
        match task.task_type.as_str() {
            "coordinator.status" => Ok(self.status.to_json()),
            "coordinator.tasks" => match self.status.bus() {
                Some(bus) => Ok(served_types(bus.shared())),
                None => Err(TaskError::new(ErrorCode::Internal, "coordinator.tasks: the task bus is not bound yet")),
            },
            _ => Err(unknown_type("RequestCoordinator", &task)),
        }
    }
}

/// The task types an agent of the run's profile handles (the others are
/// answered `unknown_task_type`), each as `GET /tasks` shows it.
fn served_types(shared: &Shared) -> Value {
    let fleet = &shared.fleet;
    let types: Vec<Value> = shared
        .tasks
        .iter()
        .filter(|def| fleet.resolve(None, Some(&def.task_type)).is_ok())
        .map(|def| def.to_json())
        .collect();
    json!({"profile": fleet.ctx().plan.name, "types": types})
}
