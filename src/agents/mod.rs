//! Agents: the actor every catalog agent runs as, and its runtimes
//! (DESIGN §7).
//!
//! - [`actor`]: `AgentActor`, one per running agent, under its group supervisor.
//! - [`services`]: what the composition root gives the agent layer, and the
//!   spawner the supervisors start agents through.
//! - [`process`]: `process` runtime — a supervised child program.
//! - [`builtin`]: Rust behaviours, one file per behaviour.
//! - [`llm`]: the `llm` runtime — role prompt → HybridRouter; the arbiter.

pub mod actor;
pub mod builtin;
pub mod llm;
pub mod process;
pub mod services;

pub use actor::AgentActor;
pub use services::{Services, Spawner};
