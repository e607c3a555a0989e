//! What every supervisor and agent actor of one daemon shares: settings,
//! catalog, plan, event bus, metrics, and the live table of agent records.
//!
//! All lifecycle transitions go through [`FleetCtx::transition`], which
//! updates the table, publishes the event and counts it, in one place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, Weak};
use std::time::Instant;

use parking_lot::RwLock;
use serde_json::{Value, json};

use super::state::{AgentRecord, AgentState};
use crate::config::Settings;
use crate::config::catalog::Catalog;
use crate::config::profile::Plan;
use crate::events::EventBus;
use crate::telemetry::metrics::Metrics;

/// Shared state of one daemon.
pub struct FleetCtx {
    /// Daemon settings.
    pub settings: Settings,
    /// The validated catalog.
    pub catalog: Catalog,
    /// The resolved profile.
    pub plan: Plan,
    /// Event stream.
    pub events: EventBus,
    /// Metrics.
    pub metrics: Metrics,
    /// When the daemon started.
    pub started: Instant,
    /// The SQLite store.
    pub store: crate::store::Store,
    /// Local models (ModelManagerSuite's engine; the embedded backend's queue).
    pub models: std::sync::Arc<crate::models::manager::ModelManager>,
    /// Latest CPU load, percent ×100 (SystemDigitalTwin); `u64::MAX` = unknown.
    load_centi_percent: std::sync::atomic::AtomicU64,
    records: RwLock<BTreeMap<String, AgentRecord>>,
    shutting_down: AtomicBool,
    /// The fleet handle, for behaviours that drive the supervisor (weak: the
    /// fleet owns this context).
    fleet: OnceLock<Weak<super::fleet::Inner>>,
    /// The bound task-bus endpoints (ROUTER, PUB), once RequestCoordinator runs.
    bus_endpoints: RwLock<Option<(String, String)>>,
}

impl FleetCtx {
    /// A context with a record per agent of `plan` (all `dormant`).
    pub fn new(
        settings: Settings,
        catalog: Catalog,
        plan: Plan,
        metrics: Metrics,
        store: crate::store::Store,
    ) -> FleetCtx {
        let records = plan
            .agents
            .iter()
            .filter_map(|name| catalog.get(name))
            .map(|spec| {
                (
                    spec.name.clone(),
                    AgentRecord {
                        name: spec.name.clone(),
                        group: spec.group.clone(),
                        runtime: spec.runtime.kind(),
                        essential: spec.required,
                        state: AgentState::Dormant,
                        restarts: 0,
                        running_since: None,
                        pid: None,
                        reason: None,
                        dependencies: spec.dependencies.clone(),
                    },
                )
            })
            .collect();
        let events = EventBus::new(metrics.events.clone());
        let models = std::sync::Arc::new(crate::models::manager::ModelManager::new(
            settings.models.clone(),
            settings.models_dir.clone(),
            events.clone(),
            metrics.clone(),
        ));
        FleetCtx {
            events,
            models,
            settings,
            catalog,
            plan,
            metrics,
            started: Instant::now(),
            store,
            load_centi_percent: std::sync::atomic::AtomicU64::new(u64::MAX),
            records: RwLock::new(records),
            shutting_down: AtomicBool::new(false),
            fleet: OnceLock::new(),
            bus_endpoints: RwLock::new(None),
        }
    }

    pub(crate) fn set_fleet(&self, fleet: Weak<super::fleet::Inner>) {
        let _ = self.fleet.set(fleet);
    }

    /// Records the machine's CPU load, percent (SystemDigitalTwin).
    pub fn set_system_load_percent(&self, percent: f64) {
        let v = (percent.clamp(0.0, 100.0) * 100.0) as u64;
        self.load_centi_percent.store(v, Ordering::Relaxed);
    }

    /// The latest CPU load, percent; `None` until SystemDigitalTwin measured it.
    pub fn system_load_percent(&self) -> Option<f64> {
        match self.load_centi_percent.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v as f64 / 100.0),
        }
    }

    /// The HybridRouter actor, looked up by name.
    pub fn router(&self) -> Option<ractor::ActorRef<crate::routing::router::RouterMsg>> {
        ractor::registry::where_is(self.actor_name(crate::routing::router::ROUTER_NAME)).map(Into::into)
    }

    /// Records the bound bus endpoints (ROUTER, PUB).
    pub fn set_bus_endpoints(&self, ingress: String, events: String) {
        *self.bus_endpoints.write() = Some((ingress, events));
    }

    /// The bound bus endpoints (ROUTER, PUB), when the bus runs.
    pub fn bus_endpoints(&self) -> Option<(String, String)> {
        self.bus_endpoints.read().clone()
    }

    /// The fleet handle, while the fleet exists.
    pub fn fleet(&self) -> Option<super::fleet::Fleet> {
        self.fleet.get().and_then(Weak::upgrade).map(super::fleet::Fleet::from_inner)
    }

    /// Moves `agent` to `state`, publishing `topic` (default: the state's
    /// own topic) with `agent`, `group`, `state`, and the fields of `extra`.
    /// A `reason` field in `extra` is kept on the record.
    pub fn transition(&self, agent: &str, state: AgentState, topic: Option<&'static str>, extra: Value) {
        let group = {
            let mut records = self.records.write();
            let Some(rec) = records.get_mut(agent) else {
                tracing::warn!(agent, state = state.as_str(), "transition for an agent outside the plan");
                return;
            };
            rec.state = state;
            match state {
                AgentState::Running => {
                    rec.running_since = Some(Instant::now());
                    rec.reason = None;
                }
                AgentState::Dormant | AgentState::Stopped => {
                    rec.pid = None;
                    rec.reason = extra.get("reason").and_then(Value::as_str).map(str::to_string);
                }
                _ => {
                    if let Some(r) = extra.get("reason").and_then(Value::as_str) {
                        rec.reason = Some(r.to_string());
                    }
                }
            }
            if !matches!(state, AgentState::Running | AgentState::Starting | AgentState::Stopping) {
                rec.pid = None;
            }
            rec.group.clone()
        };
        self.metrics.transitions.with_label_values(&[state.as_str()]).inc();
        let mut data = json!({"agent": agent, "group": group, "state": state.as_str()});
        if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
            d.extend(e);
        }
        match state {
            AgentState::Failed | AgentState::Fatal => {
                tracing::warn!(agent, state = state.as_str(), details = %data, "agent state")
            }
            _ => tracing::info!(agent, state = state.as_str(), "agent state"),
        }
        self.events.publish(topic.unwrap_or(state.topic()), data);
    }

    /// Records a restart (counter on the record and in metrics).
    pub fn count_restart(&self, agent: &str) {
        if let Some(rec) = self.records.write().get_mut(agent) {
            rec.restarts += 1;
        }
        self.metrics.restarts.with_label_values(&[agent]).inc();
    }

    /// Sets the child pid of a process agent.
    pub fn set_pid(&self, agent: &str, pid: Option<u32>) {
        if let Some(rec) = self.records.write().get_mut(agent) {
            rec.pid = pid;
        }
    }

    /// Current state of `agent`, `None` when it is not in the plan.
    pub fn state(&self, agent: &str) -> Option<AgentState> {
        self.records.read().get(agent).map(|r| r.state)
    }

    /// A copy of one record.
    pub fn record(&self, agent: &str) -> Option<AgentRecord> {
        self.records.read().get(agent).cloned()
    }

    /// A copy of every record, by name.
    pub fn snapshot(&self) -> Vec<AgentRecord> {
        self.records.read().values().cloned().collect()
    }

    /// `true` once shutdown began: no more starts or restarts.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// The registered actor name of `agent` (or of a supervisor).
    pub fn actor_name(&self, agent: &str) -> String {
        format!("{}{agent}", self.settings.testing.actor_name_prefix)
    }

    /// The running actor of `agent`, looked up by name (never cached: a
    /// restart gives a new actor).
    pub fn agent_ref(&self, agent: &str) -> Option<ractor::ActorRef<crate::agents::AgentMsg>> {
        ractor::registry::where_is(self.actor_name(agent)).map(Into::into)
    }

    /// Sets the scrape-time gauges (agents per state, up per agent).
    pub fn update_gauges(&self) {
        let records = self.records.read();
        for s in AgentState::ALL {
            let n = records.values().filter(|r| r.state == s).count();
            self.metrics.agents_by_state.with_label_values(&[s.as_str()]).set(n as i64);
        }
        for r in records.values() {
            let up = i64::from(r.state == AgentState::Running);
            self.metrics.agent_up.with_label_values(&[&r.name, &r.group]).set(up);
        }
    }
}
