//! The `mood_records` table: MoodTrackerAgent's recorded emotions per user
//! (EmotionEngine results), from which the current mood is computed with
//! exponential decay.

/// Migration 12.
pub(crate) const MIGRATION: &str = "CREATE TABLE mood_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT,
    label TEXT NOT NULL,
    intensity REAL NOT NULL,
    text TEXT,
    ts REAL NOT NULL
);
CREATE INDEX mood_records_user ON mood_records(user, ts);";
