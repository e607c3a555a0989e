//! `GroupSupervisor`: one per group; parent of the group's agent actors and
//! owner of their restart policy.
//!
//! Messages ([`GroupMsg`]): `Start` (start an agent, or join the start in
//! progress), `Stop` (stop it on purpose, to `stopped` or back to `dormant`),
//! and internal completions (`SpawnDone`, `StopDone`, `RestartDue`).
//!
//! State: the group's specs in start order, the live children by actor id,
//! a [`RestartTracker`] per agent, callers waiting for a start, and the
//! tracked tasks (starts, stops, backoff timers) — its handler never awaits a
//! start or a stop itself, so one slow agent never blocks its siblings.
//!
//! Failure of a child: the restart policy (restart type, restart intensity
//! → `fatal`, capped exponential backoff with jitter) and the group strategy
//! (`one_for_one`, `one_for_all`, `rest_for_one`) decide; dependents are told
//! when the agent comes back (`agent.dependency_restarted`) or goes fatal
//! (`agent.dependency_fatal`); a fatal agent is escalated to the root.
//! ractor's default `handle_supervisor_evt` (stop on any child exit) is
//! overridden.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::{AbortHandle, JoinSet};

use super::agent::{AgentMsg, StartError};
use super::policy::{Decision, RestartTracker};
use super::root::RootMsg;
use super::state::AgentState;
use super::table::AgentTable;
use crate::config::spec::{AgentSpec, RestartType, Strategy};
use crate::core::event::{Event, Transition};

/// Result of a start, as sent to the caller.
pub type StartResult = Result<(), StartError>;

/// Messages of [`GroupSupervisor`].
pub enum GroupMsg {
    /// Start `agent` (or wait for the start in progress); answers when it
    /// is running or the start failed.
    Start {
        /// The agent.
        agent: String,
        /// The start must finish by then (start SLA).
        deadline: Option<Instant>,
        /// Apply the restart policy when this start fails (boot: yes; on-demand: no).
        restart_on_failure: bool,
        /// Forget restart intensity first (operator restart of a fatal agent).
        reset: bool,
        /// Answer.
        reply: RpcReplyPort<StartResult>,
    },
    /// Stop `agent` on purpose and leave it in `target` (`stopped` or `dormant`).
    Stop {
        /// The agent.
        agent: String,
        /// State after the stop.
        target: AgentState,
        /// Why (kept on the record and in the event).
        reason: String,
        /// Answered when the agent has stopped.
        reply: RpcReplyPort<()>,
    },
    /// Internal: a spawn finished.
    SpawnDone {
        /// The agent.
        agent: String,
        /// The new actor, or why not.
        result: Result<ActorRef<AgentMsg>, StartError>,
        /// How long the start hook took.
        elapsed: Duration,
        /// As in `Start`.
        restart_on_failure: bool,
    },
    /// Internal: a stop finished.
    StopDone {
        /// The agent.
        agent: String,
        /// State after the stop.
        target: AgentState,
        /// Why.
        reason: String,
        /// Caller to answer.
        reply: RpcReplyPort<()>,
    },
    /// Internal: the backoff delay of a restart passed; start `batch` in order.
    RestartDue {
        /// The failed agent first, then siblings restarted with it.
        batch: Vec<String>,
    },
}

/// Start arguments of [`GroupSupervisor`].
pub struct GroupArgs {
    /// Group name.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// The group's agents in this run, in start (dependency) order.
    pub members: Vec<Arc<AgentSpec>>,
    /// The agent table.
    pub ctx: Arc<AgentTable>,
    /// The root supervisor (escalations).
    pub root: ActorRef<RootMsg>,
    /// Spawns one agent actor linked to the given supervisor.
    pub spawn: SpawnAgent,
}

/// Spawns the actor of a spec linked to a supervisor and runs its start
/// hook; made by `Fleet::start` from the composition root's factory.
pub type SpawnAgent = Arc<
    dyn Fn(
            Arc<AgentSpec>,
            Option<Instant>,
            ractor::ActorCell,
        ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, StartError>>
        + Send
        + Sync,
>;

/// State of a group supervisor.
pub struct GroupState {
    name: String,
    strategy: Strategy,
    members: Vec<Arc<AgentSpec>>,
    ctx: Arc<AgentTable>,
    root: ActorRef<RootMsg>,
    spawn: SpawnAgent,
    children: HashMap<ActorId, String>,
    refs: HashMap<String, ActorRef<AgentMsg>>,
    trackers: HashMap<String, RestartTracker>,
    waiters: HashMap<String, Vec<RpcReplyPort<StartResult>>>,
    /// Start tasks in progress, by agent.
    in_flight: HashMap<String, AbortHandle>,
    /// Group restarts in progress: after the key agent is running, start these
    /// (in start order).
    batch_next: HashMap<String, Vec<String>>,
    /// Agents being stopped on purpose: their exit is not a failure.
    intentional: HashMap<String, (AgentState, String)>,
    /// Agents whose next `running` is a restart.
    restarting: HashSet<String>,
    /// Starts asked for while the agent was stopping: run when the stop is done.
    after_stop: HashMap<String, Vec<DeferredStart>>,
    tasks: JoinSet<()>,
}

/// A `Start` that waits for a stop in progress.
struct DeferredStart {
    deadline: Option<Instant>,
    restart_on_failure: bool,
    reset: bool,
    reply: RpcReplyPort<StartResult>,
}

/// The group supervisor actor.
pub struct GroupSupervisor;

impl Actor for GroupSupervisor {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupArgs;

    async fn pre_start(&self, _myself: ActorRef<GroupMsg>, a: GroupArgs) -> Result<GroupState, ActorProcessingErr> {
        Ok(GroupState {
            name: a.name,
            strategy: a.strategy,
            members: a.members,
            ctx: a.ctx,
            root: a.root,
            spawn: a.spawn,
            children: HashMap::new(),
            refs: HashMap::new(),
            trackers: HashMap::new(),
            waiters: HashMap::new(),
            in_flight: HashMap::new(),
            batch_next: HashMap::new(),
            intentional: HashMap::new(),
            restarting: HashSet::new(),
            after_stop: HashMap::new(),
            tasks: JoinSet::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<GroupMsg>, state: &mut GroupState) -> Result<(), ActorProcessingErr> {
        state.tasks.abort_all();
        // Agents still alive here were not stopped in order (deadline passed):
        // kill them; dropping their state SIGKILLs any child process group.
        for (_, actor) in state.refs.drain() {
            actor.kill();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GroupMsg>,
        msg: GroupMsg,
        st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        while st.tasks.try_join_next().is_some() {}
        match msg {
            GroupMsg::Start { agent, deadline, restart_on_failure, reset, reply } => {
                st.start(&myself, agent, deadline, restart_on_failure, reset, reply)
            }
            GroupMsg::Stop { agent, target, reason, reply } => st.stop(&myself, agent, target, reason, reply),
            GroupMsg::SpawnDone { agent, result, elapsed, restart_on_failure } => {
                st.spawn_done(&myself, agent, result, elapsed, restart_on_failure)
            }
            GroupMsg::StopDone { agent, target, reason, reply } => {
                if st.ctx.state(&agent) == Some(AgentState::Stopping) {
                    st.intentional.remove(&agent);
                    st.ctx.transition(&agent, target, Transition::because(reason));
                }
                let _ = reply.send(());
                st.resume_after_stop(&myself, &agent);
            }
            GroupMsg::RestartDue { batch } => st.restart_batch(&myself, batch),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<GroupMsg>,
        evt: SupervisionEvent,
        st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(agent) = st.forget_child(cell.get_id()) {
                    match st.intentional.remove(&agent) {
                        Some((target, reason)) => {
                            st.ctx.transition(&agent, target, Transition::because(reason));
                            st.resume_after_stop(&myself, &agent);
                        }
                        None => st.on_failure(&myself, &agent, err.to_string()),
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, exit) => {
                if let Some(agent) = st.forget_child(cell.get_id()) {
                    let exit = exit.unwrap_or_else(|| "stopped".into());
                    match st.intentional.remove(&agent) {
                        Some((target, reason)) => {
                            st.ctx.transition(&agent, target, Transition::because(reason));
                            st.resume_after_stop(&myself, &agent);
                        }
                        None => {
                            let permanent = st.spec(&agent).is_some_and(|s| s.restart.kind == RestartType::Permanent);
                            if permanent {
                                st.on_failure(&myself, &agent, format!("exited: {exit}"));
                            } else {
                                st.ctx.transition(&agent, AgentState::Stopped, Transition::because(exit));
                            }
                        }
                    }
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(())
    }
}

impl GroupState {
    fn spec(&self, agent: &str) -> Option<&Arc<AgentSpec>> {
        self.members.iter().find(|s| s.name == agent)
    }

    fn forget_child(&mut self, id: ActorId) -> Option<String> {
        let agent = self.children.remove(&id)?;
        self.refs.remove(&agent);
        Some(agent)
    }

    fn start(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        agent: String,
        deadline: Option<Instant>,
        restart_on_failure: bool,
        reset: bool,
        reply: RpcReplyPort<StartResult>,
    ) {
        if self.ctx.shutting_down() {
            let _ = reply.send(Err(StartError::ShuttingDown));
            return;
        }
        if self.spec(&agent).is_none() {
            let _ = reply.send(Err(StartError::UnknownAgent(agent)));
            return;
        }
        if reset {
            self.trackers.entry(agent.clone()).or_default().reset();
        }
        match self.ctx.state(&agent) {
            Some(AgentState::Running) => {
                let _ = reply.send(Ok(()));
            }
            Some(AgentState::Starting | AgentState::Backoff) => {
                self.waiters.entry(agent).or_default().push(reply);
            }
            Some(AgentState::Fatal) if !reset => {
                let _ = reply.send(Err(StartError::Fatal { agent }));
            }
            // Reported once, no start loop: only an operator restart (`reset`) tries again.
            Some(AgentState::Unavailable) if !reset => {
                let reason = self.ctx.record(&agent).and_then(|r| r.reason).unwrap_or_default();
                let _ = reply.send(Err(StartError::Unavailable { agent, reason }));
            }
            // Waits for the stop, then starts (as a start after it would).
            Some(AgentState::Stopping) => {
                self.after_stop.entry(agent).or_default().push(DeferredStart {
                    deadline,
                    restart_on_failure,
                    reset,
                    reply,
                });
            }
            _ => {
                self.waiters.entry(agent.clone()).or_default().push(reply);
                self.spawn_start(myself, agent, deadline, restart_on_failure);
            }
        }
    }

    fn spawn_start(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        agent: String,
        deadline: Option<Instant>,
        restart_on_failure: bool,
    ) {
        let Some(spec) = self.spec(&agent).cloned() else { return };
        self.ctx.transition(&agent, AgentState::Starting, Transition::default());
        let (spawn, cell, me) = (self.spawn.clone(), myself.get_cell(), myself.clone());
        let name = agent.clone();
        let handle = self.tasks.spawn(async move {
            let t0 = Instant::now();
            let result = spawn(spec, deadline, cell).await;
            let done = GroupMsg::SpawnDone { agent: name, result, elapsed: t0.elapsed(), restart_on_failure };
            if let Err(ractor::MessagingErr::SendErr(GroupMsg::SpawnDone { result: Ok(actor), .. })) = me.cast(done) {
                // The group is gone: do not leave the new agent behind.
                actor.kill();
            }
        });
        self.in_flight.insert(agent, handle);
    }

    fn spawn_done(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        agent: String,
        result: Result<ActorRef<AgentMsg>, StartError>,
        elapsed: Duration,
        restart_on_failure: bool,
    ) {
        self.in_flight.remove(&agent);
        if result.is_err() && self.ctx.state(&agent) != Some(AgentState::Starting) {
            // Stopped (or rolled back) while starting: the stop already settled its state.
            tracing::debug!(agent, "start result after a stop ignored");
            return;
        }
        self.spawn_done_inner(myself, &agent, result, elapsed, restart_on_failure);
        if let Some(rest) = self.batch_next.remove(&agent) {
            self.continue_batch(myself, rest);
        }
    }

    fn spawn_done_inner(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        agent: &str,
        result: Result<ActorRef<AgentMsg>, StartError>,
        elapsed: Duration,
        restart_on_failure: bool,
    ) {
        let agent = agent.to_string();
        let runtime = self.spec(&agent).map(|s| s.runtime.kind().as_str()).unwrap_or("builtin");
        let metrics = &self.ctx.metrics;
        match result {
            Ok(actor) => {
                metrics.starts.with_label_values(&[&agent, "ok"]).inc();
                metrics.start_duration.with_label_values(&[runtime]).observe(elapsed.as_secs_f64());
                self.children.insert(actor.get_id(), agent.clone());
                self.refs.insert(agent.clone(), actor.clone());
                if self.ctx.state(&agent) != Some(AgentState::Starting) || self.ctx.shutting_down() {
                    // Stopped while starting: honour the stop.
                    let target = match self.ctx.state(&agent) {
                        Some(s @ (AgentState::Dormant | AgentState::Stopped)) => s,
                        _ => AgentState::Stopped,
                    };
                    self.intentional.insert(agent.clone(), (target, "stopped while starting".into()));
                    actor.stop(Some("stopped while starting".into()));
                    self.reply_waiters(&agent, Err(StartError::Cancelled { agent: agent.clone() }));
                    return;
                }
                self.trackers.entry(agent.clone()).or_default().running_since = Some(Instant::now());
                let pid = self.ctx.record(&agent).and_then(|r| r.pid);
                let details = Transition { start_ms: Some(elapsed.as_secs_f64() * 1e3), pid, ..Default::default() };
                if self.restarting.remove(&agent) {
                    self.ctx.count_restart(&agent);
                    let restarts = self.ctx.record(&agent).map(|r| r.restarts).unwrap_or(0);
                    let details = Transition { topic: "agent.restarted", restarts: Some(restarts), ..details };
                    self.ctx.transition(&agent, AgentState::Running, details);
                    self.tell_dependents(&agent, true);
                } else {
                    self.ctx.transition(&agent, AgentState::Running, details);
                }
                self.reply_waiters(&agent, Ok(()));
            }
            Err(e) => {
                let outcome = match &e {
                    StartError::Unavailable { .. } => "unavailable",
                    StartError::Timeout { .. } => "timeout",
                    _ => "failed",
                };
                metrics.starts.with_label_values(&[&agent, outcome]).inc();
                // The state first, then the waiters: a waiter (a lazy start
                // rolling back) reads it as soon as it has the error.
                match e {
                    StartError::Unavailable { ref reason, .. } => {
                        self.restarting.remove(&agent);
                        self.ctx.transition(&agent, AgentState::Unavailable, Transition::because(reason.clone()));
                        self.reply_waiters(&agent, Err(e));
                    }
                    e if restart_on_failure || self.restarting.contains(&agent) => {
                        self.reply_waiters(&agent, Err(e.clone()));
                        self.on_failure(myself, &agent, e.to_string())
                    }
                    e => {
                        self.ctx.transition(&agent, AgentState::Failed, Transition::because(e.to_string()));
                        self.reply_waiters(&agent, Err(e));
                    }
                }
            }
        }
    }

    /// Starts asked for while `agent` was stopping (a task arriving during
    /// an operator restart) go on now: joined to a group restart in
    /// progress, or started as after any stop.
    fn resume_after_stop(&mut self, myself: &ActorRef<GroupMsg>, agent: &str) {
        for d in self.after_stop.remove(agent).unwrap_or_default() {
            if self.restarting.contains(agent) {
                self.waiters.entry(agent.to_string()).or_default().push(d.reply);
            } else {
                self.start(myself, agent.to_string(), d.deadline, d.restart_on_failure, d.reset, d.reply);
            }
        }
    }

    fn reply_waiters(&mut self, agent: &str, result: StartResult) {
        for w in self.waiters.remove(agent).unwrap_or_default() {
            let _ = w.send(result.clone());
        }
    }

    /// Restart policy after an abnormal exit or a failed (re)start.
    fn on_failure(&mut self, myself: &ActorRef<GroupMsg>, agent: &str, reason: String) {
        self.ctx.transition(agent, AgentState::Failed, Transition::because(reason.clone()));
        let Some(spec) = self.spec(agent).cloned() else { return };
        if self.ctx.shutting_down() || spec.restart.kind == RestartType::Temporary {
            self.restarting.remove(agent);
            return;
        }
        let decision = self.trackers.entry(agent.to_string()).or_default().on_failure(
            Instant::now(),
            &spec.restart,
            &self.ctx.settings.supervisor,
        );
        match decision {
            Decision::GiveUp { restarts, within_secs } => {
                self.restarting.remove(agent);
                let why = format!(
                    "restart intensity exceeded: {restarts} restarts within {within_secs} s; last error: {reason}"
                );
                self.ctx.transition(agent, AgentState::Fatal, Transition::because(why.clone()));
                self.reply_waiters(agent, Err(StartError::Fatal { agent: agent.to_string() }));
                self.tell_dependents(agent, false);
                let _ = self.root.cast(RootMsg::Escalate {
                    group: self.name.clone(),
                    agent: agent.to_string(),
                    reason: why,
                });
            }
            Decision::Restart(delay) => {
                let affected = self.affected_siblings(agent);
                let mut stops = Vec::new();
                for s in &affected {
                    if let Some(actor) = self.refs.get(s) {
                        let why = format!("restarted with {agent} ({})", self.strategy.as_str());
                        self.intentional.insert(s.clone(), (AgentState::Stopped, why));
                        self.ctx.transition(s, AgentState::Stopping, Transition::because("group restart"));
                        stops.push(actor.clone());
                    }
                    self.restarting.insert(s.clone());
                }
                self.restarting.insert(agent.to_string());
                let delay_ms = delay.as_secs_f64() * 1e3;
                let details =
                    Transition { delay_ms: Some(delay_ms), restart_with: Some(affected.clone()), ..Default::default() };
                self.ctx.transition(agent, AgentState::Backoff, details);
                // Restart in start order (dependencies first), the failed agent in its place.
                let batch: Vec<String> = self
                    .members
                    .iter()
                    .map(|s| s.name.clone())
                    .filter(|n| n == agent || affected.contains(n))
                    .collect();
                let me = myself.clone();
                let stop_timeout = Duration::from_secs_f64(self.ctx.settings.supervisor.shutdown_timeout_secs + 1.0);
                self.tasks.spawn(async move {
                    for actor in stops.iter().rev() {
                        if actor.stop_and_wait(Some("group restart".into()), Some(stop_timeout)).await.is_err() {
                            actor.kill();
                        }
                    }
                    if !delay.is_zero() {
                        // A zero sleep still costs a timer tick (1 ms).
                        tokio::time::sleep(delay).await;
                    }
                    let _ = me.cast(GroupMsg::RestartDue { batch });
                });
            }
        }
    }

    /// Running siblings restarted with `agent` under the group strategy, in start order.
    fn affected_siblings(&self, agent: &str) -> Vec<String> {
        let pos = self.members.iter().position(|s| s.name == agent).unwrap_or(0);
        let candidates: Vec<&Arc<AgentSpec>> = match self.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => self.members.iter().filter(|s| s.name != agent).collect(),
            Strategy::RestForOne => self.members.iter().skip(pos + 1).collect(),
        };
        candidates.into_iter().filter(|s| self.refs.contains_key(&s.name)).map(|s| s.name.clone()).collect()
    }

    /// The backoff delay passed: start the batch one agent after the other,
    /// each once the previous one is running (or failed). Agents stopped
    /// meanwhile (no longer `restarting`) are left out.
    fn restart_batch(&mut self, myself: &ActorRef<GroupMsg>, batch: Vec<String>) {
        if self.ctx.shutting_down() {
            return;
        }
        self.continue_batch(myself, batch);
    }

    fn continue_batch(&mut self, myself: &ActorRef<GroupMsg>, batch: Vec<String>) {
        let mut rest = batch.into_iter().filter(|a| self.restarting.contains(a));
        let Some(next) = rest.next() else { return };
        let rest: Vec<String> = rest.collect();
        if !rest.is_empty() {
            self.batch_next.insert(next.clone(), rest);
        }
        self.spawn_start(myself, next, None, true);
    }

    fn stop(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        agent: String,
        target: AgentState,
        reason: String,
        reply: RpcReplyPort<()>,
    ) {
        if let Some(h) = self.in_flight.remove(&agent) {
            h.abort();
        }
        self.restarting.remove(&agent);
        if let Some(rest) = self.batch_next.remove(&agent) {
            // A group restart was waiting for this agent: go on without it.
            self.continue_batch(myself, rest);
        }
        self.reply_waiters(&agent, Err(StartError::Cancelled { agent: agent.clone() }));
        let Some(actor) = self.refs.get(&agent).cloned() else {
            if self.ctx.state(&agent) != Some(target) {
                self.ctx.transition(&agent, target, Transition::because(reason));
            }
            let _ = reply.send(());
            return;
        };
        self.intentional.insert(agent.clone(), (target, reason.clone()));
        self.ctx.transition(&agent, AgentState::Stopping, Transition::because(reason.clone()));
        let me = myself.clone();
        let timeout = Duration::from_secs_f64(self.ctx.settings.supervisor.shutdown_timeout_secs + 1.0);
        self.tasks.spawn(async move {
            if actor.stop_and_wait(Some(reason.clone()), Some(timeout)).await.is_err() {
                tracing::warn!(agent, "agent did not stop in time; killing it");
                actor.kill();
            }
            let _ = me.cast(GroupMsg::StopDone { agent, target, reason, reply });
        });
    }

    /// Tells running dependents of `agent` (any group) that it restarted
    /// (`restarted`: by message and event) or went fatal (event only).
    fn tell_dependents(&self, agent: &str, restarted: bool) {
        for dependent in self.ctx.catalog.dependents(agent) {
            if self.ctx.state(&dependent) != Some(AgentState::Running) {
                continue;
            }
            let dependency = agent.to_string();
            if restarted {
                if let Some(actor) = self.ctx.agent_ref(&dependent) {
                    let _ = actor.cast(AgentMsg::DependencyRestarted { dependency: dependency.clone() });
                }
                self.ctx.events.emit(Event::DependencyRestarted { agent: dependent, dependency });
            } else {
                self.ctx.events.emit(Event::DependencyFatal { agent: dependent, dependency });
            }
        }
    }
}
