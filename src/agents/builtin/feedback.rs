//! FeedbackHandler: users' ratings of answers, tied to the answering task's
//! routing receipt. The receipt gives the agent that answered and the tier,
//! backend, model and task type of its model call; they are stored with the
//! feedback, so the learning loop can ask "how are local translations
//! rated" without joining receipts. A rating also reaches AgentTrustScorer
//! (through the `feedback.recorded` event), and a correction given with it
//! is stored as a correction too (LearningManager's `corrections.list`).
//!
//! State: the `feedback` and `corrections` tables ([`crate::store::learning`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `feedback.record` | `{"task_id", "rating": 1–5 or "thumbs": "up"/"down", "correction"?, "better_specialist"?}` | the stored feedback: `{"feedback_id", "task_id", "agent", "user", "task_type", "tier", "backend", "model", "rating", "thumbs", "correction", "better_specialist", "created_at"}` |
//! | `feedback.list` | nothing, or `{"task_id"?, "agent"?, "limit"?}` (default 50) | `{"feedback": [...]}`, newest first |
//!
//! The schemas are the spec's (`agents/language_services/FeedbackHandler.yaml`).
//! The user is the envelope's `user` (null: anonymous). Thumbs count as a
//! rating of 5 (up) or 1 (down) for trust; the stored row keeps which was given.
//!
//! Errors: a task with no receipt (unknown, or it made no model call) is
//! `not_found`; a `better_specialist` not in the catalog `unknown_agent`; a rating outside 1–5, both or neither of `rating` and
//! `thumbs` is `invalid_field`.
//!
//! Event `feedback.recorded {feedback_id, task_id, agent, user, rating,
//! better_specialist}` (and `correction.recorded` with a correction); metric
//! `agentvisor_learning_records_total{kind="feedback"}`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{Answer, Behaviour, Name, Text, unknown_type};
use crate::agents::tasks::decode;
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::learning::{self, Correction, Feedback, ReceiptFacts};
use crate::store::receipts::ReceiptLog;
use crate::store::{Store, StoreError};
use crate::supervisor::Fleet;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "FeedbackHandler";

/// Entries a list returns by default.
pub(crate) const DEFAULT_LIMIT: u32 = 50;

/// Most entries a list returns.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The receipt of `task_id`. A task answered a moment ago may have its
/// receipt still queued in the receipts writer: on a miss the writer is
/// flushed and the table read again (read-your-writes).
///
/// # Errors
/// `not_found` when no receipt names the task; `internal` on a store error.
pub(crate) async fn receipt_facts(
    store: &Store,
    receipts: &ReceiptLog,
    task_type: &str,
    task_id: &str,
) -> Result<ReceiptFacts, TaskError> {
    let read = |id: String| store.call(move |conn| learning::receipt_of(conn, &id));
    if let Some(f) = read(task_id.to_string()).await.map_err(store_error)? {
        return Ok(f);
    }
    receipts.flush().await;
    read(task_id.to_string()).await.map_err(store_error)?.ok_or_else(|| {
        TaskError::new(
            ErrorCode::NotFound,
            format!("{task_type}: no receipt for task {task_id:?} (unknown, or it made no model call)"),
        )
    })
}

pub(crate) fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("learning store: {e}"))
}

/// `invalid_field`: "input of TYPE at AT: WHAT".
pub(crate) fn bad(task_type: &str, at: &str, what: impl std::fmt::Display) -> TaskError {
    TaskError::new(ErrorCode::InvalidField, format!("input of {task_type} at {at}: {what}"))
}

/// The limit of a list: default [`DEFAULT_LIMIT`], 1..=[`MAX_LIMIT`].
pub(crate) fn limit(task_type: &str, limit: Option<i64>) -> Result<u32, TaskError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if (1..=i64::from(MAX_LIMIT)).contains(&l) => Ok(l as u32),
        Some(l) => Err(bad(task_type, "/limit", format!("{l} is not within 1..={MAX_LIMIT}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    task_id: Name,
    #[serde(default)]
    rating: Option<i64>,
    #[serde(default)]
    thumbs: Option<Thumbs>,
    #[serde(default)]
    correction: Option<Text>,
    #[serde(default)]
    better_specialist: Option<Name>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Thumbs {
    Up,
    Down,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    task_id: Option<Name>,
    #[serde(default)]
    agent: Option<Name>,
    #[serde(default)]
    limit: Option<i64>,
}

/// The FeedbackHandler behaviour.
pub struct FeedbackHandler {
    store: Store,
    receipts: ReceiptLog,
    fleet: Fleet,
    events: EventBus,
    metrics: Metrics,
}

impl FeedbackHandler {
    /// The behaviour: feedback in `store`, receipts read there (after a
    /// flush of `receipts` when missing); `better_specialist` checked
    /// against `fleet`'s catalog.
    pub fn new(
        store: Store,
        receipts: ReceiptLog,
        fleet: Fleet,
        events: EventBus,
        metrics: Metrics,
    ) -> FeedbackHandler {
        FeedbackHandler { store, receipts, fleet, events, metrics }
    }

    async fn record(&self, t: &str, input: RecordInput, user: Option<String>) -> Result<Feedback, TaskError> {
        let RecordInput { task_id: Name(task_id), rating, thumbs, correction, better_specialist } = input;
        let rating = match (rating, thumbs) {
            (Some(r), None) if (1..=5).contains(&r) => Some(r as u8),
            (Some(r), None) => return Err(bad(t, "/rating", format!("{r} is not within 1..=5"))),
            (None, Some(_)) => None,
            _ => return Err(bad(t, "the top level", "give exactly one of `rating` and `thumbs`")),
        };
        if let Some(Name(b)) = &better_specialist
            && self.fleet.ctx().catalog.get(b).is_none()
        {
            return Err(TaskError::new(
                ErrorCode::UnknownAgent,
                format!("{t}: no agent named {b:?} (better_specialist)"),
            ));
        }
        let facts = receipt_facts(&self.store, &self.receipts, t, &task_id).await?;
        let now = unix_time();
        let feedback = Feedback {
            feedback_id: uuid::Uuid::new_v4().to_string(),
            task_id: task_id.clone(),
            agent: Some(facts.agent.clone()),
            user: user.clone(),
            task_type: Some(facts.task_type.clone()),
            tier: Some(facts.tier.clone()),
            backend: facts.backend.clone(),
            model: facts.model.clone(),
            rating,
            thumbs: thumbs.map(|t| if t == Thumbs::Up { "up" } else { "down" }.to_string()),
            correction: correction.map(|c| c.trimmed()),
            better_specialist: better_specialist.map(|Name(b)| b),
            created_at: now,
        };
        let correction = feedback.correction.clone().map(|text| Correction {
            correction_id: uuid::Uuid::new_v4().to_string(),
            task_id: task_id.clone(),
            user: user.clone(),
            agent: Some(facts.agent.clone()),
            task_type: Some(facts.task_type.clone()),
            correction: text,
            note: Some(format!("from feedback {}", feedback.feedback_id)),
            created_at: now,
        });
        let (f, c) = (feedback.clone(), correction.clone());
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                learning::insert_feedback(&tx, &f)?;
                if let Some(c) = &c {
                    learning::insert_correction(&tx, c)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        self.metrics.learning_records.with_label_values(&["feedback"]).inc();
        self.events.emit(Event::FeedbackRecorded {
            feedback_id: feedback.feedback_id.clone(),
            task_id: task_id.clone(),
            agent: feedback.agent.clone(),
            user: user.clone(),
            rating: feedback.score(),
            better_specialist: feedback.better_specialist.clone(),
        });
        if let Some(c) = correction {
            self.metrics.learning_records.with_label_values(&["correction"]).inc();
            self.events.emit(Event::CorrectionRecorded {
                correction_id: c.correction_id,
                task_id,
                agent: c.agent,
                user,
            });
        }
        Ok(feedback)
    }
}

#[async_trait]
impl Behaviour for FeedbackHandler {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "feedback.record" => {
                let f = self.record(t, decode(t, &task.input)?, task.user.clone()).await?;
                Ok(serde_json::to_value(f).unwrap_or_default())
            }
            "feedback.list" => {
                let ListInput { task_id, agent, limit: n } =
                    decode::<Option<ListInput>>(t, &task.input)?.unwrap_or_default();
                let n = limit(t, n)?;
                let (task_id, agent) = (task_id.map(|Name(x)| x), agent.map(|Name(x)| x));
                let feedback = self
                    .store
                    .call(move |conn| learning::list_feedback(conn, task_id.as_deref(), agent.as_deref(), n))
                    .await
                    .map_err(store_error)?;
                Ok(json!({"feedback": feedback}))
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}
