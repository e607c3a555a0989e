//! Latency samples of a load run and their summary, for the load
//! generators (`agentvisor bench`): answered and failed counts, wall time,
//! and every answer's latency; [`Samples::summary`] gives the rate and the
//! nearest-rank percentiles (p50, p99) and the maximum, in milliseconds.
//! Runs merge ([`Samples::merge`]), so rounds of one target summarise as one.

use serde::Serialize;

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Answered successfully.
    pub ok: usize,
    /// Answered with an error (or failed in transport).
    pub errors: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One latency per answer (ok or error), milliseconds, in no particular order.
    pub latencies_ms: Vec<f64>,
}

/// The summary of [`Samples`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Answers (`ok + errors`).
    pub count: usize,
    /// Answered successfully.
    pub ok: usize,
    /// Answered with an error.
    pub errors: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Answers per second (`count / seconds`; 0 without time).
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest answer, milliseconds.
    pub max_ms: f64,
}

impl Samples {
    /// Adds another run of the same target: counts, wall time and latencies add up.
    pub fn merge(&mut self, other: Samples) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.latencies_ms.extend(other.latencies_ms);
    }

    /// Rate and percentiles (nearest rank); sorts the latencies in place.
    pub fn summary(&mut self) -> Summary {
        let lat = &mut self.latencies_ms;
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        let count = self.ok + self.errors;
        Summary {
            count,
            ok: self.ok,
            errors: self.errors,
            seconds: self.seconds,
            per_second: if self.seconds > 0.0 { count as f64 / self.seconds } else { 0.0 },
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_over_merged_runs() {
        let mut a = Samples { ok: 50, errors: 0, seconds: 1.0, latencies_ms: (1..=50).map(f64::from).collect() };
        a.merge(Samples { ok: 49, errors: 1, seconds: 1.0, latencies_ms: (51..=100).rev().map(f64::from).collect() });
        let s = a.summary();
        assert_eq!((s.count, s.ok, s.errors), (100, 99, 1));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(s.per_second, 50.0);
    }

    #[test]
    fn empty_samples_summarise_to_zeros() {
        assert_eq!(Samples::default().summary(), Summary::default());
    }
}
