//! The `schedules` table: TaskScheduler's delayed and recurring tasks
//! (DESIGN §13). A schedule row is written before `schedule.add` answers;
//! each firing updates `next_fire_at`, `last_fire_at` and `firings`, so a
//! restart knows which firings were missed while the daemon was down.

/// Migration 8.
pub(crate) const MIGRATION: &str = "CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    name TEXT,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    at TEXT,
    every_seconds REAL,
    cron TEXT,
    timezone TEXT NOT NULL,
    priority INTEGER,
    misfire TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_fire_at REAL,
    last_fire_at REAL,
    firings INTEGER NOT NULL DEFAULT 0
);";

use rusqlite::Connection;
use serde::Serialize;

/// One schedule as `agentvisor schedules` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleSummary {
    /// The schedule's id.
    pub schedule_id: String,
    /// Its name, if given.
    pub name: Option<String>,
    /// `at`, `after`, `every` or `cron`.
    pub kind: String,
    /// When: the `at` text, the period in seconds, or the cron pattern.
    pub when: String,
    /// The IANA zone.
    pub timezone: String,
    /// `run_once` or `skip`.
    pub misfire: String,
    /// `active`, `ended` or `cancelled`.
    pub state: String,
    /// The next firing, Unix seconds.
    pub next_fire_at: Option<f64>,
    /// The last firing, Unix seconds.
    pub last_fire_at: Option<f64>,
    /// Firings so far.
    pub firings: u64,
}

/// Every schedule, oldest first.
///
/// # Errors
/// SQLite's.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<ScheduleSummary>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, kind, at, every_seconds, cron, timezone, misfire, state, next_fire_at, last_fire_at, firings
         FROM schedules ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| {
        let (at, every, cron): (Option<String>, Option<f64>, Option<String>) = (r.get(3)?, r.get(4)?, r.get(5)?);
        let when = at.or(cron).or_else(|| every.map(|e| format!("{e}s"))).unwrap_or_default();
        Ok(ScheduleSummary {
            schedule_id: r.get(0)?,
            name: r.get(1)?,
            kind: r.get(2)?,
            when,
            timezone: r.get(6)?,
            misfire: r.get(7)?,
            state: r.get(8)?,
            next_fire_at: r.get(9)?,
            last_fire_at: r.get(10)?,
            firings: r.get::<_, i64>(11)?.max(0) as u64,
        })
    })?;
    rows.collect()
}
