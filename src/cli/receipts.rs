//! `agentvisor receipts`: print the newest routing receipts.
//!
//! Reads the SQLite store (`data_dir/agentvisor.db`) and prints the last
//! `--last` receipts, newest last, as a table (time, task, agent, tier,
//! backend, outcome, tries, total ms, tokens in and out, cost, reason and
//! fallbacks), or with `--json` one JSON object per line. Exit code 0; no
//! store is an error.

use std::path::Path;

use anyhow::bail;

use super::Cli;

/// Prints the `last` newest receipts of the store under `data_dir` (default:
/// the `data_dir` setting).
pub(super) fn receipts(cli: &Cli, last: u32, json: bool, data_dir: Option<&Path>) -> anyhow::Result<i32> {
    let mut extra = Vec::new();
    if let Some(d) = data_dir {
        extra.push(("data_dir".to_string(), d.display().to_string()));
    }
    let settings = cli.settings(&extra)?;
    let path = settings.data_dir.join("agentvisor.db");
    if !path.exists() {
        bail!("no store at {} (has the daemon run with this data_dir?)", path.display());
    }
    let conn = crate::store::open_connection(&path)?;
    let receipts = crate::store::receipts::last(&conn, last)?;
    if json {
        for r in &receipts {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!(
            "{:<24} {:<22} {:<24} {:<4} {:<14} {:<7} {:>6} {:>9} {:>6} {:>6} {:>10}  REASON / FALLBACKS",
            "TIME", "TASK", "AGENT", "TIER", "BACKEND", "OUTCOME", "TRIES", "TOTAL_MS", "IN", "OUT", "COST_USD"
        );
        for r in &receipts {
            let ts = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(r.ts.max(0.0));
            let mut why = r.reason.clone();
            if !r.fallbacks.is_empty() {
                why.push_str(&format!(" [{}]", r.fallbacks.join(", ")));
            }
            println!(
                "{:<24} {:<22} {:<24} {:<4} {:<14} {:<7} {:>6} {:>9.1} {:>6} {:>6} {:>10.6}  {}",
                humantime::format_rfc3339_seconds(ts).to_string(),
                r.task_id.chars().take(22).collect::<String>(),
                r.agent,
                r.tier,
                r.backend.as_deref().unwrap_or("-"),
                r.outcome,
                r.attempts,
                r.total_ms,
                r.tokens_in,
                r.tokens_out,
                r.cost_usd,
                why
            );
        }
    }
    Ok(0)
}
