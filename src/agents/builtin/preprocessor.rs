//! FusedAudioPreprocessor: WAV in, 16-bit PCM WAV out — decoding,
//! down-mixing, resampling, peak normalisation and energy-based voice
//! activity detection with hangover. The signal processing is in
//! [`super::audio`] (methods, units and defaults there). State: none (the
//! `media:` settings).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `audio.preprocess` | `{"wav_base64" \| "path", "sample_rate"? (Hz, default 16000), "normalize"? (default true)}` | `{"wav_base64", "sample_rate", "channels": 1, "duration_seconds", "bytes", "segments": [{"start_seconds", "end_seconds"}]}` |
//! | `audio.resample` | `{"wav_base64" \| "path", "sample_rate" (Hz), "channels"? (1–2, default 1)}` | `{"wav_base64", "sample_rate", "channels", "duration_seconds", "bytes"}` |
//! | `audio.vad` | `{"wav_base64" \| "path", "threshold_db"? (dBFS, default adaptive), "hangover_seconds"? (default 0.3), "min_speech_seconds"? (default 0.1)}` | `{"segments", "duration_seconds", "speech_seconds"}` |
//!
//! `audio.preprocess` down-mixes to mono, resamples, scales the peak to
//! −1 dBFS (`normalize`), and runs the VAD on the result. `audio.resample`
//! down-mixes (1 channel) or copies mono to both channels (2 channels from
//! mono; more than 2 channels are down-mixed first); the same channel count
//! is kept as it is. Output WAVs are 16-bit PCM.
//!
//! Input by `wav_base64` (within `bus.max_message_bytes`) or by `path`
//! under `media.roots` (see [`super::audio::resolve_media_path`]).
//!
//! Errors: not exactly one of `wav_base64`/`path`, bad base64, not a WAV
//! (or a cut-short one), a file over `media.max_file_bytes`:
//! `invalid_field`; a `path` with no `media.roots`, outside them or leading
//! out through a symbolic link: `forbidden`; no such file: `not_found`.
//! Counted in `agentvisor_audio_ops_total{op,outcome}`; the work runs on
//! the blocking pool.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::audio::{self, AudioError, Pcm, Segment, VadOptions};
use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{decode, encode};
use crate::config::media::MediaSettings;
use crate::core::Task;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "FusedAudioPreprocessor";

/// Sample rate of `audio.preprocess` when the input names none, Hz.
pub const DEFAULT_SAMPLE_RATE: u32 = 16_000;

/// `audio.preprocess`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreprocessInput {
    #[serde(default)]
    wav_base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    sample_rate: Option<u32>,
    #[serde(default)]
    normalize: Option<bool>,
}

/// `audio.resample`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResampleInput {
    #[serde(default)]
    wav_base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
    sample_rate: u32,
    #[serde(default)]
    channels: Option<u16>,
}

/// `audio.vad`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VadInput {
    #[serde(default)]
    wav_base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    threshold_db: Option<f64>,
    #[serde(default)]
    hangover_seconds: Option<f64>,
    #[serde(default)]
    min_speech_seconds: Option<f64>,
}

/// `audio.preprocess`'s output.
#[derive(Serialize)]
struct PreprocessOutput {
    wav_base64: String,
    sample_rate: u32,
    channels: u16,
    duration_seconds: f64,
    bytes: usize,
    segments: Vec<Segment>,
}

/// `audio.resample`'s output.
#[derive(Serialize)]
struct ResampleOutput {
    wav_base64: String,
    sample_rate: u32,
    channels: u16,
    duration_seconds: f64,
    bytes: usize,
}

/// `audio.vad`'s output.
#[derive(Serialize)]
struct VadOutput {
    segments: Vec<Segment>,
    duration_seconds: f64,
    speech_seconds: f64,
}

/// Rounds seconds to the microsecond (no float noise in answers).
fn us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

fn rounded(segments: Vec<Segment>) -> Vec<Segment> {
    segments
        .into_iter()
        .map(|s| Segment { start_seconds: us(s.start_seconds), end_seconds: us(s.end_seconds) })
        .collect()
}

/// Checks a target rate (the schema's bounds, for calls that skip the bus).
fn check_rate(rate: u32, max: u32) -> Result<u32, AudioError> {
    if (8_000..=max).contains(&rate) {
        Ok(rate)
    } else {
        Err(AudioError::Invalid(format!("sample_rate {rate} Hz is outside 8000-{max}")))
    }
}

fn load(settings: &MediaSettings, wav_base64: Option<&str>, path: Option<&str>) -> Result<Pcm, AudioError> {
    audio::load_wav(settings, wav_base64, path)
}

/// Decode, down-mix, resample, normalise, VAD.
fn preprocess(settings: &MediaSettings, input: PreprocessInput) -> Result<PreprocessOutput, AudioError> {
    let rate = check_rate(input.sample_rate.unwrap_or(DEFAULT_SAMPLE_RATE), 48_000)?;
    let pcm = load(settings, input.wav_base64.as_deref(), input.path.as_deref())?;
    let mut mono = audio::resample(&pcm.mono(), 1, pcm.sample_rate, rate)?;
    if input.normalize != Some(false) {
        audio::normalise_peak(&mut mono);
    }
    let vad = audio::vad(&mono, rate, &VadOptions::default());
    let out = Pcm { sample_rate: rate, channels: 1, samples: mono };
    let wav = audio::encode_wav(&out);
    Ok(PreprocessOutput {
        duration_seconds: us(out.duration_seconds()),
        bytes: wav.len(),
        wav_base64: audio::to_base64(&wav),
        sample_rate: rate,
        channels: 1,
        segments: rounded(vad.segments),
    })
}

/// Resample to `sample_rate` and `channels`.
fn resample(settings: &MediaSettings, input: ResampleInput) -> Result<ResampleOutput, AudioError> {
    let rate = check_rate(input.sample_rate, 192_000)?;
    let channels = input.channels.unwrap_or(1);
    if !(1..=2).contains(&channels) {
        return Err(AudioError::Invalid(format!("channels {channels} is outside 1-2")));
    }
    let pcm = load(settings, input.wav_base64.as_deref(), input.path.as_deref())?;
    let samples = if pcm.channels == channels {
        audio::resample(&pcm.samples, usize::from(channels), pcm.sample_rate, rate)?
    } else {
        let mono = audio::resample(&pcm.mono(), 1, pcm.sample_rate, rate)?;
        if channels == 1 { mono } else { mono.iter().flat_map(|&s| [s, s]).collect() }
    };
    let out = Pcm { sample_rate: rate, channels, samples };
    let wav = audio::encode_wav(&out);
    Ok(ResampleOutput {
        duration_seconds: us(out.duration_seconds()),
        bytes: wav.len(),
        wav_base64: audio::to_base64(&wav),
        sample_rate: rate,
        channels,
    })
}

/// Voice activity over the down-mixed clip at its own rate.
fn detect(settings: &MediaSettings, input: VadInput) -> Result<VadOutput, AudioError> {
    let pcm = load(settings, input.wav_base64.as_deref(), input.path.as_deref())?;
    let opts = VadOptions {
        threshold_db: input.threshold_db.map(|t| t.min(0.0)),
        hangover_seconds: input.hangover_seconds.unwrap_or(audio::DEFAULT_HANGOVER_SECONDS).clamp(0.0, 5.0),
        min_speech_seconds: input.min_speech_seconds.unwrap_or(audio::DEFAULT_MIN_SPEECH_SECONDS).clamp(0.0, 5.0),
    };
    let vad = audio::vad(&pcm.mono(), pcm.sample_rate, &opts);
    Ok(VadOutput {
        duration_seconds: us(pcm.duration_seconds()),
        speech_seconds: us(vad.speech_seconds()),
        segments: rounded(vad.segments),
    })
}

/// The FusedAudioPreprocessor behaviour.
pub struct FusedAudioPreprocessor {
    settings: Arc<MediaSettings>,
    metrics: Metrics,
}

impl FusedAudioPreprocessor {
    /// The behaviour over `settings` (`media:`).
    pub fn new(settings: MediaSettings, metrics: Metrics) -> FusedAudioPreprocessor {
        FusedAudioPreprocessor { settings: Arc::new(settings), metrics }
    }
}

#[async_trait]
impl Behaviour for FusedAudioPreprocessor {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let s = self.settings.clone();
        match t {
            "audio.preprocess" => {
                let input = decode(t, &task.input)?;
                encode(t, audio::run_blocking(&self.metrics, AGENT, "preprocess", move || preprocess(&s, input)).await?)
            }
            "audio.resample" => {
                let input = decode(t, &task.input)?;
                encode(t, audio::run_blocking(&self.metrics, AGENT, "resample", move || resample(&s, input)).await?)
            }
            "audio.vad" => {
                let input = decode(t, &task.input)?;
                encode(t, audio::run_blocking(&self.metrics, AGENT, "vad", move || detect(&s, input)).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}
