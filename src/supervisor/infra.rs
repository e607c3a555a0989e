//! The infrastructure supervisor: HybridRouter, the local model scheduler
//! (ModelScheduler) and the bus dispatcher (BusDispatcher) are supervised
//! like agents — restarted on failure with capped exponential backoff and
//! the same restart intensity rules (`supervisor.max_restarts` within
//! `supervisor.within_secs`). They are not agents of the catalog: every
//! agent depends on them, so a component that exceeds its intensity stops
//! the daemon with a non-zero exit (OTP: a top supervisor that gives up takes
//! the node down), where an ordinary agent only goes `fatal`.
//!
//! A component is an actor linked to this supervisor: HybridRouter is one;
//! a task loop (the model scheduler, the dispatcher) runs inside a small
//! [`LoopActor`] that fails when its loop panics or ends. Callers reach
//! components by name or through a handle the component's own layer keeps
//! current (the router's registered name, the model manager's sender, the
//! dispatcher's persistent command channel), so a restart hands them the
//! new instance; while one restarts they get `agent_not_running`, never a
//! hang.
//!
//! Events `infra.failed`, `infra.restarted`, `infra.fatal`; counter
//! `agentvisor_infra_restarts_total{component}`; states in [`Infra::status`]
//! (`GET /health`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::agent::panic_message;
use super::policy::{Decision, RestartTracker};
use super::table::AgentTable;
use crate::config::spec::RestartSpec;
use crate::core::{ErrorCode, Event, Fault, TaskError};

/// Starts a component linked to the given supervisor cell; its cell, or why not.
pub type StartFn = Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, String>> + Send + Sync>;

/// Makes a running component fail on purpose (fault injection); `false`
/// when it is not running.
pub type FaultFn = Arc<dyn Fn(Fault) -> bool + Send + Sync>;

/// One infrastructure component.
#[derive(Clone)]
pub struct Component {
    /// Its name (`HybridRouter`, `ModelScheduler`, `BusDispatcher`).
    pub name: String,
    start: StartFn,
    fault: FaultFn,
}

impl Component {
    /// A component that is an actor: `start` spawns it linked to the cell.
    pub fn actor(name: &str, start: StartFn, fault: FaultFn) -> Component {
        Component { name: name.into(), start, fault }
    }

    /// A component that is a task loop: `spawn` starts a fresh loop (it
    /// must pick up whatever state outlives it); the loop runs inside a
    /// [`LoopActor`] named `actor_name`, which fails when the loop panics or
    /// returns.
    pub fn task_loop(
        name: &str,
        actor_name: String,
        spawn: Arc<dyn Fn() -> JoinHandle<()> + Send + Sync>,
        fault: FaultFn,
    ) -> Component {
        let start: StartFn = Arc::new(move |sup| {
            let (spawn, actor_name) = (spawn.clone(), actor_name.clone());
            Box::pin(async move {
                Actor::spawn_linked(Some(actor_name), LoopActor, spawn, sup)
                    .await
                    .map(|(a, _)| a.get_cell())
                    .map_err(|e| e.to_string())
            })
        });
        Component { name: name.into(), start, fault }
    }
}

/// Messages of [`LoopActor`].
pub enum LoopMsg {
    /// The loop ended (panicked or returned).
    Ended(String),
}

/// Runs one task loop as an actor: fails when the loop ends on its own,
/// aborts it when stopped.
pub struct LoopActor;

impl Actor for LoopActor {
    type Msg = LoopMsg;
    type State = AbortHandle;
    type Arguments = Arc<dyn Fn() -> JoinHandle<()> + Send + Sync>;

    async fn pre_start(
        &self,
        myself: ActorRef<LoopMsg>,
        spawn: Self::Arguments,
    ) -> Result<AbortHandle, ActorProcessingErr> {
        let handle = spawn();
        let abort = handle.abort_handle();
        tokio::spawn(async move {
            let why = match handle.await {
                Ok(()) => "the loop returned".to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
                Err(_) => return, // aborted on purpose (stop)
            };
            let _ = myself.cast(LoopMsg::Ended(why));
        });
        Ok(abort)
    }

    async fn post_stop(&self, _myself: ActorRef<LoopMsg>, abort: &mut AbortHandle) -> Result<(), ActorProcessingErr> {
        abort.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<LoopMsg>,
        msg: LoopMsg,
        abort: &mut AbortHandle,
    ) -> Result<(), ActorProcessingErr> {
        let LoopMsg::Ended(why) = msg;
        abort.abort();
        Err(why.into())
    }
}

/// A component's state as [`Infra::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentState {
    /// Serving.
    Running,
    /// Failed; a restart is due after the backoff delay.
    Restarting,
    /// Exceeded its restart intensity; the daemon is stopping.
    Fatal,
    /// Stopped on purpose (shutdown).
    Stopped,
}

impl ComponentState {
    /// `running`, `restarting`, `fatal`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Running => "running",
            ComponentState::Restarting => "restarting",
            ComponentState::Fatal => "fatal",
            ComponentState::Stopped => "stopped",
        }
    }
}

/// Component states shared with [`Infra`].
#[derive(Default)]
pub struct Shared {
    /// Name → (state, restarts), in start order.
    states: RwLock<BTreeMap<String, (ComponentState, u32)>>,
}

/// Messages of [`InfraSupervisor`].
pub enum InfraMsg {
    /// The backoff delay of a restart passed.
    RestartDue(String),
}

/// Start arguments of [`InfraSupervisor`] (made by [`Infra::start`]).
pub struct InfraArgs {
    ctx: Arc<AgentTable>,
    components: Vec<Component>,
    shared: Arc<Shared>,
    fatal: watch::Sender<Option<String>>,
}

/// The supervisor actor of the infrastructure components.
pub struct InfraSupervisor;

/// State of [`InfraSupervisor`].
pub struct InfraState {
    ctx: Arc<AgentTable>,
    components: HashMap<String, Component>,
    children: HashMap<ActorId, String>,
    trackers: HashMap<String, RestartTracker>,
    shared: Arc<Shared>,
    fatal: watch::Sender<Option<String>>,
}

impl Actor for InfraSupervisor {
    type Msg = InfraMsg;
    type State = InfraState;
    type Arguments = InfraArgs;

    async fn pre_start(&self, myself: ActorRef<InfraMsg>, args: InfraArgs) -> Result<InfraState, ActorProcessingErr> {
        let mut st = InfraState {
            ctx: args.ctx,
            components: HashMap::new(),
            children: HashMap::new(),
            trackers: HashMap::new(),
            shared: args.shared,
            fatal: args.fatal,
        };
        for c in args.components {
            let cell = (c.start)(myself.get_cell()).await.map_err(|e| format!("cannot start {}: {e}", c.name))?;
            st.children.insert(cell.get_id(), c.name.clone());
            st.shared.states.write().insert(c.name.clone(), (ComponentState::Running, 0));
            st.trackers.entry(c.name.clone()).or_default().running_since = Some(Instant::now());
            st.components.insert(c.name.clone(), c);
        }
        Ok(st)
    }

    async fn post_stop(&self, myself: ActorRef<InfraMsg>, st: &mut InfraState) -> Result<(), ActorProcessingErr> {
        myself.stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
        st.children.clear();
        for (state, _) in st.shared.states.write().values_mut() {
            *state = ComponentState::Stopped;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<InfraMsg>,
        msg: InfraMsg,
        st: &mut InfraState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            InfraMsg::RestartDue(name) => {
                let Some(c) = st.components.get(&name) else { return Ok(()) };
                // Started and recorded within this handler: the new instance is
                // among the children before a failure of it (supervision events
                // go before messages, but not into a running handler) is handled.
                match (c.start)(myself.get_cell()).await {
                    Ok(cell) => st.restarted(name, cell),
                    Err(reason) => st.on_failure(&myself, &name, format!("restart failed: {reason}")),
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<InfraMsg>,
        evt: SupervisionEvent,
        st: &mut InfraState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, exit) => {
                (cell, format!("exited: {}", exit.unwrap_or_else(|| "stopped".into())))
            }
            _ => return Ok(()),
        };
        if let Some(name) = st.children.remove(&cell.get_id()) {
            st.on_failure(&myself, &name, why);
        }
        Ok(())
    }
}

impl InfraState {
    fn restarted(&mut self, name: String, cell: ActorCell) {
        self.children.insert(cell.get_id(), name.clone());
        self.trackers.entry(name.clone()).or_default().running_since = Some(Instant::now());
        let restarts = {
            let mut states = self.shared.states.write();
            let entry = states.entry(name.clone()).or_insert((ComponentState::Running, 0));
            entry.0 = ComponentState::Running;
            entry.1 += 1;
            entry.1
        };
        self.ctx.metrics.infra_restarts.with_label_values(&[&name]).inc();
        self.ctx.events.emit(Event::InfraRestarted { component: name, restarts });
    }

    fn on_failure(&mut self, myself: &ActorRef<InfraMsg>, name: &str, reason: String) {
        let ctx = &self.ctx;
        ctx.events.emit(Event::InfraFailed { component: name.into(), reason: reason.clone() });
        let tracker = self.trackers.entry(name.to_string()).or_default();
        match tracker.on_failure(Instant::now(), &RestartSpec::default(), &ctx.settings.supervisor) {
            Decision::Restart(delay) => {
                self.set_state(name, ComponentState::Restarting);
                myself.send_after(delay, {
                    let name = name.to_string();
                    move || InfraMsg::RestartDue(name)
                });
            }
            Decision::GiveUp { restarts, within_secs } => {
                self.set_state(name, ComponentState::Fatal);
                let why = format!(
                    "{name} exceeded its restart intensity ({restarts} restarts within {within_secs} s); last failure: {reason}"
                );
                tracing::error!(component = name, "{why}; the daemon stops");
                ctx.events.emit(Event::InfraFatal { component: name.into(), reason: why.clone() });
                self.fatal.send_replace(Some(why));
            }
        }
    }

    fn set_state(&self, name: &str, state: ComponentState) {
        self.shared.states.write().entry(name.to_string()).or_insert((state, 0)).0 = state;
    }
}

/// Handle on the running infrastructure supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Infra {
    actor: ActorRef<InfraMsg>,
    shared: Arc<Shared>,
    faults: Arc<BTreeMap<String, FaultFn>>,
    fatal: watch::Receiver<Option<String>>,
    ctx: Arc<AgentTable>,
}

impl Infra {
    /// Starts the supervisor and `components` in order.
    ///
    /// # Errors
    /// A component that cannot start, or the supervisor's name is taken.
    pub async fn start(ctx: Arc<AgentTable>, components: Vec<Component>) -> anyhow::Result<Infra> {
        let shared = Arc::new(Shared::default());
        let faults = components.iter().map(|c| (c.name.clone(), c.fault.clone())).collect();
        let (tx, fatal) = watch::channel(None);
        let args = InfraArgs { ctx: ctx.clone(), components, shared: shared.clone(), fatal: tx };
        let (actor, _) = Actor::spawn(Some(ctx.actor_name("agentvisor:infra")), InfraSupervisor, args)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the infrastructure: {e}"))?;
        Ok(Infra { actor, shared, faults: Arc::new(faults), fatal, ctx })
    }

    /// Whether `name` is an infrastructure component.
    pub fn has(&self, name: &str) -> bool {
        self.faults.contains_key(name)
    }

    /// `{"<component>": {"state", "restarts"}}`.
    pub fn status(&self) -> Value {
        let states = self.shared.states.read();
        states.iter().map(|(n, (s, r))| (n.clone(), json!({"state": s.as_str(), "restarts": r}))).collect()
    }

    /// Makes a component fail (tests; needs `testing.fault_injection: true`).
    ///
    /// # Errors
    /// `not_implemented` when fault injection is off; `agent_not_running`
    /// while the component restarts; `unknown_agent` for another name.
    pub fn inject_fault(&self, name: &str, fault: Fault) -> Result<(), TaskError> {
        if !self.ctx.settings.testing.fault_injection {
            return Err(TaskError::new(ErrorCode::NotImplemented, "fault injection is off (testing.fault_injection)"));
        }
        let Some(inject) = self.faults.get(name) else {
            return Err(TaskError::new(ErrorCode::UnknownAgent, format!("no infrastructure component {name}")));
        };
        let running = self.shared.states.read().get(name).is_some_and(|(s, _)| *s == ComponentState::Running);
        if running && inject(fault) {
            Ok(())
        } else {
            Err(TaskError::new(ErrorCode::AgentNotRunning, format!("{name} is not running (restarting)")))
        }
    }

    /// Resolves when a component exceeded its restart intensity, with why.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops every component (shutdown: no restarts).
    pub async fn stop(&self) {
        let _ = self.actor.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
    }
}
