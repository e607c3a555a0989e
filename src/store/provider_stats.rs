//! Statistics of the `receipts` table per agent, for AdvancedRouter's
//! provider matrix ([`crate::agents::builtin::advanced_router`]): how long
//! an agent's model calls took and what they cost, over a recent window.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::StoreError;

/// One agent's answered model calls within the window.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStats {
    /// Receipts counted (outcome `ok`).
    pub calls: u64,
    /// Mean end-to-end time of a call, seconds.
    pub mean_seconds: f64,
    /// Cost per 1 000 tokens (in + out), US dollars; `None` when no token was counted.
    pub cost_usd_per_1k: Option<f64>,
}

/// Per agent, the statistics of its answered (`ok`) receipts since `since`
/// (Unix seconds).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn agent_stats(conn: &Connection, since: f64) -> Result<BTreeMap<String, AgentStats>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent, COUNT(*), AVG(total_ms), SUM(cost_usd), SUM(tokens_in + tokens_out)
         FROM receipts WHERE ts >= ?1 AND outcome = 'ok' GROUP BY agent",
    )?;
    let rows = stmt.query_map(params![since], |r| {
        let tokens: i64 = r.get(4)?;
        let cost: f64 = r.get(3)?;
        Ok((
            r.get::<_, String>(0)?,
            AgentStats {
                calls: r.get::<_, i64>(1)? as u64,
                mean_seconds: r.get::<_, f64>(2)? / 1000.0,
                cost_usd_per_1k: (tokens > 0).then(|| cost / tokens as f64 * 1000.0),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
