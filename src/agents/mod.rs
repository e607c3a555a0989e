//! Agents: the actor every catalog agent runs as, its messages, and its
//! runtimes (DESIGN §7).
//!
//! - [`actor`]: `AgentActor`, one per running agent, under its group supervisor.
//! - [`process`]: `process` runtime — a supervised child program.
//! - [`builtin`]: Rust behaviours, one file per behaviour.
//! - [`llm`]: the `llm` runtime — role prompt → HybridRouter; the arbiter.
//! - [`task`]: the task an agent receives and the error codes it answers with.

pub mod actor;
pub mod builtin;
pub mod llm;
pub mod process;
pub mod task;

pub use actor::{AgentActor, AgentMsg, Fault, StartError};
pub use task::{ErrorCode, Task, TaskError, TaskReply};
