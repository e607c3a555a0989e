//! LearningManager: each user's preferences (preferred tier, persona,
//! answer language, cost cap per task) and corrections of answers, for the
//! learning loop. The user is the envelope's `user`; anonymous tasks share
//! one anonymous user (`user: null` in the output).
//!
//! Preferences are stored and answered here; routing does not apply them
//! yet (the router takes no per-task tier or cost cap today: docs/learning.md).
//!
//! State: the `user_preferences` and `corrections` tables ([`crate::store::learning`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `preferences.set` | `{"preferred_tier"?: "L1"/"L2"/"L3", "persona"?, "language"?, "cost_cap_usd"?}`, at least one; null clears a field, a missing field is kept | `{"user", "preferences": {...}, "updated_at"}` |
//! | `preferences.get` | nothing | `{"user", "preferences": {...}, "updated_at"}` (every field null and `updated_at` null: never set) |
//! | `corrections.record` | `{"task_id", "correction", "note"?}` | `{"correction_id", "task_id", "agent", "task_type", "user", "correction", "note", "created_at"}` |
//! | `corrections.list` | nothing, or `{"task_id"?, "limit"?}` (default 50) | `{"corrections": [...]}`, newest first |
//!
//! The schemas are the spec's (`agents/learning_services/LearningManager.yaml`).
//!
//! Errors: a persona DynamicIdentityAgent does not know is `not_found`; a
//! language that is not a BCP 47 tag, a negative cost cap, an empty
//! `preferences.set` are `invalid_field`; a corrected task with no receipt
//! (unknown, or it made no model call) is `not_found`.
//!
//! Events `preferences.set {user, fields}`, `correction.recorded`; metric
//! `agentvisor_learning_records_total{kind="preferences"|"correction"}`.

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::feedback::{bad, limit, receipt_facts, store_error};
use super::{Answer, Behaviour, Name, Text, unknown_type};
use crate::agents::tasks::decode;
use crate::config::IdentitySettings;
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::Store;
use crate::store::learning::{self, Correction, Preferences};
use crate::store::personas;
use crate::store::receipts::ReceiptLog;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "LearningManager";

/// A field that may be missing (`None`: keep), null (`Some(None)`: clear)
/// or set.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetInput {
    #[serde(default, deserialize_with = "present")]
    preferred_tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    persona: Option<Option<Name>>,
    #[serde(default, deserialize_with = "present")]
    language: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    cost_cap_usd: Option<Option<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    task_id: Name,
    correction: Text,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    task_id: Option<Name>,
    #[serde(default)]
    limit: Option<i64>,
}

/// Whether `tag` looks like a BCP 47 language tag: a 2–8 letter language
/// subtag, then subtags of 1–8 letters or digits, separated by `-`
/// (`en`, `pt-BR`, `zh-Hant-TW`). The registry itself is not consulted.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let lang_ok =
        parts.next().is_some_and(|l| (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    lang_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The LearningManager behaviour.
pub struct LearningManager {
    store: Store,
    receipts: ReceiptLog,
    identity: IdentitySettings,
    events: EventBus,
    metrics: Metrics,
}

impl LearningManager {
    /// The behaviour: preferences and corrections in `store`; personas
    /// checked against `identity` (YAML) and the store.
    pub fn new(
        store: Store,
        receipts: ReceiptLog,
        identity: IdentitySettings,
        events: EventBus,
        metrics: Metrics,
    ) -> LearningManager {
        LearningManager { store, receipts, identity, events, metrics }
    }

    async fn get(&self, user: Option<String>) -> Result<serde_json::Value, TaskError> {
        let u = user.clone();
        let found =
            self.store.call(move |conn| learning::preferences(conn, u.as_deref())).await.map_err(store_error)?;
        let (preferences, updated_at) = match found {
            Some((p, at)) => (p, Some(at)),
            None => (Preferences::default(), None),
        };
        Ok(json!({"user": user, "preferences": preferences, "updated_at": updated_at}))
    }

    async fn set(&self, t: &str, input: SetInput, user: Option<String>) -> Result<serde_json::Value, TaskError> {
        let SetInput { preferred_tier, persona, language, cost_cap_usd } = input;
        let mut fields = Vec::new();
        if let Some(Some(tier)) = &preferred_tier
            && !matches!(tier.as_str(), "L1" | "L2" | "L3")
        {
            return Err(bad(t, "/preferred_tier", format!("{tier:?} is not L1, L2 or L3")));
        }
        if let Some(Some(lang)) = &language
            && !is_language_tag(lang)
        {
            return Err(bad(t, "/language", format!("{lang:?} is not a BCP 47 language tag (e.g. en, pt-BR)")));
        }
        if let Some(Some(cap)) = cost_cap_usd
            && !(cap >= 0.0 && cap.is_finite())
        {
            return Err(bad(t, "/cost_cap_usd", format!("{cap} is not a number of US dollars >= 0")));
        }
        if let Some(Some(Name(p))) = &persona {
            let (yaml, p2) = (self.identity.clone(), p.clone());
            let known = self.store.call(move |conn| personas::get(conn, &yaml, &p2)).await.map_err(store_error)?;
            if known.is_none() {
                return Err(TaskError::new(ErrorCode::NotFound, format!("{t}: no persona named {p:?}")));
            }
        }
        let u = user.clone();
        let now = unix_time();
        let mut changes = |name: &'static str, given: bool| {
            if given {
                fields.push(name);
            }
        };
        changes("preferred_tier", preferred_tier.is_some());
        changes("persona", persona.is_some());
        changes("language", language.is_some());
        changes("cost_cap_usd", cost_cap_usd.is_some());
        if fields.is_empty() {
            return Err(bad(t, "the top level", "give at least one preference"));
        }
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let mut p = learning::preferences(&tx, u.as_deref())?.map(|(p, _)| p).unwrap_or_default();
                if let Some(v) = preferred_tier {
                    p.preferred_tier = v;
                }
                if let Some(v) = persona {
                    p.persona = v.map(|Name(n)| n);
                }
                if let Some(v) = language {
                    p.language = v;
                }
                if let Some(v) = cost_cap_usd {
                    p.cost_cap_usd = v;
                }
                learning::put_preferences(&tx, u.as_deref(), &p, now)?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        self.metrics.learning_records.with_label_values(&["preferences"]).inc();
        self.events.emit(Event::PreferencesSet { user: user.clone(), fields });
        self.get(user).await
    }

    async fn record(&self, t: &str, input: RecordInput, user: Option<String>) -> Result<Correction, TaskError> {
        let RecordInput { task_id: Name(task_id), correction, note } = input;
        let facts = receipt_facts(&self.store, &self.receipts, t, &task_id).await?;
        let c = Correction {
            correction_id: uuid::Uuid::new_v4().to_string(),
            task_id,
            user,
            agent: Some(facts.agent),
            task_type: Some(facts.task_type),
            correction: correction.trimmed(),
            note: note.filter(|n| !n.trim().is_empty()),
            created_at: unix_time(),
        };
        let row = c.clone();
        self.store.call(move |conn| learning::insert_correction(conn, &row)).await.map_err(store_error)?;
        self.metrics.learning_records.with_label_values(&["correction"]).inc();
        self.events.emit(Event::CorrectionRecorded {
            correction_id: c.correction_id.clone(),
            task_id: c.task_id.clone(),
            agent: c.agent.clone(),
            user: c.user.clone(),
        });
        Ok(c)
    }
}

#[async_trait]
impl Behaviour for LearningManager {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let user = task.user.clone();
        match t {
            "preferences.set" => self.set(t, decode(t, &task.input)?, user).await,
            "preferences.get" => {
                let _: Option<Empty> = decode(t, &task.input)?;
                self.get(user).await
            }
            "corrections.record" => {
                let c = self.record(t, decode(t, &task.input)?, user).await?;
                Ok(serde_json::to_value(c).unwrap_or_default())
            }
            "corrections.list" => {
                let ListInput { task_id, limit: n } = decode::<Option<ListInput>>(t, &task.input)?.unwrap_or_default();
                let n = limit(t, n)?;
                let task_id = task_id.map(|Name(x)| x);
                let corrections = self
                    .store
                    .call(move |conn| learning::list_corrections(conn, task_id.as_deref(), n))
                    .await
                    .map_err(store_error)?;
                Ok(json!({"corrections": corrections}))
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        for ok in ["en", "pt-BR", "zh-Hant-TW", "es-419"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["e", "english language", "en_US", "en-", "-en", "123"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}
