//! The daemon and the composition root (DESIGN §15): [`System::start`]
//! builds every shared service (store and its receipt log, events, metrics,
//! model manager, load probe, the agent table), registers the behaviours that live above
//! the agent layer (RequestCoordinator), starts the supervision tree, binds
//! the task bus, and starts the infrastructure supervisor (HybridRouter,
//! ModelScheduler, BusDispatcher); [`run`] binds the HTTP server, boots,
//! waits for the stop signal (or a fatal infrastructure failure) and stops
//! in order: drain, agents, infrastructure, sockets, then the receipt log
//! (every queued receipt committed).
//!
//! `main` calls [`run`] with a future that resolves on SIGINT/SIGTERM; tests
//! pass their own, or start a [`System`] directly.

use std::future::Future;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::Actor;

use crate::agents::auth::Auth;
use crate::agents::tasks::Assembly;
use crate::agents::{self, Services, Spawner};
use crate::bus::coordinator::Coordinator;
use crate::bus::gate::{Admission, Gate};
use crate::bus::{Bus, BusStatus};
use crate::config::Settings;
use crate::config::catalog::{Catalog, Problems};
use crate::config::profile::{self, Plan};
use crate::core::Event;
use crate::events::EventBus;
use crate::http;
use crate::models::manager::ModelManager;
use crate::routing::cache::ResponseCache;
use crate::routing::router::{HybridRouter, LoadProbe, ROUTER_NAME, RouterArgs, RouterHandle, RouterMsg};
use crate::store::Store;
use crate::store::receipts::{self, ReceiptLog};
use crate::store::resources::{Capacity, Ledger};
use crate::supervisor::infra::{Component, Infra};
use crate::supervisor::{AgentTable, Fleet};
use crate::telemetry::metrics::Metrics;

/// One assembled daemon: the fleet, the services its agents share, the
/// task bus, the admission gate and the infrastructure supervisor. Derefs
/// to its [`Fleet`].
pub struct System {
    /// The supervision tree.
    pub fleet: Fleet,
    /// What the agents share.
    pub services: Arc<Services>,
    /// The task bus (bound when the profile includes RequestCoordinator).
    pub bus: Arc<BusStatus>,
    /// The admission gate (closed by [`System::shutdown`]).
    pub gate: Arc<Gate>,
    /// HybridRouter, ModelScheduler, BusDispatcher and their supervisor.
    pub infra: Infra,
    /// The receipts writer HybridRouter queues to (closed, and so flushed,
    /// by [`System::shutdown`]; `flush` it to read receipts of replies
    /// already sent).
    pub receipts: ReceiptLog,
}

impl Deref for System {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl System {
    /// Builds the services, starts the supervisors, binds the bus and
    /// starts the infrastructure. Agents stay `dormant` until [`Fleet::boot`].
    ///
    /// # Errors
    /// The store cannot be opened, a bus endpoint cannot be bound, an
    /// infrastructure component cannot start, or an actor name is taken
    /// (another daemon runs in this process with the same
    /// `testing.actor_name_prefix`).
    pub async fn start(settings: Settings, catalog: Catalog, plan: Plan) -> anyhow::Result<System> {
        let settings = Arc::new(settings);
        let metrics = Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        let store = Store::open(&settings.data_dir).context("cannot open the SQLite store")?;
        let auth = Arc::new(Auth::open(&settings, store.clone(), metrics.clone()).await.context("API tokens")?);
        if let Some(why) = auth.refusal(&settings) {
            anyhow::bail!("refusing to start: {why}");
        }
        auth.spawn_reloader();
        let receipts = receipts::start_log(
            &store,
            settings.store.receipts_batch.get(),
            settings.store.receipts_linger(),
            &metrics,
        );
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
        let resources = if plan.agents.contains("ResourceManager") {
            let wanted = settings.resources.clone();
            let capacity = tokio::task::spawn_blocking(move || Capacity::detect(&wanted))
                .await
                .context("capacity detection failed")?;
            tracing::info!(capacity = ?capacity.amounts, "resource ledger capacity");
            let ledger = Ledger::open(store.clone(), capacity, events.clone(), metrics.clone())
                .await
                .context("cannot open the resource ledger")?;
            let ledger = Arc::new(ledger);
            models.use_ledger(ledger.clone());
            Some(ledger)
        } else {
            None
        };
        let with_bus = plan.agents.contains("RequestCoordinator");
        let table = Arc::new(AgentTable::new(
            settings.clone(),
            Arc::new(catalog),
            Arc::new(plan),
            events.clone(),
            metrics.clone(),
        ));
        let router = RouterHandle::new(table.actor_name(ROUTER_NAME));
        let cache = ResponseCache::new(settings.cache.clone(), metrics.clone());
        let services = Arc::new(Services {
            settings: settings.clone(),
            store,
            models: models.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            load: load.clone(),
            router: router.clone(),
            tasks: tasks.clone(),
            resources,
            run_id: new_run_id(),
            cache: cache.clone(),
            auth,
            policy: Arc::new(agents::policy::Policy::new(&settings.policy).map_err(anyhow::Error::msg)?),
            receipts: receipts.clone(),
        });
        let bus = Arc::new(BusStatus::default());
        let mut spawner = Spawner::new(services.clone());
        let status = bus.clone();
        spawner
            .register("RequestCoordinator", Arc::new(move |_: &Fleet| Arc::new(Coordinator::new(status.clone())) as _));
        let fleet = Fleet::start(table.clone(), Arc::new(spawner)).await?;
        let gate = Arc::new(Gate::default());

        let args = RouterArgs {
            routing: settings.routing.clone(),
            backends: settings.backends.clone(),
            models_dir: settings.models_dir.clone(),
            models: models.clone(),
            load,
            receipts: receipts.clone(),
            events,
            metrics,
            cache,
        };
        let router_name = table.actor_name(ROUTER_NAME);
        let mut components = vec![
            Component::actor(
                ROUTER_NAME,
                Arc::new(move |supervisor| {
                    let (name, args) = (router_name.clone(), args.clone());
                    Box::pin(async move {
                        let (r, _) = Actor::spawn_linked(Some(name), HybridRouter, args, supervisor)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(r.get_cell())
                    })
                }),
                Arc::new(move |fault| router.actor().is_some_and(|r| r.cast(RouterMsg::Fault(fault)).is_ok())),
            ),
            Component::task_loop(
                "ModelScheduler",
                table.actor_name("ModelScheduler"),
                {
                    let models = models.clone();
                    Arc::new(move || models.start_scheduler())
                },
                Arc::new(move |fault| models.inject_fault(fault)),
            ),
        ];
        if with_bus {
            let b = Arc::new(Bus::bind(fleet.clone(), tasks, gate.clone(), services.auth.clone()).await?);
            let faults = b.clone();
            components.push(Component::task_loop(
                "BusDispatcher",
                table.actor_name("BusDispatcher"),
                b.dispatcher(),
                Arc::new(move |fault| faults.inject_fault(fault)),
            ));
            bus.set(b);
        }
        let infra = Infra::start(table, components).await?;
        Ok(System { fleet, services, bus, gate, infra, receipts })
    }

    /// The HTTP routes over this system.
    pub fn http_app(&self) -> http::App {
        http::App {
            fleet: self.fleet.clone(),
            services: self.services.clone(),
            bus: self.bus.clone(),
            gate: self.gate.clone(),
            infra: self.infra.clone(),
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The bound bus endpoints (ROUTER, PUB).
    pub fn bus_endpoints(&self) -> Option<(String, String)> {
        self.bus.endpoints()
    }

    /// Stops in order: closes the admission gate and drains the bus
    /// (accepted tasks get `supervisor.drain_timeout_secs` to finish, the
    /// rest are answered `shutting_down`), stops every agent in reverse
    /// dependency order within `deadline`, then the infrastructure and the
    /// bus sockets, and last closes the receipt log: every receipt queued
    /// is committed before this returns (a model call still finishing after
    /// that writes its receipt directly, before its reply).
    pub async fn shutdown(&self, deadline: Duration) {
        self.gate.close(Admission::Draining);
        let ctx = self.fleet.ctx();
        let drain = Duration::from_secs_f64(ctx.settings.supervisor.drain_timeout_secs.max(0.0));
        if let Some(bus) = self.bus.bus() {
            let t0 = std::time::Instant::now();
            let in_flight = bus.shared().ledger.len();
            ctx.events.emit(Event::FleetDraining { in_flight, deadline_secs: drain.as_secs_f64() });
            let d = bus.drain(drain).await;
            ctx.events.emit(Event::FleetDrained {
                finished: d.finished,
                abandoned: d.abandoned,
                drain_ms: t0.elapsed().as_secs_f64() * 1e3,
            });
        }
        self.fleet.shutdown(deadline).await;
        self.infra.stop().await;
        if let Some(bus) = self.bus.bus() {
            bus.stop().await;
        }
        self.receipts.close().await;
    }
}

/// A new run id: the start time (UTC, to the second) and 8 random hex
/// digits, e.g. `20261202T104000Z-1a2b3c4d`: sorts by time, safe in file names.
fn new_run_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), &uuid[..8])
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

/// Runs the fleet of `plan` until `shutdown` resolves, then drains and
/// stops every agent in reverse dependency order within
/// `supervisor.shutdown_deadline_secs` (see [`System::shutdown`]).
/// Prints `http: listening on ADDR` and a boot summary on stdout.
///
/// # Errors
/// The HTTP address cannot be bound, the data dir cannot be created, the
/// supervisors cannot start, or an infrastructure component exceeded its
/// restart intensity (after an orderly stop: the exit is non-zero).
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
    let app = fleet.http_app();
    let stop = app.stop.clone();
    let server = tokio::spawn(http::serve(listener, http::router(app), async move {
        let _ = http_stopped.await;
        stop.cancel();
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

    let fatal = tokio::select! {
        () = shutdown => None,
        why = fleet.infra.fatal() => Some(why),
    };
    tracing::info!("stopping: drain, then agents in reverse dependency order");
    fleet.shutdown(deadline).await;
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server error"),
        Err(_) => tracing::warn!("http server did not stop within 5 s"),
        _ => {}
    }
    println!("stopped");
    match fatal {
        Some(why) => Err(anyhow::anyhow!("infrastructure failed: {why}")),
        None => Ok(()),
    }
}
