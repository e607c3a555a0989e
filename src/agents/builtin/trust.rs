//! AgentTrustScorer: a trust score per agent, 0..=1, from its successes,
//! failures, timeouts and users' ratings — the mean of a Beta posterior
//! with exponential forgetting (the beta reputation system of Jøsang and
//! Ismail, 2002; docs/learning.md gives the formula):
//!
//! ```text
//! w(age)  = 2^(−age / trust.half_life_secs)
//! α = trust.prior_successes + Σ w·success + Σ w·weight·(r − 1)/4
//! β = trust.prior_failures  + Σ w·(failure + timeout) + Σ w·weight·(5 − r)/4
//! score = α / (α + β)
//! ```
//!
//! With the default uniform prior an agent without a history scores 0.5.
//! `interval` is a 95 % interval of the posterior (normal approximation,
//! mean ± 1.96 standard deviations, clipped to 0..=1). An agent whose score
//! is under `trust.floor` is `below_floor`, and crossing the floor either
//! way is a `trust.floor_crossed` event.
//!
//! It feeds itself from the event stream while it runs (the `full`
//! profile starts it at boot; elsewhere list it in `autoload_on_startup` to
//! count from the start):
//! `task.completed` is a success of the agent; `task.failed` a timeout
//! (`deadline_exceeded`, `start_timeout`) or a failure (the agent's or its
//! backend's: `agent_failed`, `agent_error`, `agent_fatal`, `start_failed`,
//! `backend_error`, `no_backend`, `invalid_output`, `context_exhausted`,
//! `internal`); other codes are the asker's or the fleet's doing and not
//! counted; `task.cancelled` is not counted. FeedbackHandler's
//! `feedback.recorded` is a rating of the answering agent. `trust.record`
//! adds an outcome the daemon does not see (an outside judge).
//!
//! State: one row per agent in `agent_trust` ([`crate::store::learning`]),
//! the decayed sums at the time of the last outcome; kept in memory and
//! written at most every [`FLUSH_INTERVAL`] (and at stop, and by every
//! `trust.record`): a crash loses at most that much of the event-fed history.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `trust.score` | nothing, or `{"agent"}` | `{"scores": [{"agent", "score", "successes", "failures", "timeouts", "ratings", "mean_rating", "alpha", "beta", "interval", "below_floor", "updated_at"}], "floor", "half_life_seconds"}`, by agent name |
//! | `trust.record` | `{"agent", "outcome": "success"/"failure"/"timeout", "rating"?: 1–5, "task_id"?}` | `{"agent", "score", "below_floor"}` |
//!
//! Counts are decayed to now (fractions). Errors: an agent not in the run
//! is `unknown_agent`; a rating outside 1–5 is `invalid_field`. Metric
//! `agentvisor_trust_outcomes_total{outcome}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::feedback::{bad, store_error};
use super::{Answer, Background, Behaviour, Name, unknown_type};
use crate::agents::tasks::decode;
use crate::config::TrustSettings;
use crate::core::{Event, Task, unix_time};
use crate::events::{EventBus, Published};
use crate::store::Store;
use crate::store::learning::{self, TrustRow};
use crate::supervisor::{Fleet, StartError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "AgentTrustScorer";

/// Most time event-fed outcomes wait in memory before they are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// z of a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One outcome of an agent's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It answered.
    Success,
    /// It (or its backend) failed.
    Failure,
    /// It did not answer in time.
    Timeout,
}

impl Outcome {
    /// The outcome a `task.failed` code says about the agent; `None`: the
    /// asker's or the fleet's doing (bad input, policy, busy, shutdown).
    pub fn of_error_code(code: &str) -> Option<Outcome> {
        match code {
            "deadline_exceeded" | "start_timeout" => Some(Outcome::Timeout),
            "agent_failed" | "agent_error" | "agent_fatal" | "start_failed" | "backend_error" | "no_backend"
            | "invalid_output" | "context_exhausted" | "internal" => Some(Outcome::Failure),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
        }
    }
}

/// The posterior's arithmetic: decay, outcomes, ratings, score.
#[derive(Debug, Clone, Copy)]
pub struct TrustModel {
    half_life: f64,
    prior_successes: f64,
    prior_failures: f64,
    rating_weight: f64,
    floor: f64,
}

/// An agent's trust at some time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Posterior mean, 0..=1.
    pub score: f64,
    /// α of the posterior.
    pub alpha: f64,
    /// β of the posterior.
    pub beta: f64,
    /// 95 % interval, normal approximation, within 0..=1.
    pub interval: [f64; 2],
    /// The decayed sums behind it, at that time.
    pub row: TrustRow,
}

impl TrustModel {
    /// The model of `settings` (bad values, refused when settings load,
    /// are read as the defaults' neighbours: half-life ≥ 1 ms, priors ≥ 1e-9).
    pub fn new(settings: &TrustSettings) -> TrustModel {
        let positive = |v: f64| if v.is_finite() { v.max(1e-9) } else { 1.0 };
        TrustModel {
            half_life: if settings.half_life_secs.is_finite() { settings.half_life_secs.max(0.001) } else { 604_800.0 },
            prior_successes: positive(settings.prior_successes),
            prior_failures: positive(settings.prior_failures),
            rating_weight: if settings.rating_weight.is_finite() { settings.rating_weight.max(0.0) } else { 1.0 },
            floor: settings.floor.clamp(0.0, 1.0),
        }
    }

    /// The floor, 0..=1.
    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// `row` decayed to `now` (no change for a `now` before its time).
    pub fn decayed(&self, row: &TrustRow, now: f64) -> TrustRow {
        let age = now - row.updated_at;
        if age.is_nan() || age <= 0.0 {
            return *row;
        }
        let w = (-age / self.half_life).exp2();
        TrustRow {
            successes: row.successes * w,
            failures: row.failures * w,
            timeouts: row.timeouts * w,
            rated_good: row.rated_good * w,
            rated_poor: row.rated_poor * w,
            rating_sum: row.rating_sum * w,
            ratings: row.ratings * w,
            updated_at: now,
        }
    }

    /// `row` after `outcome` at `now`.
    pub fn record(&self, row: &TrustRow, outcome: Outcome, now: f64) -> TrustRow {
        let mut r = self.decayed(row, now);
        match outcome {
            Outcome::Success => r.successes += 1.0,
            Outcome::Failure => r.failures += 1.0,
            Outcome::Timeout => r.timeouts += 1.0,
        }
        r
    }

    /// `row` after a rating of 1–5 (clamped) at `now`.
    pub fn rate(&self, row: &TrustRow, rating: u8, now: f64) -> TrustRow {
        let rating = f64::from(rating.clamp(1, 5));
        let mut r = self.decayed(row, now);
        r.rated_good += self.rating_weight * (rating - 1.0) / 4.0;
        r.rated_poor += self.rating_weight * (5.0 - rating) / 4.0;
        r.rating_sum += rating;
        r.ratings += 1.0;
        r
    }

    /// The trust of `row` at `now`.
    pub fn score(&self, row: &TrustRow, now: f64) -> Score {
        let row = self.decayed(row, now);
        let alpha = self.prior_successes + row.successes + row.rated_good;
        let beta = self.prior_failures + row.failures + row.timeouts + row.rated_poor;
        let n = alpha + beta;
        let score = (alpha / n).clamp(0.0, 1.0);
        let sd = (alpha * beta / (n * n * (n + 1.0))).sqrt();
        let interval = [(score - Z95 * sd).clamp(0.0, 1.0), (score + Z95 * sd).clamp(0.0, 1.0)];
        Score { score, alpha, beta, interval, row }
    }
}

/// One entry of `trust.score`.
#[derive(Serialize)]
struct Entry {
    agent: String,
    score: f64,
    successes: f64,
    failures: f64,
    timeouts: f64,
    ratings: f64,
    mean_rating: Option<f64>,
    alpha: f64,
    beta: f64,
    interval: [f64; 2],
    below_floor: bool,
    updated_at: Option<f64>,
}

struct State {
    rows: BTreeMap<String, TrustRow>,
    /// Agents changed since the last write.
    dirty: BTreeSet<String>,
}

struct Inner {
    store: Store,
    model: TrustModel,
    events: EventBus,
    metrics: Metrics,
    state: Mutex<State>,
}

impl Inner {
    /// Applies a change to `agent`'s row; counts it, and publishes a floor crossing.
    fn apply(&self, agent: &str, counted: &str, change: impl FnOnce(&TrustModel, &TrustRow, f64) -> TrustRow) -> Score {
        let now = unix_time();
        let (before, after) = {
            let mut s = self.state.lock();
            let old = s.rows.get(agent).copied();
            let new = change(&self.model, &old.unwrap_or(TrustRow { updated_at: now, ..Default::default() }), now);
            s.rows.insert(agent.to_string(), new);
            s.dirty.insert(agent.to_string());
            let prior = TrustRow { updated_at: now, ..Default::default() };
            (self.model.score(&old.unwrap_or(prior), now), self.model.score(&new, now))
        };
        self.metrics.trust_outcomes.with_label_values(&[counted]).inc();
        let floor = self.model.floor();
        let (was_below, is_below) = (before.score < floor, after.score < floor);
        if was_below != is_below {
            self.events.emit(Event::TrustFloorCrossed {
                agent: agent.to_string(),
                score: after.score,
                floor,
                below: is_below,
            });
        }
        after
    }

    fn observe(&self, p: &Published) {
        match &p.event {
            Event::TaskCompleted { agent, .. } => {
                self.apply(agent, "success", |m, r, now| m.record(r, Outcome::Success, now));
            }
            Event::TaskFailed { agent: Some(agent), code, cancelled: false, .. } => {
                if let Some(o) = Outcome::of_error_code(code) {
                    self.apply(agent, o.as_str(), |m, r, now| m.record(r, o, now));
                }
            }
            Event::FeedbackRecorded { agent: Some(agent), rating, .. } => {
                let rating = *rating;
                self.apply(agent, "rating", |m, r, now| m.rate(r, rating, now));
            }
            _ => {}
        }
    }

    /// Writes the rows changed since the last write.
    async fn flush(&self) {
        let rows: Vec<(String, TrustRow)> = {
            let mut s = self.state.lock();
            let dirty = std::mem::take(&mut s.dirty);
            dirty.into_iter().filter_map(|a| s.rows.get(&a).map(|r| (a, *r))).collect()
        };
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        let back = rows.clone();
        if let Err(e) = self.store.call(move |conn| learning::put_trust(conn, &rows)).await {
            tracing::warn!(agent = AGENT, code = e.code(), rows = n, error = %e, "trust rows not written; retrying");
            self.state.lock().dirty.extend(back.into_iter().map(|(a, _)| a));
        }
    }

    async fn run(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<Arc<Published>>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(p) => self.observe(&p),
                    Err(RecvError::Lagged(n)) => tracing::warn!(agent = AGENT, missed = n, "trust missed task outcomes"),
                    Err(RecvError::Closed) => {
                        self.flush().await;
                        return;
                    }
                },
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    fn entry(&self, agent: &str, row: Option<&TrustRow>, now: f64) -> Entry {
        let prior = TrustRow { updated_at: now, ..Default::default() };
        let s = self.model.score(row.unwrap_or(&prior), now);
        Entry {
            agent: agent.to_string(),
            score: s.score,
            successes: s.row.successes,
            failures: s.row.failures,
            timeouts: s.row.timeouts,
            ratings: s.row.ratings,
            mean_rating: (s.row.ratings > 1e-9).then(|| (s.row.rating_sum / s.row.ratings).clamp(1.0, 5.0)),
            alpha: s.alpha,
            beta: s.beta,
            interval: s.interval,
            below_floor: s.score < self.model.floor(),
            updated_at: row.map(|r| r.updated_at),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    #[serde(default)]
    agent: Option<Name>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    agent: Name,
    outcome: Outcome,
    #[serde(default)]
    rating: Option<i64>,
    #[serde(default)]
    task_id: Option<Name>,
}

/// The AgentTrustScorer behaviour.
pub struct AgentTrustScorer {
    inner: Arc<Inner>,
    fleet: Fleet,
    runner: Background,
}

impl AgentTrustScorer {
    /// The behaviour: rows in `store`, the model of `settings`; agents
    /// checked against `fleet`'s run.
    pub fn new(store: Store, settings: &TrustSettings, fleet: Fleet, events: EventBus, metrics: Metrics) -> Self {
        let state = Mutex::new(State { rows: BTreeMap::new(), dirty: BTreeSet::new() });
        let inner = Arc::new(Inner { store, model: TrustModel::new(settings), events, metrics, state });
        AgentTrustScorer { inner, fleet, runner: Background::default() }
    }
}

#[async_trait]
impl Behaviour for AgentTrustScorer {
    async fn start(&self) -> Result<(), StartError> {
        let rows = self
            .inner
            .store
            .call(|conn| learning::trust_rows(conn))
            .await
            .map_err(|e| StartError::Failed { agent: AGENT.into(), reason: format!("trust rows: {e}") })?;
        {
            let mut s = self.inner.state.lock();
            s.rows = rows.into_iter().collect();
            s.dirty.clear();
        }
        self.runner.start(self.inner.clone().run(self.inner.events.subscribe()));
        Ok(())
    }

    async fn stop(&self) {
        self.runner.stop();
        self.inner.flush().await;
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "trust.score" => {
                let ScoreInput { agent } = decode::<Option<ScoreInput>>(t, &task.input)?.unwrap_or_default();
                let now = unix_time();
                let scores: Vec<Entry> = match agent {
                    Some(Name(a)) => {
                        self.fleet.resolve(Some(&a), None)?;
                        let row = self.inner.state.lock().rows.get(&a).copied();
                        vec![self.inner.entry(&a, row.as_ref(), now)]
                    }
                    None => {
                        let rows = self.inner.state.lock().rows.clone();
                        rows.iter().map(|(a, r)| self.inner.entry(a, Some(r), now)).collect()
                    }
                };
                Ok(json!({
                    "scores": scores,
                    "floor": self.inner.model.floor(),
                    "half_life_seconds": self.inner.model.half_life,
                }))
            }
            "trust.record" => {
                let RecordInput { agent: Name(agent), outcome, rating, task_id } = decode(t, &task.input)?;
                let rating = match rating {
                    None => None,
                    Some(r) if (1..=5).contains(&r) => Some(r as u8),
                    Some(r) => return Err(bad(t, "/rating", format!("{r} is not within 1..=5"))),
                };
                self.fleet.resolve(Some(&agent), None)?;
                let task_id = task_id.map(|Name(id)| id);
                tracing::debug!(agent, task_id, outcome = outcome.as_str(), rating, "trust outcome recorded by task");
                let mut s = self.inner.apply(&agent, outcome.as_str(), |m, r, now| m.record(r, outcome, now));
                if let Some(r) = rating {
                    s = self.inner.apply(&agent, "rating", |m, row, now| m.rate(row, r, now));
                }
                let rows: Vec<(String, TrustRow)> = {
                    let mut st = self.inner.state.lock();
                    st.dirty.remove(&agent);
                    st.rows.get(&agent).map(|r| (agent.clone(), *r)).into_iter().collect()
                };
                self.inner.store.call(move |conn| learning::put_trust(conn, &rows)).await.map_err(store_error)?;
                Ok(json!({"agent": agent, "score": s.score, "below_floor": s.score < self.inner.model.floor()}))
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> TrustModel {
        TrustModel::new(&TrustSettings { half_life_secs: 100.0, ..Default::default() })
    }

    #[test]
    fn the_score_is_the_posterior_mean_and_old_outcomes_fade() {
        let m = model();
        let empty = TrustRow::default();
        assert_eq!(m.score(&empty, 0.0).score, 0.5);
        let mut r = empty;
        for _ in 0..3 {
            r = m.record(&r, Outcome::Failure, 0.0);
        }
        // Beta(1, 4): 1/5.
        assert!((m.score(&r, 0.0).score - 0.2).abs() < 1e-12);
        // One half-life later the failures weigh 1.5: 1 / 3.5.
        assert!((m.score(&r, 100.0).score - 1.0 / 3.5).abs() < 1e-12);
        // A rating of 5 is a whole success, 1 a whole failure, 3 half of each.
        let rated = m.rate(&empty, 3, 0.0);
        assert_eq!((rated.rated_good, rated.rated_poor), (0.5, 0.5));
        assert_eq!(m.score(&m.rate(&empty, 5, 0.0), 0.0).score, 2.0 / 3.0);
        let s = m.score(&r, 0.0);
        assert!(s.interval[0] <= s.score && s.score <= s.interval[1]);
    }

    #[test]
    fn error_codes_map_to_outcomes() {
        assert_eq!(Outcome::of_error_code("deadline_exceeded"), Some(Outcome::Timeout));
        assert_eq!(Outcome::of_error_code("backend_error"), Some(Outcome::Failure));
        for asker in ["invalid_field", "unknown_task_type", "denied_by_policy", "busy", "cancelled", "not_found"] {
            assert_eq!(Outcome::of_error_code(asker), None, "{asker}");
        }
    }
}
