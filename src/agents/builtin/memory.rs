//! The memory agents. MemoryOrchestratorService is the authority over the
//! `memories` table; MemoryClient is the API other agents use and forwards
//! every task to it; KnowledgeBase owns the FTS5 knowledge base. State: the
//! tables of [`crate::store::memory`] in the SQLite store; every query runs
//! on the store thread.
//!
//! **MemoryOrchestratorService**
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `memory.store` | `{"text", "kind", "tags"?, "session"?, "ttl_seconds"?}` | `{"id"}` (a uuid) |
//! | `memory.get` | `{"id"}` or the id as text | `{"id", "ts", "kind", "text", "tags", "session", "expires_at"}`; `invalid_field` when there is no such memory (never stored, deleted or expired) |
//! | `memory.delete` | `{"id"}` or the id as text | `{"deleted": 0 \| 1}` (an expired memory counts as already gone) |
//! | `memory.search` | `{"query", "limit"?, "kind"?, "session"?}` or the query as text; `limit` 1–100, default 10 | `{"results": [memory, ...]}`, newest first |
//!
//! `text` and `kind` are non-empty strings; `tags` an array of strings
//! (default `[]`); `ttl_seconds` a number > 0, after which the memory is
//! gone: `memory.get` and `memory.search` never return an expired memory,
//! and a sweeper started with the agent deletes expired rows every second.
//! `ts` and `expires_at` are Unix seconds (`expires_at` `null`: never).
//! `memory.search` is a substring search, not a ranked one: a memory matches
//! when its text contains every whitespace-separated term of `query` (SQLite
//! `LIKE`, case-insensitive for ASCII letters). `memory.search` is not in the
//! agent's `handles`: clients reach it through MemoryClient.
//!
//! **MemoryClient** — holds nothing itself: it forwards to
//! MemoryOrchestratorService when that agent is `running`, and otherwise
//! answers `agent_unavailable` naming it (no local copy, which would
//! diverge from the authority).
//!
//! | type | forwarded as | input and output |
//! | --- | --- | --- |
//! | `memory.recall` | `memory.get` | as `memory.get` |
//! | `memory.search` | `memory.search` | as `memory.search` |
//! | `memory.store`, `memory.get`, `memory.delete` | unchanged | for agents addressing MemoryClient by name |
//!
//! **KnowledgeBase**
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `kb.add` | `{"title", "text", "source"?}` | `{"id"}` (an integer, never reused) |
//! | `kb.search` | `{"query", "limit"?}` or the query as text; `limit` 1–100, default 10 | `{"results": [{"id", "title", "source", "snippet", "score"}]}`, best first |
//! | `kb.delete` | `{"id"}` or the id as a number | `{"deleted": 0 \| 1}` |
//!
//! `kb.search` ranks with FTS5's bm25 (title weighs 2, text 1, source 0.5);
//! `score` is `-bm25`, so higher is better. The query is never FTS5 syntax:
//! its words are quoted and joined with `OR` (see
//! [`crate::store::memory::match_expression`]), so any string is safe; a
//! blank query is `invalid_field`, one without any word finds nothing.
//!
//! Failures: bad input is `invalid_field` naming the field; a store failure
//! is `internal` with SQLite's message. The sweeper logs its failures and
//! goes on; it ends when the store closes or the agent stops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::{Answer, Behaviour, bad_input, unknown_type};
use crate::agents::services::Services;
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::memory::{self as db, Memory, MemoryQuery};
use crate::store::{Store, StoreError};
use crate::supervisor::Fleet;
use crate::supervisor::StartError;
use crate::supervisor::state::AgentState;

/// The authority's agent name.
pub const ORCHESTRATOR: &str = "MemoryOrchestratorService";
/// The client's agent name.
pub const CLIENT: &str = "MemoryClient";
/// The knowledge base's agent name.
pub const KNOWLEDGE_BASE: &str = "KnowledgeBase";

/// Time between two sweeps of expired memories.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Results of a search when the input names no `limit`.
const DEFAULT_LIMIT: u32 = 10;
/// Most results of one search.
const MAX_LIMIT: u32 = 100;

/// The behaviour of the memory agent `name`, if it is one of them.
pub fn behaviour(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    let store = services.store.clone();
    match name {
        ORCHESTRATOR => Some(Arc::new(MemoryOrchestrator { store, sweeper: Mutex::new(None) })),
        CLIENT => Some(Arc::new(MemoryClient { fleet: fleet.clone() })),
        KNOWLEDGE_BASE => Some(Arc::new(KnowledgeBase { store })),
        _ => None,
    }
}

fn now_secs() -> f64 {
    crate::core::unix_time()
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("memory store: {e}"))
}

/// The string field `name`: present, a string, not blank.
fn required_str<'a>(task: &'a Task, name: &str) -> Result<&'a str, TaskError> {
    match task.input.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(bad_input(task, format!("field {name}: must be a non-empty string"))),
        None => Err(bad_input(task, format!("field {name}: missing"))),
    }
}

/// The string field `name` when present (`null` counts as absent).
fn optional_str<'a>(task: &'a Task, name: &str) -> Result<Option<&'a str>, TaskError> {
    match task.input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_input(task, format!("field {name}: must be a string"))),
    }
}

/// `limit`: an integer 1–[`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
fn limit_of(task: &Task) -> Result<u32, TaskError> {
    match task.input.get("limit") {
        None | Some(Value::Null) => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .as_u64()
            .filter(|l| (1..=u64::from(MAX_LIMIT)).contains(l))
            .map(|l| l as u32)
            .ok_or_else(|| bad_input(task, format!("field limit: must be an integer from 1 to {MAX_LIMIT}"))),
    }
}

/// `query`: the input itself when it is text, else the `query` field; not
/// blank.
fn query_of(task: &Task) -> Result<&str, TaskError> {
    match &task.input {
        Value::String(s) if !s.trim().is_empty() => Ok(s),
        Value::String(_) => Err(bad_input(task, "field query: must be a non-empty string")),
        _ => required_str(task, "query"),
    }
}

/// A memory id: `{"id": "..."}` or the id as text.
fn memory_id(task: &Task) -> Result<String, TaskError> {
    match &task.input {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::Object(_) => required_str(task, "id").map(|s| s.trim().to_string()),
        _ => Err(bad_input(task, "field id: expected {\"id\": ID} or the id as text")),
    }
}

/// A knowledge-base id: `{"id": n}` or `n`.
fn kb_id(task: &Task) -> Result<i64, TaskError> {
    let v = match &task.input {
        Value::Object(m) => m.get("id"),
        other => Some(other),
    };
    v.and_then(Value::as_i64).ok_or_else(|| bad_input(task, "field id: expected {\"id\": N} with N an integer"))
}

/// Input of `memory.store`, checked.
fn new_memory(task: &Task, now: f64) -> Result<Memory, TaskError> {
    if !task.input.is_object() {
        return Err(bad_input(task, "expected {\"text\", \"kind\", \"tags\"?, \"session\"?, \"ttl_seconds\"?}"));
    }
    let text = required_str(task, "text")?.to_string();
    let kind = required_str(task, "kind")?.trim().to_string();
    let tags = match task.input.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad_input(task, "field tags: must be an array of strings"))?,
        Some(_) => return Err(bad_input(task, "field tags: must be an array of strings")),
    };
    let session = optional_str(task, "session")?.map(str::to_string);
    let expires_at = match task.input.get("ttl_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(ttl) if ttl > 0.0 && ttl.is_finite() => Some(now + ttl),
            _ => return Err(bad_input(task, "field ttl_seconds: must be a number greater than 0")),
        },
    };
    Ok(Memory { id: uuid::Uuid::new_v4().to_string(), ts: now, kind, text, tags, session, expires_at })
}

/// The MemoryOrchestratorService behaviour: the authority over `memories`.
/// Owns the sweeper task (started in `start`, aborted in `stop`).
pub struct MemoryOrchestrator {
    /// The SQLite store (`memories`).
    store: Store,
    /// The expiry sweeper, while the agent runs.
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

/// Deletes expired memories every [`SWEEP_EVERY`] until the store closes.
async fn sweep(store: Store) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_secs();
        match store.call(move |conn| db::delete_expired(conn, now)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(agent = ORCHESTRATOR, deleted = n, "expired memories deleted"),
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(agent = ORCHESTRATOR, error = %e, "expiry sweep failed"),
        }
    }
}

#[async_trait]
impl Behaviour for MemoryOrchestrator {
    async fn start(&self) -> Result<(), StartError> {
        let handle = tokio::spawn(sweep(self.store.clone()));
        if let Some(old) = self.sweeper.lock().replace(handle) {
            old.abort();
        }
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let store = &self.store;
        let now = now_secs();
        match task.task_type.as_str() {
            "memory.store" => {
                let m = new_memory(&task, now)?;
                let id = m.id.clone();
                store.call(move |conn| db::insert_memory(conn, &m)).await.map_err(store_error)?;
                Ok(json!({"id": id}))
            }
            "memory.get" => {
                let id = memory_id(&task)?;
                let key = id.clone();
                match store.call(move |conn| db::get_memory(conn, &key, now)).await.map_err(store_error)? {
                    Some(m) => Ok(json!(m)),
                    None => {
                        Err(bad_input(&task, format!("field id: no memory {id} (never stored, deleted or expired)")))
                    }
                }
            }
            "memory.delete" => {
                let id = memory_id(&task)?;
                let deleted = store.call(move |conn| db::delete_memory(conn, &id, now)).await.map_err(store_error)?;
                Ok(json!({"deleted": u8::from(deleted)}))
            }
            "memory.search" => {
                let q = MemoryQuery {
                    query: query_of(&task)?.to_string(),
                    kind: optional_str(&task, "kind")?.map(str::to_string),
                    session: optional_str(&task, "session")?.map(str::to_string),
                    limit: limit_of(&task)?,
                };
                let found = store.call(move |conn| db::search_memories(conn, &q, now)).await.map_err(store_error)?;
                Ok(json!({"results": found}))
            }
            _ => Err(unknown_type(ORCHESTRATOR, &task)),
        }
    }

    async fn stop(&self) {
        if let Some(h) = self.sweeper.lock().take() {
            h.abort();
        }
    }
}

impl Drop for MemoryOrchestrator {
    /// Stops the sweeper even when `stop` never ran (a failed start).
    fn drop(&mut self) {
        if let Some(h) = self.sweeper.get_mut().take() {
            h.abort();
        }
    }
}

/// The MemoryClient behaviour: forwards to MemoryOrchestratorService.
pub struct MemoryClient {
    /// The fleet: the orchestrator's state (an operator's stop must show)
    /// and the call to it.
    fleet: Fleet,
}

#[async_trait]
impl Behaviour for MemoryClient {
    async fn handle(&self, task: Task) -> Answer {
        let forwarded = match task.task_type.as_str() {
            "memory.recall" => "memory.get",
            "memory.search" => "memory.search",
            "memory.store" => "memory.store",
            "memory.get" => "memory.get",
            "memory.delete" => "memory.delete",
            _ => return Err(unknown_type(CLIENT, &task)),
        };
        // Checked here because `Fleet::call` would start a stopped agent on
        // demand; an operator's stop must be visible to the callers instead.
        match self.fleet.ctx().state(ORCHESTRATOR) {
            Some(AgentState::Running) => {}
            Some(state) => {
                return Err(TaskError::new(
                    ErrorCode::AgentUnavailable,
                    format!("{ORCHESTRATOR} is {}; {CLIENT} keeps no local copy of memories", state.as_str()),
                ));
            }
            None => {
                return Err(TaskError::new(
                    ErrorCode::AgentUnavailable,
                    format!(
                        "{ORCHESTRATOR} is not in profile {}; {CLIENT} keeps no local copy",
                        self.fleet.ctx().plan.name
                    ),
                ));
            }
        }
        let mut task = task;
        task.task_type = forwarded.to_string();
        self.fleet.call(ORCHESTRATOR, task).await.map(|out| out.output)
    }
}

/// The KnowledgeBase behaviour: documents with FTS5 search.
pub struct KnowledgeBase {
    /// The SQLite store (`kb_docs`, FTS5).
    store: Store,
}

#[async_trait]
impl Behaviour for KnowledgeBase {
    async fn handle(&self, task: Task) -> Answer {
        let store = &self.store;
        match task.task_type.as_str() {
            "kb.add" => {
                let title = required_str(&task, "title")?.to_string();
                let text = required_str(&task, "text")?.to_string();
                let source = optional_str(&task, "source")?.unwrap_or_default().to_string();
                let ts = now_secs();
                let id =
                    store.call(move |conn| db::kb_add(conn, &title, &text, &source, ts)).await.map_err(store_error)?;
                Ok(json!({"id": id}))
            }
            "kb.search" => {
                let query = query_of(&task)?.to_string();
                let limit = limit_of(&task)?;
                let results = store.call(move |conn| db::kb_search(conn, &query, limit)).await.map_err(store_error)?;
                Ok(json!({"results": results}))
            }
            "kb.delete" => {
                let id = kb_id(&task)?;
                let deleted = store.call(move |conn| db::kb_delete(conn, id)).await.map_err(store_error)?;
                Ok(json!({"deleted": u8::from(deleted)}))
            }
            _ => Err(unknown_type(KNOWLEDGE_BASE, &task)),
        }
    }
}
