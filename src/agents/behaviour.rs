//! The behaviour of a builtin or llm agent: what the agent actor runs for
//! each task, and the small helpers every behaviour uses to read a task:
//! the errors, and the input pieces several behaviours share ([`Name`],
//! [`Text`], [`AgentInput`]).

use std::borrow::Cow;

use async_trait::async_trait;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

use super::tasks::Shorthand;
use crate::core::{ErrorCode, Task, TaskError, TaskReply};
use crate::supervisor::StartError;

/// What a builtin handler answers: its output, or an error.
pub(crate) type Answer = Result<Value, TaskError>;

/// A builtin behaviour. Tasks run concurrently (each in its own tokio
/// task), so handlers take `&self`; state lives behind interior mutability.
#[async_trait]
pub trait Behaviour: Send + Sync + 'static {
    /// Start hook, run in the actor's `pre_start` (bind sockets, open
    /// files). The agent is `running` only after it returned `Ok`.
    async fn start(&self) -> Result<(), StartError> {
        Ok(())
    }

    /// Answers one task with its output. Dropping the future
    /// (cancellation, deadline) must stop the work.
    async fn handle(&self, task: Task) -> Result<Value, TaskError>;

    /// Answers one task with its output and the route of its model call;
    /// behaviours that call a model override it (the default has no route).
    async fn reply(&self, task: Task) -> TaskReply {
        self.handle(task).await.map(Into::into)
    }

    /// Stop hook, run in the actor's `post_stop`.
    async fn stop(&self) {}
}

/// `unknown_task_type` error for a type this behaviour does not handle.
pub(crate) fn unknown_type(agent: &str, task: &Task) -> TaskError {
    TaskError::new(ErrorCode::UnknownTaskType, format!("{agent} does not handle task type {}", task.task_type))
}

/// Extracts the JSON object of a model answer (tolerating code fences and prose around it).
pub(crate) fn extract_json(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return Some(v);
    }
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// White space as JSON Schema patterns see it (ECMA-262 `\s`: Unicode `Zs`,
/// tab, line ends, BOM), so that [`Name`] and [`Text`] refuse what their
/// schema's `\S` refuses (Rust's `char::is_whitespace` differs on U+0085
/// and U+FEFF).
fn is_pattern_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | ' '
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
            | '\u{feff}'
    )
}

/// A name given in a task input (an agent, a model, a session): text with a
/// character other than white space; the white space around it is dropped.
///
/// Schema: `{"type": "string", "minLength": 1, "pattern": "\\S"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim_matches(is_pattern_space) {
            "" => Err(de::Error::custom("a name must have a character other than white space")),
            name => Ok(Name(name.to_string())),
        }
    }
}

impl JsonSchema for Name {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1, "pattern": "\\S"})
    }
}

/// Text given in a task input that must say something (a prompt, a text to
/// speak): a character other than white space; kept as given.
///
/// Schema: `{"type": "string", "minLength": 1, "pattern": "\\S"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl Text {
    /// The text without the white space around it.
    pub(crate) fn trimmed(&self) -> String {
        self.0.trim_matches(is_pattern_space).to_string()
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.chars().all(is_pattern_space) {
            return Err(de::Error::custom("the text must have a character other than white space"));
        }
        Ok(Text(text))
    }
}

impl JsonSchema for Text {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1, "pattern": "\\S"})
    }
}

/// The agent a task acts on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentInput {
    /// The agent's name, as in the catalog (e.g. `ChitchatAgent`).
    pub agent: Name,
}

impl Shorthand for AgentInput {
    type Short = Name;
    const SHORT_DESCRIPTION: &'static str = "The agent's name alone.";
    fn expand(agent: Name) -> AgentInput {
        AgentInput { agent }
    }
}

/// Nothing: `null` (the short form of an input whose fields are all optional).
pub(crate) struct Null;

impl<'de> Deserialize<'de> for Null {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <()>::deserialize(deserializer).map(|()| Null)
    }
}

impl JsonSchema for Null {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Null".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "null"})
    }
}

/// No input: `{}` or `null`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

impl Shorthand for Empty {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing.";
    fn expand(_: Null) -> Empty {
        Empty {}
    }
}

/// A behaviour's background task (a runner, a timer): started by the
/// behaviour's `start` (a restart's start aborts the previous one), aborted
/// by its `stop`.
#[derive(Default)]
pub(crate) struct Background(parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Background {
    /// Runs `task`, aborting the one started before, if any.
    pub(crate) fn start(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(old) = self.0.lock().replace(tokio::spawn(task)) {
            old.abort();
        }
    }

    /// Aborts the task, if any.
    pub(crate) fn stop(&self) {
        if let Some(task) = self.0.lock().take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Names and texts are refused exactly when their schema refuses them,
    /// on the white space where Rust and JSON Schema patterns differ too.
    #[test]
    fn blank_is_what_the_schema_pattern_says() {
        let name =
            jsonschema::draft202012::new(&Name::json_schema(&mut SchemaGenerator::default()).to_value()).unwrap();
        let text =
            jsonschema::draft202012::new(&Text::json_schema(&mut SchemaGenerator::default()).to_value()).unwrap();
        for s in ["", " ", "\t\n", "\u{a0}", "\u{feff}", "\u{3000} ", "\u{85}", "x", " x ", "\u{feff}x\u{2028}"] {
            let input = json!(s);
            let as_name = serde_json::from_value::<Name>(input.clone());
            assert_eq!(name.is_valid(&input), as_name.is_ok(), "{s:?}");
            assert_eq!(text.is_valid(&input), serde_json::from_value::<Text>(input.clone()).is_ok(), "{s:?}");
            if let Ok(Name(n)) = as_name {
                assert!(!n.is_empty() && !n.starts_with(is_pattern_space) && !n.ends_with(is_pattern_space), "{s:?}");
            }
        }
        assert_eq!(serde_json::from_value::<Name>(json!(" Chitchat\n")).unwrap(), Name("Chitchat".into()));
        assert_eq!(serde_json::from_value::<Text>(json!(" hi ")).unwrap(), Text(" hi ".into()));
    }
}
