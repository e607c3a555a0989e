//! The admission gate: the one place that decides whether the daemon takes
//! new work. The bus dispatcher and the `/v1` gateway ask it before
//! admitting anything; the daemon closes it when shutdown begins (the drain).
//! Reasons are stable codes: `draining` now (answered `shutting_down`); the
//! operator console's Pause all adds `paused` on the same gate.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::core::{ErrorCode, TaskError};

/// Whether new tasks are admitted, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Tasks are admitted.
    Open,
    /// Shutdown began: accepted tasks finish, new ones are refused with `shutting_down`.
    Draining,
}

impl Admission {
    /// `open`, `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Open => "open",
            Admission::Draining => "draining",
        }
    }
}

/// The admission gate; shared (`Arc`) by the bus, the gateway and the daemon.
#[derive(Debug, Default)]
pub struct Gate(AtomicU8);

impl Gate {
    /// The gate's state.
    pub fn admission(&self) -> Admission {
        match self.0.load(Ordering::Acquire) {
            0 => Admission::Open,
            _ => Admission::Draining,
        }
    }

    /// Refuses new tasks from now on (`draining`).
    pub fn close(&self, reason: Admission) {
        self.0.store(reason as u8, Ordering::Release);
    }

    /// `Ok` while open; otherwise the error a refused task is answered with
    /// (`shutting_down` while draining).
    ///
    /// # Errors
    /// The refusal.
    pub fn check(&self) -> Result<(), TaskError> {
        match self.admission() {
            Admission::Open => Ok(()),
            Admission::Draining => Err(TaskError::new(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down (draining): no new tasks are accepted",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_with_shutting_down() {
        let g = Gate::default();
        assert!(g.check().is_ok());
        assert_eq!(g.admission().as_str(), "open");
        g.close(Admission::Draining);
        assert_eq!(g.check().unwrap_err().code, ErrorCode::ShuttingDown);
        assert_eq!(g.admission().as_str(), "draining");
    }
}
