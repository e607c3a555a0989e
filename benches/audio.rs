//! Throughput of the audio agents' signal processing (issue 20), on the
//! functions directly (no bus, no base64): voice activity detection of a
//! 60 s 16 kHz mono clip, resampling of a 60 s 44.1 kHz stereo clip to
//! 16 kHz (rubato's FFT resampler), and the voice profile (VAD, YIN pitch
//! every 10 ms, syllable nuclei) of a 10 s 16 kHz clip.
//!
//! The clip alternates 1.5 s of a 150 Hz harmonic tone with 1 s of quiet
//! noise (−66 dBFS), like speech between pauses. Printed to stderr first:
//! seconds of audio processed per second of one core (the median of 5 runs);
//! criterion then measures each, its throughput in samples (frames) per
//! second.
//!
//! Run: `cargo bench --no-default-features --bench audio`.

use std::hint::black_box;
use std::time::Instant;

use agentvisor::agents::builtin::audio::{VadOptions, profile, resample, vad};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `seconds` of speech-like tone bursts between pauses at `rate` Hz, mono.
fn clip(rate: u32, seconds: f64) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut seed = 0x9e37_79b9_u32;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 0.0017;
            let t = i as f32 / rate as f32;
            if t % 2.5 < 1.5 {
                let w = std::f32::consts::TAU * 150.0 * t;
                noise + 0.5 * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin()) / 1.75
            } else {
                noise
            }
        })
        .collect()
}

/// Seconds of audio per second: the median of 5 timed runs of `f` over `audio_seconds`.
fn realtime_factor(audio_seconds: f64, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    audio_seconds / times[2]
}

fn bench(c: &mut Criterion) {
    let mono16 = clip(16_000, 60.0);
    let stereo44: Vec<f32> = clip(44_100, 60.0).into_iter().flat_map(|s| [s, s]).collect();
    let short16 = clip(16_000, 10.0);
    let opts = VadOptions::default();

    let vad_x = realtime_factor(60.0, || drop(black_box(vad(&mono16, 16_000, &opts))));
    let resample_x = realtime_factor(60.0, || drop(black_box(resample(&stereo44, 2, 44_100, 16_000).unwrap())));
    let profile_x = realtime_factor(10.0, || drop(black_box(profile(&short16, 16_000))));
    eprintln!("audio.vad (16 kHz mono):                  {vad_x:>10.0} s of audio per s");
    eprintln!("audio.resample (44.1 kHz stereo -> 16 kHz): {resample_x:>8.0} s of audio per s");
    eprintln!("voice.profile (16 kHz mono):              {profile_x:>10.1} s of audio per s");

    let mut g = c.benchmark_group("audio");
    g.sample_size(20);
    g.throughput(Throughput::Elements(mono16.len() as u64));
    g.bench_function("vad_60s_16k_mono", |b| b.iter(|| vad(black_box(&mono16), 16_000, &opts)));
    g.throughput(Throughput::Elements((stereo44.len() / 2) as u64));
    g.bench_function("resample_60s_44k1_stereo_to_16k", |b| {
        b.iter(|| resample(black_box(&stereo44), 2, 44_100, 16_000).unwrap())
    });
    g.throughput(Throughput::Elements(short16.len() as u64));
    g.bench_function("voice_profile_10s_16k", |b| b.iter(|| profile(black_box(&short16), 16_000)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
