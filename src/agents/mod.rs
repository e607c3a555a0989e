//! Agents: the actor every catalog agent runs as, and its runtimes
//! (DESIGN §7).
//!
//! - [`auth`]: API tokens and the check every door runs (AuthenticationAgent's state).
//! - [`actor`]: `AgentActor`, one per running agent, under its group
//!   supervisor, and the [`Spawner`] the supervisors start agents through.
//! - [`behaviour`]: the `Behaviour` trait builtin and llm agents implement.
//! - [`services`]: what the composition root gives the agent layer.
//! - [`policy`]: the policy gate in front of risky tasks (`code.execute`, ...).
//! - [`process`]: `process` runtime — a supervised child program.
//! - [`resources`]: a process agent's spec `resources:`, reserved before its child starts.
//! - [`builtin`]: Rust behaviours, one file per behaviour.
//! - [`llm`]: the `llm` runtime — role prompt → HybridRouter; the arbiter.
//! - [`tasks`]: the task-type table — input and output JSON Schemas and
//!   examples of every task type, and the decoding layer.

pub mod actor;
pub mod auth;
pub mod behaviour;
pub mod builtin;
pub(crate) mod governor;
pub mod llm;
pub mod policy;
pub mod process;
pub mod resources;
pub mod services;
pub mod tasks;

pub use actor::{AgentActor, Spawner};
pub use behaviour::Behaviour;
pub use services::Services;

/// The task-type table of `catalog`: the Rust declarations of the builtin
/// behaviours, then the specs' `tasks` for everything else (llm, process,
/// builtin behaviours not written yet). The problems and the types without a
/// schema are listed apart, so a catalog being completed still runs.
pub(crate) fn task_table(catalog: &crate::config::catalog::Catalog) -> tasks::Assembly {
    tasks::TaskTable::assemble(catalog.agents.values().map(|spec| spec.as_ref()), &builtin::rust_tasks())
}
