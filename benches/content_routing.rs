//! Issue 15: the routing decision with and without the content estimate.
//!
//! - Without: [`Policy::decide`] on `simple_chat` (the rule-only path).
//! - With: [`ContentRouter::estimate_with`] on the request's text (the
//!   shipped routes, `routes/content.yaml`), then `decide` with the
//!   estimate's complexity — what HybridRouter does for `auto`, `/v1` with
//!   `model: auto` and opted-in types.
//!
//! The texts are the held-out test part of `tests/data/requests.jsonl`,
//! cycled. Printed once to stderr: p50/p99 (nearest rank) of 20 000
//! individually timed decisions each way. Criterion then measures both.
//! Target: the estimate's p99 under 50 ms (it is microseconds); the
//! rule-only decision keeps its microseconds.
//!
//! Run: `cargo bench --bench content_routing`. The arbiter's end-to-end
//! time per request with the default model: `scripts/arbiter_eval.sh`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::{BackendSettings, RoutingSettings};
use agentvisor::routing::content::{self, ContentRouter};
use agentvisor::routing::policy::{Policy, RouteInput};
use criterion::{Criterion, criterion_group, criterion_main};

const SAMPLES: usize = 20_000;

fn backends() -> BTreeMap<String, BackendSettings> {
    let yaml = r#"
local: {kind: embedded, tier: L1, model: SmolLM2-135M-Instruct.Q4_1}
fast: {kind: openai, tier: L2, base_url: "https://api.deepinfra.com/v1/openai", model: meta-llama/Meta-Llama-3-70B-Instruct}
"#;
    serde_norway::from_str(yaml).expect("benchmark backends parse")
}

fn test_texts() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/requests.jsonl");
    std::fs::read_to_string(path)
        .expect("tests/data/requests.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["split"] == "test")
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect()
}

fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn bench(c: &mut Criterion) {
    let routing = RoutingSettings::default();
    let policy = Policy::new(&routing, &backends()).unwrap_or_else(|e| panic!("{e}"));
    let router = content::load(&routing.content).expect("routes load").expect("content routing on by default");
    let min = routing.content.min_confidence;
    let texts = test_texts();
    let all = |_: &str| true;
    let rule_only = |_: &str| {
        let input = RouteInput::new("simple_chat", 0.2);
        policy.decide(&input, &all).map(|d| d.tier)
    };
    let with_estimate = |r: &ContentRouter, text: &str| {
        let e = r.estimate_with(text, min);
        let mut input = RouteInput::new("simple_chat", 0.2);
        if e.used {
            input.complexity = Some(e.complexity);
        }
        policy.decide(&input, &all).map(|d| d.tier)
    };
    for (name, f) in [
        ("rule only", &(|t: &str| rule_only(t)) as &dyn Fn(&str) -> _),
        ("content estimate + rule", &|t: &str| with_estimate(&router, t)),
    ] {
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES {
            let text = &texts[i % texts.len()];
            let t0 = Instant::now();
            black_box(f(black_box(text))).ok();
            samples.push(t0.elapsed());
        }
        samples.sort();
        eprintln!(
            "routing decision, {name}: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs ({SAMPLES} decisions)",
            nearest_rank(&samples, 50.0).as_secs_f64() * 1e6,
            nearest_rank(&samples, 99.0).as_secs_f64() * 1e6,
            samples.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        );
    }
    let mut i = 0;
    c.bench_function("decide (rule only)", |b| b.iter(|| black_box(rule_only(""))));
    c.bench_function("estimate + decide", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(with_estimate(&router, &texts[i]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
