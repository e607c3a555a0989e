//! The `context_states` table: the token governor's state per session
//! (ContextManager): the summary that replaces the older turns and the turn
//! it covers up to, the last measured usage, and the system text of the last
//! prompt (to measure the session's context between turns).
//!
//! A session's context is its summary (when any) plus the `session_turns`
//! after `covered_turn`.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;

/// Migration (token governor).
pub(crate) const MIGRATION: &str = "CREATE TABLE context_states (
    session TEXT PRIMARY KEY,
    summary TEXT,
    covered_turn INTEGER NOT NULL DEFAULT 0,
    turns_summarized INTEGER NOT NULL DEFAULT 0,
    system_prompt TEXT,
    agent TEXT,
    user TEXT,
    backend TEXT,
    model TEXT,
    tokens INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    window_tokens INTEGER NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0,
    saved_at REAL,
    updated_at REAL NOT NULL
);";

/// A session's governor state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContextState {
    /// The session.
    pub session: String,
    /// The summary of the turns up to `covered_turn`.
    pub summary: Option<String>,
    /// The last `session_turns.id` the summary covers (0: none).
    pub covered_turn: i64,
    /// Turns the summary replaced, in total.
    pub turns_summarized: u32,
    /// The system message of the session's last prompt (role prompt and persona).
    pub system_prompt: Option<String>,
    /// The llm agent of the last turn.
    pub agent: Option<String>,
    /// Who asked last.
    pub user: Option<String>,
    /// The backend measured against.
    pub backend: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// Context tokens in use (last measure).
    pub tokens: u32,
    /// Tokens of the last prompt sent (equal to its generation's `tokens_in` for local models).
    pub prompt_tokens: u32,
    /// The model's window, tokens.
    pub window: u32,
    /// Counted by estimate.
    pub estimated: bool,
    /// Unix seconds of the last save.
    pub saved_at: Option<f64>,
    /// Unix seconds of the last change.
    pub updated_at: f64,
}

/// The state of `session`, if the governor has seen it.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn get(conn: &Connection, session: &str) -> Result<Option<ContextState>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT session, summary, covered_turn, turns_summarized, system_prompt, agent, user, backend, model,
                    tokens, prompt_tokens, window_tokens, estimated, saved_at, updated_at
             FROM context_states WHERE session = ?1",
            params![session],
            |r| {
                Ok(ContextState {
                    session: r.get(0)?,
                    summary: r.get(1)?,
                    covered_turn: r.get(2)?,
                    turns_summarized: r.get(3)?,
                    system_prompt: r.get(4)?,
                    agent: r.get(5)?,
                    user: r.get(6)?,
                    backend: r.get(7)?,
                    model: r.get(8)?,
                    tokens: r.get(9)?,
                    prompt_tokens: r.get(10)?,
                    window: r.get(11)?,
                    estimated: r.get(12)?,
                    saved_at: r.get(13)?,
                    updated_at: r.get(14)?,
                })
            },
        )
        .optional()?)
}

/// One measure of a session's context.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The session.
    pub session: String,
    /// The llm agent of the turn.
    pub agent: String,
    /// Who asked.
    pub user: Option<String>,
    /// The system message of the prompt.
    pub system_prompt: String,
    /// The backend and model measured against.
    pub backend: String,
    /// Its model.
    pub model: String,
    /// Context tokens in use.
    pub tokens: u32,
    /// Tokens of the prompt sent, when this measure is of a prompt about to be sent.
    pub prompt_tokens: Option<u32>,
    /// The window.
    pub window: u32,
    /// By estimate.
    pub estimated: bool,
}

/// Records a measure (creating the session's row).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn record_usage(conn: &Connection, u: &Usage, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO context_states (session, system_prompt, agent, user, backend, model, tokens, prompt_tokens,
                                     window_tokens, estimated, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(?8, 0), ?9, ?10, ?11)
         ON CONFLICT(session) DO UPDATE SET system_prompt = ?2, agent = ?3, user = COALESCE(?4, user), backend = ?5,
             model = ?6, tokens = ?7, prompt_tokens = COALESCE(?8, prompt_tokens), window_tokens = ?9, estimated = ?10,
             updated_at = ?11",
        params![
            u.session,
            u.system_prompt,
            u.agent,
            u.user,
            u.backend,
            u.model,
            u.tokens,
            u.prompt_tokens,
            u.window,
            u.estimated,
            now
        ],
    )?;
    Ok(())
}

/// Sets the session's tokens (after a summary); nothing when unknown.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn set_tokens(conn: &Connection, session: &str, tokens: u32, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE context_states SET tokens = ?2, updated_at = ?3 WHERE session = ?1",
        params![session, tokens, now],
    )?;
    Ok(())
}

/// Replaces the summary when it covers more turns than the stored one
/// (two summaries racing: the wider wins); whether it was stored.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn set_summary(
    conn: &Connection,
    session: &str,
    summary: &str,
    covered_turn: i64,
    turns: u32,
    now: f64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO context_states (session, summary, covered_turn, turns_summarized, saved_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT(session) DO UPDATE SET summary = ?2, covered_turn = ?3,
             turns_summarized = turns_summarized + ?4, saved_at = ?5, updated_at = ?5
         WHERE covered_turn < ?3",
        params![session, summary, covered_turn, turns, now],
    )?;
    Ok(n > 0)
}

/// Marks the state saved now.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn mark_saved(conn: &Connection, session: &str, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO context_states (session, saved_at, updated_at) VALUES (?1, ?2, ?2)
         ON CONFLICT(session) DO UPDATE SET saved_at = ?2",
        params![session, now],
    )?;
    Ok(())
}

/// One turn of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `session_turns.id`.
    pub id: i64,
    /// `user`, `assistant`, `system`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// The turns of `session` after `after` (an id), oldest first.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn turns_after(conn: &Connection, session: &str, after: i64) -> Result<Vec<Turn>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, role, content FROM session_turns WHERE session = ?1 AND id > ?2 ORDER BY id")?;
    let rows =
        stmt.query_map(params![session, after], |r| Ok(Turn { id: r.get(0)?, role: r.get(1)?, content: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sessions the governor measured since `since` (Unix seconds), with their ratio, newest first.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn active(conn: &Connection, since: f64) -> Result<Vec<(String, f64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT session, CAST(tokens AS REAL) / MAX(window_tokens, 1) FROM context_states
         WHERE updated_at >= ?1 AND window_tokens > 0 ORDER BY updated_at DESC",
    )?;
    let rows = stmt.query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
