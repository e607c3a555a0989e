//! WakeWordDetector: finds a configured wake word or phrase in a
//! transcript (e.g. `stt.transcribe`'s text) by fuzzy matching, so that
//! recognition slips ("hey komputer") still count.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `wake_word.detect` | `{"text"}` | `{"detected", "word", "score", "offset"}` |
//! | `wake_word.configure` | `{"words"?, "threshold"?}` (at least one) | `{"words", "threshold"}` |
//!
//! Matching: text and wake words are cut into words (runs of letters and
//! digits, lower-cased; punctuation dropped). A wake word of n words is
//! compared with every window of n − 1, n and n + 1 consecutive words of
//! the text, by normalised Levenshtein similarity (`strsim`: 1 − edits /
//! longer length, 0–1) of the words joined by one space, and of the same
//! with the spaces left out (so "heycomputer" matches "hey computer"). The
//! best window over all words wins; it is a detection when its score
//! reaches the threshold. `word` and `offset` (the character offset, in
//! Unicode scalar values, of the window's first word in `text`) are null
//! otherwise; `score` is always the best candidate's.
//!
//! State: the words and threshold, from `wake_word.words` (default
//! `["hey computer"]`) and `wake_word.threshold` (default 0.8) at start;
//! `wake_word.configure` replaces them in memory until the agent restarts.
//!
//! Errors: blank words only, a threshold outside 0–1, or neither field in
//! `wake_word.configure`: `invalid_field`.

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{decode, encode};
use crate::config::media::WakeWordSettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "WakeWordDetector";

/// `wake_word.detect`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectInput {
    text: String,
}

/// `wake_word.configure`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigureInput {
    #[serde(default)]
    words: Option<Vec<String>>,
    #[serde(default)]
    threshold: Option<f64>,
}

/// What `wake_word.detect` found.
#[derive(Serialize, Debug, PartialEq)]
pub struct Detection {
    /// Whether the best score reached the threshold.
    pub detected: bool,
    /// The wake word matched (as configured), or null.
    pub word: Option<String>,
    /// Similarity of the best candidate, 0–1.
    pub score: f64,
    /// Character offset of the match in the text, or null.
    pub offset: Option<usize>,
}

/// The words and threshold in force.
#[derive(Serialize, Clone)]
struct Config {
    words: Vec<String>,
    threshold: f64,
}

/// The words of `text`, lower-cased, with their character offsets.
fn words(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, c) in text.chars().enumerate() {
        if c.is_alphanumeric() {
            current.get_or_insert_with(|| (i, String::new())).1.extend(c.to_lowercase());
        } else if let Some(w) = current.take() {
            out.push(w);
        }
    }
    out.extend(current);
    out
}

/// The best match of any of `wake_words` in `text` (see the module doc).
pub fn detect(text: &str, wake_words: &[String], threshold: f64) -> Detection {
    let tokens = words(text);
    let mut best: Option<(f64, &String, usize)> = None;
    for wake in wake_words {
        let phrase: Vec<String> = words(wake).into_iter().map(|(_, w)| w).collect();
        if phrase.is_empty() {
            continue;
        }
        let (joined, squeezed) = (phrase.join(" "), phrase.concat());
        let n = phrase.len();
        for k in [n.saturating_sub(1), n, n + 1] {
            if k == 0 || k > tokens.len() {
                continue;
            }
            for window in tokens.windows(k) {
                let cand: Vec<&str> = window.iter().map(|(_, w)| w.as_str()).collect();
                let score = strsim::normalized_levenshtein(&cand.join(" "), &joined)
                    .max(strsim::normalized_levenshtein(&cand.concat(), &squeezed));
                if best.is_none_or(|(b, _, _)| score > b) {
                    best = Some((score, wake, window[0].0));
                }
            }
        }
    }
    let Some((score, word, offset)) = best else {
        return Detection { detected: false, word: None, score: 0.0, offset: None };
    };
    let score = (score * 1e4).round() / 1e4;
    let detected = score >= threshold;
    Detection { detected, word: detected.then(|| word.clone()), score, offset: detected.then_some(offset) }
}

/// The WakeWordDetector behaviour.
pub struct WakeWordDetector {
    config: RwLock<Config>,
    metrics: Metrics,
}

impl WakeWordDetector {
    /// The behaviour with the start-up words and threshold of `settings`.
    pub fn new(settings: WakeWordSettings, metrics: Metrics) -> WakeWordDetector {
        let words = settings.words.into_iter().map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect();
        WakeWordDetector { config: RwLock::new(Config { words, threshold: settings.threshold }), metrics }
    }

    fn configure(&self, input: ConfigureInput) -> Result<Config, TaskError> {
        let bad = |m: String| TaskError::new(ErrorCode::InvalidField, m);
        if input.words.is_none() && input.threshold.is_none() {
            return Err(bad("wake_word.configure needs words or threshold".into()));
        }
        let words = match input.words {
            Some(ws) => {
                let mut kept: Vec<String> = Vec::new();
                for w in ws.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
                    if !kept.iter().any(|k| k == w) {
                        kept.push(w.to_string());
                    }
                }
                if kept.is_empty() {
                    return Err(bad("input of wake_word.configure at /words: every word is blank".into()));
                }
                Some(kept)
            }
            None => None,
        };
        if let Some(t) = input.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(bad(format!("input of wake_word.configure at /threshold: {t} is outside 0-1")));
        }
        let mut c = self.config.write();
        if let Some(w) = words {
            c.words = w;
        }
        if let Some(t) = input.threshold {
            c.threshold = t;
        }
        tracing::info!(agent = AGENT, words = ?c.words, threshold = c.threshold, "wake words configured");
        Ok(c.clone())
    }
}

#[async_trait]
impl Behaviour for WakeWordDetector {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "wake_word.detect" => {
                let DetectInput { text } = decode(t, &task.input)?;
                let c = self.config.read().clone();
                let found = detect(&text, &c.words, c.threshold);
                let outcome = if found.detected { "detected" } else { "not_detected" };
                self.metrics.audio_ops.with_label_values(&["wake_word", outcome]).inc();
                encode(t, found)
            }
            "wake_word.configure" => {
                let input = decode(t, &task.input)?;
                encode(t, self.configure(input)?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_fuzzy_and_absent() {
        let w = vec!["hey computer".to_string()];
        let d = detect("Hey computer, turn on the lights", &w, 0.8);
        assert_eq!((d.detected, d.score, d.offset), (true, 1.0, Some(0)));
        let d = detect("so... hey komputer turn it off", &w, 0.8);
        assert!(d.detected && d.score < 1.0 && d.offset == Some(6), "{d:?}");
        let d = detect("what is the weather like today", &w, 0.8);
        assert!(!d.detected && d.word.is_none() && d.score < 0.6, "{d:?}");
        assert!(detect("heycomputer", &w, 0.8).detected);
        assert_eq!(detect("", &w, 0.8).score, 0.0);
    }
}
