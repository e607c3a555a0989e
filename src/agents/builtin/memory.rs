//! The memory agents. MemoryOrchestratorService is the authority over the
//! `memories` table; MemoryClient is the API other agents use and forwards
//! every task to it; KnowledgeBase owns the FTS5 knowledge base. State: the
//! tables of [`crate::store::memory`] in the SQLite store; every query runs
//! on the store thread.
//!
//! **MemoryOrchestratorService**
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `memory.store` | `{"text", "kind", "tags"?, "session"?, "ttl_seconds"?, "importance"?, "tier"?}` | `{"id"}` (a uuid) |
//! | `memory.get` | `{"id"}` or the id as text | `{"id", "ts", "kind", "text", "tags", "session", "expires_at", "tier", "importance", "accessed_at", "accesses", "mentions", "summarised_at", "sources"}`; `invalid_field` when there is no such memory (never stored, deleted or expired) |
//! | `memory.delete` | `{"id"}` or the id as text | `{"deleted": 0 \| 1}` (an expired memory counts as already gone) |
//! | `memory.search` | `{"query", "limit"?, "kind"?, "session"?, "tier"?}` or the query as text; `limit` 1–100, default 10 | `{"results": [memory, ...]}`, newest first |
//! | `memory.promote` | `{"id"}` or the id as text | `{"id", "tier": "long", "promoted"}`; `not_found` when there is no such memory |
//! | `memory.stats` | nothing | `{"short", "long", "total"}` (live memories per tier) |
//!
//! Tiers (issue 22): a memory is stored `short` (or `long` when the input
//! says so) with an `importance` (0–1, default `memory.default_importance`)
//! that decays by half every `memory.importance_half_life_secs` since
//! `accessed_at`. `memory.get` restarts that clock, counts a read, and
//! promotes a short-term memory read `memory.promote_accesses` times.
//! DreamingModeAgent ([`super::dreaming`]) merges duplicates, promotes and
//! summarises during idle time.
//!
//! `text`, `kind`, `id` and `query` are strings that are not blank (`kind`
//! and `id` are trimmed); `tags` an array of strings (default `[]`);
//! `session` a string; `ttl_seconds` a number > 0, after which the memory is
//! gone: `memory.get` and `memory.search` never return an expired memory,
//! and a sweeper started with the agent deletes expired rows every second.
//! `null` stands for an absent optional field; other fields are refused.
//! `ts` and `expires_at` are Unix seconds (`expires_at` `null`: never).
//! `memory.search` is a substring search, not a ranked one: a memory matches
//! when its text contains every whitespace-separated term of `query` (SQLite
//! `LIKE`, case-insensitive for ASCII letters). `memory.search` is not in the
//! agent's `handles` (so its schema is MemoryClient's declaration): clients
//! reach it through MemoryClient.
//!
//! **MemoryClient** — holds nothing itself: it checks the input, then
//! forwards to MemoryOrchestratorService when that agent is `running`, and
//! otherwise answers `agent_unavailable` naming it (no local copy, which
//! would diverge from the authority).
//!
//! | type | forwarded as | input and output |
//! | --- | --- | --- |
//! | `memory.recall` | `memory.get` | as `memory.get` |
//! | `memory.search` | `memory.search` | as `memory.search` |
//! | `memory.store`, `memory.get`, `memory.delete` | unchanged | for agents addressing MemoryClient by name |
//!
//! **KnowledgeBase**
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `kb.add` | `{"title", "text", "source"?}` | `{"id"}` (an integer, never reused) |
//! | `kb.search` | `{"query", "limit"?}` or the query as text; `limit` 1–100, default 10 | `{"results": [{"id", "title", "source", "snippet", "score"}]}`, best first |
//! | `kb.delete` | `{"id"}` or the id as a number | `{"deleted": 0 \| 1}` |
//!
//! `kb.search` ranks with FTS5's bm25 (title weighs 2, text 1, source 0.5);
//! `score` is `-bm25`, so higher is better. The query is never FTS5 syntax:
//! its words are quoted and joined with `OR` (see
//! [`crate::store::memory::match_expression`]), so any string is safe; a
//! blank query is `invalid_field`, one without any word finds nothing.
//!
//! The input and output types below are the declarations of
//! `orchestrator_tasks`, `client_tasks` and `knowledge_base_tasks`: their
//! doc comments become the schema descriptions of `docs/tasks.md`.
//! `Text` and `Whole` are shared with the service registry.
//!
//! Failures: bad input is `invalid_field` naming its JSON path; a store
//! failure is `internal` with SQLite's message. The sweeper logs its
//! failures and goes on; it ends when the store closes or the agent stops.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, DeserializeOwned, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinHandle;

use super::{Answer, Behaviour, Empty, Text, unknown_type};
use crate::agents::services::Services;
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::config::knowledge::MemoryTierSettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::memory::{self as db, KbHit, Memory, MemoryQuery, Tier};
use crate::store::{Store, StoreError};
use crate::supervisor::StartError;
use crate::supervisor::state::AgentState;
use crate::supervisor::{Fleet, Peers};

/// The authority's agent name.
pub const ORCHESTRATOR: &str = "MemoryOrchestratorService";
/// The client's agent name.
pub const CLIENT: &str = "MemoryClient";
/// The knowledge base's agent name.
pub const KNOWLEDGE_BASE: &str = "KnowledgeBase";

/// Time between two sweeps of expired memories.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Results of a search when the input names no `limit`.
const DEFAULT_LIMIT: u32 = 10;
/// Most results of one search.
const MAX_LIMIT: i64 = 100;

/// An example memory id (the examples of `memory.get`, `memory.recall` and
/// `memory.delete`).
const EXAMPLE_ID: &str = "5f0c6b1e-8d2a-4c3b-9e7f-2a1d4b6c8e90";

/// The task types of MemoryOrchestratorService (`memory.search`, which it
/// also answers, is declared by MemoryClient: it is not in the
/// orchestrator's `handles`).
pub(crate) fn orchestrator_tasks() -> Vec<RustTask> {
    vec![
        rust_task::<StoreInput, StoreOutput>(
            "memory.store",
            "Stores a memory (text, kind, tags, session, time to live, importance, tier) and answers its id",
            || {
                vec![
                    json!({"text": "Ada prefers green tea", "kind": "preference", "tags": ["drinks", "ada"], "session": "s-1"}),
                    json!({"text": "the oven is on", "kind": "fact", "ttl_seconds": 600}),
                    json!({"text": "Ada's birthday is 3 May", "kind": "fact", "importance": 0.9, "tier": "long"}),
                ]
            },
        ),
        rust_task::<OrShort<IdInput>, Memory>("memory.get", "One memory by id (never an expired one)", || {
            vec![json!({"id": EXAMPLE_ID}), json!(EXAMPLE_ID)]
        }),
        rust_task::<OrShort<IdInput>, PromoteOutput>(
            "memory.promote",
            "Promotes a short-term memory to the long-term tier",
            || vec![json!({"id": EXAMPLE_ID}), json!(EXAMPLE_ID)],
        ),
        rust_task::<OrShort<Empty>, StatsOutput>("memory.stats", "How many live memories each tier holds", || {
            vec![json!({}), json!(null)]
        }),
        rust_task::<OrShort<IdInput>, DeleteOutput>("memory.delete", "Deletes a memory by id", || {
            vec![json!({"id": EXAMPLE_ID}), json!(EXAMPLE_ID)]
        }),
    ]
}

/// The task types of MemoryClient (forwarded to MemoryOrchestratorService).
pub(crate) fn client_tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<IdInput>, Memory>(
            "memory.recall",
            "One memory by id, from MemoryOrchestratorService (memory.get)",
            || vec![json!({"id": EXAMPLE_ID}), json!(EXAMPLE_ID)],
        ),
        rust_task::<OrShort<SearchInput>, SearchOutput>(
            "memory.search",
            "The memories whose text holds every term of a query, newest first",
            || {
                vec![
                    json!("green tea"),
                    json!({"query": "green tea", "limit": 5, "kind": "preference", "session": "s-1"}),
                ]
            },
        ),
    ]
}

/// The task types of KnowledgeBase.
pub(crate) fn knowledge_base_tasks() -> Vec<RustTask> {
    vec![
        rust_task::<KbAddInput, KbAddOutput>("kb.add", "Adds a document to the knowledge base; answers its id", || {
            vec![
                json!({"title": "Jupiter", "text": "Jupiter is the largest planet of the solar system.", "source": "astronomy for everyone"}),
                json!({"title": "Tomato soup", "text": "Roast tomatoes with garlic, simmer with stock and blend."}),
            ]
        }),
        rust_task::<OrShort<KbSearchInput>, KbSearchOutput>(
            "kb.search",
            "Full-text search of the knowledge base (FTS5), best match first",
            || vec![json!("largest planet"), json!({"query": "largest planet", "limit": 3})],
        ),
        rust_task::<OrShort<KbDeleteInput>, DeleteOutput>("kb.delete", "Deletes a document by id", || {
            vec![json!({"id": 7}), json!(7)]
        }),
    ]
}

/// The behaviour of the memory agent `name`, if it is one of them.
pub fn behaviour(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    let store = services.store.clone();
    match name {
        ORCHESTRATOR => Some(Arc::new(MemoryOrchestrator {
            store,
            tiers: services.settings.memory.clone(),
            sweeper: Mutex::new(None),
        })),
        CLIENT => {
            Some(Arc::new(MemoryClient { peers: Arc::new(fleet.clone()), profile: fleet.ctx().plan.name.clone() }))
        }
        KNOWLEDGE_BASE => Some(Arc::new(KnowledgeBase { store })),
        _ => None,
    }
}

fn now_secs() -> f64 {
    crate::core::unix_time()
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("memory store: {e}"))
}

/// A whole number from `MIN` to `MAX`: a JSON integer, or a number without
/// fraction (`3.0`, which JSON Schema's `integer` accepts too).
pub(crate) struct Whole<const MIN: i64, const MAX: i64>(pub i64);

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InRange<const MIN: i64, const MAX: i64>;

        impl<const MIN: i64, const MAX: i64> InRange<MIN, MAX> {
            fn check<E: de::Error>(&self, n: Option<i64>, unexpected: Unexpected) -> Result<i64, E> {
                n.filter(|n| (MIN..=MAX).contains(n)).ok_or_else(|| E::invalid_value(unexpected, self))
            }
        }

        impl<const MIN: i64, const MAX: i64> Visitor<'_> for InRange<MIN, MAX> {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an integer from {MIN} to {MAX}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                self.check(Some(v), Unexpected::Signed(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                self.check(i64::try_from(v).ok(), Unexpected::Unsigned(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
                // Within ±2^63 the cast is exact for a number without fraction.
                let whole = (v.fract() == 0.0 && v >= -(2f64.powi(63)) && v < 2f64.powi(63)).then_some(v as i64);
                self.check(whole, Unexpected::Float(v))
            }
        }

        deserializer.deserialize_any(InRange::<MIN, MAX>).map(Whole)
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for Whole<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Whole_{MIN}_{MAX}").into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": MIN, "maximum": MAX})
    }
}

/// Most results of a search, 1–100.
type Limit = Whole<1, MAX_LIMIT>;

/// `limit`, or [`DEFAULT_LIMIT`].
fn limit_or_default(limit: Option<Limit>) -> u32 {
    limit.map_or(DEFAULT_LIMIT, |Whole(n)| n as u32)
}

/// A memory to store.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StoreInput {
    /// The text to remember, as given.
    text: Text,
    /// Free-form category (`fact`, `preference`, ...), trimmed.
    kind: Text,
    /// Free-form labels (default none).
    tags: Option<Vec<String>>,
    /// The conversation session it belongs to, if any.
    session: Option<String>,
    /// Seconds after which the memory is gone, > 0, fractions allowed
    /// (default: never).
    ttl_seconds: Option<Ttl>,
    /// How much it matters, 0–1 (default `memory.default_importance`);
    /// decays with time since the last access.
    #[serde(default)]
    importance: Option<Importance>,
    /// `short` (default) or `long`.
    #[serde(default)]
    tier: Option<Tier>,
}

impl StoreInput {
    /// The memory, stored at `now` (Unix seconds) under a new uuid, with
    /// `default_importance` when the input names none.
    fn into_memory(self, now: f64, default_importance: f64) -> Memory {
        let StoreInput { text, kind, tags, session, ttl_seconds, importance, tier } = self;
        let importance = importance.map_or(default_importance.clamp(0.0, 1.0), |Importance(i)| i);
        Memory {
            tags: tags.unwrap_or_default(),
            session,
            expires_at: ttl_seconds.map(|Ttl(ttl)| now + ttl),
            tier: tier.unwrap_or(Tier::Short),
            ..Memory::new(uuid::Uuid::new_v4().to_string(), now, kind.trimmed(), text.0, importance)
        }
    }
}

/// An importance: a number from 0 to 1.
struct Importance(f64);

impl<'de> Deserialize<'de> for Importance {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(deserializer)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Importance(v))
        } else {
            Err(de::Error::invalid_value(Unexpected::Float(v), &"a number from 0 to 1"))
        }
    }
}

impl JsonSchema for Importance {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Importance".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0, "maximum": 1})
    }
}

/// The memory promoted.
#[derive(Serialize, JsonSchema)]
struct PromoteOutput {
    /// The memory's id.
    id: String,
    /// Its tier now: `long`.
    tier: Tier,
    /// False when it was long-term already.
    promoted: bool,
}

/// Live memories per tier.
#[derive(Serialize, JsonSchema)]
struct StatsOutput {
    /// Short-term memories.
    short: u64,
    /// Long-term memories.
    long: u64,
    /// Both.
    total: u64,
}

/// A time to live: seconds, > 0.
struct Ttl(f64);

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        if secs > 0.0 && secs.is_finite() {
            Ok(Ttl(secs))
        } else {
            Err(de::Error::invalid_value(Unexpected::Float(secs), &"a number of seconds greater than 0"))
        }
    }
}

impl JsonSchema for Ttl {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Ttl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "exclusiveMinimum": 0})
    }
}

/// The stored memory's id.
#[derive(Serialize, JsonSchema)]
struct StoreOutput {
    /// The new memory's id: a random UUID (version 4).
    #[schemars(extend("format" = "uuid"))]
    id: String,
}

/// The memory to get or delete.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdInput {
    /// The memory's id (`memory.store`'s answer), trimmed.
    id: Text,
}

impl Shorthand for IdInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The id alone.";
    fn expand(id: Text) -> IdInput {
        IdInput { id }
    }
}

/// Whether something was deleted.
#[derive(Serialize, JsonSchema)]
struct DeleteOutput {
    /// 1 when it was there and is deleted, 0 when there was nothing to
    /// delete.
    #[schemars(range(max = 1))]
    deleted: u8,
}

/// A memory search.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchInput {
    /// Whitespace-separated terms; a memory matches when its text contains
    /// every term (case-insensitive for ASCII letters).
    query: Text,
    /// Most results, 1–100 (default 10).
    limit: Option<Limit>,
    /// Only memories of this kind.
    kind: Option<String>,
    /// Only memories of this session.
    session: Option<String>,
    /// Only memories of this tier (`short` or `long`).
    #[serde(default)]
    tier: Option<Tier>,
}

impl Shorthand for SearchInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The query alone: at most 10 results, of any kind, session and tier.";
    fn expand(query: Text) -> SearchInput {
        SearchInput { query, limit: None, kind: None, session: None, tier: None }
    }
}

/// The memories found.
#[derive(Serialize, JsonSchema)]
struct SearchOutput {
    /// The matching memories that have not expired, newest first.
    results: Vec<Memory>,
}

/// The MemoryOrchestratorService behaviour: the authority over `memories`.
/// Owns the sweeper task (started in `start`, aborted in `stop`).
pub struct MemoryOrchestrator {
    /// The SQLite store (`memories`).
    store: Store,
    /// Importance decay and promotion.
    tiers: MemoryTierSettings,
    /// The expiry sweeper, while the agent runs.
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

/// Deletes expired memories every [`SWEEP_EVERY`] until the store closes.
async fn sweep(store: Store) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_secs();
        match store.call(move |conn| db::delete_expired(conn, now)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(agent = ORCHESTRATOR, deleted = n, "expired memories deleted"),
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(agent = ORCHESTRATOR, error = %e, "expiry sweep failed"),
        }
    }
}

#[async_trait]
impl Behaviour for MemoryOrchestrator {
    async fn start(&self) -> Result<(), StartError> {
        let handle = tokio::spawn(sweep(self.store.clone()));
        if let Some(old) = self.sweeper.lock().replace(handle) {
            old.abort();
        }
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let store = &self.store;
        let now = now_secs();
        let t = task.task_type.as_str();
        match t {
            "memory.store" => {
                let input: StoreInput = decode(t, &task.input)?;
                let m = input.into_memory(now, self.tiers.default_importance);
                let id = m.id.clone();
                store.call(move |conn| db::insert_memory(conn, &m)).await.map_err(store_error)?;
                encode(t, StoreOutput { id })
            }
            "memory.get" => {
                let OrShort(IdInput { id }) = decode(t, &task.input)?;
                let id = id.trimmed();
                let key = id.clone();
                let promote_accesses = self.tiers.promote_accesses.max(1);
                let found = store
                    .call(move |conn| {
                        db::touch_memory(conn, &key, now, promote_accesses)?;
                        db::get_memory(conn, &key, now)
                    })
                    .await
                    .map_err(store_error)?;
                match found {
                    Some(m) => encode(t, m),
                    None => Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of {t}: no memory {id} (never stored, deleted or expired)"),
                    )),
                }
            }
            "memory.delete" => {
                let OrShort(IdInput { id }) = decode(t, &task.input)?;
                let id = id.trimmed();
                let deleted = store.call(move |conn| db::delete_memory(conn, &id, now)).await.map_err(store_error)?;
                encode(t, DeleteOutput { deleted: u8::from(deleted) })
            }
            "memory.search" => {
                let OrShort(SearchInput { query, limit, kind, session, tier }) = decode(t, &task.input)?;
                let q = MemoryQuery { query: query.0, kind, session, tier, limit: limit_or_default(limit) };
                let results = store.call(move |conn| db::search_memories(conn, &q, now)).await.map_err(store_error)?;
                encode(t, SearchOutput { results })
            }
            "memory.promote" => {
                let OrShort(IdInput { id }) = decode(t, &task.input)?;
                let id = id.trimmed();
                let key = id.clone();
                match store.call(move |conn| db::set_tier(conn, &key, Tier::Long, now)).await.map_err(store_error)? {
                    Some(before) => encode(t, PromoteOutput { id, tier: Tier::Long, promoted: before == Tier::Short }),
                    None => Err(TaskError::new(
                        ErrorCode::NotFound,
                        format!("no memory {id} (never stored, deleted or expired)"),
                    )),
                }
            }
            "memory.stats" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                let (short, long) = store.call(move |conn| db::tier_counts(conn, now)).await.map_err(store_error)?;
                encode(t, StatsOutput { short, long, total: short + long })
            }
            _ => Err(unknown_type(ORCHESTRATOR, &task)),
        }
    }

    async fn stop(&self) {
        if let Some(h) = self.sweeper.lock().take() {
            h.abort();
        }
    }
}

impl Drop for MemoryOrchestrator {
    /// Stops the sweeper even when `stop` never ran (a failed start).
    fn drop(&mut self) {
        if let Some(h) = self.sweeper.get_mut().take() {
            h.abort();
        }
    }
}

/// The MemoryClient behaviour: forwards to MemoryOrchestratorService.
pub struct MemoryClient {
    /// The other agents: the orchestrator's state (an operator's stop must
    /// show) and the call to it.
    peers: Arc<dyn Peers>,
    /// The profile's name, for the error when the orchestrator is not in it.
    profile: String,
}

/// Checks that `task`'s input decodes into `I` (the input type of the
/// orchestrator's task it is forwarded as).
fn check<I: DeserializeOwned>(task: &Task) -> Result<(), TaskError> {
    decode::<I>(&task.task_type, &task.input).map(drop)
}

#[async_trait]
impl Behaviour for MemoryClient {
    async fn handle(&self, task: Task) -> Answer {
        // The input is checked here, under the type the caller sent, and
        // forwarded unchanged: the orchestrator decodes it again.
        let forwarded = match task.task_type.as_str() {
            "memory.recall" => check::<OrShort<IdInput>>(&task).map(|()| "memory.get")?,
            "memory.search" => check::<OrShort<SearchInput>>(&task).map(|()| "memory.search")?,
            "memory.store" => check::<StoreInput>(&task).map(|()| "memory.store")?,
            "memory.get" => check::<OrShort<IdInput>>(&task).map(|()| "memory.get")?,
            "memory.delete" => check::<OrShort<IdInput>>(&task).map(|()| "memory.delete")?,
            _ => return Err(unknown_type(CLIENT, &task)),
        };
        // Checked here because `Fleet::call` would start a stopped agent on
        // demand; an operator's stop must be visible to the callers instead.
        match self.peers.state(ORCHESTRATOR) {
            Some(AgentState::Running) => {}
            Some(state) => {
                return Err(TaskError::new(
                    ErrorCode::AgentUnavailable,
                    format!("{ORCHESTRATOR} is {}; {CLIENT} keeps no local copy of memories", state.as_str()),
                ));
            }
            None => {
                return Err(TaskError::new(
                    ErrorCode::AgentUnavailable,
                    format!("{ORCHESTRATOR} is not in profile {}; {CLIENT} keeps no local copy", self.profile),
                ));
            }
        }
        let mut task = task;
        task.task_type = forwarded.to_string();
        self.peers.call(ORCHESTRATOR, task).await.map(|out| out.output)
    }
}

/// A document to add to the knowledge base.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KbAddInput {
    /// Its title (weighs twice the text in searches).
    title: Text,
    /// Its text.
    text: Text,
    /// Where it comes from: a URL, a file, a person (default empty).
    source: Option<String>,
}

/// The added document's id.
#[derive(Serialize, JsonSchema)]
struct KbAddOutput {
    /// The document id (SQLite rowid, never reused).
    id: i64,
}

/// A knowledge-base search.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KbSearchInput {
    /// Words to look for, any text: never FTS5 syntax; a document matches
    /// when it holds any of the words.
    query: Text,
    /// Most results, 1–100 (default 10).
    limit: Option<Limit>,
}

impl Shorthand for KbSearchInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The query alone: at most 10 results.";
    fn expand(query: Text) -> KbSearchInput {
        KbSearchInput { query, limit: None }
    }
}

/// The documents found.
#[derive(Serialize, JsonSchema)]
struct KbSearchOutput {
    /// The matching documents, best first (highest `score`).
    results: Vec<KbHit>,
}

/// A document id (`kb.add`'s answer).
type KbId = Whole<{ i64::MIN }, { i64::MAX }>;

/// The document to delete.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KbDeleteInput {
    /// The document id (`kb.add`'s answer).
    id: KbId,
}

impl Shorthand for KbDeleteInput {
    type Short = KbId;
    const SHORT_DESCRIPTION: &'static str = "The document id alone.";
    fn expand(id: KbId) -> KbDeleteInput {
        KbDeleteInput { id }
    }
}

/// The KnowledgeBase behaviour: documents with FTS5 search.
pub struct KnowledgeBase {
    /// The SQLite store (`kb_docs`, FTS5).
    store: Store,
}

#[async_trait]
impl Behaviour for KnowledgeBase {
    async fn handle(&self, task: Task) -> Answer {
        let store = &self.store;
        let t = task.task_type.as_str();
        match t {
            "kb.add" => {
                let KbAddInput { title: Text(title), text: Text(text), source } = decode(t, &task.input)?;
                let source = source.unwrap_or_default();
                let ts = now_secs();
                let id =
                    store.call(move |conn| db::kb_add(conn, &title, &text, &source, ts)).await.map_err(store_error)?;
                encode(t, KbAddOutput { id })
            }
            "kb.search" => {
                let OrShort(KbSearchInput { query: Text(query), limit }) = decode(t, &task.input)?;
                let limit = limit_or_default(limit);
                let results = store.call(move |conn| db::kb_search(conn, &query, limit)).await.map_err(store_error)?;
                encode(t, KbSearchOutput { results })
            }
            "kb.delete" => {
                let OrShort(KbDeleteInput { id: Whole(id) }) = decode(t, &task.input)?;
                let deleted = store.call(move |conn| db::kb_delete(conn, id)).await.map_err(store_error)?;
                encode(t, DeleteOutput { deleted: u8::from(deleted) })
            }
            _ => Err(unknown_type(KNOWLEDGE_BASE, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::agents::tasks::TaskTable;

    /// A store in a temporary directory, kept as long as the directory.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    async fn run(b: &dyn Behaviour, task_type: &str, input: Value) -> Answer {
        b.handle(Task::new("t", task_type, input)).await
    }

    /// The error message of `answer`, which must be `invalid_field`.
    fn invalid(answer: Answer) -> String {
        let e = answer.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{e}");
        e.message
    }

    /// The task-type table of the agent `name` (its spec from `agents/`
    /// reduced to what the table reads) with `tasks`.
    fn table(name: &'static str, handles: &[&str], tasks: Vec<RustTask>) -> TaskTable {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(&format!(
            "{{name: {name}, group: g, runtime: {{kind: builtin}}, handles: [{}]}}",
            handles.join(", ")
        ))
        .unwrap();
        TaskTable::build([&spec], &BTreeMap::from([(name, tasks)])).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    /// Runs every example of `declared`, in declaration order, through `b`
    /// and checks each answer against the output schema.
    async fn examples_answer_their_schemas(b: &dyn Behaviour, table: &TaskTable, declared: Vec<RustTask>) {
        for t in declared {
            let def = table.get(t.task_type).unwrap();
            for example in def.input_schema["examples"].as_array().unwrap() {
                let output = run(b, t.task_type, example.clone()).await.unwrap_or_else(|e| panic!("{example}: {e}"));
                def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn orchestrator_examples_answer_what_the_output_schemas_say() {
        let (_dir, store) = store();
        let handles = ["memory.store", "memory.get", "memory.delete", "memory.promote", "memory.stats"];
        let declared = table(ORCHESTRATOR, &handles, orchestrator_tasks());
        // The memory the examples of memory.get name.
        let mut m = StoreInput {
            text: Text("Ada prefers green tea".into()),
            kind: Text("preference".into()),
            tags: None,
            session: None,
            ttl_seconds: None,
            importance: None,
            tier: None,
        }
        .into_memory(now_secs(), 0.5);
        m.id = EXAMPLE_ID.into();
        store.call(move |conn| db::insert_memory(conn, &m)).await.unwrap();
        let b = MemoryOrchestrator { store, tiers: MemoryTierSettings::default(), sweeper: Mutex::new(None) };
        examples_answer_their_schemas(&b, &declared, orchestrator_tasks()).await;
        // memory.search is declared by MemoryClient, answered here.
        let client = table(CLIENT, &["memory.recall", "memory.search"], client_tasks());
        let def = client.get("memory.search").unwrap();
        for example in def.input_schema["examples"].as_array().unwrap() {
            let output = run(&b, "memory.search", example.clone()).await.unwrap();
            def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
        }
    }

    #[tokio::test]
    async fn knowledge_base_examples_answer_what_the_output_schemas_say() {
        let (_dir, store) = store();
        let table = table(KNOWLEDGE_BASE, &["kb.add", "kb.search", "kb.delete"], knowledge_base_tasks());
        examples_answer_their_schemas(&KnowledgeBase { store }, &table, knowledge_base_tasks()).await;
    }

    #[tokio::test]
    async fn memories_keep_their_shape_and_wrong_inputs_name_their_path() {
        let (_dir, store) = store();
        let b = MemoryOrchestrator { store, tiers: MemoryTierSettings::default(), sweeper: Mutex::new(None) };
        let input = json!({"text": " tea ", "kind": " fact ", "tags": ["a"], "session": null, "ttl_seconds": 60});
        let id = run(&b, "memory.store", input).await.unwrap()["id"].as_str().unwrap().to_string();
        let m = run(&b, "memory.get", json!(format!(" {id} "))).await.unwrap();
        assert_eq!(
            (&m["text"], &m["kind"], &m["tags"], &m["session"]),
            (&json!(" tea "), &json!("fact"), &json!(["a"]), &Value::Null)
        );
        assert_eq!(m["expires_at"].as_f64().unwrap() - m["ts"].as_f64().unwrap(), 60.0);
        let found = run(&b, "memory.search", json!({"query": "TEA", "limit": 1.0, "kind": null})).await.unwrap();
        assert_eq!(found, json!({"results": [m]}));
        assert_eq!(run(&b, "memory.delete", json!({"id": id})).await.unwrap(), json!({"deleted": 1}));
        assert_eq!(run(&b, "memory.delete", json!(id)).await.unwrap(), json!({"deleted": 0}));
        assert!(invalid(run(&b, "memory.get", json!({"id": id})).await).contains(&id));

        assert_eq!(
            invalid(run(&b, "memory.store", json!({"kind": "fact"})).await),
            "input of memory.store at the top level: missing field `text`"
        );
        let e = invalid(run(&b, "memory.store", json!({"text": "x", "kind": "fact", "ttl_seconds": 0})).await);
        assert!(e.starts_with("input of memory.store at /ttl_seconds: invalid value"), "{e}");
        let e = invalid(run(&b, "memory.store", json!({"text": "x", "kind": "fact", "tags": [1]})).await);
        assert!(e.starts_with("input of memory.store at /tags/0: invalid type: integer `1`"), "{e}");
        let e = invalid(run(&b, "memory.search", json!({"query": "  "})).await);
        assert!(
            e.starts_with("input of memory.search at /query: the text must have a character other than white space"),
            "{e}"
        );
        let e = invalid(run(&b, "memory.search", json!({"query": "x", "limit": 0})).await);
        assert_eq!(
            e,
            "input of memory.search at /limit: invalid value: integer `0`, expected an integer from 1 to 100"
        );
        let e = invalid(run(&b, "memory.get", json!(5)).await);
        assert!(e.starts_with("input of memory.get at the top level: invalid type: integer `5`"), "{e}");
    }

    #[tokio::test]
    async fn the_knowledge_base_decodes_its_short_forms() {
        let (_dir, store) = store();
        let b = KnowledgeBase { store };
        let add = json!({"title": "Jupiter", "text": "the largest planet", "source": null});
        let id = run(&b, "kb.add", add).await.unwrap()["id"].as_i64().unwrap();
        let found = run(&b, "kb.search", json!("planet")).await.unwrap();
        assert_eq!((found["results"][0]["id"].as_i64(), &found["results"][0]["source"]), (Some(id), &json!("")));
        assert_eq!(run(&b, "kb.delete", json!(id as f64)).await.unwrap(), json!({"deleted": 1}));
        let e = invalid(run(&b, "kb.delete", json!({"id": "x"})).await);
        assert!(e.starts_with("input of kb.delete at /id: invalid type: string \"x\""), "{e}");
        let e = invalid(run(&b, "kb.search", json!({"query": "rust", "limit": 101})).await);
        assert!(e.starts_with("input of kb.search at /limit: "), "{e}");
        let e = invalid(run(&b, "kb.add", json!({"title": "no text"})).await);
        assert_eq!(e, "input of kb.add at the top level: missing field `text`");
    }
}
