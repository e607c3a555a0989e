//! SessionMemoryAgent: per-session conversation history, used as context by
//! the `llm` agents. State: the `session_turns` table of the SQLite store.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `session.append` | `{"session", "role", "content", "agent"?}` or `{"session", "turns": [{"role", "content", "agent"?}]}` | `{"appended": n}` |
//! | `session.history` | `{"session", "limit"?}` (default 50 turns, at most 10 000) or the session id as text | `{"session", "turns": [{"role", "content", "agent", "ts"}]}`, oldest first |
//! | `session.clear` | `{"session"}` or the session id as text | `{"deleted": n}` |
//!
//! `role` is `user`, `assistant` or `system`. Session ids are trimmed.
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::borrow::Cow;

use async_trait::async_trait;
use rusqlite::params;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::{Answer, Behaviour, Name, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::Store;

/// Default number of turns `session.history` returns.
const DEFAULT_LIMIT: u32 = 50;

/// Most turns `session.history` returns (a larger `limit` gets these).
const MAX_LIMIT: u32 = 10_000;

/// The task types of SessionMemoryAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<AppendInput, AppendOutput>("session.append", "Adds turns to a session's history", || {
            vec![
                json!({"session": "s-42", "role": "user", "content": "My name is Ada."}),
                json!({"session": "s-42", "turns": [
                    {"role": "user", "content": "What is my name?", "agent": "ChitchatAgent"},
                    {"role": "assistant", "content": "Your name is Ada.", "agent": "ChitchatAgent"},
                ]}),
            ]
        }),
        rust_task::<OrShort<HistoryInput>, HistoryOutput>(
            "session.history",
            "The latest turns of a session, oldest first",
            || vec![json!({"session": "s-42"}), json!({"session": "s-42", "limit": 10}), json!("s-42")],
        ),
        rust_task::<OrShort<SessionInput>, ClearOutput>("session.clear", "Deletes the history of a session", || {
            vec![json!("s-42"), json!({"session": "s-42"})]
        }),
    ]
}

/// The SessionMemoryAgent behaviour.
pub struct SessionMemory {
    /// The SQLite store (`session_turns`).
    pub store: Store,
}

fn store_error(e: crate::store::StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("session store: {e}"))
}

#[async_trait]
impl Behaviour for SessionMemory {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "session.append" => {
                let (Name(session), turns) = match decode(t, &task.input)? {
                    AppendInput::One(OneTurn { session, role, content, agent }) => {
                        (session, vec![Turn { role, content, agent }])
                    }
                    AppendInput::Many(ManyTurns { session, turns }) => (session, turns),
                };
                let ts = crate::core::unix_time();
                let appended = turns.len();
                self.store
                    .call(move |conn| {
                        let tx = conn.transaction()?;
                        for Turn { role, content, agent } in &turns {
                            tx.execute(
                                "INSERT INTO session_turns (session, ts, role, content, agent) VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![session, ts, role.as_str(), content, agent],
                            )?;
                        }
                        tx.commit()?;
                        Ok(())
                    })
                    .await
                    .map_err(store_error)?;
                encode(t, AppendOutput { appended })
            }
            "session.history" => {
                let OrShort(HistoryInput { session: Name(session), limit }) = decode(t, &task.input)?;
                let limit = limit.map_or(DEFAULT_LIMIT, |l| l.min(u64::from(MAX_LIMIT)) as u32);
                let s = session.clone();
                let turns = self.store
                    .call(move |conn| {
                        let mut stmt = conn.prepare(
                            "SELECT role, content, agent, ts FROM session_turns WHERE session = ?1 ORDER BY id DESC LIMIT ?2",
                        )?;
                        let rows = stmt.query_map(params![s, limit], |r| {
                            Ok(TurnRecord { role: r.get(0)?, content: r.get(1)?, agent: r.get(2)?, ts: r.get(3)? })
                        })?;
                        let mut turns: Vec<TurnRecord> = rows.collect::<Result<_, _>>()?;
                        turns.reverse();
                        Ok(turns)
                    })
                    .await
                    .map_err(store_error)?;
                encode(t, HistoryOutput { session, turns })
            }
            "session.clear" => {
                let OrShort(SessionInput { session: Name(session) }) = decode(t, &task.input)?;
                let deleted = self
                    .store
                    .call(move |conn| {
                        Ok(conn.execute("DELETE FROM session_turns WHERE session = ?1", params![session])?)
                    })
                    .await
                    .map_err(store_error)?;
                encode(t, ClearOutput { deleted })
            }
            _ => Err(unknown_type("SessionMemoryAgent", &task)),
        }
    }
}

/// Who speaks in a turn.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// One turn of a conversation.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Turn {
    /// Who speaks: `user`, `assistant` or `system`.
    role: Role,
    /// What was said.
    content: String,
    /// The agent that answered or was asked, when known.
    #[serde(default)]
    agent: Option<String>,
}

/// Turns to add to a session: one turn, or several (`turns`), not both.
///
/// Decoded through [`AppendFields`] (every key of both forms), so that a
/// fault keeps its JSON path; the schema is `oneOf` the two forms.
#[derive(Deserialize)]
#[serde(try_from = "AppendFields")]
enum AppendInput {
    One(OneTurn),
    Many(ManyTurns),
}

/// One turn to add.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct OneTurn {
    /// The session id (white space around it dropped).
    session: Name,
    /// Who speaks: `user`, `assistant` or `system`.
    role: Role,
    /// What was said.
    content: String,
    /// The agent that answered or was asked, when known.
    #[schemars(default)]
    agent: Option<String>,
}

/// Several turns to add, in order.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ManyTurns {
    /// The session id (white space around it dropped).
    session: Name,
    /// The turns, oldest first (may be empty).
    turns: Vec<Turn>,
}

/// Every key of both forms of `session.append`; `null` is refused where the
/// form has no such key (`turns`, `role`, `content`, and `agent` in the
/// `turns` form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendFields {
    session: Name,
    #[serde(default, deserialize_with = "present")]
    turns: Option<Vec<Turn>>,
    #[serde(default, deserialize_with = "present")]
    role: Option<Role>,
    #[serde(default, deserialize_with = "present")]
    content: Option<String>,
    /// `Some(None)`: `"agent": null`.
    #[serde(default, deserialize_with = "present")]
    agent: Option<Option<String>>,
}

/// A key that is there: its value (`null` only where `T` takes it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl TryFrom<AppendFields> for AppendInput {
    type Error = &'static str;

    fn try_from(fields: AppendFields) -> Result<AppendInput, &'static str> {
        match fields {
            AppendFields { session, turns: Some(turns), role: None, content: None, agent: None } => {
                Ok(AppendInput::Many(ManyTurns { session, turns }))
            }
            AppendFields { session, turns: None, role: Some(role), content: Some(content), agent } => {
                Ok(AppendInput::One(OneTurn { session, role, content, agent: agent.flatten() }))
            }
            _ => Err("expected either `role` and `content` (and `agent`) for one turn, or `turns`, not both"),
        }
    }
}

impl JsonSchema for AppendInput {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "AppendInput".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Turns to add to a session: one turn, or several (`turns`).",
            "oneOf": [generator.subschema_for::<OneTurn>(), generator.subschema_for::<ManyTurns>()],
        })
    }
}

/// The turns added.
#[derive(Serialize, JsonSchema)]
struct AppendOutput {
    /// Number of turns added.
    appended: usize,
}

/// The session and how many turns to read.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HistoryInput {
    /// The session id (white space around it dropped).
    session: Name,
    /// Most recent turns to return (default 50; more than 10 000 gets 10 000).
    #[serde(default)]
    limit: Option<u64>,
}

impl Shorthand for HistoryInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The session id alone; the latest 50 turns.";
    fn expand(session: Name) -> HistoryInput {
        HistoryInput { session, limit: None }
    }
}

/// The latest turns of a session.
#[derive(Serialize, JsonSchema)]
struct HistoryOutput {
    /// The session id.
    session: String,
    /// The turns, oldest first (empty for an unknown session).
    turns: Vec<TurnRecord>,
}

/// One stored turn.
#[derive(Serialize, JsonSchema)]
struct TurnRecord {
    /// Who spoke: `user`, `assistant` or `system`.
    role: String,
    /// What was said.
    content: String,
    /// The agent that answered or was asked; `null` when not given.
    agent: Option<String>,
    /// When the turn was stored, Unix seconds.
    ts: f64,
}

/// The session.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    /// The session id (white space around it dropped).
    session: Name,
}

impl Shorthand for SessionInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The session id alone.";
    fn expand(session: Name) -> SessionInput {
        SessionInput { session }
    }
}

/// The turns deleted.
#[derive(Serialize, JsonSchema)]
struct ClearOutput {
    /// Number of turns deleted.
    deleted: usize,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn table() -> crate::agents::tasks::TaskTable {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: SessionMemoryAgent, group: g, runtime: {kind: builtin}, \
             handles: [session.append, session.history, session.clear]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([("SessionMemoryAgent", tasks())]);
        crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    async fn run(agent: &SessionMemory, task_type: &str, input: Value) -> Answer {
        agent.handle(Task::new("t", task_type, input)).await
    }

    /// Every example, run through the handler, answers what the output
    /// schema says; the outputs keep their shape.
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let dir = tempfile::tempdir().unwrap();
        let agent = SessionMemory { store: Store::open(dir.path()).unwrap() };
        let table = table();
        assert_eq!(table.len(), 3);
        for t in ["session.append", "session.history", "session.clear"] {
            let def = table.get(t).unwrap();
            for example in def.input_schema["examples"].as_array().unwrap() {
                let output = run(&agent, t, example.clone()).await.unwrap_or_else(|e| panic!("{example}: {e}"));
                def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
            }
        }
        // The examples appended 3 turns, then cleared them.
        let add = json!({"session": " s-1 ", "turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "agent": "ChitchatAgent"}]});
        assert_eq!(run(&agent, "session.append", add).await.unwrap(), json!({"appended": 2}));
        let history = run(&agent, "session.history", json!({"session": "s-1", "limit": 1})).await.unwrap();
        assert_eq!(history["session"], "s-1");
        let turns = history["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 1);
        assert_eq!(
            (&turns[0]["role"], &turns[0]["content"], &turns[0]["agent"]),
            (&json!("assistant"), &json!("hello"), &json!("ChitchatAgent"))
        );
        assert!(turns[0]["ts"].as_f64().unwrap() > 1.7e9);
        let one = json!({"session": "s-1", "role": "system", "content": "", "agent": null});
        assert_eq!(run(&agent, "session.append", one).await.unwrap(), json!({"appended": 1}));
        let history = run(&agent, "session.history", json!("s-1")).await.unwrap();
        assert_eq!(
            history["turns"][2],
            json!({"role": "system", "content": "", "agent": null, "ts": history["turns"][2]["ts"]})
        );
        assert_eq!(run(&agent, "session.clear", json!(" s-1")).await.unwrap(), json!({"deleted": 3}));
    }

    #[test]
    fn wrong_inputs_name_their_path() {
        let table = table();
        let message = |t: &str, input: Value| table.decode(t, &input).unwrap_err().message;
        let robot = json!({"session": "s", "role": "robot", "content": "x"});
        assert!(message("session.append", robot).starts_with("input of session.append at /role: "));
        let turn = json!({"session": "s", "turns": [{"role": "user"}]});
        assert_eq!(message("session.append", turn), "input of session.append at /turns/0: missing field `content`");
        let both = json!({"session": "s", "turns": [], "role": "user", "content": "x"});
        assert!(
            message("session.append", both).starts_with("input of session.append at the top level: expected either")
        );
        let null_turns = json!({"session": "s", "turns": null, "role": "user", "content": "x"});
        assert!(message("session.append", null_turns).starts_with("input of session.append at /turns: "));
        assert!(message("session.append", json!("s")).starts_with("input of session.append at the top level: "));
        assert!(
            message("session.history", json!({"session": " "})).starts_with("input of session.history at /session: ")
        );
        assert!(
            message("session.history", json!({"session": "s", "limit": -1}))
                .starts_with("input of session.history at /limit: ")
        );
        assert!(message("session.clear", json!("")).starts_with("input of session.clear at the top level: "));
    }
}
