//! `agentvisor bench [bus]`: the load generator over the ZeroMQ ingress.
//!
//! Drives `--tasks` tasks through `--connections` DEALER sockets with
//! `--concurrency` in flight (at `--rate` tasks/s when given) and prints one
//! line: tasks, ok and errors, seconds, tasks/s, latency p50, p99 and max;
//! with `--json` the report as JSON. Exit code 0 when no task failed, else 1.
//!
//! `bench bus --baseline` first sends one task to the daemon and starts a
//! bare zmq.rs ROUTER echo ([`crate::bus::echo`]) in this process that
//! answers every task with that reply (its id swapped), then warms both up
//! (a tenth of `--tasks` each, not counted) and runs `--rounds` rounds of
//! `--tasks` tasks against the echo, then the daemon, with the same client,
//! window and connections; it prints both sides and the daemon's tasks/s as
//! a percentage of the echo's, and the latency it adds (p50, p99).
//! In-process, the echo shares this process's runtime with the client (no
//! wake-up crosses a process), while the daemon runs in its own process;
//! `bench echo` serves the same echo in a process of its own and `--echo
//! ENDPOINT` measures that one instead.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::super::send::parse_input;
use super::super::{BusLoadArgs, Cli};
use super::{Side, Unit, alternate};
use crate::bus::client::{self, BenchOptions};
use crate::bus::echo::Echo;
use crate::bus::envelope::Reply;

const TASKS: Unit = Unit { what: "tasks", rate: "tasks/s" };

fn options(cli: &Cli, load: &BusLoadArgs) -> anyhow::Result<BenchOptions> {
    let settings = cli.settings(&[])?;
    Ok(BenchOptions {
        endpoint: load.endpoint.clone().unwrap_or(settings.bus.ingress),
        task_type: load.task_type.clone(),
        input: parse_input(&load.input),
        tasks: load.tasks,
        concurrency: load.concurrency,
        connections: load.connections,
        rate: load.rate,
        token: cli.token.clone(),
    })
}

/// Runs the load once and prints the report; exit code 0 when every task was `ok`.
pub(super) async fn load(cli: &Cli, load: &BusLoadArgs) -> anyhow::Result<i32> {
    let opts = options(cli, load)?;
    let r = client::bench(opts).await?;
    if load.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tasks ({} ok, {} errors) in {:.2} s: {:.0} tasks/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (concurrency {}, connections {}{})",
            r.ok + r.errors,
            r.ok,
            r.errors,
            r.seconds,
            r.tasks_per_second,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            load.concurrency,
            load.connections,
            load.rate.map(|x| format!(", offered {x} tasks/s")).unwrap_or_default()
        );
    }
    Ok(if r.errors == 0 { 0 } else { 1 })
}

/// The daemon's reply to one task of `task_type` with `input`: what the echo answers.
async fn probe(endpoint: &str, task_type: &str, input: &Value) -> anyhow::Result<Reply> {
    let probe = json!({"id": "bench-probe", "type": task_type, "input": input});
    let reply = client::send(endpoint, &probe, Duration::from_secs(30), |_| {}).await?;
    if reply.status != "ok" {
        let why = reply.error.map(|e| format!("{}: {}", e.code.as_str(), e.message)).unwrap_or(reply.status);
        bail!("the daemon at {endpoint} answers {task_type} with an error: {why}");
    }
    Ok(reply)
}

/// `bench echo`: serves the echo on `listen` until SIGINT/SIGTERM.
pub(super) async fn echo(
    cli: &Cli,
    listen: &str,
    task_type: &str,
    input: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<i32> {
    let endpoint = endpoint.map_or(cli.settings(&[])?.bus.ingress, str::to_string);
    let template = probe(&endpoint, task_type, &parse_input(input)).await?;
    let echo = Echo::start(listen, template).await?;
    println!("echo: listening on {}", echo.endpoint());
    super::super::shutdown_signal().await;
    Ok(0)
}

/// Alternating rounds against a bare ROUTER echo (`echo_at`, else one in
/// this process) and the daemon; exit code 0 when no task failed on either side.
pub(super) async fn baseline(
    cli: &Cli,
    load: &BusLoadArgs,
    rounds: usize,
    echo_at: Option<&str>,
) -> anyhow::Result<i32> {
    let opts = options(cli, load)?;
    if rounds == 0 || opts.tasks == 0 || opts.concurrency == 0 || opts.connections == 0 {
        bail!("rounds, tasks, concurrency and connections must be positive");
    }
    let template = probe(&opts.endpoint, &opts.task_type, &opts.input).await?;
    let echo = match echo_at {
        Some(_) => None,
        None => Some(Echo::start("tcp://127.0.0.1:0", template).await?),
    };
    let echo_endpoint =
        echo.as_ref().map_or_else(|| echo_at.unwrap_or_default().to_string(), |e| e.endpoint().to_string());
    let endpoints = [echo_endpoint, opts.endpoint.clone()];
    for endpoint in &endpoints {
        let warm = BenchOptions { endpoint: endpoint.clone(), tasks: (opts.tasks / 10).max(1), ..opts.clone() };
        client::bench_samples(warm).await?;
    }
    let sides = [Side::new("echo", endpoints[0].clone()), Side::new("daemon", endpoints[1].clone())];
    let c = alternate(sides, rounds, TASKS, load.json, async |i| {
        client::bench_samples(BenchOptions { endpoint: endpoints[i].clone(), ..opts.clone() }).await
    })
    .await?;
    drop(echo);
    if load.json {
        let settings = json!({
            "task_type": opts.task_type, "window": opts.concurrency, "connections": opts.connections,
            "rate": opts.rate, "rounds": rounds, "tasks_per_round": opts.tasks,
            "echo_in_process": echo_at.is_none(),
        });
        println!("{}", c.to_json(settings));
    } else {
        c.print(&format!(
            "window {}, {} connections, {rounds} rounds × {} {} tasks per side{}{}",
            opts.concurrency,
            opts.connections,
            opts.tasks,
            opts.task_type,
            opts.rate.map(|x| format!(", offered {x} tasks/s")).unwrap_or_default(),
            if echo_at.is_none() { ", echo in this process" } else { ", echo in its own process" }
        ));
    }
    Ok(if c.errors() == 0 { 0 } else { 1 })
}
