//! A fixed-answer OpenAI-compatible server, the upstream of the gateway
//! benchmark (`agentvisor bench upstream`, `agentvisor bench gateway
//! --spawn`): it answers as fast as axum can, so a benchmark through the
//! gateway measures agentvisor's path, not a model.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/chat/completions` | `200` [`COMPLETION`] whatever the request (read, not parsed; no streaming) |
//! | `GET /v1/models` | `200 {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "agentvisor-bench"}]}` |

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// The model id the upstream lists.
pub const MODEL: &str = "bench-model";

/// The one answer to every chat request: a `chat.completion` with `usage`.
pub const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench-model","#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
);

const MODELS: &str =
    r#"{"object":"list","data":[{"id":"bench-model","object":"model","owned_by":"agentvisor-bench"}]}"#;

/// The routes (`/v1/chat/completions`, `/v1/models`).
pub fn router() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(|_body: Bytes| async { json(COMPLETION) }))
        .route("/v1/models", get(|| async { json(MODELS) }))
}

fn json(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_answers_are_openai_json() {
        let c: serde_json::Value = serde_json::from_str(COMPLETION).unwrap();
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["model"], MODEL);
        assert_eq!(c["choices"][0]["message"]["content"], "pong");
        assert_eq!(c["usage"]["total_tokens"], 2);
        let m: serde_json::Value = serde_json::from_str(MODELS).unwrap();
        assert_eq!(m["data"][0]["id"], MODEL);
    }
}
