//! `AgentActor`: the actor every catalog agent runs as.
//!
//! Messages ([`AgentMsg`]): `Task` (answer one task, after the policy gate
//! when its type is checked: [`super::policy`]), `Checked` (a task the
//! validator agent allowed), `DependencyRestarted`
//! (a dependency came back as a new actor: re-resolve it by name),
//! `InjectFault` (tests only, with `testing.fault_injection: true`), and
//! `ChildExited` (from the process watcher).
//!
//! State: the spec, the agent table (settings, metrics), and the runtime:
//! the behaviour of a builtin or llm agent, the child process of a process
//! agent.
//!
//! Failure: a panic or an error in a handler ends the actor with
//! `ActorFailed`; a process agent's child exiting non-zero does the same. Its
//! group supervisor then applies the restart policy. `pre_start` is the start
//! hook: the agent is `running` only when it returned (for a process agent,
//! after the readiness signal). A failed start returns a [`StartError`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use tokio::task::JoinSet;

use super::behaviour::Behaviour;
use super::policy::Gate;
use super::process::ProcessChild;
use super::services::{BehaviourFactory, Services};
use crate::config::spec::{AgentSpec, RuntimeSpec};
use crate::core::{ErrorCode, Task, TaskError, TaskReply};
use crate::supervisor::agent::panic_message;
use crate::supervisor::{AgentFactory, AgentMsg, AgentTable, Fault, Fleet, StartError};

/// Start arguments of [`AgentActor`].
pub struct AgentArgs {
    /// The agent's spec.
    pub(crate) spec: Arc<AgentSpec>,
    /// The fleet (peers for the behaviour, the agent table).
    pub(crate) fleet: Fleet,
    /// The daemon's services.
    pub(crate) services: Arc<Services>,
    /// The behaviour registered for it by the composition root, if any.
    pub(crate) registered: Option<Arc<dyn Behaviour>>,
    /// The start must finish by then (the start SLA), if set.
    pub(crate) deadline: Option<Instant>,
}

/// State of a running agent.
pub struct AgentState {
    spec: Arc<AgentSpec>,
    /// The daemon's services (the resource ledger, released at stop).
    services: Arc<Services>,
    ctx: Arc<AgentTable>,
    /// The fleet (the policy's validator is asked through it).
    fleet: Fleet,
    child: Option<ProcessChild>,
    builtin: Option<Arc<dyn Behaviour>>,
    /// Tasks being answered by the builtin behaviour (aborted on stop).
    tasks: JoinSet<()>,
}

/// The actor every agent runs as.
pub struct AgentActor;

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, args: AgentArgs) -> Result<AgentState, ActorProcessingErr> {
        let AgentArgs { spec, fleet, services, registered, deadline } = args;
        let ctx = fleet.ctx().clone();
        let child = match &spec.runtime {
            RuntimeSpec::Process { .. } => {
                super::resources::reserve(&spec, &services).await?;
                match ProcessChild::start(&spec, &ctx, myself, deadline).await {
                    Ok(child) => Some(child),
                    Err(e) => {
                        super::resources::release(&spec, &services);
                        return Err(e.into());
                    }
                }
            }
            RuntimeSpec::Builtin { .. } | RuntimeSpec::Llm { .. } => None,
        };
        let builtin = match registered {
            Some(b) => Some(b),
            None => create(&spec, &services, &fleet)?,
        };
        if let Some(b) = &builtin {
            b.start().await?;
        }
        Ok(AgentState { spec, services, ctx, fleet, child, builtin, tasks: JoinSet::new() })
    }

    async fn post_stop(&self, _myself: ActorRef<AgentMsg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        state.tasks.abort_all();
        if let Some(b) = &state.builtin {
            b.stop().await;
        }
        if let Some(child) = state.child.as_mut() {
            child.stop(state.ctx.settings.supervisor.shutdown_timeout_secs).await;
            super::resources::release(&state.spec, &state.services);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        while state.tasks.try_join_next().is_some() {}
        match msg {
            AgentMsg::Task(task, reply) => self.gate(&myself, state, task, reply),
            AgentMsg::Checked(task, reply) => self.task(&myself, state, *task, reply),
            AgentMsg::TaskPanicked { task_id, message } => {
                return Err(format!("task {task_id} panicked: {message}").into());
            }
            AgentMsg::DependencyRestarted { dependency } => {
                tracing::debug!(agent = %state.spec.name, dependency, "dependency restarted; re-resolving by name");
            }
            AgentMsg::InjectFault(fault) => {
                if !state.ctx.settings.testing.fault_injection {
                    tracing::warn!(agent = %state.spec.name, "fault injection requested but testing.fault_injection is off");
                    return Ok(());
                }
                match fault {
                    Fault::Panic => panic!("fault injection: {} panics in its handler", state.spec.name),
                    Fault::Error => {
                        return Err(format!("fault injection: {} fails in its handler", state.spec.name).into());
                    }
                }
            }
            AgentMsg::ChildExited { success, status } => {
                if let Some(child) = state.child.as_mut() {
                    child.mark_exited();
                }
                if success {
                    myself.stop(Some(format!("child exited normally ({status})")));
                } else {
                    return Err(format!("child process exited: {status}").into());
                }
            }
        }
        Ok(())
    }
}

impl AgentActor {
    /// Runs `task` through the policy gate when its type is checked: the
    /// rules, then `policy.undecided`; a `model` decision is asked in the
    /// background and an allowed task comes back as `Checked`. A denied task
    /// is answered `denied_by_policy` and never reaches the agent.
    fn gate(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState, task: Task, reply: RpcReplyPort<TaskReply>) {
        let policy = state.services.policy.clone();
        if !policy.checks(&state.spec, &task.task_type) {
            return self.task(myself, state, task, reply);
        }
        match policy.check(&state.ctx, &state.spec.name, &task) {
            Gate::Pass => self.task(myself, state, task, reply),
            Gate::Refused(err) => {
                let _ = reply.send(Err(err));
            }
            Gate::AskModel => {
                let (ctx, fleet, me, agent) =
                    (state.ctx.clone(), state.fleet.clone(), myself.clone(), state.spec.name.clone());
                state.tasks.spawn(async move {
                    let cancel = task.cancel.clone();
                    let cancelled = || TaskError::new(ErrorCode::Cancelled, format!("task {} was cancelled", task.id));
                    let verdict = tokio::select! {
                        v = policy.ask_model(&ctx, &fleet, &agent, &task) => v,
                        _ = cancel.cancelled() => Err(cancelled()),
                    };
                    match verdict {
                        // Should the actor be gone, the reply port drops with the message: the caller learns it.
                        Ok(()) => drop(me.cast(AgentMsg::Checked(Box::new(task), reply))),
                        Err(err) => drop(reply.send(Err(err))),
                    }
                });
            }
        }
    }

    fn task(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState, task: Task, reply: RpcReplyPort<TaskReply>) {
        let spec = &state.spec;
        if let Some(b) = &state.builtin {
            let (b, ctx, me, agent) = (b.clone(), state.ctx.clone(), myself.clone(), spec.name.clone());
            state.tasks.spawn(async move {
                let (id, cancel) = (task.id.clone(), task.cancel.clone());
                let work = std::panic::AssertUnwindSafe(b.reply(task)).catch_unwind();
                let answer = tokio::select! {
                    r = work => match r {
                        Ok(answer) => answer,
                        Err(panic) => {
                            let message = panic_message(&*panic);
                            let _ = me.cast(AgentMsg::TaskPanicked { task_id: id.clone(), message: message.clone() });
                            Err(TaskError::new(ErrorCode::Internal, format!("{agent} failed on task {id}: {message}")))
                        }
                    },
                    _ = cancel.cancelled() => Err(TaskError::new(ErrorCode::Cancelled, format!("task {id} was cancelled"))),
                };
                let outcome = match &answer {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                ctx.metrics.tasks.with_label_values(&[&agent, outcome]).inc();
                let _ = reply.send(answer);
            });
            return;
        }
        match (&spec.runtime, state.child.as_ref()) {
            (RuntimeSpec::Process { .. }, Some(child)) => child.request(task, reply),
            (runtime, _) => {
                let kind = runtime.kind().as_str();
                let err = TaskError::new(
                    ErrorCode::NotImplemented,
                    format!("{} ({kind} runtime) has no task behaviour yet", spec.name),
                );
                state.ctx.metrics.tasks.with_label_values(&[&spec.name, err.code.as_str()]).inc();
                // The caller may have given up (timeout); nothing to do then.
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// The behaviour of `spec` by its runtime: a builtin behaviour (when one is
/// built), the llm runtime, or none (process agents).
///
/// # Errors
/// [`StartError::Failed`] when an llm spec's `output_schema` is invalid.
fn create(spec: &Arc<AgentSpec>, services: &Services, fleet: &Fleet) -> Result<Option<Arc<dyn Behaviour>>, StartError> {
    match &spec.runtime {
        RuntimeSpec::Builtin { .. } => Ok(super::builtin::behaviour_for(spec.behaviour_name(), services, fleet)),
        RuntimeSpec::Llm { .. } => match super::llm::LlmAgent::new(spec.clone(), services, fleet) {
            Ok(b) => Ok(b.map(|b| Arc::new(b) as Arc<dyn Behaviour>)),
            Err(reason) => Err(StartError::Failed { agent: spec.name.clone(), reason }),
        },
        RuntimeSpec::Process { .. } => Ok(None),
    }
}

/// Spawns agent actors for the supervisors: the agent layer's [`AgentFactory`].
pub struct Spawner {
    services: Arc<Services>,
    registered: BTreeMap<String, BehaviourFactory>,
}

impl Spawner {
    /// A spawner giving agents `services`.
    pub fn new(services: Arc<Services>) -> Spawner {
        Spawner { services, registered: BTreeMap::new() }
    }

    /// Registers the behaviour of the builtin behaviour name `name`
    /// (the agent name unless its spec names one).
    pub fn register(&mut self, name: &str, factory: BehaviourFactory) {
        self.registered.insert(name.to_string(), factory);
    }
}

#[async_trait]
impl AgentFactory for Spawner {
    async fn spawn(
        &self,
        spec: Arc<AgentSpec>,
        fleet: Fleet,
        deadline: Option<Instant>,
        supervisor: ActorCell,
    ) -> Result<ActorRef<AgentMsg>, StartError> {
        let name = spec.name.clone();
        let actor_name = fleet.ctx().actor_name(&name);
        let registered = self.registered.get(spec.behaviour_name()).map(|f| f(&fleet));
        let args = AgentArgs { spec, fleet, services: self.services.clone(), registered, deadline };
        match Actor::spawn_linked(Some(actor_name), AgentActor, args, supervisor).await {
            Ok((actor, _join)) => Ok(actor),
            Err(SpawnErr::StartupFailed(err)) => match err.downcast::<StartError>() {
                Ok(e) => Err(*e),
                Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
            },
            Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
        }
    }
}
