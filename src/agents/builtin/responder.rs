//! Responder: composes the final reply from an answer, the user's emotion
//! and a persona, and speaks it.
//!
//! `response.compose`: the emotion is the one given, else EmotionEngine's
//! reading of `user_text` (none when neither is given, or when EmotionEngine
//! fails: logged); the persona is the one named, else the session's
//! (DynamicIdentityAgent's, read from the store). When the emotion is not
//! `neutral` or a persona applies, EmpathyAgent rewrites the answer to fit
//! them (in the task's session, so the session's persona is in its prompt
//! too); otherwise the answer is the reply as given. `response.speak`
//! composes, then speaks the reply through StreamingTTSAgent (one audio
//! chunk per sentence, streamed to the caller) in the given voice, else the
//! persona's.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `response.compose` | `{"answer", "user_text"?, "emotion"?, "persona"?}` | `{"text", "emotion", "persona", "rewritten"}` |
//! | `response.speak` | as compose, and `"voice"?`, `"speed"?` | `{"text", "sentences", "duration_seconds", "sample_rate"}` |
//!
//! Errors: an unknown persona is `not_found`; EmpathyAgent's and
//! StreamingTTSAgent's errors are passed on.

use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::mood::Label;
use super::{Answer, Behaviour, Name, Text, extract_json, unknown_type};
use crate::agents::tasks::{RustTask, decode, encode, rust_task};
use crate::config::IdentitySettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::Store;
use crate::store::personas::{self, Persona};
use crate::supervisor::Peers;

/// The agent's name.
pub(crate) const AGENT: &str = "Responder";

/// The task types of Responder.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<ComposeInput, ComposeOutput>(
            "response.compose",
            "Composes the final reply from an answer, the user's detected emotion and the session's persona",
            || {
                vec![
                    json!({"answer": "Your flight is delayed by two hours; the new departure is 18:40.", "user_text": "Ugh, is my flight late again?"}),
                    json!({"answer": "The oven is preheated.", "emotion": {"label": "joy", "intensity": 0.4}}),
                ]
            },
        ),
        rust_task::<SpeakInput, SpeakOutput>(
            "response.speak",
            "Composes the final reply and speaks it through StreamingTTSAgent (audio streamed per sentence)",
            || vec![json!({"answer": "The oven is preheated. You can put the bread in now.", "voice": "en-us"})],
        ),
    ]
}

/// The Responder behaviour.
pub struct Responder {
    peers: Arc<dyn Peers>,
    store: Store,
    yaml: IdentitySettings,
}

impl Responder {
    /// The behaviour: EmotionEngine, EmpathyAgent and StreamingTTSAgent
    /// through `peers`; personas from `yaml` and `store`.
    pub fn new(peers: Arc<dyn Peers>, store: Store, yaml: IdentitySettings) -> Responder {
        Responder { peers, store, yaml }
    }

    fn sub(task: &Task, suffix: &str, task_type: &str, input: Value) -> Task {
        let mut t = Task::new(format!("{}-{suffix}", task.id), task_type, input);
        t.session = task.session.clone();
        t.user = task.user.clone();
        t.deadline = task.deadline;
        t.cancel = task.cancel.clone();
        t
    }

    async fn persona(&self, task: &Task, named: Option<String>) -> Result<Option<Persona>, TaskError> {
        let yaml = self.yaml.clone();
        let session = task.session.clone();
        let named2 = named.clone();
        let found = self
            .store
            .call(move |conn| match (named2, session) {
                (Some(n), _) => personas::get(conn, &yaml, &n),
                (None, Some(s)) => personas::of_session(conn, &yaml, &s),
                (None, None) => Ok(None),
            })
            .await
            .map_err(|e| TaskError::new(ErrorCode::Internal, format!("persona store: {e}")))?;
        match (found, named) {
            (None, Some(n)) => Err(TaskError::new(ErrorCode::NotFound, format!("no persona named {n:?}"))),
            (found, _) => Ok(found),
        }
    }

    async fn emotion(&self, task: &Task, given: Option<Emotion>, user_text: Option<Text>) -> Option<Emotion> {
        if given.is_some() {
            return given;
        }
        let text = user_text?.trimmed();
        let detect = Self::sub(task, "emotion", "emotion_detection", json!(text));
        match self.peers.call("EmotionEngine", detect).await {
            Ok(out) => {
                let v = match out.output {
                    Value::String(s) => extract_json(&s).unwrap_or(Value::Null),
                    v => v,
                };
                serde_json::from_value::<Emotion>(v.clone())
                    .inspect_err(|e| tracing::warn!(task_id = %task.id, output = %v, error = %e, "EmotionEngine's answer is not an emotion"))
                    .ok()
            }
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "no emotion detected");
                None
            }
        }
    }

    async fn compose(&self, task: &Task, c: Compose) -> Result<(ComposeOutput, Option<Persona>), TaskError> {
        let Compose { answer: Text(answer), user_text, emotion, persona } = c;
        let named = persona.map(|Name(n)| n);
        let explicit = named.is_some();
        let persona = self.persona(task, named).await?;
        let emotion = self.emotion(task, emotion, user_text).await.map(|mut e| {
            e.intensity = e.intensity.clamp(0.0, 1.0);
            e
        });
        let moved = emotion.as_ref().is_some_and(|e| e.label != Label::Neutral);
        if !moved && persona.is_none() {
            return Ok((ComposeOutput { text: answer, emotion, persona: None, rewritten: false }, None));
        }
        let detected = emotion.clone().unwrap_or(Emotion { label: Label::Neutral, intensity: 0.0 });
        // The session's persona reaches EmpathyAgent's prompt through the
        // session; a persona named here is spelled out in the request.
        let input = match (&persona, explicit) {
            (Some(p), true) => json!(format!(
                "Rewrite this reply in the voice of this persona: {}\nThe user feels {} (intensity {:.1}). Keep every fact and step.\nReply: {answer}",
                p.prompt(),
                detected.label.as_str(),
                detected.intensity
            )),
            _ => json!({"draft": answer, "emotion": detected}),
        };
        let out = self.peers.call("EmpathyAgent", Self::sub(task, "empathy", "empathy_rewrite", input)).await?;
        let text = match out.output {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            other => {
                return Err(TaskError::new(
                    ErrorCode::InvalidOutput,
                    format!("EmpathyAgent answered no text: {other}"),
                ));
            }
        };
        let name = persona.as_ref().map(|p| p.name.clone());
        Ok((ComposeOutput { text, emotion, persona: name, rewritten: true }, persona))
    }
}

#[async_trait]
impl Behaviour for Responder {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "response.compose" => {
                let ComposeInput { answer, user_text, emotion, persona } = decode(t, &task.input)?;
                encode(t, self.compose(&task, Compose { answer, user_text, emotion, persona }).await?.0)
            }
            "response.speak" => {
                let SpeakInput { answer, user_text, emotion, persona, voice, speed } = decode(t, &task.input)?;
                let (composed, persona) = self.compose(&task, Compose { answer, user_text, emotion, persona }).await?;
                let voice = voice.map(|Name(v)| v).or_else(|| persona.and_then(|p| p.voice));
                let mut input = json!({"text": composed.text});
                if let Some(v) = voice {
                    input["voice"] = json!(v);
                }
                if let Some(s) = speed {
                    input["speed"] = json!(s);
                }
                let mut speak = Self::sub(&task, "speak", "tts.stream", input);
                speak.chunks = task.chunks.clone();
                let out = self.peers.call("StreamingTTSAgent", speak).await?.output;
                encode(
                    t,
                    SpeakOutput {
                        text: composed.text,
                        sentences: out.get("sentences").and_then(Value::as_u64).unwrap_or(0),
                        duration_seconds: out.get("duration_seconds").and_then(Value::as_f64).unwrap_or(0.0),
                        sample_rate: out.get("sample_rate").and_then(Value::as_u64),
                    },
                )
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// An emotion as EmotionEngine answers it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Emotion {
    /// The emotion.
    label: Label,
    /// How strongly, 0–1.
    #[schemars(range(min = 0.0, max = 1.0))]
    intensity: f64,
}

/// What a reply is composed from (the common part of both inputs).
struct Compose {
    answer: Text,
    user_text: Option<Text>,
    emotion: Option<Emotion>,
    persona: Option<Name>,
}

/// A reply to compose.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeInput {
    /// The answer to deliver.
    answer: Text,
    /// The user's message; its emotion is detected (EmotionEngine) when `emotion` is not given.
    #[serde(default)]
    user_text: Option<Text>,
    /// The user's emotion, when already known.
    #[serde(default)]
    emotion: Option<Emotion>,
    /// A persona's name; default: the session's persona.
    #[serde(default)]
    persona: Option<Name>,
}

/// A reply to compose and speak.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpeakInput {
    /// The answer to deliver.
    answer: Text,
    /// The user's message; its emotion is detected (EmotionEngine) when `emotion` is not given.
    #[serde(default)]
    user_text: Option<Text>,
    /// The user's emotion, when already known.
    #[serde(default)]
    emotion: Option<Emotion>,
    /// A persona's name; default: the session's persona.
    #[serde(default)]
    persona: Option<Name>,
    /// An espeak-ng voice; default: the persona's voice.
    #[serde(default)]
    voice: Option<Name>,
    /// Speaking rate, words per minute, 80–450.
    #[serde(default)]
    #[schemars(range(min = 80, max = 450))]
    speed: Option<u32>,
}

/// The composed reply.
#[derive(Serialize, JsonSchema)]
struct ComposeOutput {
    /// The final reply.
    text: String,
    /// The user's emotion it was fitted to (null: none known).
    emotion: Option<Emotion>,
    /// The persona it speaks as (null: none).
    persona: Option<String>,
    /// Whether EmpathyAgent rewrote the answer (false: the answer as given).
    rewritten: bool,
}

/// The spoken reply.
#[derive(Serialize, JsonSchema)]
struct SpeakOutput {
    /// The final reply that was spoken.
    text: String,
    /// Audio chunks streamed, one per sentence.
    sentences: u64,
    /// Total length of the speech, seconds.
    duration_seconds: f64,
    /// Samples per second (Hz).
    sample_rate: Option<u64>,
}
