//! agentvisor: a supervisor for fleets of AI agents.
//!
//! One binary starts a YAML profile of agents, keeps each one alive as a
//! ractor actor under a supervision tree (OTP restart semantics), starts
//! on-demand agents with their dependencies within a start SLA, and exports
//! everything as Prometheus metrics and events.
//!
//! The layout follows the data (DESIGN §11):
//!
//! - [`config`]: settings, the agent catalog and its validation, profiles.
//! - [`supervisor`]: root and group supervisors, restart policy, on-demand starts.
//! - [`bus`]: the ZeroMQ task bus: envelope, admission queue, replies, events.
//! - [`routing`]: hybrid routing: the policy (tier, backend chain) and circuit breakers.
//! - [`backends`]: model backends (OpenAI-compatible HTTP; embedded llama.cpp).
//! - [`agents`]: the agent actor and its runtimes (builtin, llm, process).
//! - [`events`]: the ordered event stream (`seq`, `ts`).
//! - [`models`]: local GGUF models: files, the default model, the llama.cpp
//!   engine, ModelManager (queue, budget, eviction), memory probes.
//! - [`store`]: SQLite on its own thread: migrations, receipts.
//! - [`telemetry`]: metric names, the HTTP endpoints, tracing.
//! - [`daemon`]: the `run` command's life cycle; [`cli`]: the commands.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use agentvisor::{config::Settings, daemon, supervisor::Fleet};
//! let settings = Settings::default();
//! let (catalog, plan) = daemon::load_plan(&settings, None, "core")?;
//! let fleet = Fleet::start(settings, catalog, plan).await?;
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
pub mod daemon;
pub mod events;
pub mod models;
pub mod routing;
pub mod store;
pub mod supervisor;
pub mod telemetry;
