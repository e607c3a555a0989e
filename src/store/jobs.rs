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
