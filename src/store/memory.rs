//! Tables of the memory agents (MemoryOrchestratorService, KnowledgeBase).
//! (Being written.)

/// Schema of this concern, applied once as a versioned migration.
pub const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS memory_placeholder (x INTEGER);";
