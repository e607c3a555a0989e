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
