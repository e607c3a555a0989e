//! The `openai` backend: any OpenAI-compatible `POST {base_url}/chat/completions`
//! (Ollama, llama.cpp server, vLLM, LM Studio, DeepInfra, OpenAI, Gemini's
//! OpenAI endpoint), non-streaming or streaming over SSE, and the model list
//! from `GET {base_url}/models`.
//!
//! Where it sits: HybridRouter calls [`ChatBackend::chat`] on an
//! [`OpenAiBackend`]; this file turns the call into HTTP attempts (with
//! timeouts, retries on retryable errors and cancellation) and the answers
//! back into a [`ChatResponse`] or a typed [`BackendError`]. The SSE framing
//! lives in the inner `sse` module.
//!
//! Wire format from the OpenAI Chat Completions API reference
//! (`chat.completion`, `chat.completion.chunk`, `data: [DONE]`,
//! `stream_options.include_usage`).
//!
//! Constrained answers (issue 15): a request with a JSON schema
//! (`GenParams::json_schema`) offers one function tool whose `parameters`
//! are the schema and forces it with `tool_choice`; the answer's tool call
//! `arguments` become the content. A server that ignores tools and answers
//! text gives that text (the agent validates it and repairs once).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BackendError, BackendErrorKind, ChatBackend, ChatMessage, ChatRequest, ChatResponse};
use crate::config::BackendSettings;
use crate::core::estimate_tokens;

/// Longest error message kept from a server's answer, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// Upward jitter on retry delays: a delay `d` is drawn from `[d, d * (1 + RETRY_JITTER)]`
/// (then capped), so `d` stays a lower bound callers can rely on.
const RETRY_JITTER: f64 = 0.25;

/// Longest duration taken from a setting (one year); keeps deadline arithmetic from overflowing.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A backend speaking the OpenAI Chat Completions API over HTTP.
///
/// Holds one pooled `reqwest` client (with the connect timeout), the
/// settings it was built from and the cached model list. The API key is
/// read from the environment variable named by `api_key_env` at each call
/// and never stored in the struct nor logged.
#[derive(Debug)]
pub struct OpenAiBackend {
    /// Configured backend name (in errors and logs).
    name: String,
    /// `{base_url}/chat/completions` (`base_url` without a trailing `/`,
    /// e.g. `http://127.0.0.1:11434/v1`), parsed once, not at each call.
    chat_url: reqwest::Url,
    /// `{base_url}/models`, parsed once.
    models_url: reqwest::Url,
    /// Timeouts, retries, TTL, key variable name.
    settings: BackendSettings,
    /// Connection pool; its connect timeout is `connect_timeout_secs`.
    client: reqwest::Client,
    /// `GET /models` answer and when it was fetched (kept `models_ttl_secs`).
    models_cache: parking_lot::Mutex<Option<(Instant, Vec<String>)>>,
}

impl OpenAiBackend {
    /// A backend named `name` for the `openai`-kind `settings`. Nothing is
    /// contacted and no API key is needed yet (a key is optional for local
    /// servers; see [`ChatBackend::chat`] for when a missing one fails).
    ///
    /// # Errors
    /// [`BackendErrorKind::BadRequest`] when `base_url` is missing or not an
    /// `http`/`https` URL, or when the HTTP client cannot be built.
    pub fn new(name: &str, settings: &BackendSettings) -> Result<OpenAiBackend, BackendError> {
        let invalid = |message: String| BackendError {
            backend: name.to_string(),
            kind: BackendErrorKind::BadRequest,
            message,
            status: None,
            attempts: 0,
        };
        let base_url = settings
            .base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid("base_url is required for an openai backend".into()))?;
        match reqwest::Url::parse(&base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => return Err(invalid(format!("base_url {base_url}: unsupported scheme {}", url.scheme()))),
            Err(e) => return Err(invalid(format!("base_url {base_url}: {e}"))),
        }
        let endpoint = |path: &str| {
            reqwest::Url::parse(&format!("{base_url}/{path}")).map_err(|e| invalid(format!("base_url {base_url}: {e}")))
        };
        let (chat_url, models_url) = (endpoint("chat/completions")?, endpoint("models")?);
        let client = reqwest::Client::builder()
            .connect_timeout(secs(settings.connect_timeout_secs))
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(OpenAiBackend {
            name: name.to_string(),
            chat_url,
            models_url,
            settings: settings.clone(),
            client,
            models_cache: parking_lot::Mutex::new(None),
        })
    }

    /// A [`BackendError`] of this backend.
    fn error(&self, kind: BackendErrorKind, message: String, status: Option<u16>, attempts: u32) -> BackendError {
        BackendError { backend: self.name.clone(), kind, message, status, attempts }
    }

    /// The `Authorization` header value, when a key is configured.
    ///
    /// # Errors
    /// [`BackendErrorKind::Auth`] when `api_key_env` names a variable that
    /// is unset, empty, or not a valid header value (the message names the
    /// variable, never its value).
    fn authorization(&self) -> Result<Option<HeaderValue>, BackendError> {
        let Some(var) = self.settings.api_key_env.as_deref() else {
            return Ok(None);
        };
        let key = match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => key,
            _ => {
                return Err(self.error(
                    BackendErrorKind::Auth,
                    format!("API key variable {var} is not set (api_key_env)"),
                    None,
                    0,
                ));
            }
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
            self.error(BackendErrorKind::Auth, format!("API key variable {var} holds an invalid value"), None, 0)
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// All attempts of one call: retries retryable failures with backoff
    /// until `max_retries`, the total deadline, or a forwarded delta stops it.
    /// `attempts` counts HTTP attempts for the caller (read on cancel).
    async fn run(
        &self,
        request: &ChatRequest,
        deltas: Option<&mpsc::UnboundedSender<String>>,
        started: Instant,
        attempts: &std::sync::atomic::AtomicU32,
    ) -> Result<ChatResponse, BackendError> {
        use std::sync::atomic::Ordering;

        let auth = self.authorization()?;
        let body = request_body(request, deltas.is_some()).map_err(|e| {
            self.error(BackendErrorKind::BadRequest, format!("cannot encode the request: {e}"), None, 0)
        })?;
        let total = secs(self.settings.total_timeout_secs);
        let deadline = started + total;
        let mut forwarded = false;
        let mut retry = 0u32;
        loop {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let call = Call { request, body: body.clone(), auth: auth.as_ref(), deltas, started, deadline };
            let outcome = match tokio::time::timeout_at(deadline, self.attempt(&call, &mut forwarded)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::timeout(format!("no complete answer within the total timeout of {total:?}"))),
            };
            let failure = match outcome {
                Ok(mut response) => {
                    response.attempts = attempt;
                    return Ok(response);
                }
                Err(failure) => failure,
            };
            if !failure.retryable || forwarded || retry >= self.settings.max_retries {
                return Err(failure.into_error(self, attempt));
            }
            let backoff = retry_delay(
                retry,
                self.settings.retry_initial_secs,
                self.settings.retry_max_secs,
                rand::random::<f64>(),
            );
            let delay = match failure.retry_after {
                Some(after) => backoff.max(after.min(secs(self.settings.retry_max_secs))),
                None => backoff,
            };
            if Instant::now() + delay >= deadline {
                return Err(failure.into_error(self, attempt));
            }
            tracing::warn!(
                backend = %self.name,
                attempt,
                error = %format_args!("{}: {}", failure.kind.as_str(), failure.message),
                delay_secs = delay.as_secs_f64(),
                "backend call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One HTTP attempt. Sets `forwarded` once a streamed delta went out.
    async fn attempt(&self, call: &Call<'_>, forwarded: &mut bool) -> Result<ChatResponse, Failure> {
        let attempt_start = Instant::now();
        let first_token = secs(self.settings.first_token_timeout_secs);
        let first_deadline = (attempt_start + first_token).min(call.deadline);
        let mut builder =
            self.client.post(self.chat_url.clone()).header(CONTENT_TYPE, "application/json").body(call.body.clone());
        if let Some(auth) = call.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = match tokio::time::timeout_at(first_deadline, builder.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(Failure::from_send(&e)),
            Err(_) => return Err(Failure::first_token(first_token, first_deadline == call.deadline)),
        };
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::from_status(response, call.deadline).await);
        }
        match call.deltas {
            Some(deltas) => self.read_stream(call, response, deltas, first_deadline, forwarded).await,
            None => self.read_whole(call, response).await,
        }
    }

    /// Reads a non-streaming `chat.completion` body.
    async fn read_whole(&self, call: &Call<'_>, response: reqwest::Response) -> Result<ChatResponse, Failure> {
        let bytes = match tokio::time::timeout_at(call.deadline, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(Failure::protocol(format!("answer body broke off: {}", chain(&e)))),
            Err(_) => return Err(Failure::timeout("answer body not complete within the total timeout".into())),
        };
        let elapsed = call.started.elapsed();
        let wire: WireCompletion = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::protocol(format!("undecodable chat.completion: {e}: {}", snippet(&bytes))))?;
        if let Some(error) = wire.error {
            return Err(Failure::server(format!("error in the answer: {}", error_text(&error))));
        }
        let choice = wire
            .choices
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| Failure::protocol("chat.completion without choices".into()))?;
        let content = choice.message.map(WireMessage::into_text).unwrap_or_default();
        Ok(finish(call.request, content, wire.model, choice.finish_reason, wire.usage, Some(elapsed)))
    }

    /// Reads an SSE stream of `chat.completion.chunk`s up to `data: [DONE]`,
    /// sending each content delta to `deltas`.
    async fn read_stream(
        &self,
        call: &Call<'_>,
        response: reqwest::Response,
        deltas: &mpsc::UnboundedSender<String>,
        first_deadline: Instant,
        forwarded: &mut bool,
    ) -> Result<ChatResponse, Failure> {
        let first_token = secs(self.settings.first_token_timeout_secs);
        let mut body = response.bytes_stream();
        let mut decoder = sse::SseDecoder::default();
        let mut state = StreamState::default();
        loop {
            let limit = if *forwarded { call.deadline } else { first_deadline };
            let (events, ended) = match tokio::time::timeout_at(limit, body.next()).await {
                Ok(Some(Ok(bytes))) => (decoder.push(&bytes), false),
                Ok(Some(Err(e))) => {
                    return Err(Failure::protocol(format!("stream broke off before [DONE]: {}", chain(&e))));
                }
                Ok(None) => (decoder.finish(), true),
                Err(_) if limit == call.deadline => {
                    return Err(Failure::timeout("stream not finished within the total timeout".into()));
                }
                Err(_) => return Err(Failure::first_token(first_token, false)),
            };
            let events = events.map_err(|e| Failure::protocol(e.to_string()))?;
            for data in events {
                if data.trim() == "[DONE]" {
                    return Ok(finish(
                        call.request,
                        state.content,
                        state.model,
                        state.finish_reason,
                        state.usage,
                        state.first_token,
                    ));
                }
                let chunk: WireCompletion = serde_json::from_str(&data).map_err(|e| {
                    Failure::protocol(format!("undecodable chat.completion.chunk: {e}: {}", snippet(data.as_bytes())))
                })?;
                if let Some(error) = chunk.error {
                    return Err(Failure::server(format!("error in the stream: {}", error_text(&error))));
                }
                state.absorb(chunk, call.started, deltas, forwarded);
            }
            if ended {
                return Err(Failure::protocol("stream ended without data: [DONE]".into()));
            }
        }
    }

    /// `GET {base_url}/models` once.
    async fn fetch_models(&self) -> Result<Vec<String>, Failure> {
        let started = Instant::now();
        let deadline = started + secs(self.settings.total_timeout_secs);
        let first_token = secs(self.settings.first_token_timeout_secs);
        let first_deadline = (started + first_token).min(deadline);
        let mut builder = self.client.get(self.models_url.clone());
        if let Some(auth) = self.authorization().map_err(Failure::from_error)? {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let response = match tokio::time::timeout_at(first_deadline, builder.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(Failure::from_send(&e)),
            Err(_) => return Err(Failure::first_token(first_token, first_deadline == deadline)),
        };
        if !response.status().is_success() {
            return Err(Failure::from_status(response, deadline).await);
        }
        let bytes = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(Failure::protocol(format!("model list broke off: {}", chain(&e)))),
            Err(_) => return Err(Failure::timeout("model list not complete within the total timeout".into())),
        };
        let list: WireModelList = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::protocol(format!("undecodable model list: {e}: {}", snippet(&bytes))))?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

#[async_trait]
impl ChatBackend for OpenAiBackend {
    /// `POST {base_url}/chat/completions` with `request.model`; streams over
    /// SSE when `deltas` is set (each content delta is sent there, in
    /// order). Retries connect errors, connect timeouts, 429 and 5xx up to
    /// `max_retries` times (delay `retry_initial_secs * 2^n` capped at
    /// `retry_max_secs`, jittered upwards; a 429's `Retry-After` seconds are
    /// waited at least, capped at `retry_max_secs`), never once a delta has
    /// been forwarded. The whole call, retries included, is bounded by
    /// `total_timeout_secs`; each attempt's response headers (and, when
    /// streaming, its first content delta) by `first_token_timeout_secs`.
    ///
    /// # Errors
    /// A [`BackendError`] whose kind is `Unreachable` (connect error),
    /// `Timeout`, `RateLimited` (429), `Auth` (401/403, or `api_key_env`
    /// names an unset variable), `BadRequest` (400/404/422 and other 4xx),
    /// `Server` (5xx or an error object in the answer), `Protocol`
    /// (undecodable answer, stream ended without `[DONE]`) or `Cancelled`.
    async fn chat(
        &self,
        request: ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
        cancel: CancellationToken,
    ) -> Result<ChatResponse, BackendError> {
        let started = Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(self.error(
                BackendErrorKind::Cancelled,
                "cancelled by the caller".into(),
                None,
                attempts.load(std::sync::atomic::Ordering::Relaxed),
            )),
            // Dropping this future on cancel drops the in-flight request,
            // which closes its connection: the server sees the disconnect.
            result = self.run(&request, deltas.as_ref(), started, &attempts) => result,
        }
    }

    /// `GET {base_url}/models` → the `data[].id` list, cached for
    /// `models_ttl_secs`. Not retried.
    ///
    /// # Errors
    /// The same kinds as [`ChatBackend::chat`] (without `Cancelled`).
    async fn models(&self) -> Result<Vec<String>, BackendError> {
        let ttl = secs(self.settings.models_ttl_secs);
        if let Some((fetched, list)) = &*self.models_cache.lock()
            && fetched.elapsed() < ttl
        {
            return Ok(list.clone());
        }
        let list = self.fetch_models().await.map_err(|f| f.into_error(self, 1))?;
        *self.models_cache.lock() = Some((Instant::now(), list.clone()));
        Ok(list)
    }
}

/// What one attempt needs; shared by the attempts of a call.
struct Call<'a> {
    /// The caller's request (for the model name and token estimates).
    request: &'a ChatRequest,
    /// The encoded JSON body.
    body: bytes::Bytes,
    /// `Authorization` header, when a key is configured.
    auth: Option<&'a HeaderValue>,
    /// Where streamed deltas go (`None`: non-streaming).
    deltas: Option<&'a mpsc::UnboundedSender<String>>,
    /// When the call began (first-token time is measured from here).
    started: Instant,
    /// When the total timeout runs out.
    deadline: Instant,
}

/// A failed attempt, before it becomes a [`BackendError`].
#[derive(Debug)]
struct Failure {
    /// Error kind.
    kind: BackendErrorKind,
    /// Details.
    message: String,
    /// HTTP status, when there was one.
    status: Option<u16>,
    /// Whether another attempt may succeed (connect errors, connect timeouts, 429, 5xx).
    retryable: bool,
    /// A 429's `Retry-After`.
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(kind: BackendErrorKind, message: String, retryable: bool) -> Failure {
        Failure { kind, message, status: None, retryable, retry_after: None }
    }

    fn timeout(message: String) -> Failure {
        Failure::new(BackendErrorKind::Timeout, message, false)
    }

    fn protocol(message: String) -> Failure {
        Failure::new(BackendErrorKind::Protocol, message, false)
    }

    fn server(message: String) -> Failure {
        Failure::new(BackendErrorKind::Server, message, false)
    }

    /// The first-token timeout (or the total one, when it came first) ran out.
    fn first_token(first_token: Duration, total_came_first: bool) -> Failure {
        if total_came_first {
            Failure::timeout("no answer within the total timeout".into())
        } else {
            Failure::timeout(format!("no first token within the first-token timeout of {first_token:?}"))
        }
    }

    /// A [`BackendError`] made before any attempt.
    fn from_error(e: BackendError) -> Failure {
        Failure { kind: e.kind, message: e.message, status: e.status, retryable: false, retry_after: None }
    }

    /// `send()` failed: no response headers.
    fn from_send(e: &reqwest::Error) -> Failure {
        let detail = chain(e);
        if e.is_connect() && e.is_timeout() {
            Failure::new(BackendErrorKind::Timeout, format!("connect timeout: {detail}"), true)
        } else if e.is_connect() {
            Failure::new(BackendErrorKind::Unreachable, format!("cannot connect: {detail}"), true)
        } else if e.is_timeout() {
            Failure::timeout(format!("request timed out: {detail}"))
        } else {
            // Connection reset or closed before any answer.
            Failure::new(BackendErrorKind::Unreachable, format!("no answer: {detail}"), true)
        }
    }

    /// A non-2xx answer: kind by status, the server's message kept.
    async fn from_status(response: reqwest::Response, deadline: Instant) -> Failure {
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Ok(Ok(bytes)) => server_message(&bytes),
            _ => String::new(),
        };
        let (kind, retryable) = status_kind(status);
        let message = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
        Failure { kind, message, status: Some(status.as_u16()), retryable, retry_after }
    }

    fn into_error(self, backend: &OpenAiBackend, attempts: u32) -> BackendError {
        backend.error(self.kind, self.message, self.status, attempts)
    }
}

/// Error kind for a non-2xx status, and whether it is retryable.
fn status_kind(status: StatusCode) -> (BackendErrorKind, bool) {
    match status.as_u16() {
        401 | 403 => (BackendErrorKind::Auth, false),
        429 => (BackendErrorKind::RateLimited, true),
        400..=499 => (BackendErrorKind::BadRequest, false),
        500..=599 => (BackendErrorKind::Server, true),
        _ => (BackendErrorKind::Protocol, false),
    }
}

/// Delay before retry number `retry` (0-based): `initial_secs * 2^retry`
/// capped at `max_secs`, then raised by up to [`RETRY_JITTER`] of itself
/// (`jitter_unit` in `[0, 1)` picks how much) without passing `max_secs`.
/// So the unjittered delay is a lower bound, and delays never shrink.
fn retry_delay(retry: u32, initial_secs: f64, max_secs: f64, jitter_unit: f64) -> Duration {
    let max = secs(max_secs).as_secs_f64();
    let base = (secs(initial_secs).as_secs_f64() * 2f64.powi(retry.min(62) as i32)).min(max);
    let jittered = (base * (1.0 + RETRY_JITTER * jitter_unit.clamp(0.0, 1.0))).min(max);
    secs(jittered)
}

/// `Retry-After` as delay seconds (integer or decimal); HTTP dates are ignored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| secs(seconds))
}

/// A duration from a seconds setting: negative and NaN give zero, huge values [`LONGEST`].
fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).map_or(LONGEST, |d| d.min(LONGEST))
}

/// The encoded request body (OpenAI Chat Completions request shape).
fn request_body(request: &ChatRequest, stream: bool) -> Result<bytes::Bytes, serde_json::Error> {
    let wire = WireRequest {
        model: &request.model,
        messages: &request.messages,
        max_tokens: request.params.max_tokens,
        temperature: request.params.temperature,
        top_p: request.params.top_p,
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        response_format: (request.params.json && request.params.json_schema.is_none())
            .then_some(ResponseFormat { kind: "json_object" }),
        tools: request.params.json_schema.as_ref().map(|schema| {
            [WireTool { kind: "function", function: WireFunction { name: tool_name(schema), parameters: schema } }]
        }),
        tool_choice: request
            .params
            .json_schema
            .as_ref()
            .map(|schema| WireToolChoice { kind: "function", function: WireFunctionName { name: tool_name(schema) } }),
    };
    serde_json::to_vec(&wire).map(bytes::Bytes::from)
}

/// The function name of a schema's tool: its `title` (characters outside
/// `[A-Za-z0-9_-]` dropped, at most 64, the OpenAI limits), else `answer`.
fn tool_name(schema: &serde_json::Value) -> String {
    let title = schema.get("title").and_then(|t| t.as_str()).unwrap_or_default();
    let name: String = title.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').take(64).collect();
    if name.is_empty() { "answer".to_string() } else { name }
}

/// The finished answer; tokens from `usage`, else estimated.
fn finish(
    request: &ChatRequest,
    content: String,
    model: Option<String>,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    first_token: Option<Duration>,
) -> ChatResponse {
    let prompt_chars: usize = request.messages.iter().map(|m| m.content.chars().count()).sum();
    let usage = usage.unwrap_or_default();
    let tokens_in = usage.prompt_tokens.map_or_else(|| estimate_tokens(prompt_chars), saturate);
    let tokens_out = usage.completion_tokens.map_or_else(|| estimate_tokens(content.chars().count()), saturate);
    ChatResponse {
        model: model.filter(|m| !m.is_empty()).unwrap_or_else(|| request.model.clone()),
        content,
        tokens_in,
        tokens_out,
        finish_reason,
        first_token,
        attempts: 1,
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The server's error message: `error.message` of an OpenAI error body,
/// else the body text; at most [`MAX_MESSAGE_CHARS`] characters.
fn server_message(bytes: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => match value.get("error") {
            Some(error) => error_text(error),
            None => String::from_utf8_lossy(bytes).into_owned(),
        },
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    truncate(text.trim())
}

/// `error.message`, or `error` itself when it is a string, or its JSON.
fn error_text(error: &serde_json::Value) -> String {
    let text = match error {
        serde_json::Value::String(s) => s.clone(),
        other => match other.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => other.to_string(),
        },
    };
    truncate(&text)
}

/// The start of an undecodable body, for error messages.
fn snippet(bytes: &[u8]) -> String {
    truncate(&String::from_utf8_lossy(&bytes[..bytes.len().min(4 * MAX_MESSAGE_CHARS)]))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// An error and its sources, `: `-joined (reqwest hides the cause in `source()`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// What a stream has delivered so far.
#[derive(Debug, Default)]
struct StreamState {
    content: String,
    model: Option<String>,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    first_token: Option<Duration>,
}

impl StreamState {
    /// Takes in one chunk; `choices` may be null or empty (the usage-only last chunk).
    fn absorb(
        &mut self,
        chunk: WireCompletion,
        started: Instant,
        deltas: &mpsc::UnboundedSender<String>,
        forwarded: &mut bool,
    ) {
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = Some(model);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) else {
            return;
        };
        if choice.finish_reason.is_some() {
            self.finish_reason = choice.finish_reason;
        }
        let mut delta = choice.delta;
        // A streamed tool call's arguments are the answer's text (not forwarded as deltas).
        for call in delta.as_mut().and_then(|d| d.tool_calls.take()).unwrap_or_default() {
            if let Some(args) = call.function.and_then(|f| f.arguments) {
                self.first_token.get_or_insert_with(|| started.elapsed());
                self.content.push_str(&args);
            }
        }
        if let Some(text) = delta.and_then(|d| d.content).filter(|t| !t.is_empty()) {
            self.first_token.get_or_insert_with(|| started.elapsed());
            self.content.push_str(&text);
            // A receiver that went away only stops the forwarding, not the answer.
            let _ = deltas.send(text);
            *forwarded = true;
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[WireTool<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice>,
}

/// `{"type": "function", "function": {"name", "parameters"}}`.
#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: String,
    parameters: &'a serde_json::Value,
}

/// `{"type": "function", "function": {"name"}}`: this tool must be called.
#[derive(Serialize)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionName,
}

#[derive(Serialize)]
struct WireFunctionName {
    name: String,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A `chat.completion` or a `chat.completion.chunk`; every field optional.
#[derive(Debug, Deserialize)]
struct WireCompletion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    /// Non-streaming answers.
    #[serde(default)]
    message: Option<WireMessage>,
    /// Streaming chunks.
    #[serde(default)]
    delta: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    /// Tool calls (an answer to a forced tool): the first one's arguments are the answer.
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

impl WireMessage {
    /// The answer's text: the first tool call's arguments, else the content.
    fn into_text(self) -> String {
        let args =
            self.tool_calls.and_then(|c| c.into_iter().next()).and_then(|c| c.function).and_then(|f| f.arguments);
        args.or(self.content).unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    function: Option<WireCalledFunction>,
}

#[derive(Debug, Deserialize)]
struct WireCalledFunction {
    /// JSON text (streamed in fragments).
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WireModelList {
    data: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    id: String,
}

/// Server-sent events framing (the WHATWG HTML "server-sent events" section):
/// bytes in, the `data` of each complete event out.
mod sse {
    /// Longest line kept while waiting for its end, bytes.
    const MAX_LINE_BYTES: usize = 16 << 20;

    /// Why a stream is not valid SSE.
    #[derive(Debug, thiserror::Error)]
    pub(super) enum SseError {
        /// A line was not UTF-8.
        #[error("SSE line is not UTF-8")]
        NotUtf8,
        /// A line grew past [`MAX_LINE_BYTES`] without ending.
        #[error("SSE line longer than {MAX_LINE_BYTES} bytes")]
        LineTooLong,
    }

    /// Incremental decoder: feed network reads with [`SseDecoder::push`] in
    /// any split (mid-line, mid-UTF-8 character), get whole events back.
    /// Lines end with `\n` or `\r\n`; `data:` lines of one event are joined
    /// with `\n`; a blank line ends the event; comments (`:`) and the
    /// `event`, `id` and `retry` fields are ignored.
    #[derive(Debug, Default)]
    pub(super) struct SseDecoder {
        /// Bytes of the line not yet ended.
        line: Vec<u8>,
        /// `data` of the event not yet ended.
        data: Option<String>,
    }

    impl SseDecoder {
        /// Feeds one network read; returns the data of each event it completed.
        pub(super) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
            let mut events = Vec::new();
            let mut rest = bytes;
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                self.line.extend_from_slice(&rest[..end]);
                rest = &rest[end + 1..];
                let line = std::mem::take(&mut self.line);
                self.take_line(&line, &mut events)?;
            }
            self.line.extend_from_slice(rest);
            if self.line.len() > MAX_LINE_BYTES {
                return Err(SseError::LineTooLong);
            }
            Ok(events)
        }

        /// The stream ended: a last unterminated line and a last event
        /// without its blank line still count (some servers omit them).
        pub(super) fn finish(&mut self) -> Result<Vec<String>, SseError> {
            let mut events = Vec::new();
            let line = std::mem::take(&mut self.line);
            if !line.is_empty() {
                self.take_line(&line, &mut events)?;
            }
            events.extend(self.data.take());
            Ok(events)
        }

        fn take_line(&mut self, line: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                events.extend(self.data.take());
                return Ok(());
            }
            if line.starts_with(':') {
                return Ok(());
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            if field == "data" {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sse::SseDecoder;
    use super::*;
    use crate::core::GenParams;

    fn push_all(decoder: &mut SseDecoder, pieces: &[&[u8]]) -> Vec<String> {
        pieces.iter().flat_map(|p| decoder.push(p).unwrap()).collect()
    }

    #[test]
    fn sse_events_split_across_reads_in_any_place() {
        let text = "data: {\"a\":\"h\u{e9}llo\"}\n\n: keep-alive\n\ndata: [DONE]\n\n".as_bytes();
        let whole = push_all(&mut SseDecoder::default(), &[text]);
        assert_eq!(whole, vec!["{\"a\":\"h\u{e9}llo\"}".to_string(), "[DONE]".to_string()]);
        // Every split point, including inside the two-byte 'é'.
        for at in 0..=text.len() {
            let mut d = SseDecoder::default();
            assert_eq!(push_all(&mut d, &[&text[..at], &text[at..]]), whole, "split at {at}");
        }
        // One byte per read.
        let mut d = SseDecoder::default();
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(push_all(&mut d, &bytes), whole);
    }

    #[test]
    fn sse_crlf_multiline_data_and_ignored_fields() {
        let mut d = SseDecoder::default();
        let events = d.push(b"event: message\r\nid: 7\r\ndata: one\r\ndata:two\r\nretry: 10\r\n\r\ndata\n\n").unwrap();
        assert_eq!(events, vec!["one\ntwo".to_string(), String::new()]);
    }

    #[test]
    fn sse_finish_keeps_an_unterminated_last_event() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: [DO").unwrap().is_empty());
        assert!(d.push(b"NE]").unwrap().is_empty());
        assert_eq!(d.finish().unwrap(), vec!["[DONE]".to_string()]);
        let mut d = SseDecoder::default();
        assert_eq!(d.push(b"data: x\n").unwrap(), Vec::<String>::new());
        assert_eq!(d.finish().unwrap(), vec!["x".to_string()]);
        assert!(SseDecoder::default().finish().unwrap().is_empty());
    }

    #[test]
    fn sse_rejects_non_utf8_lines() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: \xff\xfe\n").is_err());
    }

    #[test]
    fn retry_delay_doubles_caps_and_jitters_upwards() {
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(retry_delay(0, 0.25, 8.0, 0.0)), 250);
        assert_eq!(ms(retry_delay(1, 0.25, 8.0, 0.0)), 500);
        assert_eq!(ms(retry_delay(3, 0.25, 8.0, 0.0)), 2000);
        assert_eq!(ms(retry_delay(5, 0.25, 8.0, 0.0)), 8000);
        assert_eq!(ms(retry_delay(40, 0.25, 8.0, 0.999)), 8000);
        assert_eq!(ms(retry_delay(u32::MAX, 0.25, 8.0, 0.5)), 8000);
        // Jitter adds up to a quarter, never below the unjittered delay nor above the cap.
        assert_eq!(ms(retry_delay(0, 0.2, 8.0, 1.0)), 250);
        for i in 0..100 {
            let u = f64::from(i) / 100.0;
            let d = retry_delay(2, 0.1, 0.5, u);
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(500), "{d:?}");
            // Consecutive delays never shrink, whatever the jitter.
            assert!(retry_delay(3, 0.1, 10.0, 0.0) >= retry_delay(2, 0.1, 10.0, u));
        }
        // Nonsense settings do not panic.
        assert_eq!(retry_delay(1, -1.0, 8.0, 0.5), Duration::ZERO);
        assert_eq!(retry_delay(1, f64::NAN, f64::NAN, 0.5), Duration::ZERO);
        assert_eq!(retry_delay(1, 1.0, f64::INFINITY, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_and_status_kinds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        let kind = |code: u16| status_kind(StatusCode::from_u16(code).unwrap());
        assert_eq!(kind(401), (BackendErrorKind::Auth, false));
        assert_eq!(kind(403), (BackendErrorKind::Auth, false));
        assert_eq!(kind(400), (BackendErrorKind::BadRequest, false));
        assert_eq!(kind(404), (BackendErrorKind::BadRequest, false));
        assert_eq!(kind(422), (BackendErrorKind::BadRequest, false));
        assert_eq!(kind(429), (BackendErrorKind::RateLimited, true));
        assert_eq!(kind(500), (BackendErrorKind::Server, true));
        assert_eq!(kind(503), (BackendErrorKind::Server, true));
    }

    #[test]
    fn server_messages_are_extracted_and_truncated() {
        assert_eq!(server_message(br#"{"error":{"message":"bad model","type":"invalid"}}"#), "bad model");
        assert_eq!(server_message(br#"{"error":"overloaded"}"#), "overloaded");
        assert_eq!(server_message(b"plain text\n"), "plain text");
        let long = "\u{e9}".repeat(2000);
        let cut = server_message(long.as_bytes());
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn request_body_shape() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            params: GenParams { max_tokens: Some(5), json: true, ..Default::default() },
            ..Default::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&request_body(&request, true).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
                "stream": true,
                "stream_options": {"include_usage": true},
                "response_format": {"type": "json_object"},
            })
        );
        let plain = ChatRequest { params: GenParams::default(), ..request };
        let body: serde_json::Value = serde_json::from_slice(&request_body(&plain, false).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false})
        );
    }

    #[test]
    fn a_schema_becomes_a_forced_tool_and_its_call_the_answer() {
        let schema = serde_json::json!({"title": "consult specialist!", "type": "object"});
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            params: GenParams { json: true, json_schema: Some(schema.clone()), ..Default::default() },
            ..Default::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&request_body(&request, false).unwrap()).unwrap();
        assert_eq!(
            body["tools"],
            serde_json::json!([{"type": "function", "function": {"name": "consultspecialist", "parameters": schema}}])
        );
        assert_eq!(
            body["tool_choice"],
            serde_json::json!({"type": "function", "function": {"name": "consultspecialist"}})
        );
        assert!(body.get("response_format").is_none(), "{body}");
        assert_eq!(tool_name(&serde_json::json!({"type": "object"})), "answer");
        let m: WireMessage = serde_json::from_value(serde_json::json!({"content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{\"a\":1}"}}]}))
        .unwrap();
        assert_eq!(m.into_text(), r#"{"a":1}"#);
        let m: WireMessage = serde_json::from_value(serde_json::json!({"content": "plain"})).unwrap();
        assert_eq!(m.into_text(), "plain");
    }

    #[test]
    fn tokens_are_estimated_without_usage() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new("user", "12345678")],
            ..Default::default()
        };
        let r = finish(&request, "abcde".into(), None, None, None, None);
        assert_eq!((r.tokens_in, r.tokens_out, r.model.as_str()), (2, 2, "m"));
        let usage = WireUsage { prompt_tokens: Some(11), completion_tokens: Some(3) };
        let r = finish(&request, "abcde".into(), Some("served".into()), None, Some(usage), None);
        assert_eq!((r.tokens_in, r.tokens_out, r.model.as_str()), (11, 3, "served"));
    }
}
