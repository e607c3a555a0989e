//! The `goals` table: GoalManager's goals. A goal row is written before
//! `goal.create` answers and at each change of a subtask's state; the
//! subtasks (type, input, agent, job id, state, output, error) are one JSON
//! array, so a restart sees every goal as it was and resumes watching the
//! running ones.

/// Migration 11.
pub(crate) const MIGRATION: &str = "CREATE TABLE goals (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    user TEXT,
    session TEXT,
    state TEXT NOT NULL,
    subtasks TEXT NOT NULL,
    planner TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX goals_created ON goals(created_at);";
