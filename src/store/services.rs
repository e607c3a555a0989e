//! The `services` table of ServiceRegistry. (Being written.)

/// Schema of this concern, applied once as a versioned migration.
pub const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS services_placeholder (x INTEGER);";
