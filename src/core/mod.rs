//! Shared types of every layer (DESIGN §15, the bottom layer): the task and
//! its reply, error codes, chat messages, the routing receipt, the typed
//! events, and the two small helpers everyone needs (Unix time, token
//! estimate). This module imports nothing else of the crate.

pub mod chat;
pub mod error;
pub mod event;
pub mod receipt;
pub mod task;

pub use chat::{ChatMessage, ChatRequest, ChatResponse, GenParams, Schedule};
pub use error::{ErrorCode, TaskError};
pub use event::{Event, JobChange};
pub use receipt::{Receipt, RouteEstimate, RouteStep};
pub use task::{Fault, Prefer, Task, TaskOutput, TaskReply};

/// Now as Unix time, seconds (0.0 if the clock is before 1970).
pub(crate) fn unix_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Token estimate for `chars` characters of text: 4 characters per token,
/// rounded up (OpenAI's rule of thumb for English). Used where no tokenizer
/// is at hand: routing inputs, session history budgets, backends that report
/// no `usage`.
pub(crate) fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}
