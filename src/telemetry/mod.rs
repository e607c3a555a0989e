//! Telemetry: metric names and registry, and tracing setup (DESIGN §9). A
//! low layer (DESIGN §15): everything above counts through [`metrics`]; the
//! HTTP endpoints that serve them live in `http`.

pub mod metrics;
pub mod tracing_setup;
