//! StreamingTTSAgent: splits text into sentences and synthesises them one
//! after the other through TTSService, streaming each sentence's audio as a
//! chunk as soon as it is ready (time to first audio is one sentence, not
//! the whole text). No state of its own.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `tts.stream` | text, or `{"text", "voice"?, "speed"?}` | `{"sentences": n, "duration_seconds": total, "sample_rate"}`; with `stream: true` each chunk's `delta` is the JSON text `{"index", "sentence", "wav_base64", "sample_rate", "duration_seconds"}` |
//!
//! Errors: `invalid_field` (no text, a voice or speed TTSService refuses),
//! TTSService's own (`agent_unavailable` without espeak-ng).
//!
//! The input and output types below are the declarations of [`tasks`]: their
//! doc comments become the schema descriptions of `docs/tasks.md`.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Behaviour, Text, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::Task;
use crate::supervisor::Peers;

/// Slowest and fastest speaking rate TTSService takes, words per minute.
const SPEED_RANGE: (f64, f64) = (80.0, 450.0);

/// The task types of StreamingTTSAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![rust_task::<OrShort<StreamInput>, StreamOutput>(
        "tts.stream",
        "Speaks a text sentence by sentence through TTSService, streaming each sentence's WAV as a chunk",
        || {
            vec![
                json!("Hello there. How are you today?"),
                json!({"text": "Good morning. Your first meeting is at nine.", "voice": "en-us", "speed": 160}),
            ]
        },
    )]
}

/// The StreamingTTSAgent behaviour.
pub struct StreamingTts {
    /// The other agents (TTSService).
    pub peers: Arc<dyn Peers>,
}

/// Splits `text` after `.`, `!`, `?` (and `…`) followed by white space;
/// keeps the punctuation; drops empty pieces.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        if matches!(c, '.' | '!' | '?' | '…') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            let s = current.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            current.clear();
        }
    }
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

#[async_trait]
impl Behaviour for StreamingTts {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        if t != "tts.stream" {
            return Err(unknown_type("StreamingTTSAgent", &task));
        }
        let OrShort(StreamInput { text: Text(text), voice, speed }) = decode(t, &task.input)?;
        let parts = sentences(&text);
        let (mut total, mut sample_rate) = (0.0, None);
        for (index, sentence) in parts.iter().enumerate() {
            let mut input = json!({"text": sentence});
            if let Some(Voice(voice)) = &voice {
                input["voice"] = json!(voice);
            }
            if let Some(Speed(speed)) = speed {
                input["speed"] = json!(speed);
            }
            let mut speak = Task::new(format!("{}-{index}", task.id), "tts.speak", input);
            speak.deadline = task.deadline;
            speak.cancel = task.cancel.clone();
            let audio = self.peers.call("TTSService", speak).await?.output;
            total += audio.get("duration_seconds").and_then(Value::as_f64).unwrap_or(0.0);
            sample_rate = audio.get("sample_rate").and_then(Value::as_u64);
            let chunk = json!({
                "index": index, "sentence": sentence, "wav_base64": audio.get("wav_base64"),
                "sample_rate": audio.get("sample_rate"), "duration_seconds": audio.get("duration_seconds"),
            });
            task.emit(chunk.to_string());
        }
        encode(t, StreamOutput { sentences: parts.len(), duration_seconds: total, sample_rate })
    }
}

/// The text to speak and how.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StreamInput {
    /// The text to speak, split into sentences after `.`, `!`, `?` and `…`;
    /// it must have a character other than white space.
    text: Text,
    /// An espeak-ng voice, e.g. `en-us` (default: espeak-ng's default voice).
    #[serde(default)]
    voice: Option<Voice>,
    /// Speaking rate, words per minute, 80–450 (default: espeak-ng's 175).
    #[serde(default)]
    speed: Option<Speed>,
}

impl Shorthand for StreamInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The text alone, in the default voice and speed.";
    fn expand(text: Text) -> StreamInput {
        StreamInput { text, voice: None, speed: None }
    }
}

/// An espeak-ng voice name: a non-empty text.
struct Voice(String);

impl<'de> Deserialize<'de> for Voice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)? {
            v if v.is_empty() => Err(de::Error::custom("the voice must not be empty")),
            v => Ok(Voice(v)),
        }
    }
}

impl JsonSchema for Voice {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Voice".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1})
    }
}

/// A speaking rate within [`SPEED_RANGE`], words per minute.
#[derive(Clone, Copy)]
struct Speed(f64);

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (min, max) = SPEED_RANGE;
        match f64::deserialize(deserializer)? {
            s if (min..=max).contains(&s) => Ok(Speed(s)),
            s => Err(de::Error::custom(format!("speed must be within {min}..={max} words per minute, got {s}"))),
        }
    }
}

impl JsonSchema for Speed {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Speed".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": SPEED_RANGE.0, "maximum": SPEED_RANGE.1})
    }
}

/// What was spoken (the audio came as chunks).
#[derive(Serialize, JsonSchema)]
struct StreamOutput {
    /// Number of sentences spoken (one chunk each).
    sentences: usize,
    /// Length of all the audio, seconds.
    duration_seconds: f64,
    /// Samples per second of the audio (Hz), as TTSService gave it for the
    /// last sentence.
    sample_rate: Option<u64>,
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::core::TaskReply;
    use crate::supervisor::StartError;
    use crate::supervisor::state::AgentState;

    /// A TTSService that answers 0.5 s of silence per sentence and keeps the
    /// inputs it was given.
    #[derive(Default)]
    struct FakeTts(Mutex<Vec<Value>>);

    #[async_trait]
    impl Peers for FakeTts {
        async fn call(&self, agent: &str, task: Task) -> TaskReply {
            assert_eq!((agent, task.task_type.as_str()), ("TTSService", "tts.speak"));
            self.0.lock().push(task.input);
            Ok(json!({"wav_base64": "UklGRg==", "sample_rate": 22050, "duration_seconds": 0.5, "bytes": 4}).into())
        }
        async fn ensure(&self, _: &str) -> Result<(), StartError> {
            Ok(())
        }
        fn state(&self, _: &str) -> Option<AgentState> {
            Some(AgentState::Running)
        }
    }

    #[test]
    fn splits_sentences_and_keeps_punctuation() {
        assert_eq!(sentences("Hello world. How are you? Fine!"), ["Hello world.", "How are you?", "Fine!"]);
        assert_eq!(sentences("Version 1.5 is out"), ["Version 1.5 is out"]);
        assert_eq!(sentences("  "), Vec::<String>::new());
    }

    /// Every example, run through the handler, answers what the output
    /// schema says; TTSService gets each sentence with the voice and speed.
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: StreamingTTSAgent, group: g, runtime: {kind: builtin}, handles: [tts.stream]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([("StreamingTTSAgent", tasks())]);
        let table = crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"));
        let def = table.get("tts.stream").unwrap();
        let tts = Arc::new(FakeTts::default());
        let agent = StreamingTts { peers: tts.clone() };
        for example in def.input_schema["examples"].as_array().unwrap() {
            let output = agent.handle(Task::new("t", "tts.stream", example.clone())).await.unwrap();
            def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
            assert_eq!(output, json!({"sentences": 2, "duration_seconds": 1.0, "sample_rate": 22050}));
        }
        let asked = tts.0.lock().clone();
        assert_eq!(asked[0], json!({"text": "Hello there."}));
        assert_eq!(asked[3], json!({"text": "Your first meeting is at nine.", "voice": "en-us", "speed": 160.0}));
    }

    #[test]
    fn wrong_inputs_name_their_path() {
        let message = |input: Value| decode::<OrShort<StreamInput>>("tts.stream", &input).err().unwrap().message;
        assert!(message(json!("  ")).starts_with("input of tts.stream at the top level: "));
        assert!(message(json!({"text": "Hi.", "speed": 500})).starts_with("input of tts.stream at /speed: "));
        assert!(message(json!({"text": "Hi.", "voice": ""})).starts_with("input of tts.stream at /voice: "));
        assert!(message(json!({"voice": "en-us"})).contains("missing field `text`"));
    }
}
