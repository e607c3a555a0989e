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
