//! The `openai` backend against a real local HTTP server speaking the
//! OpenAI API ([`FakeOpenAi`]): answers, streams, retries with growing
//! delays only on retryable errors, timeouts, dropped streams,
//! cancellation, API keys, the cached model list.

use std::time::{Duration, Instant};

use agentvisor::backends::openai::OpenAiBackend;
use agentvisor::backends::{BackendError, BackendErrorKind, ChatBackend, ChatMessage, ChatRequest, ChatResponse};
use agentvisor::config::BackendSettings;
use agentvisor::core::GenParams;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fake_openai::{Behaviour, FakeOpenAi, PARTIAL_TEXT, PROMPT_TOKENS, STREAM_PIECES, partial_pieces};
use crate::util::poll_until;

/// Settings for a backend at `base_url`: fast retries, generous timeouts.
fn settings(base_url: &str) -> BackendSettings {
    let mut s: BackendSettings = serde_json::from_value(json!({
        "kind": "openai",
        "tier": "L1",
        "base_url": base_url,
        "model": "default-model",
    }))
    .expect("backend settings");
    s.connect_timeout_secs = 2.0;
    s.first_token_timeout_secs = 10.0;
    s.total_timeout_secs = 20.0;
    s.max_retries = 2;
    s.retry_initial_secs = 0.05;
    s.retry_max_secs = 2.0;
    s
}

fn backend(s: &BackendSettings) -> OpenAiBackend {
    OpenAiBackend::new("fake", s).expect("backend builds")
}

fn request(prompt: &str) -> ChatRequest {
    ChatRequest {
        model: "model-a".into(),
        messages: vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", prompt)],
        params: GenParams { max_tokens: Some(64), temperature: Some(0.5), ..Default::default() },
        ..Default::default()
    }
}

async fn chat(b: &OpenAiBackend, req: ChatRequest) -> Result<ChatResponse, BackendError> {
    b.chat(req, None, CancellationToken::new()).await
}

/// A streaming call; returns the result and every delta received.
async fn chat_stream(b: &OpenAiBackend, req: ChatRequest) -> (Result<ChatResponse, BackendError>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = b.chat(req, Some(tx), CancellationToken::new()).await;
    let mut deltas = Vec::new();
    while let Ok(d) = rx.try_recv() {
        deltas.push(d);
    }
    (result, deltas)
}

fn at_least(gap: Duration, secs: f64, what: &str) {
    assert!(gap >= Duration::from_secs_f64(secs), "{what}: gap {gap:?} shorter than {secs} s");
}

#[tokio::test]
async fn answers_without_streaming_and_sends_the_openai_request_shape() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::Answer("the answer is four".into()));
    let b = backend(&settings(&fake.base_url()));

    let r = chat(&b, request("what is 2+2?")).await.expect("answer");

    assert_eq!(r.content, "the answer is four");
    assert_eq!(r.model, "model-a", "model per request, echoed by the server");
    assert_eq!((r.tokens_in, r.tokens_out), (PROMPT_TOKENS, 4), "usage parsed");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.attempts, 1);
    assert!(r.first_token.is_some());
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({
            "model": "model-a",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2+2?"}],
            "max_tokens": 64,
            "temperature": 0.5,
            "stream": false,
        })
    );
    assert_eq!(seen[0].authorization(), None, "no key configured, no Authorization header");
}

#[tokio::test]
async fn streams_deltas_in_order_with_usage_and_a_null_choices_chunk() {
    let fake = FakeOpenAi::start().await;
    let text = "streaming works one piece at a time";
    fake.push(Behaviour::Answer(text.into()));
    let b = backend(&settings(&fake.base_url()));

    let (r, deltas) = chat_stream(&b, request("stream please")).await;
    let r = r.expect("streamed answer");

    assert_eq!(deltas.len(), STREAM_PIECES, "one delta per content chunk: {deltas:?}");
    assert_eq!(deltas.concat(), text, "deltas arrive in order");
    assert_eq!(r.content, text);
    assert_eq!((r.tokens_in, r.tokens_out), (PROMPT_TOKENS, 7), "usage from the choices:null chunk");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.model, "model-a");
    assert!(r.first_token.is_some(), "time to first token recorded");
    let body = &fake.requests()[0].body;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn estimates_tokens_when_the_server_sends_no_usage() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::AnswerWithoutUsage("twelve chars".into()));
    fake.push(Behaviour::AnswerWithoutUsage("twelve chars".into()));
    let b = backend(&settings(&fake.base_url()));
    let req = ChatRequest { messages: vec![ChatMessage::new("user", "0123456789abcdef")], ..request("") };

    let r = chat(&b, req.clone()).await.expect("answer");
    assert_eq!((r.tokens_in, r.tokens_out), (4, 3), "~4 characters per token");
    let (r, _) = chat_stream(&b, req).await;
    assert_eq!(r.map(|r| (r.tokens_in, r.tokens_out)).expect("streamed"), (4, 3));
}

#[tokio::test]
async fn json_mode_asks_for_a_json_object() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::AnswerJson(json!({"intent": "greet", "confidence": 0.9})));
    let b = backend(&settings(&fake.base_url()));

    let r = chat(&b, {
        let mut r = request("classify: hello");
        r.params.json = true;
        r
    })
    .await
    .expect("answer");

    let content: serde_json::Value = serde_json::from_str(&r.content).expect("content is JSON");
    assert_eq!(content["intent"], "greet");
    assert_eq!(fake.requests()[0].body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn server_error_is_retried_after_at_least_the_initial_delay() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::Status(500)).push(Behaviour::Answer("second time lucky".into()));
    let mut s = settings(&fake.base_url());
    s.retry_initial_secs = 0.2;
    let b = backend(&s);

    let r = chat(&b, request("hi")).await.expect("answer after a retry");

    assert_eq!(r.content, "second time lucky");
    assert_eq!(r.attempts, 2);
    assert_eq!(fake.requests().len(), 2);
    at_least(fake.gaps()[0], 0.2, "retry after 500");
}

#[tokio::test]
async fn retries_wait_longer_each_time_and_give_up_after_max_retries() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Status(503));
    let mut s = settings(&fake.base_url());
    s.max_retries = 3;
    s.retry_initial_secs = 0.1;
    s.retry_max_secs = 5.0;
    let b = backend(&s);

    let e = chat(&b, request("hi")).await.expect_err("always 503");

    assert_eq!(e.kind, BackendErrorKind::Server);
    assert_eq!(e.status, Some(503));
    assert_eq!(e.attempts, 4, "max_retries + 1 attempts");
    assert!(e.message.contains("fake error 503"), "server message kept: {}", e.message);
    let gaps = fake.gaps();
    assert_eq!(gaps.len(), 3);
    // Unjittered delays are 0.1, 0.2, 0.4 s; jitter only adds.
    at_least(gaps[0], 0.1, "first retry");
    at_least(gaps[1], 0.2, "second retry");
    at_least(gaps[2], 0.4, "third retry");
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::RateLimited { retry_after_secs: 1 }).push(Behaviour::Answer("now then".into()));
    let b = backend(&settings(&fake.base_url()));

    let r = chat(&b, request("hi")).await.expect("answer after the rate limit");

    assert_eq!(r.content, "now then");
    assert_eq!(r.attempts, 2);
    at_least(fake.gaps()[0], 1.0, "Retry-After: 1 (retry_initial is 0.05 s)");
}

#[tokio::test]
async fn rate_limit_that_persists_is_a_rate_limited_error() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::RateLimited { retry_after_secs: 0 });
    let b = backend(&settings(&fake.base_url()));

    let e = chat(&b, request("hi")).await.expect_err("always 429");

    assert_eq!((e.kind, e.status, e.attempts), (BackendErrorKind::RateLimited, Some(429), 3));
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let fake = FakeOpenAi::start().await;
    let b = backend(&settings(&fake.base_url()));
    let cases = [
        (400, BackendErrorKind::BadRequest),
        (404, BackendErrorKind::BadRequest),
        (422, BackendErrorKind::BadRequest),
        (401, BackendErrorKind::Auth),
        (403, BackendErrorKind::Auth),
    ];
    for (i, (status, kind)) in cases.into_iter().enumerate() {
        fake.push(Behaviour::Status(status));

        let e = chat(&b, request("hi")).await.expect_err("client error");

        assert_eq!((e.kind, e.status, e.attempts), (kind, Some(status), 1), "HTTP {status}");
        assert!(e.message.contains(&format!("fake error {status}")), "server message kept: {}", e.message);
        assert_eq!(fake.requests().len(), i + 1, "HTTP {status} not retried");
    }
}

#[tokio::test]
async fn refused_connections_are_unreachable_after_retries_with_backoff() {
    let mut s = settings(&FakeOpenAi::refused_base_url());
    s.max_retries = 3;
    s.retry_initial_secs = 0.1;
    s.retry_max_secs = 5.0;
    let b = backend(&s);

    let started = Instant::now();
    let e = chat(&b, request("hi")).await.expect_err("refused");

    assert_eq!(e.kind, BackendErrorKind::Unreachable);
    assert_eq!(e.attempts, 4, "max_retries + 1 attempts");
    assert_eq!(e.status, None);
    // Three waits of at least 0.1, 0.2 and 0.4 s.
    at_least(started.elapsed(), 0.7, "backoff between refused attempts");
}

#[tokio::test]
async fn stalled_answer_hits_the_first_token_timeout() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Stall);
    let mut s = settings(&fake.base_url());
    s.first_token_timeout_secs = 0.3;
    let b = backend(&s);

    for streaming in [false, true] {
        let started = Instant::now();
        let e = if streaming {
            chat_stream(&b, request("hi")).await.0.expect_err("stalled stream")
        } else {
            chat(&b, request("hi")).await.expect_err("stalled answer")
        };
        let elapsed = started.elapsed();
        assert_eq!(e.kind, BackendErrorKind::Timeout, "streaming={streaming}: {e}");
        assert!(e.message.contains("first"), "first-token timeout named: {}", e.message);
        at_least(elapsed, 0.3, "first-token timeout");
        assert!(elapsed < Duration::from_secs(10), "did not wait for the total timeout: {elapsed:?}");
        assert_eq!(e.attempts, 1, "a timeout after connecting is not retried");
    }
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn stream_stalled_after_the_first_chunk_hits_the_total_timeout() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::StallAfterFirstChunk);
    let mut s = settings(&fake.base_url());
    s.first_token_timeout_secs = 0.3;
    s.total_timeout_secs = 1.0;
    let b = backend(&s);

    let started = Instant::now();
    let (r, deltas) = chat_stream(&b, request("hi")).await;
    let e = r.expect_err("stalled stream");

    assert_eq!(e.kind, BackendErrorKind::Timeout);
    assert!(e.message.contains("total"), "total timeout named: {}", e.message);
    at_least(started.elapsed(), 1.0, "total timeout");
    assert_eq!(deltas, partial_pieces()[..1], "the first chunk was forwarded");
    assert_eq!(fake.requests().len(), 1, "no retry once a delta was forwarded");
}

#[tokio::test]
async fn non_streaming_answer_stalled_mid_body_hits_the_total_timeout() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::StallAfterFirstChunk);
    let mut s = settings(&fake.base_url());
    s.total_timeout_secs = 0.8;
    let b = backend(&s);

    let started = Instant::now();
    let e = chat(&b, request("hi")).await.expect_err("stalled body");

    assert_eq!(e.kind, BackendErrorKind::Timeout);
    at_least(started.elapsed(), 0.8, "total timeout");
}

#[tokio::test]
async fn stream_dropped_mid_way_is_a_protocol_error() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::DropMidStream);
    let b = backend(&settings(&fake.base_url()));

    let (r, deltas) = chat_stream(&b, request("hi")).await;
    let e = r.expect_err("dropped stream");

    assert_eq!(e.kind, BackendErrorKind::Protocol, "{e}");
    assert_eq!(deltas, partial_pieces()[..2], "the chunks before the drop were forwarded");
    assert!(!deltas.concat().is_empty() && PARTIAL_TEXT.starts_with(&deltas.concat()));
    assert_eq!((e.attempts, fake.requests().len()), (1, 1), "no retry once a delta was forwarded");
}

#[tokio::test]
async fn non_streaming_body_dropped_mid_way_is_a_protocol_error() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::DropMidStream);
    let b = backend(&settings(&fake.base_url()));

    let e = chat(&b, request("hi")).await.expect_err("dropped body");

    assert_eq!(e.kind, BackendErrorKind::Protocol, "{e}");
}

#[tokio::test]
async fn cancelling_mid_stream_aborts_the_http_request() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::StallAfterFirstChunk);
    let b = std::sync::Arc::new(backend(&settings(&fake.base_url())));
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let call = tokio::spawn({
        let (b, cancel) = (b.clone(), cancel.clone());
        async move { b.chat(request("hi"), Some(tx), cancel).await }
    });

    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("first delta in time");
    assert_eq!(first.as_deref(), Some(partial_pieces()[0].as_str()));
    assert_eq!(fake.disconnects(), 0);
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(5), call).await.expect("returns promptly").unwrap();

    let e = e.expect_err("cancelled");
    assert_eq!((e.kind, e.attempts), (BackendErrorKind::Cancelled, 1));
    poll_until(Duration::from_secs(5), "the server to see the disconnect", || fake.disconnects() == 1).await;
}

#[tokio::test]
async fn cancelling_while_waiting_for_an_answer_aborts_the_http_request() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::Stall);
    let b = backend(&settings(&fake.base_url()));
    let cancel = CancellationToken::new();
    let canceller = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        }
    });

    let e = b.chat(request("hi"), None, cancel).await.expect_err("cancelled");

    assert_eq!(e.kind, BackendErrorKind::Cancelled);
    canceller.await.unwrap();
    poll_until(Duration::from_secs(5), "the server to see the disconnect", || fake.disconnects() == 1).await;
}

#[tokio::test]
async fn already_cancelled_call_sends_nothing() {
    let fake = FakeOpenAi::start().await;
    let b = backend(&settings(&fake.base_url()));
    let cancel = CancellationToken::new();
    cancel.cancel();

    let e = b.chat(request("hi"), None, cancel).await.expect_err("cancelled");

    assert_eq!((e.kind, e.attempts), (BackendErrorKind::Cancelled, 0));
    assert!(fake.requests().is_empty());
}

#[test]
fn api_key_from_the_named_environment_variable_is_sent_as_bearer() {
    const VAR: &str = "AGENTVISOR_TEST_OPENAI_KEY_SENT";
    // SAFETY: no other thread exists yet in this test (the runtime is built
    // below), and nextest runs each test in its own process.
    unsafe { std::env::set_var(VAR, "sk-test-123") };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::Answer("authorised".into())).push(Behaviour::Status(401));
        let mut s = settings(&fake.base_url());
        s.api_key_env = Some(VAR.into());
        let b = backend(&s);

        assert_eq!(chat(&b, request("hi")).await.expect("answer").content, "authorised");
        let e = chat(&b, request("hi")).await.expect_err("401");
        b.models().await.expect("models");

        assert_eq!(fake.requests()[0].authorization().as_deref(), Some("Bearer sk-test-123"));
        assert_eq!(e.kind, BackendErrorKind::Auth);
        assert!(!e.to_string().contains("sk-test-123"), "the key never appears in errors: {e}");
        assert!(!format!("{b:?}").contains("sk-test-123"), "nor in Debug output");
    });
}

#[tokio::test]
async fn unset_api_key_variable_fails_with_auth_naming_the_variable() {
    let fake = FakeOpenAi::start().await;
    let mut s = settings(&fake.base_url());
    s.api_key_env = Some("AGENTVISOR_TEST_OPENAI_KEY_NEVER_SET".into());
    let b = backend(&s);

    let e = chat(&b, request("hi")).await.expect_err("no key");

    assert_eq!(e.kind, BackendErrorKind::Auth);
    assert!(e.message.contains("AGENTVISOR_TEST_OPENAI_KEY_NEVER_SET"), "{}", e.message);
    assert!(fake.requests().is_empty(), "nothing sent without the key");
    assert_eq!(b.models().await.expect_err("no key").kind, BackendErrorKind::Auth);
}

#[tokio::test]
async fn missing_base_url_is_rejected_at_construction() {
    let mut s = settings("http://127.0.0.1:1/v1");
    s.base_url = None;
    let e = OpenAiBackend::new("nowhere", &s).expect_err("no base_url");
    assert_eq!((e.kind, e.backend.as_str()), (BackendErrorKind::BadRequest, "nowhere"));
    assert!(e.message.contains("base_url"), "{}", e.message);

    s.base_url = Some("not a url".into());
    assert_eq!(OpenAiBackend::new("x", &s).expect_err("bad url").kind, BackendErrorKind::BadRequest);
}

#[tokio::test]
async fn model_list_is_cached_for_its_ttl() {
    let fake = FakeOpenAi::start().await;
    fake.set_models(&["llama-3", "qwen-2"]);
    let mut s = settings(&fake.base_url());
    s.models_ttl_secs = 60.0;
    let b = backend(&s);

    assert_eq!(b.models().await.expect("models"), ["llama-3", "qwen-2"]);
    fake.set_models(&["changed"]);
    assert_eq!(b.models().await.expect("cached models"), ["llama-3", "qwen-2"]);
    assert_eq!(fake.model_list_calls(), 1, "second call within the TTL made no request");

    s.models_ttl_secs = 0.0;
    let uncached = backend(&s);
    assert_eq!(uncached.models().await.expect("models"), ["changed"]);
    assert_eq!(uncached.models().await.expect("models"), ["changed"]);
    assert_eq!(fake.model_list_calls(), 3, "a zero TTL fetches every time");
}

#[tokio::test]
async fn model_list_from_an_unreachable_server_is_unreachable() {
    let b = backend(&settings(&FakeOpenAi::refused_base_url()));
    assert_eq!(b.models().await.expect_err("refused").kind, BackendErrorKind::Unreachable);
}
