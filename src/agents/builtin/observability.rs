//! ObservabilityHub and ObservabilityHub_PC2 as agents: the fleet at a
//! glance and the metrics as JSON, over the bus (the HTTP side — `/metrics`,
//! `/health`, `/agents` — is [`crate::http`]). ObservabilityHub_PC2 answers
//! the same questions for the pc2 scope: the `pc2_*` groups and the groups
//! whose agents report to it (a dependency on ObservabilityHub_PC2); it is
//! the point the two-host fleet will federate from.
//!
//! | agent | type | input | output |
//! | --- | --- | --- | --- |
//! | ObservabilityHub | `observability.status` | nothing | `{"uptime_seconds", "agents": {STATE: n}, "tasks_per_second", "errors_per_second", "open_breakers", "resident_memory_bytes", "run_id"}` |
//! | ObservabilityHub | `observability.metrics` | nothing or `{"prefix"}` | `{"metrics": [{"name", "type", "help", "samples": [{"name"?, "labels", "value"}]}]}` |
//! | ObservabilityHub_PC2 | `observability.pc2.status` | nothing | the same as `observability.status` for the pc2 agents, plus `{"scope": "pc2", "host", "groups"}` |
//! | ObservabilityHub_PC2 | `observability.pc2.metrics` | nothing or `{"prefix"}` | the metric families, samples labelled with a pc2 agent or group (and the unlabelled, process-wide ones) |
//!
//! Rates: `agentvisor_tasks_total` sampled every second while the agent
//! runs; tasks and errors per second are over the last minute (since the
//! agent started when that is shorter). An error is a task whose outcome is
//! not `ok`. The schemas are the specs'.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Answer, Background, Behaviour, unknown_type};
use crate::agents::tasks::decode;
use crate::core::Task;
use crate::routing::router::RouterHandle;
use crate::supervisor::{AgentTable, StartError};

/// ObservabilityHub's name.
pub(crate) const HUB: &str = "ObservabilityHub";
/// ObservabilityHub_PC2's name.
pub(crate) const HUB_PC2: &str = "ObservabilityHub_PC2";

/// The window of the rates.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the task counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsInput {
    prefix: Option<String>,
}

/// `(when, tasks ok, tasks failed)`.
type Sample = (Instant, u64, u64);

struct Inner {
    table: Arc<AgentTable>,
    router: RouterHandle,
    run_id: String,
    /// `None`: every agent (ObservabilityHub); else the pc2 scope's agents.
    scope: Option<BTreeSet<String>>,
    /// The scope's groups.
    groups: Vec<String>,
    samples: Mutex<VecDeque<Sample>>,
}

/// The behaviour of both hubs.
pub struct Observability {
    inner: Arc<Inner>,
    sampler: Background,
}

impl Observability {
    /// ObservabilityHub (`pc2: false`) or ObservabilityHub_PC2 over `table`.
    pub(crate) fn new(table: Arc<AgentTable>, router: RouterHandle, run_id: String, pc2: bool) -> Observability {
        let (scope, groups) = if pc2 {
            let groups: BTreeSet<String> = table
                .catalog
                .agents
                .values()
                .filter(|a| a.group.starts_with("pc2_") || a.dependencies.iter().any(|d| d == HUB_PC2))
                .map(|a| a.group.clone())
                .collect();
            let agents =
                table.catalog.agents.values().filter(|a| groups.contains(&a.group)).map(|a| a.name.clone()).collect();
            (Some(agents), groups.into_iter().collect())
        } else {
            (None, Vec::new())
        };
        Observability {
            inner: Arc::new(Inner { table, router, run_id, scope, groups, samples: Mutex::new(VecDeque::new()) }),
            sampler: Background::default(),
        }
    }
}

impl Inner {
    fn in_scope(&self, agent: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(agent))
    }

    /// Tasks ok and failed so far (of the scope's agents).
    fn sample(&self) -> Sample {
        let (mut ok, mut failed) = (0, 0);
        for family in self.table.metrics.tasks.collect() {
            for m in family.get_metric() {
                let label = |n: &str| m.get_label().iter().find(|l| l.name() == n).map(|l| l.value().to_string());
                if !label("agent").is_some_and(|a| self.in_scope(&a)) {
                    continue;
                }
                let v = m.get_counter().get_value() as u64;
                if label("outcome").as_deref() == Some("ok") {
                    ok += v;
                } else {
                    failed += v;
                }
            }
        }
        (Instant::now(), ok, failed)
    }

    fn record(&self) {
        let s = self.sample();
        let mut q = self.samples.lock();
        q.push_back(s);
        while q.front().is_some_and(|f| s.0.duration_since(f.0) > RATE_WINDOW) {
            q.pop_front();
        }
    }

    /// Tasks and errors per second over the window.
    fn rates(&self) -> (f64, f64) {
        let now = self.sample();
        let q = self.samples.lock();
        let Some(first) = q.front().copied() else { return (0.0, 0.0) };
        let dt = now.0.duration_since(first.0).as_secs_f64();
        if dt <= 0.0 {
            return (0.0, 0.0);
        }
        (now.1.saturating_sub(first.1) as f64 / dt, now.2.saturating_sub(first.2) as f64 / dt)
    }

    async fn status(&self) -> Value {
        let mut agents: BTreeMap<&'static str, u64> = BTreeMap::new();
        for r in self.table.snapshot().iter().filter(|r| self.in_scope(&r.name)) {
            *agents.entry(r.state.as_str()).or_default() += 1;
        }
        let (tasks, errors) = self.rates();
        let open_breakers: Vec<String> = match self.router.status().await {
            Some(s) => s["backends"]
                .as_array()
                .map(|bs| {
                    bs.iter()
                        .filter(|b| b["breaker"].as_str().is_some_and(|st| st != "closed"))
                        .filter_map(|b| b["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let memory = tokio::task::spawn_blocking(resident_memory_bytes).await.ok().flatten().unwrap_or(0);
        let mut out = json!({
            "uptime_seconds": self.table.started.elapsed().as_secs_f64(),
            "agents": agents,
            "tasks_per_second": tasks,
            "errors_per_second": errors,
            "open_breakers": open_breakers,
            "resident_memory_bytes": memory,
            "run_id": self.run_id,
        });
        if self.scope.is_some() {
            out["scope"] = json!("pc2");
            out["host"] = Value::Null;
            out["groups"] = json!(self.groups);
        }
        out
    }

    fn metrics(&self, prefix: Option<&str>) -> Value {
        self.table.update_gauges();
        let families = self.table.metrics.registry.gather();
        let list: Vec<Value> = families
            .iter()
            .filter(|f| prefix.is_none_or(|p| f.name().starts_with(p)))
            .filter_map(|f| self.family(f))
            .collect();
        json!({"metrics": list})
    }

    /// One family as JSON, only the scope's samples; `None` when none is left.
    fn family(&self, f: &MetricFamily) -> Option<Value> {
        let name = f.name();
        let kind = f.get_field_type();
        let mut samples = Vec::new();
        for m in f.get_metric() {
            let labels: Map<String, Value> =
                m.get_label().iter().map(|l| (l.name().to_string(), json!(l.value()))).collect();
            if let Some(scope) = &self.scope {
                let agent_ok = labels.get("agent").and_then(Value::as_str).map(|a| scope.contains(a));
                let group_ok = labels.get("group").and_then(Value::as_str).map(|g| self.groups.iter().any(|x| x == g));
                if agent_ok == Some(false) || group_ok == Some(false) {
                    continue;
                }
            }
            match kind {
                MetricType::COUNTER => samples.push(json!({"labels": labels, "value": m.get_counter().get_value()})),
                MetricType::GAUGE => samples.push(json!({"labels": labels, "value": m.get_gauge().get_value()})),
                // Nothing here registers untyped metrics; read as a gauge.
                MetricType::UNTYPED => samples.push(json!({"labels": labels, "value": m.get_gauge().get_value()})),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let mut l = labels.clone();
                        l.insert("le".into(), json!(b.upper_bound().to_string()));
                        samples.push(
                            json!({"name": format!("{name}_bucket"), "labels": l, "value": b.cumulative_count()}),
                        );
                    }
                    let mut l = labels.clone();
                    l.insert("le".into(), json!("+Inf"));
                    samples.push(json!({"name": format!("{name}_bucket"), "labels": l, "value": h.get_sample_count()}));
                    samples.push(json!({"name": format!("{name}_sum"), "labels": labels, "value": h.get_sample_sum()}));
                    samples.push(
                        json!({"name": format!("{name}_count"), "labels": labels, "value": h.get_sample_count()}),
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let mut l = labels.clone();
                        l.insert("quantile".into(), json!(q.quantile().to_string()));
                        samples.push(json!({"labels": l, "value": q.value()}));
                    }
                    samples.push(json!({"name": format!("{name}_sum"), "labels": labels, "value": s.sample_sum()}));
                    samples.push(json!({"name": format!("{name}_count"), "labels": labels, "value": s.sample_count()}));
                }
            }
        }
        if samples.is_empty() {
            return None;
        }
        let kind = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        Some(json!({"name": name, "type": kind, "help": f.help(), "samples": samples}))
    }
}

/// The daemon's resident memory, bytes (sysinfo), if readable.
fn resident_memory_bytes() -> Option<u64> {
    let pid = sysinfo::get_current_pid().ok()?;
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid).map(|p| p.memory())
}

#[async_trait]
impl Behaviour for Observability {
    async fn start(&self) -> Result<(), StartError> {
        let inner = self.inner.clone();
        inner.record();
        self.sampler.start(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                inner.record();
            }
        });
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let pc2 = self.inner.scope.is_some();
        match (t, pc2) {
            ("observability.status", false) | ("observability.pc2.status", true) => Ok(self.inner.status().await),
            ("observability.metrics", false) | ("observability.pc2.metrics", true) => {
                let prefix = match &task.input {
                    Value::Null => None,
                    v => decode::<MetricsInput>(t, v)?.prefix,
                };
                Ok(self.inner.metrics(prefix.as_deref()))
            }
            _ => Err(unknown_type(if pc2 { HUB_PC2 } else { HUB }, &task)),
        }
    }

    async fn stop(&self) {
        self.sampler.stop();
    }
}
