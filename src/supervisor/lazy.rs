//! On-demand starts (the LazyLoader of DESIGN §2).
//!
//! `ensure(agent)` starts the agent's missing dependencies wave by wave,
//! then the agent, and answers when it is running. Concurrent requests for
//! the same agent share one start (single flight). The whole start must
//! finish within `lazy_loader.startup_timeout_seconds` (the SLA; 30 s, the
//! earlier system's figure); otherwise the caller gets `start_timeout` and
//! every on-demand agent this start brought up is stopped again, back to
//! `dormant`. A dependency that is `unavailable` (cannot run here) does not
//! block its dependents: they start degraded, with a warning.
//!
//! The catalog's LazyLoader agent is this mechanism's face as an agent; the
//! mechanism itself belongs to the supervisor, so an on-demand start never
//! depends on an actor that may be restarting.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::agent::StartError;
use super::group::StartResult;
use super::state::AgentState;
use super::table::AgentTable;
use crate::core::Event;

type Flight = watch::Receiver<Option<StartResult>>;

/// What an on-demand start needs of the fleet (implemented by `Fleet`).
pub trait Starts: Clone + Send + Sync + 'static {
    /// The agent table.
    fn table(&self) -> &Arc<AgentTable>;
    /// Starts one agent whose dependencies run, by `deadline`.
    fn start_one(&self, agent: &str, deadline: Instant) -> impl Future<Output = StartResult> + Send;
    /// Stops one agent, leaving it in `target`.
    fn stop_one(&self, agent: &str, target: AgentState, reason: &str) -> impl Future<Output = ()> + Send;
    /// The on-demand starts in flight.
    fn flights(&self) -> &LazyLoader;
}

/// Single-flight table of on-demand starts in progress.
#[derive(Default)]
pub struct LazyLoader {
    flights: Mutex<HashMap<String, (Flight, AbortHandle)>>,
}

impl LazyLoader {
    /// See the module docs.
    ///
    /// # Errors
    /// [`StartError::UnknownAgent`], [`StartError::Fatal`],
    /// [`StartError::Timeout`] past the SLA, or the failing agent's error.
    pub async fn ensure<F: Starts>(&self, fleet: &F, agent: &str) -> StartResult {
        let ctx = fleet.table();
        match ctx.state(agent) {
            None => return Err(StartError::UnknownAgent(agent.to_string())),
            Some(AgentState::Running) => {
                ctx.metrics.lazy_starts.with_label_values(&["already_running"]).inc();
                return Ok(());
            }
            Some(AgentState::Fatal) => return Err(StartError::Fatal { agent: agent.to_string() }),
            Some(_) => {}
        }
        let mut flight = {
            let mut flights = self.flights.lock();
            match flights.get(agent) {
                Some((rx, _)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let (fleet2, name) = (fleet.clone(), agent.to_string());
                    let task = tokio::spawn(async move {
                        let result = run(&fleet2, &name).await;
                        fleet2.flights().done(&name);
                        let _ = tx.send(Some(result));
                    });
                    flights.insert(agent.to_string(), (rx.clone(), task.abort_handle()));
                    rx
                }
            }
        };
        match flight.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(Err(StartError::ShuttingDown)),
            Err(_) => Err(StartError::ShuttingDown),
        }
    }

    /// Forgets a finished flight.
    fn done(&self, agent: &str) {
        self.flights.lock().remove(agent);
    }

    /// Cancels every start in progress (shutdown).
    pub(crate) fn abort_all(&self) {
        for (_, (_, handle)) in self.flights.lock().drain() {
            handle.abort();
        }
    }
}

/// One on-demand start: dependencies in waves, then the agent, within the SLA.
async fn run<F: Starts>(fleet: &F, agent: &str) -> StartResult {
    let ctx = fleet.table().clone();
    let t0 = Instant::now();
    let sla = Duration::from_secs_f64(ctx.settings.lazy_loader.startup_timeout_seconds.max(0.0));
    let deadline = t0 + sla;
    let chain = ctx.catalog.closure(&BTreeSet::from([agent.to_string()]));
    let to_start: BTreeSet<String> = chain.into_iter().filter(|a| ctx.state(a) != Some(AgentState::Running)).collect();
    let waves = ctx.catalog.waves(&to_start);
    let work = async {
        for wave in &waves {
            let starts = wave.iter().map(|a| async move { (a, fleet.start_one(a, deadline).await) });
            for (a, result) in join_all(starts).await {
                match result {
                    Ok(()) => {}
                    Err(StartError::Unavailable { reason, .. }) if a != agent => {
                        tracing::warn!(agent, dependency = %a, reason, "starting with an unavailable dependency");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    };
    let result = match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(r) => r,
        Err(_) => Err(StartError::Timeout { agent: agent.to_string(), secs: sla.as_secs_f64() }),
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let started: Vec<String> = to_start.iter().cloned().collect();
    match &result {
        Ok(()) => {
            ctx.metrics.lazy_starts.with_label_values(&["ok"]).inc();
            ctx.metrics.lazy_start_duration.with_label_values(&["ok"]).observe(elapsed);
            ctx.events.emit(Event::LazyStarted { agent: agent.to_string(), started, start_ms: elapsed * 1e3 });
        }
        Err(e) => {
            let outcome = if matches!(e, StartError::Timeout { .. }) { "start_timeout" } else { "failed" };
            ctx.metrics.lazy_starts.with_label_values(&[outcome]).inc();
            ctx.metrics.lazy_start_duration.with_label_values(&[outcome]).observe(elapsed);
            // Roll back: every on-demand agent of this start goes back to dormant,
            // dependents before their dependencies.
            let reason = format!("rolled back: on-demand start of {agent} failed: {e}");
            for wave in waves.iter().rev() {
                let stops = wave
                    .iter()
                    .filter(|a| ctx.catalog.get(a).is_some_and(|s| s.on_demand()))
                    .filter(|a| ctx.state(a) != Some(AgentState::Unavailable))
                    .map(|a| fleet.stop_one(a, AgentState::Dormant, &reason));
                join_all(stops).await;
            }
            ctx.events.emit(Event::LazyFailed {
                agent: agent.to_string(),
                code: e.code().as_str(),
                reason: e.to_string(),
                rolled_back: started,
            });
        }
    }
    result.map_err(|e| match e {
        // A dependency that ran out of time is the whole start running out of time.
        StartError::Timeout { .. } => StartError::Timeout { agent: agent.to_string(), secs: sla.as_secs_f64() },
        other => other,
    })
}
