//! `AgentActor`: the actor every catalog agent runs as.
//!
//! Messages ([`AgentMsg`]): `Task` (answer one task), `DependencyRestarted`
//! (a dependency came back as a new actor: re-resolve it by name),
//! `InjectFault` (tests only, with `testing.fault_injection: true`), and
//! `ChildExited` (from the process watcher).
//!
//! State: the spec, the shared fleet context, and the runtime — nothing for
//! builtin/llm agents yet, the child process for process agents.
//!
//! Failure: a panic or an error in a handler ends the actor with
//! `ActorFailed`; a process agent's child exiting non-zero does the same. Its
//! group supervisor then applies the restart policy. `pre_start` is the start
//! hook: the agent is `running` only when it returned (for a process agent,
//! after the readiness signal). A failed start returns a [`StartError`].

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use tokio::task::JoinSet;

use super::builtin::{self, Behaviour};
use super::process::ProcessChild;
use super::task::{ErrorCode, Task, TaskError, TaskReply};
use crate::config::spec::{AgentSpec, RuntimeSpec};
use crate::supervisor::context::FleetCtx;

/// Why an agent did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    /// Cannot run here: missing program, not configured. No restart loop.
    #[error("{agent} is unavailable: {reason}")]
    Unavailable {
        /// The agent.
        agent: String,
        /// Why (names the program or setting).
        reason: String,
    },
    /// Did not become ready before the start deadline (the start SLA).
    #[error("{agent} did not start within {secs:.3} s")]
    Timeout {
        /// The agent.
        agent: String,
        /// The time it had, seconds.
        secs: f64,
    },
    /// The start hook failed (program exited before ready, readiness check failed, ...).
    #[error("{agent} failed to start: {reason}")]
    Failed {
        /// The agent.
        agent: String,
        /// What failed.
        reason: String,
    },
    /// The agent is `fatal` and needs an operator restart.
    #[error("{agent} is fatal: restart intensity exceeded; restart it explicitly")]
    Fatal {
        /// The agent.
        agent: String,
    },
    /// No agent of that name in this run.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// The start was stopped (rollback or stop request) before it finished.
    #[error("start of {agent} was cancelled")]
    Cancelled {
        /// The agent.
        agent: String,
    },
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl StartError {
    /// The task error code this start error answers a task with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StartError::Unavailable { .. } => ErrorCode::AgentUnavailable,
            StartError::Timeout { .. } => ErrorCode::StartTimeout,
            StartError::Failed { .. } | StartError::Cancelled { .. } => ErrorCode::StartFailed,
            StartError::Fatal { .. } => ErrorCode::AgentFatal,
            StartError::UnknownAgent(_) => ErrorCode::UnknownAgent,
            StartError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }

    /// As a task error.
    pub fn to_task_error(&self) -> TaskError {
        TaskError::new(self.code(), self.to_string())
    }
}

/// A fault to inject (crash tests; needs `testing.fault_injection: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Panic inside the message handler.
    Panic,
    /// Return an error from the message handler.
    Error,
}

/// Messages of [`AgentActor`].
pub enum AgentMsg {
    /// Answer one task.
    Task(Task, RpcReplyPort<TaskReply>),
    /// A dependency restarted (it is a new actor now; re-resolve it by name).
    DependencyRestarted {
        /// The dependency's name.
        dependency: String,
    },
    /// Crash on purpose (ignored unless fault injection is enabled).
    InjectFault(Fault),
    /// A builtin task handler panicked: the agent fails (and restarts).
    TaskPanicked {
        /// The task.
        task_id: String,
        /// The panic message.
        message: String,
    },
    /// The child program of a process agent exited.
    ChildExited {
        /// `true` for exit status 0.
        success: bool,
        /// Exit status as text (`exit status: 3`, `signal: 9 (SIGKILL)`).
        status: String,
    },
}

/// Start arguments of [`AgentActor`].
pub struct AgentArgs {
    /// The agent's spec.
    pub spec: Arc<AgentSpec>,
    /// Shared daemon state.
    pub ctx: Arc<FleetCtx>,
    /// The start must finish by then (the start SLA), if set.
    pub deadline: Option<Instant>,
}

/// State of a running agent.
pub struct AgentState {
    spec: Arc<AgentSpec>,
    ctx: Arc<FleetCtx>,
    child: Option<ProcessChild>,
    builtin: Option<Arc<dyn Behaviour>>,
    /// Tasks being answered by the builtin behaviour (aborted on stop).
    tasks: JoinSet<()>,
    /// Dependency restarts seen (re-resolutions done).
    dependency_restarts: u64,
}

/// The actor every agent runs as.
pub struct AgentActor;

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, args: AgentArgs) -> Result<AgentState, ActorProcessingErr> {
        let AgentArgs { spec, ctx, deadline } = args;
        let child = match &spec.runtime {
            RuntimeSpec::Process { .. } => Some(ProcessChild::start(&spec, &ctx, myself, deadline).await?),
            RuntimeSpec::Builtin { .. } | RuntimeSpec::Llm { .. } => None,
        };
        let builtin = builtin::create(&spec, &ctx)?;
        if let Some(b) = &builtin {
            b.start().await?;
        }
        Ok(AgentState { spec, ctx, child, builtin, tasks: JoinSet::new(), dependency_restarts: 0 })
    }

    async fn post_stop(&self, _myself: ActorRef<AgentMsg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        state.tasks.abort_all();
        if let Some(b) = &state.builtin {
            b.stop().await;
        }
        if let Some(child) = state.child.as_mut() {
            child.stop(state.ctx.settings.supervisor.shutdown_timeout_secs).await;
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
            AgentMsg::Task(task, reply) => self.task(&myself, state, task, reply),
            AgentMsg::TaskPanicked { task_id, message } => {
                return Err(format!("task {task_id} panicked: {message}").into());
            }
            AgentMsg::DependencyRestarted { dependency } => {
                state.dependency_restarts += 1;
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
    fn task(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState, task: Task, reply: RpcReplyPort<TaskReply>) {
        let spec = &state.spec;
        if let Some(b) = &state.builtin {
            let (b, ctx, me, agent) = (b.clone(), state.ctx.clone(), myself.clone(), spec.name.clone());
            state.tasks.spawn(async move {
                let (id, cancel) = (task.id.clone(), task.cancel.clone());
                let work = std::panic::AssertUnwindSafe(b.handle(task)).catch_unwind();
                let answer = tokio::select! {
                    r = work => match r {
                        Ok(answer) => answer,
                        Err(panic) => {
                            let message = panic_message(&panic);
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

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Spawns the actor of `spec` under `supervisor` and runs its start hook.
///
/// # Errors
/// The [`StartError`] of the start hook, or [`StartError::Failed`] when
/// ractor refuses the spawn (name still registered).
pub async fn spawn_agent(
    spec: Arc<AgentSpec>,
    ctx: Arc<FleetCtx>,
    deadline: Option<Instant>,
    supervisor: ActorCell,
) -> Result<ActorRef<AgentMsg>, StartError> {
    let name = spec.name.clone();
    let actor_name = ctx.actor_name(&name);
    let args = AgentArgs { spec, ctx, deadline };
    match Actor::spawn_linked(Some(actor_name), AgentActor, args, supervisor).await {
        Ok((actor, _join)) => Ok(actor),
        Err(SpawnErr::StartupFailed(err)) => match err.downcast::<StartError>() {
            Ok(e) => Err(*e),
            Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
        },
        Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
    }
}
