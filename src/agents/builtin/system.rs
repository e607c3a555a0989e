//! UnifiedSystemAgent: the admin interface as tasks. Holds no state of its
//! own: it reads and drives the supervisor.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `system.agents` | ignored | `{"profile", "agents": [AGENT]}` (AGENT as in `GET /agents/{name}`) |
//! | `system.status` | agent name or `{"agent": NAME}` | AGENT |
//! | `system.start` | agent name or `{"agent": NAME}` | AGENT after an on-demand start (dependencies included) |
//! | `system.stop` | agent name or `{"agent": NAME}` | AGENT, now `stopped` |
//! | `system.restart` | agent name or `{"agent": NAME}` | AGENT after an operator restart (a `fatal` agent comes back) |
//!
//! AGENT is `{"name", "group", "state", "runtime", "essential", "restarts",
//! "uptime_seconds", "pid", "reason", "dependencies"}`.
//!
//! Errors: `unknown_agent`, `start_timeout`, `agent_unavailable`, `agent_fatal`, `start_failed`.
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::borrow::Cow;

use async_trait::async_trait;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::{Value, json};

use super::{AgentInput, Answer, Behaviour, unknown_type};
use crate::agents::tasks::{Ignored, OrShort, RustTask, decode, encode, rust_task};
use crate::config::spec::RuntimeKind;
use crate::core::{ErrorCode, Task, TaskError};
use crate::supervisor::state::AgentState;
use crate::supervisor::{Fleet, StartError};

/// The task types of UnifiedSystemAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    let agent = || vec![json!("ChitchatAgent"), json!({"agent": "ChitchatAgent"})];
    vec![
        rust_task::<Ignored, AgentsOutput>("system.agents", "Every agent of the run with its state", || {
            vec![Value::Null]
        }),
        rust_task::<OrShort<AgentInput>, AgentStatus>("system.status", "The state of one agent", agent),
        rust_task::<OrShort<AgentInput>, AgentStatus>(
            "system.start",
            "Starts an agent and its dependencies, if not running; answers its state",
            agent,
        ),
        rust_task::<OrShort<AgentInput>, AgentStatus>(
            "system.stop",
            "Stops an agent (not UnifiedSystemAgent itself); answers its state",
            agent,
        ),
        rust_task::<OrShort<AgentInput>, AgentStatus>(
            "system.restart",
            "Restarts an agent (a fatal one comes back); answers its state",
            agent,
        ),
    ]
}

/// The UnifiedSystemAgent behaviour.
pub struct SystemAdmin {
    /// The fleet it administers.
    pub fleet: Fleet,
}

impl SystemAdmin {
    fn status(&self, agent: &str) -> Result<AgentStatus, TaskError> {
        self.fleet
            .ctx()
            .record(agent)
            .map(|r| AgentStatus(r.to_json()))
            .ok_or_else(|| StartError::UnknownAgent(agent.to_string()).to_task_error())
    }
}

#[async_trait]
impl Behaviour for SystemAdmin {
    async fn handle(&self, task: Task) -> Answer {
        let fleet = &self.fleet;
        let t = task.task_type.as_str();
        if t == "system.agents" {
            let Ignored = decode(t, &task.input)?;
            let agents = fleet.ctx().snapshot().iter().map(|r| AgentStatus(r.to_json())).collect();
            return encode(t, AgentsOutput { profile: fleet.ctx().plan.name.clone(), agents });
        }
        if !matches!(t, "system.status" | "system.start" | "system.stop" | "system.restart") {
            return Err(unknown_type("UnifiedSystemAgent", &task));
        }
        let OrShort(AgentInput { agent }) = decode(t, &task.input)?;
        let agent = agent.0;
        match t {
            "system.start" => fleet.ensure(&agent).await.map_err(|e| e.to_task_error())?,
            "system.stop" => {
                if agent == "UnifiedSystemAgent" {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        "UnifiedSystemAgent cannot stop itself over a task; use POST /agents/UnifiedSystemAgent/stop",
                    ));
                }
                fleet
                    .stop_agent(&agent, AgentState::Stopped, "stopped by system.stop")
                    .await
                    .map_err(|e| e.to_task_error())?;
            }
            "system.restart" => fleet.restart_agent(&agent).await.map_err(|e| e.to_task_error())?,
            _ => {}
        }
        encode(t, self.status(&agent)?)
    }
}

/// The agents of the run.
#[derive(Serialize, JsonSchema)]
struct AgentsOutput {
    /// The profile the daemon runs.
    profile: String,
    /// Every agent of the run, sorted by name.
    agents: Vec<AgentStatus>,
}

/// One agent's record, as `GET /agents/{name}` shows it (made by
/// `AgentRecord::to_json`; its schema is [`AgentShape`]).
#[derive(Serialize)]
#[serde(transparent)]
struct AgentStatus(Value);

impl JsonSchema for AgentStatus {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "AgentStatus".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        AgentShape::json_schema(generator)
    }
}

/// One agent's record: its state and what the supervisor knows of it.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code, reason = "the schema of `AgentRecord::to_json`, never built")]
struct AgentShape {
    /// The agent's name.
    name: String,
    /// Its group.
    group: String,
    /// Its lifecycle state.
    state: AgentState,
    /// Its runtime kind.
    runtime: RuntimeKind,
    /// `true` for an essential agent (`required: true`).
    essential: bool,
    /// Restarts by the supervisor since the daemon started.
    restarts: u32,
    /// Seconds since it became `running`; `null` when not running.
    uptime_seconds: Option<f64>,
    /// Child process id of a running process agent, else `null`.
    pid: Option<u32>,
    /// Why it is `failed`, `fatal`, `unavailable` or `stopped`, else `null`.
    reason: Option<String>,
    /// The agents it depends on.
    dependencies: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::supervisor::state::AgentRecord;

    fn table() -> crate::agents::tasks::TaskTable {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: UnifiedSystemAgent, group: g, runtime: {kind: builtin}, \
             handles: [system.agents, system.status, system.start, system.stop, system.restart]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([("UnifiedSystemAgent", tasks())]);
        crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    /// The records `AgentRecord::to_json` makes are what the output schemas
    /// say (the handlers need a fleet; their records are these).
    #[test]
    fn agent_records_are_what_the_output_schemas_say() {
        let table = table();
        let dormant = AgentRecord {
            name: "ChitchatAgent".into(),
            group: "language_services".into(),
            runtime: RuntimeKind::Llm,
            essential: false,
            state: AgentState::Dormant,
            restarts: 0,
            running_since: None,
            pid: None,
            reason: None,
            dependencies: vec!["ModelManagerSuite".into()],
        };
        let running = AgentRecord {
            runtime: RuntimeKind::Process,
            state: AgentState::Running,
            running_since: Some(Instant::now()),
            pid: Some(4242),
            restarts: 2,
            essential: true,
            ..dormant.clone()
        };
        let fatal = AgentRecord { state: AgentState::Fatal, reason: Some("exit 1".into()), ..dormant.clone() };
        let records = [dormant, running, fatal];
        for t in ["system.status", "system.start", "system.stop", "system.restart"] {
            for r in &records {
                let output = encode(t, AgentStatus(r.to_json())).unwrap();
                table.get(t).unwrap().check_output(&output).unwrap_or_else(|e| panic!("{output}: {e}"));
            }
        }
        let agents = records.iter().map(|r| AgentStatus(r.to_json())).collect();
        let output = encode("system.agents", AgentsOutput { profile: "core".into(), agents }).unwrap();
        table.get("system.agents").unwrap().check_output(&output).unwrap_or_else(|e| panic!("{output}: {e}"));
    }

    #[test]
    fn agent_names_are_trimmed_and_blank_ones_refused() {
        let OrShort(AgentInput { agent }) =
            decode::<OrShort<AgentInput>>("system.status", &json!(" Chitchat ")).unwrap();
        assert_eq!(agent.0, "Chitchat");
        let e = decode::<OrShort<AgentInput>>("system.status", &json!({"agent": "  "})).err().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.starts_with("input of system.status at /agent: "), "{e}");
        let table = table();
        assert!(table.decode("system.stop", &json!("")).is_err());
        assert!(table.decode("system.stop", &json!({"agent": "X", "force": true})).is_err());
    }
}
