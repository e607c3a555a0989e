//! `agentvisor jobs` and `agentvisor schedules`: AsyncProcessor's jobs and
//! TaskScheduler's schedules, read from the SQLite store
//! (`data_dir/agentvisor.db`; the daemon may be running). A table, or with
//! `--json` one JSON object per line. Exit code 0; no store is an error.

use std::path::Path;

use anyhow::bail;

use super::Cli;

/// Opens the store under `data_dir` (default: the `data_dir` setting).
fn open(cli: &Cli, data_dir: Option<&Path>) -> anyhow::Result<rusqlite::Connection> {
    let mut extra = Vec::new();
    if let Some(d) = data_dir {
        extra.push(("data_dir".to_string(), d.display().to_string()));
    }
    let settings = cli.settings(&extra)?;
    let path = settings.data_dir.join("agentvisor.db");
    if !path.exists() {
        bail!("no store at {} (has the daemon run with this data_dir?)", path.display());
    }
    Ok(crate::store::open_connection(&path)?)
}

/// Unix seconds as RFC 3339 text, `-` for none.
pub(super) fn time(t: Option<f64>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
            humantime::format_rfc3339_seconds(at).to_string()
        },
    )
}

/// Prints the `last` newest jobs (of `state`, when given), newest first.
pub(super) fn jobs(
    cli: &Cli,
    state: Option<&str>,
    last: u32,
    json: bool,
    data_dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let conn = open(cli, data_dir)?;
    let jobs = crate::store::jobs::list(&conn, state, last)?;
    if json {
        for j in &jobs {
            println!("{}", serde_json::to_string(j)?);
        }
        return Ok(0);
    }
    println!(
        "{:<36} {:<9} {:>3} {:>8} {:<24} {:<20} {:<20} ERROR",
        "JOB", "STATE", "PRI", "ATTEMPTS", "TYPE / AGENT", "CREATED", "FINISHED"
    );
    for j in &jobs {
        println!(
            "{:<36} {:<9} {:>3} {:>8} {:<24} {:<20} {:<20} {}",
            j.job_id,
            j.state,
            j.priority,
            format!("{}/{}", j.attempts, j.max_attempts),
            j.task_type.as_deref().or(j.agent.as_deref()).unwrap_or("-"),
            time(Some(j.created_at)),
            time(j.finished_at),
            j.error_code.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

/// Prints every schedule, oldest first.
pub(super) fn schedules(cli: &Cli, json: bool, data_dir: Option<&Path>) -> anyhow::Result<i32> {
    let conn = open(cli, data_dir)?;
    let schedules = crate::store::schedules::list(&conn)?;
    if json {
        for s in &schedules {
            println!("{}", serde_json::to_string(s)?);
        }
        return Ok(0);
    }
    println!(
        "{:<36} {:<16} {:<6} {:<24} {:<10} {:<9} {:>7} {:<20} NEXT",
        "SCHEDULE", "NAME", "KIND", "WHEN", "MISFIRE", "STATE", "FIRINGS", "LAST"
    );
    for s in &schedules {
        println!(
            "{:<36} {:<16} {:<6} {:<24} {:<10} {:<9} {:>7} {:<20} {}",
            s.schedule_id,
            s.name.as_deref().unwrap_or("-"),
            s.kind,
            format!("{} {}", s.when, if s.kind == "cron" { s.timezone.as_str() } else { "" }).trim(),
            s.misfire,
            s.state,
            s.firings,
            time(s.last_fire_at),
            time(s.next_fire_at)
        );
    }
    Ok(0)
}
