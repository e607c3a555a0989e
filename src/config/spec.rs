//! Agent specs: the typed form of one `agents/<group>/<Agent>.yaml` file.
//!
//! Where it sits: the catalog loader ([`crate::config::catalog`]) reads these
//! files, the profile resolver ([`crate::config::profile`]) selects among them,
//! and the supervisor turns each selected spec into one agent actor.
//! Unknown keys are errors (`deny_unknown_fields`), as in DESIGN §3.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One agent of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Unique agent name, e.g. `ChainOfThoughtAgent`; also its actor name.
    pub name: String,
    /// Group (one supervisor per group), e.g. `reasoning_services`.
    pub group: String,
    /// `true`: essential, started with the profile. `false`: on demand.
    #[serde(default)]
    pub required: bool,
    /// When an on-demand agent starts; only `on_demand` is meaningful for
    /// `required: false` agents (profiles may still autoload them at boot).
    #[serde(default)]
    pub autoload: Autoload,
    /// One-line summary of what the agent does (shown by `agents`).
    #[serde(default)]
    pub description: String,
    /// The port the earlier system gave this agent; used only by `process`
    /// agents in compatibility mode (`AGENT_PORT`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Names of agents that must be running before this one starts.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Optional role: `arbiter`, `coding-specialist`, `reasoning-specialist`,
    /// `analysis-specialist`, `interpreter-specialist`, ...
    #[serde(default)]
    pub role: Option<String>,
    /// Task types this agent answers (the `type` field of a task envelope).
    #[serde(default)]
    pub handles: Vec<String>,
    /// Schemas of the task types this agent handles, for those not declared
    /// in Rust (llm, process, and builtin behaviours not written yet); see
    /// [`crate::agents::tasks`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskSpec>,
    /// Tie-break when two agents claim the same task type: the higher wins.
    /// Two claimants must both set distinct priorities, else the catalog is invalid.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Most tasks this agent runs at once (default 16).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Restart policy (OTP child spec semantics).
    #[serde(default)]
    pub restart: RestartSpec,
    /// How the agent does its work.
    pub runtime: RuntimeSpec,
    /// Resources a `process` agent holds while it runs: reserved through
    /// ResourceManager's ledger before its child starts (when the profile
    /// includes ResourceManager) and released when it stops; more than the
    /// machine has makes the agent `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSpec>,
    /// `true`: every task of this agent passes the policy gate (rules, then
    /// `policy.undecided`) before it runs, as the task types listed in
    /// `policy.validate` do; default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_validation: bool,
}

/// `resources:` of a spec, base units (as `resource.request`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// CPU cores (fractional).
    #[serde(default)]
    pub cpu: f64,
    /// Host memory, bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// GPUs.
    #[serde(default)]
    pub gpu: u64,
    /// GPU memory, bytes.
    #[serde(default)]
    pub gpu_memory_bytes: u64,
    /// Ports from `resources.port_range`, a count.
    #[serde(default)]
    pub ports: u64,
}

/// The declared shape of one task type (`tasks.<type>` of a spec). Schemas
/// are JSON Schema draft 2020-12.
///
/// ```yaml
/// tasks:
///   simple_chat:
///     summary: "Answers one chat request"
///     input_schema: {type: string, minLength: 1}
///     examples: ["What is the capital of France?"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// One line saying what the task does (shown by `agentvisor tasks`).
    pub summary: String,
    /// JSON Schema of the task's `input`. Required, except for `llm` agents,
    /// whose default is a non-empty string (the request, as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of the reply's `output`. Required, except for `llm`
    /// agents, whose default is `runtime.output_schema` when set, else a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// Valid example inputs, at least one; the first is the type's example
    /// (docs, MCP, UI forms, the all-types test).
    #[serde(default)]
    pub examples: Vec<serde_json::Value>,
    /// Route this type's model calls by their content (issue 15): the
    /// complexity estimated from the request replaces the configured one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub content_routing: bool,
}

fn default_max_concurrency() -> u32 {
    16
}

/// When an agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Autoload {
    /// Starts with the profile (essential agents).
    #[default]
    OnStartup,
    /// Starts when a task first needs it (LazyLoader).
    OnDemand,
}

/// OTP restart type: when a stopped agent is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted (default; OTP `permanent`).
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (OTP `transient`).
    Transient,
    /// Never restarted (OTP `temporary`).
    Temporary,
}

/// Restart policy of one agent. Missing numbers take the daemon defaults
/// (`supervisor.max_restarts`, `supervisor.within_secs`: 3 in 5 s, as Elixir).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    /// Restart type.
    #[serde(default, rename = "type")]
    pub kind: RestartType,
    /// Restart intensity: at most this many restarts within `within_secs`.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Restart intensity window, seconds.
    #[serde(default)]
    pub within_secs: Option<f64>,
}

/// How an agent does its work (DESIGN §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuntimeSpec {
    /// Rust code in this crate (`src/agents/builtin/`).
    Builtin {
        /// Behaviour name; defaults to the agent name.
        #[serde(default)]
        behaviour: Option<String>,
    },
    /// A role prompt answered by a model through HybridRouter.
    Llm {
        /// Default task complexity for routing, 0.0–1.0.
        #[serde(default = "default_complexity")]
        complexity: f64,
        /// Most tokens in an answer.
        #[serde(default = "default_max_tokens")]
        max_tokens: u32,
        /// The agent's role prompt (system message).
        system_prompt: String,
        /// JSON output the answer must match, when the agent answers JSON.
        #[serde(default)]
        output_schema: Option<serde_json::Value>,
        /// `false`: this agent's model calls are never answered from the
        /// response cache (per-agent opt-out); default `true`.
        #[serde(default = "default_cache")]
        cache: bool,
    },
    /// An external program under supervision.
    Process {
        /// Program and arguments. Empty: not configured, the agent is
        /// `unavailable` with `unconfigured_reason`.
        #[serde(default)]
        command: Vec<String>,
        /// Wire protocol of the program.
        #[serde(default)]
        protocol: ProcessProtocol,
        /// Seconds the program has to become ready.
        #[serde(default = "default_ready_timeout")]
        ready_timeout_secs: f64,
        /// Extra environment variables for the program.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory, relative to the project root (the parent of
        /// `agents/`); default: the project root.
        #[serde(default)]
        cwd: Option<String>,
        /// `compat` protocol: the port of `GET /health` (HTTP 200 = ready).
        #[serde(default)]
        health_port: Option<u16>,
        /// Why the agent is unavailable when `command` is empty.
        #[serde(default)]
        unconfigured_reason: Option<String>,
    },
}

fn default_cache() -> bool {
    true
}

fn default_complexity() -> f64 {
    0.5
}
fn default_max_tokens() -> u32 {
    512
}
fn default_ready_timeout() -> f64 {
    10.0
}

/// Wire protocol of a `process` agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessProtocol {
    /// JSON lines over stdin/stdout: `{"ready": true}` when ready,
    /// `{"id","input"}` in, `{"id","output"}` or `{"id","error"}` out.
    #[default]
    Jsonl,
    /// The earlier system's agents: readiness is HTTP `GET /health` on
    /// `health_port`; stdout is only logged.
    Compat,
}

/// The kind of runtime, without its settings (for tables and metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Rust code in this crate.
    Builtin,
    /// Role prompt answered by a model.
    Llm,
    /// External program.
    Process,
}

impl RuntimeKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Builtin => "builtin",
            RuntimeKind::Llm => "llm",
            RuntimeKind::Process => "process",
        }
    }
}

impl RuntimeSpec {
    /// The kind of this runtime.
    pub fn kind(&self) -> RuntimeKind {
        match self {
            RuntimeSpec::Builtin { .. } => RuntimeKind::Builtin,
            RuntimeSpec::Llm { .. } => RuntimeKind::Llm,
            RuntimeSpec::Process { .. } => RuntimeKind::Process,
        }
    }
}

impl AgentSpec {
    /// The builtin behaviour this agent runs: `runtime.behaviour`, else its name.
    pub(crate) fn behaviour_name(&self) -> &str {
        match &self.runtime {
            RuntimeSpec::Builtin { behaviour: Some(b) } => b,
            _ => &self.name,
        }
    }

    /// `true` when the agent starts only on demand.
    pub fn on_demand(&self) -> bool {
        !self.required
    }
}

/// Optional per-group settings, `agents/<group>/_group.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Restart strategy of the group supervisor (OTP names).
    #[serde(default)]
    pub strategy: Strategy,
    /// One-line summary of the group.
    #[serde(default)]
    pub description: String,
}

/// Group restart strategy (OTP supervisor strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the agent that failed (default).
    #[default]
    OneForOne,
    /// Restart every agent of the group when one fails.
    OneForAll,
    /// Restart the failed agent and the agents of its group started after it.
    RestForOne,
}

impl Strategy {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}
