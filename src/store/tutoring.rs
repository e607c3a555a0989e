//! The `tutoring_sessions` and `tutoring_mastery` tables: TutoringAgent's
//! sessions (the current question and its expected answer, the score) and
//! each learner's running mastery score per topic.

/// Migration 13.
pub(crate) const MIGRATION: &str = "CREATE TABLE tutoring_sessions (
    id TEXT PRIMARY KEY,
    learner TEXT NOT NULL,
    topic TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    asked INTEGER NOT NULL DEFAULT 0,
    correct INTEGER NOT NULL DEFAULT 0,
    current TEXT
);
CREATE TABLE tutoring_mastery (
    learner TEXT NOT NULL,
    topic TEXT NOT NULL,
    mastery REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (learner, topic)
);";
