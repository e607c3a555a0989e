//! `agentvisor bench gateway` and `agentvisor bench upstream`.
//!
//! The gateway bench sends one fixed small request, `{"model": MODEL,
//! "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16,
//! "stream": false}`, as `POST {base}/chat/completions` over `--connections`
//! keep-alive HTTP/1.1 connections (each one request at a time) for
//! `--seconds` (or `--requests`) per side and round, alternating: the
//! upstream directly, then agentvisor's gateway. `MODEL` (`--model`, default
//! `bench`) names a backend, so the gateway forces it: every answer through
//! agentvisor must carry `x-agentvisor-backend: MODEL`, else it counts as an
//! error, like any answer other than `200` (the first one of each side is
//! printed on stderr). agentvisor has no response cache; each request takes
//! the whole path (decision, backend call, receipt). Before the first round
//! every connection sends 20 requests to each side, not counted.
//!
//! `--spawn` makes it one command: the fixed-answer upstream
//! ([`crate::http::upstream`]) on a free port and an in-process daemon
//! ([`System`]) whose only backend, named MODEL, is `{kind: openai, tier:
//! L1, base_url: UPSTREAM}` with the other settings at their defaults (the
//! config file and `--set` apply first), its data in a temporary directory,
//! its HTTP server on a free port, logging warnings (`RUST_LOG` overrides),
//! and no agents unless `--profile` names some (the bus then binds free ports).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::super::{Cli, GatewayBenchArgs};
use super::{Side, Unit, alternate};
use crate::config::catalog::Catalog;
use crate::config::profile;
use crate::config::profile_spec::ProfileSpec;
use crate::config::{BackendSettings, LogSettings};
use crate::daemon::{self, System};
use crate::http;
use crate::telemetry::latency::Samples;

const REQUESTS: Unit = Unit { what: "requests", rate: "req/s" };

/// Requests per connection and side before the first round (not counted).
const WARMUP_PER_CONNECTION: usize = 20;

/// Serves the fixed-answer upstream on `listen` until SIGINT/SIGTERM.
pub(super) async fn upstream(listen: &str) -> anyhow::Result<i32> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    println!("upstream: listening on {}", listener.local_addr()?);
    http::serve(listener, http::upstream::router(), super::super::shutdown_signal()).await?;
    Ok(0)
}

/// Runs the comparison; exit code 0 when every answer on both sides was right.
pub(super) async fn gateway(cli: &Cli, args: &GatewayBenchArgs) -> anyhow::Result<i32> {
    if args.connections == 0
        || args.rounds == 0
        || args.requests == Some(0)
        || args.seconds.is_nan()
        || args.seconds <= 0.0
    {
        bail!("connections, rounds, requests and seconds must be positive");
    }
    let spawned = if args.spawn { Some(Spawned::start(cli, args).await?) } else { None };
    let (upstream, gateway) = match &spawned {
        Some(s) => (s.upstream.clone(), s.gateway.clone()),
        None => (args.upstream.clone().unwrap_or_default(), args.gateway.clone().unwrap_or_default()),
    };
    let result = compare(args, &upstream, &gateway).await;
    if let Some(s) = spawned {
        s.stop().await;
    }
    result
}

async fn compare(args: &GatewayBenchArgs, upstream: &str, gateway: &str) -> anyhow::Result<i32> {
    let body = Bytes::from(serde_json::to_vec(&json!({
        "model": args.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16, "stream": false,
    }))?);
    let targets = [
        Target::new(upstream, None, args.connections)?,
        Target::new(gateway, Some(args.model.clone()), args.connections)?,
    ];
    for t in &targets {
        t.drive(&body, Until::Requests(WARMUP_PER_CONNECTION * args.connections)).await?;
    }
    let until = match args.requests {
        Some(n) => Until::Requests(n),
        None => Until::Seconds(Duration::from_secs_f64(args.seconds)),
    };
    let sides = [Side::new("direct", targets[0].url.clone()), Side::new("agentvisor", targets[1].url.clone())];
    let mut told = [false; 2];
    let c = alternate(sides, args.rounds, REQUESTS, args.json, async |i| {
        let (samples, first_error) = targets[i].drive(&body, until).await?;
        if let Some(e) = first_error.filter(|_| !told[i]) {
            told[i] = true;
            eprintln!("{}: first error: {e}", targets[i].url);
        }
        Ok(samples)
    })
    .await?;
    let per_round = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{} s", args.seconds),
    };
    if args.json {
        let settings = json!({
            "model": args.model, "connections": args.connections, "rounds": args.rounds,
            "seconds_per_round": args.requests.is_none().then_some(args.seconds),
            "requests_per_round": args.requests, "spawned": args.spawn,
        });
        println!("{}", c.to_json(settings));
    } else {
        let conns = if args.connections == 1 {
            "1 connection".to_string()
        } else {
            format!("{} connections", args.connections)
        };
        c.print(&format!("{conns}, {} rounds × {per_round} per side, model {}", args.rounds, args.model));
    }
    Ok(if c.errors() == 0 { 0 } else { 1 })
}

/// How long one side's run lasts.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// This many requests, spread over the connections.
    Requests(usize),
    /// Until this much time has passed (requests in flight finish).
    Seconds(Duration),
}

/// One side: its `chat/completions` URL and one client per connection.
struct Target {
    url: String,
    /// The backend every answer must name in `x-agentvisor-backend`.
    backend: Option<String>,
    clients: Vec<reqwest::Client>,
}

impl Target {
    fn new(base: &str, backend: Option<String>, connections: usize) -> anyhow::Result<Target> {
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        // One client each, one idle connection kept: one keep-alive connection per client.
        let clients = (0..connections)
            .map(|_| {
                reqwest::Client::builder()
                    .no_proxy()
                    .http1_only()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        Ok(Target { url, backend, clients })
    }

    /// Runs the load once: its samples and the first wrong answer, if any.
    async fn drive(&self, body: &Bytes, until: Until) -> anyhow::Result<(Samples, Option<String>)> {
        let n = self.clients.len();
        let t0 = Instant::now();
        let deadline = match until {
            Until::Seconds(d) => Some(t0 + d),
            Until::Requests(_) => None,
        };
        let mut workers = JoinSet::new();
        for (c, client) in self.clients.iter().enumerate() {
            let share = match until {
                Until::Requests(total) => total / n + usize::from(c < total % n),
                Until::Seconds(_) => usize::MAX,
            };
            let conn = Connection {
                client: client.clone(),
                url: self.url.clone(),
                backend: self.backend.clone(),
                body: body.clone(),
            };
            workers.spawn(async move { conn.run(share, deadline).await });
        }
        let (mut samples, mut first_error) = (Samples::default(), None);
        while let Some(r) = workers.join_next().await {
            let (s, e) = r??;
            samples.merge(s);
            first_error = first_error.or(e);
        }
        samples.seconds = t0.elapsed().as_secs_f64();
        Ok((samples, first_error))
    }
}

/// One keep-alive connection's loop.
struct Connection {
    client: reqwest::Client,
    url: String,
    backend: Option<String>,
    body: Bytes,
}

impl Connection {
    async fn run(self, requests: usize, deadline: Option<Instant>) -> anyhow::Result<(Samples, Option<String>)> {
        let mut s = Samples::default();
        let mut first_error = None;
        while s.ok + s.errors < requests && deadline.is_none_or(|d| Instant::now() < d) {
            let t = Instant::now();
            let response = self
                .client
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .body(self.body.clone())
                .send()
                .await
                .with_context(|| format!("POST {}", self.url))?;
            let status = response.status();
            let routed =
                response.headers().get("x-agentvisor-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
            let answer = response.bytes().await.with_context(|| format!("POST {}: reading the answer", self.url))?;
            s.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let pinned = self.backend.as_ref().is_none_or(|b| routed.as_ref() == Some(b));
            if status == StatusCode::OK && pinned {
                s.ok += 1;
            } else {
                s.errors += 1;
                if first_error.is_none() {
                    let routed = routed.map(|b| format!(" (x-agentvisor-backend: {b})")).unwrap_or_default();
                    let text = String::from_utf8_lossy(&answer[..answer.len().min(300)]).into_owned();
                    first_error = Some(format!("{status}{routed}: {text}"));
                }
            }
        }
        Ok((s, first_error))
    }
}

/// The upstream and an in-process daemon in front of it (`--spawn`).
struct Spawned {
    upstream: String,
    gateway: String,
    system: System,
    stop_upstream: oneshot::Sender<()>,
    stop_http: oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    data_dir: PathBuf,
}

impl Spawned {
    async fn start(cli: &Cli, args: &GatewayBenchArgs) -> anyhow::Result<Spawned> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let upstream = format!("http://{}/v1", listener.local_addr()?);
        let (stop_upstream, stopped) = oneshot::channel::<()>();
        tokio::spawn(http::serve(listener, http::upstream::router(), async {
            let _ = stopped.await;
        }));

        let data_dir = std::env::temp_dir().join(format!("agentvisor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let free = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut settings = cli.settings(&[
            free("data_dir", &data_dir.display().to_string()),
            free("bus.ingress", "tcp://127.0.0.1:0"),
            free("bus.events", "tcp://127.0.0.1:0"),
        ])?;
        let backend: BackendSettings = serde_json::from_value(json!({
            "kind": "openai", "tier": "L1", "base_url": upstream, "model": http::upstream::MODEL,
        }))?;
        settings.backends.clear();
        settings.backends.insert(args.model.clone(), backend);
        let log = LogSettings { level: "warn".into(), ..settings.log.clone() };
        crate::telemetry::tracing_setup::init(&log);
        let (catalog, plan) = match &args.profile {
            Some(p) => daemon::load_plan(&settings, None, p).map_err(|e| anyhow!("profile {p}: {e}"))?,
            None => {
                let catalog = Catalog::default();
                let plan = profile::resolve(&catalog, &ProfileSpec::default()).map_err(|e| anyhow!("{e}"))?;
                (catalog, plan)
            }
        };
        let system = System::start(settings, catalog, plan).await?;
        let boot = system.boot().await;
        for (agent, error) in &boot.failed {
            eprintln!("bench: agent {agent} failed to start: {error}");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let gateway = format!("http://{}/v1", listener.local_addr()?);
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(http::serve(listener, http::router(system.http_app()), async {
            let _ = stopped.await;
        }));
        Ok(Spawned { upstream, gateway, system, stop_upstream, stop_http, http, data_dir })
    }

    async fn stop(self) {
        self.system.shutdown(Duration::from_secs(10)).await;
        let _ = self.stop_http.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        let _ = self.stop_upstream.send(());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
