//! DynamicIdentityAgent: personas (a system prompt, a voice, a tone), defined
//! in YAML (the settings' `identity.personas`, read-only) or created by
//! task, and the persona each session uses. The llm runtime
//! ([`crate::agents::llm`]) reads a session's persona from the store and
//! puts it first in the prompt of every llm agent answering in that session.
//!
//! State: the `personas` and `session_personas` tables ([`crate::store::personas`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `identity.set` | `{"persona", "definition"?: {"system_prompt", "voice"?, "tone"?}, "session"?}` (at least one of the last two) | `{"persona": {...}, "session"}` |
//! | `identity.get` | `{"persona"}` or `{"session"}` | `{"persona": {...} or null, "session"}` |
//! | `identity.list` | nothing | `{"personas": [...]}` |
//!
//! Errors: an unknown persona is `not_found`; a definition for a persona
//! defined in YAML is `invalid_field` (read-only).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Answer, Behaviour, Empty, Name, Text, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, decode, encode, rust_task};
use crate::config::IdentitySettings;
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::store::personas::{self, Persona, PersonaSource};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "DynamicIdentityAgent";

/// The task types of DynamicIdentityAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<SetInput, SetOutput>(
            "identity.set",
            "Creates or updates a persona (system prompt, voice, tone) and/or makes it a session's persona",
            || {
                vec![
                    json!({"persona": "coach", "definition": {"system_prompt": "You are an upbeat fitness coach; keep answers short and encouraging.", "voice": "en-us", "tone": "friendly"}, "session": "gym-42"}),
                    json!({"persona": "butler", "session": "kitchen-1"}),
                ]
            },
        ),
        rust_task::<GetInput, GetOutput>("identity.get", "A persona by name, or the persona a session uses", || {
            vec![json!({"session": "gym-42"}), json!({"persona": "coach"})]
        }),
        rust_task::<OrShort<Empty>, ListOutput>(
            "identity.list",
            "Every persona, from YAML and created by task",
            || vec![json!({}), json!(null)],
        ),
    ]
}

/// The DynamicIdentityAgent behaviour.
pub struct DynamicIdentity {
    store: Store,
    yaml: IdentitySettings,
    events: EventBus,
    metrics: Metrics,
}

impl DynamicIdentity {
    /// The behaviour: personas of `yaml` and of `store`.
    pub fn new(store: Store, yaml: IdentitySettings, events: EventBus, metrics: Metrics) -> DynamicIdentity {
        DynamicIdentity { store, yaml, events, metrics }
    }

    async fn persona(&self, name: &str) -> Result<Persona, TaskError> {
        let (yaml, n) = (self.yaml.clone(), name.to_string());
        self.store
            .call(move |conn| personas::get(conn, &yaml, &n))
            .await
            .map_err(store_error)?
            .ok_or_else(|| TaskError::new(ErrorCode::NotFound, format!("no persona named {name:?}")))
    }

    async fn set(&self, input: SetInput) -> Result<SetOutput, TaskError> {
        let SetInput { persona: Name(name), session, definition } = input;
        if session.is_none() && definition.is_none() {
            return Err(TaskError::new(
                ErrorCode::InvalidField,
                "input of identity.set at the top level: give `session`, `definition` or both",
            ));
        }
        let now = unix_time();
        let created = definition.is_some();
        if let Some(Definition { system_prompt, voice, tone }) = definition {
            if self.yaml.personas.contains_key(&name) {
                return Err(TaskError::new(
                    ErrorCode::InvalidField,
                    format!("input of identity.set at /persona: {name:?} is defined in YAML and is read-only"),
                ));
            }
            let p = Persona {
                name: name.clone(),
                system_prompt: system_prompt.trimmed(),
                voice: voice.map(|Name(v)| v),
                tone: tone.map(|Name(t)| t),
                source: PersonaSource::Task,
            };
            self.store.call(move |conn| personas::put(conn, &p, now)).await.map_err(store_error)?;
        }
        let persona = self.persona(&name).await?;
        let session = session.map(|Name(s)| s);
        if let Some(s) = session.clone() {
            let n = name.clone();
            self.store.call(move |conn| personas::set_session(conn, &s, &n, now)).await.map_err(store_error)?;
        }
        self.metrics.persona_changes.with_label_values(&[if created { "defined" } else { "switched" }]).inc();
        self.events.emit(Event::PersonaSet { persona: name, session: session.clone(), defined: created });
        Ok(SetOutput { persona, session })
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("persona store: {e}"))
}

#[async_trait]
impl Behaviour for DynamicIdentity {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "identity.set" => encode(t, self.set(decode(t, &task.input)?).await?),
            "identity.get" => {
                let GetInput { persona, session } = decode(t, &task.input)?;
                match (persona, session) {
                    (Some(Name(p)), None) => {
                        encode(t, GetOutput { persona: Some(self.persona(&p).await?), session: None })
                    }
                    (None, Some(Name(s))) => {
                        let (yaml, s2) = (self.yaml.clone(), s.clone());
                        let persona = self
                            .store
                            .call(move |conn| personas::of_session(conn, &yaml, &s2))
                            .await
                            .map_err(store_error)?;
                        encode(t, GetOutput { persona, session: Some(s) })
                    }
                    _ => Err(TaskError::new(
                        ErrorCode::InvalidField,
                        "input of identity.get at the top level: give exactly one of `persona` and `session`",
                    )),
                }
            }
            "identity.list" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                let yaml = self.yaml.clone();
                let personas = self.store.call(move |conn| personas::list(conn, &yaml)).await.map_err(store_error)?;
                encode(t, ListOutput { personas })
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// Creates or updates a persona and/or makes it a session's persona (at
/// least one of `session` and `definition`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["session"]}, {"required": ["definition"]}]))]
struct SetInput {
    /// The persona's name.
    persona: Name,
    /// Use this persona for every llm agent of this session.
    #[serde(default)]
    session: Option<Name>,
    /// Create the persona, or replace a task-created one (personas defined
    /// in YAML are read-only).
    #[serde(default)]
    definition: Option<Definition>,
}

/// A persona's definition.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Definition {
    /// Put before every llm agent's own system prompt.
    system_prompt: Text,
    /// TTS voice, e.g. `en-us`.
    #[serde(default)]
    voice: Option<Name>,
    /// Tone, e.g. `friendly`, `formal`.
    #[serde(default)]
    tone: Option<Name>,
}

/// The persona, and the session now using it.
#[derive(Serialize, JsonSchema)]
struct SetOutput {
    /// The persona as stored.
    persona: Persona,
    /// The session now using it, when one was given.
    session: Option<String>,
}

/// A persona by name, or the persona a session uses (exactly one of the two).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["persona"]}, {"required": ["session"]}]))]
struct GetInput {
    /// The persona's name.
    #[serde(default)]
    persona: Option<Name>,
    /// A session id.
    #[serde(default)]
    session: Option<Name>,
}

/// A persona (null: the session has none).
#[derive(Serialize, JsonSchema)]
struct GetOutput {
    /// The persona; null when the session has none.
    persona: Option<Persona>,
    /// The session asked about, if one was.
    session: Option<String>,
}

/// Every persona.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// YAML personas first, then those created by task, by name.
    personas: Vec<Persona>,
}
