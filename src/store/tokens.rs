//! The `api_tokens` and `auth_sessions` tables: AuthenticationAgent's API
//! tokens and web-UI sessions. Neither table holds a secret: a token or a
//! session id is stored only as its keyed hash (HMAC-SHA-256 under the
//! daemon's key, `data_dir/auth.key`), so a copy of the database lets no
//! one in.

/// Migration 18.
pub(crate) const MIGRATION: &str = "CREATE TABLE api_tokens (
    token_id TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE TABLE auth_sessions (
    hash BLOB PRIMARY KEY,
    token_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);";

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// One stored token (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Public id, e.g. `tok_1a2b3c4d5e6f7a8b`.
    pub token_id: String,
    /// HMAC-SHA-256 of the token under the daemon's key.
    pub hash: Vec<u8>,
    /// Who the token is for (the envelope's `user`).
    pub subject: String,
    /// Comma-separated scopes: `tasks`, `admin`, `read`.
    pub scopes: String,
    /// A label for listings.
    pub name: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<f64>,
    /// Unix seconds; `None`: not revoked.
    pub revoked_at: Option<f64>,
}

/// One web-UI session (never its id).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// HMAC-SHA-256 of the session id.
    pub hash: Vec<u8>,
    /// The token it was exchanged for: revoking the token ends the session.
    pub token_id: String,
    /// Unix seconds.
    pub expires_at: f64,
}

/// Stores a new token.
///
/// # Errors
/// [`StoreError::Sqlite`] (e.g. a duplicate id or hash).
pub fn insert(conn: &Connection, t: &TokenRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_tokens (token_id, hash, subject, scopes, name, created_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![t.token_id, t.hash, t.subject, t.scopes, t.name, t.created_at, t.expires_at, t.revoked_at],
    )?;
    Ok(())
}

/// Every stored token, newest first.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn all(conn: &Connection) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT token_id, hash, subject, scopes, name, created_at, expires_at, revoked_at
         FROM api_tokens ORDER BY created_at DESC, token_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TokenRow {
            token_id: r.get(0)?,
            hash: r.get(1)?,
            subject: r.get(2)?,
            scopes: r.get(3)?,
            name: r.get(4)?,
            created_at: r.get(5)?,
            expires_at: r.get(6)?,
            revoked_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes `token_id` at `now` and ends its sessions: `Some(true)` when it
/// was active, `Some(false)` when it was already revoked, `None` when no
/// token has that id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn revoke(conn: &Connection, token_id: &str, now: f64) -> Result<Option<bool>, StoreError> {
    let revoked: Option<Option<f64>> =
        conn.query_row("SELECT revoked_at FROM api_tokens WHERE token_id = ?1", [token_id], |r| r.get(0)).optional()?;
    let Some(revoked) = revoked else { return Ok(None) };
    if revoked.is_some() {
        return Ok(Some(false));
    }
    conn.execute("UPDATE api_tokens SET revoked_at = ?2 WHERE token_id = ?1", params![token_id, now])?;
    conn.execute("DELETE FROM auth_sessions WHERE token_id = ?1", [token_id])?;
    Ok(Some(true))
}

/// Stores a new session.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn insert_session(conn: &Connection, s: &SessionRow, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO auth_sessions (hash, token_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![s.hash, s.token_id, now, s.expires_at],
    )?;
    Ok(())
}

/// The sessions not expired at `now`; expired ones are deleted.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn live_sessions(conn: &Connection, now: f64) -> Result<Vec<SessionRow>, StoreError> {
    conn.execute("DELETE FROM auth_sessions WHERE expires_at <= ?1", [now])?;
    let mut stmt = conn.prepare_cached("SELECT hash, token_id, expires_at FROM auth_sessions")?;
    let rows =
        stmt.query_map([], |r| Ok(SessionRow { hash: r.get(0)?, token_id: r.get(1)?, expires_at: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
