//! Audio signal processing shared by the audio agents (FusedAudioPreprocessor,
//! VoiceProfilingAgent): WAV in and out, down-mixing, resampling, peak
//! normalisation, energy-based voice activity detection (VAD), pitch (YIN)
//! and syllable nuclei; and the media sandbox for `path` inputs
//! (`media.roots`). Pure functions, CPU-bound: the agents call them on the
//! blocking pool.
//!
//! Units: samples are `f32` in −1…1 (full scale), interleaved by channel;
//! times in seconds; levels in dBFS (RMS of a frame, 0 dB = a full-scale
//! square wave, −3 dB a full-scale sine).
//!
//! - **WAV** ([`decode_wav`]): RIFF/WAVE through `hound`, PCM 8–32-bit
//!   integer or 32-bit float, any channel count; written back
//!   ([`encode_wav`]) as 16-bit PCM.
//! - **Resampling** ([`resample`]): `rubato`'s synchronous FFT resampler
//!   (`Fft`, fixed ratio, anti-aliased), the whole clip at once, its delay
//!   trimmed, so the output has `round(frames · to / from)` frames.
//! - **VAD** ([`vad`]): RMS level of 20 ms frames (hop 20 ms). The threshold
//!   is `threshold_db` when given, else adaptive to the clip:
//!   `max(noise floor + 10 dB, speech level − 40 dB, −70 dBFS)`, the noise
//!   floor being the 10th percentile of the frame levels and the speech
//!   level the 95th. A segment opens at the first frame above the threshold
//!   and stays open through up to `hangover_seconds` (default 0.3) of frames
//!   below it; it ends at its last loud frame plus the hangover (within the
//!   clip). Segments whose loud span (first to last loud frame) is shorter
//!   than `min_speech_seconds` (default 0.1) are dropped.
//! - **Pitch** ([`yin`]): YIN (de Cheveigné & Kawahara 2002): the cumulative
//!   mean normalised difference of a 25 ms window, the first dip below 0.15
//!   between 50 and 500 Hz, refined by parabolic interpolation; `None` when
//!   no dip goes below (unvoiced or silent).
//! - **Speaking rate** ([`profile`]): syllable nuclei after de Jong & Wempe
//!   (2009): peaks of the 10 ms level contour that are voiced (YIN finds a
//!   pitch), above the VAD threshold, and stand out by at least 2 dB from
//!   the dip before them (since the previous nucleus), at least 0.1 s apart;
//!   nuclei per second of speech (the VAD segments' loud spans).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::config::media::MediaSettings;
use crate::core::ErrorCode;

/// Frame length and hop of the VAD, seconds.
pub const VAD_FRAME_SECONDS: f64 = 0.02;
/// Default silence kept inside a segment before it ends, seconds.
pub const DEFAULT_HANGOVER_SECONDS: f64 = 0.3;
/// Default shortest segment kept (loud span), seconds.
pub const DEFAULT_MIN_SPEECH_SECONDS: f64 = 0.1;
/// Sample rate of the voice analysis (pitch, energy contour), Hz.
pub const ANALYSIS_RATE: u32 = 16_000;
/// Lowest pitch looked for, Hz.
pub const MIN_PITCH_HZ: f32 = 50.0;
/// Highest pitch looked for, Hz.
pub const MAX_PITCH_HZ: f32 = 500.0;
/// YIN's threshold on the cumulative mean normalised difference.
pub const YIN_THRESHOLD: f32 = 0.15;
/// YIN's analysis window, seconds.
pub const YIN_WINDOW_SECONDS: f64 = 0.025;
/// Hop of the voice-profile contours, seconds.
pub const PROFILE_HOP_SECONDS: f64 = 0.01;
/// Peak level of a normalised clip, full scale (−1 dBFS peak).
pub const NORMALISED_PEAK: f32 = 0.891;
/// Floor of a frame's level, dBFS (digital silence).
const SILENCE_DB: f64 = -120.0;

/// Why audio could not be read or processed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Neither or both of `wav_base64` and `path`.
    #[error("give exactly one of `wav_base64` and `path`")]
    Source,
    /// An option out of its range (for calls that skip the bus's schema check).
    #[error("{0}")]
    Invalid(String),
    /// `wav_base64` is not base64.
    #[error("wav_base64 is not valid base64: {0}")]
    Base64(String),
    /// The bytes are not a WAV file this reader takes.
    #[error("not a readable WAV file: {0}")]
    NotWav(String),
    /// A `path` input while `media.roots` is empty.
    #[error("path inputs are refused: no media root is configured (media.roots); send wav_base64 instead")]
    NoRoots,
    /// A path outside every media root.
    #[error("{path} is outside the media roots ({why})")]
    Outside {
        /// The path as given.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// No such file under any media root.
    #[error("no file {path} under the media roots")]
    Missing {
        /// The path as given.
        path: String,
    },
    /// The file is larger than `media.max_file_bytes`.
    #[error("{path} has {size} bytes, more than media.max_file_bytes ({max})")]
    TooLarge {
        /// The path as given.
        path: String,
        /// Its size, bytes.
        size: u64,
        /// The limit, bytes.
        max: u64,
    },
    /// Reading the file failed.
    #[error("reading {path}: {error}")]
    Io {
        /// The path as given.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The resampler refused or failed (a bug: the rates are checked before).
    #[error("resampling failed: {0}")]
    Resample(String),
}

impl AudioError {
    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AudioError::Source
            | AudioError::Invalid(_)
            | AudioError::Base64(_)
            | AudioError::NotWav(_)
            | AudioError::TooLarge { .. } => ErrorCode::InvalidField,
            AudioError::NoRoots | AudioError::Outside { .. } => ErrorCode::Forbidden,
            AudioError::Missing { .. } => ErrorCode::NotFound,
            AudioError::Io { .. } | AudioError::Resample(_) => ErrorCode::Internal,
        }
    }

    /// The `outcome` label of `agentvisor_audio_ops_total`.
    pub fn outcome(&self) -> &'static str {
        match self.code() {
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            _ => "error",
        }
    }
}

/// Decoded audio: interleaved samples in −1…1.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Samples per second per channel, Hz.
    pub sample_rate: u32,
    /// Channels (interleaved in `samples`).
    pub channels: u16,
    /// Interleaved samples, full scale −1…1.
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Length, seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }

    /// The mean of the channels, frame by frame.
    pub fn mono(&self) -> Vec<f32> {
        let c = usize::from(self.channels.max(1));
        if c == 1 {
            return self.samples.clone();
        }
        self.samples.chunks_exact(c).map(|f| f.iter().sum::<f32>() / c as f32).collect()
    }
}

/// Decodes a WAV file (PCM 8–32-bit integer or 32-bit float).
///
/// # Errors
/// [`AudioError::NotWav`] when the bytes are not such a file, or are cut short.
pub fn decode_wav(bytes: &[u8]) -> Result<Pcm, AudioError> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| AudioError::NotWav(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(AudioError::NotWav(format!("{} channels at {} Hz", spec.channels, spec.sample_rate)));
    }
    let samples: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.into_samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect()
        }
    };
    let samples = samples.map_err(|e| AudioError::NotWav(e.to_string()))?;
    Ok(Pcm { sample_rate: spec.sample_rate, channels: spec.channels, samples })
}

/// Encodes interleaved samples as a 16-bit PCM WAV file (clipped to −1…1).
pub fn encode_wav(pcm: &Pcm) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: pcm.channels.max(1),
        sample_rate: pcm.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = Vec::with_capacity(44 + 2 * pcm.samples.len());
    {
        // Writing to memory fails only on a bug (wrong sample count).
        let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).expect("WAV header to memory");
        let mut w16 = w.get_i16_writer(pcm.samples.len() as u32);
        for &s in &pcm.samples {
            w16.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
        }
        w16.flush().expect("WAV samples to memory");
        w.finalize().expect("WAV to memory");
    }
    bytes
}

/// Resamples interleaved `samples` of `channels` channels from `from` Hz to
/// `to` Hz (rubato's FFT resampler over the whole clip, delay trimmed).
///
/// # Errors
/// [`AudioError::Resample`] when rubato refuses the rates (zero).
pub fn resample(samples: &[f32], channels: usize, from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler};
    let channels = channels.max(1);
    let frames = samples.len() / channels;
    if from == to || frames == 0 {
        return Ok(samples[..frames * channels].to_vec());
    }
    let fail = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
    let mut r = Fft::<f32>::new(from as usize, to as usize, 1024, channels, FixedSync::Input).map_err(|e| fail(&e))?;
    let input = InterleavedSlice::new(&samples[..frames * channels], channels, frames).map_err(|e| fail(&e))?;
    let out = r.process_all(&input, frames, None).map_err(|e| fail(&e))?;
    Ok(out.take_data())
}

/// Scales `samples` so that their peak is [`NORMALISED_PEAK`]; silence is
/// left alone. Answers the gain applied.
pub fn normalise_peak(samples: &mut [f32]) -> f32 {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak < 1e-6 {
        return 1.0;
    }
    let gain = NORMALISED_PEAK / peak;
    for s in samples.iter_mut() {
        *s *= gain;
    }
    gain
}

/// RMS of `frame`, 0…1 of full scale.
pub fn rms(frame: &[f32]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    (frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / frame.len() as f64).sqrt()
}

/// `rms` in dBFS, floored at −120 dB.
pub fn level_db(rms: f64) -> f64 {
    if rms <= 0.0 { SILENCE_DB } else { (20.0 * rms.log10()).max(SILENCE_DB) }
}

/// The options of [`vad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadOptions {
    /// Fixed threshold, dBFS; `None`: adaptive to the clip.
    pub threshold_db: Option<f64>,
    /// Silence kept inside a segment before it ends, seconds.
    pub hangover_seconds: f64,
    /// Shortest loud span of a segment kept, seconds.
    pub min_speech_seconds: f64,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            threshold_db: None,
            hangover_seconds: DEFAULT_HANGOVER_SECONDS,
            min_speech_seconds: DEFAULT_MIN_SPEECH_SECONDS,
        }
    }
}

/// A speech segment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Segment {
    /// Start, seconds from the beginning.
    pub start_seconds: f64,
    /// End (last loud frame plus the hangover, within the clip), seconds.
    pub end_seconds: f64,
}

/// What [`vad`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Vad {
    /// The threshold used, dBFS.
    pub threshold_db: f64,
    /// Speech segments, in order.
    pub segments: Vec<Segment>,
    /// Sum of the segments' loud spans (first to last loud frame, no hangover), seconds.
    pub loud_seconds: f64,
}

impl Vad {
    /// Total length of the segments, seconds.
    pub fn speech_seconds(&self) -> f64 {
        self.segments.iter().map(|s| s.end_seconds - s.start_seconds).sum()
    }
}

/// The level of each [`VAD_FRAME_SECONDS`] frame of `mono`, dBFS (the last,
/// partial frame included).
fn frame_levels(mono: &[f32], rate: u32) -> (usize, Vec<f64>) {
    let len = ((f64::from(rate) * VAD_FRAME_SECONDS).round() as usize).max(1);
    (len, mono.chunks(len).map(|f| level_db(rms(f))).collect())
}

/// The adaptive threshold of frame levels `levels`, dBFS.
pub fn adaptive_threshold(levels: &[f64]) -> f64 {
    if levels.is_empty() {
        return 0.0;
    }
    let mut sorted = levels.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (noise, speech) = (at(0.10), at(0.95));
    (noise + 10.0).max(speech - 40.0).max(-70.0)
}

/// Energy-based voice activity detection over `mono` at `rate` Hz (see the
/// module doc for the method).
pub fn vad(mono: &[f32], rate: u32, opts: &VadOptions) -> Vad {
    let (len, levels) = frame_levels(mono, rate);
    let threshold_db = opts.threshold_db.unwrap_or_else(|| adaptive_threshold(&levels));
    let frame_s = len as f64 / f64::from(rate.max(1));
    let duration = mono.len() as f64 / f64::from(rate.max(1));
    let hang_frames = (opts.hangover_seconds / frame_s).round() as usize;
    let mut segments = Vec::new();
    let mut loud_seconds = 0.0;
    let mut close = |first: usize, last: usize| {
        let start = first as f64 * frame_s;
        let loud_end = ((last + 1) as f64 * frame_s).min(duration);
        if loud_end - start + 1e-9 >= opts.min_speech_seconds {
            loud_seconds += loud_end - start;
            segments
                .push(Segment { start_seconds: start, end_seconds: (loud_end + opts.hangover_seconds).min(duration) });
        }
    };
    let mut open: Option<(usize, usize)> = None;
    for (i, &db) in levels.iter().enumerate() {
        if db >= threshold_db {
            open = Some(open.map_or((i, i), |(first, _)| (first, i)));
        } else if let Some((first, last)) = open
            && i - last > hang_frames
        {
            close(first, last);
            open = None;
        }
    }
    if let Some((first, last)) = open {
        close(first, last);
    }
    Vad { threshold_db, segments, loud_seconds }
}

/// The pitch of the signal starting at `x[0]`, Hz, by YIN over a window of
/// `window` samples between [`MIN_PITCH_HZ`] and [`MAX_PITCH_HZ`]; `None`
/// when unvoiced, silent, or `x` is shorter than the window plus the
/// longest period.
pub fn yin(x: &[f32], rate: u32, window: usize) -> Option<f32> {
    let rate_f = rate as f32;
    let tau_min = ((rate_f / MAX_PITCH_HZ).floor() as usize).max(2);
    let tau_max = (rate_f / MIN_PITCH_HZ).ceil() as usize;
    if window == 0 || x.len() < window + tau_max + 2 {
        return None;
    }
    // d(τ) and the cumulative mean normalised difference d'(τ).
    let mut cmnd = vec![1.0f32; tau_max + 2];
    let mut running = 0.0f32;
    for (tau, c) in cmnd.iter_mut().enumerate().skip(1) {
        let d: f32 = x[..window].iter().zip(&x[tau..tau + window]).map(|(a, b)| (a - b) * (a - b)).sum();
        running += d;
        *c = if running > 0.0 { d * tau as f32 / running } else { 1.0 };
    }
    let mut tau = tau_min;
    while tau <= tau_max {
        if cmnd[tau] < YIN_THRESHOLD {
            while tau < tau_max && cmnd[tau + 1] < cmnd[tau] {
                tau += 1;
            }
            break;
        }
        tau += 1;
    }
    if tau > tau_max {
        return None;
    }
    let (a, b, c) = (cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]);
    let den = a - 2.0 * b + c;
    let shift = if den.abs() > 1e-9 { (0.5 * (a - c) / den).clamp(-1.0, 1.0) } else { 0.0 };
    Some(rate_f / (tau as f32 + shift))
}

/// One analysis frame of [`contours`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Frame start, seconds.
    pub start_seconds: f64,
    /// Pitch, Hz; `None`: unvoiced.
    pub pitch_hz: Option<f32>,
    /// RMS of the frame, 0…1 of full scale.
    pub energy_rms: f64,
}

/// Pitch and energy of `mono` at `rate` Hz every `hop_seconds`: energy over
/// `hop_seconds`, pitch over max(`hop_seconds`, [`YIN_WINDOW_SECONDS`]).
pub fn contours(mono: &[f32], rate: u32, hop_seconds: f64) -> Vec<Frame> {
    let hop = ((f64::from(rate) * hop_seconds).round() as usize).max(1);
    let window = ((f64::from(rate) * hop_seconds.max(YIN_WINDOW_SECONDS)).round() as usize).max(1);
    (0..mono.len().div_ceil(hop))
        .map(|i| {
            let at = i * hop;
            let energy_rms = rms(&mono[at..(at + hop).min(mono.len())]);
            Frame { start_seconds: at as f64 / f64::from(rate), pitch_hz: yin(&mono[at..], rate, window), energy_rms }
        })
        .collect()
}

/// Summary voice features of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Length, seconds.
    pub duration_seconds: f64,
    /// Share of analysis frames with a pitch inside the speech segments, of all frames.
    pub voiced_ratio: f64,
    /// Pitches of the voiced frames, Hz.
    pub pitches: Vec<f32>,
    /// RMS over the speech segments (the whole clip when there are none), 0…1.
    pub energy_rms: f64,
    /// Syllable nuclei found.
    pub nuclei: usize,
    /// The voice activity found.
    pub vad: Vad,
}

/// Whether `t` (seconds) lies inside one of `segments`.
fn in_speech(segments: &[Segment], t: f64) -> bool {
    segments.iter().any(|s| s.start_seconds <= t && t < s.end_seconds)
}

/// Voice features of `mono` at [`ANALYSIS_RATE`] (see the module doc).
pub fn profile(mono: &[f32], rate: u32) -> Profile {
    let vad = vad(mono, rate, &VadOptions::default());
    let frames = contours(mono, rate, PROFILE_HOP_SECONDS);
    let voiced: Vec<&Frame> =
        frames.iter().filter(|f| f.pitch_hz.is_some() && in_speech(&vad.segments, f.start_seconds)).collect();
    let pitches: Vec<f32> = voiced.iter().filter_map(|f| f.pitch_hz).collect();
    let voiced_ratio = if frames.is_empty() { 0.0 } else { voiced.len() as f64 / frames.len() as f64 };
    // Energy over the speech segments.
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for s in &vad.segments {
        let a = ((s.start_seconds * f64::from(rate)) as usize).min(mono.len());
        let b = ((s.end_seconds * f64::from(rate)) as usize).min(mono.len());
        sum += mono[a..b].iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        n += b - a;
    }
    let energy_rms = if n > 0 { (sum / n as f64).sqrt() } else { rms(mono) };
    let nuclei = syllable_nuclei(&frames, vad.threshold_db, &vad.segments);
    Profile {
        duration_seconds: mono.len() as f64 / f64::from(rate.max(1)),
        voiced_ratio,
        pitches,
        energy_rms,
        nuclei,
        vad,
    }
}

/// Least rise of a nucleus above the dip before it, dB.
const NUCLEUS_DIP_DB: f64 = 2.0;
/// Least time between two nuclei, seconds.
const NUCLEUS_MIN_GAP_SECONDS: f64 = 0.1;

/// Counts syllable nuclei in `frames`: voiced local maxima of the level
/// above `threshold_db` inside `segments`, each at least 2 dB above the
/// lowest level since the previous nucleus and 0.1 s after it.
fn syllable_nuclei(frames: &[Frame], threshold_db: f64, segments: &[Segment]) -> usize {
    let db: Vec<f64> = frames.iter().map(|f| level_db(f.energy_rms)).collect();
    let mut count = 0;
    let mut dip = f64::INFINITY;
    let mut last: Option<f64> = None;
    for i in 0..frames.len() {
        dip = dip.min(db[i]);
        let is_peak = (i == 0 || db[i] > db[i - 1]) && (i + 1 == frames.len() || db[i] >= db[i + 1]);
        if !is_peak || db[i] < threshold_db || frames[i].pitch_hz.is_none() {
            continue;
        }
        if !in_speech(segments, frames[i].start_seconds) || db[i] - dip < NUCLEUS_DIP_DB {
            continue;
        }
        if last.is_some_and(|t| frames[i].start_seconds - t < NUCLEUS_MIN_GAP_SECONDS) {
            continue;
        }
        count += 1;
        last = Some(frames[i].start_seconds);
        dip = db[i];
    }
    count
}

/// The real path of `path` under `settings.roots`: a relative path is
/// looked up under each root in order, an absolute one must lie inside one;
/// links are resolved before the check.
///
/// # Errors
/// [`AudioError::NoRoots`] when no root is configured; [`AudioError::Outside`]
/// for a `..` component or a real location outside every root;
/// [`AudioError::Missing`] when no such file exists.
pub fn resolve_media_path(settings: &MediaSettings, path: &str) -> Result<PathBuf, AudioError> {
    if settings.roots.is_empty() {
        return Err(AudioError::NoRoots);
    }
    let outside = |why| AudioError::Outside { path: path.into(), why };
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(outside("`..` is not allowed"));
    }
    let roots: Vec<PathBuf> = settings.roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    let candidates: Vec<PathBuf> =
        if p.is_absolute() { vec![p.to_path_buf()] } else { roots.iter().map(|r| r.join(p)).collect() };
    let mut escaped = false;
    for c in candidates {
        match c.canonicalize() {
            Ok(real) if roots.iter().any(|r| real.starts_with(r)) => return Ok(real),
            Ok(_) => escaped = true,
            Err(_) => {}
        }
    }
    if escaped {
        Err(outside(if p.is_absolute() {
            "not inside any root, symbolic links resolved"
        } else {
            "a symbolic link leads out of the root"
        }))
    } else if p.is_absolute() && !roots.iter().chain(&settings.roots).any(|r| p.starts_with(r)) {
        Err(outside("not inside any root"))
    } else {
        Err(AudioError::Missing { path: path.into() })
    }
}

/// The bytes of the WAV given by `wav_base64` or `path` (exactly one).
///
/// # Errors
/// [`AudioError::Source`] without exactly one; the errors of
/// [`resolve_media_path`]; [`AudioError::Base64`], [`AudioError::TooLarge`],
/// [`AudioError::Io`].
pub fn wav_bytes(
    settings: &MediaSettings,
    wav_base64: Option<&str>,
    path: Option<&str>,
) -> Result<Vec<u8>, AudioError> {
    use base64::Engine as _;
    match (wav_base64, path) {
        (Some(b64), None) => {
            base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| AudioError::Base64(e.to_string()))
        }
        (None, Some(path)) => {
            let real = resolve_media_path(settings, path)?;
            let io = |error| AudioError::Io { path: path.into(), error };
            let meta = std::fs::metadata(&real).map_err(io)?;
            if !meta.is_file() {
                return Err(AudioError::Invalid(format!("{path} is not a file")));
            }
            let size = meta.len();
            if size > settings.max_file_bytes {
                return Err(AudioError::TooLarge { path: path.into(), size, max: settings.max_file_bytes });
            }
            std::fs::read(&real).map_err(|error| AudioError::Io { path: path.into(), error })
        }
        _ => Err(AudioError::Source),
    }
}

/// Runs `f` on the blocking pool for `agent`'s operation `op`; counts its
/// outcome (`agentvisor_audio_ops_total{op,outcome}`) and logs a refusal.
///
/// # Errors
/// `f`'s error with its code; `internal` when the blocking task panicked.
pub(crate) async fn run_blocking<T: Send + 'static>(
    metrics: &crate::telemetry::metrics::Metrics,
    agent: &'static str,
    op: &'static str,
    f: impl FnOnce() -> Result<T, AudioError> + Send + 'static,
) -> Result<T, crate::core::TaskError> {
    let result = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::core::TaskError::new(ErrorCode::Internal, format!("{op}: {e}")))?;
    match result {
        Ok(v) => {
            metrics.audio_ops.with_label_values(&[op, "ok"]).inc();
            Ok(v)
        }
        Err(e) => {
            metrics.audio_ops.with_label_values(&[op, e.outcome()]).inc();
            tracing::info!(agent, op, error = %e, "audio input refused");
            Err(crate::core::TaskError::new(e.code(), e.to_string()))
        }
    }
}

/// The decoded WAV given by `wav_base64` or `path` (exactly one); a WAV
/// error names the path.
///
/// # Errors
/// Those of [`wav_bytes`] and [`decode_wav`].
pub fn load_wav(settings: &MediaSettings, wav_base64: Option<&str>, path: Option<&str>) -> Result<Pcm, AudioError> {
    decode_wav(&wav_bytes(settings, wav_base64, path)?).map_err(|e| match (e, path) {
        (AudioError::NotWav(why), Some(p)) => AudioError::NotWav(format!("{p}: {why}")),
        (e, _) => e,
    })
}

/// Base64 (standard alphabet, padded) of `bytes`.
pub fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, rate: u32, seconds: f64, amp: f32) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let w = std::f32::consts::TAU * hz * t;
                amp * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin()) / 1.75
            })
            .collect()
    }

    #[test]
    fn wav_round_trip_resample_and_yin() {
        let pcm = Pcm { sample_rate: 16_000, channels: 1, samples: tone(150.0, 16_000, 0.5, 0.5) };
        let back = decode_wav(&encode_wav(&pcm)).unwrap();
        assert_eq!((back.sample_rate, back.channels, back.frames()), (16_000, 1, 8000));
        assert!(back.samples.iter().zip(&pcm.samples).all(|(a, b)| (a - b).abs() < 1e-3));
        assert!(matches!(decode_wav(b"RIFFnope"), Err(AudioError::NotWav(_))));
        let up = resample(&pcm.samples, 1, 16_000, 44_100).unwrap();
        assert_eq!(up.len(), 22_050);
        let tiny = resample(&pcm.samples[..16], 1, 16_000, 8_000).unwrap();
        assert_eq!(tiny.len(), 8);
        let p = yin(&pcm.samples[4000..], 16_000, 400).unwrap();
        assert!((p - 150.0).abs() < 1.0, "{p}");
        assert_eq!(yin(&[0.0; 2000], 16_000, 400), None);
    }

    #[test]
    fn vad_finds_a_burst_between_silences() {
        let rate = 16_000;
        let mut x = vec![0.0f32; rate as usize];
        x.extend(tone(150.0, rate, 1.0, 0.5));
        x.extend(vec![0.0f32; rate as usize]);
        let v = vad(&x, rate, &VadOptions::default());
        assert_eq!(v.segments.len(), 1, "{v:?}");
        let s = v.segments[0];
        assert!((s.start_seconds - 1.0).abs() < 0.03 && (s.end_seconds - 2.3).abs() < 0.03, "{s:?}");
        let none = vad(&vec![0.0; 16_000], rate, &VadOptions::default());
        assert!(none.segments.is_empty());
    }
}
