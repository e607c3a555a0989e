//! The task envelope and the reply, as JSON on the wire (DESIGN §4), and
//! the decoder that turns one message body into a validated request or a
//! stable error code.
//!
//! Task (one JSON object; every field optional but `type` or `agent`):
//!
//! ```json
//! {"id": "c-1", "type": "utils.echo", "input": "hi", "agent": null, "priority": 5,
//!  "complexity": null, "prefer": null, "session": null, "user": null, "model": null,
//!  "deadline_ms": 30000, "stream": false, "push_to_front": false, "metadata": {},
//!  "token": null}
//! ```
//!
//! Cancel: `{"cancel": "<task id>"}` (optionally with its own `"id"` and a
//! `"token"`).
//!
//! `token` is the client's API token when the daemon asks for one
//! ([`crate::agents::auth`]): [`decode`] hands it out apart from the task,
//! so it never travels further than the ingress (no ledger, job, receipt,
//! event or log line holds it).
//!
//! Reply: `{"id", "status": "ok"|"error", "agent", "output", "route",
//! "timings_ms": {"queue", "start", "route", "backend", "total"}, "error":
//! {"code", "message"}}`; streamed pieces: `{"id", "event": "chunk", "seq",
//! "delta"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::{ErrorCode, TaskError};

/// Longest accepted client task id, characters.
pub(crate) const MAX_ID_CHARS: usize = 256;

pub use crate::core::Prefer;

/// The typed task envelope.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEnvelope {
    /// Client's id (string or integer on the wire); generated when absent.
    #[serde(default)]
    pub id: Option<Value>,
    /// Task type; selects the agent through the catalog's `handles`.
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// Text or JSON.
    #[serde(default)]
    pub input: Value,
    /// Names the agent directly.
    #[serde(default)]
    pub agent: Option<String>,
    /// 0–9, 9 highest; default 5.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Routing complexity 0.0–1.0 (used by model calls).
    #[serde(default)]
    pub complexity: Option<f64>,
    /// `local` or `cloud`.
    #[serde(default)]
    pub prefer: Option<Prefer>,
    /// Conversation session id.
    #[serde(default)]
    pub session: Option<String>,
    /// Who is asking (a user id; later a token's subject). Reaches the
    /// routing receipt.
    #[serde(default)]
    pub user: Option<String>,
    /// A backend model for this task's model calls: a backend name, a
    /// backend's model, or a GGUF file in `models_dir`.
    #[serde(default)]
    pub model: Option<String>,
    /// Milliseconds from receipt until the answer is due.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    /// Stream the answer in chunks.
    #[serde(default)]
    pub stream: bool,
    /// Urgent: a local model request goes before every queued one
    /// (ModelManagerSuite's `push_to_front`).
    #[serde(default)]
    pub push_to_front: bool,
    /// Free-form, echoed nowhere; for the client's own bookkeeping.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The client's API token (or web-UI session id).
    #[serde(default)]
    pub token: Option<String>,
}

fn default_priority() -> i64 {
    5
}

/// A decoded request and the credential it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The request.
    pub request: Request,
    /// The envelope's `token`, when given.
    pub token: Option<String>,
}

/// A decoded, validated request.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one task per message, moved not copied: a Box would add an allocation per task on the hot path"
)]
pub enum Request {
    /// A task to run.
    Task(ValidTask),
    /// Cancel a task of the same client.
    Cancel {
        /// The cancel message's own id, if it had one.
        id: Option<String>,
        /// The task to cancel.
        target: String,
    },
}

/// A task envelope that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTask {
    /// Client id, or `None` (the coordinator generates one).
    pub id: Option<String>,
    /// Task type (`auto` when only `agent` was given... see `agent`).
    pub task_type: Option<String>,
    /// Direct agent name.
    pub agent: Option<String>,
    /// Input.
    pub input: Value,
    /// 0–9.
    pub priority: u8,
    /// 0.0–1.0.
    pub complexity: Option<f64>,
    /// Preference.
    pub prefer: Option<Prefer>,
    /// Session.
    pub session: Option<String>,
    /// Who is asking.
    pub user: Option<String>,
    /// The backend model asked for (checked by the dispatcher).
    pub model: Option<String>,
    /// Milliseconds until due.
    pub deadline_ms: Option<u64>,
    /// Streaming wanted.
    pub stream: bool,
    /// Local model requests of this task go before every queued one.
    pub push_to_front: bool,
}

/// A request that could not be decoded: the code, the message, and the
/// client's id when it could still be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The client id, when readable.
    pub id: Option<String>,
    /// Why.
    pub error: TaskError,
}

fn reject(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Rejected {
    Rejected { id, error: TaskError::new(code, message) }
}

fn id_of(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Err("id must not be empty".into()),
        Value::String(s) if s.chars().count() > MAX_ID_CHARS => {
            Err(format!("id longer than {MAX_ID_CHARS} characters"))
        }
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        other => Err(format!("id must be a string or an integer, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes one message body of at most `max_bytes`.
///
/// # Errors
/// [`Rejected`] with `message_too_large`, `malformed_json` (not UTF-8 JSON),
/// or `invalid_field` (not an object, unknown key, wrong type, out of range,
/// neither `type` nor `agent`), naming the field and why.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<Decoded, Rejected> {
    if body.len() > max_bytes {
        return Err(reject(
            None,
            ErrorCode::MessageTooLarge,
            format!("message of {} bytes exceeds bus.max_message_bytes = {max_bytes}", body.len()),
        ));
    }
    // Fast path: a well-formed task envelope straight into its struct (no
    // JSON tree in between); anything else — a cancel, an error to explain —
    // takes the general path below.
    let parsed = match serde_json::from_slice::<TaskEnvelope>(body) {
        Ok(env) => match env.id.as_ref().map(id_of).transpose() {
            Ok(id) => Parsed::Task(env, id.flatten()),
            Err(why) => return Err(reject(None, ErrorCode::InvalidField, format!("field id: {why}"))),
        },
        Err(_) => parse_general(body)?,
    };
    let (env, id) = match parsed {
        Parsed::Task(env, id) => (env, id),
        Parsed::Cancel(cancel) => return Ok(cancel),
    };
    let invalid = |msg: String| reject(id.clone(), ErrorCode::InvalidField, msg);
    if !(0..=9).contains(&env.priority) {
        return Err(invalid(format!("field priority: {} is outside 0..=9", env.priority)));
    }
    if let Some(c) = env.complexity
        && !(0.0..=1.0).contains(&c)
    {
        return Err(invalid(format!("field complexity: {c} is outside 0.0..=1.0")));
    }
    let deadline_ms = match env.deadline_ms {
        None => None,
        Some(ms) if ms > 0 => Some(ms as u64),
        Some(ms) => return Err(invalid(format!("field deadline_ms: {ms} must be positive"))),
    };
    let non_empty = |field: &str, v: Option<String>| match v {
        Some(s) if s.trim().is_empty() => Err(invalid(format!("field {field}: must not be empty"))),
        other => Ok(other),
    };
    let task_type = non_empty("type", env.task_type)?;
    let agent = non_empty("agent", env.agent)?;
    if task_type.is_none() && agent.is_none() {
        return Err(invalid("field type: missing (give type, or agent, or both)".into()));
    }
    let session = non_empty("session", env.session)?;
    let user = non_empty("user", env.user)?;
    let model = non_empty("model", env.model)?;
    let task = Request::Task(ValidTask {
        id: id.clone(),
        task_type,
        agent,
        input: env.input,
        priority: env.priority as u8,
        complexity: env.complexity,
        prefer: env.prefer,
        session,
        user,
        model,
        deadline_ms,
        stream: env.stream,
        push_to_front: env.push_to_front,
    });
    Ok(Decoded { request: task, token: env.token })
}

/// What [`parse_general`] found.
enum Parsed {
    /// A task envelope and its id.
    Task(TaskEnvelope, Option<String>),
    /// A complete cancel request.
    Cancel(Decoded),
}

/// The general decoding path: a JSON tree first, so that a cancel is told
/// apart and every error names its field (and keeps the id for the reply).
fn parse_general(body: &[u8]) -> Result<Parsed, Rejected> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| reject(None, ErrorCode::MalformedJson, format!("body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(reject(
            None,
            ErrorCode::InvalidField,
            format!("envelope must be a JSON object, not {}", kind(&value)),
        ));
    };
    let id = match map.get("id").map(id_of).transpose() {
        Ok(id) => id.flatten(),
        Err(why) => return Err(reject(None, ErrorCode::InvalidField, format!("field id: {why}"))),
    };
    if let Some(target) = map.get("cancel") {
        if let Some(extra) = map.keys().find(|k| !matches!(k.as_str(), "cancel" | "id" | "token")) {
            return Err(reject(id, ErrorCode::InvalidField, format!("field {extra}: not allowed in a cancel message")));
        }
        let token = match map.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(other) => {
                return Err(reject(id, ErrorCode::InvalidField, format!("field token: a string, not {}", kind(other))));
            }
        };
        return match id_of(target) {
            Ok(Some(target)) => Ok(Parsed::Cancel(Decoded { request: Request::Cancel { id, target }, token })),
            Ok(None) => Err(reject(id, ErrorCode::InvalidField, "field cancel: the id of the task to cancel")),
            Err(why) => Err(reject(id, ErrorCode::InvalidField, format!("field cancel: {why}"))),
        };
    }
    let env: TaskEnvelope = serde_json::from_value(Value::Object(map))
        .map_err(|e| reject(id.clone(), ErrorCode::InvalidField, format!("envelope: {e}")))?;
    Ok(Parsed::Task(env, id))
}

/// Milliseconds spent in each phase of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting in the admission queue.
    pub queue: f64,
    /// Starting the agent on demand (0 when it was running).
    pub start: f64,
    /// Routing decision (model calls; 0 otherwise).
    pub route: f64,
    /// The agent's work.
    pub backend: f64,
    /// Receipt to reply.
    pub total: f64,
}

/// The reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The task id (client's or generated); `null` when unreadable.
    pub id: Option<String>,
    /// `ok` or `error`.
    pub status: String,
    /// The agent that answered, when one was chosen.
    pub agent: Option<String>,
    /// The answer (on `ok`).
    pub output: Option<Value>,
    /// The routing receipt of model calls, when there was one.
    pub route: Option<Value>,
    /// Phase timings, when the task was accepted.
    pub timings_ms: Option<Timings>,
    /// `{"code", "message"}` (on `error`).
    pub error: Option<TaskError>,
}

impl Reply {
    /// A success reply.
    pub fn ok(id: String, agent: String, output: Value, timings: Timings) -> Reply {
        Reply {
            id: Some(id),
            status: "ok".into(),
            agent: Some(agent),
            output: Some(output),
            route: None,
            timings_ms: Some(timings),
            error: None,
        }
    }

    /// An error reply.
    pub fn error(id: Option<String>, agent: Option<String>, error: TaskError, timings: Option<Timings>) -> Reply {
        Reply { id, status: "error".into(), agent, output: None, route: None, timings_ms: timings, error: Some(error) }
    }

    /// JSON bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"status\":\"error\"}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(body: &[u8]) -> ErrorCode {
        decode(body, 1024).unwrap_err().error.code
    }

    #[test]
    fn valid_task_and_cancel() {
        let r =
            decode(br#"{"id": 7, "type": "utils.echo", "input": "hi", "priority": 9, "stream": true}"#, 1024).unwrap();
        assert_eq!(r.token, None);
        let Request::Task(t) = r.request else { panic!() };
        assert_eq!((t.id.as_deref(), t.priority, t.stream), (Some("7"), 9, true));
        assert_eq!(
            decode(br#"{"cancel": "a1", "token": "av_t"}"#, 1024).unwrap(),
            Decoded { request: Request::Cancel { id: None, target: "a1".into() }, token: Some("av_t".into()) }
        );
        let r = decode(br#"{"type": "utils.echo", "token": "av_t"}"#, 1024).unwrap();
        assert_eq!(r.token.as_deref(), Some("av_t"));
    }

    #[test]
    fn codes_for_bad_input() {
        assert_eq!(code(b"{"), ErrorCode::MalformedJson);
        assert_eq!(code(b"\xff\xfe"), ErrorCode::MalformedJson);
        assert_eq!(code(b"[1]"), ErrorCode::InvalidField);
        assert_eq!(code(br#"{"type": "x", "priority": 10}"#), ErrorCode::InvalidField);
        assert_eq!(code(br#"{"type": "x", "bogus": 1}"#), ErrorCode::InvalidField);
        assert_eq!(code(br#"{"input": 1}"#), ErrorCode::InvalidField);
        assert_eq!(decode(&[b' '; 2000], 1024).unwrap_err().error.code, ErrorCode::MessageTooLarge);
        let r = decode(br#"{"id": "k", "type": 3}"#, 1024).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("k"), "the id is kept for the error reply");
        assert!(r.error.message.contains("invalid type"), "{}", r.error.message);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, 256);
        }

        #[test]
        fn decoder_never_panics_on_json_objects(
            keys in proptest::collection::vec("[a-z_]{0,12}", 0..8),
            vals in proptest::collection::vec(prop_oneof![
                Just(Value::Null), any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from), ".{0,20}".prop_map(Value::from),
            ], 0..8),
        ) {
            let map: Map<String, Value> = keys.into_iter().zip(vals).collect();
            let body = serde_json::to_vec(&Value::Object(map)).unwrap();
            let _ = decode(&body, 4096);
        }
    }
}
