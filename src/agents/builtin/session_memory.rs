//! SessionMemoryAgent: per-session conversation history, used as context by
//! the `llm` agents. State: the `session_turns` table of the SQLite store.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `session.append` | `{"session", "role", "content", "agent"?}` or `{"session", "turns": [{"role", "content", "agent"?}]}` | `{"appended": n}` |
//! | `session.history` | `{"session", "limit"?}` (default 50 turns) | `{"session", "turns": [{"role", "content", "agent", "ts"}]}`, oldest first |
//! | `session.clear` | `{"session"}` or the session id as text | `{"deleted": n}` |
//!
//! `role` is `user`, `assistant` or `system`.

use async_trait::async_trait;
use rusqlite::params;
use serde_json::{Value, json};

use super::{Answer, Behaviour, bad_input, unknown_type};
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::Store;

/// Default number of turns `session.history` returns.
const DEFAULT_LIMIT: u32 = 50;

/// The SessionMemoryAgent behaviour.
pub struct SessionMemory {
    /// The SQLite store (`session_turns`).
    pub store: Store,
}

fn session_of(task: &Task) -> Result<String, TaskError> {
    match &task.input {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::Object(m) => m
            .get("session")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad_input(task, "missing session")),
        _ => Err(bad_input(task, "expected {\"session\": ...}")),
    }
}

fn store_error(e: crate::store::StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("session store: {e}"))
}

#[async_trait]
impl Behaviour for SessionMemory {
    async fn handle(&self, task: Task) -> Answer {
        let session = session_of(&task)?;
        match task.task_type.as_str() {
            "session.append" => {
                let turns: Vec<Value> = match task.input.get("turns") {
                    Some(Value::Array(t)) => t.clone(),
                    Some(_) => return Err(bad_input(&task, "turns must be an array")),
                    None => vec![task.input.clone()],
                };
                let mut rows = Vec::with_capacity(turns.len());
                for t in &turns {
                    let role = t.get("role").and_then(Value::as_str).unwrap_or_default();
                    if !matches!(role, "user" | "assistant" | "system") {
                        return Err(bad_input(&task, "role must be user, assistant or system"));
                    }
                    let content =
                        t.get("content").and_then(Value::as_str).ok_or_else(|| bad_input(&task, "missing content"))?;
                    let agent = t.get("agent").and_then(Value::as_str).map(str::to_string);
                    rows.push((role.to_string(), content.to_string(), agent));
                }
                let ts = crate::core::unix_time();
                let n = rows.len();
                self.store
                    .call(move |conn| {
                        let tx = conn.transaction()?;
                        for (role, content, agent) in &rows {
                            tx.execute(
                                "INSERT INTO session_turns (session, ts, role, content, agent) VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![session, ts, role, content, agent],
                            )?;
                        }
                        tx.commit()?;
                        Ok(())
                    })
                    .await
                    .map_err(store_error)?;
                Ok(json!({"appended": n}))
            }
            "session.history" => {
                let limit = task
                    .input
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map(|l| l.min(10_000) as u32)
                    .unwrap_or(DEFAULT_LIMIT);
                let s = session.clone();
                let turns = self.store
                    .call(move |conn| {
                        let mut stmt = conn.prepare(
                            "SELECT role, content, agent, ts FROM session_turns WHERE session = ?1 ORDER BY id DESC LIMIT ?2",
                        )?;
                        let rows = stmt.query_map(params![s, limit], |r| {
                            Ok(json!({"role": r.get::<_, String>(0)?, "content": r.get::<_, String>(1)?,
                                      "agent": r.get::<_, Option<String>>(2)?, "ts": r.get::<_, f64>(3)?}))
                        })?;
                        let mut v: Vec<Value> = rows.collect::<Result<_, _>>()?;
                        v.reverse();
                        Ok(v)
                    })
                    .await
                    .map_err(store_error)?;
                Ok(json!({"session": session, "turns": turns}))
            }
            "session.clear" => {
                let deleted = self
                    .store
                    .call(move |conn| {
                        Ok(conn.execute("DELETE FROM session_turns WHERE session = ?1", params![session])?)
                    })
                    .await
                    .map_err(store_error)?;
                Ok(json!({"deleted": deleted}))
            }
            _ => Err(unknown_type("SessionMemoryAgent", &task)),
        }
    }
}
