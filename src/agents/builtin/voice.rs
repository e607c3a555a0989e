//! VoiceProfilingAgent: voice features of a WAV — pitch (YIN), energy and
//! speaking rate (syllable nuclei). The clip is down-mixed to mono and
//! resampled to 16 kHz first; the methods are in [`super::audio`]. State:
//! none (the `media:` settings).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `voice.profile` | `{"wav_base64" \| "path"}` | `{"duration_seconds", "voiced_ratio", "pitch_mean_hz", "pitch_stddev_hz", "pitch_median_hz", "pitch_min_hz", "pitch_max_hz", "energy_rms", "energy_db", "speech_seconds", "speaking_rate_syllables_per_second"}` |
//! | `voice.features` | `{"wav_base64" \| "path", "frame_seconds"? (0.005–1, default 0.02)}` | `{"frame_seconds", "frames": [{"start_seconds", "pitch_hz", "energy_rms"}]}` |
//!
//! Units: pitch in Hz (50–500 Hz looked for; null when no frame is voiced),
//! energy as RMS relative to full scale (0–1) and in dBFS, times in
//! seconds. Voiced frames (10 ms hop, 25 ms YIN window) are those with a
//! pitch inside the speech segments of the VAD (adaptive threshold, 0.3 s
//! hangover); `voiced_ratio` is their share of all frames. The speaking
//! rate is syllable nuclei per second of speech (the segments' loud spans,
//! without the hangover); null when there is no speech.
//!
//! Errors as FusedAudioPreprocessor's: `invalid_field` (input, not a WAV),
//! `forbidden` (path outside `media.roots`, or none configured),
//! `not_found`. Counted in `agentvisor_audio_ops_total{op,outcome}`; the
//! work runs on the blocking pool.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::audio::{self, AudioError};
use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::{decode, encode};
use crate::config::media::MediaSettings;
use crate::core::Task;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "VoiceProfilingAgent";

/// Frame length of `voice.features` when the input names none, seconds.
pub const DEFAULT_FRAME_SECONDS: f64 = 0.02;

/// `voice.profile`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileInput {
    #[serde(default)]
    wav_base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// `voice.features`' input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesInput {
    #[serde(default)]
    wav_base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    frame_seconds: Option<f64>,
}

/// `voice.profile`'s output.
#[derive(Serialize, Debug)]
struct ProfileOutput {
    duration_seconds: f64,
    voiced_ratio: f64,
    pitch_mean_hz: Option<f64>,
    pitch_stddev_hz: Option<f64>,
    pitch_median_hz: Option<f64>,
    pitch_min_hz: Option<f64>,
    pitch_max_hz: Option<f64>,
    energy_rms: f64,
    energy_db: f64,
    speech_seconds: f64,
    speaking_rate_syllables_per_second: Option<f64>,
}

/// One frame of `voice.features`.
#[derive(Serialize)]
struct FrameOutput {
    start_seconds: f64,
    pitch_hz: Option<f64>,
    energy_rms: f64,
}

/// `voice.features`' output.
#[derive(Serialize)]
struct FeaturesOutput {
    frame_seconds: f64,
    frames: Vec<FrameOutput>,
}

/// Rounds to 4 decimals.
fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The clip as 16 kHz mono.
fn load16k(settings: &MediaSettings, wav_base64: Option<&str>, path: Option<&str>) -> Result<Vec<f32>, AudioError> {
    let pcm = audio::load_wav(settings, wav_base64, path)?;
    audio::resample(&pcm.mono(), 1, pcm.sample_rate, audio::ANALYSIS_RATE)
}

fn profile(settings: &MediaSettings, input: ProfileInput) -> Result<ProfileOutput, AudioError> {
    let mono = load16k(settings, input.wav_base64.as_deref(), input.path.as_deref())?;
    let p = audio::profile(&mono, audio::ANALYSIS_RATE);
    let mut pitches: Vec<f64> = p.pitches.iter().map(|&x| f64::from(x)).collect();
    pitches.sort_by(f64::total_cmp);
    let n = pitches.len() as f64;
    let mean = (!pitches.is_empty()).then(|| pitches.iter().sum::<f64>() / n);
    let stddev = mean.map(|m| (pitches.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt());
    let median = (!pitches.is_empty()).then(|| {
        let k = pitches.len() / 2;
        if pitches.len() % 2 == 1 { pitches[k] } else { (pitches[k - 1] + pitches[k]) / 2.0 }
    });
    let rate = (p.vad.loud_seconds > 0.0).then(|| p.nuclei as f64 / p.vad.loud_seconds);
    Ok(ProfileOutput {
        duration_seconds: r4(p.duration_seconds),
        voiced_ratio: r4(p.voiced_ratio),
        pitch_mean_hz: mean.map(r4),
        pitch_stddev_hz: stddev.map(r4),
        pitch_median_hz: median.map(r4),
        pitch_min_hz: pitches.first().copied().map(r4),
        pitch_max_hz: pitches.last().copied().map(r4),
        energy_rms: r4(p.energy_rms.min(1.0)),
        energy_db: r4(audio::level_db(p.energy_rms).min(0.0)),
        speech_seconds: r4(p.vad.speech_seconds()),
        speaking_rate_syllables_per_second: rate.map(r4),
    })
}

fn features(settings: &MediaSettings, input: FeaturesInput) -> Result<FeaturesOutput, AudioError> {
    let frame_seconds = input.frame_seconds.unwrap_or(DEFAULT_FRAME_SECONDS);
    if !(0.005..=1.0).contains(&frame_seconds) {
        return Err(AudioError::Invalid(format!("frame_seconds {frame_seconds} is outside 0.005-1")));
    }
    let mono = load16k(settings, input.wav_base64.as_deref(), input.path.as_deref())?;
    let frames = audio::contours(&mono, audio::ANALYSIS_RATE, frame_seconds)
        .into_iter()
        .map(|f| FrameOutput {
            start_seconds: r4(f.start_seconds),
            pitch_hz: f.pitch_hz.map(|p| r4(f64::from(p))),
            energy_rms: r4(f.energy_rms.min(1.0)),
        })
        .collect();
    Ok(FeaturesOutput { frame_seconds, frames })
}

/// The VoiceProfilingAgent behaviour.
pub struct VoiceProfiling {
    settings: Arc<MediaSettings>,
    metrics: Metrics,
}

impl VoiceProfiling {
    /// The behaviour over `settings` (`media:`).
    pub fn new(settings: MediaSettings, metrics: Metrics) -> VoiceProfiling {
        VoiceProfiling { settings: Arc::new(settings), metrics }
    }
}

#[async_trait]
impl Behaviour for VoiceProfiling {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        let s = self.settings.clone();
        match t {
            "voice.profile" => {
                let input = decode(t, &task.input)?;
                encode(t, audio::run_blocking(&self.metrics, AGENT, "profile", move || profile(&s, input)).await?)
            }
            "voice.features" => {
                let input = decode(t, &task.input)?;
                encode(t, audio::run_blocking(&self.metrics, AGENT, "features", move || features(&s, input)).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}
