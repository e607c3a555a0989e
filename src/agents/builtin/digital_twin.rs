//! SystemDigitalTwin: a live snapshot of the machine and the fleet; feeds
//! the CPU load to routing (HybridRouter reads it for the `high_load`
//! rule). A background task samples the machine every second with
//! `sysinfo`, off the async runtime (`spawn_blocking`).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `twin.snapshot` | ignored | `{"cpu_percent", "memory_total_bytes", "memory_used_bytes", "memory_available_bytes", "load_average": [1m, 5m, 15m], "agents": {STATE: count}}` |
//! | `twin.system_load` | ignored | `{"cpu_percent"}` (`null` before the first sample) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sysinfo::System;

use super::{Answer, Behaviour, unknown_type};
use crate::core::Task;
use crate::routing::router::LoadProbe;
use crate::supervisor::{AgentTable, StartError};

/// Seconds between samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
struct Sample {
    cpu_percent: Option<f64>,
    memory_total_bytes: u64,
    memory_used_bytes: u64,
    memory_available_bytes: u64,
}

/// The SystemDigitalTwin behaviour.
pub struct DigitalTwin {
    table: Arc<AgentTable>,
    load: LoadProbe,
    latest: Arc<Mutex<Sample>>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DigitalTwin {
    /// A twin reading the agent states of `table` and writing the CPU load
    /// to `load` (sampling starts with the agent).
    pub fn new(table: Arc<AgentTable>, load: LoadProbe) -> DigitalTwin {
        DigitalTwin { table, load, latest: Default::default(), sampler: Mutex::new(None) }
    }
}

#[async_trait]
impl Behaviour for DigitalTwin {
    async fn start(&self) -> Result<(), StartError> {
        let (load, latest) = (self.load.clone(), self.latest.clone());
        let handle = tokio::spawn(async move {
            let mut sys = match tokio::task::spawn_blocking(System::new).await {
                Ok(Ok(s)) => s,
                _ => {
                    tracing::warn!("sysinfo unavailable: SystemDigitalTwin reports no machine load");
                    return;
                }
            };
            loop {
                let result = tokio::task::spawn_blocking(move || {
                    sys.refresh_cpu_usage();
                    sys.refresh_memory();
                    let sample = Sample {
                        cpu_percent: Some(f64::from(sys.global_cpu_usage())),
                        memory_total_bytes: sys.total_memory(),
                        memory_used_bytes: sys.used_memory(),
                        memory_available_bytes: sys.available_memory(),
                    };
                    (sys, sample)
                })
                .await;
                let Ok((s, sample)) = result else { return };
                sys = s;
                if let Some(cpu) = sample.cpu_percent {
                    load.set_percent(cpu);
                }
                *latest.lock() = sample;
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        *self.sampler.lock() = Some(handle);
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let s = self.latest.lock().clone();
        match task.task_type.as_str() {
            "twin.snapshot" => {
                let mut agents: BTreeMap<&'static str, usize> = BTreeMap::new();
                for r in self.table.snapshot() {
                    *agents.entry(r.state.as_str()).or_default() += 1;
                }
                let load = System::load_average().map(|l| json!([l.one, l.five, l.fifteen])).unwrap_or(Value::Null);
                Ok(json!({
                    "cpu_percent": s.cpu_percent, "memory_total_bytes": s.memory_total_bytes,
                    "memory_used_bytes": s.memory_used_bytes, "memory_available_bytes": s.memory_available_bytes,
                    "load_average": load, "agents": agents,
                }))
            }
            "twin.system_load" => Ok(json!({"cpu_percent": s.cpu_percent})),
            _ => Err(unknown_type("SystemDigitalTwin", &task)),
        }
    }

    async fn stop(&self) {
        if let Some(h) = self.sampler.lock().take() {
            h.abort();
        }
    }
}
