//! Restart policy arithmetic: restart intensity (OTP's MaxR in MaxT) and
//! capped exponential backoff with jitter, reset after a clean run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::SupervisorSettings;
use crate::config::spec::RestartSpec;

/// Per-agent restart bookkeeping, owned by its group supervisor.
#[derive(Debug, Default, Clone)]
pub struct RestartTracker {
    /// Times of restarts inside the intensity window.
    recent: VecDeque<Instant>,
    /// Consecutive failures since the last clean run (the backoff exponent).
    consecutive: u32,
    /// When the agent last became running.
    pub running_since: Option<Instant>,
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Restart after this delay.
    Restart(Duration),
    /// Too many restarts in the window: `fatal`.
    GiveUp {
        /// Restarts counted in the window.
        restarts: usize,
        /// The window, seconds.
        within_secs: f64,
    },
}

impl RestartTracker {
    /// Records a failure at `now` and decides (OTP: more than `max_restarts`
    /// restarts within `within_secs` → give up).
    pub(crate) fn on_failure(&mut self, now: Instant, spec: &RestartSpec, defaults: &SupervisorSettings) -> Decision {
        let max = spec.max_restarts.unwrap_or(defaults.max_restarts) as usize;
        let within = spec.within_secs.unwrap_or(defaults.within_secs).max(0.0);
        let window = Duration::from_secs_f64(within);
        if self
            .running_since
            .is_some_and(|t| now.saturating_duration_since(t).as_secs_f64() >= defaults.reset_after_secs)
        {
            self.consecutive = 0;
        }
        self.running_since = None;
        while self.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= max {
            return Decision::GiveUp { restarts: self.recent.len(), within_secs: within };
        }
        self.recent.push_back(now);
        let delay = backoff(self.consecutive, defaults);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::Restart(delay)
    }

    /// Forgets everything (operator restart of a fatal agent).
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }
}

/// Delay before restart number `attempt` (0-based): `initial * 2^attempt`,
/// capped at `backoff_max_secs`, then drawn uniformly from
/// `[d * (1 - jitter), d]`.
pub fn backoff(attempt: u32, s: &SupervisorSettings) -> Duration {
    let base = s.backoff_initial_secs.max(0.0) * 2f64.powi(attempt.min(62) as i32);
    let capped = base.min(s.backoff_max_secs.max(0.0));
    let jitter = s.backoff_jitter.clamp(0.0, 1.0);
    let secs =
        if jitter > 0.0 && capped > 0.0 { rand::rng().random_range(capped * (1.0 - jitter)..=capped) } else { capped };
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SupervisorSettings {
        SupervisorSettings { backoff_jitter: 0.0, ..Default::default() }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = settings();
        assert_eq!(backoff(0, &s), Duration::from_millis(10));
        assert_eq!(backoff(1, &s), Duration::from_millis(20));
        assert_eq!(backoff(3, &s), Duration::from_millis(80));
        assert_eq!(backoff(30, &s), Duration::from_secs(5));
        let j = SupervisorSettings { backoff_jitter: 0.5, ..Default::default() };
        for _ in 0..100 {
            let d = backoff(2, &j);
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(40), "{d:?}");
        }
    }

    #[test]
    fn intensity_gives_up_after_max_restarts_in_window() {
        let s = settings();
        let spec = RestartSpec::default();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(t.on_failure(t0 + Duration::from_millis(i), &spec, &s), Decision::Restart(_)));
        }
        assert!(matches!(t.on_failure(t0 + Duration::from_millis(4), &spec, &s), Decision::GiveUp { restarts: 3, .. }));
        // Outside the window the count starts over.
        let mut t = RestartTracker::default();
        for i in 0..10 {
            assert!(matches!(t.on_failure(t0 + Duration::from_secs(6 * i), &spec, &s), Decision::Restart(_)));
        }
    }

    #[test]
    fn clean_run_resets_backoff() {
        let s = settings();
        let spec = RestartSpec { max_restarts: Some(100), ..Default::default() };
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.on_failure(t0, &spec, &s), Decision::Restart(Duration::from_millis(10)));
        assert_eq!(t.on_failure(t0, &spec, &s), Decision::Restart(Duration::from_millis(20)));
        t.running_since = Some(t0);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(t.on_failure(later, &spec, &s), Decision::Restart(Duration::from_millis(10)));
    }
}
