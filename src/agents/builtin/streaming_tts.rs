//! StreamingTTSAgent: splits text into sentences and synthesises them one
//! after the other through TTSService, streaming each sentence's audio as a
//! chunk as soon as it is ready (time to first audio is one sentence, not
//! the whole text). No state of its own.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `tts.stream` | text, or `{"text", "voice"?, "speed"?}` | `{"sentences": n, "duration_seconds": total, "sample_rate"}`; with `stream: true` each chunk's `delta` is the JSON text `{"index", "sentence", "wav_base64", "sample_rate", "duration_seconds"}` |
//!
//! Errors: `invalid_field` (no text), TTSService's own (`agent_unavailable`
//! without espeak-ng).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Answer, Behaviour, bad_input, unknown_type};
use crate::core::Task;
use crate::supervisor::Peers;

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
        if task.task_type != "tts.stream" {
            return Err(unknown_type("StreamingTTSAgent", &task));
        }
        let (text, options) = match &task.input {
            Value::String(s) => (s.clone(), json!({})),
            Value::Object(m) => (
                m.get("text").and_then(Value::as_str).ok_or_else(|| bad_input(&task, "missing text"))?.to_string(),
                json!({"voice": m.get("voice"), "speed": m.get("speed")}),
            ),
            _ => return Err(bad_input(&task, "expected text or {\"text\": ...}")),
        };
        let parts = sentences(&text);
        if parts.is_empty() {
            return Err(bad_input(&task, "no text to speak"));
        }
        let (mut total, mut rate) = (0.0, Value::Null);
        for (index, sentence) in parts.iter().enumerate() {
            let mut input = json!({"text": sentence});
            for key in ["voice", "speed"] {
                if let Some(v) = options.get(key).filter(|v| !v.is_null()) {
                    input[key] = v.clone();
                }
            }
            let mut speak = Task::new(format!("{}-{index}", task.id), "tts.speak", input);
            speak.deadline = task.deadline;
            speak.cancel = task.cancel.clone();
            let audio = self.peers.call("TTSService", speak).await?.output;
            total += audio.get("duration_seconds").and_then(Value::as_f64).unwrap_or(0.0);
            rate = audio.get("sample_rate").cloned().unwrap_or(Value::Null);
            let chunk = json!({
                "index": index, "sentence": sentence, "wav_base64": audio.get("wav_base64"),
                "sample_rate": audio.get("sample_rate"), "duration_seconds": audio.get("duration_seconds"),
            });
            task.emit(chunk.to_string());
        }
        Ok(json!({"sentences": parts.len(), "duration_seconds": total, "sample_rate": rate}))
    }
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn splits_sentences_and_keeps_punctuation() {
        assert_eq!(sentences("Hello world. How are you? Fine!"), ["Hello world.", "How are you?", "Fine!"]);
        assert_eq!(sentences("Version 1.5 is out"), ["Version 1.5 is out"]);
        assert_eq!(sentences("  "), Vec::<String>::new());
    }
}
