//! Every metric name, in one place, and the registry that holds them.
//!
//! Conventions (Prometheus): `agentvisor_` prefix, base units (seconds),
//! counters end in `_total`, labels only from closed sets (agent names and
//! groups from the catalog, states and outcomes from enums) — never error
//! text, ids or URLs.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets for start durations, seconds: 100 µs to 30 s (the start SLA).
const START_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

/// Buckets for task durations, seconds: 50 µs to 60 s.
const TASK_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0, 60.0];

/// The daemon's metrics. One registry per daemon, so tests can run several.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `agentvisor_build_info{version}` = 1.
    pub build_info: IntGaugeVec,
    /// `agentvisor_agents{state}`: agents per lifecycle state (set at scrape).
    pub agents_by_state: IntGaugeVec,
    /// `agentvisor_agent_up{agent,group}`: 1 when running (set at scrape).
    pub agent_up: IntGaugeVec,
    /// `agentvisor_agent_restarts_total{agent}`.
    pub restarts: IntCounterVec,
    /// `agentvisor_agent_starts_total{agent,outcome}`; outcome ok|failed|unavailable|timeout.
    pub starts: IntCounterVec,
    /// `agentvisor_agent_start_duration_seconds{runtime}`.
    pub start_duration: HistogramVec,
    /// `agentvisor_agent_transitions_total{state}`.
    pub transitions: IntCounterVec,
    /// `agentvisor_lazy_starts_total{outcome}`; outcome ok|already_running|failed|start_timeout.
    pub lazy_starts: IntCounterVec,
    /// `agentvisor_lazy_start_duration_seconds`: whole on-demand starts, dependencies included.
    pub lazy_start_duration: HistogramVec,
    /// `agentvisor_group_escalations_total{group}`: an agent of the group went fatal.
    pub escalations: IntCounterVec,
    /// `agentvisor_infra_restarts_total{component}`: restarts of HybridRouter, ModelScheduler, BusDispatcher.
    pub infra_restarts: IntCounterVec,
    /// `agentvisor_events_total{topic}`.
    pub events: IntCounterVec,
    /// `agentvisor_tasks_total{agent,outcome}`; outcome ok or an error code.
    pub tasks: IntCounterVec,
    /// `agentvisor_process_agents_running`: child processes alive.
    pub children: IntGauge,
    /// `agentvisor_bad_requests_total{code}`: messages answered with an error code before or instead of running.
    pub bad_requests: IntCounterVec,
    /// `agentvisor_auth_failures_total{door,reason}`: refused credentials;
    /// door bus|http|v1|mcp, reason missing|unknown|expired|revoked|scope|rate_limited.
    pub auth_failures: IntCounterVec,
    /// `agentvisor_bus_replies_dropped_total{reason}`; reason timeout|peer_gone.
    pub replies_dropped: IntCounterVec,
    /// `agentvisor_bus_messages_total{direction}`; direction in|out.
    pub bus_messages: IntCounterVec,
    /// `agentvisor_bus_queue_depth`: tasks waiting in the admission queue.
    pub queue_depth: IntGauge,
    /// `agentvisor_task_duration_seconds{agent}`: receipt to reply of bus tasks.
    pub task_duration: HistogramVec,
    /// `agentvisor_events_dropped_total`: events the PUB socket missed because it lagged.
    pub events_dropped: IntCounter,
    /// `agentvisor_route_decisions_total{tier,backend,outcome}`: model calls routed (one receipt each).
    pub route_decisions: IntCounterVec,
    /// `agentvisor_route_decide_seconds`: time to decide a route.
    pub route_decide_seconds: prometheus::Histogram,
    /// `agentvisor_backend_requests_total{backend,outcome}`; outcome ok or a backend error kind.
    pub backend_requests: IntCounterVec,
    /// `agentvisor_llm_tokens_total{backend,direction}`; direction in|out.
    pub llm_tokens: IntCounterVec,
    /// `agentvisor_backend_breaker_state{backend}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// `agentvisor_models_loaded`: local models in memory (or loading).
    pub models_loaded: IntGauge,
    /// `agentvisor_model_memory_bytes{model}`: bytes held by a loaded model (file + KV cache estimate).
    pub model_memory: IntGaugeVec,
    /// `agentvisor_model_memory_budget_bytes`: the budget loaded models must fit.
    pub model_memory_budget: IntGauge,
    /// `agentvisor_device_memory_bytes{source,kind}`: source gpu|host, kind total|used|free.
    pub device_memory: IntGaugeVec,
    /// `agentvisor_model_loads_total{model,outcome}`; outcome ok|failed.
    pub model_loads: IntCounterVec,
    /// `agentvisor_model_load_seconds{model}`.
    pub model_load_seconds: HistogramVec,
    /// `agentvisor_model_unloads_total{model,reason}`; reason idle|evicted|operator|shutdown.
    pub model_unloads: IntCounterVec,
    /// `agentvisor_local_queue_depth`: local inference requests waiting.
    pub local_queue_depth: IntGauge,
    /// `agentvisor_local_requests_total{model,outcome}`.
    pub local_requests: IntCounterVec,
    /// `agentvisor_local_tokens_total{model,direction}`; direction in|out.
    pub local_tokens: IntCounterVec,
    /// `agentvisor_local_time_to_first_token_seconds{model}`: submission (queue and load included) to first token.
    pub local_ttft: HistogramVec,
    /// `agentvisor_local_tokens_per_second{model}`: generation speed after the first token.
    pub local_tokens_per_second: HistogramVec,
    /// `agentvisor_audit_backpressure_total{log}`: appends that found an audit log's queue full and
    /// waited for room (the caller slowed, nothing dropped); log `receipts`.
    pub audit_backpressure: IntCounterVec,
    /// `agentvisor_audit_rows_total{log,outcome}`; outcome batched|direct (after the log closed)|failed.
    pub audit_rows: IntCounterVec,
    /// `agentvisor_audit_batch_rows{log}`: rows per committed audit batch (one transaction each).
    pub audit_batch_rows: HistogramVec,
    /// `agentvisor_audit_commit_seconds{log}`: time one audit batch took on the store thread (waiting for it included).
    pub audit_commit_seconds: HistogramVec,
    /// `agentvisor_resource_capacity{resource}`: what the machine has, base units (cores, bytes, counts);
    /// resource cpu|memory_bytes|gpu|gpu_memory_bytes|ports.
    pub resource_capacity: GaugeVec,
    /// `agentvisor_resource_reserved{resource}`: what the ledger's reservations hold, base units.
    pub resource_reserved: GaugeVec,
    /// `agentvisor_resource_requests_total{outcome}`; outcome granted|waited|denied|timed_out.
    pub resource_requests: IntCounterVec,
    /// `agentvisor_resource_waiting`: requests waiting for resources (FIFO).
    pub resource_waiting: IntGauge,
    /// `agentvisor_jobs{state}`: background jobs per state (queued|running|done|failed|cancelled).
    pub jobs: IntGaugeVec,
    /// `agentvisor_job_attempts_total{outcome}`: job attempts by outcome (ok, or the error code).
    pub job_attempts: IntCounterVec,
    /// `agentvisor_job_duration_seconds`: submission to end of finished jobs (retries included).
    pub job_duration: prometheus::Histogram,
    /// `agentvisor_schedule_firings_total{outcome}`; outcome submitted|misfire_run|skipped|failed.
    pub schedule_firings: IntCounterVec,
    /// `agentvisor_persona_changes_total{kind}`; kind defined (a persona created or replaced) |
    /// switched (a session's persona set without a definition).
    pub persona_changes: IntCounterVec,
    /// `agentvisor_persona_prompts_total{agent}`: llm prompts that began with a session's persona.
    pub persona_prompts: IntCounterVec,
    /// `agentvisor_goals_total{state}`: goals by the state they reached (running|done|failed|cancelled).
    pub goals: IntCounterVec,
    /// `agentvisor_mood_records_total{label}`: emotions recorded by MoodTrackerAgent.
    pub mood_records: IntCounterVec,
    /// `agentvisor_learning_records_total{kind}`: what the learning agents stored; kind
    /// feedback (FeedbackHandler) | correction | preferences (LearningManager).
    pub learning_records: IntCounterVec,
    /// `agentvisor_trust_outcomes_total{outcome}`: outcomes AgentTrustScorer counted; outcome
    /// success|failure|timeout|rating.
    pub trust_outcomes: IntCounterVec,
    /// `agentvisor_proactive_firings_total{rule,outcome}`: ProactiveAgent rule firings; outcome ok|failed.
    pub proactive_firings: IntCounterVec,
    /// `agentvisor_web_fetches_total{outcome}`: UnifiedWebAgent fetches; outcome
    /// ok|forbidden|robots_denied|timeout|failed|invalid_field.
    pub web_fetches: IntCounterVec,
    /// `agentvisor_file_ops_total{op,outcome}`: FileSystemAssistantAgent operations; op
    /// list|read|search, outcome ok|forbidden|not_found|invalid_field|no_roots|error.
    pub file_ops: IntCounterVec,
    /// `agentvisor_audio_ops_total{op,outcome}`: the audio agents' operations (issue 20); op
    /// preprocess|resample|vad|profile|features|wake_word|language|route, outcome
    /// ok|invalid_field|forbidden|not_found|error (wake_word: detected|not_detected).
    pub audio_ops: IntCounterVec,
    /// `agentvisor_dreaming_runs_total{outcome}`: DreamingModeAgent consolidations; outcome
    /// ran|dry_run|not_idle|in_progress|failed.
    pub dreaming_runs: IntCounterVec,
    /// `agentvisor_memories_consolidated_total{action}`: memories changed by consolidation;
    /// action merged|summarised|promoted|deleted.
    pub memories_consolidated: IntCounterVec,
    /// `agentvisor_provider_routes_total{strategy,outcome}`: AdvancedRouter choices; outcome chosen|none.
    pub provider_routes: IntCounterVec,
    /// `agentvisor_remote_checks_total{kind,state}`: RemoteConnectorAgent health checks; state connected|down.
    pub remote_checks: IntCounterVec,
    /// `agentvisor_cache_lookups_total{outcome}`: response cache lookups; outcome hit|miss.
    pub cache_lookups: IntCounterVec,
    /// `agentvisor_cache_evictions_total{cause}`: entries evicted; cause size|expired.
    pub cache_evictions: IntCounterVec,
    /// `agentvisor_cache_entries`: entries in the response cache.
    pub cache_entries: IntGauge,
    /// `agentvisor_cache_bytes`: bytes held by the response cache.
    pub cache_bytes: IntGauge,
    /// `agentvisor_context_summaries_total{trigger,outcome}`: token governor summaries;
    /// trigger target|hard_max|task|monitor, outcome ok|failed|nothing_to_summarize.
    pub context_summaries: IntCounterVec,
    /// `agentvisor_context_exhausted_total{agent}`: llm tasks refused with `context_exhausted`.
    pub context_exhausted: IntCounterVec,
    /// `agentvisor_policy_decisions_total{task_type,decision,by}`: tasks the policy gate
    /// checked; decision allow|deny, by rule|model|default.
    pub policy_decisions: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Never in practice: registration fails only on a duplicate or invalid
    /// name, and the names here are fixed and distinct (a unit test checks).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram_vec_with = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let histogram_vec =
            |name: &str, help: &str, labels: &[&str]| histogram_vec_with(name, help, labels, START_BUCKETS);
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let build_info = gauge_vec("agentvisor_build_info", "Build information; always 1.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let events_dropped = IntCounter::new(
            "agentvisor_events_dropped_total",
            "Events the PUB socket missed because it fell behind the event stream.",
        )
        .expect("valid metric");
        registry.register(Box::new(events_dropped.clone())).expect("unique metric");
        Metrics {
            build_info,
            agents_by_state: gauge_vec("agentvisor_agents", "Agents per lifecycle state.", &["state"]),
            agent_up: gauge_vec("agentvisor_agent_up", "1 when the agent is running, else 0.", &["agent", "group"]),
            restarts: counter_vec("agentvisor_agent_restarts_total", "Agent restarts by the supervisor.", &["agent"]),
            starts: counter_vec(
                "agentvisor_agent_starts_total",
                "Agent start attempts by outcome.",
                &["agent", "outcome"],
            ),
            start_duration: histogram_vec(
                "agentvisor_agent_start_duration_seconds",
                "Time from start request to running, per runtime.",
                &["runtime"],
            ),
            transitions: counter_vec(
                "agentvisor_agent_transitions_total",
                "Lifecycle transitions by new state.",
                &["state"],
            ),
            lazy_starts: counter_vec("agentvisor_lazy_starts_total", "On-demand starts by outcome.", &["outcome"]),
            lazy_start_duration: histogram_vec(
                "agentvisor_lazy_start_duration_seconds",
                "Duration of on-demand starts, dependencies included.",
                &["outcome"],
            ),
            escalations: counter_vec(
                "agentvisor_group_escalations_total",
                "Agents of a group that went fatal and were escalated to the root.",
                &["group"],
            ),
            infra_restarts: counter_vec(
                "agentvisor_infra_restarts_total",
                "Restarts of an infrastructure component (HybridRouter, ModelScheduler, BusDispatcher) by its supervisor.",
                &["component"],
            ),
            events: counter_vec("agentvisor_events_total", "Events published, by topic.", &["topic"]),
            tasks: counter_vec(
                "agentvisor_tasks_total",
                "Tasks answered, by agent and outcome.",
                &["agent", "outcome"],
            ),
            children: gauge("agentvisor_process_agents_running", "Child processes of process agents alive."),
            bad_requests: counter_vec(
                "agentvisor_bad_requests_total",
                "Task messages answered with an error before running, by error code.",
                &["code"],
            ),
            auth_failures: counter_vec(
                "agentvisor_auth_failures_total",
                "Requests refused for their credentials, by door and reason.",
                &["door", "reason"],
            ),
            replies_dropped: counter_vec(
                "agentvisor_bus_replies_dropped_total",
                "Replies that could not be handed to their client, by reason.",
                &["reason"],
            ),
            bus_messages: counter_vec(
                "agentvisor_bus_messages_total",
                "ZeroMQ task messages by direction.",
                &["direction"],
            ),
            queue_depth: gauge("agentvisor_bus_queue_depth", "Tasks waiting in the admission queue."),
            task_duration: histogram_vec_with(
                "agentvisor_task_duration_seconds",
                "Receipt to reply of bus tasks, per agent.",
                &["agent"],
                TASK_BUCKETS,
            ),
            events_dropped,
            route_decisions: counter_vec(
                "agentvisor_route_decisions_total",
                "Model calls routed, by tier, answering backend and outcome.",
                &["tier", "backend", "outcome"],
            ),
            route_decide_seconds: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new("agentvisor_route_decide_seconds", "Time HybridRouter takes to decide a route.")
                        .buckets(vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3]),
                )
                .expect("valid metric");
                registry.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            backend_requests: counter_vec(
                "agentvisor_backend_requests_total",
                "Backend calls by outcome (ok or the error kind).",
                &["backend", "outcome"],
            ),
            llm_tokens: counter_vec(
                "agentvisor_llm_tokens_total",
                "Model tokens by backend and direction.",
                &["backend", "direction"],
            ),
            breaker_state: gauge_vec(
                "agentvisor_backend_breaker_state",
                "Circuit breaker per backend: 0 closed, 1 open, 2 half-open.",
                &["backend"],
            ),
            models_loaded: gauge("agentvisor_models_loaded", "Local models in memory or loading."),
            model_memory: gauge_vec(
                "agentvisor_model_memory_bytes",
                "Bytes held by a loaded local model (file plus KV cache estimate).",
                &["model"],
            ),
            model_memory_budget: gauge(
                "agentvisor_model_memory_budget_bytes",
                "Memory budget loaded local models must fit, bytes.",
            ),
            device_memory: gauge_vec(
                "agentvisor_device_memory_bytes",
                "Model memory of the device (gpu through NVML, else host), bytes.",
                &["source", "kind"],
            ),
            model_loads: counter_vec(
                "agentvisor_model_loads_total",
                "Local model loads by outcome.",
                &["model", "outcome"],
            ),
            model_load_seconds: histogram_vec(
                "agentvisor_model_load_seconds",
                "Time to load a local model and create its context.",
                &["model"],
            ),
            model_unloads: counter_vec(
                "agentvisor_model_unloads_total",
                "Local model unloads by reason (idle, evicted, operator, shutdown).",
                &["model", "reason"],
            ),
            local_queue_depth: gauge("agentvisor_local_queue_depth", "Local inference requests waiting."),
            local_requests: counter_vec(
                "agentvisor_local_requests_total",
                "Local inference requests by model and outcome.",
                &["model", "outcome"],
            ),
            local_tokens: counter_vec(
                "agentvisor_local_tokens_total",
                "Local model tokens by direction.",
                &["model", "direction"],
            ),
            local_ttft: histogram_vec_with(
                "agentvisor_local_time_to_first_token_seconds",
                "Submission to first token of local requests (queue and load included).",
                &["model"],
                &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            local_tokens_per_second: histogram_vec_with(
                "agentvisor_local_tokens_per_second",
                "Generation speed of local requests after the first token.",
                &["model"],
                &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0],
            ),
            audit_backpressure: counter_vec(
                "agentvisor_audit_backpressure_total",
                "Audit rows (receipts) whose append found the log's queue full and waited for room; never dropped.",
                &["log"],
            ),
            audit_rows: counter_vec(
                "agentvisor_audit_rows_total",
                "Audit rows (receipts) by outcome: batched, direct (written after the log closed) or failed.",
                &["log", "outcome"],
            ),
            audit_batch_rows: histogram_vec_with(
                "agentvisor_audit_batch_rows",
                "Rows per committed audit batch (one SQLite transaction each).",
                &["log"],
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            audit_commit_seconds: histogram_vec_with(
                "agentvisor_audit_commit_seconds",
                "Seconds one audit batch took on the SQLite store thread, its wait for the thread included.",
                &["log"],
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            resource_capacity: float_gauge_vec(
                "agentvisor_resource_capacity",
                "What the machine has for ResourceManager, base units (cores, bytes, counts).",
                &["resource"],
            ),
            resource_reserved: float_gauge_vec(
                "agentvisor_resource_reserved",
                "What ResourceManager's reservations hold, base units (cores, bytes, counts).",
                &["resource"],
            ),
            resource_requests: counter_vec(
                "agentvisor_resource_requests_total",
                "Resource requests by outcome: granted at once, waited (then granted), denied, timed_out (waited, then denied).",
                &["outcome"],
            ),
            resource_waiting: gauge("agentvisor_resource_waiting", "Resource requests waiting (FIFO)."),
            jobs: gauge_vec("agentvisor_jobs", "Background jobs (AsyncProcessor) per state.", &["state"]),
            job_attempts: counter_vec(
                "agentvisor_job_attempts_total",
                "Background job attempts by outcome (ok, or the error code).",
                &["outcome"],
            ),
            job_duration: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "agentvisor_job_duration_seconds",
                        "Submission to end of finished background jobs, retries included.",
                    )
                    .buckets(TASK_BUCKETS.to_vec()),
                )
                .expect("valid metric");
                registry.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            schedule_firings: counter_vec(
                "agentvisor_schedule_firings_total",
                "Schedule firings by outcome: submitted, misfire_run (missed while down, run once), skipped, failed.",
                &["outcome"],
            ),
            persona_changes: counter_vec(
                "agentvisor_persona_changes_total",
                "Persona changes: defined (created or replaced by task), switched (a session's persona set).",
                &["kind"],
            ),
            persona_prompts: counter_vec(
                "agentvisor_persona_prompts_total",
                "llm prompts that began with the session's persona, by agent.",
                &["agent"],
            ),
            goals: counter_vec(
                "agentvisor_goals_total",
                "Goals (GoalManager) by the state they reached: running, done, failed, cancelled.",
                &["state"],
            ),
            mood_records: counter_vec(
                "agentvisor_mood_records_total",
                "Emotions recorded by MoodTrackerAgent, by label.",
                &["label"],
            ),
            learning_records: counter_vec(
                "agentvisor_learning_records_total",
                "Records stored by the learning agents: feedback, correction, preferences.",
                &["kind"],
            ),
            trust_outcomes: counter_vec(
                "agentvisor_trust_outcomes_total",
                "Outcomes AgentTrustScorer counted into an agent's trust: success, failure, timeout, rating.",
                &["outcome"],
            ),
            proactive_firings: counter_vec(
                "agentvisor_proactive_firings_total",
                "ProactiveAgent rule firings, by rule and outcome: ok (a suggestion stored and published), failed.",
                &["rule", "outcome"],
            ),
            web_fetches: counter_vec(
                "agentvisor_web_fetches_total",
                "UnifiedWebAgent fetches by outcome: ok, forbidden, robots_denied, timeout, failed, invalid_field.",
                &["outcome"],
            ),
            file_ops: counter_vec(
                "agentvisor_file_ops_total",
                "FileSystemAssistantAgent operations (list, read, search) by outcome.",
                &["op", "outcome"],
            ),
            audio_ops: counter_vec(
                "agentvisor_audio_ops_total",
                "Audio agents' operations (preprocess, resample, vad, profile, features, wake_word, language, route) by outcome.",
                &["op", "outcome"],
            ),
            dreaming_runs: counter_vec(
                "agentvisor_dreaming_runs_total",
                "DreamingModeAgent consolidations by outcome: ran, dry_run, not_idle, in_progress, failed.",
                &["outcome"],
            ),
            memories_consolidated: counter_vec(
                "agentvisor_memories_consolidated_total",
                "Memories changed by consolidation: merged, summarised, promoted, deleted.",
                &["action"],
            ),
            provider_routes: counter_vec(
                "agentvisor_provider_routes_total",
                "AdvancedRouter choices by strategy (cheapest, fastest) and outcome (chosen, none).",
                &["strategy", "outcome"],
            ),
            remote_checks: counter_vec(
                "agentvisor_remote_checks_total",
                "RemoteConnectorAgent health checks by link kind and resulting state (connected, down).",
                &["kind", "state"],
            ),
            cache_lookups: counter_vec(
                "agentvisor_cache_lookups_total",
                "Response cache lookups by outcome: hit, miss.",
                &["outcome"],
            ),
            cache_evictions: counter_vec(
                "agentvisor_cache_evictions_total",
                "Response cache entries evicted, by cause: size (the size bound), expired (the TTL).",
                &["cause"],
            ),
            cache_entries: gauge("agentvisor_cache_entries", "Entries in the response cache."),
            cache_bytes: gauge("agentvisor_cache_bytes", "Bytes held by the response cache (keys and answers)."),
            context_summaries: counter_vec(
                "agentvisor_context_summaries_total",
                "Token governor summaries by trigger (target, hard_max, task, monitor) and outcome (ok, failed, nothing_to_summarize).",
                &["trigger", "outcome"],
            ),
            context_exhausted: counter_vec(
                "agentvisor_context_exhausted_total",
                "llm tasks refused with context_exhausted (above the hard max, summarising failed), by agent.",
                &["agent"],
            ),
            policy_decisions: counter_vec(
                "agentvisor_policy_decisions_total",
                "Tasks the policy gate checked, by task type, decision (allow|deny) and who decided (rule|model|default).",
                &["task_type", "decision", "by"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_metrics_register() {
        let m = super::Metrics::new();
        let text = m.render();
        assert!(text.contains("agentvisor_build_info{version="), "{text}");
    }
}
