//! A real local HTTP server speaking the OpenAI Chat Completions API
//! (axum on `127.0.0.1:0`), told per request how to behave: answer, stream,
//! stall, drop mid-stream, fail with a status, rate-limit.
//!
//! ```ignore
//! let fake = FakeOpenAi::start().await;
//! fake.push(Behaviour::Status(500));          // first request
//! fake.push(Behaviour::Answer("hi".into()));  // second request
//! // ... point a backend at fake.base_url() ...
//! assert_eq!(fake.requests().len(), 2);
//! ```

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Prompt tokens the fake reports in `usage` (whatever the prompt).
pub const PROMPT_TOKENS: u32 = 17;

/// How the fake answers one `POST /v1/chat/completions`.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers with this text: one `chat.completion`, or (when the request
    /// has `stream: true`) the text in [`STREAM_PIECES`] content chunks, a
    /// `finish_reason` chunk, a usage-only chunk with `choices: null`, then
    /// `data: [DONE]`. Usage: [`PROMPT_TOKENS`] in, one token per word out.
    Answer(String),
    /// Like `Answer` but without any `usage` (the client must estimate).
    AnswerWithoutUsage(String),
    /// Answers with this JSON value's text as the content.
    AnswerJson(Value),
    /// Answers (non-streaming) with a call of the tool the request's
    /// `tool_choice` forces (else `answer`), these arguments, no content,
    /// `finish_reason: tool_calls` — as OpenAI does for a forced tool.
    ToolCall(Value),
    /// Never answers. Streaming: sends the headers, then nothing.
    Stall,
    /// Streaming: sends the first content chunk, then nothing. Non-streaming:
    /// sends the headers and half of the body, then nothing.
    StallAfterFirstChunk,
    /// Streaming: sends two content chunks, then breaks the connection
    /// (no `[DONE]`). Non-streaming: half of the body, then breaks it.
    DropMidStream,
    /// This HTTP status with an OpenAI error body
    /// (`{"error":{"message":"fake error <status>",...}}`).
    Status(u16),
    /// 429 with `Retry-After: <retry_after_secs>` and an error body.
    RateLimited {
        /// Seconds sent in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Waits, then behaves as the inner behaviour.
    Delay(Duration, Box<Behaviour>),
}

/// The text `StallAfterFirstChunk` and `DropMidStream` start to answer.
pub const PARTIAL_TEXT: &str = "partial answer text";

/// Content chunks an `Answer` is streamed in (fewer when the text is shorter).
pub const STREAM_PIECES: usize = 3;

/// One received `POST /v1/chat/completions`.
#[derive(Debug, Clone)]
pub struct Received {
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
    /// The request headers.
    pub headers: HeaderMap,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The `Authorization` header, if any.
    pub fn authorization(&self) -> Option<String> {
        self.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// Whether the request asked for a stream.
    pub fn streaming(&self) -> bool {
        self.body["stream"].as_bool().unwrap_or(false)
    }
}

/// State shared by the handlers and the test.
struct Shared {
    queue: Mutex<VecDeque<Behaviour>>,
    default: Mutex<Behaviour>,
    requests: Mutex<Vec<Received>>,
    disconnects: AtomicUsize,
    models: Mutex<Vec<String>>,
    model_calls: AtomicUsize,
}

/// The running fake server; shut down by [`FakeOpenAi::stop`] or on drop.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Behaviour::Answer("ok".into())),
            requests: Mutex::new(Vec::new()),
            disconnects: AtomicUsize::new(0),
            models: Mutex::new(vec!["fake-model".into()]),
            model_calls: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FakeOpenAi { addr, shared, shutdown: Some(tx) }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A base URL on a local port nobody listens on (connections are refused).
    pub fn refused_base_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        format!("http://{addr}/v1")
    }

    /// Queues the behaviour of the next request without one (FIFO).
    pub fn push(&self, behaviour: Behaviour) -> &FakeOpenAi {
        self.shared.queue.lock().push_back(behaviour);
        self
    }

    /// The behaviour when the queue is empty (initially `Answer("ok")`).
    pub fn set_default(&self, behaviour: Behaviour) {
        *self.shared.default.lock() = behaviour;
    }

    /// Every chat request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().clone()
    }

    /// Gaps between consecutive request arrivals.
    pub fn gaps(&self) -> Vec<Duration> {
        self.requests().windows(2).map(|w| w[1].at.duration_since(w[0].at)).collect()
    }

    /// Chat requests whose client went away before the response finished.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// The ids `GET /v1/models` lists (initially `["fake-model"]`).
    pub fn set_models(&self, ids: &[&str]) {
        *self.shared.models.lock() = ids.iter().map(|s| s.to_string()).collect();
    }

    /// How often `GET /v1/models` was called.
    pub fn model_list_calls(&self) -> usize {
        self.shared.model_calls.load(Ordering::SeqCst)
    }

    /// Stops accepting connections (open streams are left to the runtime).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts a disconnect when dropped before [`Finished::done`].
struct Finished {
    shared: Arc<Shared>,
    done: bool,
}

impl Finished {
    fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if !self.done {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.model_calls.fetch_add(1, Ordering::SeqCst);
    let data: Vec<Value> =
        shared.models.lock().iter().map(|id| json!({"id": id, "object": "model", "owned_by": "fake"})).collect();
    Json(json!({"object": "list", "data": data}))
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().push(Received { body: body.clone(), headers, at: Instant::now() });
    let behaviour = shared.queue.lock().pop_front().unwrap_or_else(|| shared.default.lock().clone());
    let mut guard = Finished { shared: shared.clone(), done: false };
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let mut behaviour = behaviour;
    while let Behaviour::Delay(delay, inner) = behaviour {
        tokio::time::sleep(delay).await;
        behaviour = *inner;
    }
    let steps = match behaviour {
        Behaviour::Answer(text) => answer(&model, &text, stream, true),
        Behaviour::AnswerWithoutUsage(text) => answer(&model, &text, stream, false),
        Behaviour::AnswerJson(value) => answer(&model, &value.to_string(), stream, true),
        Behaviour::ToolCall(args) => {
            let name = body["tool_choice"]["function"]["name"].as_str().unwrap_or("answer");
            let mut v = completion(&model, "", true);
            v["choices"][0]["message"] = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_fake", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]});
            v["choices"][0]["finish_reason"] = json!("tool_calls");
            vec![Step::Send(Bytes::from(v.to_string()))]
        }
        Behaviour::Stall if stream => vec![Step::Stall],
        Behaviour::Stall => std::future::pending().await,
        Behaviour::StallAfterFirstChunk => partial(&model, stream, Step::Stall),
        Behaviour::DropMidStream => partial(&model, stream, Step::Break),
        Behaviour::Status(code) => {
            guard.done();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(error_body(code))).into_response();
        }
        Behaviour::RateLimited { retry_after_secs } => {
            guard.done();
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(error_body(429))).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        Behaviour::Delay(..) => unreachable!("delays unwrapped above"),
    };
    let content_type = if stream { "text/event-stream" } else { "application/json" };
    let body = futures::stream::unfold((steps.into_iter(), guard), |(mut steps, mut guard)| async move {
        match steps.next() {
            Some(Step::Send(bytes)) => Some((Ok(bytes), (steps, guard))),
            Some(Step::Stall) => std::future::pending().await,
            Some(Step::Break) => {
                // Let hyper flush what was sent (it does while the body is
                // pending), so the client has the headers and first chunks.
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.done();
                Some((Err(std::io::Error::other("fake: connection dropped mid-stream")), (steps, guard)))
            }
            None => {
                guard.done();
                None
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .expect("valid response")
}

/// Body frames of an answer cut short by `end` ([`Step::Stall`] or
/// [`Step::Break`]): streaming, one content chunk before a stall, two before
/// a break; non-streaming, half of the JSON body.
fn partial(model: &str, stream: bool, end: Step) -> Vec<Step> {
    if stream {
        let keep = if matches!(end, Step::Stall) { 1 } else { 2 };
        let mut steps: Vec<Step> =
            chunks(model, &split(PARTIAL_TEXT, STREAM_PIECES), true).into_iter().take(keep).map(Step::Send).collect();
        steps.push(end);
        steps
    } else {
        let whole = Bytes::from(completion(model, PARTIAL_TEXT, true).to_string());
        vec![Step::Send(whole.slice(..whole.len() / 2)), end]
    }
}

/// The content pieces of [`PARTIAL_TEXT`]: `StallAfterFirstChunk` streams
/// the first, `DropMidStream` the first two.
pub fn partial_pieces() -> Vec<String> {
    split(PARTIAL_TEXT, STREAM_PIECES)
}

/// One piece of a response body.
enum Step {
    /// Send these bytes as one body frame.
    Send(Bytes),
    /// Never send anything more.
    Stall,
    /// Break the connection.
    Break,
}

fn error_body(code: u16) -> Value {
    json!({"error": {"message": format!("fake error {code}"), "type": "fake_error", "code": code}})
}

/// Body frames of an answer. Streamed events are split in two frames in the
/// middle (so clients see events split across network reads).
fn answer(model: &str, text: &str, stream: bool, usage: bool) -> Vec<Step> {
    if !stream {
        return vec![Step::Send(Bytes::from(completion(model, text, usage).to_string()))];
    }
    let mut frames = Vec::new();
    for event in chunks(model, &split(text, STREAM_PIECES), usage) {
        let middle = event.len() / 2;
        frames.push(Step::Send(event.slice(..middle)));
        frames.push(Step::Send(event.slice(middle..)));
    }
    frames.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

fn usage(text: &str) -> Value {
    let out = text.split_whitespace().count();
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out, "total_tokens": PROMPT_TOKENS as usize + out})
}

fn completion(model: &str, text: &str, with_usage: bool) -> Value {
    let mut v = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    });
    if with_usage {
        v["usage"] = usage(text);
    }
    v
}

/// SSE events: one per piece, a `finish_reason` chunk, and (with usage) a
/// usage-only chunk with `choices: null`.
fn chunks(model: &str, pieces: &[String], with_usage: bool) -> Vec<Bytes> {
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut events: Vec<Bytes> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let delta = if i == 0 { json!({"role": "assistant", "content": piece}) } else { json!({"content": piece}) };
            chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]), None)
        })
        .collect();
    events.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), None));
    if with_usage {
        events.push(chunk(Value::Null, Some(usage(&pieces.concat()))));
    }
    events
}

/// `text` in at most `n` non-empty pieces, split on character boundaries.
pub fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Points `s` at `fake`: `local` (L1, model `fake-local`) and
/// `cloud_fast` (L2, model `fake-cloud`) both on it, and no high-load rule
/// (a busy test machine must not push light tasks to L2).
pub fn local_and_cloud(s: &mut agentvisor::config::Settings, fake: &FakeOpenAi) {
    use agentvisor::config::Tier;
    s.backends = [
        ("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url())),
        ("cloud_fast".to_string(), backend_settings(Tier::L2, "fake-cloud", fake.base_url())),
    ]
    .into();
    s.routing.tiers.high_load_percent = 101.0;
}

/// Settings of an OpenAI-compatible backend on `base_url` serving `model`
/// at `tier`: short timeouts, no retries, free.
pub fn backend_settings(
    tier: agentvisor::config::Tier,
    model: &str,
    base_url: String,
) -> agentvisor::config::BackendSettings {
    agentvisor::config::BackendSettings {
        kind: agentvisor::config::BackendKind::Openai,
        tier,
        enabled: true,
        base_url: Some(base_url),
        api_key_env: None,
        model: model.into(),
        connect_timeout_secs: 1.0,
        first_token_timeout_secs: 5.0,
        total_timeout_secs: 10.0,
        max_retries: 0,
        retry_initial_secs: 0.05,
        retry_max_secs: 0.2,
        price_per_1k_input_usd: 0.0,
        price_per_1k_output_usd: 0.0,
        models_ttl_secs: 60.0,
        context_tokens: 8192,
    }
}
