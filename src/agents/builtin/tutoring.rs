//! TutoringAgent: tutoring sessions per learner (the envelope's `user`;
//! anonymous when absent) and topic. Questions and their expected answers
//! come from TutorAgent (asked for JSON `{"question", "expected_answer"}`);
//! TutorAgent grades each answer against the expected one (JSON
//! `{"correct", "feedback"}`). The learner's mastery of the topic is a
//! running score, `m ← (1 − α)·m + α·(1 if correct else 0)` with α =
//! [`ALPHA`], starting at [`START_MASTERY`]; it picks the next question's
//! difficulty: below [`EASY_BELOW`] easy, below [`HARD_FROM`] medium, else hard.
//!
//! State: `tutoring_sessions` and `tutoring_mastery` ([`crate::store::tutoring`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `tutoring.session_start` | `{"topic", "difficulty"?}` | `{"session_id", "topic", "question", "mastery"}` |
//! | `tutoring.progress` | `{"session_id", "answer"?}` | the grading, the next question, the score |
//! | `tutoring.session_end` | `{"session_id"}` | the score, mastery and a summary |
//!
//! Errors: an unknown session is `not_found`; an answer to an ended
//! session is `invalid_field`; TutorAgent's answer without the JSON asked
//! for is `invalid_output`.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Behaviour, Name, Text, extract_json, unknown_type};
use crate::agents::tasks::{RustTask, decode, encode, rust_task};
use crate::core::{ErrorCode, Task, TaskError, unix_time};
use crate::store::{Store, StoreError};
use crate::supervisor::Peers;

/// The agent's name.
pub(crate) const AGENT: &str = "TutoringAgent";

/// Weight of the newest answer in the running mastery score.
pub(crate) const ALPHA: f64 = 0.3;
/// A topic's mastery before any answer.
pub(crate) const START_MASTERY: f64 = 0.5;
/// Mastery below this: easy questions.
pub(crate) const EASY_BELOW: f64 = 0.4;
/// Mastery from this: hard questions.
pub(crate) const HARD_FROM: f64 = 0.7;

/// The task types of TutoringAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<StartInput, StartOutput>(
            "tutoring.session_start",
            "Starts a tutoring session on a topic for the asking learner; answers the first question (from TutorAgent)",
            || {
                vec![
                    json!({"topic": "fractions: adding and subtracting"}),
                    json!({"topic": "Spanish past tense", "difficulty": "easy"}),
                ]
            },
        ),
        rust_task::<ProgressInput, ProgressOutput>(
            "tutoring.progress",
            "Answers the current question (graded by TutorAgent, then the next, easier or harder) or, with no answer, shows progress",
            || vec![json!({"session_id": "tut-5", "answer": "5/6"}), json!({"session_id": "tut-5"})],
        ),
        rust_task::<SessionInput, EndOutput>(
            "tutoring.session_end",
            "Ends a tutoring session; answers a summary with the score and the topic's mastery",
            || vec![json!({"session_id": "tut-5"})],
        ),
    ]
}

/// The TutoringAgent behaviour.
pub struct Tutoring {
    peers: Arc<dyn Peers>,
    store: Store,
}

impl Tutoring {
    /// The behaviour: TutorAgent through `peers`, sessions in `store`.
    pub fn new(peers: Arc<dyn Peers>, store: Store) -> Tutoring {
        Tutoring { peers, store }
    }

    /// Asks TutorAgent `prompt` and reads the JSON object of its answer.
    async fn ask_tutor(&self, task: &Task, suffix: &str, prompt: String) -> Result<Value, TaskError> {
        let mut t = Task::new(format!("{}-{suffix}", task.id), "tutoring", json!(prompt));
        t.user = task.user.clone();
        t.deadline = task.deadline;
        t.cancel = task.cancel.clone();
        let out = self.peers.call("TutorAgent", t).await?.output;
        let text = match &out {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        extract_json(&text).ok_or_else(|| {
            TaskError::new(ErrorCode::InvalidOutput, format!("TutorAgent answered no JSON object: {text}"))
        })
    }

    async fn question(&self, task: &Task, topic: &str, difficulty: Difficulty, n: u32) -> Result<Current, TaskError> {
        let v = self
            .ask_tutor(
                task,
                &format!("q{n}"),
                format!(
                    "Write one {} question about {topic} that has a short, checkable answer. Answer with only a JSON \
                     object {{\"question\": \"...\", \"expected_answer\": \"...\"}}.",
                    difficulty.as_str()
                ),
            )
            .await?;
        let (Some(text), Some(expected)) = (
            v.get("question").and_then(Value::as_str).filter(|s| !s.trim().is_empty()),
            v.get("expected_answer").map(|e| match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        ) else {
            return Err(TaskError::new(ErrorCode::InvalidOutput, format!("TutorAgent's question is incomplete: {v}")));
        };
        Ok(Current {
            question_id: format!("q{n}"),
            text: text.trim().to_string(),
            difficulty,
            expected_answer: expected,
        })
    }

    async fn mastery(&self, learner: &str, topic: &str) -> Result<f64, TaskError> {
        let (l, t) = (learner.to_string(), topic.to_string());
        Ok(self
            .store
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT mastery FROM tutoring_mastery WHERE learner = ?1 AND topic = ?2",
                        params![l, t],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await
            .map_err(store_error)?
            .unwrap_or(START_MASTERY))
    }

    async fn session(&self, id: &str) -> Result<Session, TaskError> {
        let i = id.to_string();
        self.store
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, learner, topic, started_at, ended_at, asked, correct, current FROM tutoring_sessions WHERE id = ?1",
                        params![i],
                        |r| {
                            let current: Option<String> = r.get(7)?;
                            Ok(Session {
                                id: r.get(0)?,
                                learner: r.get(1)?,
                                topic: r.get(2)?,
                                started_at: r.get(3)?,
                                ended_at: r.get(4)?,
                                asked: r.get(5)?,
                                correct: r.get(6)?,
                                current: current.and_then(|c| serde_json::from_str(&c).ok()),
                            })
                        },
                    )
                    .optional()?)
            })
            .await
            .map_err(store_error)?
            .ok_or_else(|| TaskError::new(ErrorCode::NotFound, format!("no tutoring session {id:?}")))
    }

    async fn save(&self, s: &Session, mastery: Option<f64>) -> Result<(), TaskError> {
        let s = s.clone();
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO tutoring_sessions (id, learner, topic, started_at, ended_at, asked, correct, current)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(id) DO UPDATE SET ended_at = ?5, asked = ?6, correct = ?7, current = ?8",
                    params![
                        s.id,
                        s.learner,
                        s.topic,
                        s.started_at,
                        s.ended_at,
                        s.asked,
                        s.correct,
                        s.current.as_ref().and_then(|c| serde_json::to_string(c).ok())
                    ],
                )?;
                if let Some(m) = mastery {
                    tx.execute(
                        "INSERT INTO tutoring_mastery (learner, topic, mastery, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(learner, topic) DO UPDATE SET mastery = ?3, updated_at = ?4",
                        params![s.learner, s.topic, m, unix_time()],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("tutoring store: {e}"))
}

#[async_trait]
impl Behaviour for Tutoring {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let learner = task.user.clone().unwrap_or_default();
        match t {
            "tutoring.session_start" => {
                let StartInput { topic, difficulty } = decode(t, &task.input)?;
                let topic = topic.trimmed();
                let mastery = self.mastery(&learner, &topic).await?;
                let difficulty = difficulty.unwrap_or_else(|| Difficulty::for_mastery(mastery));
                let q = self.question(&task, &topic, difficulty, 1).await?;
                let s = Session {
                    id: format!("tut-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                    learner,
                    topic: topic.clone(),
                    started_at: unix_time(),
                    ended_at: None,
                    asked: 1,
                    correct: 0,
                    current: Some(q.clone()),
                };
                self.save(&s, None).await?;
                tracing::info!(session = %s.id, topic, "tutoring session started");
                encode(t, StartOutput { session_id: s.id, topic, question: q.public(), mastery })
            }
            "tutoring.progress" => {
                let ProgressInput { session_id: Name(id), answer } = decode(t, &task.input)?;
                let mut s = self.session(&id).await?;
                let mut mastery = self.mastery(&s.learner, &s.topic).await?;
                let Some(answer) = answer else {
                    return encode(
                        t,
                        ProgressOutput {
                            session_id: s.id,
                            topic: s.topic,
                            graded: None,
                            next_question: s.current.as_ref().filter(|_| s.ended_at.is_none()).map(Current::public),
                            mastery,
                            questions_asked: s.asked,
                            correct_answers: s.correct,
                        },
                    );
                };
                let (None, Some(current)) = (s.ended_at, s.current.clone()) else {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of tutoring.progress at /session_id: session {id:?} has ended"),
                    ));
                };
                let v = self
                    .ask_tutor(
                        &task,
                        &format!("grade{}", s.asked),
                        format!(
                            "Grade a learner's answer. Question: {}\nExpected answer: {}\nLearner's answer: {}\n\
                             Is the learner's answer correct (same meaning as the expected answer)? Answer with only a \
                             JSON object {{\"correct\": true or false, \"feedback\": \"one short sentence\"}}.",
                            current.text,
                            current.expected_answer,
                            answer.trimmed()
                        ),
                    )
                    .await?;
                let correct = v.get("correct").and_then(Value::as_bool).ok_or_else(|| {
                    TaskError::new(ErrorCode::InvalidOutput, format!("TutorAgent's grading has no `correct`: {v}"))
                })?;
                let feedback = v.get("feedback").and_then(Value::as_str).unwrap_or_default().to_string();
                mastery = (1.0 - ALPHA) * mastery + ALPHA * if correct { 1.0 } else { 0.0 };
                if correct {
                    s.correct += 1;
                }
                let next = self.question(&task, &s.topic, Difficulty::for_mastery(mastery), s.asked + 1).await?;
                s.asked += 1;
                s.current = Some(next.clone());
                self.save(&s, Some(mastery)).await?;
                encode(
                    t,
                    ProgressOutput {
                        session_id: s.id,
                        topic: s.topic,
                        graded: Some(Graded { correct, feedback, expected_answer: Some(current.expected_answer) }),
                        next_question: Some(next.public()),
                        mastery,
                        questions_asked: s.asked,
                        correct_answers: s.correct,
                    },
                )
            }
            "tutoring.session_end" => {
                let SessionInput { session_id: Name(id) } = decode(t, &task.input)?;
                let mut s = self.session(&id).await?;
                let mastery = self.mastery(&s.learner, &s.topic).await?;
                let ended = *s.ended_at.get_or_insert_with(unix_time);
                // The last question asked was never answered: it does not count.
                let answered = if s.current.is_some() { s.asked.saturating_sub(1) } else { s.asked };
                s.current = None;
                s.asked = answered;
                self.save(&s, None).await?;
                let next = Difficulty::for_mastery(mastery);
                let summary = format!(
                    "{} of {} answers correct on {}; mastery {:.0} %. Practise {} questions next.",
                    s.correct,
                    answered,
                    s.topic,
                    mastery * 100.0,
                    next.as_str()
                );
                encode(
                    t,
                    EndOutput {
                        session_id: s.id,
                        topic: s.topic,
                        questions_asked: answered,
                        correct_answers: s.correct,
                        mastery,
                        summary,
                        duration_seconds: (ended - s.started_at).max(0.0),
                    },
                )
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// A session as stored.
#[derive(Clone)]
struct Session {
    id: String,
    learner: String,
    topic: String,
    started_at: f64,
    ended_at: Option<f64>,
    asked: u32,
    correct: u32,
    current: Option<Current>,
}

/// The current question with its expected answer (kept from the learner).
#[derive(Clone, Serialize, Deserialize)]
struct Current {
    question_id: String,
    text: String,
    difficulty: Difficulty,
    expected_answer: String,
}

impl Current {
    fn public(&self) -> Question {
        Question { question_id: self.question_id.clone(), text: self.text.clone(), difficulty: self.difficulty }
    }
}

/// A question's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Difficulty {
    /// Easy.
    Easy,
    /// Medium.
    Medium,
    /// Hard.
    Hard,
}

impl Difficulty {
    fn as_str(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }
    fn for_mastery(m: f64) -> Difficulty {
        if m < EASY_BELOW {
            Difficulty::Easy
        } else if m < HARD_FROM {
            Difficulty::Medium
        } else {
            Difficulty::Hard
        }
    }
}

/// A tutoring session to start for the asking learner.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StartInput {
    /// The topic.
    topic: Text,
    /// The first question's level; default: from the learner's mastery of the topic.
    #[serde(default)]
    difficulty: Option<Difficulty>,
}

/// A question.
#[derive(Serialize, JsonSchema)]
struct Question {
    /// Its id in the session (`q1`, `q2`, ...).
    question_id: String,
    /// The question.
    text: String,
    /// Its level.
    difficulty: Difficulty,
}

/// The session started.
#[derive(Serialize, JsonSchema)]
struct StartOutput {
    /// The session's id (`tut-…`).
    session_id: String,
    /// The topic.
    topic: String,
    /// The first question.
    question: Question,
    /// The learner's running score on this topic, 0–1.
    mastery: f64,
}

/// An answer to the current question, or nothing (progress only).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProgressInput {
    /// The session's id.
    session_id: Name,
    /// The learner's answer to the current question.
    #[serde(default)]
    answer: Option<Text>,
}

/// The grading of an answer.
#[derive(Serialize, JsonSchema)]
struct Graded {
    /// Whether it was right.
    correct: bool,
    /// TutorAgent's feedback.
    feedback: String,
    /// The expected answer.
    expected_answer: Option<String>,
}

/// The session's progress.
#[derive(Serialize, JsonSchema)]
struct ProgressOutput {
    /// The session's id.
    session_id: String,
    /// The topic.
    topic: String,
    /// The grading of the answer given; null when none was given.
    graded: Option<Graded>,
    /// The question to answer now (null: the session has ended).
    next_question: Option<Question>,
    /// The learner's running score on this topic, 0–1.
    mastery: f64,
    /// Questions asked so far.
    questions_asked: u32,
    /// Answers graded correct.
    correct_answers: u32,
}

/// A session.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    /// The session's id.
    session_id: Name,
}

/// The session's summary.
#[derive(Serialize, JsonSchema)]
struct EndOutput {
    /// The session's id.
    session_id: String,
    /// The topic.
    topic: String,
    /// Questions answered.
    questions_asked: u32,
    /// Answers graded correct.
    correct_answers: u32,
    /// The learner's running score on this topic, 0–1.
    mastery: f64,
    /// What went well and what to practise next.
    summary: String,
    /// Length of the session, seconds.
    duration_seconds: f64,
}
