//! UnifiedUtilsAgent: small utilities. Stateless.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `utils.echo` | any JSON | the input; with `stream: true`, a text input streams word by word |
//! | `utils.time` | ignored | `{"unix_seconds": f64, "rfc3339": "2026-11-22T00:00:00.000Z"}` |
//! | `utils.uuid` | ignored | `{"uuid": "<v4>"}` |
//! | `utils.hash` | text, or `{"text": ..., "algorithm": "sha256"}` | `{"algorithm": "sha256", "hex": "<64 hex digits>", "bytes": n}` |
//! | `utils.sleep` | seconds (number, 0–300) or `{"seconds": s}` | `{"slept_seconds": s}`; cancellable |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Answer, Behaviour, bad_input, unknown_type};
use crate::core::Task;

/// Longest `utils.sleep`, seconds.
const MAX_SLEEP_SECS: f64 = 300.0;

/// The UnifiedUtilsAgent behaviour.
pub struct Utils;

#[async_trait]
impl Behaviour for Utils {
    async fn handle(&self, task: Task) -> Answer {
        match task.task_type.as_str() {
            "utils.echo" => {
                if let (Some(_), Value::String(text)) = (&task.chunks, &task.input) {
                    let words: Vec<&str> = text.split_inclusive(' ').collect();
                    for w in words {
                        task.emit(w);
                    }
                }
                Ok(task.input)
            }
            "utils.time" => {
                let now = SystemTime::now();
                let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                Ok(json!({"unix_seconds": unix, "rfc3339": humantime::format_rfc3339_millis(now).to_string()}))
            }
            "utils.uuid" => Ok(json!({"uuid": uuid::Uuid::new_v4().to_string()})),
            "utils.hash" => {
                let (text, algorithm) = match &task.input {
                    Value::String(s) => (s.clone(), "sha256".to_string()),
                    Value::Object(m) => (
                        m.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad_input(&task, "missing text"))?
                            .to_string(),
                        m.get("algorithm").and_then(Value::as_str).unwrap_or("sha256").to_string(),
                    ),
                    _ => return Err(bad_input(&task, "expected text or {\"text\": ...}")),
                };
                if algorithm != "sha256" {
                    return Err(bad_input(&task, format!("unsupported algorithm {algorithm} (sha256 only)")));
                }
                let digest = Sha256::digest(text.as_bytes());
                Ok(json!({"algorithm": "sha256", "hex": hex::encode(digest), "bytes": text.len()}))
            }
            "utils.sleep" => {
                let secs = match &task.input {
                    Value::Number(n) => n.as_f64(),
                    Value::Object(m) => m.get("seconds").and_then(Value::as_f64),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| bad_input(&task, "expected seconds"))?;
                if !(0.0..=MAX_SLEEP_SECS).contains(&secs) {
                    return Err(bad_input(&task, format!("seconds must be within 0..={MAX_SLEEP_SECS}")));
                }
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(json!({"slept_seconds": secs}))
            }
            _ => Err(unknown_type("UnifiedUtilsAgent", &task)),
        }
    }
}
