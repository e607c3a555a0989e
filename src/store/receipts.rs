//! The `receipts` table: one row per routing decision and its outcome (the
//! shadow audit of the earlier system's gateway), and [`ReceiptLog`], the
//! batching writer HybridRouter hands receipts to (off the reply path; see
//! [`super::audit`] for the batch, back-pressure and crash-loss guarantees).

use std::time::Duration;

use rusqlite::{Connection, params};

use super::audit::AuditLog;
use super::{Store, StoreError};
pub use crate::core::Receipt;
use crate::telemetry::metrics::Metrics;

/// The receipts writer: `append` queues a receipt, a writer task commits
/// queued receipts in batches of at most `store.receipts_batch`; a crash
/// loses at most `2 × store.receipts_batch` receipts, a clean stop
/// ([`AuditLog::close`]) none.
pub type ReceiptLog = AuditLog<Receipt>;

/// Starts the receipts writer over `store` with batches of at most `batch`
/// receipts (metric label `log="receipts"`). Must run inside a tokio runtime.
pub fn start_log(store: &Store, batch: usize, linger: Duration, metrics: &Metrics) -> ReceiptLog {
    AuditLog::start("receipts", store.clone(), (batch, linger), insert_batch, metrics)
}

/// Inserts `rows` (the caller holds the transaction).
///
/// # Errors
/// [`StoreError::Sqlite`]; rows before the failing one stay in the
/// caller's transaction.
pub fn insert_batch(conn: &Connection, rows: &[Receipt]) -> Result<(), StoreError> {
    rows.iter().try_for_each(|r| insert(conn, r))
}

/// Migration: the content estimate of a call (JSON text, NULL when there was none).
pub(super) const MIGRATION_ESTIMATE: &str = "ALTER TABLE receipts ADD COLUMN estimate TEXT;";

/// Inserts one receipt.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn insert(conn: &Connection, r: &Receipt) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO receipts (ts, task_id, agent, task_type, tier, backend, model, complexity, reason, attempts,
            fallbacks, outcome, decide_us, queue_ms, first_token_ms, total_ms, tokens_in, tokens_out, cost_usd, user,
            estimate)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?
    .execute(params![
        r.ts,
        r.task_id,
        r.agent,
        r.task_type,
        r.tier,
        r.backend,
        r.model,
        r.complexity,
        r.reason,
        r.attempts,
        serde_json::to_string(&r.fallbacks).unwrap_or_else(|_| "[]".into()),
        r.outcome,
        r.decide_us,
        r.queue_ms,
        r.first_token_ms,
        r.total_ms,
        r.tokens_in,
        r.tokens_out,
        r.cost_usd,
        r.user,
        r.estimate.as_ref().and_then(|e| serde_json::to_string(e).ok()),
    ])?;
    Ok(())
}

/// The newest `limit` receipts, newest last.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn last(conn: &Connection, limit: u32) -> Result<Vec<Receipt>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT ts, task_id, agent, task_type, tier, backend, model, complexity, reason, attempts, fallbacks,
                outcome, decide_us, queue_ms, first_token_ms, total_ms, tokens_in, tokens_out, cost_usd, user,
                estimate
         FROM receipts ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |row| {
        let fallbacks: String = row.get(10)?;
        Ok(Receipt {
            ts: row.get(0)?,
            task_id: row.get(1)?,
            agent: row.get(2)?,
            user: row.get(19)?,
            task_type: row.get(3)?,
            tier: row.get(4)?,
            backend: row.get(5)?,
            model: row.get(6)?,
            complexity: row.get(7)?,
            reason: row.get(8)?,
            attempts: row.get(9)?,
            fallbacks: serde_json::from_str(&fallbacks).unwrap_or_default(),
            outcome: row.get(11)?,
            decide_us: row.get(12)?,
            queue_ms: row.get(13)?,
            first_token_ms: row.get(14)?,
            total_ms: row.get(15)?,
            tokens_in: row.get(16)?,
            tokens_out: row.get(17)?,
            cost_usd: row.get(18)?,
            estimate: row.get::<_, Option<String>>(20)?.and_then(|e| serde_json::from_str(&e).ok()),
            ..Default::default()
        })
    })?;
    let mut out: Vec<Receipt> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentvisor.db");
        {
            let conn = crate::store::open_connection(&path).unwrap();
            for i in 0..3 {
                let r = Receipt {
                    task_id: format!("t{i}"),
                    tier: "L1".into(),
                    fallbacks: vec!["x".into()],
                    ..Default::default()
                };
                insert(&conn, &r).unwrap();
            }
        }
        let conn = crate::store::open_connection(&path).unwrap();
        let got = last(&conn, 2).unwrap();
        assert_eq!(got.iter().map(|r| r.task_id.as_str()).collect::<Vec<_>>(), ["t1", "t2"]);
        assert_eq!(got[0].fallbacks, vec!["x".to_string()]);
    }
}
