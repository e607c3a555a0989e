//! The local model through the whole path against llama.cpp alone.
//!
//! - **direct**: the default model (SmolLM2-135M-Instruct Q4_1) loaded with
//!   `llama-cpp-2` in this process, ChitchatAgent's system prompt plus
//!   [`PROMPT`] through the model's chat template, greedy decoding until the
//!   end of the answer or the agent's `max_tokens` — no agentvisor code but
//!   the shared llama.cpp backend handle.
//! - **whole path**: a `full` fleet in this process with its ZeroMQ bus on
//!   loopback; a DEALER client sends `simple_chat` with `stream: true`; the
//!   task goes bus → ChitchatAgent → HybridRouter → the embedded backend →
//!   ModelManager → the model thread, and the chunks come back the same way.
//!
//! Both use 2 threads and the same greedy decoding, so they generate the
//! same tokens. Reported: model load time (direct: `LlamaModel::load_from_file`
//! plus the context; whole path: the `model.loaded` event), time to first
//! token (direct: from the chat template to the first sampled token; whole
//! path: from the client's send to the first chunk it receives) and
//! tokens per second after the first token (whole path: the receipt's
//! `tokens_out` over the client's first-chunk-to-reply time).
//!
//! Each path runs in its own child process of this binary (llama.cpp's
//! OpenMP threads of one path must not linger beside the other's), the two
//! alternating for `BENCH_ROUNDS` rounds (3) of [`RUNS`] measured runs after
//! one warm-up run; the figures are medians over all measured runs.
//! `BENCH_THREADS` sets llama.cpp's threads (default: every core),
//! `BENCH_STREAM=0` sends the whole-path task without streaming.
//!
//! `BENCH_PART=switch` instead serves two models in turns through one
//! ModelManager and prints each request's tokens/s.
//!
//! Run: `cargo bench --bench local_model` (needs `models/`: `agentvisor models fetch`).

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::config::spec::RuntimeSpec;
use agentvisor::daemon::System;
use agentvisor::daemon::load_plan;
use agentvisor::models::{DEFAULT_MODEL_FILE, engine};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// The user's message.
const PROMPT: &str = "Count from 1 to 100, separated by commas.";
/// Measured runs per path.
const RUNS: usize = 7;
/// Threads of llama.cpp: `BENCH_THREADS`, default every core.
fn threads() -> i32 {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32))
}

/// Whole path streamed (`BENCH_STREAM=0`: one reply at the end).
fn stream() -> bool {
    std::env::var("BENCH_STREAM").map_or(true, |v| v != "0")
}

struct Run {
    ttft: Duration,
    tokens: u32,
    tokens_per_s: f64,
    /// Whole path: client TTFT minus the receipt's `first_token_ms` (the
    /// model manager's submission to first token): what the bus, the agent,
    /// the router and the way back of the first chunk add.
    added: Duration,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn chitchat(root: &Path) -> (String, u32) {
    let catalog = agentvisor::config::catalog::Catalog::load(&root.join("agents")).expect("catalog");
    match &catalog.get("ChitchatAgent").expect("ChitchatAgent").runtime {
        RuntimeSpec::Llm { system_prompt, max_tokens, .. } => (system_prompt.clone(), *max_tokens),
        _ => panic!("ChitchatAgent is an llm agent"),
    }
}

fn direct(model_path: &Path, system: &str, max_tokens: u32) -> (Duration, Vec<Run>) {
    let backend = engine::backend().expect("llama.cpp");
    let t0 = Instant::now();
    let model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default()).expect("model");
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_threads(threads())
        .with_n_threads_batch(threads());
    let mut ctx = model.new_context(backend, params).expect("context");
    let load = t0.elapsed();
    let template = model.chat_template(None).expect("template");
    let vocab = model.vocab();
    let mut runs = Vec::new();
    for _ in 0..=RUNS {
        let t0 = Instant::now();
        ctx.clear_kv_cache();
        let chat = [
            LlamaChatMessage::new("system".into(), system.into()).unwrap(),
            LlamaChatMessage::new("user".into(), PROMPT.into()).unwrap(),
        ];
        let prompt = model.apply_chat_template(&template, &chat, true).expect("chat template");
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let mut batch = LlamaBatch::new(512, 1);
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == tokens.len() - 1).unwrap();
        }
        ctx.decode(&mut batch).expect("prompt");
        let mut sampler = LlamaSampler::chain_simple([LlamaSampler::greedy()]);
        let (mut n, mut pos, mut at) = (0u32, tokens.len() as i32, batch.n_tokens() - 1);
        let mut first = None;
        let mut piece = Vec::new();
        while n < max_tokens {
            let token = sampler.sample(&ctx, at);
            if vocab.is_eog(token) {
                break;
            }
            n += 1;
            first.get_or_insert_with(|| t0.elapsed());
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            batch.clear();
            batch.add(token, pos, &[0], true).unwrap();
            pos += 1;
            ctx.decode(&mut batch).expect("decode");
            at = 0;
        }
        let total = t0.elapsed();
        let ttft = first.expect("a token");
        runs.push(Run {
            ttft,
            tokens: n,
            tokens_per_s: f64::from(n - 1) / (total - ttft).as_secs_f64(),
            added: Duration::ZERO,
        });
    }
    (load, runs)
}

async fn recv(s: &mut DealerSocket) -> Value {
    let msg = s.recv().await.expect("reply");
    let body = msg.iter().last().expect("a frame");
    serde_json::from_slice(body).expect("json")
}

async fn whole_path(root: &Path) -> (Duration, Vec<Run>) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut s = Settings {
        agents_dir: root.join("agents"),
        profiles_dir: root.join("profiles"),
        models_dir: root.join("models"),
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    s.http.listen = "127.0.0.1:0".into();
    s.bus.ingress = "tcp://127.0.0.1:0".into();
    s.bus.events = "tcp://127.0.0.1:0".into();
    s.models.threads = threads() as u32;
    s.agent_commands.insert("TTSService".into(), Vec::new()); // no child process competing for the cores
    s.testing.actor_name_prefix = "bench/".into();
    let (catalog, plan) = load_plan(&s, None, "full").expect("plan");
    let fleet = System::start(s, catalog, plan).await.expect("fleet");
    fleet.boot().await;
    let mut events = fleet.ctx().events.subscribe();
    let (ingress, _) = fleet.bus_endpoints().expect("bus");
    let mut dealer = DealerSocket::new();
    dealer.connect(&ingress).await.expect("connect");
    let mut runs = Vec::new();
    for i in 0..=RUNS {
        let env = json!({"id": format!("b{i}"), "type": "simple_chat", "input": PROMPT, "stream": stream()});
        let t0 = Instant::now();
        dealer.send(ZmqMessage::from(serde_json::to_vec(&env).unwrap())).await.expect("send");
        let mut first = None;
        let reply = loop {
            let v = recv(&mut dealer).await;
            if v["event"] == "chunk" {
                first.get_or_insert_with(|| t0.elapsed());
                continue;
            }
            break v;
        };
        let total = t0.elapsed();
        assert_eq!(reply["status"], "ok", "{reply}");
        // Not streamed: the backend's own first token, plus the bus on the way in.
        let backend_first = Duration::from_secs_f64(reply["route"]["first_token_ms"].as_f64().unwrap_or(0.0) / 1e3);
        let ttft = first.unwrap_or(backend_first);
        let n = reply["route"]["tokens_out"].as_u64().expect("tokens_out") as u32;
        runs.push(Run {
            ttft,
            tokens: n,
            tokens_per_s: f64::from(n - 1) / (total - ttft).as_secs_f64(),
            added: ttft.saturating_sub(backend_first),
        });
    }
    let mut load = Duration::ZERO;
    while let Ok(e) = events.try_recv() {
        if e.topic == "model.loaded" {
            load = Duration::from_secs_f64(e.data()["load_seconds"].as_f64().unwrap_or(0.0));
        }
    }
    fleet.shutdown(Duration::from_secs(10)).await;
    (load, runs)
}

/// One path's figures, as the child process prints them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Figures {
    load_ms: f64,
    ttft_ms: Vec<f64>,
    tokens_per_s: Vec<f64>,
    tokens: Vec<u32>,
    added_ms: Vec<f64>,
}

impl Figures {
    fn of(load: Duration, runs: &[Run]) -> Figures {
        let measured = &runs[1..]; // the first run warms up
        Figures {
            load_ms: load.as_secs_f64() * 1e3,
            ttft_ms: measured.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect(),
            tokens_per_s: measured.iter().map(|r| r.tokens_per_s).collect(),
            tokens: measured.iter().map(|r| r.tokens).collect(),
            added_ms: measured.iter().map(|r| r.added.as_secs_f64() * 1e3).collect(),
        }
    }
}

/// Runs one path in a child process of this binary (`BENCH_PART`), so that
/// neither path's llama.cpp threads linger in the other's process.
fn child(part: &str) -> Figures {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe).env("BENCH_PART", part).output().expect("child runs");
    assert!(out.status.success(), "{part}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).expect("figures line");
    serde_json::from_str(line).expect("figures")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models").join(DEFAULT_MODEL_FILE);
    assert!(model.is_file(), "{} is missing: run `agentvisor models fetch`", model.display());
    let figures = match std::env::var("BENCH_PART").as_deref() {
        Ok("direct") => {
            let (system, max_tokens) = chitchat(root);
            let (load, runs) = direct(&model, &system, max_tokens);
            Figures::of(load, &runs)
        }
        Ok("switch") => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let turns = rt.block_on(switching(&model));
            let line: Vec<String> = turns.iter().map(|(m, t)| format!("{m} {t:.1}")).collect();
            println!("model switching (tokens/s per request, models a and b in turns): {}", line.join(" · "));
            return;
        }
        Ok("whole") => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let (load, runs) = rt.block_on(whole_path(root));
            Figures::of(load, &runs)
        }
        _ => {
            // Alternate the paths so that drift of the machine hits both alike.
            let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
            let (mut d, mut w) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                w.push(child("whole"));
                d.push(child("direct"));
            }
            println!("threads {} · whole path streamed: {} · {rounds} rounds of {RUNS} runs", threads(), stream());
            let (ttft_d, tps_d) = report("direct", &d);
            let (ttft_w, tps_w) = report("whole path", &w);
            let added = median(w.iter().flat_map(|x| x.added_ms.clone()).collect());
            println!(
                "whole path  TTFT added outside the model manager (client TTFT − receipt first_token_ms) p50 {added:.3} ms"
            );
            println!(
                "overhead    TTFT {:+.2} ms · tokens/s {:+.2} %  (targets: < +5 ms, > -2 %)",
                ttft_w - ttft_d,
                (tps_w - tps_d) / tps_d * 100.0
            );
            return;
        }
    };
    println!("{}", serde_json::to_string(&figures).expect("json"));
}

/// Two models served in turns through one ModelManager (two names of the
/// same file): tokens/s of each request, to show that switching models does
/// not slow generation (one llama.cpp worker thread, one OpenMP team).
async fn switching(model: &Path) -> Vec<(String, f64)> {
    use agentvisor::models::manager::{LocalRequest, ModelManager};
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["a", "b"] {
        let to = dir.path().join(format!("{name}.gguf"));
        if std::fs::hard_link(model, &to).is_err() {
            std::fs::copy(model, &to).expect("copy");
        }
    }
    let metrics = agentvisor::telemetry::metrics::Metrics::new();
    let events = agentvisor::events::EventBus::new(metrics.events.clone());
    let settings = agentvisor::config::ModelSettings { threads: threads() as u32, ..Default::default() };
    let m = ModelManager::new(settings, dir.path().to_path_buf(), events, metrics);
    let mut out = Vec::new();
    for name in ["a", "a", "b", "b", "a", "b"] {
        let r = LocalRequest {
            model: name.into(),
            messages: vec![agentvisor::backends::ChatMessage::new("user", PROMPT)],
            params: agentvisor::core::GenParams { max_tokens: Some(200), ..Default::default() },
            schedule: Default::default(),
            deltas: None,
            cancel: Default::default(),
            over_budget_ok: false,
        };
        let a = m.generate(r).await.expect("answer");
        out.push((name.to_string(), a.output.tokens_per_second().unwrap_or(0.0)));
    }
    m.shutdown().await;
    out
}

fn report(name: &str, f: &[Figures]) -> (f64, f64) {
    let load = median(f.iter().map(|x| x.load_ms).collect());
    let ttft = median(f.iter().flat_map(|x| x.ttft_ms.clone()).collect());
    let tps = median(f.iter().flat_map(|x| x.tokens_per_s.clone()).collect());
    let tokens: std::collections::BTreeSet<u32> = f.iter().flat_map(|x| x.tokens.clone()).collect();
    println!(
        "{name:<11} load p50 {load:>7.1} ms · TTFT p50 {ttft:>7.2} ms · {tps:>6.1} tokens/s p50 · tokens {tokens:?}"
    );
    (ttft, tps)
}
