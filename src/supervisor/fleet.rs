//! `Fleet`: the handle on one running supervision tree — boot in waves,
//! start/stop/restart agents, send them tasks, stop everything in reverse
//! dependency order.
//!
//! Where it sits: built by the composition root (`daemon`) and by tests;
//! used by the HTTP endpoints, the task bus and the admin agents. Agents see
//! it through the narrow [`Peers`] trait. Cheap to clone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use ractor::{Actor, ActorCell, ActorRef, rpc::CallResult};

use crate::config::spec::AgentSpec;
use tokio::sync::Semaphore;

use super::agent::{AgentMsg, Fault, StartError};
use super::group::{GroupArgs, GroupMsg, GroupSupervisor, SpawnAgent, StartResult};
use super::lazy::{LazyLoader, Starts};
use super::root::{RootMsg, RootSupervisor};
use super::state::AgentState;
use super::table::AgentTable;
use crate::core::{ErrorCode, Event, Task, TaskError, TaskReply};

/// Errors of the fleet's own machinery (not of one agent).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A supervisor actor could not be spawned (name taken: another fleet
    /// runs in this process).
    #[error("cannot start supervisor {name}: {reason}")]
    Spawn {
        /// The supervisor.
        name: String,
        /// ractor's error.
        reason: String,
    },
}

/// What boot did.
#[derive(Debug, Clone, Default)]
pub struct BootReport {
    /// Agents running after boot.
    pub running: Vec<String>,
    /// Agents that cannot run here, with the reason.
    pub unavailable: Vec<(String, String)>,
    /// Agents whose start failed (they are in backoff or fatal), with the error.
    pub failed: Vec<(String, String)>,
    /// Wall time of the boot.
    pub elapsed: Duration,
}

/// Handle on a running fleet.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<AgentTable>,
    root: ActorRef<RootMsg>,
    /// Set once, right after the group supervisors are spawned (they get the
    /// fleet handle to give their agents).
    groups: OnceLock<BTreeMap<String, ActorRef<GroupMsg>>>,
    lazy: LazyLoader,
}

impl Fleet {
    /// Spawns the root supervisor and one group supervisor per group of the
    /// plan in `table`; agents are spawned through `factory`. Agents stay
    /// `dormant` until [`Fleet::boot`].
    ///
    /// # Errors
    /// [`FleetError::Spawn`] when a supervisor name is already registered.
    pub async fn start(ctx: Arc<AgentTable>, factory: Arc<dyn AgentFactory>) -> Result<Fleet, FleetError> {
        let spawn_err =
            |name: &str, e: ractor::SpawnErr| FleetError::Spawn { name: name.into(), reason: e.to_string() };
        let (root, _) = Actor::spawn(Some(ctx.actor_name("agentvisor")), RootSupervisor, ctx.clone())
            .await
            .map_err(|e| spawn_err("agentvisor", e))?;
        let fleet = Fleet {
            inner: Arc::new(Inner { ctx: ctx.clone(), root, groups: OnceLock::new(), lazy: LazyLoader::default() }),
        };
        let spawn: SpawnAgent = {
            let fleet = fleet.clone();
            Arc::new(move |spec, deadline, supervisor| {
                let (factory, fleet) = (factory.clone(), fleet.clone());
                Box::pin(async move { factory.spawn(spec, fleet, deadline, supervisor).await })
            })
        };
        let boot_order: Vec<String> = ctx.catalog.waves(&ctx.plan.agents).into_iter().flatten().collect();
        let mut groups = BTreeMap::new();
        for (group, _) in ctx.plan.by_group(&ctx.catalog) {
            let members =
                boot_order.iter().filter_map(|a| ctx.catalog.get(a)).filter(|s| s.group == group).cloned().collect();
            let strategy = ctx.catalog.groups.get(&group).map(|g| g.strategy).unwrap_or_default();
            let args = GroupArgs {
                name: group.clone(),
                strategy,
                members,
                ctx: ctx.clone(),
                root: fleet.inner.root.clone(),
                spawn: spawn.clone(),
            };
            let name = ctx.actor_name(&format!("group:{group}"));
            let (g, _) = Actor::spawn_linked(Some(name.clone()), GroupSupervisor, args, fleet.inner.root.get_cell())
                .await
                .map_err(|e| spawn_err(&name, e))?;
            groups.insert(group, g);
        }
        // The only place that sets it, right after creating it.
        let _ = fleet.inner.groups.set(groups);
        Ok(fleet)
    }

    /// The agent table (states, records, settings, catalog, plan, events, metrics).
    pub fn ctx(&self) -> &Arc<AgentTable> {
        &self.inner.ctx
    }

    fn groups(&self) -> impl Iterator<Item = &ActorRef<GroupMsg>> {
        self.inner.groups.get().into_iter().flat_map(|g| g.values())
    }

    /// Starts the boot set: each agent as soon as its own dependencies
    /// have started (the waves of `check` are the dependency levels, but an
    /// agent does not wait for unrelated agents of the previous level), up to
    /// `startup.parallel_starts` starts at once. A failed essential agent goes
    /// through its restart policy; boot goes on.
    pub async fn boot(&self) -> BootReport {
        let ctx = self.ctx();
        let t0 = Instant::now();
        let limit = Semaphore::new(ctx.plan.startup.parallel_starts.max(1));
        let results = parking_lot::Mutex::new(Vec::new());
        let order: Vec<&String> = ctx.plan.waves.iter().flatten().collect();
        let mut started: BTreeMap<&str, Shared<BoxFuture<'_, ()>>> = BTreeMap::new();
        for agent in order {
            let deps: Vec<Shared<BoxFuture<'_, ()>>> = ctx
                .catalog
                .get(agent)
                .map(|s| s.dependencies.iter().filter_map(|d| started.get(d.as_str()).cloned()).collect())
                .unwrap_or_default();
            let (limit, results) = (&limit, &results);
            let start = async move {
                join_all(deps).await;
                let _permit = limit.acquire().await;
                let r = self.start_agent(agent, None, true, false).await;
                results.lock().push((agent.clone(), r));
            };
            started.insert(agent.as_str(), start.boxed().shared());
        }
        join_all(started.into_values()).await;
        let mut report = BootReport::default();
        for (agent, result) in results.into_inner() {
            match result {
                Ok(()) => report.running.push(agent),
                Err(StartError::Unavailable { reason, .. }) => report.unavailable.push((agent, reason)),
                Err(e) => report.failed.push((agent, e.to_string())),
            }
        }
        report.running.sort();
        report.elapsed = t0.elapsed();
        ctx.events.emit(Event::FleetBooted {
            profile: ctx.plan.name.clone(),
            running: report.running.len(),
            unavailable: report.unavailable.len(),
            failed: report.failed.len(),
            dormant: ctx.plan.dormant.len(),
            boot_ms: report.elapsed.as_secs_f64() * 1e3,
        });
        report
    }

    fn group_of(&self, agent: &str) -> Result<&ActorRef<GroupMsg>, StartError> {
        let ctx = self.ctx();
        if !ctx.plan.agents.contains(agent) {
            return Err(StartError::UnknownAgent(agent.to_string()));
        }
        ctx.catalog
            .get(agent)
            .and_then(|s| self.inner.groups.get().and_then(|g| g.get(&s.group)))
            .ok_or_else(|| StartError::UnknownAgent(agent.to_string()))
    }

    /// Starts one agent (its dependencies must be running already; see
    /// [`Fleet::ensure`] for the on-demand path). Answers when it is running.
    ///
    /// # Errors
    /// The agent's [`StartError`].
    pub(crate) async fn start_agent(
        &self,
        agent: &str,
        deadline: Option<Instant>,
        restart_on_failure: bool,
        reset: bool,
    ) -> StartResult {
        let group = self.group_of(agent)?;
        let timeout = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            None => Duration::from_secs_f64(self.ctx().plan.startup.timeout_seconds.max(1.0)),
        };
        let agent_name = agent.to_string();
        let result = group
            .call(
                |reply| GroupMsg::Start { agent: agent_name, deadline, restart_on_failure, reset, reply },
                Some(timeout),
            )
            .await;
        match result {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(StartError::Timeout { agent: agent.into(), secs: timeout.as_secs_f64() }),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(StartError::Failed { agent: agent.into(), reason: "its group supervisor is not running".into() })
            }
        }
    }

    /// Stops one agent on purpose, leaving it in `target` (`stopped`, or
    /// `dormant` for a rolled-back on-demand start).
    pub async fn stop_agent(&self, agent: &str, target: AgentState, reason: &str) -> Result<(), StartError> {
        let group = self.group_of(agent)?;
        let timeout = Duration::from_secs_f64(self.ctx().settings.supervisor.shutdown_timeout_secs + 2.0);
        let (agent_name, reason) = (agent.to_string(), reason.to_string());
        match group.call(|reply| GroupMsg::Stop { agent: agent_name, target, reason, reply }, Some(timeout)).await {
            Ok(CallResult::Success(())) => Ok(()),
            _ => Err(StartError::Failed { agent: agent.into(), reason: "stop did not finish in time".into() }),
        }
    }

    /// Operator restart: stops the agent if it runs, forgets its restart
    /// intensity (a `fatal` agent comes back), and starts it (dependencies
    /// included, as an on-demand start).
    ///
    /// # Errors
    /// The start's [`StartError`].
    pub async fn restart_agent(&self, agent: &str) -> StartResult {
        self.group_of(agent)?;
        self.stop_agent(agent, AgentState::Stopped, "operator restart").await?;
        self.start_agent(agent, None, true, true).await
    }

    /// Makes sure `agent` runs, starting it and its missing dependencies on
    /// demand within the start SLA (single flight). See [`LazyLoader`].
    ///
    /// # Errors
    /// `start_timeout` past the SLA (the partial start rolled back), or the
    /// failing agent's [`StartError`].
    pub async fn ensure(&self, agent: &str) -> StartResult {
        self.inner.lazy.ensure(self, agent).await
    }

    /// The agent a task goes to: `agent` when given (it must be in the
    /// profile), else the agent whose `handles` has `task_type`, else
    /// `bus.default_agent`. The bus dispatcher and AsyncProcessor's jobs
    /// resolve through here.
    ///
    /// # Errors
    /// `unknown_agent` (no such agent, or not in the profile),
    /// `unknown_task_type` (nobody handles it, or its agent is not in the profile).
    pub fn resolve(&self, agent: Option<&str>, task_type: Option<&str>) -> Result<String, TaskError> {
        let ctx = self.ctx();
        let in_plan = |a: &str| ctx.plan.agents.contains(a);
        if let Some(agent) = agent {
            return if in_plan(agent) {
                Ok(agent.to_string())
            } else if ctx.catalog.get(agent).is_some() {
                Err(TaskError::new(
                    ErrorCode::UnknownAgent,
                    format!("agent {agent} is not in profile {}", ctx.plan.name),
                ))
            } else {
                Err(TaskError::new(ErrorCode::UnknownAgent, format!("no agent named {agent}")))
            };
        }
        let task_type = task_type.unwrap_or_default();
        match ctx.catalog.handlers.get(task_type) {
            Some(agent) if in_plan(agent) => Ok(agent.clone()),
            Some(agent) => Err(TaskError::new(
                ErrorCode::UnknownTaskType,
                format!(
                    "task type {task_type} is handled by {agent}, which profile {} does not include",
                    ctx.plan.name
                ),
            )),
            None => match &ctx.settings.bus.default_agent {
                Some(d) if in_plan(d) => Ok(d.clone()),
                _ => Err(TaskError::new(ErrorCode::UnknownTaskType, format!("no agent handles task type {task_type}"))),
            },
        }
    }

    /// Sends `task` to `agent`, starting it on demand first when it is
    /// dormant, stopped or failed (or stopping: the start waits for the stop,
    /// so a task arriving during an operator restart is served by the new
    /// instance); waits for the answer until the task's deadline (default
    /// `tasks.call_timeout_secs`).
    pub async fn call(&self, agent: &str, task: Task) -> TaskReply {
        let ctx = self.ctx();
        match ctx.state(agent) {
            None => return Err(TaskError::new(ErrorCode::UnknownAgent, format!("no agent {agent} in this run"))),
            Some(AgentState::Running) => {}
            Some(AgentState::Unavailable) => {
                let reason = ctx.record(agent).and_then(|r| r.reason).unwrap_or_default();
                return Err(TaskError::new(ErrorCode::AgentUnavailable, format!("{agent} is unavailable: {reason}")));
            }
            Some(AgentState::Fatal) => return Err(StartError::Fatal { agent: agent.into() }.to_task_error()),
            // Stopping (an operator restart, say): the start waits for the stop.
            Some(_) => self.ensure(agent).await.map_err(|e| e.to_task_error())?,
        }
        let Some(actor) = ctx.agent_ref(agent) else {
            return Err(TaskError::new(ErrorCode::AgentNotRunning, format!("{agent} is not running")));
        };
        let timeout = task
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| ctx.settings.tasks.call_timeout());
        match actor.call(|reply| AgentMsg::Task(task, reply), Some(timeout)).await {
            Ok(CallResult::Success(reply)) => reply,
            Ok(CallResult::Timeout) => Err(TaskError::new(
                ErrorCode::DeadlineExceeded,
                format!("{agent} did not answer within {:.3} s", timeout.as_secs_f64()),
            )),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(TaskError::new(ErrorCode::AgentFailed, format!("{agent} stopped before answering")))
            }
        }
    }

    /// Injects a fault into a running agent (tests; needs
    /// `testing.fault_injection: true`).
    ///
    /// # Errors
    /// `not_implemented` when fault injection is off; `agent_not_running`.
    pub fn inject_fault(&self, agent: &str, fault: Fault) -> Result<(), TaskError> {
        if !self.ctx().settings.testing.fault_injection {
            return Err(TaskError::new(ErrorCode::NotImplemented, "fault injection is off (testing.fault_injection)"));
        }
        let actor = self
            .ctx()
            .agent_ref(agent)
            .ok_or_else(|| TaskError::new(ErrorCode::AgentNotRunning, format!("{agent} is not running")))?;
        actor
            .cast(AgentMsg::InjectFault(fault))
            .map_err(|_| TaskError::new(ErrorCode::AgentNotRunning, format!("{agent} is not running")))
    }

    /// Stops every agent in reverse dependency order (each within
    /// `supervisor.shutdown_timeout_secs`), then the supervisors. Whatever is
    /// still alive at `deadline` is killed (its child processes with it).
    pub async fn shutdown(&self, deadline: Duration) {
        let ctx = self.ctx();
        ctx.begin_shutdown();
        self.inner.lazy.abort_all();
        let t0 = Instant::now();
        let live: BTreeSet<String> = ctx
            .snapshot()
            .into_iter()
            .filter(|r| !matches!(r.state, AgentState::Dormant | AgentState::Stopped | AgentState::Unavailable))
            .map(|r| r.name)
            .collect();
        let waves = ctx.catalog.waves(&live);
        let ordered = async {
            for wave in waves.iter().rev() {
                join_all(wave.iter().map(|a| self.stop_agent(a, AgentState::Stopped, "shutdown"))).await;
            }
        };
        if tokio::time::timeout(deadline, ordered).await.is_err() {
            tracing::warn!(deadline_secs = deadline.as_secs_f64(), "shutdown deadline passed; killing the rest");
        }
        for group in self.groups() {
            let _ = group.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
        }
        let _ = self.inner.root.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
        ctx.events.emit(Event::FleetStopped { stop_ms: t0.elapsed().as_secs_f64() * 1e3 });
    }
}

/// Spawns agent actors for the supervisors (implemented by the agent layer,
/// handed to [`Fleet::start`] by the composition root).
#[async_trait]
pub trait AgentFactory: Send + Sync + 'static {
    /// Spawns the actor of `spec` linked to `supervisor` under its
    /// registered name and runs its start hook; answers when it is running.
    ///
    /// # Errors
    /// The [`StartError`] of the start hook, or [`StartError::Failed`] when
    /// ractor refuses the spawn (the name is still registered).
    async fn spawn(
        &self,
        spec: Arc<AgentSpec>,
        fleet: Fleet,
        deadline: Option<Instant>,
        supervisor: ActorCell,
    ) -> Result<ActorRef<AgentMsg>, StartError>;
}

/// What an agent may do with the other agents: ask one, make sure one runs,
/// read one's state. [`Fleet`] implements it; behaviours get an
/// `Arc<dyn Peers>` unless they administer the fleet.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Sends `task` to `agent` (starting it on demand) and waits for the
    /// answer until the task's deadline (else `tasks.call_timeout_secs`).
    async fn call(&self, agent: &str, task: Task) -> TaskReply;
    /// Starts `agent` and its dependencies on demand within the start SLA.
    async fn ensure(&self, agent: &str) -> Result<(), StartError>;
    /// The state of `agent`; `None` when it is not in this run.
    fn state(&self, agent: &str) -> Option<AgentState>;
}

impl Starts for Fleet {
    fn table(&self) -> &Arc<AgentTable> {
        &self.inner.ctx
    }

    async fn start_one(&self, agent: &str, deadline: Instant) -> StartResult {
        self.start_agent(agent, Some(deadline), false, false).await
    }

    async fn stop_one(&self, agent: &str, target: AgentState, reason: &str) {
        // A failed stop leaves the agent where it is; the start already failed.
        let _ = self.stop_agent(agent, target, reason).await;
    }

    fn flights(&self) -> &LazyLoader {
        &self.inner.lazy
    }
}

#[async_trait]
impl Peers for Fleet {
    async fn call(&self, agent: &str, task: Task) -> TaskReply {
        Fleet::call(self, agent, task).await
    }

    async fn ensure(&self, agent: &str) -> Result<(), StartError> {
        Fleet::ensure(self, agent).await
    }

    fn state(&self, agent: &str) -> Option<AgentState> {
        self.inner.ctx.state(agent)
    }
}
