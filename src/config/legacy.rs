//! The earlier system's single-file catalog (`startup_config.yaml`):
//!
//! ```yaml
//! agent_groups:
//!   core_services:
//!     SomeAgent: {script_path: agents/some_agent.py, port: 7200,
//!                 health_check_port: 8200, required: true,
//!                 dependencies: [], config: {key: value}}
//! ```
//!
//! Each agent becomes a `process` agent in compatibility mode (DESIGN §3):
//! it runs `python3 <script_path>` (relative to the file's folder) with
//! `AGENT_NAME`, `AGENT_PORT`, `HEALTH_CHECK_PORT` and `AGENT_CONFIG_<KEY>`
//! in its environment, and is ready when `GET /health` answers 200. A
//! script that does not exist makes the agent `unavailable`, with the path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::spec::{AgentSpec, Autoload, GroupSpec, ProcessProtocol, RestartSpec, RestartType, RuntimeSpec};

#[derive(Debug, Deserialize)]
struct LegacyFile {
    agent_groups: BTreeMap<String, BTreeMap<String, LegacyAgent>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyAgent {
    script_path: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    health_check_port: Option<u16>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    autoload: Option<Autoload>,
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(default)]
    config: BTreeMap<String, serde_norway::Value>,
}

/// A single-file catalog of the earlier system, as specs: what
/// `Catalog::load` validates and builds.
pub struct LegacyCatalog {
    /// Each agent as a process agent, with the file it came from.
    pub specs: Vec<(PathBuf, AgentSpec)>,
    /// Its groups (default strategy).
    pub groups: BTreeMap<String, GroupSpec>,
    /// The file's folder: scripts and working directories resolve from it.
    pub base: PathBuf,
}

/// Reads a single-file catalog of the earlier system.
///
/// # Errors
/// The read or parse error's message.
pub fn read(path: &Path) -> Result<LegacyCatalog, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: LegacyFile = serde_norway::from_str(&text).map_err(|e| e.to_string())?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut specs = Vec::new();
    let mut groups = BTreeMap::new();
    for (group, agents) in file.agent_groups {
        groups.insert(group.clone(), GroupSpec::default());
        for (name, a) in agents {
            specs.push((path.to_path_buf(), to_spec(&base, &group, name, a)));
        }
    }
    Ok(LegacyCatalog { specs, groups, base })
}

fn to_spec(base: &Path, group: &str, name: String, a: LegacyAgent) -> AgentSpec {
    let script = base.join(&a.script_path);
    let mut env = BTreeMap::new();
    for (k, v) in &a.config {
        let value = match v {
            serde_norway::Value::String(s) => s.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        env.insert(format!("AGENT_CONFIG_{}", k.to_uppercase()), value);
    }
    let (command, unconfigured_reason) = if script.is_file() {
        (vec!["python3".to_string(), script.display().to_string()], None)
    } else {
        (Vec::new(), Some(format!("script not found: {}", script.display())))
    };
    AgentSpec {
        description: format!("earlier-system agent {}", a.script_path),
        autoload: a.autoload.unwrap_or(if a.required { Autoload::OnStartup } else { Autoload::OnDemand }),
        required: a.required,
        group: group.to_string(),
        port: a.port,
        dependencies: a.dependencies,
        role: None,
        handles: Vec::new(),
        tasks: Default::default(),
        priority: None,
        max_concurrency: 1,
        restart: RestartSpec {
            kind: if a.required { RestartType::Permanent } else { RestartType::Transient },
            max_restarts: None,
            within_secs: None,
        },
        runtime: RuntimeSpec::Process {
            command,
            protocol: ProcessProtocol::Compat,
            ready_timeout_secs: 30.0,
            env,
            cwd: Some(base.display().to_string()),
            health_port: a.health_check_port,
            unconfigured_reason,
        },
        name,
        resources: None,
        requires_validation: false,
    }
}
