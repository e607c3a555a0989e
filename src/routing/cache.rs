//! The response cache in front of HybridRouter (issue 14, seed 001's "Gap 4:
//! Cache Expiration"): answers of deterministic model calls, kept for a TTL
//! within a size bound (`moka`, TinyLFU admission, LRU eviction).
//!
//! Where it sits: built by the composition root, held by HybridRouter (which
//! looks a call up after deciding its backend and stores the answer it got)
//! and by CacheManager (`cache.*` tasks). HybridRouter consults it only
//!
//! - while CacheManager runs ([`ResponseCache::set_active`] at its start and
//!   stop: when it is not running, calls go on uncached),
//! - when `cache.enabled` is true (benchmarks of the model path turn it off),
//! - for calls marked cacheable ([`super::router::ModelCall::cache`]: bus
//!   tasks of llm agents that did not opt out in their spec; `/v1` requests
//!   that set `temperature: 0`) and decoded greedily (no temperature, or 0).
//!
//! The key ([`answer_key`]) hashes (SHA-256) the backend and model that would
//! serve the call, the messages, `max_tokens`, the JSON mode and schema (the
//! grammar) and the `user`: no answer crosses users or models.
//!
//! Metrics: `agentvisor_cache_lookups_total{outcome=hit|miss}`,
//! `agentvisor_cache_evictions_total{cause=size|expired}`,
//! `agentvisor_cache_entries`, `agentvisor_cache_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::CacheSettings;
use crate::core::{ChatMessage, ChatResponse, GenParams, unix_time};
use crate::telemetry::metrics::Metrics;

/// Prefix of the keys of model answers.
pub const ANSWER_PREFIX: &str = "resp:";

/// One cached value.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Any JSON (a model answer: `{"content", "model", "backend", "tokens_in", "tokens_out", "finish_reason"}`).
    pub value: Value,
    /// When it was stored (for its age).
    pub stored: Instant,
    /// Unix seconds when it was stored.
    pub stored_at: f64,
    /// Its lifetime.
    pub ttl: Duration,
    /// Bytes it weighs (key and serialised value).
    pub bytes: u32,
}

impl Entry {
    /// Unix seconds when it expires.
    pub fn expires_at(&self) -> f64 {
        self.stored_at + self.ttl.as_secs_f64()
    }
}

struct PerEntryTtl;

impl moka::Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

struct Inner {
    settings: CacheSettings,
    /// CacheManager runs.
    active: AtomicBool,
    cache: moka::sync::Cache<String, Arc<Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Entries evicted for size or expired (the eviction listener counts).
    evictions: Arc<AtomicU64>,
    metrics: Metrics,
}

/// The response cache; cheap to clone (`Arc`).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

/// A model answer found in the cache.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    /// The answer as the backend gave it.
    pub response: ChatResponse,
    /// The backend that gave it.
    pub backend: String,
    /// Seconds since it was stored.
    pub age_seconds: f64,
}

impl ResponseCache {
    /// A cache with `settings` (TTL, size bound), inactive until
    /// CacheManager starts.
    pub fn new(settings: CacheSettings, metrics: Metrics) -> ResponseCache {
        let (m, evictions) = (metrics.clone(), Arc::new(AtomicU64::new(0)));
        let counted = evictions.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_k: &String, v: &Arc<Entry>| v.bytes)
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_k, _v, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counted.fetch_add(1, Ordering::Relaxed);
                m.cache_evictions.with_label_values(&[cause]).inc();
            })
            .build();
        let inner = Inner {
            settings,
            active: AtomicBool::new(false),
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
            metrics,
        };
        ResponseCache { inner: Arc::new(inner) }
    }

    /// CacheManager started (`true`) or stopped (`false`; the entries are dropped).
    pub fn set_active(&self, active: bool) {
        self.inner.active.store(active, Ordering::Release);
        if !active {
            self.inner.cache.invalidate_all();
            self.inner.cache.run_pending_tasks();
            self.gauges();
        }
    }

    /// Whether HybridRouter may use the cache: enabled and CacheManager running.
    pub fn is_active(&self) -> bool {
        self.inner.settings.enabled && self.inner.active.load(Ordering::Acquire)
    }

    /// `cache.enabled`.
    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    fn gauges(&self) {
        let m = &self.inner.metrics;
        m.cache_entries.set(i64::try_from(self.inner.cache.entry_count()).unwrap_or(i64::MAX));
        m.cache_bytes.set(i64::try_from(self.inner.cache.weighted_size()).unwrap_or(i64::MAX));
    }

    /// The entry under `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let found = self.inner.cache.get(key);
        let outcome = if found.is_some() {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            "hit"
        } else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            "miss"
        };
        self.inner.metrics.cache_lookups.with_label_values(&[outcome]).inc();
        found
    }

    /// Stores `value` under `key` for `ttl` (default `cache.ttl_secs`);
    /// `None` when it alone is larger than the size bound (not stored),
    /// else the Unix seconds when it expires.
    pub fn put(&self, key: String, value: Value, ttl: Option<Duration>) -> Option<f64> {
        let bytes = key.len() + value.to_string().len();
        if bytes as u64 > self.inner.settings.max_bytes {
            return None;
        }
        let ttl =
            ttl.unwrap_or_else(|| Duration::try_from_secs_f64(self.inner.settings.ttl_secs).unwrap_or(Duration::ZERO));
        let entry = Entry {
            value,
            stored: Instant::now(),
            stored_at: unix_time(),
            ttl,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        };
        let expires_at = entry.expires_at();
        self.inner.cache.insert(key, Arc::new(entry));
        // Apply the size bound now (evictions are counted when they happen, not later).
        self.inner.cache.run_pending_tasks();
        self.gauges();
        Some(expires_at)
    }

    /// Drops `key`; whether it was there.
    pub fn invalidate(&self, key: &str) -> bool {
        let had = self.inner.cache.remove(key).is_some();
        self.gauges();
        had
    }

    /// Drops every key starting with `prefix` (`""`: everything); how many.
    pub fn invalidate_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<Arc<String>> =
            self.inner.cache.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k).collect();
        let mut n = 0;
        for k in keys {
            if self.inner.cache.remove(k.as_str()).is_some() {
                n += 1;
            }
        }
        self.inner.cache.run_pending_tasks();
        self.gauges();
        n
    }

    /// The answer of a model call with `key`, if cached (counted).
    pub fn answer(&self, key: &str) -> Option<CachedAnswer> {
        let e = self.get(key)?;
        let v = &e.value;
        let n = |f: &str| v.get(f).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok()).unwrap_or(0);
        let s = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
        Some(CachedAnswer {
            response: ChatResponse {
                content: s("content")?,
                model: s("model").unwrap_or_default(),
                tokens_in: n("tokens_in"),
                tokens_out: n("tokens_out"),
                finish_reason: s("finish_reason"),
                first_token: Some(Duration::ZERO),
                attempts: 0,
            },
            backend: s("backend").unwrap_or_default(),
            age_seconds: e.stored.elapsed().as_secs_f64(),
        })
    }

    /// Stores the answer `response` of `backend` under `key`.
    pub fn put_answer(&self, key: String, backend: &str, response: &ChatResponse) {
        let value = json!({
            "content": response.content, "model": response.model, "backend": backend,
            "tokens_in": response.tokens_in, "tokens_out": response.tokens_out,
            "finish_reason": response.finish_reason,
        });
        self.put(key, value, None);
    }

    /// `cache.stats`: `{"enabled", "running", "entries", "size_bytes",
    /// "capacity_bytes", "ttl_seconds", "hits", "misses", "evictions", "hit_ratio"}`.
    pub fn stats(&self) -> Value {
        self.inner.cache.run_pending_tasks();
        self.gauges();
        let (hits, misses) = (self.inner.hits.load(Ordering::Relaxed), self.inner.misses.load(Ordering::Relaxed));
        json!({
            "enabled": self.inner.settings.enabled,
            "running": self.inner.active.load(Ordering::Acquire),
            "entries": self.inner.cache.entry_count(),
            "size_bytes": self.inner.cache.weighted_size(),
            "capacity_bytes": self.inner.settings.max_bytes,
            "ttl_seconds": self.inner.settings.ttl_secs,
            "hits": hits,
            "misses": misses,
            "evictions": self.inner.evictions.load(Ordering::Relaxed),
            "hit_ratio": (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        })
    }
}

/// Whether a generation with `params` is deterministic: greedy decoding (no
/// temperature, or 0).
pub fn deterministic(params: &GenParams) -> bool {
    params.temperature.is_none_or(|t| t == 0.0)
}

/// The cache key of a model call served by `backend` with `model`:
/// [`ANSWER_PREFIX`] + the SHA-256 (hex) of the backend, model, messages,
/// `max_tokens`, JSON mode and schema, and user.
pub fn answer_key(
    backend: &str,
    model: &str,
    messages: &[ChatMessage],
    params: &GenParams,
    user: Option<&str>,
) -> String {
    let material = json!({
        "backend": backend, "model": model, "messages": messages, "max_tokens": params.max_tokens,
        "json": params.json, "schema": params.json_schema, "user": user,
    });
    let digest = Sha256::digest(material.to_string().as_bytes());
    format!("{ANSWER_PREFIX}{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_bytes: u64, ttl_secs: f64) -> ResponseCache {
        ResponseCache::new(CacheSettings { enabled: true, ttl_secs, max_bytes }, Metrics::new())
    }

    #[test]
    fn keys_cover_model_messages_length_schema_and_user() {
        let m = vec![ChatMessage::new("user", "hi")];
        let p = GenParams { max_tokens: Some(8), ..Default::default() };
        let base = answer_key("local", "m", &m, &p, Some("ann"));
        assert!(base.starts_with(ANSWER_PREFIX));
        assert_eq!(base, answer_key("local", "m", &m, &p, Some("ann")));
        assert_ne!(base, answer_key("local", "m2", &m, &p, Some("ann")));
        assert_ne!(base, answer_key("cloud", "m", &m, &p, Some("ann")));
        assert_ne!(base, answer_key("local", "m", &[ChatMessage::new("user", "hi!")], &p, Some("ann")));
        assert_ne!(base, answer_key("local", "m", &m, &GenParams { max_tokens: Some(9), ..p.clone() }, Some("ann")));
        let schema = GenParams { json: true, json_schema: Some(json!({"type": "object"})), ..p.clone() };
        assert_ne!(base, answer_key("local", "m", &m, &schema, Some("ann")));
        assert_ne!(base, answer_key("local", "m", &m, &p, Some("bob")));
        assert_ne!(base, answer_key("local", "m", &m, &p, None));
        assert!(deterministic(&p) && deterministic(&GenParams { temperature: Some(0.0), ..Default::default() }));
        assert!(!deterministic(&GenParams { temperature: Some(0.7), ..Default::default() }));
    }

    #[test]
    fn the_size_bound_evicts_and_oversized_values_are_refused() {
        let c = cache(600, 60.0);
        for i in 0..20 {
            c.put(format!("k{i}"), json!("x".repeat(100)), None);
        }
        let s = c.stats();
        assert!(s["size_bytes"].as_u64().unwrap() <= 600, "{s}");
        assert!(s["evictions"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(c.put("big".into(), json!("y".repeat(1000)), None), None);
        let before = c.stats()["entries"].as_u64().unwrap();
        assert!(before >= 1);
        assert_eq!(c.invalidate_prefix("k"), before);
        assert_eq!(c.stats()["entries"], 0);
    }

    #[test]
    fn answers_round_trip_and_count_hits_and_misses() {
        let c = cache(1 << 20, 60.0);
        let r = ChatResponse {
            content: "Paris".into(),
            model: "m".into(),
            tokens_in: 7,
            tokens_out: 2,
            ..Default::default()
        };
        assert!(c.answer("resp:x").is_none());
        c.put_answer("resp:x".into(), "local", &r);
        let hit = c.answer("resp:x").unwrap();
        assert_eq!(
            (hit.response.content.as_str(), hit.backend.as_str(), hit.response.tokens_in),
            ("Paris", "local", 7)
        );
        let s = c.stats();
        assert_eq!((s["hits"].as_u64(), s["misses"].as_u64()), (Some(1), Some(1)), "{s}");
    }
}
