//! The `receipts` table: one row per routing decision and its outcome (the
//! shadow audit of the earlier system's gateway).

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The record of one routing decision and its outcome. Also the `route`
/// field of a reply and the `route.decided` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Receipt {
    /// Unix time of the decision, seconds.
    pub ts: f64,
    /// The task (or gateway request) id.
    pub task_id: String,
    /// The agent that asked (`gateway` for `/v1` requests).
    pub agent: String,
    /// Task type used for the rules.
    pub task_type: String,
    /// `L1`, `L2` or `L3`.
    pub tier: String,
    /// The backend that answered (or the last one tried).
    pub backend: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Complexity used, 0.0–1.0.
    pub complexity: f64,
    /// Why this tier and backend.
    pub reason: String,
    /// HTTP attempts across all backends tried.
    pub attempts: u32,
    /// Failover steps taken (`fallback_to_local`, `next_backend:<name>`, ...).
    pub fallbacks: Vec<String>,
    /// `ok` or the error code.
    pub outcome: String,
    /// Decision time, microseconds.
    pub decide_us: f64,
    /// Waiting before the decision (bus queue), milliseconds.
    pub queue_ms: f64,
    /// Time to first token, milliseconds.
    pub first_token_ms: Option<f64>,
    /// Decision to answer, milliseconds.
    pub total_ms: f64,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Estimated cost, USD (the backend's configured prices per 1k tokens).
    pub cost_usd: f64,
}

/// Inserts one receipt.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn insert(conn: &Connection, r: &Receipt) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO receipts (ts, task_id, agent, task_type, tier, backend, model, complexity, reason, attempts,
            fallbacks, outcome, decide_us, queue_ms, first_token_ms, total_ms, tokens_in, tokens_out, cost_usd)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
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
        ],
    )?;
    Ok(())
}

/// The newest `limit` receipts, newest last.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn last(conn: &Connection, limit: u32) -> Result<Vec<Receipt>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT ts, task_id, agent, task_type, tier, backend, model, complexity, reason, attempts, fallbacks,
                outcome, decide_us, queue_ms, first_token_ms, total_ms, tokens_in, tokens_out, cost_usd
         FROM receipts ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |row| {
        let fallbacks: String = row.get(10)?;
        Ok(Receipt {
            ts: row.get(0)?,
            task_id: row.get(1)?,
            agent: row.get(2)?,
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
