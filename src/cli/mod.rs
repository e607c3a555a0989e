//! Command-line interface (clap). Each command returns its exit code.
//!
//! This file holds the clap definitions ([`Cli`], [`Command`]), the global
//! flags (`--config`, `--set`), settings loading and [`execute`], which hands
//! each command to its own file: `run`, `check`, `agents`, `send`, `events`,
//! `receipts`, `jobs`, `schedules`, `models`, `tasks`, `mcp`, `token`, and the `bench` folder (`bus`, `gateway`).

mod agents;
mod bench;
mod check;
mod events;
mod jobs;
mod mcp;
mod models;
mod receipts;
mod run;
mod send;
mod tasks;
mod token;

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
    /// API token the client commands (`send`, `mcp`, `bench`) present to
    /// the daemon; needed once the daemon has tokens (`agentvisor token`).
    #[arg(long, env = "AGENTVISOR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
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
    /// Serve MCP (Model Context Protocol) over stdin/stdout: every task type
    /// of the running daemon as a tool (`utils.hash` is `utils_hash`), the
    /// agent tree and recent receipts as resources. For assistants that
    /// spawn it; the daemon serves the same at `/mcp` over HTTP.
    Mcp {
        /// The daemon's ROUTER endpoint (default: `bus.ingress`).
        #[arg(long)]
        endpoint: Option<String>,
        /// The daemon's data directory, for the receipts (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// API tokens in the store under `data_dir` (works with the daemon
    /// running or not; it sees changes within `auth.reload_secs`).
    Token {
        /// `create`, `list` or `revoke`.
        #[command(subcommand)]
        action: TokenAction,
        /// Data directory (overrides `data_dir`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
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
    /// Local model files: `pull` a GGUF (URL, `hf:` reference or a known
    /// name), `fetch` the default model, `list` (and `--verify`) what
    /// `models_dir` holds, `rm` one.
    Models {
        /// `pull`, `fetch`, `list` or `rm`.
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
    /// List AsyncProcessor's background jobs from the SQLite store (`data_dir/agentvisor.db`).
    Jobs {
        /// Only jobs in this state (queued, running, done, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        last: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List TaskScheduler's schedules from the SQLite store (`data_dir/agentvisor.db`).
    Schedules {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Benchmarks: `agentvisor bench [bus]` drives tasks through the ZeroMQ
    /// ingress (`--baseline`: against a bare zmq.rs ROUTER echo too, in
    /// alternating rounds); `bench gateway` the `/v1` gateway against its
    /// upstream directly, in alternating rounds; `bench upstream` serves the
    /// fixed-answer upstream.
    Bench(BenchArgs),
}

/// `agentvisor token` actions.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// Who the token is for (the task envelope's `user`).
        #[arg(long)]
        subject: String,
        /// Comma-separated: `tasks` (run tasks), `admin` (everything), `read` (GET routes, metrics).
        #[arg(long, default_value = "tasks,read")]
        scopes: String,
        /// Lifetime, seconds (default: no expiry).
        #[arg(long)]
        expires_in: Option<f64>,
        /// A label for listings.
        #[arg(long)]
        name: Option<String>,
        /// Print `{"token_id", "token", "subject", "scopes", "expires_at"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never the secrets): id, subject, scopes, name, created, expires, revoked.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id; exit code 1 when no token has that id.
    Revoke {
        /// The token's id (`tok_...`).
        token_id: String,
    },
}

/// `agentvisor bench [bus|gateway|upstream]`; without a mode: `bus`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// The benchmark (default: `bus`).
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// The bus load (when no mode is given).
    #[command(flatten)]
    pub load: BusLoadArgs,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Load generator over the ZeroMQ ingress: tasks/s and latency percentiles;
    /// `--baseline`: alternating rounds against a bare zmq.rs ROUTER echo
    /// (in-process) and the daemon, with the ratio.
    Bus {
        /// The load.
        #[command(flatten)]
        load: BusLoadArgs,
        /// Compare with a bare zmq.rs ROUTER echo in alternating rounds
        /// (`--tasks` per side and round).
        #[arg(long)]
        baseline: bool,
        /// Rounds (with `--baseline`): echo, then daemon, each round.
        #[arg(long, default_value_t = 3, requires = "baseline")]
        rounds: usize,
        /// With `--baseline`: the echo `agentvisor bench echo` serves at this
        /// endpoint, in its own process, instead of one in this process.
        #[arg(long, requires = "baseline")]
        echo: Option<String>,
    },
    /// Serve the bare zmq.rs ROUTER echo of `bench bus --baseline` in its own
    /// process until SIGINT/SIGTERM; it answers with the daemon's reply to
    /// one task of `--type` (asked once at start).
    Echo {
        /// ROUTER endpoint to bind.
        #[arg(long, default_value = "tcp://127.0.0.1:7401")]
        listen: String,
        /// Task type whose reply the echo answers with.
        #[arg(long = "type", default_value = "utils.echo")]
        task_type: String,
        /// Input of that task (text, or JSON when it parses).
        #[arg(long, default_value = "ping")]
        input: String,
        /// The daemon's ROUTER endpoint (default: `bus.ingress`).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// `POST /v1/chat/completions` against the upstream directly and through
    /// agentvisor in alternating rounds: req/s, p50/p99/max (ms) of both,
    /// the added latency and the req/s ratio.
    Gateway(GatewayBenchArgs),
    /// Serve the fixed-answer OpenAI-compatible upstream of `bench gateway`
    /// until SIGINT/SIGTERM.
    Upstream {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
    },
}

/// The bus load generator's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BusLoadArgs {
    /// Task type.
    #[arg(long = "type", default_value = "utils.echo")]
    pub task_type: String,
    /// Input (text, or JSON when it parses).
    #[arg(long, default_value = "ping")]
    pub input: String,
    /// Tasks in total (with `--baseline`: per side and round).
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// Tasks in flight at once (the window).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// DEALER connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Offered load, tasks per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// ROUTER endpoint (default: `bus.ingress`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `agentvisor bench gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayBenchArgs {
    /// Start the fixed-answer upstream and an in-process daemon whose
    /// backend `bench` points at it (no other backend).
    #[arg(long, conflicts_with_all = ["gateway", "upstream"])]
    pub spawn: bool,
    /// With `--spawn`: boot this profile in the in-process daemon (default:
    /// no agents, only the gateway and HybridRouter).
    #[arg(long, requires = "spawn")]
    pub profile: Option<String>,
    /// The gateway's base URL, e.g. `http://127.0.0.1:9000/v1`.
    #[arg(long, required_unless_present = "spawn", requires = "upstream")]
    pub gateway: Option<String>,
    /// The upstream's base URL, e.g. `http://127.0.0.1:9100/v1`.
    #[arg(long, required_unless_present = "spawn", requires = "gateway")]
    pub upstream: Option<String>,
    /// The request's `model`: a backend name, which the gateway forces
    /// (answers naming another backend count as errors).
    #[arg(long, default_value = "bench")]
    pub model: String,
    /// Concurrent keep-alive HTTP/1.1 connections (one request in flight each).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Seconds per side and round.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Requests per side and round instead of `--seconds`.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Rounds: upstream directly, then through agentvisor, each round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `agentvisor models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Download a GGUF file into `models_dir`: REF is an http(s) URL, a Hugging
    /// Face reference `hf:OWNER/REPO/PATH.gguf[@REVISION]` (resolved against
    /// `HF_ENDPOINT`, default https://huggingface.co) or a known name
    /// (`smollm2-135m`). Resumes an interrupted download; checks the GGUF
    /// header and the SHA-256 before the file takes its name.
    Pull {
        /// What to pull.
        reference: String,
        /// Install under this file name (`.gguf` added when missing).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Expected SHA-256 of the file (hex); refused when it differs.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Download and verify the default model (a no-op when present): the
    /// alias of `models pull smollm2-135m`.
    Fetch,
    /// List the GGUF files of `models_dir` with their metadata and, when a
    /// daemon answers on the bus, their state (loaded, loading, available).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Hash every file and compare with its recorded `<file>.sha256`
        /// (column SHA256: ok, MISMATCH, unrecorded); exit code 1 on a mismatch.
        #[arg(long)]
        verify: bool,
    },
    /// Delete a model file (and its `.sha256`); a running daemon unloads it
    /// first, and a model that is serving is refused (`model_busy`).
    Rm {
        /// Model name (the file name without `.gguf`) or file name.
        name: String,
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
        Command::Mcp { endpoint, data_dir } => mcp::mcp(&cli, endpoint.as_deref(), data_dir.as_deref()).await,
        Command::Token { action, data_dir } => token::token(&cli, action, data_dir.as_deref()),
        Command::Events { topic, count, endpoint } => events::events(&cli, topic, *count, endpoint.as_deref()).await,
        Command::Models { action, models_dir } => models::models(&cli, action, models_dir.as_deref()).await,
        Command::Receipts { last, json, data_dir } => receipts::receipts(&cli, *last, *json, data_dir.as_deref()),
        Command::Jobs { state, last, json, data_dir } => {
            jobs::jobs(&cli, state.as_deref(), *last, *json, data_dir.as_deref())
        }
        Command::Schedules { json, data_dir } => jobs::schedules(&cli, *json, data_dir.as_deref()),
        Command::Bench(args) => bench::bench(&cli, args).await,
    }
}
