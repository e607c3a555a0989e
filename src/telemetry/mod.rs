//! Telemetry: metric names and registry, and tracing setup (DESIGN §9). A
//! low layer (DESIGN §15): everything above counts through [`metrics`]; the
//! HTTP endpoints that serve them live in `http`. [`latency`] summarises the
//! load generators' samples.

pub mod latency;
pub mod metrics;
pub mod tracing_setup;
