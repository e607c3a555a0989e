//! `agentvisor bench`: a load generator over the ZeroMQ ingress.
//!
//! Drives `--tasks` tasks through `--connections` DEALER sockets with
//! `--concurrency` in flight (at `--rate` tasks/s when given) and prints one
//! line: tasks, ok and errors, seconds, tasks/s, latency p50, p99 and max;
//! with `--json` the report as JSON. Exit code 0 when no task failed, else 1.

use super::Cli;
use super::send::parse_input;

/// Runs the load and prints the report; exit code 0 when every task was `ok`.
#[expect(clippy::too_many_arguments, reason = "the fields of `Command::Bench`, as clap parsed them")]
pub(super) async fn bench(
    cli: &Cli,
    task_type: &str,
    input: &str,
    tasks: usize,
    concurrency: usize,
    connections: usize,
    rate: Option<f64>,
    endpoint: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    let opts = crate::bus::client::BenchOptions {
        endpoint: endpoint.map_or(settings.bus.ingress, str::to_string),
        task_type: task_type.to_string(),
        input: parse_input(input),
        tasks,
        concurrency,
        connections,
        rate,
    };
    let r = crate::bus::client::bench(opts).await?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tasks ({} ok, {} errors) in {:.2} s: {:.0} tasks/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (concurrency {concurrency}, connections {connections}{})",
            r.ok + r.errors,
            r.ok,
            r.errors,
            r.seconds,
            r.tasks_per_second,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            rate.map(|x| format!(", offered {x} tasks/s")).unwrap_or_default()
        );
    }
    Ok(if r.errors == 0 { 0 } else { 1 })
}
