//! Settings of the audio agents (issue 20): `media:` (where `path` inputs
//! may point), `wake_word:` (WakeWordDetector's words and threshold) and
//! `language:` (StreamingLanguageAnalyzer's target language). Every struct
//! rejects unknown keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `media:` — where audio (and later image) files given by `path` may live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// Directories a `path` input may point into (`media: {roots: [/srv/media]}`).
    /// A relative path is looked up under each root in order; an absolute one
    /// must lie inside one. Symbolic links are resolved first, so a link out
    /// of a root is refused too. Default none: every `path` input is refused
    /// (`forbidden`); `wav_base64` inputs still work.
    pub roots: Vec<PathBuf>,
    /// Largest media file read by `path`, bytes; default 256 MiB (about
    /// 2 h 20 min of 16 kHz 16-bit mono, 25 min of 44.1 kHz stereo).
    pub max_file_bytes: u64,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings { roots: Vec::new(), max_file_bytes: 256 * 1024 * 1024 }
    }
}

/// `wake_word:` — WakeWordDetector's start-up words and threshold
/// (`wake_word.configure` changes them until the agent restarts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeWordSettings {
    /// Wake words or phrases; default `["hey computer"]`.
    pub words: Vec<String>,
    /// Least similarity (normalised Levenshtein, 0–1) that counts as a
    /// match; default 0.8.
    pub threshold: f64,
}

impl WakeWordSettings {
    /// Every problem of these settings: at least one non-blank word, the
    /// threshold within 0–1.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.words.iter().all(|w| w.trim().is_empty()) {
            problems.push("wake_word.words needs at least one non-blank word".to_string());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            problems.push(format!("wake_word.threshold {} is outside 0.0-1.0", self.threshold));
        }
        problems
    }
}

impl Default for WakeWordSettings {
    fn default() -> Self {
        WakeWordSettings { words: vec!["hey computer".into()], threshold: 0.8 }
    }
}

/// `language:` — StreamingLanguageAnalyzer's routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageSettings {
    /// The language `language.route` wants when the task names none: an
    /// ISO 639-1 or 639-3 code or an English name; default `en`.
    pub target: String,
}

impl Default for LanguageSettings {
    fn default() -> Self {
        LanguageSettings { target: "en".into() }
    }
}
