//! The daemon and the composition root (DESIGN §15): [`System::start`]
//! builds every shared service (store, events, metrics, model manager,
//! load probe, HybridRouter, the agent table), registers the behaviours that
//! live above the agent layer (RequestCoordinator's bus), and starts the
//! supervision tree; [`run`] binds the HTTP server, boots, waits for the
//! stop signal and stops in order.
//!
//! `main` calls [`run`] with a future that resolves on SIGINT/SIGTERM; tests
//! pass their own, or start a [`System`] directly.

use std::future::Future;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};

use crate::agents::tasks::Assembly;
use crate::agents::{self, Services, Spawner};
use crate::bus::BusStatus;
use crate::bus::coordinator::Coordinator;
use crate::config::Settings;
use crate::config::catalog::{Catalog, Problems};
use crate::config::profile::{self, Plan};
use crate::events::EventBus;
use crate::http;
use crate::models::manager::ModelManager;
use crate::routing::router::{HybridRouter, LoadProbe, ROUTER_NAME, RouterArgs, RouterHandle, RouterMsg};
use crate::store::Store;
use crate::supervisor::{AgentTable, Fleet};
use crate::telemetry::metrics::Metrics;

/// One assembled daemon: the fleet, the services its agents share, the
/// bus status, and HybridRouter. Derefs to its [`Fleet`].
pub struct System {
    /// The supervision tree.
    pub fleet: Fleet,
    /// What the agents share.
    pub services: Arc<Services>,
    /// The task bus's endpoints and queue numbers (RequestCoordinator).
    pub bus: Arc<BusStatus>,
    router: ActorRef<RouterMsg>,
}

impl Deref for System {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl System {
    /// Builds the services, spawns HybridRouter and the supervisors. Agents
    /// stay `dormant` until [`Fleet::boot`].
    ///
    /// # Errors
    /// The store cannot be opened, or an actor name is taken (another
    /// daemon runs in this process with the same `testing.actor_name_prefix`).
    pub async fn start(settings: Settings, catalog: Catalog, plan: Plan) -> anyhow::Result<System> {
        let settings = Arc::new(settings);
        let metrics = Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        let store = Store::open(&settings.data_dir).context("cannot open the SQLite store")?;
        let models = Arc::new(ModelManager::new(
            settings.models.clone(),
            settings.models_dir.clone(),
            events.clone(),
            metrics.clone(),
        ));
        let load = LoadProbe::default();
        let Assembly { table: tasks, problems, undeclared } = agents::task_table(&catalog);
        for p in &problems {
            tracing::warn!(problem = %p, "task schema problem: the type takes any input (see `agentvisor check`)");
        }
        if !undeclared.is_empty() {
            tracing::warn!(types = ?undeclared, "task types without a schema take any input");
        }
        let tasks = Arc::new(tasks);
        let table = Arc::new(AgentTable::new(
            settings.clone(),
            Arc::new(catalog),
            Arc::new(plan),
            events.clone(),
            metrics.clone(),
        ));
        let router_name = table.actor_name(ROUTER_NAME);
        let services = Arc::new(Services {
            settings: settings.clone(),
            store: store.clone(),
            models: models.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            load: load.clone(),
            router: RouterHandle::new(router_name.clone()),
            tasks: tasks.clone(),
        });
        let bus = Arc::new(BusStatus::default());
        let mut spawner = Spawner::new(services.clone());
        let status = bus.clone();
        spawner.register(
            "RequestCoordinator",
            Arc::new(move |fleet: &Fleet| {
                Arc::new(Coordinator::new(fleet.clone(), status.clone(), tasks.clone())) as _
            }),
        );
        let fleet = Fleet::start(table, Arc::new(spawner)).await?;
        let args = RouterArgs {
            routing: settings.routing.clone(),
            backends: settings.backends.clone(),
            models_dir: settings.models_dir.clone(),
            models,
            load,
            store,
            events,
            metrics,
        };
        let (router, _) = Actor::spawn_linked(Some(router_name.clone()), HybridRouter, args, fleet.root_cell())
            .await
            .with_context(|| format!("cannot start {router_name}"))?;
        Ok(System { fleet, services, bus, router })
    }

    /// The HTTP routes over this system.
    pub fn http_app(&self) -> http::App {
        http::App { fleet: self.fleet.clone(), services: self.services.clone(), bus: self.bus.clone() }
    }

    /// The bound bus endpoints (ROUTER, PUB), while RequestCoordinator runs.
    pub fn bus_endpoints(&self) -> Option<(String, String)> {
        self.bus.endpoints()
    }

    /// Stops every agent in reverse dependency order within `deadline`,
    /// then HybridRouter.
    pub async fn shutdown(&self, deadline: Duration) {
        self.fleet.shutdown(deadline).await;
        let _ = self.router.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
    }
}

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
    let fleet = System::start(settings, catalog, plan).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, http::router(fleet.http_app()), async {
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
    if let Some((ingress, events)) = fleet.bus_endpoints() {
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
