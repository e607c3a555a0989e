//! The pure-Rust audio agents (issue 20) over real ZeroMQ against a real
//! fleet: FusedAudioPreprocessor (VAD edges of tones between silences,
//! 44.1 kHz stereo resampled to 16 kHz mono, preprocessing), by
//! `wav_base64` and by `path` under `media.roots` (a path outside, a
//! symbolic link out, `..`, a missing file, a file that is not a WAV);
//! VoiceProfilingAgent (the pitch of 150 Hz and 220 Hz tones, the rate of
//! a 4 Hz syllable-like envelope); both on espeak-ng's speech when it is
//! installed; WakeWordDetector (exact, fuzzy, absent, reconfigured);
//! StreamingLanguageAnalyzer (short sentences in eight languages; routing
//! to TranslationService behind a fake model backend, and its `no_backend`
//! passed through). The WAVs are made in the test with `hound`.

use std::f32::consts::TAU;
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use agentvisor::config::Tier;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// The audio profile (`tests/fixtures/audio.yaml`).
fn profile() -> String {
    util::fixture("audio.yaml").display().to_string()
}

/// Sends one task, returns its reply (chunks skipped).
async fn call(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    util::send_json(bus, &json!({"id": id, "type": task_type, "input": input, "deadline_ms": 120_000})).await;
    loop {
        let r = util::recv_json_within(bus, Duration::from_secs(120)).await;
        if r.get("event").is_none() && r["id"] == json!(id) {
            return r;
        }
    }
}

/// The output of an `ok` reply.
async fn ok(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let r = call(bus, task_type, input.clone()).await;
    assert_eq!(r["status"], "ok", "{task_type}: {r}");
    r["output"].clone()
}

/// The error (code, message) of an `error` reply.
async fn err(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> (String, String) {
    let r = call(bus, task_type, input.clone()).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    (r["error"]["code"].as_str().unwrap_or("").into(), r["error"]["message"].as_str().unwrap_or("").into())
}

/// A piece of a synthetic clip: silence, or a harmonic tone (fundamental
/// plus 2nd and 3rd harmonics) with 20 ms raised-cosine ramps, optionally
/// amplitude-modulated like syllables (`syllables_hz` > 0).
#[derive(Clone, Copy)]
enum Piece {
    Silence(f64),
    Tone { hz: f32, seconds: f64, syllables_hz: f32 },
}

/// Mono samples of `pieces` at `rate`, with low deterministic noise (−66 dBFS
/// RMS) everywhere, like a quiet room.
fn synth(pieces: &[Piece], rate: u32) -> Vec<f32> {
    let mut out = Vec::new();
    let mut seed = 0x2545_f491_u32;
    for p in pieces {
        let (n, tone) = match *p {
            Piece::Silence(s) => ((s * f64::from(rate)) as usize, None),
            Piece::Tone { hz, seconds, syllables_hz } => {
                ((seconds * f64::from(rate)) as usize, Some((hz, syllables_hz)))
            }
        };
        let ramp = (0.02 * rate as f32) as usize;
        for i in 0..n {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 0.0017;
            let mut v = noise;
            if let Some((hz, syl)) = tone {
                let t = i as f32 / rate as f32;
                let w = TAU * hz * t;
                let mut a = 0.5 * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin()) / 1.75;
                let edge = i.min(n - 1 - i);
                if edge < ramp {
                    a *= 0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / ramp as f32).cos();
                }
                if syl > 0.0 {
                    a *= (std::f32::consts::PI * syl * t).sin().powi(2);
                }
                v += a;
            }
            out.push(v);
        }
    }
    out
}

/// A 16-bit PCM WAV of interleaved `samples`.
fn wav(samples: &[f32], rate: u32, channels: u16) -> Vec<u8> {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut bytes = Vec::new();
    let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a base64 WAV: (rate, channels, bits, samples as f32).
fn unwav(b64: &Value) -> (u32, u16, u16, Vec<f32>) {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
    let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
    let spec = r.spec();
    let samples = r.into_samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect();
    (spec.sample_rate, spec.channels, spec.bits_per_sample, samples)
}

/// (start, end) of each segment.
fn segments(out: &Value) -> Vec<(f64, f64)> {
    out["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start_seconds"].as_f64().unwrap(), s["end_seconds"].as_f64().unwrap()))
        .collect()
}

/// Each found segment within `hangover + 50 ms` of its true edges (the end
/// may run on by the hangover, never end early by more than 50 ms).
fn assert_edges(found: &[(f64, f64)], truth: &[(f64, f64)], hangover: f64) {
    assert_eq!(found.len(), truth.len(), "found {found:?}, true {truth:?}");
    for (&(s, e), &(ts, te)) in found.iter().zip(truth) {
        assert!((s - ts).abs() <= hangover + 0.05, "start {s} vs {ts} ({found:?})");
        assert!(e >= te - 0.05 && e <= te + hangover + 0.05, "end {e} vs {te} ({found:?})");
    }
}

/// Tones between silences: (clip, true speech edges).
fn speech_between_silences(rate: u32) -> (Vec<f32>, Vec<(f64, f64)>) {
    let pieces = [
        Piece::Silence(0.5),
        Piece::Tone { hz: 150.0, seconds: 1.0, syllables_hz: 0.0 },
        Piece::Silence(0.8),
        Piece::Tone { hz: 220.0, seconds: 0.6, syllables_hz: 0.0 },
        Piece::Silence(0.5),
    ];
    (synth(&pieces, rate), vec![(0.5, 1.5), (2.3, 2.9)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_preprocessing_voice_profiles_and_media_paths() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let roots = vec![media.clone()];
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), move |s| s.media.roots = roots).await;
    let mut bus = util::dealer(&ingress).await;

    // VAD: two tones between silences, found within hangover + 50 ms of their edges.
    let (clip, truth) = speech_between_silences(16_000);
    let clip_wav = wav(&clip, 16_000, 1);
    let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav)})).await;
    assert_edges(&segments(&v), &truth, 0.3);
    assert!((v["duration_seconds"].as_f64().unwrap() - 3.4).abs() < 0.001, "{v}");
    let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav), "hangover_seconds": 0.1})).await;
    assert_edges(&segments(&v), &truth, 0.1);
    // A hangover longer than the 0.8 s pause joins the two.
    let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav), "hangover_seconds": 1.0})).await;
    assert_eq!(segments(&v).len(), 1, "{v}");
    // A fixed threshold above the tones finds nothing; min_speech drops the 0.6 s tone.
    let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav), "threshold_db": -1.0})).await;
    assert_eq!((segments(&v).len(), v["speech_seconds"].as_f64()), (0, Some(0.0)), "{v}");
    let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav), "min_speech_seconds": 0.8})).await;
    assert_edges(&segments(&v), &truth[..1], 0.3);

    // Resampling: 44.1 kHz stereo → 16 kHz mono keeps the duration.
    let (clip44, _) = speech_between_silences(44_100);
    let stereo: Vec<f32> = clip44.iter().flat_map(|&s| [s, 0.5 * s]).collect();
    let stereo_wav = wav(&stereo, 44_100, 2);
    let r = ok(&mut bus, "audio.resample", json!({"wav_base64": b64(&stereo_wav), "sample_rate": 16_000})).await;
    let (rate, channels, bits, samples) = unwav(&r["wav_base64"]);
    assert_eq!((rate, channels, bits, r["channels"].as_u64()), (16_000, 1, 16, Some(1)), "{}", r["sample_rate"]);
    assert!((samples.len() as i64 - 54_400).abs() <= 1, "{} frames", samples.len());
    assert!((r["duration_seconds"].as_f64().unwrap() - 3.4).abs() < 0.001, "{}", r["duration_seconds"]);
    assert_eq!(r["bytes"].as_u64(), Some(44 + 2 * samples.len() as u64));
    let r = ok(&mut bus, "audio.resample", json!({"wav_base64": b64(&clip_wav), "sample_rate": 8_000, "channels": 2}))
        .await;
    let (rate, channels, _, samples) = unwav(&r["wav_base64"]);
    assert_eq!((rate, channels, samples.len()), (8_000, 2, 2 * 27_200));

    // Preprocessing: 16 kHz mono, peak at −1 dBFS, the same segments.
    let p = ok(&mut bus, "audio.preprocess", json!({"wav_base64": b64(&stereo_wav)})).await;
    let (rate, channels, bits, samples) = unwav(&p["wav_base64"]);
    assert_eq!((rate, channels, bits, p["sample_rate"].as_u64()), (16_000, 1, 16, Some(16_000)));
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!((peak - 0.891).abs() < 0.01, "peak {peak}");
    assert_edges(&segments(&p), &truth, 0.3);
    let p = ok(
        &mut bus,
        "audio.preprocess",
        json!({"wav_base64": b64(&clip_wav), "sample_rate": 8000, "normalize": false}),
    )
    .await;
    let (_, _, _, samples) = unwav(&p["wav_base64"]);
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak < 0.6, "not normalised: {peak}");

    // Voice profiles: the pitch of a tone within 3 Hz.
    for hz in [150.0f32, 220.0] {
        let tone = synth(
            &[Piece::Silence(0.3), Piece::Tone { hz, seconds: 1.0, syllables_hz: 0.0 }, Piece::Silence(0.3)],
            22_050,
        );
        let prof = ok(&mut bus, "voice.profile", json!({"wav_base64": b64(&wav(&tone, 22_050, 1))})).await;
        let mean = prof["pitch_mean_hz"].as_f64().unwrap();
        let median = prof["pitch_median_hz"].as_f64().unwrap();
        assert!((mean - f64::from(hz)).abs() < 3.0 && (median - f64::from(hz)).abs() < 3.0, "{hz} Hz: {prof}");
        assert!(prof["pitch_stddev_hz"].as_f64().unwrap() < 5.0, "{prof}");
        let voiced = prof["voiced_ratio"].as_f64().unwrap();
        assert!((0.5..0.8).contains(&voiced), "1 s voiced of 1.6 s: {prof}");
        assert!(prof["energy_db"].as_f64().unwrap() < -5.0 && prof["energy_rms"].as_f64().unwrap() > 0.1, "{prof}");
    }
    // Speaking rate: a 4 Hz syllable envelope over 2 s is 8 nuclei, 4 per second.
    let syllables = synth(
        &[Piece::Silence(0.5), Piece::Tone { hz: 130.0, seconds: 2.0, syllables_hz: 4.0 }, Piece::Silence(0.5)],
        16_000,
    );
    let prof = ok(&mut bus, "voice.profile", json!({"wav_base64": b64(&wav(&syllables, 16_000, 1))})).await;
    let rate = prof["speaking_rate_syllables_per_second"].as_f64().unwrap();
    assert!((3.0..=5.0).contains(&rate), "{prof}");
    // Silence: no pitch, no rate.
    let quiet = synth(&[Piece::Silence(1.0)], 16_000);
    let prof = ok(&mut bus, "voice.profile", json!({"wav_base64": b64(&wav(&quiet, 16_000, 1))})).await;
    assert_eq!(
        (&prof["pitch_mean_hz"], &prof["speaking_rate_syllables_per_second"]),
        (&Value::Null, &Value::Null),
        "{prof}"
    );
    // Frame by frame: 20 ms frames, the tone's pitch in its middle, none in the silence.
    let f = ok(&mut bus, "voice.features", json!({"wav_base64": b64(&clip_wav)})).await;
    let frames = f["frames"].as_array().unwrap();
    assert_eq!((f["frame_seconds"].as_f64(), frames.len()), (Some(0.02), 170));
    let at = |t: f64| frames.iter().find(|fr| (fr["start_seconds"].as_f64().unwrap() - t).abs() < 0.005).unwrap();
    assert!((at(1.0)["pitch_hz"].as_f64().unwrap() - 150.0).abs() < 3.0, "{}", at(1.0));
    assert!((at(2.6)["pitch_hz"].as_f64().unwrap() - 220.0).abs() < 3.0, "{}", at(2.6));
    assert_eq!(at(0.2)["pitch_hz"], Value::Null);
    let f = ok(&mut bus, "voice.features", json!({"wav_base64": b64(&clip_wav), "frame_seconds": 0.1})).await;
    assert_eq!(f["frames"].as_array().unwrap().len(), 34);

    // By path: inside the root (relative and absolute), outside, a link out, `..`, missing, not a WAV.
    std::fs::write(media.join("clip.wav"), &clip_wav).unwrap();
    std::fs::write(outside.join("secret.wav"), &clip_wav).unwrap();
    std::fs::write(media.join("notes.wav"), "these are not samples").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.wav"), media.join("escape.wav")).unwrap();
    let v = ok(&mut bus, "audio.vad", json!({"path": "clip.wav"})).await;
    assert_edges(&segments(&v), &truth, 0.3);
    let abs = media.join("clip.wav").display().to_string();
    let prof = ok(&mut bus, "voice.profile", json!({"path": abs})).await;
    assert!(prof["pitch_mean_hz"].as_f64().is_some(), "{prof}");
    ok(&mut bus, "audio.preprocess", json!({"path": "clip.wav"})).await;
    let secret = outside.join("secret.wav").display().to_string();
    for (task_type, path, code) in [
        ("audio.vad", secret.as_str(), "forbidden"),
        ("audio.preprocess", "escape.wav", "forbidden"),
        ("voice.profile", "escape.wav", "forbidden"),
        ("audio.vad", "../outside/secret.wav", "forbidden"),
        ("audio.vad", "nope.wav", "not_found"),
        ("audio.resample", "notes.wav", "invalid_field"),
    ] {
        let mut input = json!({"path": path});
        if task_type == "audio.resample" {
            input["sample_rate"] = json!(8000);
        }
        let (c, m) = err(&mut bus, task_type, input).await;
        assert_eq!(c, code, "{task_type} {path}: {m}");
        assert!(m.contains(path), "{m}");
    }
    // Bad inputs get stable codes.
    let (c, m) = err(&mut bus, "audio.vad", json!({"wav_base64": "not base64!"})).await;
    assert_eq!(c, "invalid_field", "{m}");
    let (c, m) = err(&mut bus, "audio.vad", json!({"wav_base64": b64(b"RIFF....WAVEjunk")})).await;
    assert_eq!((c.as_str(), m.contains("not a readable WAV")), ("invalid_field", true), "{m}");
    let (c, _) = err(&mut bus, "audio.vad", json!({"wav_base64": b64(&clip_wav), "path": "clip.wav"})).await;
    assert_eq!(c, "invalid_field");
    let (c, _) = err(&mut bus, "audio.resample", json!({"wav_base64": b64(&clip_wav), "sample_rate": 100})).await;
    assert_eq!(c, "invalid_field");
    let (c, _) = err(&mut bus, "voice.features", json!({"wav_base64": b64(&clip_wav), "frame_seconds": 2})).await;
    assert_eq!(c, "invalid_field");

    // espeak-ng's speech between silences, when espeak-ng is installed.
    if let Some(speech) = espeak(dir.path(), "Turn on the kitchen lights at seven tomorrow morning, please.") {
        let (rate, mono) = speech;
        let pad = vec![0.0f32; (rate as f64 * 0.7) as usize];
        let mut padded = pad.clone();
        padded.extend(&mono);
        padded.extend(&pad);
        let said = mono.len() as f64 / f64::from(rate);
        let w = wav(&padded, rate, 1);
        let v = ok(&mut bus, "audio.vad", json!({"wav_base64": b64(&w)})).await;
        let found = segments(&v);
        assert!(!found.is_empty(), "{v}");
        assert!(
            found[0].0 >= 0.7 - 0.05 && found.last().unwrap().1 <= 0.7 + said + 0.35,
            "{found:?} of 0.7..{}",
            0.7 + said
        );
        let speech_s = v["speech_seconds"].as_f64().unwrap();
        assert!(speech_s > 0.5 * said, "{speech_s} s of speech in {said} s: {v}");
        let prof = ok(&mut bus, "voice.profile", json!({"wav_base64": b64(&w)})).await;
        let pitch = prof["pitch_mean_hz"].as_f64().unwrap();
        let rate = prof["speaking_rate_syllables_per_second"].as_f64().unwrap();
        assert!((60.0..300.0).contains(&pitch), "{prof}");
        assert!((1.5..10.0).contains(&rate), "{prof}");
        eprintln!("espeak-ng: {said:.2} s spoken, segments {found:?}, profile {prof}");
    }

    fleet.shutdown(Duration::from_secs(10)).await;
}

/// espeak-ng's WAV of `text` as (rate, mono samples); `None` (skipped, and
/// failed in CI) when espeak-ng is not installed.
fn espeak(dir: &Path, text: &str) -> Option<(u32, Vec<f32>)> {
    let out = dir.join("espeak.wav");
    match std::process::Command::new("espeak-ng").arg("-w").arg(&out).arg(text).status() {
        Ok(s) if s.success() => {}
        other => {
            assert!(std::env::var_os("CI").is_none(), "espeak-ng must run in CI (scripts/setup.sh): {other:?}");
            eprintln!("espeak-ng is not available ({other:?}); skipping its part");
            return None;
        }
    }
    let r = hound::WavReader::open(&out).unwrap();
    let spec = r.spec();
    let c = usize::from(spec.channels);
    let s: Vec<f32> = r.into_samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect();
    Some((spec.sample_rate, s.chunks(c).map(|f| f.iter().sum::<f32>() / c as f32).collect()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_words_and_languages() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("What time is it?".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    // Wake words: exact, fuzzy, absent.
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "hey computer, turn on the lights"})).await;
    assert_eq!(d, json!({"detected": true, "word": "hey computer", "score": 1.0, "offset": 0}));
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "Okay. Hey komputer turn on the lights"})).await;
    assert_eq!((&d["detected"], &d["word"], &d["offset"]), (&json!(true), &json!("hey computer"), &json!(6)), "{d}");
    assert!(d["score"].as_f64().unwrap() < 1.0, "{d}");
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "what is the weather like in Paris today"})).await;
    assert_eq!((&d["detected"], &d["word"], &d["offset"]), (&json!(false), &Value::Null, &Value::Null), "{d}");
    assert!(d["score"].as_f64().unwrap() < 0.8, "{d}");
    // Reconfigured: new words, a stricter threshold.
    let c = ok(&mut bus, "wake_word.configure", json!({"words": ["okay fleet", " "], "threshold": 0.95})).await;
    assert_eq!(c, json!({"words": ["okay fleet"], "threshold": 0.95}));
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "okay fleet, status report"})).await;
    assert_eq!((&d["detected"], &d["offset"]), (&json!(true), &json!(0)), "{d}");
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "okay fleat, status report"})).await;
    assert_eq!(d["detected"], json!(false), "0.9 is below 0.95: {d}");
    let d = ok(&mut bus, "wake_word.detect", json!({"text": "hey computer"})).await;
    assert_eq!(d["detected"], json!(false), "{d}");
    for bad in [json!({}), json!({"threshold": 1.5}), json!({"words": []}), json!({"words": ["  "]})] {
        let (c, m) = err(&mut bus, "wake_word.configure", bad.clone()).await;
        assert_eq!(c, "invalid_field", "{bad}: {m}");
    }

    // Language identification of short sentences.
    for (text, code) in [
        ("The weather is lovely today, isn't it?", "eng"),
        ("Bonjour, je voudrais réserver une table pour deux.", "fra"),
        ("Wie spät ist es? Ich muss gleich zum Bahnhof.", "deu"),
        ("¿Dónde está la estación de tren más cercana?", "spa"),
        ("Vorrei un caffè e un cornetto, per favore.", "ita"),
        ("Onde fica a estação de comboios mais próxima?", "por"),
        ("Chciałbym zamówić stolik dla dwóch osób.", "pol"),
        ("Я хотел бы заказать столик на двоих.", "rus"),
    ] {
        let id = ok(&mut bus, "language_identification", json!({"text": text})).await;
        assert_eq!(id["language"], json!(code), "{text}: {id}");
        let c = id["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{id}");
    }
    let (c, _) = err(&mut bus, "language_identification", json!({"text": "1234 !!! ..."})).await;
    assert_eq!(c, "invalid_field");

    // Routing: English stays; German goes to TranslationService (the fake model).
    let r = ok(&mut bus, "language.route", json!({"text": "What time is it in Berlin right now?"})).await;
    assert_eq!(r["translated"], json!(false), "{r}");
    assert_eq!(r["text"], json!("What time is it in Berlin right now?"));
    let before = fake.requests().len();
    let r =
        ok(&mut bus, "language.route", json!({"text": "Wie spät ist es jetzt in Berlin?", "target_language": "en"}))
            .await;
    assert_eq!(
        (&r["language"], &r["translated"], &r["text"]),
        (&json!("deu"), &json!(true), &json!("What time is it?")),
        "{r}"
    );
    let asked = fake.requests()[before..].iter().map(|q| q.body.to_string()).collect::<Vec<_>>().join("\n");
    assert!(asked.contains("to: en") && asked.contains("Wie spät ist es jetzt in Berlin?"), "{asked}");
    let (c, m) =
        err(&mut bus, "language.route", json!({"text": "Hello there, my friend.", "target_language": "klingon"})).await;
    assert_eq!(c, "invalid_field", "{m}");
    fleet.shutdown(Duration::from_secs(10)).await;

    // Without a model backend TranslationService's error comes through, named.
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), &profile(), |_| {}).await;
    let mut bus = util::dealer(&ingress).await;
    let (c, m) = err(&mut bus, "language.route", json!({"text": "Où est la gare, s'il vous plaît ?"})).await;
    assert_eq!(c, "no_backend", "{m}");
    assert!(m.starts_with("TranslationService: "), "{m}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
