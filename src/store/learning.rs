//! The learning loop's tables (issue 16): FeedbackHandler's `feedback`,
//! LearningManager's `corrections` and `user_preferences`, and
//! AgentTrustScorer's `agent_trust` (one decayed Beta posterior per agent).
//! Feedback and corrections are tied to a task's routing receipt
//! ([`receipt_of`]): its agent, tier, backend, model and task type are
//! copied onto them, so they outlive the receipts' retention.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;

/// Migration 19.
pub(crate) const MIGRATION: &str = "CREATE TABLE feedback (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    user TEXT,
    agent TEXT,
    task_type TEXT,
    tier TEXT,
    backend TEXT,
    model TEXT,
    rating INTEGER NOT NULL,
    thumbs TEXT,
    correction TEXT,
    better_specialist TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX feedback_task ON feedback(task_id);
CREATE INDEX feedback_agent ON feedback(agent, created_at);
CREATE INDEX feedback_created ON feedback(created_at);
CREATE TABLE corrections (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    user TEXT,
    agent TEXT,
    task_type TEXT,
    correction TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX corrections_task ON corrections(task_id);
CREATE INDEX corrections_created ON corrections(created_at);
CREATE TABLE user_preferences (
    user TEXT PRIMARY KEY NOT NULL,
    preferred_tier TEXT,
    persona TEXT,
    language TEXT,
    cost_cap_usd REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE agent_trust (
    agent TEXT PRIMARY KEY NOT NULL,
    successes REAL NOT NULL,
    failures REAL NOT NULL,
    timeouts REAL NOT NULL,
    rated_good REAL NOT NULL,
    rated_poor REAL NOT NULL,
    rating_sum REAL NOT NULL,
    ratings REAL NOT NULL,
    updated_at REAL NOT NULL
);";

/// What a task's routing receipt says about who answered it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiptFacts {
    /// The agent that made the model call (`gateway` for `/v1`).
    pub agent: String,
    /// The task type the router saw.
    pub task_type: String,
    /// `L1`, `L2` or `L3`.
    pub tier: String,
    /// The backend that answered (or the last one tried).
    pub backend: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
}

/// The newest receipt of `task_id` (an arbiter's task has several: the
/// newest is its last step's). The receipts have no task-id index (see
/// migration 6), so the table is read newest first and the search stops at
/// the first match: cheap for recent tasks, a full scan for unknown ids.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn receipt_of(conn: &Connection, task_id: &str) -> Result<Option<ReceiptFacts>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT agent, task_type, tier, backend, model FROM receipts WHERE task_id = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row([task_id], |r| {
            Ok(ReceiptFacts {
                agent: r.get(0)?,
                task_type: r.get(1)?,
                tier: r.get(2)?,
                backend: r.get(3)?,
                model: r.get(4)?,
            })
        })
        .optional()?)
}

/// One stored feedback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    /// Its id.
    pub feedback_id: String,
    /// The rated task.
    pub task_id: String,
    /// The agent that answered it (from its receipt).
    pub agent: Option<String>,
    /// Who gave the feedback (the envelope's `user`).
    pub user: Option<String>,
    /// The task type of the receipt.
    pub task_type: Option<String>,
    /// The receipt's tier.
    pub tier: Option<String>,
    /// The receipt's backend.
    pub backend: Option<String>,
    /// The receipt's model.
    pub model: Option<String>,
    /// 1–5 when the user gave a rating (null for thumbs).
    pub rating: Option<u8>,
    /// `up` or `down` when the user gave thumbs.
    pub thumbs: Option<String>,
    /// What the answer should have been.
    pub correction: Option<String>,
    /// The agent that should have answered.
    pub better_specialist: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
}

impl Feedback {
    /// The rating as 1–5: the rating, or thumbs up 5 and down 1.
    pub fn score(&self) -> u8 {
        self.rating.unwrap_or(if self.thumbs.as_deref() == Some("down") { 1 } else { 5 })
    }
}

/// Stores `f`.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn insert_feedback(conn: &Connection, f: &Feedback) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO feedback (id, task_id, user, agent, task_type, tier, backend, model, rating, thumbs, correction,
            better_specialist, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            f.feedback_id,
            f.task_id,
            f.user,
            f.agent,
            f.task_type,
            f.tier,
            f.backend,
            f.model,
            f.score(),
            f.thumbs,
            f.correction,
            f.better_specialist,
            f.created_at
        ],
    )?;
    Ok(())
}

/// Feedback newest first, at most `limit`, of one task and/or one agent
/// when given.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn list_feedback(
    conn: &Connection,
    task_id: Option<&str>,
    agent: Option<&str>,
    limit: u32,
) -> Result<Vec<Feedback>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, task_id, agent, user, task_type, tier, backend, model, rating, thumbs, correction,
                better_specialist, created_at
         FROM feedback WHERE (?1 IS NULL OR task_id = ?1) AND (?2 IS NULL OR agent = ?2)
         ORDER BY created_at DESC, rowid DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![task_id, agent, limit], |r| {
        let thumbs: Option<String> = r.get(9)?;
        let rating: u8 = r.get(8)?;
        Ok(Feedback {
            feedback_id: r.get(0)?,
            task_id: r.get(1)?,
            agent: r.get(2)?,
            user: r.get(3)?,
            task_type: r.get(4)?,
            tier: r.get(5)?,
            backend: r.get(6)?,
            model: r.get(7)?,
            rating: if thumbs.is_some() { None } else { Some(rating) },
            thumbs,
            correction: r.get(10)?,
            better_specialist: r.get(11)?,
            created_at: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One stored correction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correction {
    /// Its id.
    pub correction_id: String,
    /// The corrected task.
    pub task_id: String,
    /// Who corrected it.
    pub user: Option<String>,
    /// The agent that answered the task (from its receipt).
    pub agent: Option<String>,
    /// The task type of the receipt.
    pub task_type: Option<String>,
    /// What the answer should have been.
    pub correction: String,
    /// Why, or where the answer went wrong.
    pub note: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
}

/// Stores `c`.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn insert_correction(conn: &Connection, c: &Correction) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO corrections (id, task_id, user, agent, task_type, correction, note, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![c.correction_id, c.task_id, c.user, c.agent, c.task_type, c.correction, c.note, c.created_at],
    )?;
    Ok(())
}

/// Corrections newest first, at most `limit`, of one task when given.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn list_corrections(conn: &Connection, task_id: Option<&str>, limit: u32) -> Result<Vec<Correction>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, task_id, user, agent, task_type, correction, note, created_at
         FROM corrections WHERE (?1 IS NULL OR task_id = ?1)
         ORDER BY created_at DESC, rowid DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![task_id, limit], |r| {
        Ok(Correction {
            correction_id: r.get(0)?,
            task_id: r.get(1)?,
            user: r.get(2)?,
            agent: r.get(3)?,
            task_type: r.get(4)?,
            correction: r.get(5)?,
            note: r.get(6)?,
            created_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A user's preferences; every field may be unset (null).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Preferences {
    /// `L1`, `L2` or `L3`.
    pub preferred_tier: Option<String>,
    /// A DynamicIdentityAgent persona.
    pub persona: Option<String>,
    /// Answer language, a BCP 47 tag.
    pub language: Option<String>,
    /// Most one task may cost, US dollars.
    pub cost_cap_usd: Option<f64>,
}

/// The key of a user in `user_preferences`: the name, `""` for anonymous.
fn user_key(user: Option<&str>) -> &str {
    user.unwrap_or("")
}

/// `user`'s preferences and when they were last set; `None`: never set.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn preferences(conn: &Connection, user: Option<&str>) -> Result<Option<(Preferences, f64)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT preferred_tier, persona, language, cost_cap_usd, updated_at FROM user_preferences WHERE user = ?1",
        )?
        .query_row([user_key(user)], |r| {
            Ok((
                Preferences {
                    preferred_tier: r.get(0)?,
                    persona: r.get(1)?,
                    language: r.get(2)?,
                    cost_cap_usd: r.get(3)?,
                },
                r.get(4)?,
            ))
        })
        .optional()?)
}

/// Stores `user`'s preferences (all fields, replacing the row).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn put_preferences(conn: &Connection, user: Option<&str>, p: &Preferences, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO user_preferences (user, preferred_tier, persona, language, cost_cap_usd, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(user) DO UPDATE SET preferred_tier = ?2, persona = ?3, language = ?4, cost_cap_usd = ?5,
            updated_at = ?6",
        params![user_key(user), p.preferred_tier, p.persona, p.language, p.cost_cap_usd, now],
    )?;
    Ok(())
}

/// One agent's stored trust state (decayed to `updated_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrustRow {
    /// Decayed successes.
    pub successes: f64,
    /// Decayed failures.
    pub failures: f64,
    /// Decayed timeouts.
    pub timeouts: f64,
    /// Decayed good part of ratings (`(r − 1) / 4` each, times the weight).
    pub rated_good: f64,
    /// Decayed poor part of ratings (`(5 − r) / 4` each, times the weight).
    pub rated_poor: f64,
    /// Decayed sum of ratings (1–5 each).
    pub rating_sum: f64,
    /// Decayed number of ratings.
    pub ratings: f64,
    /// Unix seconds of the last outcome.
    pub updated_at: f64,
}

/// Every agent's trust state.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn trust_rows(conn: &Connection) -> Result<Vec<(String, TrustRow)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT agent, successes, failures, timeouts, rated_good, rated_poor, rating_sum, ratings, updated_at
         FROM agent_trust",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            TrustRow {
                successes: r.get(1)?,
                failures: r.get(2)?,
                timeouts: r.get(3)?,
                rated_good: r.get(4)?,
                rated_poor: r.get(5)?,
                rating_sum: r.get(6)?,
                ratings: r.get(7)?,
                updated_at: r.get(8)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores the trust states of `rows` (one transaction).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn put_trust(conn: &mut Connection, rows: &[(String, TrustRow)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO agent_trust (agent, successes, failures, timeouts, rated_good, rated_poor, rating_sum, ratings,
                updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(agent) DO UPDATE SET successes = ?2, failures = ?3, timeouts = ?4, rated_good = ?5,
                rated_poor = ?6, rating_sum = ?7, ratings = ?8, updated_at = ?9",
        )?;
        for (agent, t) in rows {
            stmt.execute(params![
                agent,
                t.successes,
                t.failures,
                t.timeouts,
                t.rated_good,
                t.rated_poor,
                t.rating_sum,
                t.ratings,
                t.updated_at
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Receipt;

    #[test]
    fn feedback_is_tied_to_the_newest_receipt_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        assert_eq!(receipt_of(&conn, "t1").unwrap(), None);
        for tier in ["L1", "L2"] {
            let r = Receipt {
                task_id: "t1".into(),
                agent: "ChitchatAgent".into(),
                tier: tier.into(),
                task_type: "chitchat".into(),
                ..Default::default()
            };
            crate::store::receipts::insert(&conn, &r).unwrap();
        }
        let facts = receipt_of(&conn, "t1").unwrap().unwrap();
        assert_eq!((facts.agent.as_str(), facts.tier.as_str()), ("ChitchatAgent", "L2"));
        for (i, thumbs) in [None, Some("down")].into_iter().enumerate() {
            let f = Feedback {
                feedback_id: format!("f{i}"),
                task_id: "t1".into(),
                agent: Some(facts.agent.clone()),
                user: None,
                task_type: None,
                tier: None,
                backend: None,
                model: None,
                rating: if thumbs.is_none() { Some(4) } else { None },
                thumbs: thumbs.map(str::to_string),
                correction: None,
                better_specialist: None,
                created_at: 10.0 + i as f64,
            };
            insert_feedback(&conn, &f).unwrap();
        }
        let got = list_feedback(&conn, Some("t1"), None, 10).unwrap();
        assert_eq!(got.iter().map(|f| f.feedback_id.as_str()).collect::<Vec<_>>(), ["f1", "f0"]);
        assert_eq!((got[0].rating, got[0].thumbs.as_deref(), got[0].score()), (None, Some("down"), 1));
        assert_eq!((got[1].rating, got[1].score()), (Some(4), 4));
        assert!(list_feedback(&conn, None, Some("Other"), 10).unwrap().is_empty());
    }

    #[test]
    fn preferences_are_per_user_and_anonymous_is_its_own_user() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        let p = Preferences { preferred_tier: Some("L1".into()), ..Default::default() };
        put_preferences(&conn, Some("ana"), &p, 1.0).unwrap();
        put_preferences(&conn, None, &Preferences { language: Some("en".into()), ..Default::default() }, 2.0).unwrap();
        assert_eq!(preferences(&conn, Some("ana")).unwrap(), Some((p, 1.0)));
        assert_eq!(preferences(&conn, Some("bo")).unwrap(), None);
        assert_eq!(preferences(&conn, None).unwrap().unwrap().0.language.as_deref(), Some("en"));
    }
}
