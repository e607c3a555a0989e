//! The typed events of the fleet: one variant per topic (DESIGN §4, §15).
//! Call sites build a variant; `events::EventBus::emit` is the one place
//! that logs, counts and publishes it. On the wire an event is two frames,
//! `[topic][{"seq", "ts", "topic", ...fields}]`, the fields being the
//! variant's own (serialised untagged).

use serde::Serialize;
use serde_json::Value;

use super::receipt::Receipt;

/// An agent's lifecycle transition (`agent.<state>`, or `agent.restarted`
/// for a restart's `running`). Optional fields appear only when set.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Transition {
    /// The agent.
    pub agent: String,
    /// Its group.
    pub group: String,
    /// The new state (`dormant`, `starting`, `running`, ...).
    pub state: &'static str,
    /// The topic: `agent.<state>` (`agent.started` for running), or
    /// `agent.restarted`.
    #[serde(skip)]
    pub topic: &'static str,
    /// Why (failure, stop, unavailability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start time, milliseconds (`running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<f64>,
    /// Child process id (process agents, `running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts so far (`agent.restarted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// Restart delay, milliseconds (`backoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    /// Agents restarted with this one by the group strategy (`backoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_with: Option<Vec<String>>,
}

/// A background job's state change (`job.<state>`, or `job.retrying`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct JobChange {
    /// The job.
    pub job_id: String,
    /// Its new state: `queued`, `running`, `done`, `failed`, `cancelled`.
    pub state: &'static str,
    /// The topic: `job.<state>`, or `job.retrying` for a retry's `queued`.
    #[serde(skip)]
    pub topic: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// The task type, when the envelope named one.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The error code (`failed`, `job.retrying`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Seconds until the next attempt (`job.retrying`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<f64>,
}

/// One event. `topic()` names its topic; the fields are its JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// `agent.*` lifecycle transitions.
    Agent(Transition),
    /// `agent.dependency_restarted`: `dependency` of running `agent` came back as a new actor.
    DependencyRestarted {
        /// The dependent agent told.
        agent: String,
        /// The restarted dependency.
        dependency: String,
    },
    /// `agent.dependency_fatal`: `dependency` of running `agent` went fatal.
    DependencyFatal {
        /// The dependent agent told.
        agent: String,
        /// The fatal dependency.
        dependency: String,
    },
    /// `group.escalated`: agents of `group` went fatal beyond its own limit.
    GroupEscalated {
        /// The group.
        group: String,
        /// The agent whose failure escalated.
        agent: String,
        /// Why.
        reason: String,
    },
    /// `group.failed`: a group supervisor itself failed.
    GroupFailed {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// `infra.failed`: an infrastructure component (HybridRouter,
    /// ModelScheduler, BusDispatcher) failed; its supervisor restarts it.
    InfraFailed {
        /// The component.
        component: String,
        /// Why.
        reason: String,
    },
    /// `infra.restarted`: an infrastructure component runs again.
    InfraRestarted {
        /// The component.
        component: String,
        /// Restarts of it so far.
        restarts: u32,
    },
    /// `infra.fatal`: an infrastructure component exceeded its restart
    /// intensity; the daemon stops with a non-zero exit.
    InfraFatal {
        /// The component.
        component: String,
        /// Why.
        reason: String,
    },
    /// `fleet.draining`: shutdown began; the bus admits no more tasks and
    /// waits for the accepted ones.
    FleetDraining {
        /// Tasks accepted and not answered yet.
        in_flight: usize,
        /// The drain deadline, seconds.
        deadline_secs: f64,
    },
    /// `fleet.drained`: the drain ended.
    FleetDrained {
        /// Tasks that finished during the drain.
        finished: usize,
        /// Tasks answered `shutting_down` at the drain deadline.
        abandoned: usize,
        /// Drain time, milliseconds.
        drain_ms: f64,
    },
    /// `fleet.booted`: the boot set is up.
    FleetBooted {
        /// Profile name.
        profile: String,
        /// Agents running.
        running: usize,
        /// Agents unavailable.
        unavailable: usize,
        /// Agents failed.
        failed: usize,
        /// On-demand agents left dormant.
        dormant: usize,
        /// Boot time, milliseconds.
        boot_ms: f64,
    },
    /// `fleet.stopped`: every agent stopped.
    FleetStopped {
        /// Stop time, milliseconds.
        stop_ms: f64,
    },
    /// `lazy.started`: an on-demand start finished.
    LazyStarted {
        /// The agent asked for.
        agent: String,
        /// Every agent started for it, dependencies first.
        started: Vec<String>,
        /// Start time, milliseconds.
        start_ms: f64,
    },
    /// `lazy.failed`: an on-demand start failed (and was rolled back).
    LazyFailed {
        /// The agent asked for.
        agent: String,
        /// The error code (`start_timeout`, `start_failed`, ...).
        code: &'static str,
        /// Why.
        reason: String,
        /// Agents stopped again by the rollback.
        rolled_back: Vec<String>,
    },
    /// `task.accepted`: a bus task was admitted.
    TaskAccepted {
        /// Task id.
        id: String,
        /// Its agent.
        agent: String,
        /// Its type, when the envelope named one.
        #[serde(rename = "type")]
        task_type: Option<String>,
        /// Priority 0–9.
        priority: u8,
        /// Who asks (the envelope's `user`); null: anonymous.
        user: Option<String>,
    },
    /// `task.completed`.
    TaskCompleted {
        /// Task id.
        id: String,
        /// Its agent.
        agent: String,
        /// Receipt to reply, milliseconds.
        total_ms: f64,
    },
    /// `task.failed` (`cancelled: false`) or `task.cancelled`.
    TaskFailed {
        /// Task id.
        id: String,
        /// Its agent, when resolved.
        agent: Option<String>,
        /// The error code.
        code: &'static str,
        /// `task.cancelled` rather than `task.failed`.
        #[serde(skip)]
        cancelled: bool,
    },
    /// `route.decided`: a routing receipt.
    RouteDecided(Box<Receipt>),
    /// `model.loaded`.
    ModelLoaded {
        /// Model name.
        model: String,
        /// Bytes it takes.
        bytes: u64,
        /// Load time, seconds.
        load_seconds: f64,
        /// What llama.cpp reports about it.
        info: Value,
    },
    /// `model.load_failed`.
    ModelLoadFailed {
        /// Model name.
        model: String,
        /// Why.
        error: String,
    },
    /// `model.evicted`: unloaded to make room.
    ModelEvicted {
        /// Model name.
        model: String,
        /// Bytes freed.
        bytes: u64,
        /// The model it made room for (or `budget`).
        #[serde(rename = "for")]
        for_model: Option<String>,
        /// Idle time before, seconds.
        idle_seconds: f64,
    },
    /// `model.unloaded`: unloaded for being idle, by an operator, or at shutdown.
    ModelUnloaded {
        /// Model name.
        model: String,
        /// Bytes freed.
        bytes: u64,
        /// `idle`, `operator` or `shutdown`.
        reason: &'static str,
        /// Idle time before, seconds.
        idle_seconds: f64,
    },
    /// `registry.registered`.
    RegistryRegistered {
        /// Service id.
        service: String,
        /// Service name.
        name: String,
        /// Service type.
        #[serde(rename = "type")]
        kind: String,
        /// Role.
        role: String,
        /// It replaced a registration with the same id.
        replaced: bool,
    },
    /// `registry.recovered`: a down service beat again.
    RegistryRecovered {
        /// Service id.
        service: String,
        /// Service name.
        name: String,
        /// Its status now.
        status: String,
    },
    /// `registry.promoted`.
    RegistryPromoted {
        /// Service id.
        service: String,
        /// Service name.
        name: String,
        /// Role before.
        from: String,
        /// Role after.
        to: String,
    },
    /// `registry.deregistered`.
    RegistryDeregistered {
        /// Service id.
        service: String,
        /// Service name.
        name: String,
        /// `requested`, or the missed heartbeats.
        reason: String,
    },
    /// `resource.granted`: a reservation was granted (at once or after waiting).
    ResourceGranted {
        /// The reservation.
        reservation_id: String,
        /// Who holds it.
        holder: String,
        /// CPU cores.
        cpu: f64,
        /// Host memory, bytes.
        memory_bytes: u64,
        /// GPUs.
        gpu: u64,
        /// GPU memory, bytes.
        gpu_memory_bytes: u64,
        /// Ports granted.
        ports: Vec<u16>,
        /// Unix seconds; `null`: no expiry.
        expires_at: Option<f64>,
        /// Time spent waiting, seconds.
        waited_seconds: f64,
    },
    /// `resource.waiting`: a request is short and waits (FIFO).
    ResourceWaiting {
        /// Who asks.
        holder: String,
        /// Requests waiting ahead of it.
        ahead: usize,
        /// Resources short, by name.
        short: Vec<&'static str>,
    },
    /// `resource.denied`: a request was refused (at once, or after its wait).
    ResourceDenied {
        /// Who asked.
        holder: String,
        /// Resources short, by name.
        short: Vec<&'static str>,
        /// Time spent waiting, seconds.
        waited_seconds: f64,
    },
    /// `resource.released`: a reservation ended (`requested`,
    /// `holder_stopped`, `holder_failed`, `model_unloaded`, ...).
    ResourceReleased {
        /// The reservation.
        reservation_id: String,
        /// Who held it.
        holder: String,
        /// Why.
        reason: &'static str,
    },
    /// `resource.expired`: a reservation reached its TTL.
    ResourceExpired {
        /// The reservation.
        reservation_id: String,
        /// Who held it.
        holder: String,
        /// Unix seconds.
        expires_at: f64,
    },
    /// `resource.renewed`: a reservation's TTL was renewed.
    ResourceRenewed {
        /// The reservation.
        reservation_id: String,
        /// Who holds it.
        holder: String,
        /// Unix seconds; `null`: no expiry.
        expires_at: Option<f64>,
    },
    /// `job.*`: a background job's state change.
    Job(JobChange),
    /// `schedule.added`.
    ScheduleAdded {
        /// The schedule.
        schedule_id: String,
        /// Its name, if given.
        name: Option<String>,
        /// `at`, `after`, `every` or `cron`.
        kind: &'static str,
        /// Unix seconds of the first firing.
        next_fire_at: Option<f64>,
    },
    /// `schedule.fired`: a firing submitted its job.
    ScheduleFired {
        /// The schedule.
        schedule_id: String,
        /// The job submitted.
        job_id: String,
        /// Unix seconds the firing was due.
        due_at: f64,
        /// Firing time minus due time, seconds.
        drift_seconds: f64,
        /// A firing missed while the daemon was down, run once (`run_once`).
        misfire: bool,
    },
    /// `schedule.skipped`: firings missed while the daemon was down were
    /// skipped (`misfire: skip`).
    ScheduleSkipped {
        /// The schedule.
        schedule_id: String,
        /// Unix seconds of the first missed firing.
        missed_since: f64,
    },
    /// `schedule.failed`: a firing could not submit its job.
    ScheduleFailed {
        /// The schedule.
        schedule_id: String,
        /// The error code.
        code: &'static str,
    },
    /// `schedule.cancelled`.
    ScheduleCancelled {
        /// The schedule.
        schedule_id: String,
    },
    /// `schedule.ended`: a one-shot schedule fired, or a recurring one has
    /// no next firing.
    ScheduleEnded {
        /// The schedule.
        schedule_id: String,
    },
    /// `identity.set`: a persona was defined and/or made a session's persona.
    PersonaSet {
        /// The persona's name.
        persona: String,
        /// The session now using it, when one was given.
        session: Option<String>,
        /// Whether the persona was created or replaced.
        defined: bool,
    },
    /// `goal.created`: a goal was decomposed and its subtasks submitted.
    GoalCreated {
        /// The goal.
        goal_id: String,
        /// Its number of subtasks.
        subtasks: usize,
    },
    /// `goal.finished`: every subtask of a goal ended, or it was cancelled.
    GoalFinished {
        /// The goal.
        goal_id: String,
        /// `done`, `failed` or `cancelled`.
        state: &'static str,
        /// Subtasks done.
        subtasks_done: usize,
        /// All its subtasks.
        subtasks_total: usize,
    },
    /// `mood.recorded`: an emotion was recorded for a user.
    MoodRecorded {
        /// The user (null: anonymous).
        user: Option<String>,
        /// The emotion.
        label: &'static str,
        /// Its intensity, 0..=1.
        intensity: f64,
        /// The user's dominant emotion after it.
        current: &'static str,
    },
    /// `proactive.suggestion`: a ProactiveAgent rule fired and an llm agent wrote its text.
    ProactiveSuggestion {
        /// The suggestion.
        id: String,
        /// The rule that fired.
        trigger: String,
        /// The suggestion's text.
        text: String,
        /// The session it is for (the rule's), if any.
        session: Option<String>,
        /// The user it is about (mood drop, idle), if any.
        user: Option<String>,
    },
    /// `proactive.failed`: a rule fired but no suggestion was made.
    ProactiveFailed {
        /// The rule that fired.
        trigger: String,
        /// The error code.
        code: &'static str,
        /// Why.
        message: String,
        /// The user it was about, if any.
        user: Option<String>,
    },
    /// `dreaming.consolidated`: DreamingModeAgent consolidated the memories.
    DreamingConsolidated {
        /// Exact and near duplicates merged away.
        merged_duplicates: u64,
        /// Short-term memories promoted to long-term.
        promoted: u64,
        /// Summaries stored as long-term memories.
        summaries_added: u64,
        /// Live memories before the run.
        memories_before: u64,
        /// Live memories after it.
        memories_after: u64,
        /// Whether it ran by itself on an idle fleet (else by task).
        auto: bool,
    },
    /// `remote.link`: a RemoteConnectorAgent link was checked and changed state.
    RemoteLink {
        /// The link's name.
        name: String,
        /// `backend`, `node` or `registry`.
        kind: &'static str,
        /// `connected` or `down`.
        state: &'static str,
        /// Why it is down.
        error: Option<String>,
    },
    /// `context.usage`: the token governor measured a session's context
    /// against the serving model's window (before a prompt is sent, and
    /// after its answer).
    ContextUsage {
        /// The session.
        session: String,
        /// The llm agent of the turn.
        agent: String,
        /// Who asked, if known.
        user: Option<String>,
        /// Tokens in use (the serving model's tokenizer, chat template included).
        tokens: u32,
        /// The model's context window, tokens.
        window: u32,
        /// `tokens / window`.
        ratio: f64,
        /// `ok`, `over_target` or `over_hard_max`.
        state: &'static str,
        /// The model measured against.
        model: Option<String>,
        /// `true`: counted by estimate (a remote model without a tokenizer).
        estimated: bool,
    },
    /// `context.summarized`: a session's older turns were replaced by a summary.
    ContextSummarized {
        /// The session.
        session: String,
        /// Turns the summary replaced (in total).
        turns_summarized: u32,
        /// Context tokens before.
        tokens_before: u32,
        /// Context tokens after.
        tokens_after: u32,
        /// The model that wrote the summary.
        model: Option<String>,
    },
    /// `policy.denied`: the policy gate refused a task with `denied_by_policy`
    /// before it reached its agent (the audit record of the refusal).
    PolicyDenied {
        /// Task id.
        id: String,
        /// The agent it was for.
        agent: String,
        /// Its type.
        #[serde(rename = "type")]
        task_type: String,
        /// The rule that denied it (`delete_outside_scratch`, `fork_bomb`,
        /// `network`, `deny_pattern`, `essential_agent`, `validator`,
        /// `validator_failed`, `undecided`).
        rule: String,
        /// Who decided: `rule`, `model` or `default`.
        by: &'static str,
        /// Why, in words.
        reason: String,
        /// The start of the action checked (at most 200 characters).
        action: String,
        /// Who asked (the envelope's `user`), if known.
        user: Option<String>,
    },
    /// `feedback.recorded`: a user rated a task's answer (FeedbackHandler).
    FeedbackRecorded {
        /// The feedback.
        feedback_id: String,
        /// The rated task.
        task_id: String,
        /// The agent that answered it (its receipt's), if known.
        agent: Option<String>,
        /// Who gave the feedback (the envelope's `user`), if known.
        user: Option<String>,
        /// 1 (poor) to 5 (excellent); thumbs up is 5, down 1.
        rating: u8,
        /// The agent that should have answered, when the user named one.
        better_specialist: Option<String>,
    },
    /// `correction.recorded`: a task's answer was corrected (LearningManager,
    /// or feedback with a correction).
    CorrectionRecorded {
        /// The correction.
        correction_id: String,
        /// The corrected task.
        task_id: String,
        /// The agent that answered it, if known.
        agent: Option<String>,
        /// Who corrected it, if known.
        user: Option<String>,
    },
    /// `preferences.set`: a user's preferences changed (LearningManager).
    PreferencesSet {
        /// The user (null: anonymous).
        user: Option<String>,
        /// The fields given (`preferred_tier`, `persona`, `language`, `cost_cap_usd`).
        fields: Vec<&'static str>,
    },
    /// `trust.floor_crossed`: an agent's trust fell below `trust.floor`
    /// (`below: true`) or rose back to it (AgentTrustScorer).
    TrustFloorCrossed {
        /// The agent.
        agent: String,
        /// Its trust now, 0..=1.
        score: f64,
        /// The floor.
        floor: f64,
        /// `true`: now below the floor.
        below: bool,
    },
    /// `alert.heartbeat_missed`: a service missed its heartbeats.
    HeartbeatMissed {
        /// Service id.
        service: String,
        /// Service name.
        name: String,
        /// Beats missed.
        missed: u32,
        /// Unix time of the last beat, seconds.
        last_seen: f64,
        /// What was done (`marked_down`).
        action: &'static str,
    },
}

impl Event {
    /// The topic: the first frame on the PUB socket and the `topic` label of
    /// `agentvisor_events_total`.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Agent(t) => t.topic,
            Event::DependencyRestarted { .. } => "agent.dependency_restarted",
            Event::DependencyFatal { .. } => "agent.dependency_fatal",
            Event::GroupEscalated { .. } => "group.escalated",
            Event::GroupFailed { .. } => "group.failed",
            Event::InfraFailed { .. } => "infra.failed",
            Event::InfraRestarted { .. } => "infra.restarted",
            Event::InfraFatal { .. } => "infra.fatal",
            Event::FleetDraining { .. } => "fleet.draining",
            Event::FleetDrained { .. } => "fleet.drained",
            Event::FleetBooted { .. } => "fleet.booted",
            Event::FleetStopped { .. } => "fleet.stopped",
            Event::LazyStarted { .. } => "lazy.started",
            Event::LazyFailed { .. } => "lazy.failed",
            Event::TaskAccepted { .. } => "task.accepted",
            Event::TaskCompleted { .. } => "task.completed",
            Event::TaskFailed { cancelled: true, .. } => "task.cancelled",
            Event::TaskFailed { .. } => "task.failed",
            Event::RouteDecided(_) => "route.decided",
            Event::ModelLoaded { .. } => "model.loaded",
            Event::ModelLoadFailed { .. } => "model.load_failed",
            Event::ModelEvicted { .. } => "model.evicted",
            Event::ModelUnloaded { .. } => "model.unloaded",
            Event::RegistryRegistered { .. } => "registry.registered",
            Event::RegistryRecovered { .. } => "registry.recovered",
            Event::RegistryPromoted { .. } => "registry.promoted",
            Event::RegistryDeregistered { .. } => "registry.deregistered",
            Event::HeartbeatMissed { .. } => "alert.heartbeat_missed",
            Event::ResourceGranted { .. } => "resource.granted",
            Event::ResourceWaiting { .. } => "resource.waiting",
            Event::ResourceDenied { .. } => "resource.denied",
            Event::ResourceReleased { .. } => "resource.released",
            Event::ResourceExpired { .. } => "resource.expired",
            Event::ResourceRenewed { .. } => "resource.renewed",
            Event::Job(j) => j.topic,
            Event::ScheduleAdded { .. } => "schedule.added",
            Event::ScheduleFired { .. } => "schedule.fired",
            Event::ScheduleSkipped { .. } => "schedule.skipped",
            Event::ScheduleFailed { .. } => "schedule.failed",
            Event::ScheduleCancelled { .. } => "schedule.cancelled",
            Event::ScheduleEnded { .. } => "schedule.ended",
            Event::PersonaSet { .. } => "identity.set",
            Event::GoalCreated { .. } => "goal.created",
            Event::GoalFinished { .. } => "goal.finished",
            Event::MoodRecorded { .. } => "mood.recorded",
            Event::ProactiveSuggestion { .. } => "proactive.suggestion",
            Event::ProactiveFailed { .. } => "proactive.failed",
            Event::DreamingConsolidated { .. } => "dreaming.consolidated",
            Event::RemoteLink { .. } => "remote.link",
            Event::ContextUsage { .. } => "context.usage",
            Event::ContextSummarized { .. } => "context.summarized",
            Event::PolicyDenied { .. } => "policy.denied",
            Event::FeedbackRecorded { .. } => "feedback.recorded",
            Event::CorrectionRecorded { .. } => "correction.recorded",
            Event::PreferencesSet { .. } => "preferences.set",
            Event::TrustFloorCrossed { .. } => "trust.floor_crossed",
        }
    }

    /// Whether the event reports trouble (logged at `warn`).
    pub(crate) fn is_warning(&self) -> bool {
        match self {
            Event::Agent(t) => matches!(t.state, "failed" | "fatal"),
            Event::GroupEscalated { .. }
            | Event::GroupFailed { .. }
            | Event::InfraFailed { .. }
            | Event::InfraFatal { .. }
            | Event::LazyFailed { .. }
            | Event::ModelLoadFailed { .. }
            | Event::HeartbeatMissed { .. }
            | Event::ScheduleFailed { .. }
            | Event::ProactiveFailed { .. }
            | Event::PolicyDenied { .. }
            | Event::TrustFloorCrossed { below: true, .. }
            | Event::DependencyFatal { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_serialise_flat_and_topics_follow_the_variant() {
        let e = Event::TaskFailed { id: "t1".into(), agent: None, code: "cancelled", cancelled: true };
        assert_eq!(e.topic(), "task.cancelled");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"id": "t1", "agent": null, "code": "cancelled"})
        );
        let t = Transition {
            agent: "A".into(),
            group: "g".into(),
            state: "running",
            topic: "agent.started",
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(Event::Agent(t)).unwrap(),
            serde_json::json!({"agent": "A", "group": "g", "state": "running"})
        );
    }
}
