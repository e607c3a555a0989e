//! The `proactive_suggestions` and `proactive_rules` tables: ProactiveAgent's
//! suggestions (bounded by `proactive.keep`, newest kept) and when each rule
//! last fired.

/// Migration 14.
pub(crate) const MIGRATION: &str = "CREATE TABLE proactive_suggestions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    text TEXT NOT NULL,
    session TEXT,
    user TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX proactive_suggestions_session ON proactive_suggestions(session, seq);
CREATE TABLE proactive_rules (
    name TEXT PRIMARY KEY,
    last_fired_at REAL NOT NULL
);";
