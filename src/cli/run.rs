//! `agentvisor run`: start a profile and supervise it until SIGINT/SIGTERM.
//!
//! Prints nothing itself (the daemon logs through tracing); an invalid
//! profile prints `error: PROBLEMS` on stderr and exits 1.

use std::path::Path;

use anyhow::Context;

use super::{Cli, ProfileArgs};
use crate::daemon;

/// Runs the daemon for `profile` until [`shutdown_signal`]; exit code 0, or 1
/// when the profile does not resolve.
pub(super) async fn run(
    cli: &Cli,
    profile: &ProfileArgs,
    http_listen: Option<&str>,
    data_dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let mut extra = Vec::new();
    if let Some(h) = http_listen {
        extra.push(("http.listen".to_string(), h.to_string()));
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

/// Resolves on SIGINT or SIGTERM (the graceful stop: drain, then agents).
/// A second SIGINT or SIGTERM during that stop ends the process at once
/// with exit status 130 (child processes die with it: `PR_SET_PDEATHSIG`).
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
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: draining, then stopping (again: stop now)"),
        _ = term.recv() => tracing::info!("SIGTERM received: draining, then stopping (again: stop now)"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second stop signal: exiting now without finishing the drain");
        std::process::exit(130);
    });
}
