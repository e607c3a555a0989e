//! A circuit breaker per backend (DESIGN §5: "opens after repeated failures,
//! half-open single probe, never probes a local model by loading it").
//!
//! Where it sits: HybridRouter owns one [`CircuitBreaker`] per backend. It
//! passes [`CircuitBreaker::would_allow`] to the routing policy as the
//! `available` check, calls [`CircuitBreaker::allow`] right before it calls a
//! backend of the chain, and reports the outcome with
//! [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or, when the
//! call was cancelled and says nothing about the backend,
//! [`CircuitBreaker::on_abandoned`]. Every call `allow` let through must be
//! reported, else a half-open breaker keeps its probe in flight for ever.
//!
//! The breaker has no clock: every method that depends on time takes `now`,
//! so tests drive it with explicit instants.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use agentvisor::config::BreakerSettings;
//! use agentvisor::routing::breaker::{BreakerState, CircuitBreaker};
//!
//! let mut b = CircuitBreaker::new(&BreakerSettings { failure_threshold: 2, cooldown_secs: 10.0 });
//! let t0 = Instant::now();
//! b.on_failure(t0);
//! b.on_failure(t0);
//! assert_eq!(b.state(t0), BreakerState::Open);
//! assert!(!b.allow(t0 + Duration::from_secs(5)));
//! assert!(b.allow(t0 + Duration::from_secs(10))); // the half-open probe
//! b.on_success();
//! assert_eq!(b.state(t0), BreakerState::Closed);
//! ```

use std::time::{Duration, Instant};

use crate::config::BreakerSettings;

/// A breaker's state, for metrics and receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are being counted.
    Closed,
    /// Calls are refused until the cooldown ends (or, without probes, until
    /// [`CircuitBreaker::reset`]).
    Open,
    /// The cooldown has ended: one probe may go, or is in flight.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open` (a closed label set for metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What the breaker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    /// Calls go through.
    Closed { consecutive_failures: u32 },
    /// Calls are refused until `until` (`None`: until [`CircuitBreaker::reset`]).
    Open { until: Option<Instant> },
    /// One probe, let through at `probe_started`, has not reported yet.
    HalfOpen { probe_started: Instant },
}

/// The circuit breaker of one backend: closed → open after
/// `failure_threshold` consecutive failures → after `cooldown_secs`, one
/// half-open probe → closed on its success, open again (fresh cooldown) on
/// its failure.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    /// Consecutive failures that open the breaker (at least 1).
    failure_threshold: u32,
    /// How long the breaker stays open before a probe.
    cooldown: Duration,
    /// `false`: no probe ever; an open breaker closes only by `reset`.
    probe_allowed: bool,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed breaker that probes after the cooldown. A threshold of 0
    /// counts as 1; a negative or NaN cooldown as 0 s, a cooldown too long
    /// for the clock as "until reset".
    pub fn new(settings: &BreakerSettings) -> CircuitBreaker {
        CircuitBreaker::with_probe(settings, true)
    }

    /// A closed breaker; `probe_allowed: false` never lets a half-open probe
    /// through: once open, it stays open until [`CircuitBreaker::reset`].
    /// For embedded local backends, where a probe would mean loading a model
    /// (DESIGN §5): the model manager calls `reset` when the model is loaded.
    pub(crate) fn with_probe(settings: &BreakerSettings, probe_allowed: bool) -> CircuitBreaker {
        let cooldown = if settings.cooldown_secs > 0.0 {
            Duration::try_from_secs_f64(settings.cooldown_secs).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        };
        CircuitBreaker {
            failure_threshold: settings.failure_threshold.max(1),
            cooldown,
            probe_allowed,
            inner: Inner::Closed { consecutive_failures: 0 },
        }
    }

    /// Whether a call may go to the backend now. In half-open this lets
    /// exactly one probe through and marks it in flight: later callers are
    /// refused until the probe reports.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed { .. } => true,
            Inner::Open { .. } if self.probe_ready(now) => {
                self.inner = Inner::HalfOpen { probe_started: now };
                true
            }
            Inner::Open { .. } | Inner::HalfOpen { .. } => false,
        }
    }

    /// What [`CircuitBreaker::allow`] would answer now, without marking a
    /// probe in flight: the routing policy's `available` check.
    pub fn would_allow(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed { .. } => true,
            Inner::Open { .. } => self.probe_ready(now),
            Inner::HalfOpen { .. } => false,
        }
    }

    /// The call succeeded: the breaker closes and the failure count restarts.
    pub fn on_success(&mut self) {
        self.inner = Inner::Closed { consecutive_failures: 0 };
    }

    /// The call failed at `now`. Closed: counts, and opens at the threshold.
    /// Half-open (the probe failed): opens again with a fresh cooldown. Open
    /// (a call let through before it opened): no change.
    pub fn on_failure(&mut self, now: Instant) {
        match self.inner {
            Inner::Closed { consecutive_failures } => {
                let failures = consecutive_failures.saturating_add(1);
                self.inner = if failures >= self.failure_threshold {
                    self.open(now)
                } else {
                    Inner::Closed { consecutive_failures: failures }
                };
            }
            Inner::HalfOpen { .. } => self.inner = self.open(now),
            Inner::Open { .. } => {}
        }
    }

    /// The call ended without an outcome (cancelled: client gone, deadline).
    /// A half-open probe is given back, so the next `allow` may probe again;
    /// otherwise nothing changes (a cancellation is not a failure).
    pub fn on_abandoned(&mut self) {
        if let Inner::HalfOpen { probe_started } = self.inner {
            self.inner = Inner::Open { until: Some(probe_started) };
        }
    }

    /// Closes the breaker whatever its state. The model manager calls this
    /// when it has loaded the model of a breaker built with
    /// `probe_allowed: false`.
    pub fn reset(&mut self) {
        self.inner = Inner::Closed { consecutive_failures: 0 };
    }

    /// The state at `now`: an open breaker whose cooldown has ended reads
    /// half-open (when it may probe).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } if self.probe_ready(now) => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Consecutive failures counted while closed (0 when open or half-open).
    #[cfg(test)]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        match self.inner {
            Inner::Closed { consecutive_failures } => consecutive_failures,
            _ => 0,
        }
    }

    /// Whether an open breaker may let a probe through at `now`.
    fn probe_ready(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Open { until: Some(until) } => self.probe_allowed && now >= until,
            _ => false,
        }
    }

    /// The open state entered at `now`.
    fn open(&self, now: Instant) -> Inner {
        Inner::Open { until: now.checked_add(self.cooldown) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(&BreakerSettings { failure_threshold: 3, cooldown_secs: 30.0 })
    }

    /// A breaker opened at `t0` by three failures.
    fn opened(t0: Instant) -> CircuitBreaker {
        let mut b = breaker();
        for _ in 0..3 {
            assert!(b.allow(t0));
            b.on_failure(t0);
        }
        b
    }

    #[test]
    fn opens_after_threshold_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!((b.state(t0), b.consecutive_failures()), (BreakerState::Closed, 2));
        assert!(b.allow(t0));
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.state(t0).as_str(), "open");
    }

    #[test]
    fn refuses_while_open() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let almost = t0 + COOLDOWN - Duration::from_millis(1);
        assert!(!b.would_allow(almost));
        assert!(!b.allow(almost));
        assert_eq!(b.state(almost), BreakerState::Open);
    }

    #[test]
    fn one_probe_in_half_open() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let later = t0 + COOLDOWN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.would_allow(later));
        // would_allow marks nothing: the probe is still there.
        assert!(b.allow(later));
        // The probe is in flight: concurrent callers are refused.
        assert!(!b.would_allow(later));
        assert!(!b.allow(later));
        assert!(!b.allow(later + COOLDOWN * 10));
        assert_eq!(b.state(later).as_str(), "half_open");
    }

    #[test]
    fn probe_success_closes() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.allow(t0 + COOLDOWN));
        b.on_success();
        assert_eq!(b.state(t0 + COOLDOWN), BreakerState::Closed);
        assert!(b.allow(t0 + COOLDOWN));
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn probe_failure_reopens_with_a_fresh_cooldown() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let probe = t0 + COOLDOWN + Duration::from_secs(5);
        assert!(b.allow(probe));
        b.on_failure(probe);
        assert_eq!(b.state(probe), BreakerState::Open);
        // The first cooldown's end is long past, but the fresh one counts.
        assert!(!b.allow(probe + COOLDOWN - Duration::from_millis(1)));
        assert!(b.allow(probe + COOLDOWN));
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success();
        assert_eq!(b.consecutive_failures(), 0);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[test]
    fn late_failure_while_open_changes_nothing() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        b.on_failure(t0 + COOLDOWN - Duration::from_secs(1));
        assert!(b.allow(t0 + COOLDOWN));
    }

    #[test]
    fn abandoned_probe_is_given_back() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.allow(t0 + COOLDOWN));
        b.on_abandoned();
        assert!(b.allow(t0 + COOLDOWN));
        // A cancelled call while closed is not a failure.
        let mut b = breaker();
        b.on_failure(t0);
        b.on_abandoned();
        assert_eq!(b.consecutive_failures(), 1);
    }

    #[test]
    fn without_probes_only_reset_closes() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::with_probe(&BreakerSettings { failure_threshold: 1, cooldown_secs: 30.0 }, false);
        b.on_failure(t0);
        let much_later = t0 + COOLDOWN * 100;
        assert_eq!(b.state(much_later), BreakerState::Open);
        assert!(!b.would_allow(much_later));
        assert!(!b.allow(much_later));
        b.reset();
        assert_eq!(b.state(much_later), BreakerState::Closed);
        assert!(b.allow(much_later));
    }

    #[test]
    fn odd_settings_are_tamed() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(&BreakerSettings { failure_threshold: 0, cooldown_secs: f64::NAN });
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::HalfOpen);
        let mut b = CircuitBreaker::new(&BreakerSettings { failure_threshold: 1, cooldown_secs: f64::INFINITY });
        b.on_failure(t0);
        assert!(!b.allow(t0 + COOLDOWN * 1000));
    }
}
