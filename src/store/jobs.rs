//! The `jobs` table: AsyncProcessor's background jobs (DESIGN §13). A job
//! row is written before `async.submit` answers and updated at each state
//! change (queued → running → done | failed | cancelled; a retry goes back
//! to queued), so a restart finds every job that was queued or running.
//! The stored `task` is the envelope as the job runs it: it has no field
//! for a credential.

/// Migration 7.
pub(crate) const MIGRATION: &str = "CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    task TEXT NOT NULL,
    task_type TEXT,
    agent TEXT,
    schedule_id TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    next_attempt_at REAL,
    output TEXT,
    route TEXT,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX jobs_state ON jobs(state, priority DESC, seq);
CREATE INDEX jobs_finished ON jobs(finished_at);";

use rusqlite::{Connection, params};
use serde::Serialize;

/// One job as `agentvisor jobs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job's id.
    pub job_id: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// 0–9.
    pub priority: u8,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The task type, when the envelope named one.
    pub task_type: Option<String>,
    /// The agent, when the envelope named one.
    pub agent: Option<String>,
    /// Submitted, Unix seconds.
    pub created_at: f64,
    /// Finished, Unix seconds.
    pub finished_at: Option<f64>,
    /// The last error code (failed, or waiting to retry).
    pub error_code: Option<String>,
}

/// The `limit` newest jobs (of `state`, when given), newest first.
///
/// # Errors
/// SQLite's.
pub fn list(conn: &Connection, state: Option<&str>, limit: u32) -> rusqlite::Result<Vec<JobSummary>> {
    let mut stmt = conn.prepare(
        "SELECT id, state, priority, attempts, max_attempts, task_type, agent, created_at, finished_at, error_code
         FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![state, limit], |r| {
        Ok(JobSummary {
            job_id: r.get(0)?,
            state: r.get(1)?,
            priority: r.get(2)?,
            attempts: r.get(3)?,
            max_attempts: r.get(4)?,
            task_type: r.get(5)?,
            agent: r.get(6)?,
            created_at: r.get(7)?,
            finished_at: r.get(8)?,
            error_code: r.get(9)?,
        })
    })?;
    rows.collect()
}
