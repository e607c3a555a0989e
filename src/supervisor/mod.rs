//! The supervision tree (DESIGN §2): root supervisor → one supervisor per
//! group → agent actors, with OTP restart semantics, start waves, on-demand
//! starts and ordered shutdown.
//!
//! - [`fleet`]: the handle the daemon and tests hold.
//! - [`root`], [`group`]: the supervisor actors.
//! - [`infra`]: the supervisor of HybridRouter, the model scheduler and the bus dispatcher.
//! - [`policy`]: restart intensity and backoff arithmetic.
//! - [`lazy`]: on-demand starts with single flight and the start SLA.
//! - [`state`], [`table`]: lifecycle states and the live agent table.
//! - [`agent`]: the contract with agent actors (messages, start errors, faults).

pub mod agent;
pub mod fleet;
pub mod group;
pub mod infra;
pub mod lazy;
pub mod policy;
pub mod root;
pub mod state;
pub mod table;

pub use agent::{AgentMsg, Fault, StartError};
pub use fleet::{AgentFactory, BootReport, Fleet, Peers};
pub use infra::{Component, Infra};
pub use state::AgentState;
pub use table::AgentTable;
