//! MoodTrackerAgent: each user's mood over time from EmotionEngine results
//! (`{"label", "intensity"}`). The current mood weighs every recorded
//! emotion by `intensity × 2^(−age / half_life)` (exponential decay, the
//! half-life the `mood.half_life_secs` setting) and sums the weights per
//! label; the dominant label is the mood, `neutral` when nothing weighs
//! more than [`FLOOR`]. The user is the envelope's `user` (null: anonymous).
//!
//! State: the `mood_records` table ([`crate::store::mood`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `mood.record` | `{"label", "intensity", "text"?}` | the user's current mood after it |
//! | `mood.current` | nothing | `{"user", "label", "intensity", "scores", "half_life_seconds", "updated_at"}` |
//! | `mood.history` | nothing, or `{"since"?, "limit"?}` | `{"user", "entries": [...]}`, newest first |

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::params;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Answer, Behaviour, Empty, Null, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "MoodTrackerAgent";

/// Below this decayed weight an emotion no longer counts (the mood is `neutral`).
pub(crate) const FLOOR: f64 = 0.01;

/// Records older than this many half-lives weigh < 2^-20 and are not read.
const HORIZON_HALF_LIVES: f64 = 20.0;

/// Default records `mood.history` returns.
const DEFAULT_LIMIT: u32 = 50;

/// The task types of MoodTrackerAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<RecordInput, MoodOutput>(
            "mood.record",
            "Records an EmotionEngine result as the asking user's mood now; answers the current mood",
            || vec![json!({"label": "joy", "intensity": 0.7, "text": "I finally passed my exam!"})],
        ),
        rust_task::<OrShort<Empty>, MoodOutput>(
            "mood.current",
            "The asking user's current mood: recorded emotions with exponential decay over time",
            || vec![json!({}), json!(null)],
        ),
        rust_task::<OrShort<HistoryInput>, HistoryOutput>(
            "mood.history",
            "The asking user's recorded emotions, newest first",
            || vec![json!({"limit": 20}), json!(null)],
        ),
    ]
}

/// The MoodTrackerAgent behaviour.
pub struct MoodTracker {
    store: Store,
    /// Seconds; > 0.
    half_life: f64,
    events: EventBus,
    metrics: Metrics,
}

impl MoodTracker {
    /// The behaviour: records in `store`, decaying with `half_life_secs`
    /// (≤ 0 read as 1 ms).
    pub fn new(store: Store, half_life_secs: f64, events: EventBus, metrics: Metrics) -> MoodTracker {
        MoodTracker { store, half_life: half_life_secs.max(0.001), events, metrics }
    }

    async fn current(&self, user: Option<String>) -> Result<MoodOutput, TaskError> {
        let now = unix_time();
        let since = now - HORIZON_HALF_LIVES * self.half_life;
        let u = user.clone();
        let rows: Vec<(String, f64, f64)> = self
            .store
            .call(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT label, intensity, ts FROM mood_records WHERE user IS ?1 AND ts >= ?2 ORDER BY ts",
                )?;
                let rows = stmt.query_map(params![u, since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .map_err(store_error)?;
        Ok(self.mood(user, &rows, now))
    }

    /// The mood of `rows` (label, intensity, ts) at `now`.
    fn mood(&self, user: Option<String>, rows: &[(String, f64, f64)], now: f64) -> MoodOutput {
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        for (label, intensity, ts) in rows {
            let age = (now - ts).max(0.0);
            *scores.entry(label.clone()).or_default() += intensity * (-age / self.half_life).exp2();
        }
        let top = scores.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(l, w)| (l.clone(), *w));
        let (label, intensity) = match top {
            Some((l, w)) if w > FLOOR => (Label::parse(&l), w.min(1.0)),
            _ => (Label::Neutral, 0.0),
        };
        MoodOutput {
            user,
            label,
            intensity,
            scores,
            half_life_seconds: self.half_life,
            updated_at: rows.last().map(|r| r.2),
        }
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("mood store: {e}"))
}

#[async_trait]
impl Behaviour for MoodTracker {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let user = task.user.clone();
        match t {
            "mood.record" => {
                let RecordInput { label, intensity, text } = decode(t, &task.input)?;
                if !(0.0..=1.0).contains(&intensity) {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of mood.record at /intensity: {intensity} is not within 0..=1"),
                    ));
                }
                let (u, ts) = (user.clone(), unix_time());
                self.store
                    .call(move |conn| {
                        conn.execute(
                            "INSERT INTO mood_records (user, label, intensity, text, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![u, label.as_str(), intensity, text, ts],
                        )?;
                        Ok(())
                    })
                    .await
                    .map_err(store_error)?;
                let mood = self.current(user.clone()).await?;
                self.metrics.mood_records.with_label_values(&[label.as_str()]).inc();
                self.events.emit(Event::MoodRecorded {
                    user,
                    label: label.as_str(),
                    intensity,
                    current: mood.label.as_str(),
                });
                encode(t, mood)
            }
            "mood.current" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                encode(t, self.current(user).await?)
            }
            "mood.history" => {
                let OrShort(HistoryInput { since, limit }) = decode(t, &task.input)?;
                let limit = limit.map_or(DEFAULT_LIMIT, |l| l.clamp(1, 1000));
                let (u, since) = (user.clone(), since.unwrap_or(f64::NEG_INFINITY));
                let entries = self
                    .store
                    .call(move |conn| {
                        let mut stmt = conn.prepare(
                            "SELECT label, intensity, text, ts FROM mood_records WHERE user IS ?1 AND ts > ?2
                             ORDER BY ts DESC, id DESC LIMIT ?3",
                        )?;
                        let rows = stmt.query_map(params![u, since, limit], |r| {
                            let label: String = r.get(0)?;
                            Ok(Entry {
                                label: Label::parse(&label),
                                intensity: r.get(1)?,
                                text: r.get(2)?,
                                ts: r.get(3)?,
                            })
                        })?;
                        Ok(rows.collect::<Result<_, _>>()?)
                    })
                    .await
                    .map_err(store_error)?;
                encode(t, HistoryOutput { user, entries })
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// An emotion, as EmotionEngine labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Label {
    /// Joy.
    Joy,
    /// Sadness.
    Sadness,
    /// Anger.
    Anger,
    /// Fear.
    Fear,
    /// Surprise.
    Surprise,
    /// Disgust.
    Disgust,
    /// No emotion.
    Neutral,
}

impl Label {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Label::Joy => "joy",
            Label::Sadness => "sadness",
            Label::Anger => "anger",
            Label::Fear => "fear",
            Label::Surprise => "surprise",
            Label::Disgust => "disgust",
            Label::Neutral => "neutral",
        }
    }
    fn parse(s: &str) -> Label {
        serde_json::from_value(json!(s)).unwrap_or(Label::Neutral)
    }
}

/// An EmotionEngine result to record for the asking user.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    /// The emotion.
    label: Label,
    /// How strongly it is expressed, 0–1.
    #[schemars(range(min = 0.0, max = 1.0))]
    intensity: f64,
    /// The text the emotion was detected in (kept with the record).
    #[serde(default)]
    text: Option<String>,
}

/// Which records to list.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HistoryInput {
    /// Only records after this time, Unix seconds.
    #[serde(default)]
    since: Option<f64>,
    /// Most records returned, 1–1000; default 50.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

impl Shorthand for HistoryInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: the latest 50 records.";
    fn expand(_: Null) -> HistoryInput {
        HistoryInput { since: None, limit: None }
    }
}

/// A user's current mood.
#[derive(Serialize, JsonSchema)]
struct MoodOutput {
    /// The user (null: anonymous).
    user: Option<String>,
    /// The dominant emotion (neutral when nothing weighs more than 0.01).
    label: Label,
    /// The dominant emotion's decayed weight, capped at 1.
    intensity: f64,
    /// The decayed weight of each recorded emotion (sums of `intensity × 2^(−age / half-life)`).
    scores: BTreeMap<String, f64>,
    /// The decay half-life setting, seconds.
    half_life_seconds: f64,
    /// Unix seconds of the newest record counted; null: none.
    updated_at: Option<f64>,
}

/// One recorded emotion.
#[derive(Serialize, JsonSchema)]
struct Entry {
    /// The emotion.
    label: Label,
    /// Its intensity, 0–1.
    intensity: f64,
    /// The text it was detected in.
    text: Option<String>,
    /// Recorded, Unix seconds.
    ts: f64,
}

/// A user's records.
#[derive(Serialize, JsonSchema)]
struct HistoryOutput {
    /// The user (null: anonymous).
    user: Option<String>,
    /// Newest first.
    entries: Vec<Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decay halves a weight per half-life; the dominant label wins; old
    /// weights fade to neutral.
    #[test]
    fn decay_halves_per_half_life() {
        let store_dir = tempfile::tempdir().unwrap();
        let m = MoodTracker::new(
            Store::open(store_dir.path()).unwrap(),
            10.0,
            EventBus::new(Metrics::new().events.clone()),
            Metrics::new(),
        );
        let rows = vec![("joy".to_string(), 0.8, 0.0), ("sadness".to_string(), 0.5, 10.0)];
        let mood = m.mood(None, &rows, 10.0);
        assert!((mood.scores["joy"] - 0.4).abs() < 1e-9, "{:?}", mood.scores);
        assert_eq!(mood.label, Label::Sadness);
        assert_eq!(m.mood(None, &rows, 100.0).label, Label::Neutral);
        assert_eq!(m.mood(None, &[], 0.0).updated_at, None);
    }
}
