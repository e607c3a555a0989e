//! agentvisor: a supervisor for fleets of AI agents.
//!
//! One binary starts a YAML profile of agents, keeps each one alive as a
//! ractor actor under a supervision tree (OTP restart semantics), starts
//! on-demand agents with their dependencies within a start SLA, and exports
//! everything as Prometheus metrics and events.
//!
//! The layers, top to bottom (DESIGN §15; a module uses only modules below
//! it, checked by `tests/integration/layers.rs`):
//!
//! - [`cli`], [`daemon`]: the commands; the composition root that builds
//!   [`agents::services::Services`], registers behaviours and routes, and
//!   runs the daemon.
//! - [`http`]: axum: metrics, health, admin, `/tasks`, the `/v1` gateway, registry routes.
//! - [`bus`]: the ZeroMQ task bus: envelope, ingress, admission queue, replies, events.
//! - [`agents`]: the agent actor, its runtimes (builtin, llm, process), task schemas.
//! - [`supervisor`]: root and group supervisors, restart policy, on-demand starts, the agent table.
//! - [`routing`]: HybridRouter: decision, chain run, circuit breakers, receipts.
//! - [`backends`]: model backends (OpenAI-compatible HTTP; embedded llama.cpp).
//! - [`models`]: local GGUF models: files, the llama.cpp engine, ModelManager.
//! - [`store`]: SQLite on its own thread: migrations and tables.
//! - [`events`]: the ordered event stream (`seq`, `ts`); one place logs, counts, publishes.
//! - [`telemetry`]: metric names and registry, tracing setup.
//! - [`config`]: settings, the agent catalog and its validation, profiles.
//! - [`core`]: shared types only: task, reply, error codes, chat types, receipt, events.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use agentvisor::{config::Settings, daemon};
//! let settings = Settings::default();
//! let (catalog, plan) = daemon::load_plan(&settings, None, "core")?;
//! let fleet = daemon::System::start(settings, catalog, plan).await?;
//! let report = fleet.boot().await;
//! println!("{} agents running", report.running.len());
//! fleet.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod agents;
pub mod backends;
pub mod bus;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod events;
pub mod http;
pub mod models;
pub mod routing;
pub mod store;
pub mod supervisor;
pub mod telemetry;
