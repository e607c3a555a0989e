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
//! `tokens_out` over the client's first-chunk-to-reply time). Medians of
//! [`RUNS`] runs after one warm-up run.
//!
//! Run: `cargo bench --bench local_model` (needs `models/`: `agentvisor models fetch`).

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::config::spec::RuntimeSpec;
use agentvisor::daemon::load_plan;
use agentvisor::models::{DEFAULT_MODEL_FILE, engine};
use agentvisor::supervisor::Fleet;
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
/// Threads of llama.cpp (this machine has 2 cores).
const THREADS: i32 = 2;

struct Run {
    ttft: Duration,
    tokens: u32,
    tokens_per_s: f64,
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
        .with_n_threads(THREADS)
        .with_n_threads_batch(THREADS);
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
        runs.push(Run { ttft, tokens: n, tokens_per_s: f64::from(n - 1) / (total - ttft).as_secs_f64() });
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
    s.models.threads = THREADS as u32;
    s.agent_commands.insert("TTSService".into(), Vec::new()); // no child process competing for the cores
    s.testing.actor_name_prefix = "bench/".into();
    let (catalog, plan) = load_plan(&s, None, "full").expect("plan");
    let fleet = Fleet::start(s, catalog, plan).await.expect("fleet");
    fleet.boot().await;
    let mut events = fleet.ctx().events.subscribe();
    let (ingress, _) = fleet.ctx().bus_endpoints().expect("bus");
    let mut dealer = DealerSocket::new();
    dealer.connect(&ingress).await.expect("connect");
    let mut runs = Vec::new();
    for i in 0..=RUNS {
        let env = json!({"id": format!("b{i}"), "type": "simple_chat", "input": PROMPT, "stream": true});
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
        let ttft = first.expect("a chunk");
        let n = reply["route"]["tokens_out"].as_u64().expect("tokens_out") as u32;
        runs.push(Run { ttft, tokens: n, tokens_per_s: f64::from(n - 1) / (total - ttft).as_secs_f64() });
    }
    let mut load = Duration::ZERO;
    while let Ok(e) = events.try_recv() {
        if e.topic == "model.loaded" {
            load = Duration::from_secs_f64(e.data["load_seconds"].as_f64().unwrap_or(0.0));
        }
    }
    fleet.shutdown(Duration::from_secs(10)).await;
    (load, runs)
}

fn report(name: &str, load: Duration, runs: &[Run]) -> (f64, f64) {
    let measured = &runs[1..]; // the first run warms up
    let ttft = median(measured.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect());
    let tps = median(measured.iter().map(|r| r.tokens_per_s).collect());
    let tokens: Vec<u32> = measured.iter().map(|r| r.tokens).collect();
    println!(
        "{name:<11} load {:>7.1} ms · TTFT p50 {ttft:>7.2} ms · {tps:>6.1} tokens/s p50 · tokens {tokens:?}",
        load.as_secs_f64() * 1e3
    );
    (ttft, tps)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models").join(DEFAULT_MODEL_FILE);
    assert!(model.is_file(), "{} is missing: run `agentvisor models fetch`", model.display());
    let (system, max_tokens) = chitchat(root);
    let (load_d, direct_runs) = direct(&model, &system, max_tokens);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (load_w, whole_runs) = rt.block_on(whole_path(root));
    let (ttft_d, tps_d) = report("direct", load_d, &direct_runs);
    let (ttft_w, tps_w) = report("whole path", load_w, &whole_runs);
    println!(
        "overhead    TTFT +{:.2} ms · tokens/s {:+.2} %  (targets: < 5 ms, < 2 %)",
        ttft_w - ttft_d,
        (tps_w - tps_d) / tps_d * 100.0
    );
}
