//! Configuration: daemon settings, the agent catalog and profiles.
//!
//! Where it sits: the first thing `run`, `check` and `agents` do. Settings
//! come from built-in defaults < `agentvisor.yaml` (optional) <
//! `AGENTVISOR__SECTION__KEY` environment variables < command-line flags
//! (DESIGN §10). Every struct rejects unknown keys.

pub mod catalog;
pub mod knowledge;
pub mod legacy;
pub mod media;
pub mod policy;
pub mod profile;
pub mod profile_spec;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors while reading settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file, an environment variable or a flag did not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The named config file does not exist.
    #[error("config file not found: {0}")]
    MissingFile(PathBuf),
}

impl ConfigError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Invalid(_) => "invalid_config",
            ConfigError::MissingFile(_) => "config_not_found",
        }
    }
}

/// All daemon settings (`agentvisor.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the SQLite database and run-time files live.
    pub data_dir: PathBuf,
    /// Where GGUF model files live.
    pub models_dir: PathBuf,
    /// The catalog folder (`agents/<group>/<Agent>.yaml`). Its parent is the
    /// project root: process agents run there and their relative paths
    /// resolve from there.
    pub agents_dir: PathBuf,
    /// Folder of named profiles (`profiles/<name>.yaml`).
    pub profiles_dir: PathBuf,
    /// HTTP server (ObservabilityHub).
    pub http: HttpSettings,
    /// ZeroMQ task bus.
    pub bus: BusSettings,
    /// On-demand starts.
    pub lazy_loader: LazyLoaderSettings,
    /// Task calls between agents.
    pub tasks: TaskSettings,
    /// Supervision defaults.
    pub supervisor: SupervisorSettings,
    /// Hybrid routing rules, tiers, failover and circuit breakers.
    pub routing: RoutingSettings,
    /// Model backends by name (`backends: {local: {kind: openai, base_url: ...}}`).
    /// Default: `local` (embedded, L1, the default model) enabled; `cloud_fast`
    /// (L2) and `cloud_large` (L3) configured for OpenAI but disabled.
    pub backends: BTreeMap<String, BackendSettings>,
    /// Local models: ModelManagerSuite and VRAMOptimizerAgent.
    pub models: ModelSettings,
    /// The SQLite store: audit writes (receipts).
    pub store: StoreSettings,
    /// Commands for `process` agents, overriding the catalog's `runtime.command`
    /// (e.g. `agent_commands: {STTService: [python3, my_stt.py]}`).
    pub agent_commands: BTreeMap<String, Vec<String>>,
    /// The Executor agent's sandbox.
    pub executor: ExecutorSettings,
    /// Tokens on every door: static tokens, admin task types, the failure
    /// rate limit, web-UI sessions.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// Switches that exist only for tests.
    pub testing: TestingSettings,
    /// ResourceManager's capacities (detected at start; each key set here overrides).
    pub resources: ResourceSettings,
    /// AsyncProcessor's background jobs.
    #[serde(rename = "async")]
    pub jobs: JobSettings,
    /// DynamicIdentityAgent's personas defined in YAML (read-only).
    pub identity: IdentitySettings,
    /// MoodTrackerAgent's decay.
    pub mood: MoodSettings,
    /// ProactiveAgent's trigger rules.
    pub proactive: ProactiveSettings,
    /// UnifiedWebAgent's limits and allowed hosts.
    pub web: knowledge::WebSettings,
    /// FileSystemAssistantAgent's roots.
    pub files: knowledge::FilesSettings,
    /// Memory tiers: importance decay and promotion.
    pub memory: knowledge::MemoryTierSettings,
    /// DreamingModeAgent's idle-time consolidation.
    pub dreaming: knowledge::DreamingSettings,
    /// The arbiter's loop (ModelOrchestrator).
    pub arbiter: ArbiterSettings,
    /// The token governor (ContextManager, ProactiveContextMonitor).
    pub context: ContextSettings,
    /// The response cache (CacheManager) in front of HybridRouter.
    pub cache: CacheSettings,
    /// The policy gate in front of risky tasks (`code.execute`, ...).
    pub policy: policy::PolicySettings,
    /// AgentTrustScorer's Beta posterior: decay, prior, floor.
    pub trust: TrustSettings,
    /// Where media files given by `path` may live (the audio agents).
    pub media: media::MediaSettings,
    /// WakeWordDetector's words and threshold.
    pub wake_word: media::WakeWordSettings,
    /// StreamingLanguageAnalyzer's target language.
    pub language: media::LanguageSettings,
}

/// `trust:` — AgentTrustScorer's trust per agent: a Beta posterior over
/// "the agent's next answer is good", from successes, failures, timeouts
/// and users' ratings, each weighed by `2^(−age / half_life_secs)`
/// (docs/learning.md gives the formula).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// Seconds after which an outcome weighs half as much; default 604 800
    /// (one week). Must be > 0.
    pub half_life_secs: f64,
    /// The prior's pseudo-successes (α₀ of Beta(α₀, β₀)); default 1
    /// (with `prior_failures` 1: the uniform prior, an unknown agent scores 0.5). Must be > 0.
    pub prior_successes: f64,
    /// The prior's pseudo-failures (β₀); default 1. Must be > 0.
    pub prior_failures: f64,
    /// Observations one rating counts as: a rating r of 1–5 adds
    /// `weight × (r − 1) / 4` to the successes and `weight × (5 − r) / 4` to
    /// the failures; default 1. Must be ≥ 0.
    pub rating_weight: f64,
    /// Below this score an agent is `below_floor` (the arbiter passes such
    /// a specialist over); 0..=1, default 0.25.
    pub floor: f64,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            half_life_secs: 604_800.0,
            prior_successes: 1.0,
            prior_failures: 1.0,
            rating_weight: 1.0,
            floor: 0.25,
        }
    }
}

impl TrustSettings {
    /// Every problem of the trust settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("half_life_secs", self.half_life_secs),
            ("prior_successes", self.prior_successes),
            ("prior_failures", self.prior_failures),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                out.push(format!("trust.{name} {v} is not a positive number"));
            }
        }
        if !(self.rating_weight >= 0.0 && self.rating_weight.is_finite()) {
            out.push(format!("trust.rating_weight {} is not a number >= 0", self.rating_weight));
        }
        if !(0.0..=1.0).contains(&self.floor) {
            out.push(format!("trust.floor {} is not within 0..=1", self.floor));
        }
        out
    }
}

/// `arbiter:` — the arbiter's loop (issue 15): consult a specialist, review
/// its answer, revise, until accepted, `max_iterations` or the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArbiterSettings {
    /// Most specialist consultations per task (default 4; the earlier
    /// system's 100 is a ceiling, not a default). 0 is read as 1.
    pub max_iterations: u32,
    /// Review each answer with the arbiter's model (accept, revise, change
    /// phase, ask the user); `false`: the first answer is the answer.
    pub review: bool,
    /// Most tokens of the arbiter's own decisions (choice, review).
    pub decision_max_tokens: u32,
}

impl Default for ArbiterSettings {
    fn default() -> Self {
        ArbiterSettings { max_iterations: 4, review: true, decision_max_tokens: 160 }
    }
}

/// `context:` — the token governor (ContextManager). Ratios are of the
/// serving model's context window; the defaults 0.50 and 0.75 are the
/// earlier system's token governor ("target context use 0.50, hard max
/// 0.75", seed 003).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextSettings {
    /// At or above this share of the window a session's older turns are
    /// summarised before its next prompt is sent; default 0.50.
    pub target_ratio: f64,
    /// Above this share an llm task is not sent as is: summarised first, or
    /// refused with `context_exhausted`; default 0.75.
    pub hard_max_ratio: f64,
    /// ProactiveContextMonitor summarises a session in the background when
    /// a `context.usage` event reports at least this share (so the next
    /// turn does not wait for it); default 0.50 (the target).
    pub monitor_ratio: f64,
    /// The newest turns kept word for word when the older ones are
    /// summarised; default 2 (the last exchange).
    pub keep_turns: u32,
    /// Most tokens of a summary; default 128.
    pub summary_max_tokens: u32,
    /// The backend (a name under `backends:`) that writes summaries; unset:
    /// HybridRouter decides like for any call.
    pub summarizer_backend: Option<String>,
}

impl Default for ContextSettings {
    fn default() -> Self {
        ContextSettings {
            target_ratio: 0.5,
            hard_max_ratio: 0.75,
            monitor_ratio: 0.5,
            keep_turns: 2,
            summary_max_tokens: 128,
            summarizer_backend: None,
        }
    }
}

impl ContextSettings {
    /// Every problem of the governor's settings: ratios within 0..=1, the
    /// target not above the hard max.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("target_ratio", self.target_ratio),
            ("hard_max_ratio", self.hard_max_ratio),
            ("monitor_ratio", self.monitor_ratio),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                out.push(format!("context.{name} {v} is not within (0, 1]"));
            }
        }
        if self.target_ratio > self.hard_max_ratio {
            out.push(format!(
                "context.target_ratio {} is above context.hard_max_ratio {}",
                self.target_ratio, self.hard_max_ratio
            ));
        }
        out
    }
}

/// `cache:` — the response cache HybridRouter consults for deterministic
/// requests while CacheManager runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// `false`: no response is cached or served from the cache (benchmarks
    /// of the model path turn it off); default `true`.
    pub enabled: bool,
    /// Seconds an entry lives; default 300.
    pub ttl_secs: f64,
    /// The size bound: bytes of cached keys and answers; default 64 MiB.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings { enabled: true, ttl_secs: 300.0, max_bytes: 64 << 20 }
    }
}

/// `identity:` — personas defined in YAML, by name (`identity: {personas:
/// {butler: {system_prompt: "...", voice: en-gb, tone: formal}}}`). Tasks
/// cannot change them; `identity.set` may create others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// The personas, by name.
    pub personas: BTreeMap<String, PersonaSettings>,
}

/// One persona defined in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaSettings {
    /// Put before every llm agent's own system prompt in the sessions using it.
    pub system_prompt: String,
    /// TTS voice (e.g. `en-us`).
    #[serde(default)]
    pub voice: Option<String>,
    /// Tone (e.g. `friendly`, `formal`).
    #[serde(default)]
    pub tone: Option<String>,
}

/// `mood:` — MoodTrackerAgent's exponential decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoodSettings {
    /// Seconds after which a recorded emotion weighs half as much; default
    /// 3600 (one hour). Values ≤ 0 are read as 1 ms.
    pub half_life_secs: f64,
}

impl Default for MoodSettings {
    fn default() -> Self {
        MoodSettings { half_life_secs: 3600.0 }
    }
}

/// `proactive:` — ProactiveAgent's trigger rules and its suggestion store.
/// Checked when the settings load ([`ProactiveSettings::problems`]: every
/// bad rule named) and again when the agent starts (the rule's agent must be
/// in the fleet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProactiveSettings {
    /// The rules, each fired independently.
    pub rules: Vec<ProactiveRule>,
    /// Suggestions kept in SQLite (the newest; older ones are deleted); default 200.
    pub keep: u32,
    /// The llm agent asked for a suggestion's text when a rule names none;
    /// default `ChitchatAgent` (the agent of `simple_chat`).
    pub default_agent: String,
}

impl Default for ProactiveSettings {
    fn default() -> Self {
        ProactiveSettings { rules: Vec::new(), keep: 200, default_agent: "ChitchatAgent".into() }
    }
}

/// One trigger rule: when it fires, `agent` is asked to write a suggestion from `prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProactiveRule {
    /// Unique name (the `trigger` of its suggestions).
    pub name: String,
    /// When it fires: exactly one kind.
    pub when: ProactiveWhen,
    /// What the llm agent is asked (the user, mood level or idle time is appended).
    pub prompt: String,
    /// The llm agent that writes the text; default `proactive.default_agent`.
    #[serde(default)]
    pub agent: Option<String>,
    /// The session its suggestions are for (optional).
    #[serde(default)]
    pub session: Option<String>,
    /// `false`: listed, never fired. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A rule's condition: exactly one of `every_seconds`, `cron`, `mood_below`,
/// `idle_seconds`, `context_above`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProactiveWhen {
    /// Schedule: every this many seconds (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<f64>,
    /// Schedule: a cron pattern (5 fields, or 6 with seconds first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron pattern's IANA zone; default UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Mood drop: fires when a user's mood level (−1 … 1: decayed joy minus
    /// decayed sadness, anger, fear and disgust) falls below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mood_below: Option<f64>,
    /// Idle user: fires when no task from the user was accepted for this many seconds (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<f64>,
    /// Context usage: fires when a `context.usage` event's ratio (0 … 1) is
    /// above this. ContextManager (issue 14) does not publish them yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_above: Option<f64>,
    /// `mood_below` and `idle_seconds`: only this user (default: every user seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ProactiveSettings {
    /// Every problem of the rules, each naming its rule; empty: all good.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let name = if r.name.trim().is_empty() { format!("#{i}") } else { format!("{:?}", r.name) };
            let mut bad = |m: String| out.push(format!("proactive.rules[{i}] ({name}): {m}"));
            if r.name.trim().is_empty() {
                bad("name is empty".into());
            } else if !seen.insert(r.name.clone()) {
                bad("name is used by an earlier rule".into());
            }
            if r.prompt.trim().is_empty() {
                bad("prompt is empty".into());
            }
            let w = &r.when;
            let kinds = [
                w.every_seconds.is_some(),
                w.cron.is_some(),
                w.mood_below.is_some(),
                w.idle_seconds.is_some(),
                w.context_above.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => {
                    bad("when names no condition (every_seconds, cron, mood_below, idle_seconds or context_above)"
                        .into())
                }
                1 => {}
                n => bad(format!("when names {n} conditions; one per rule")),
            }
            if let Some(e) = w.every_seconds.filter(|e| !(e.is_finite() && *e > 0.0)) {
                bad(format!("every_seconds {e} is not > 0"));
            }
            if let Some(c) = &w.cron {
                let parsed = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .year(croner::parser::Year::Disallowed)
                    .build()
                    .parse(c);
                if let Err(e) = parsed {
                    bad(format!("cron {c:?}: {e}"));
                }
            }
            if let Some(tz) = &w.timezone {
                if w.cron.is_none() {
                    bad("timezone is only for cron".into());
                } else if tz.parse::<chrono_tz::Tz>().is_err() {
                    bad(format!("unknown timezone {tz:?} (IANA, e.g. Europe/Berlin)"));
                }
            }
            if let Some(l) = w.mood_below.filter(|l| !(-1.0..=1.0).contains(l)) {
                bad(format!("mood_below {l} is not within -1..=1"));
            }
            if let Some(s) = w.idle_seconds.filter(|s| !(s.is_finite() && *s > 0.0)) {
                bad(format!("idle_seconds {s} is not > 0"));
            }
            if let Some(l) = w.context_above.filter(|l| !(0.0..=1.0).contains(l)) {
                bad(format!("context_above {l} is not within 0..=1"));
            }
            if w.user.is_some() && w.mood_below.is_none() && w.idle_seconds.is_none() {
                bad("user is only for mood_below and idle_seconds".into());
            }
            if r.agent.as_deref().is_some_and(|a| a.trim().is_empty()) {
                bad("agent is empty".into());
            }
        }
        if self.keep == 0 {
            out.push("proactive.keep must be ≥ 1".into());
        }
        out
    }
}

/// `resources:` — what ResourceManager's ledger grants. Each capacity is
/// detected at start (CPU cores and host memory through `sysinfo`, GPUs and
/// their memory through NVML where present, else 0) unless set here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSettings {
    /// CPU cores (fractional); default: the cores the OS reports.
    pub cpu: Option<f64>,
    /// Host memory, bytes; default: total host memory.
    pub memory_bytes: Option<u64>,
    /// GPUs; default: NVML's device count (0 without a driver).
    pub gpu: Option<u64>,
    /// GPU memory, bytes; default: the devices' total memory through NVML (0 without).
    pub gpu_memory_bytes: Option<u64>,
    /// Ports granted by `ports` requests: the inclusive range `[first, last]`.
    /// Default `[20000, 20999]`.
    pub port_range: [u16; 2],
}

impl Default for ResourceSettings {
    fn default() -> Self {
        ResourceSettings {
            cpu: None,
            memory_bytes: None,
            gpu: None,
            gpu_memory_bytes: None,
            port_range: [20000, 20999],
        }
    }
}

/// `async:` — AsyncProcessor's background jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Jobs running at once, at most; default (`null` or 0): the number of CPU cores.
    pub max_running: Option<usize>,
    /// Finished jobs (done, failed, cancelled) are deleted this many seconds
    /// after they end; default 7 days.
    pub retention_secs: f64,
    /// First retry delay, seconds; doubles per attempt up to `retry_max_secs`
    /// (with ±20 % jitter). Default 0.5.
    pub retry_initial_secs: f64,
    /// Longest retry delay, seconds. Default 30.
    pub retry_max_secs: f64,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings { max_running: None, retention_secs: 7.0 * 86_400.0, retry_initial_secs: 0.5, retry_max_secs: 30.0 }
    }
}

impl JobSettings {
    /// `max_running`, or the number of CPU cores (at least 1).
    pub fn max_running(&self) -> usize {
        match self.max_running {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            models_dir: PathBuf::from("./models"),
            agents_dir: PathBuf::from("./agents"),
            profiles_dir: PathBuf::from("./profiles"),
            http: HttpSettings::default(),
            bus: BusSettings::default(),
            lazy_loader: LazyLoaderSettings::default(),
            tasks: TaskSettings::default(),
            supervisor: SupervisorSettings::default(),
            agent_commands: BTreeMap::new(),
            backends: default_backends(),
            models: ModelSettings::default(),
            store: StoreSettings::default(),
            routing: RoutingSettings::default(),
            executor: ExecutorSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
            testing: TestingSettings::default(),
            resources: ResourceSettings::default(),
            jobs: JobSettings::default(),
            identity: IdentitySettings::default(),
            mood: MoodSettings::default(),
            proactive: ProactiveSettings::default(),
            arbiter: ArbiterSettings::default(),
            web: Default::default(),
            files: Default::default(),
            memory: Default::default(),
            dreaming: Default::default(),
            context: ContextSettings::default(),
            cache: CacheSettings::default(),
            policy: Default::default(),
            trust: TrustSettings::default(),
            media: Default::default(),
            wake_word: Default::default(),
            language: Default::default(),
        }
    }
}

/// The default model: SmolLM2-135M-Instruct, Q4_1 GGUF (DESIGN §6); a
/// model's name is its file name without `.gguf`.
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct.Q4_1";

/// `tasks:` — how long a task may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSettings {
    /// Seconds a task without a deadline may take, end to end: an agent's
    /// call to another agent, and an llm agent's model call (the embedded
    /// and HTTP backends have their own `total_timeout_secs` inside it).
    /// 300 s, the longest default backend timeout, so a slow local model is
    /// not cut short by its caller.
    pub call_timeout_secs: f64,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings { call_timeout_secs: 300.0 }
    }
}

impl TaskSettings {
    /// `call_timeout_secs` as a duration (at least 1 ms).
    pub(crate) fn call_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.call_timeout_secs.max(0.001)).unwrap_or(std::time::Duration::MAX)
    }
}

/// Default `store.receipts_batch` (evaluated at compile time).
pub const DEFAULT_RECEIPTS_BATCH: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1024).unwrap();

/// `store:` — the SQLite store's audit writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Receipts per SQLite transaction, at most (group commit), and the
    /// number that may wait in the writer's queue; a reply never waits for
    /// its receipt's insert. A crash (SIGKILL) loses at most 2 × this many
    /// receipts (one batch committing, one queued); a clean stop none.
    /// The queue is the slack for a slow disk: a stall of the store thread
    /// longer than the queue lasts holds model calls back (counted).
    /// 1 ..= 1 048 576 (larger is capped); default 1024 (a fifth of a
    /// second of 5 000 replies/s).
    pub receipts_batch: std::num::NonZeroUsize,
    /// Milliseconds a batch that is not full waits for more receipts before
    /// it commits (the writer's linger, as Kafka's `linger.ms` or
    /// PostgreSQL's `commit_delay`): under load, fewer and larger
    /// transactions; a lone receipt is stored this much later. It never
    /// delays a reply, and the crash bound stays 2 × `receipts_batch`.
    /// 0 commits at once; default 5.
    pub receipts_linger_ms: u64,
}

impl StoreSettings {
    /// `receipts_linger_ms` as a duration.
    pub(crate) fn receipts_linger(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.receipts_linger_ms)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { receipts_batch: DEFAULT_RECEIPTS_BATCH, receipts_linger_ms: 5 }
    }
}

/// `http:` — the ObservabilityHub HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Listen address, `host:port` (port 0 picks a free port).
    pub listen: String,
    /// `/v1/chat/completions` refuses a `model` no backend serves
    /// (`400 invalid_field` listing the known ones). Off by default: such a
    /// name (OpenAI clients send `gpt-4o` and the like) is routed as `auto`.
    /// MCP's `_model` and the bus envelope's `model` are always strict.
    pub strict_models: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { listen: "127.0.0.1:9000".into(), strict_models: false }
    }
}

/// `bus:` — ZeroMQ endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// ROUTER endpoint for tasks.
    pub ingress: String,
    /// PUB endpoint for events.
    pub events: String,
    /// Largest accepted task message, bytes.
    pub max_message_bytes: usize,
    /// Most tasks waiting in the admission queue (all agents together);
    /// past it a task is answered `busy`.
    pub max_queue: usize,
    /// Agent that takes tasks of an unknown type (`None`: `unknown_task_type`).
    pub default_agent: Option<String>,
    /// Milliseconds a reply may wait to be handed to a slow or gone client
    /// before it is dropped (and counted).
    pub send_timeout_ms: u64,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            ingress: "tcp://127.0.0.1:7201".into(),
            events: "tcp://127.0.0.1:7290".into(),
            max_message_bytes: 1_048_576,
            max_queue: 65_536,
            default_agent: None,
            send_timeout_ms: 1_000,
        }
    }
}

/// `lazy_loader:` — on-demand starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LazyLoaderSettings {
    /// The start SLA: seconds an on-demand start (dependencies included) may
    /// take before it fails with `start_timeout` (30 s, the earlier system's SLA).
    pub startup_timeout_seconds: f64,
}

impl Default for LazyLoaderSettings {
    fn default() -> Self {
        LazyLoaderSettings { startup_timeout_seconds: 30.0 }
    }
}

/// `supervisor:` — restart intensity and backoff defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSettings {
    /// Restart intensity: restarts allowed within `within_secs` before an
    /// agent is `fatal` (3 in 5 s, Elixir's defaults).
    pub max_restarts: u32,
    /// Restart intensity window, seconds.
    pub within_secs: f64,
    /// First restart delay, seconds (doubles each consecutive failure).
    pub backoff_initial_secs: f64,
    /// Largest restart delay, seconds.
    pub backoff_max_secs: f64,
    /// Jitter: the delay is drawn from `[d * (1 - jitter), d]`; 0 disables it.
    pub backoff_jitter: f64,
    /// An agent that ran this long without failing starts its backoff over.
    pub reset_after_secs: f64,
    /// Seconds an agent has to stop before it is killed.
    pub shutdown_timeout_secs: f64,
    /// Seconds the whole daemon has to stop on SIGINT/SIGTERM.
    pub shutdown_deadline_secs: f64,
    /// Seconds accepted tasks get to finish on SIGINT/SIGTERM before the
    /// rest are answered `shutting_down` (the drain, before the agents stop).
    pub drain_timeout_secs: f64,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            max_restarts: 3,
            within_secs: 5.0,
            backoff_initial_secs: 0.010,
            backoff_max_secs: 5.0,
            backoff_jitter: 0.5,
            reset_after_secs: 30.0,
            shutdown_timeout_secs: 5.0,
            shutdown_deadline_secs: 30.0,
            drain_timeout_secs: 10.0,
        }
    }
}

pub use crate::core::Prefer;

/// `routing:` — how HybridRouter picks a tier and a backend (DESIGN §5;
/// defaults from the earlier system's hybrid routing rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Complexity at or above which cloud is preferred.
    pub complexity_threshold: f64,
    /// Rules by task type, first match wins.
    pub rules: Vec<RoutingRule>,
    /// Tier thresholds.
    pub tiers: TierSettings,
    /// Backends to try per tier, in order; a tier missing here uses its
    /// enabled backends in name order.
    pub chains: BTreeMap<Tier, Vec<String>>,
    /// What to do when a tier cannot serve.
    pub failover: FailoverSettings,
    /// Circuit breaker per backend.
    pub breaker: BreakerSettings,
    /// Content-aware routing (the estimate from what a request says).
    pub content: ContentRoutingSettings,
}

/// `routing.content:` — content-aware routing (issue 15): for `auto`, `/v1`
/// with `model: auto` (or none) and task types whose spec sets
/// `content_routing: true`, the request's route and complexity are estimated
/// from its text against labelled examples (`routing::content`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentRoutingSettings {
    /// Estimate at all (default true).
    pub enabled: bool,
    /// The routes and their example utterances (YAML); `None`: the shipped
    /// `routes/content.yaml`.
    pub routes_file: Option<PathBuf>,
    /// Nearest examples that vote (default 5).
    pub neighbours: usize,
    /// Confidence 0.0–1.0 below which the estimate does not decide: the
    /// arbiter asks its model, other calls keep their configured complexity
    /// (default 0.5).
    pub min_confidence: f64,
}

impl ContentRoutingSettings {
    /// Every problem of these settings (the routes file's content is
    /// checked when the router loads it).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.min_confidence) {
            problems.push(format!("routing.content.min_confidence {} is outside 0.0-1.0", self.min_confidence));
        }
        if self.neighbours == 0 {
            problems.push("routing.content.neighbours must be at least 1".to_string());
        }
        if let Some(path) = self.routes_file.as_ref().filter(|p| !p.is_file()) {
            problems.push(format!("routing.content.routes_file {} is not a file", path.display()));
        }
        problems
    }
}

impl Default for ContentRoutingSettings {
    fn default() -> Self {
        ContentRoutingSettings { enabled: true, routes_file: None, neighbours: 5, min_confidence: 0.5 }
    }
}

impl Default for RoutingSettings {
    fn default() -> Self {
        let rule = |pattern: &str, complexity: f64, prefer: Prefer| RoutingRule {
            pattern: pattern.to_string(),
            complexity,
            prefer: Some(prefer),
        };
        RoutingSettings {
            complexity_threshold: 0.7,
            rules: vec![
                rule("code_generation", 0.9, Prefer::Cloud),
                rule("large_context_reasoning", 0.95, Prefer::Cloud),
                rule("training|fine_tuning", 1.0, Prefer::Cloud),
                rule("simple_chat|greeting", 0.2, Prefer::Local),
                rule("command_parsing", 0.3, Prefer::Local),
                rule("emotion_detection", 0.4, Prefer::Local),
            ],
            tiers: TierSettings::default(),
            chains: BTreeMap::new(),
            failover: FailoverSettings::default(),
            breaker: BreakerSettings::default(),
            content: ContentRoutingSettings::default(),
        }
    }
}

/// One routing rule: task types matching `pattern` (a regex, anchored at
/// both ends) get `complexity` and `prefer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    /// Regex over the task type, e.g. `training|fine_tuning`.
    pub pattern: String,
    /// Complexity 0.0–1.0.
    pub complexity: f64,
    /// Preferred side.
    #[serde(default)]
    pub prefer: Option<Prefer>,
}

/// `routing.tiers:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSettings {
    /// Above this many context tokens: L3.
    pub large_context_tokens: u32,
    /// Local load above this percentage: L2 instead of L1.
    pub high_load_percent: f64,
}

impl Default for TierSettings {
    fn default() -> Self {
        TierSettings { large_context_tokens: 32_000, high_load_percent: 90.0 }
    }
}

/// `routing.failover:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSettings {
    /// `fallback_to_local` (default) or `fail`: when no cloud backend can serve.
    pub cloud_unreachable: String,
    /// `degrade_to_tiny` (default) or `fail`: when local model memory is exhausted.
    pub vram_exhausted: String,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings { cloud_unreachable: "fallback_to_local".into(), vram_exhausted: "degrade_to_tiny".into() }
    }
}

/// `routing.breaker:` — circuit breaker per backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Seconds open before one half-open probe is let through.
    pub cooldown_secs: f64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failure_threshold: 5, cooldown_secs: 30.0 }
    }
}

/// Routing tier of a backend (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Local models.
    L1,
    /// Fast cloud.
    L2,
    /// Large-context cloud.
    L3,
}

/// Kind of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Any OpenAI-compatible HTTP API.
    Openai,
    /// GGUF in-process through llama.cpp (local-models issue).
    Embedded,
}

/// `backends.<name>:` — one model backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSettings {
    /// Backend kind.
    pub kind: BackendKind,
    /// Routing tier.
    pub tier: Tier,
    /// `false` keeps the backend configured but never used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Base URL up to `/v1`, e.g. `http://127.0.0.1:11434/v1` (openai kind).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Default model.
    pub model: String,
    /// Seconds to establish the connection.
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Seconds until the first token (streaming) or the response headers.
    #[serde(default = "first_token_timeout")]
    pub first_token_timeout_secs: f64,
    /// Seconds for the whole answer.
    #[serde(default = "total_timeout")]
    pub total_timeout_secs: f64,
    /// Retries after the first attempt, on retryable errors only.
    #[serde(default = "max_retries")]
    pub max_retries: u32,
    /// First retry delay, seconds (doubles, capped at `retry_max_secs`, jittered).
    #[serde(default = "retry_initial")]
    pub retry_initial_secs: f64,
    /// Largest retry delay, seconds (also caps `Retry-After`).
    #[serde(default = "retry_max")]
    pub retry_max_secs: f64,
    /// Price per 1000 prompt tokens, USD.
    #[serde(default)]
    pub price_per_1k_input_usd: f64,
    /// Price per 1000 completion tokens, USD.
    #[serde(default)]
    pub price_per_1k_output_usd: f64,
    /// Seconds the `GET /models` list is cached.
    #[serde(default = "models_ttl")]
    pub models_ttl_secs: f64,
    /// Largest context, tokens.
    #[serde(default = "context_tokens")]
    pub context_tokens: u32,
}

fn yes() -> bool {
    true
}
fn connect_timeout() -> f64 {
    5.0
}
fn first_token_timeout() -> f64 {
    30.0
}
fn total_timeout() -> f64 {
    120.0
}
fn max_retries() -> u32 {
    2
}
fn retry_initial() -> f64 {
    0.25
}
fn retry_max() -> f64 {
    8.0
}
fn models_ttl() -> f64 {
    300.0
}
fn context_tokens() -> u32 {
    8192
}

/// The default backends: the embedded default model on L1; two cloud tiers
/// configured for OpenAI's API but disabled, so nothing tries the network
/// until the user enables them and exports `OPENAI_API_KEY`.
fn default_backends() -> BTreeMap<String, BackendSettings> {
    let backend = |kind, tier, model: &str, base_url: Option<&str>, enabled, context_tokens| BackendSettings {
        kind,
        tier,
        enabled,
        base_url: base_url.map(str::to_string),
        api_key_env: base_url.map(|_| "OPENAI_API_KEY".to_string()),
        model: model.to_string(),
        connect_timeout_secs: connect_timeout(),
        first_token_timeout_secs: first_token_timeout(),
        total_timeout_secs: total_timeout(),
        max_retries: max_retries(),
        retry_initial_secs: retry_initial(),
        retry_max_secs: retry_max(),
        price_per_1k_input_usd: 0.0,
        price_per_1k_output_usd: 0.0,
        models_ttl_secs: models_ttl(),
        context_tokens,
    };
    let openai = Some("https://api.openai.com/v1");
    BTreeMap::from([
        ("local".to_string(), backend(BackendKind::Embedded, Tier::L1, DEFAULT_MODEL_NAME, None, true, 8192)),
        ("cloud_fast".to_string(), backend(BackendKind::Openai, Tier::L2, "gpt-4o-mini", openai, false, 128_000)),
        ("cloud_large".to_string(), backend(BackendKind::Openai, Tier::L3, "gpt-4.1", openai, false, 1_000_000)),
    ])
}

/// `models:` — local GGUF models (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Seconds a loaded model may stay unused before it is unloaded.
    pub idle_timeout_secs: f64,
    /// Context size per loaded model, tokens (capped by the model's own).
    pub context_tokens: u32,
    /// CPU threads per generation; 0: every core.
    pub threads: u32,
    /// Prompt tokens decoded per batch.
    pub batch_tokens: u32,
    /// Generations running at once, across models (CPU-bound: 1 on small machines).
    pub parallel: usize,
    /// Share of the device's memory (GPU with NVML, else host) that loaded
    /// models may use, percent.
    pub vram_budget_percentage: f64,
    /// A fixed budget, bytes; overrides the percentage when set.
    pub memory_budget_bytes: Option<u64>,
    /// Read GPU memory through NVML when the library and a GPU are present.
    pub gpu: bool,
    /// NVML device index.
    pub gpu_device: u32,
    /// Seconds between two memory readings of VRAMOptimizerAgent.
    pub poll_secs: f64,
    /// The degrade target (`degrade_to_tiny`); unset: the smallest file in `models_dir`.
    pub tiny_model: Option<String>,
    /// Hot-model preference bound: a queued request for another model waits
    /// at most this many hot-model requests of its priority.
    pub hot_model_fairness: u32,
    /// Most requests waiting in the local queue; more are answered `busy`.
    pub queue_limit: usize,
    /// `max_tokens` when a request sets none.
    pub default_max_tokens: u32,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            idle_timeout_secs: 300.0,
            context_tokens: 2048,
            threads: 0,
            batch_tokens: 512,
            parallel: 1,
            vram_budget_percentage: 80.0,
            memory_budget_bytes: None,
            gpu: true,
            gpu_device: 0,
            poll_secs: 5.0,
            tiny_model: None,
            hot_model_fairness: 4,
            queue_limit: 256,
            default_max_tokens: 512,
        }
    }
}

/// `executor:` — the Executor agent's sandbox for `code.execute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    /// `true`/`false`; unset: enabled only when the bus and HTTP listen on
    /// loopback addresses.
    pub enabled: Option<bool>,
    /// Wall-clock limit per snippet, seconds.
    pub timeout_secs: f64,
    /// Address-space limit per snippet (RLIMIT_AS), bytes.
    pub memory_bytes: u64,
    /// Most bytes kept of stdout and of stderr each.
    pub output_bytes: usize,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings { enabled: None, timeout_secs: 10.0, memory_bytes: 512 * 1024 * 1024, output_bytes: 65_536 }
    }
}

/// `true` when `hostport`'s host is `localhost` or a loopback address.
fn host_is_loopback(hostport: &str) -> bool {
    let host = hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `true` for an `ipc://` endpoint or a `tcp://` one on loopback.
fn endpoint_is_local(endpoint: &str) -> bool {
    match endpoint.split_once("://") {
        Some(("ipc", _)) => true,
        Some(("tcp", rest)) => host_is_loopback(rest),
        _ => false,
    }
}

/// `auth:` — tokens on every door (AuthenticationAgent, issue 18). Doors
/// are open while no token exists and every listener is on loopback; once a
/// token exists (created with `agentvisor token create`, or configured
/// here or in `AGENTVISOR_TOKEN`), every door but `/health` and `/ready`
/// asks for one. A non-loopback listener without any token refuses to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// A file of static tokens (e.g. a Docker secret): one per line,
    /// `<token> [<subject> [<scope>,<scope>...]]`, `#` comments; subject
    /// default `operator`, scopes default `tasks,admin,read`; a token has at
    /// least 32 characters. The `AGENTVISOR_TOKEN` environment variable adds
    /// one more line. Static tokens cannot be revoked by task: remove the line.
    pub tokens_file: Option<PathBuf>,
    /// Task types that need the `admin` scope (every other type needs
    /// `tasks`). A task that wraps another (`async.submit`,
    /// `schedule.add`: an input with a `task` object) needs the wrapped
    /// task's scope too.
    pub admin_tasks: Vec<String>,
    /// Serve `/metrics` without a token on a non-loopback listener (a
    /// loopback listener never asks).
    pub public_metrics: bool,
    /// Allow the PUB socket (`bus.events`) on a non-loopback address. It
    /// cannot authenticate subscribers, so the daemon refuses that unless
    /// this is set.
    pub public_events: bool,
    /// Failed attempts a client may make per minute (the rate of a GCRA
    /// bucket, `governor`); past the burst it is answered `rate_limited`
    /// without any check until a cell frees up.
    pub failures_per_minute: u32,
    /// Failed attempts a client may make in a row before the rate applies.
    pub failure_burst: u32,
    /// Web-UI session lifetime (`auth.session`), seconds; never past the
    /// token's own expiry.
    pub session_ttl_secs: f64,
    /// How often the daemon re-reads the token table, seconds: a token
    /// created or revoked by the CLI counts within this time (one made or
    /// revoked by task counts at once).
    pub reload_secs: f64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            tokens_file: None,
            admin_tasks: [
                "system.start",
                "system.stop",
                "system.restart",
                "auth.token_create",
                "auth.token_revoke",
                "models.load",
                "models.unload",
                "vram.evict_idle",
                "registry.register",
                "registry.deregister",
                "registry.promote",
                "thresholds.adjust",
                "remote.connect",
            ]
            .map(String::from)
            .to_vec(),
            public_metrics: false,
            public_events: false,
            failures_per_minute: 30,
            failure_burst: 10,
            session_ttl_secs: 43_200.0,
            reload_secs: 1.0,
        }
    }
}

/// `log:` — tracing output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Filter in `RUST_LOG` syntax (the `RUST_LOG` variable wins when set).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".into(), format: "text".into() }
    }
}

/// `testing:` — never enable in production.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingSettings {
    /// Enables `POST /agents/{name}/fault` (a builtin agent panics in its
    /// handler), for crash tests.
    pub fault_injection: bool,
    /// Prefix of every actor name of this daemon (ractor's registry is
    /// process-wide): lets tests run several fleets in one process.
    pub actor_name_prefix: String,
}

impl Settings {
    /// Layers defaults < `file` (or `./agentvisor.yaml` when present) <
    /// `AGENTVISOR__SECTION__KEY` environment variables < `overrides`
    /// (`("http.listen", "127.0.0.1:0")`, from flags).
    ///
    /// # Errors
    /// [`ConfigError::MissingFile`] when `file` is given and absent;
    /// [`ConfigError::Invalid`] for unknown keys or wrong types anywhere.
    pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> Result<Settings, ConfigError> {
        let invalid = |e: config::ConfigError| ConfigError::Invalid(e.to_string());
        let defaults = config::Config::try_from(&Settings::default()).map_err(invalid)?;
        let mut builder = config::Config::builder().add_source(defaults);
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::MissingFile(path.to_path_buf()));
                }
                builder = builder.add_source(config::File::from(path).format(config::FileFormat::Yaml));
            }
            None => {
                builder =
                    builder.add_source(config::File::new("agentvisor.yaml", config::FileFormat::Yaml).required(false));
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("AGENTVISOR").prefix_separator("__").separator("__").try_parsing(true),
        );
        for (key, value) in overrides {
            builder = builder.set_override(key.as_str(), value.as_str()).map_err(invalid)?;
        }
        let settings: Settings = builder.build().map_err(invalid)?.try_deserialize().map_err(invalid)?;
        let mut problems = settings.proactive.problems();
        problems.extend(settings.routing.content.problems());
        problems.extend(settings.context.problems());
        problems.extend(settings.policy.problems());
        problems.extend(settings.trust.problems());
        problems.extend(settings.wake_word.problems());
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("; ")));
        }
        Ok(settings)
    }

    /// Environment variables derived from these settings for the process
    /// agent `agent` (they override the spec's `env`): the Executor gets its
    /// sandbox limits as `EXECUTOR_*`.
    pub(crate) fn process_env(&self, agent: &str) -> Vec<(String, String)> {
        match agent {
            "Executor" => {
                let e = &self.executor;
                let enabled = e.enabled.unwrap_or_else(|| self.loopback_only());
                vec![
                    ("EXECUTOR_ENABLED".into(), if enabled { "1" } else { "0" }.into()),
                    ("EXECUTOR_TIMEOUT_SECS".into(), e.timeout_secs.to_string()),
                    ("EXECUTOR_MEMORY_BYTES".into(), e.memory_bytes.to_string()),
                    ("EXECUTOR_OUTPUT_BYTES".into(), e.output_bytes.to_string()),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// `true` when the HTTP server and both bus sockets listen on loopback
    /// (or ipc), so nothing is reachable from another host.
    pub(crate) fn loopback_only(&self) -> bool {
        self.exposed_listeners().is_empty()
    }

    /// `true` when `http.listen` is a loopback address.
    pub fn http_on_loopback(&self) -> bool {
        host_is_loopback(&self.http.listen)
    }

    /// The listeners reachable from another host, by setting name
    /// (`http.listen`, `bus.ingress`, `bus.events`).
    pub fn exposed_listeners(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if !self.http_on_loopback() {
            out.push(("http.listen", self.http.listen.as_str()));
        }
        if !endpoint_is_local(&self.bus.ingress) {
            out.push(("bus.ingress", self.bus.ingress.as_str()));
        }
        if !endpoint_is_local(&self.bus.events) {
            out.push(("bus.events", self.bus.events.as_str()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_table() {
        let s = Settings::load(Some(Path::new("/nonexistent")), &[]);
        assert!(matches!(s, Err(ConfigError::MissingFile(_))));
        let s = Settings::default();
        assert_eq!(s.http.listen, "127.0.0.1:9000");
        assert_eq!(s.bus.ingress, "tcp://127.0.0.1:7201");
        assert_eq!(s.bus.events, "tcp://127.0.0.1:7290");
        assert_eq!(s.bus.max_message_bytes, 1_048_576);
        assert_eq!(s.lazy_loader.startup_timeout_seconds, 30.0);
        assert_eq!(s.store.receipts_batch.get(), 1024);
        let s = Settings::load(None, &[("store.receipts_batch".into(), "8".into())]).unwrap();
        assert_eq!(s.store.receipts_batch.get(), 8);
        let err = Settings::load(None, &[("store.receipts_batch".into(), "0".into())]).unwrap_err();
        assert!(err.to_string().contains("receipts_batch") || err.to_string().contains("nonzero"), "{err}");
    }

    #[test]
    fn arbiter_and_content_routing_settings_have_their_defaults_and_bad_values_are_named() {
        let s = Settings::default();
        assert_eq!((s.arbiter.max_iterations, s.arbiter.review), (4, true));
        assert!(s.routing.content.enabled);
        let s = Settings::load(None, &[("arbiter.max_iterations".into(), "2".into())]).unwrap();
        assert_eq!(s.arbiter.max_iterations, 2);
        let overrides = [
            ("routing.content.min_confidence".to_string(), "1.5".to_string()),
            ("routing.content.neighbours".to_string(), "0".to_string()),
            ("routing.content.routes_file".to_string(), "/nonexistent/routes.yaml".to_string()),
        ];
        let err = Settings::load(None, &overrides).unwrap_err().to_string();
        assert!(err.contains("min_confidence") && err.contains("neighbours") && err.contains("routes_file"), "{err}");
    }

    #[test]
    fn trust_settings_have_their_defaults_and_bad_values_are_named() {
        let t = Settings::default().trust;
        assert_eq!((t.half_life_secs, t.prior_successes, t.prior_failures, t.floor), (604_800.0, 1.0, 1.0, 0.25));
        let s = Settings::load(None, &[("trust.floor".into(), "0.4".into())]).unwrap();
        assert_eq!(s.trust.floor, 0.4);
        let overrides = [
            ("trust.floor".to_string(), "1.5".to_string()),
            ("trust.half_life_secs".to_string(), "0".to_string()),
            ("trust.rating_weight".to_string(), "-1".to_string()),
        ];
        let err = Settings::load(None, &overrides).unwrap_err().to_string();
        assert!(
            err.contains("trust.floor") && err.contains("half_life_secs") && err.contains("rating_weight"),
            "{err}"
        );
    }

    #[test]
    fn default_backends_are_local_only_and_cloud_tiers_switch_on_by_setting() {
        let s = Settings::default();
        let local = &s.backends["local"];
        assert_eq!((local.kind, local.tier, local.enabled), (BackendKind::Embedded, Tier::L1, true));
        assert_eq!(local.model, DEFAULT_MODEL_NAME);
        for (name, tier) in [("cloud_fast", Tier::L2), ("cloud_large", Tier::L3)] {
            let b = &s.backends[name];
            assert_eq!((b.kind, b.tier, b.enabled), (BackendKind::Openai, tier, false), "{name}");
            assert_eq!(b.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        }
        let s = Settings::load(None, &[("backends.cloud_fast.enabled".into(), "true".into())]).unwrap();
        assert!(s.backends["cloud_fast"].enabled);
        assert_eq!(s.backends["cloud_fast"].model, "gpt-4o-mini", "the rest of the default stays");
        assert_eq!(s.models.idle_timeout_secs, 300.0);
    }

    #[test]
    fn executor_is_enabled_only_on_loopback_unless_configured() {
        let mut s = Settings::default();
        assert!(s.loopback_only());
        assert!(s.process_env("Executor").contains(&("EXECUTOR_ENABLED".into(), "1".into())));
        s.bus.ingress = "tcp://0.0.0.0:7201".into();
        assert!(!s.loopback_only());
        assert!(s.process_env("Executor").contains(&("EXECUTOR_ENABLED".into(), "0".into())));
        s.executor.enabled = Some(true);
        assert!(s.process_env("Executor").contains(&("EXECUTOR_ENABLED".into(), "1".into())));
        assert!(s.process_env("TTSService").is_empty());
    }

    #[test]
    fn file_then_overrides_layer_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "http: {listen: '127.0.0.1:1'}\nsupervisor: {max_restarts: 7}\n").unwrap();
        let s = Settings::load(Some(&path), &[("http.listen".into(), "127.0.0.1:2".into())]).unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:2");
        assert_eq!(s.supervisor.max_restarts, 7);
        assert_eq!(s.supervisor.within_secs, 5.0);

        std::fs::write(&path, "http: {listne: x}\n").unwrap();
        let err = Settings::load(Some(&path), &[]).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
