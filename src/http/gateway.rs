//! The OpenAI-compatible gateway on the HTTP server: any OpenAI client can
//! use agentvisor as its endpoint, and every request goes through
//! HybridRouter (with a receipt, like agent calls).
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/chat/completions` | OpenAI `chat.completion` (or SSE `chat.completion.chunk`s with `stream: true`) |
//! | `GET /v1/models` | `{"object": "list", "data": [{"id", "object": "model", "owned_by"}]}`: `auto`, each backend's name, each backend's model |
//!
//! Request fields used: `model` (`auto`, a backend name to force that
//! backend, a backend's model, or a GGUF file under `models_dir`; any other
//! name is routed as `auto`, or with `http.strict_models: true` refused with
//! `400 invalid_field` listing the known ones), `messages` (string
//! content or text parts), `stream`, `max_tokens`/`max_completion_tokens`,
//! `temperature`, `top_p`, `response_format: {"type": "json_object"}`,
//! `user` (who asks: it reaches the receipt); other fields are accepted and
//! ignored. Routing hints as headers: `x-agentvisor-task-type` (default
//! `chat`, matched against `routing.rules`), `x-agentvisor-prefer`
//! (`local`/`cloud`), `x-agentvisor-complexity` (0–1).
//!
//! Non-streaming answers carry the receipt in headers: `x-agentvisor-backend`,
//! `x-agentvisor-tier`, `x-agentvisor-route-reason`, `x-agentvisor-cost-usd`
//! (and the whole receipt as `x_agentvisor_route` in the body). Streaming
//! answers carry it in the last chunk's `x_agentvisor_route` (headers leave
//! before the route is known). Errors use OpenAI's shape
//! `{"error": {"message", "type", "code"}}`: 400 bad request, 503
//! `no_backend`, 502 `backend_error`, 504 timeout.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::App;
use crate::agents::auth::Principal;
use crate::core::{ChatMessage, ErrorCode, GenParams, Prefer, Receipt, Schedule, TaskError};
use crate::routing::router::{ModelAnswer, ModelCall, ModelFailure, known_models, resolve_model};

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    response_format: Option<Value>,
    /// OpenAI's end-user id: who asks.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A non-streaming `chat.completion`, written straight from the answer
/// (no intermediate JSON tree).
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    x_agentvisor_route: &'a Receipt,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

pub(crate) fn openai_error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_client_error() { "invalid_request_error" } else { "api_error" };
    (status, Json(json!({"error": {"message": message, "type": kind, "code": code}}))).into_response()
}

fn task_error(e: &TaskError) -> Response {
    let status = match e.code {
        ErrorCode::NoBackend | ErrorCode::ShuttingDown | ErrorCode::AgentNotRunning => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::BackendError => StatusCode::BAD_GATEWAY,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::InvalidField => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    openai_error(status, e.code.as_str(), &e.message)
}

fn header(value: impl AsRef<str>) -> HeaderValue {
    let clean: String = value.as_ref().chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(300).collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn unix() -> u64 {
    crate::core::unix_time() as u64
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(app): State<App>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = app.gate.check() {
        return task_error(&e);
    }
    let body: ChatBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return openai_error(StatusCode::BAD_REQUEST, "invalid_field", &format!("request body: {e}")),
    };
    if body.messages.is_empty() {
        return openai_error(StatusCode::BAD_REQUEST, "invalid_field", "messages must not be empty");
    }
    let settings = &app.services.settings;
    let hint = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let prefer = match hint("x-agentvisor-prefer").as_deref() {
        Some("local") => Some(Prefer::Local),
        Some("cloud") => Some(Prefer::Cloud),
        _ => None,
    };
    let complexity =
        hint("x-agentvisor-complexity").and_then(|c| c.parse::<f64>().ok()).filter(|c| (0.0..=1.0).contains(c));
    // `model: auto` or none: the content of the request decides (issue 15).
    let auto = matches!(body.model.as_deref(), None | Some("auto") | Some(""));
    let (backend, model) = match body.model.as_deref() {
        None | Some("auto") | Some("") => (None, None),
        Some(m) => match resolve_model(&settings.backends, &settings.models_dir, m) {
            Some((backend, model)) => (Some(backend), model),
            None if !settings.http.strict_models => {
                tracing::debug!(model = m, "model not served here: routed as auto (http.strict_models is off)");
                (None, None)
            }
            None => {
                let known = known_models(&settings.backends).join(", ");
                let message =
                    format!("model {m:?} is not served here; known: auto, {known}, or a GGUF file in models_dir");
                return openai_error(StatusCode::BAD_REQUEST, "invalid_field", &message);
            }
        },
    };
    let router = app.services.router.clone();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let cancel = CancellationToken::new();
    let (delta_tx, delta_rx) = mpsc::unbounded_channel::<String>();
    let call = ModelCall {
        task_id: id.clone(),
        agent: "gateway".into(),
        task_type: hint("x-agentvisor-task-type").unwrap_or_else(|| "chat".into()),
        complexity,
        agent_complexity: 0.5,
        prefer,
        // The token's subject, when the door asked for one.
        user: principal.map(|Extension(p)| p.subject().to_string()).or_else(|| body.user.clone()),
        backend,
        model,
        messages: body.messages.iter().map(|m| ChatMessage::new(&m.role, text_of(&m.content))).collect(),
        params: GenParams {
            max_tokens: body.max_tokens.or(body.max_completion_tokens),
            temperature: body.temperature,
            top_p: body.top_p,
            json: body.response_format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str)
                == Some("json_object"),
            ..Default::default()
        },
        schedule: Schedule {
            priority: hint("x-agentvisor-priority").and_then(|p| p.parse::<u8>().ok()).filter(|p| *p <= 9).unwrap_or(5),
            push_to_front: hint("x-agentvisor-push-to-front")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
        },
        deltas: body.stream.then_some(delta_tx),
        cancel: cancel.clone(),
        queue_ms: 0.0,
        content_routing: auto,
        // OpenAI's default temperature is 1: only an explicit 0 is deterministic.
        cache: body.temperature == Some(0.0),
    };
    let timeout = settings.tasks.call_timeout();
    let pending = async move { router.call(call, timeout).await };
    if body.stream {
        return stream_response(id, pending, delta_rx, cancel);
    }
    let _cancel_on_drop = cancel.drop_guard(); // the client left: stop the backend call
    match pending.await {
        Ok(ModelAnswer { response, receipt }) => {
            let tokens = Usage {
                prompt_tokens: response.tokens_in,
                completion_tokens: response.tokens_out,
                total_tokens: response.tokens_in + response.tokens_out,
            };
            let mut resp = Json(Completion {
                id: &id,
                object: "chat.completion",
                created: unix(),
                model: &response.model,
                choices: [Choice {
                    index: 0,
                    message: Message { role: "assistant", content: &response.content },
                    finish_reason: response.finish_reason.as_deref().unwrap_or("stop"),
                }],
                usage: tokens,
                x_agentvisor_route: &receipt,
            })
            .into_response();
            let h = resp.headers_mut();
            h.insert("x-agentvisor-backend", header(receipt.backend.as_deref().unwrap_or("-")));
            h.insert("x-agentvisor-tier", header(&receipt.tier));
            h.insert("x-agentvisor-route-reason", header(&receipt.reason));
            h.insert("x-agentvisor-cost-usd", header(format!("{:.8}", receipt.cost_usd)));
            resp
        }
        Err(failure) => task_error(&failure.error),
    }
}

fn stream_response(
    id: String,
    pending: impl std::future::Future<Output = Result<ModelAnswer, ModelFailure>> + Send + 'static,
    deltas: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) -> Response {
    let created = unix();
    let (tx, rx) = mpsc::unbounded_channel::<Result<Event, Infallible>>();
    let chunk = move |id: &str, delta: Value, finish: Option<&str>, extra: Option<Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": "agentvisor",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(extra) = extra {
            c["x_agentvisor_route"] = extra;
        }
        Event::default().data(c.to_string())
    };
    tokio::spawn(async move {
        let mut deltas = UnboundedReceiverStream::new(deltas);
        let _ = tx.send(Ok(chunk(&id, json!({"role": "assistant"}), None, None)));
        let pending = pending;
        tokio::pin!(pending);
        let result = loop {
            tokio::select! {
                Some(d) = deltas.next() => {
                    if tx.send(Ok(chunk(&id, json!({"content": d}), None, None))).is_err() {
                        cancel.cancel(); // the client left
                    }
                }
                r = &mut pending => break r,
            }
        };
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(50), deltas.next()).await {
            let _ = tx.send(Ok(chunk(&id, json!({"content": d}), None, None)));
        }
        match result {
            Ok(answer) => {
                let reason = answer.response.finish_reason.clone().unwrap_or_else(|| "stop".into());
                let _ = tx.send(Ok(chunk(&id, json!({}), Some(&reason), serde_json::to_value(&answer.receipt).ok())));
            }
            Err(failure) => {
                let err = json!({"error": {"message": failure.error.message, "type": "api_error", "code": failure.error.code}});
                let _ = tx.send(Ok(Event::default().data(err.to_string())));
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]")));
    });
    Sse::new(UnboundedReceiverStream::new(rx)).into_response()
}

/// `GET /v1/models`.
pub async fn models(State(app): State<App>) -> Json<Value> {
    let mut data = vec![json!({"id": "auto", "object": "model", "created": 0, "owned_by": "agentvisor"})];
    for (name, b) in app.services.settings.backends.iter().filter(|(_, b)| b.enabled) {
        data.push(json!({"id": name, "object": "model", "created": 0, "owned_by": "agentvisor"}));
        data.push(json!({"id": b.model, "object": "model", "created": 0, "owned_by": name}));
    }
    Json(json!({"object": "list", "data": data}))
}
