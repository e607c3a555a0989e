//! StreamingLanguageAnalyzer: identifies the language of a transcript
//! (`whatlang`: trigram profiles of 69 languages, plus the script) and hands
//! text not in the target language to TranslationService.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `language_identification` | `{"text"}` | `{"language" (ISO 639-3), "confidence" (0–1), "reliable"}` |
//! | `language.route` | `{"text", "target_language"?}` | `{"language", "confidence", "translated", "text"}` |
//!
//! `language.route`: the target is `target_language`, else the setting
//! `language.target` (default `en`), as an ISO 639-1 or 639-3 code or an
//! English language name. When the detected language is the target, the
//! text comes back as it is (`translated: false`); otherwise it goes to
//! TranslationService as a `translation` task `"to: <639-1 code>\n<text>"`
//! and its answer (the translated text) is returned with
//! `translated: true`. Short texts are identified less surely
//! (`reliable: false`); they are routed all the same.
//!
//! Errors: a text in which no language can be identified (no letters),
//! or an unknown target language: `invalid_field`. TranslationService's
//! error passes through with its code (e.g. `no_backend` when no model
//! backend is configured), its message prefixed with "TranslationService: ".

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whatlang::Lang;

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{decode, encode};
use crate::config::media::LanguageSettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::supervisor::Peers;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "StreamingLanguageAnalyzer";
/// The agent that translates.
pub(crate) const TRANSLATOR: &str = "TranslationService";

/// ISO 639-1 codes of whatlang's languages that have one (the rest are
/// named by their 639-3 code only).
const ISO_639_1: &[(&str, Lang)] = &[
    ("af", Lang::Afr),
    ("ak", Lang::Aka),
    ("am", Lang::Amh),
    ("ar", Lang::Ara),
    ("az", Lang::Aze),
    ("be", Lang::Bel),
    ("bg", Lang::Bul),
    ("bn", Lang::Ben),
    ("ca", Lang::Cat),
    ("cs", Lang::Ces),
    ("cy", Lang::Cym),
    ("da", Lang::Dan),
    ("de", Lang::Deu),
    ("el", Lang::Ell),
    ("en", Lang::Eng),
    ("eo", Lang::Epo),
    ("es", Lang::Spa),
    ("et", Lang::Est),
    ("fa", Lang::Pes),
    ("fi", Lang::Fin),
    ("fr", Lang::Fra),
    ("gu", Lang::Guj),
    ("he", Lang::Heb),
    ("hi", Lang::Hin),
    ("hr", Lang::Hrv),
    ("hu", Lang::Hun),
    ("hy", Lang::Hye),
    ("id", Lang::Ind),
    ("it", Lang::Ita),
    ("ja", Lang::Jpn),
    ("jv", Lang::Jav),
    ("ka", Lang::Kat),
    ("km", Lang::Khm),
    ("kn", Lang::Kan),
    ("ko", Lang::Kor),
    ("la", Lang::Lat),
    ("lt", Lang::Lit),
    ("lv", Lang::Lav),
    ("mk", Lang::Mkd),
    ("ml", Lang::Mal),
    ("mr", Lang::Mar),
    ("my", Lang::Mya),
    ("nb", Lang::Nob),
    ("ne", Lang::Nep),
    ("nl", Lang::Nld),
    ("no", Lang::Nob),
    ("or", Lang::Ori),
    ("pa", Lang::Pan),
    ("pl", Lang::Pol),
    ("pt", Lang::Por),
    ("ro", Lang::Ron),
    ("ru", Lang::Rus),
    ("si", Lang::Sin),
    ("sk", Lang::Slk),
    ("sl", Lang::Slv),
    ("sn", Lang::Sna),
    ("sr", Lang::Srp),
    ("sv", Lang::Swe),
    ("ta", Lang::Tam),
    ("te", Lang::Tel),
    ("th", Lang::Tha),
    ("tk", Lang::Tuk),
    ("tl", Lang::Tgl),
    ("tr", Lang::Tur),
    ("uk", Lang::Ukr),
    ("ur", Lang::Urd),
    ("uz", Lang::Uzb),
    ("vi", Lang::Vie),
    ("yi", Lang::Yid),
    ("zh", Lang::Cmn),
    ("zu", Lang::Zul),
];

/// The language named `name`: an ISO 639-1 or 639-3 code or an English name
/// (any case).
pub fn parse_language(name: &str) -> Option<Lang> {
    let n = name.trim().to_lowercase();
    ISO_639_1
        .iter()
        .find(|(code, _)| *code == n)
        .map(|(_, l)| *l)
        .or_else(|| Lang::from_code(n.as_str()))
        .or_else(|| Lang::all().iter().copied().find(|l| l.eng_name().eq_ignore_ascii_case(&n)))
}

/// The ISO 639-1 code of `lang`, else its 639-3 code.
fn short_code(lang: Lang) -> &'static str {
    ISO_639_1.iter().find(|(_, l)| *l == lang).map_or(lang.code(), |(c, _)| c)
}

/// An identification.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Identified {
    /// ISO 639-3 code.
    pub language: String,
    /// 0–1.
    pub confidence: f64,
    /// Whether whatlang deems it reliable.
    pub reliable: bool,
}

/// The language of `text`.
///
/// # Errors
/// `invalid_field` when no language can be identified (no letters).
pub fn identify(text: &str) -> Result<(Lang, Identified), TaskError> {
    let info = whatlang::detect(text).ok_or_else(|| {
        TaskError::new(ErrorCode::InvalidField, "input at /text: no language can be identified in this text")
    })?;
    let lang = info.lang();
    let confidence = (info.confidence() * 1e4).round() / 1e4;
    Ok((lang, Identified { language: lang.code().into(), confidence, reliable: info.is_reliable() }))
}

/// The input of both types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextInput {
    text: String,
    #[serde(default)]
    target_language: Option<String>,
}

/// `language.route`'s output.
#[derive(Serialize)]
struct RouteOutput {
    language: String,
    confidence: f64,
    translated: bool,
    text: String,
}

/// The StreamingLanguageAnalyzer behaviour.
pub struct LanguageAnalyzer {
    peers: Arc<dyn Peers>,
    settings: LanguageSettings,
    metrics: Metrics,
}

impl LanguageAnalyzer {
    /// The behaviour: TranslationService through `peers`, the default target from `settings`.
    pub fn new(peers: Arc<dyn Peers>, settings: LanguageSettings, metrics: Metrics) -> LanguageAnalyzer {
        LanguageAnalyzer { peers, settings, metrics }
    }

    async fn route(&self, task: &Task, input: TextInput) -> Result<RouteOutput, TaskError> {
        let (target, at) = match &input.target_language {
            Some(t) => (t.as_str(), "input of language.route at /target_language"),
            None => (self.settings.target.as_str(), "the setting language.target"),
        };
        let target = parse_language(target).ok_or_else(|| {
            TaskError::new(
                ErrorCode::InvalidField,
                format!("{at}: unknown language {target:?} (an ISO 639 code or English name)"),
            )
        })?;
        let (lang, id) = identify(&input.text)?;
        if lang == target {
            return Ok(RouteOutput {
                language: id.language,
                confidence: id.confidence,
                translated: false,
                text: input.text,
            });
        }
        let mut t = Task::new(
            format!("{}-translate", task.id),
            "translation",
            json!(format!("to: {}\n{}", short_code(target), input.text)),
        );
        t.user = task.user.clone();
        t.session = task.session.clone();
        t.deadline = task.deadline;
        t.cancel = task.cancel.clone();
        let reply = self
            .peers
            .call(TRANSLATOR, t)
            .await
            .map_err(|e| TaskError::new(e.code, format!("{TRANSLATOR}: {}", e.message)))?;
        let text = match reply.output {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        Ok(RouteOutput { language: id.language, confidence: id.confidence, translated: true, text })
    }
}

#[async_trait]
impl Behaviour for LanguageAnalyzer {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let (op, result) = match t {
            "language_identification" => {
                let input: TextInput = decode(t, &task.input)?;
                if input.target_language.is_some() {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        "input of language_identification at /target_language: unknown field",
                    ));
                }
                ("language", identify(&input.text).and_then(|(_, id)| encode(t, id)))
            }
            "language.route" => {
                let input = decode(t, &task.input)?;
                (
                    "route",
                    match self.route(&task, input).await {
                        Ok(out) => encode(t, out),
                        Err(e) => Err(e),
                    },
                )
            }
            _ => return Err(unknown_type(AGENT, &task)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == ErrorCode::InvalidField => "invalid_field",
            Err(_) => "error",
        };
        self.metrics.audio_ops.with_label_values(&[op, outcome]).inc();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_code_and_name() {
        assert_eq!(parse_language("en"), Some(Lang::Eng));
        assert_eq!(parse_language("ENG"), Some(Lang::Eng));
        assert_eq!(parse_language("German"), Some(Lang::Deu));
        assert_eq!(parse_language("xx"), None);
        assert_eq!(short_code(Lang::Fra), "fr");
    }
}
