//! The daemon: load catalog and profile, bind the HTTP server, start the
//! supervision tree, boot, wait for the stop signal, stop in order.
//!
//! `main` calls [`run`] with a future that resolves on SIGINT/SIGTERM; tests
//! pass their own.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::config::catalog::{Catalog, Problems};
use crate::config::profile::{self, Plan};
use crate::supervisor::Fleet;
use crate::telemetry::http;

/// Loads the catalog (`catalog`, or `settings.agents_dir`) and resolves
/// `profile_name` (a name under `settings.profiles_dir`, or a path).
///
/// # Errors
/// Every problem of the catalog and the profile.
pub fn load_plan(settings: &Settings, catalog: Option<&Path>, profile_name: &str) -> Result<(Catalog, Plan), Problems> {
    let catalog = Catalog::load(catalog.unwrap_or(&settings.agents_dir))?;
    let spec = profile::load_profile(&settings.profiles_dir, profile_name)?;
    let plan = profile::resolve(&catalog, &spec)?;
    Ok((catalog, plan))
}

/// Runs the fleet of `plan` until `shutdown` resolves, then stops every
/// agent in reverse dependency order within `supervisor.shutdown_deadline_secs`.
/// Prints `http: listening on ADDR` and a boot summary on stdout.
///
/// # Errors
/// The HTTP address cannot be bound, the data dir cannot be created, or
/// the supervisors cannot start.
pub async fn run(
    settings: Settings,
    catalog: Catalog,
    plan: Plan,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&settings.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
    let addr = listener.local_addr()?;
    let deadline = Duration::from_secs_f64(settings.supervisor.shutdown_deadline_secs.max(1.0));
    let fleet = Fleet::start(settings, catalog, plan).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, http::router(fleet.clone()), async {
        let _ = http_stopped.await;
    }));
    println!("http: listening on {addr}");
    tracing::info!(%addr, profile = %fleet.ctx().plan.name, "agentvisor starting");

    let report = fleet.boot().await;
    println!(
        "boot: profile {} — {} running, {} unavailable, {} failed, {} dormant in {:.1} ms",
        fleet.ctx().plan.name,
        report.running.len(),
        report.unavailable.len(),
        report.failed.len(),
        fleet.ctx().plan.dormant.len(),
        report.elapsed.as_secs_f64() * 1e3
    );
    if let Some((ingress, events)) = fleet.ctx().bus_endpoints() {
        println!("bus: ingress on {ingress}");
        println!("bus: events on {events}");
    }
    for (agent, reason) in &report.unavailable {
        println!("  unavailable: {agent}: {reason}");
    }
    for (agent, error) in &report.failed {
        println!("  failed: {agent}: {error}");
    }

    shutdown.await;
    tracing::info!("stopping: agents in reverse dependency order");
    fleet.shutdown(deadline).await;
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server error"),
        Err(_) => tracing::warn!("http server did not stop within 5 s"),
        _ => {}
    }
    println!("stopped");
    Ok(())
}
