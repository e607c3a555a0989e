//! The agent table: the live record of every agent of the run, and what the
//! supervisors of one daemon share to keep it (settings, catalog, plan, the
//! event bus, metrics).
//!
//! All lifecycle transitions go through [`AgentTable::transition`], which
//! updates the table and emits the typed event (logged and counted there),
//! in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

use super::agent::AgentMsg;
use super::state::{AgentRecord, AgentState};
use crate::config::Settings;
use crate::config::catalog::Catalog;
use crate::config::profile::Plan;
use crate::core::event::{Event, Transition};
use crate::events::EventBus;
use crate::telemetry::metrics::Metrics;

/// The supervisors' shared state: the table of agents and what keeps it.
pub struct AgentTable {
    /// Daemon settings (supervisor limits, actor name prefix).
    pub settings: Arc<Settings>,
    /// The validated catalog.
    pub catalog: Arc<Catalog>,
    /// The resolved profile.
    pub plan: Arc<Plan>,
    /// Event stream.
    pub events: EventBus,
    /// Metrics.
    pub metrics: Metrics,
    /// When the daemon started.
    pub started: Instant,
    records: RwLock<BTreeMap<String, AgentRecord>>,
    shutting_down: AtomicBool,
}

impl AgentTable {
    /// A table with a record per agent of `plan` (all `dormant`).
    pub fn new(
        settings: Arc<Settings>,
        catalog: Arc<Catalog>,
        plan: Arc<Plan>,
        events: EventBus,
        metrics: Metrics,
    ) -> AgentTable {
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
        AgentTable {
            settings,
            catalog,
            plan,
            events,
            metrics,
            started: Instant::now(),
            records: RwLock::new(records),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Moves `agent` to `state` and emits the transition: `details` gives
    /// the optional fields (`reason`, `start_ms`, ...); its `topic`, when
    /// set, replaces the state's own (`agent.restarted`). A `reason` is kept
    /// on the record.
    pub(crate) fn transition(&self, agent: &str, state: AgentState, details: Transition) {
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
                AgentState::Dormant | AgentState::Stopped => rec.reason = details.reason.clone(),
                _ => {
                    if let Some(r) = &details.reason {
                        rec.reason = Some(r.clone());
                    }
                }
            }
            if !matches!(state, AgentState::Running | AgentState::Starting | AgentState::Stopping) {
                rec.pid = None;
            }
            rec.group.clone()
        };
        self.metrics.transitions.with_label_values(&[state.as_str()]).inc();
        let topic = if details.topic.is_empty() { state.topic() } else { details.topic };
        self.events.emit(Event::Agent(Transition {
            agent: agent.to_string(),
            group,
            state: state.as_str(),
            topic,
            ..details
        }));
    }

    /// Records a restart (counter on the record and in metrics).
    pub(crate) fn count_restart(&self, agent: &str) {
        if let Some(rec) = self.records.write().get_mut(agent) {
            rec.restarts += 1;
        }
        self.metrics.restarts.with_label_values(&[agent]).inc();
    }

    /// Sets the child pid of a process agent.
    pub(crate) fn set_pid(&self, agent: &str, pid: Option<u32>) {
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
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// The registered actor name of `agent` (or of a supervisor).
    pub(crate) fn actor_name(&self, agent: &str) -> String {
        format!("{}{agent}", self.settings.testing.actor_name_prefix)
    }

    /// The running actor of `agent`, looked up by name (never cached: a
    /// restart gives a new actor).
    pub(crate) fn agent_ref(&self, agent: &str) -> Option<ractor::ActorRef<AgentMsg>> {
        ractor::registry::where_is(self.actor_name(agent)).map(Into::into)
    }

    /// Sets the scrape-time gauges (agents per state, up per agent).
    pub(crate) fn update_gauges(&self) {
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

impl Transition {
    /// Details with only a reason.
    pub(crate) fn because(reason: impl Into<String>) -> Transition {
        Transition { reason: Some(reason.into()), ..Default::default() }
    }
}
