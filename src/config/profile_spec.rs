//! Profile files (`profiles/<name>.yaml`): the earlier system's schema.
//!
//! Where it sits: read by [`crate::config::profile::resolve`], which turns a
//! profile and a catalog into the set of agents a run includes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One profile file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Name and description.
    pub profile: ProfileMeta,
    /// Which agents the run includes.
    #[serde(default)]
    pub agent_selection: AgentSelection,
    /// Free-form resource overrides (kept for the resource manager; not used yet).
    #[serde(default)]
    pub resource_overrides: BTreeMap<String, serde_json::Value>,
    /// Boot settings.
    #[serde(default)]
    pub startup: StartupSpec,
}

/// `profile:` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileMeta {
    /// Profile name (`core`, `vision`, ...).
    pub name: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
}

/// `agent_selection:` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSelection {
    /// Groups whose agents (essential and on-demand) are included.
    #[serde(default)]
    pub include_groups: Vec<String>,
    /// Single agents from other groups.
    #[serde(default)]
    pub include_agents: Vec<String>,
    /// Groups removed from the selection.
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    /// Single agents removed from the selection.
    #[serde(default)]
    pub exclude_agents: Vec<String>,
    /// On-demand agents: `all` (default: those of the included groups stay),
    /// `false` (none of the included groups' on-demand agents), or
    /// `{include: [..]}` (these, added to the selection).
    #[serde(default)]
    pub optional_agents: Option<OptionalAgents>,
    /// On-demand agents started at boot (with their dependencies).
    #[serde(default)]
    pub autoload_on_startup: Vec<String>,
}

/// `optional_agents:` — `all`, `false`, or `{include: [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionalAgents {
    /// `true` / `false`.
    Flag(bool),
    /// `all` written as a string.
    Word(String),
    /// `{include: [...]}`: add these on-demand agents.
    List {
        /// Agent names.
        include: Vec<String>,
    },
}

/// `startup:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupSpec {
    /// Seconds the whole boot may take before `run` reports it as late.
    #[serde(default = "default_boot_timeout")]
    pub timeout_seconds: f64,
    /// Readiness polls for compatibility agents (HTTP `/health`).
    #[serde(default = "default_retries")]
    pub health_check_retries: u32,
    /// Agents of one start wave started at once.
    #[serde(default = "default_parallel")]
    pub parallel_starts: usize,
}

impl Default for StartupSpec {
    fn default() -> Self {
        StartupSpec {
            timeout_seconds: default_boot_timeout(),
            health_check_retries: default_retries(),
            parallel_starts: default_parallel(),
        }
    }
}

fn default_boot_timeout() -> f64 {
    90.0
}
fn default_retries() -> u32 {
    10
}
fn default_parallel() -> usize {
    4
}
