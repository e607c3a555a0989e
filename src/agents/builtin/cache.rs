//! CacheManager: the response cache's agent. While it runs, HybridRouter
//! answers deterministic model calls from the cache and stores their answers
//! there ([`crate::routing::cache`]); when it stops (or never started: it is
//! on demand) calls go on uncached. Its tasks read and write the same cache,
//! so other agents can keep their own values in it (any JSON, with a TTL).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `cache.get` | `{"key"}` | `{"key", "hit", "value"?, "age_seconds"?, "expires_at"?}` |
//! | `cache.put` | `{"key", "value", "ttl_seconds"?}` | `{"key", "stored", "expires_at"}` |
//! | `cache.invalidate` | `{"key"}`, `{"prefix"}` or `{"all": true}` | `{"invalidated"}` |
//! | `cache.stats` | nothing | `{"enabled", "running", "entries", "size_bytes", "capacity_bytes", "ttl_seconds", "hits", "misses", "evictions", "hit_ratio"}` |
//!
//! The schemas are the spec's (`agents/pc2_infrastructure/CacheManager.yaml`).
//! With `cache.enabled: false` the tasks still answer (`cache.put` stores
//! nothing: `stored: false`) and HybridRouter never uses the cache.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, Behaviour, unknown_type};
use crate::agents::tasks::decode;
use crate::core::{ErrorCode, Task, TaskError};
use crate::routing::cache::ResponseCache;
use crate::supervisor::StartError;

/// The agent's name.
pub(crate) const AGENT: &str = "CacheManager";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutInput {
    key: String,
    value: Value,
    ttl_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateInput {
    key: Option<String>,
    prefix: Option<String>,
    all: Option<bool>,
}

/// The CacheManager behaviour.
pub struct CacheManager {
    cache: ResponseCache,
}

impl CacheManager {
    /// The behaviour over the daemon's response cache.
    pub(crate) fn new(cache: ResponseCache) -> CacheManager {
        CacheManager { cache }
    }
}

fn bad(task_type: &str, at: &str, what: &str) -> TaskError {
    TaskError::new(ErrorCode::InvalidField, format!("input of {task_type} at {at}: {what}"))
}

#[async_trait]
impl Behaviour for CacheManager {
    async fn start(&self) -> Result<(), StartError> {
        self.cache.set_active(true);
        tracing::info!(enabled = self.cache.enabled(), "response cache on");
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "cache.get" => {
                let KeyInput { key } = decode(t, &task.input)?;
                Ok(match self.cache.get(&key) {
                    Some(e) => json!({
                        "key": key, "hit": true, "value": e.value,
                        "age_seconds": e.stored.elapsed().as_secs_f64(), "expires_at": e.expires_at(),
                    }),
                    None => json!({"key": key, "hit": false}),
                })
            }
            "cache.put" => {
                let PutInput { key, value, ttl_seconds } = decode(t, &task.input)?;
                let ttl = match ttl_seconds {
                    None => None,
                    Some(s) => match Duration::try_from_secs_f64(s) {
                        Ok(d) if s > 0.0 => Some(d),
                        _ => return Err(bad(t, "/ttl_seconds", "must be a positive number of seconds")),
                    },
                };
                if key.trim().is_empty() {
                    return Err(bad(t, "/key", "the key must not be blank"));
                }
                let expires_at = if self.cache.enabled() { self.cache.put(key.clone(), value, ttl) } else { None };
                Ok(json!({"key": key, "stored": expires_at.is_some(), "expires_at": expires_at}))
            }
            "cache.invalidate" => {
                let InvalidateInput { key, prefix, all } = decode(t, &task.input)?;
                let n = match (key, prefix, all) {
                    (Some(k), None, None) => u64::from(self.cache.invalidate(&k)),
                    (None, Some(p), None) if !p.is_empty() => self.cache.invalidate_prefix(&p),
                    (None, None, Some(true)) => self.cache.invalidate_prefix(""),
                    _ => return Err(bad(t, "the top level", "give exactly one of `key`, `prefix` and `all: true`")),
                };
                Ok(json!({"invalidated": n}))
            }
            "cache.stats" => Ok(self.cache.stats()),
            _ => Err(unknown_type(AGENT, &task)),
        }
    }

    async fn stop(&self) {
        self.cache.set_active(false);
        tracing::info!("response cache off: calls go on uncached");
    }
}
