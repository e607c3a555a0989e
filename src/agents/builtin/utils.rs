//! UnifiedUtilsAgent: small utilities. Stateless.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `utils.echo` | any JSON | the input; with `stream: true`, a text input streams word by word |
//! | `utils.time` | ignored | `{"unix_seconds": f64, "rfc3339": "2026-11-22T00:00:00.000Z"}` |
//! | `utils.uuid` | ignored | `{"uuid": "<v4>"}` |
//! | `utils.hash` | text, or `{"text": ..., "algorithm": "sha256"}` | `{"algorithm": "sha256", "hex": "<64 hex digits>", "bytes": n}` |
//! | `utils.sleep` | seconds (number or numeric text, 0–300) or `{"seconds": s}` | `{"slept_seconds": s}`; cancellable |
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{Ignored, OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::Task;

/// Longest `utils.sleep`, seconds.
const MAX_SLEEP_SECS: f64 = 300.0;

/// The task types of UnifiedUtilsAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<EchoInput, EchoOutput>(
            "utils.echo",
            "Answers with its input; a text input streams back word by word",
            || vec![json!("hello"), json!({"any": ["json", 1, true]})],
        ),
        rust_task::<Ignored, TimeOutput>("utils.time", "The current time, as Unix seconds and RFC 3339 text", || {
            vec![Value::Null]
        }),
        rust_task::<Ignored, UuidOutput>("utils.uuid", "A new random UUID (version 4)", || vec![Value::Null]),
        rust_task::<OrShort<HashInput>, HashOutput>("utils.hash", "The SHA-256 digest of a text", || {
            vec![json!("abc"), json!({"text": "abc", "algorithm": "sha256"})]
        }),
        rust_task::<OrShort<SleepInput>, SleepOutput>("utils.sleep", "Waits the given seconds (cancellable)", || {
            vec![json!(0.01), json!({"seconds": 0.01}), json!("0.01")]
        }),
    ]
}

/// The UnifiedUtilsAgent behaviour.
pub struct Utils;

#[async_trait]
impl Behaviour for Utils {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "utils.echo" => {
                let input: EchoInput = decode(t, &task.input)?;
                encode(t, echo(&task, input))
            }
            "utils.time" => {
                let Ignored = decode(t, &task.input)?;
                encode(t, time())
            }
            "utils.uuid" => {
                let Ignored = decode(t, &task.input)?;
                encode(t, UuidOutput { uuid: uuid::Uuid::new_v4().to_string() })
            }
            "utils.hash" => {
                let OrShort(input) = decode(t, &task.input)?;
                encode(t, hash(input))
            }
            "utils.sleep" => {
                let OrShort(SleepInput { seconds: Seconds(secs) }) = decode(t, &task.input)?;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                encode(t, SleepOutput { slept_seconds: secs })
            }
            _ => Err(unknown_type("UnifiedUtilsAgent", &task)),
        }
    }
}

/// Any JSON value. With `stream: true`, a text comes back word by word (each
/// piece keeps its trailing space).
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
struct EchoInput(Value);

/// The input, unchanged.
#[derive(Serialize, JsonSchema)]
#[serde(transparent)]
struct EchoOutput(Value);

fn echo(task: &Task, EchoInput(input): EchoInput) -> EchoOutput {
    if let (Some(_), Value::String(text)) = (&task.chunks, &input) {
        for word in text.split_inclusive(' ') {
            task.emit(word);
        }
    }
    EchoOutput(input)
}

/// The current time, in two notations.
#[derive(Serialize, JsonSchema)]
struct TimeOutput {
    /// Seconds since the Unix epoch (UTC), with fractions.
    unix_seconds: f64,
    /// The same instant as RFC 3339 text in UTC, milliseconds included,
    /// e.g. `2026-11-22T00:00:00.000Z`.
    rfc3339: String,
}

fn time() -> TimeOutput {
    let now = SystemTime::now();
    // A clock before 1970 reads as the epoch.
    let unix_seconds = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    TimeOutput { unix_seconds, rfc3339: humantime::format_rfc3339_millis(now).to_string() }
}

/// A new UUID.
#[derive(Serialize, JsonSchema)]
struct UuidOutput {
    /// A new random UUID (version 4), hyphenated lowercase hex.
    #[schemars(extend("format" = "uuid"))]
    uuid: String,
}

/// The text to digest and the algorithm.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HashInput {
    /// The text to digest (its UTF-8 bytes).
    text: String,
    /// Digest algorithm (default `sha256`).
    #[serde(default)]
    algorithm: Algorithm,
}

impl Shorthand for HashInput {
    type Short = String;
    const SHORT_DESCRIPTION: &'static str = "The text alone; the algorithm is sha256.";
    fn expand(text: String) -> HashInput {
        HashInput { text, algorithm: Algorithm::default() }
    }
}

/// A digest algorithm: `sha256` (FIPS 180-4) only, today.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Algorithm {
    #[default]
    Sha256,
}

/// The digest of the text.
#[derive(Serialize, JsonSchema)]
struct HashOutput {
    /// The algorithm used.
    algorithm: Algorithm,
    /// The digest, lowercase hex (64 digits for sha256).
    hex: String,
    /// Length of the digested text, bytes (UTF-8).
    bytes: usize,
}

fn hash(HashInput { text, algorithm }: HashInput) -> HashOutput {
    let digest = match algorithm {
        Algorithm::Sha256 => Sha256::digest(text.as_bytes()),
    };
    HashOutput { algorithm, hex: hex::encode(digest), bytes: text.len() }
}

/// How long to sleep.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    /// Seconds to sleep, 0–300, fractions allowed.
    seconds: Seconds,
}

impl Shorthand for SleepInput {
    type Short = BareSeconds;
    const SHORT_DESCRIPTION: &'static str = "The seconds alone: a number, or numeric text such as \"0.5\".";
    fn expand(BareSeconds(seconds): BareSeconds) -> SleepInput {
        SleepInput { seconds }
    }
}

/// How long the task slept.
#[derive(Serialize, JsonSchema)]
struct SleepOutput {
    /// Seconds slept, as asked.
    slept_seconds: f64,
}

/// A sleep length: a JSON number of seconds within 0–300.
struct Seconds(f64);

impl Seconds {
    fn new<E: de::Error>(secs: f64) -> Result<Seconds, E> {
        if (0.0..=MAX_SLEEP_SECS).contains(&secs) {
            Ok(Seconds(secs))
        } else {
            Err(E::custom(format!("seconds must be within 0..={MAX_SLEEP_SECS}, got {secs}")))
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Seconds::new(f64::deserialize(deserializer)?)
    }
}

impl JsonSchema for Seconds {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Seconds".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECS})
    }
}

/// The short form of `utils.sleep`: seconds as a number or as numeric text
/// (kept for clients that send `"0.5"`).
struct BareSeconds(Seconds);

/// Numeric text within 0–300 that `str::parse::<f64>` reads (after trimming).
const SECONDS_TEXT_PATTERN: &str = r"^\s*(300(\.0+)?|(1[0-9]{2}|2[0-9]{2}|[0-9]{1,2})(\.[0-9]+)?)\s*$";

impl<'de> Deserialize<'de> for BareSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberOrText;
        impl Visitor<'_> for NumberOrText {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("seconds, as a number or numeric text")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::new(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::new(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Seconds::new(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                let secs = v.trim().parse().map_err(|_| E::invalid_value(Unexpected::Str(v), &self))?;
                Seconds::new(secs)
            }
        }
        deserializer.deserialize_any(NumberOrText).map(BareSeconds)
    }
}

impl JsonSchema for BareSeconds {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "BareSeconds".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({"anyOf": [generator.subschema_for::<Seconds>(), {"type": "string", "pattern": SECONDS_TEXT_PATTERN}]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(task_type: &str, input: Value) -> Answer {
        Utils.handle(Task::new("t", task_type, input)).await
    }

    #[tokio::test]
    async fn outputs_keep_their_shape() {
        assert_eq!(run("utils.echo", json!({"a": [1]})).await.unwrap(), json!({"a": [1]}));
        let abc = json!({
            "algorithm": "sha256",
            "hex": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "bytes": 3
        });
        assert_eq!(run("utils.hash", json!("abc")).await.unwrap(), abc);
        assert_eq!(run("utils.hash", json!({"text": "abc", "algorithm": "sha256"})).await.unwrap(), abc);
        assert_eq!(run("utils.sleep", json!(0)).await.unwrap(), json!({"slept_seconds": 0.0}));
        assert_eq!(run("utils.sleep", json!(" 0.001 ")).await.unwrap(), json!({"slept_seconds": 0.001}));
        assert_eq!(run("utils.sleep", json!({"seconds": 0})).await.unwrap(), json!({"slept_seconds": 0.0}));
        let uuid = run("utils.uuid", json!("")).await.unwrap();
        assert!(uuid::Uuid::parse_str(uuid["uuid"].as_str().unwrap()).is_ok(), "{uuid}");
        let time = run("utils.time", Value::Null).await.unwrap();
        assert!(time["unix_seconds"].as_f64().unwrap() > 1.7e9, "{time}");
        assert!(time["rfc3339"].as_str().unwrap().ends_with('Z'), "{time}");
    }

    #[tokio::test]
    async fn wrong_inputs_name_their_path() {
        let message = |r: Answer| {
            let e = r.unwrap_err();
            assert_eq!(e.code, crate::core::ErrorCode::InvalidField, "{e}");
            e.message
        };
        assert_eq!(
            message(run("utils.hash", json!({"text": "a", "algorithm": "md4"})).await),
            "input of utils.hash at /algorithm: unknown variant `md4`, expected `sha256`"
        );
        assert_eq!(
            message(run("utils.hash", json!({"text": 7})).await),
            "input of utils.hash at /text: invalid type: integer `7`, expected a string"
        );
        assert_eq!(
            message(run("utils.hash", json!(5)).await),
            "input of utils.hash at the top level: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            message(run("utils.sleep", json!(-1)).await),
            "input of utils.sleep at the top level: seconds must be within 0..=300, got -1"
        );
        assert_eq!(
            message(run("utils.sleep", json!({"seconds": 301})).await),
            "input of utils.sleep at /seconds: seconds must be within 0..=300, got 301"
        );
        assert!(message(run("utils.sleep", json!({"secs": 1})).await).contains("unknown field `secs`"));
    }

    /// Every example, run through the handler, answers what the output
    /// schema says (the output types are true to the JSON they produce).
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: UnifiedUtilsAgent, group: g, runtime: {kind: builtin}, \
             handles: [utils.echo, utils.time, utils.uuid, utils.hash, utils.sleep]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([("UnifiedUtilsAgent", tasks())]);
        let table = crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"));
        assert_eq!(table.len(), 5);
        for def in table.iter() {
            for example in def.input_schema["examples"].as_array().unwrap() {
                let output = run(&def.task_type, example.clone()).await.unwrap_or_else(|e| panic!("{example}: {e}"));
                def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn echo_streams_text_word_by_word() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut task = Task::new("t", "utils.echo", json!("one two"));
        task.chunks = Some(tx);
        assert_eq!(Utils.handle(task).await.unwrap(), json!("one two"));
        assert_eq!(rx.recv().await.as_deref(), Some("one "));
        assert_eq!(rx.recv().await.as_deref(), Some("two"));
    }
}
