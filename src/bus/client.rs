//! The client end of the bus, for the CLI: `send` (one task over a DEALER
//! socket, streamed chunks printed as they come), `events` (a SUB socket),
//! and `bench` (the load generator: many DEALER connections, a window of
//! tasks in flight, optional paced rate, latency percentiles).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use super::envelope::Reply;
use crate::telemetry::latency::{Samples, Summary};

fn body_of(msg: ZmqMessage) -> Option<Bytes> {
    // A DEALER gets [body], or [empty][body] from peers that add a delimiter.
    msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty())
}

/// Sends `envelope` to `endpoint` and returns the final reply; `on_chunk`
/// sees each streamed message (`{"id","event":"chunk","seq","delta"}`) first.
///
/// # Errors
/// Connect failure, or no final reply within `timeout`.
pub async fn send(
    endpoint: &str,
    envelope: &Value,
    timeout: Duration,
    on_chunk: impl FnMut(&Value),
) -> anyhow::Result<Reply> {
    call(endpoint, envelope, timeout, on_chunk, &CancellationToken::new()).await
}

/// Longest wait for the answer to a `{"cancel"}` (the daemon answers the
/// cancelled task at once; a lost answer is not waited for longer).
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// [`send`] that `cancel` can stop: when it fires, a `{"cancel": id}` goes
/// to the daemon on the same connection (only the sender may cancel a
/// task), and the task's final reply (`cancelled`, or the answer when it
/// won the race) is returned. The envelope must carry an `id` for that.
///
/// # Errors
/// Connect failure, no final reply within `timeout` (or within 5 s of the
/// cancel).
pub async fn call(
    endpoint: &str,
    envelope: &Value,
    timeout: Duration,
    mut on_chunk: impl FnMut(&Value),
    cancel: &CancellationToken,
) -> anyhow::Result<Reply> {
    let mut socket = DealerSocket::new();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(endpoint))
        .await
        .with_context(|| format!("cannot connect to {endpoint} within 5 s"))??;
    let id = envelope.get("id").and_then(Value::as_str).map(str::to_string);
    socket.send(ZmqMessage::from(serde_json::to_vec(envelope)?)).await?;
    let mut deadline = Instant::now() + timeout;
    let mut cancel_sent = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::select! {
            m = tokio::time::timeout(left, socket.recv()) => m
                .with_context(|| format!("no reply from {endpoint} within {:.1} s", timeout.as_secs_f64()))??,
            () = cancel.cancelled(), if !cancel_sent && id.is_some() => {
                cancel_sent = true;
                let target = id.clone().unwrap_or_default();
                let message = serde_json::json!({"cancel": target});
                socket.send(ZmqMessage::from(serde_json::to_vec(&message)?)).await?;
                deadline = deadline.min(Instant::now() + CANCEL_GRACE);
                continue;
            }
        };
        let Some(body) = body_of(msg) else { continue };
        let value: Value = serde_json::from_slice(&body).context("reply is not JSON")?;
        if value.get("event").and_then(Value::as_str) == Some("chunk") {
            on_chunk(&value);
            continue;
        }
        let reply: Reply = serde_json::from_value(value).context("reply does not match the reply envelope")?;
        if id.is_none() || reply.id == id {
            return Ok(reply);
        }
    }
}

/// Prints events from `endpoint` whose topic starts with `prefix`, as
/// `TOPIC JSON` lines, until `limit` events (if set) or forever.
///
/// # Errors
/// Connect failure.
pub async fn events(endpoint: &str, prefix: &str, limit: Option<usize>) -> anyhow::Result<()> {
    let mut socket = SubSocket::new();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(endpoint))
        .await
        .with_context(|| format!("cannot connect to {endpoint} within 5 s"))??;
    socket.subscribe(prefix).await?;
    let mut n = 0;
    while limit.is_none_or(|l| n < l) {
        let msg = socket.recv().await?;
        let frames = msg.into_vec();
        if frames.len() == 2 {
            println!("{} {}", String::from_utf8_lossy(&frames[0]), String::from_utf8_lossy(&frames[1]));
            n += 1;
        }
    }
    Ok(())
}

/// Load generator settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// ROUTER endpoint.
    pub endpoint: String,
    /// Task type sent.
    pub task_type: String,
    /// Input sent.
    pub input: Value,
    /// Tasks in total.
    pub tasks: usize,
    /// Tasks in flight at once (across all connections).
    pub concurrency: usize,
    /// DEALER connections.
    pub connections: usize,
    /// Offered load, tasks per second (open loop); `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// The API token every task carries, when the daemon asks for one.
    pub token: Option<String>,
}

/// Load generator results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Tasks answered `ok`.
    pub ok: usize,
    /// Tasks answered with an error.
    pub errors: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Answered tasks per second.
    pub tasks_per_second: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl From<Summary> for BenchReport {
    fn from(s: Summary) -> BenchReport {
        BenchReport {
            ok: s.ok,
            errors: s.errors,
            seconds: s.seconds,
            tasks_per_second: s.per_second,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

/// Runs the load generator.
///
/// # Errors
/// Connect failures, or replies that stop coming for 30 s.
pub async fn bench(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    Ok(bench_samples(opts).await?.summary().into())
}

/// Runs the load generator and returns what it measured (to merge rounds).
///
/// # Errors
/// Connect failures, or replies that stop coming for 30 s.
pub async fn bench_samples(opts: BenchOptions) -> anyhow::Result<Samples> {
    if opts.tasks == 0 || opts.concurrency == 0 || opts.connections == 0 {
        bail!("tasks, concurrency and connections must be positive");
    }
    let connections = opts.connections.min(opts.concurrency);
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..connections {
        let share = opts.tasks / connections + usize::from(c < opts.tasks % connections);
        let window = (opts.concurrency / connections + usize::from(c < opts.concurrency % connections)).max(1);
        let rate = opts.rate.map(|r| r / connections as f64);
        let opts = opts.clone();
        workers.spawn(async move { connection(opts, c, share, window, rate).await });
    }
    let mut samples = Samples { latencies_ms: Vec::with_capacity(opts.tasks), ..Samples::default() };
    while let Some(r) = workers.join_next().await {
        let (ok, errors, latencies_ms) = r??;
        samples.merge(Samples { ok, errors, seconds: 0.0, latencies_ms });
    }
    samples.seconds = t0.elapsed().as_secs_f64();
    Ok(samples)
}

async fn connection(
    opts: BenchOptions,
    conn: usize,
    tasks: usize,
    window: usize,
    rate: Option<f64>,
) -> anyhow::Result<(usize, usize, Vec<f64>)> {
    let mut socket = DealerSocket::new();
    socket.connect(&opts.endpoint).await.with_context(|| format!("cannot connect to {}", opts.endpoint))?;
    let (mut tx, mut rx) = socket.split();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(window * 2);
    let (mut sent, mut done, mut ok, mut errors) = (0usize, 0usize, 0usize, 0usize);
    let mut lat = Vec::with_capacity(tasks);
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    let start = Instant::now();
    let mut template = serde_json::json!({"type": opts.task_type, "input": opts.input});
    if let Some(t) = &opts.token {
        template["token"] = Value::String(t.clone());
    }
    while done < tasks {
        // Fill the window (paced when a rate is set).
        while sent < tasks && sent - done < window {
            if let Some(iv) = interval {
                let due = start + iv * sent as u32;
                if due > Instant::now() {
                    break;
                }
            }
            let id = format!("b{conn}-{sent}");
            let mut env = template.clone();
            env["id"] = Value::String(id.clone());
            tx.send(ZmqMessage::from(serde_json::to_vec(&env)?)).await?;
            sent_at.insert(id, Instant::now());
            sent += 1;
        }
        let wait = match interval {
            Some(iv) if sent < tasks && sent - done < window => {
                (start + iv * sent as u32).saturating_duration_since(Instant::now())
            }
            _ => Duration::from_secs(30),
        };
        let msg = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(m) => m?,
            Err(_) if wait < Duration::from_secs(30) => continue,
            Err(_) => bail!("no reply for 30 s ({done} of {tasks} answered on connection {conn})"),
        };
        let Some(body) = body_of(msg) else { continue };
        let reply: Reply = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => continue, // a chunk
        };
        if let Some(t) = reply.id.as_ref().and_then(|id| sent_at.remove(id)) {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            done += 1;
            if reply.status == "ok" {
                ok += 1;
            } else {
                errors += 1;
            }
        }
    }
    Ok((ok, errors, lat))
}
