//! SystemDigitalTwin: a live snapshot of the machine and the fleet; feeds
//! the CPU load to routing (HybridRouter reads it for the `high_load`
//! rule). A background task samples the machine every second with
//! `sysinfo`, off the async runtime (`spawn_blocking`).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `twin.snapshot` | ignored | `{"cpu_percent", "memory_total_bytes", "memory_used_bytes", "memory_available_bytes", "load_average": [1m, 5m, 15m], "agents": {STATE: count}}` |
//! | `twin.system_load` | ignored | `{"cpu_percent"}` (`null` before the first sample) |
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sysinfo::System;

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{Ignored, RustTask, decode, encode, rust_task};
use crate::core::Task;
use crate::routing::router::LoadProbe;
use crate::supervisor::{AgentTable, StartError};

/// The task types of SystemDigitalTwin.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<Ignored, SnapshotOutput>(
            "twin.snapshot",
            "The machine's CPU and memory use, load average and the number of agents in each state",
            || vec![Value::Null],
        ),
        rust_task::<Ignored, LoadOutput>("twin.system_load", "The machine's CPU use, percent", || vec![Value::Null]),
    ]
}

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
        let t = task.task_type.as_str();
        let Sample { cpu_percent, memory_total_bytes, memory_used_bytes, memory_available_bytes } =
            self.latest.lock().clone();
        match t {
            "twin.snapshot" => {
                let Ignored = decode(t, &task.input)?;
                let mut agents: BTreeMap<&'static str, usize> = BTreeMap::new();
                for r in self.table.snapshot() {
                    *agents.entry(r.state.as_str()).or_default() += 1;
                }
                let load_average = System::load_average().ok().map(|l| [l.one, l.five, l.fifteen]);
                encode(
                    t,
                    SnapshotOutput {
                        cpu_percent,
                        memory_total_bytes,
                        memory_used_bytes,
                        memory_available_bytes,
                        load_average,
                        agents,
                    },
                )
            }
            "twin.system_load" => {
                let Ignored = decode(t, &task.input)?;
                encode(t, LoadOutput { cpu_percent })
            }
            _ => Err(unknown_type("SystemDigitalTwin", &task)),
        }
    }

    async fn stop(&self) {
        if let Some(h) = self.sampler.lock().take() {
            h.abort();
        }
    }
}

/// The machine and the fleet now.
#[derive(Serialize, JsonSchema)]
struct SnapshotOutput {
    /// CPU use over the last second, percent of all cores (0–100); `null`
    /// before the first sample.
    cpu_percent: Option<f64>,
    /// Memory of the machine, bytes (0 before the first sample).
    memory_total_bytes: u64,
    /// Memory in use, bytes.
    memory_used_bytes: u64,
    /// Memory available to new allocations, bytes.
    memory_available_bytes: u64,
    /// Load average over 1, 5 and 15 minutes (runnable tasks); `null` where
    /// the system does not report it.
    load_average: Option<[f64; 3]>,
    /// Number of agents in each state, by state (`running`, `dormant`, ...;
    /// states with no agent are left out).
    agents: BTreeMap<&'static str, usize>,
}

/// The machine's CPU use.
#[derive(Serialize, JsonSchema)]
struct LoadOutput {
    /// CPU use over the last second, percent of all cores (0–100); `null`
    /// before the first sample.
    cpu_percent: Option<f64>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::config::Settings;
    use crate::config::catalog::Catalog;
    use crate::config::profile::Plan;
    use crate::events::EventBus;
    use crate::telemetry::metrics::Metrics;

    /// A twin over three dormant agents of the real catalog.
    fn twin() -> DigitalTwin {
        let catalog = Catalog::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agents"))).unwrap();
        let plan = Plan {
            name: "test".into(),
            agents: ["LazyLoader", "SystemDigitalTwin", "UnifiedSystemAgent"].map(String::from).into(),
            selected: 3,
            pulled_in: vec![],
            waves: vec![],
            dormant: vec![],
            autoload: vec![],
            startup: Default::default(),
            warnings: vec![],
        };
        let metrics = Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        let table = AgentTable::new(Arc::new(Settings::default()), Arc::new(catalog), Arc::new(plan), events, metrics);
        DigitalTwin::new(Arc::new(table), LoadProbe::default())
    }

    /// Every example, run through the handler before and after the first
    /// sample, answers what the output schema says.
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: SystemDigitalTwin, group: g, runtime: {kind: builtin}, handles: [twin.snapshot, twin.system_load]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([("SystemDigitalTwin", tasks())]);
        let table = crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"));
        let twin = twin();
        let run_examples = async || {
            for def in table.iter() {
                for example in def.input_schema["examples"].as_array().unwrap() {
                    let output = twin.handle(Task::new("t", def.task_type.clone(), example.clone())).await.unwrap();
                    def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
                }
            }
        };
        run_examples().await;
        let load = twin.handle(Task::new("t", "twin.system_load", Value::Null)).await.unwrap();
        assert_eq!(load, json!({"cpu_percent": null}));
        let snapshot = twin.handle(Task::new("t", "twin.snapshot", Value::Null)).await.unwrap();
        assert_eq!(snapshot["agents"], json!({"dormant": 3}));

        twin.start().await.unwrap();
        for _ in 0..100 {
            if twin.latest.lock().cpu_percent.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run_examples().await;
        twin.stop().await;
    }
}
