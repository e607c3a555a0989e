//! The response cache and the token governor with the real default model
//! (SmolLM2-135M-Instruct, `models/`), on the real fleet (`full` profile),
//! tasks sent over the real ZeroMQ ingress:
//!
//! - `local answer`: `simple_chat` (ChitchatAgent) with a new question each
//!   time (`max_tokens` 256 from its spec), answered by the local model:
//!   round trip per task, client side.
//! - `cache hit`: the same question again and again while CacheManager runs:
//!   the whole bus path (ingress, dispatch, the agent, HybridRouter's
//!   decision, the cache lookup, the receipt, the reply) without a model.
//!   The ratio of the two medians is printed.
//! - `summarisation`: a session of about `TOKENS` tokens of turns
//!   (`session.append`), then `context.summarize` through ContextManager:
//!   milliseconds and tokens (the summary call's receipt: `tokens_in`,
//!   `tokens_out`), and both per 1 000 tokens summarised.
//!
//! Run: `cargo bench --bench governor [-- LOCAL_N HIT_N]` (defaults 5 and 500).

use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::daemon::{System, load_plan};
use agentvisor::telemetry::latency::Samples;
use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

async fn ask(s: &mut DealerSocket, v: &Value) -> Value {
    let body = Bytes::from(serde_json::to_vec(v).expect("json"));
    s.send(ZmqMessage::from(body)).await.expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(300), s.recv()).await.expect("reply in time").expect("recv");
        let body = msg.into_vec().into_iter().rfind(|f| !f.is_empty()).expect("body");
        let r: Value = serde_json::from_slice(&body).expect("json reply");
        if r.get("event").is_none() {
            return r;
        }
    }
}

async fn start(data: &Path) -> (System, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut s = Settings {
        agents_dir: root.join("agents"),
        profiles_dir: root.join("profiles"),
        models_dir: root.join("models"),
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    s.bus.ingress = "tcp://127.0.0.1:0".into();
    s.bus.events = "tcp://127.0.0.1:0".into();
    s.http.listen = "127.0.0.1:0".into();
    s.models.threads = 2;
    if let Some(local) = s.backends.get_mut("local") {
        local.total_timeout_secs = 600.0;
    }
    agentvisor::models::fetch_default(&s.models_dir).expect("the default model in models/");
    let (catalog, plan) = load_plan(&s, None, "full").expect("profile resolves");
    let system = System::start(s, catalog, plan).await.expect("starts");
    system.boot().await;
    let (ingress, _) = system.bus_endpoints().expect("bus bound");
    (system, ingress)
}

fn chat(id: &str, input: &str) -> Value {
    json!({"id": id, "type": "simple_chat", "input": input, "deadline_ms": 600_000})
}

/// A paragraph of about 100 tokens for the summarised session.
const TURN: &str = "We talked about the bakery in Lisbon: the rye loaf with sunflower seeds sells out by nine, \
    the oven needs a new door seal before winter, Pico the dog waits at the back door every morning, and the \
    second shop in Porto opens next month if the lease is signed on Friday.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let local_n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let hit_n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (system, ingress) = start(dir.path()).await;
        let mut bus = DealerSocket::new();
        bus.connect(&ingress).await.expect("connect");

        // The model loads on the first answer: not measured.
        let warm = ask(&mut bus, &chat("warm", "Hello!")).await;
        assert_eq!(warm["status"], "ok", "{warm}");
        let mut local = Samples::default();
        for i in 0..local_n {
            let t = Instant::now();
            let r = ask(&mut bus, &chat(&format!("local-{i}"), &format!("Tell me one fact about the number {i}."))).await;
            assert_eq!(r["route"]["backend"], "local", "{r}");
            local.ok += 1;
            local.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let local = local.summary();

        let stats = ask(&mut bus, &json!({"id": "stats", "type": "cache.stats", "input": {}})).await;
        assert_eq!(stats["output"]["running"], true, "{stats}");
        let first = ask(&mut bus, &chat("fill", "What is the capital of France?")).await;
        assert_eq!(first["route"]["backend"], "local", "{first}");
        let mut hits = Samples::default();
        let t0 = Instant::now();
        for i in 0..hit_n {
            let t = Instant::now();
            let r = ask(&mut bus, &chat(&format!("hit-{i}"), "What is the capital of France?")).await;
            assert_eq!(r["route"]["backend"], "cache", "{r}");
            hits.ok += 1;
            hits.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        hits.seconds = t0.elapsed().as_secs_f64();
        let hits = hits.summary();
        println!(
            "local answer: {} tasks, p50 {:.1} ms, max {:.1} ms | cache hit over the bus: {} tasks, p50 {:.3} ms, p99 {:.3} ms ({:.0} tasks/s) | local p50 / hit p50 = {:.0}x",
            local.ok,
            local.p50_ms,
            local.max_ms,
            hits.ok,
            hits.p50_ms,
            hits.p99_ms,
            hits.per_second,
            local.p50_ms / hits.p50_ms
        );

        // Summarisation: ~1 000 tokens of turns (the last 2 kept, as the governor does).
        let turns: Vec<Value> = (0..12)
            .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": TURN}))
            .collect();
        let r = ask(&mut bus, &json!({"id": "append", "type": "session.append", "input": {"session": "bench", "turns": turns}})).await;
        assert_eq!(r["status"], "ok", "{r}");
        let t = Instant::now();
        let s = ask(&mut bus, &json!({"id": "sum", "type": "context.summarize", "input": {"session": "bench"}})).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(s["status"], "ok", "{s}");
        system.receipts.flush().await;
        let stored = system.services.store.call(|conn| agentvisor::store::receipts::last(conn, 20)).await.expect("receipts");
        let receipt = stored.iter().find(|r| r.agent == "ContextManager").expect("the summary's receipt");
        let per_1k = 1000.0 / f64::from(receipt.tokens_in.max(1));
        println!(
            "summarisation: {} turns, context {} -> {} tokens; the summary call read {} tokens and wrote {} in {:.0} ms (model {:.0} ms) = {:.0} ms and {:.0} output tokens per 1000 tokens summarised",
            s["output"]["turns_summarized"],
            s["output"]["tokens_before"],
            s["output"]["tokens_after"],
            receipt.tokens_in,
            receipt.tokens_out,
            ms,
            receipt.total_ms,
            ms * per_1k,
            f64::from(receipt.tokens_out) * per_1k
        );
        system.shutdown(Duration::from_secs(10)).await;
    });
}
