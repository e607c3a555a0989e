//! Telemetry: metric names and registry, the HTTP endpoints of
//! ObservabilityHub, and tracing setup (DESIGN §9).

pub mod gateway;
pub mod http;
pub mod metrics;
pub mod tracing_setup;
