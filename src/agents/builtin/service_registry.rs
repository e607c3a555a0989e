//! ServiceRegistry (DESIGN §8): the registry of external services — model
//! servers, tools, agents outside the fleet — with heartbeats, TTL eviction
//! and promotion, after the earlier system's registry and heartbeat monitor.
//! State: the `services` table of the SQLite store
//! ([`crate::store::services`]), so registrations survive a daemon restart.
//! The fleet's own agents are listed too, from the live records at query
//! time.
//!
//! Where it sits: tasks arrive over ZeroMQ like any other; the same
//! operations are HTTP routes of the ObservabilityHub server
//! (`http::registry`). Both paths call [`Op::run`] with the input as JSON: it
//! decodes the input into the operation's input type (the types below, the
//! declarations of `tasks`), runs the operation and encodes its typed
//! answer.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `registry.register` | `{"name", "type", "role"?, "url"?, "caps"?: text or [..], "labels"?: {..}, "ctx_limit"?, "cost_hint_usd_per_1k"?, "heartbeat_interval_s"?, "ttl_s"?, "id"?}` | `ROW` |
//! | `registry.heartbeat` | `{"id", "status"?: "ok"\|"degraded", "p95_ms"?, "queue_depth"?, "load"?}` | `ROW` |
//! | `registry.discover` | `{"type"?, "role"?, "cap"?: text or [..], "status"?, "name"?, "managed"?: bool}` (or nothing: `null`, `""`) | `{"services": [ROW]}` |
//! | `registry.promote` | `{"id", "role"}` | `ROW` |
//! | `registry.deregister` | `{"id"}` or the id as text | `{"deregistered": true\|false}` |
//!
//! `ROW` is `{"id", "name", "type", "role", "url", "caps", "labels",
//! "ctx_limit", "cost_hint_usd_per_1k", "heartbeat_interval_s", "ttl_s",
//! "status", "last_heartbeat_ts", "registered_at", "p95_ms", "queue_depth",
//! "load", "managed": false}` (times in Unix seconds). `type` is `model`,
//! `tool` or `agent`; `role` is `production`, `staging`, `canary` or
//! `experimental` (default `experimental`: a new service is not trusted
//! until promoted); `status` is `ok`, `degraded` or `down`. Texts (`id`,
//! `name`, `url`, capabilities) must not be blank and are trimmed; numbers
//! are ≥ 0, `ctx_limit` and `queue_depth` whole; `null` stands for an absent
//! optional field; other fields are refused.
//! `heartbeat_interval_s` defaults to 10 s (0.05 s to 1 day), `ttl_s` to 3
//! intervals (at least one interval). Registering an id again replaces the
//! row (a service restarting) but keeps `registered_at`.
//!
//! `discover` lists the registered services (by name, then id), then every
//! agent of the fleet (by name) as `{"id": "agent:NAME", "name", "type":
//! "agent", "role": "production", "caps": its task types, "labels":
//! {"group", "runtime", "essential"}, "status", "state", "managed": true}`
//! (the other fields `null`). Their `status` comes from the lifecycle state
//! at query time — `running` → `ok`, `starting`/`backoff` → `degraded`,
//! anything else → `down` — so a dormant on-demand agent is listed `down`
//! with `"state": "dormant"`. They do not heartbeat; the `agent:` ids are
//! reserved, and heartbeat, promote and deregister refuse them.
//!
//! Errors: `invalid_field` naming the JSON path of the fault (a bad value,
//! an unknown field, a `ttl_s` below the interval, a reserved id), and
//! `invalid_field` `no service ID` for an unknown id (not `unknown_agent`: a
//! service is not an agent of this run); over HTTP, 400 and 404
//! respectively, as `{"error": {"code", "message"}}`.
//!
//! The heartbeat monitor, a task spawned by `start` and aborted by `stop`,
//! sweeps the table every quarter of the shortest registered interval
//! (between 100 ms and 1 s). A service silent for more than 2 intervals
//! becomes `down` (event `alert.heartbeat_missed`); one silent for more than
//! `ttl_s` is deleted (event `registry.deregistered`). Silence counts from
//! the monitor's own start at the latest, so services get a fresh allowance
//! after the registry was down. Rules from the earlier system: down after 2
//! missed beats, deregistered after 3.
//!
//! Events: `registry.registered {"service", "name", "type", "role",
//! "replaced"}`, `registry.recovered {"service", "name", "status"}` (a
//! heartbeat from a `down` service), `registry.promoted {"service", "name",
//! "from", "to"}`, `alert.heartbeat_missed {"service", "name", "missed": 2,
//! "last_seen", "action": "marked_down"}`, `registry.deregistered
//! {"service", "name", "reason"}` (`requested`, or `3 heartbeats missed`;
//! `no heartbeat for T s (ttl_s)` when `ttl_s` is not 3 intervals).
//!
//! | route | operation |
//! | --- | --- |
//! | `POST /registry/register` | `registry.register` (JSON body) |
//! | `PUT /registry/heartbeat` | `registry.heartbeat` (JSON body) |
//! | `GET /registry/discover?type=&role=&cap=&status=&name=&managed=` | `registry.discover` (`cap=a,b`: both) |
//! | `POST /registry/promote` | `registry.promote` (JSON body) |
//! | `DELETE /registry/{id}`, `POST /registry/deregister` | `registry.deregister` |
//!
//! The routes (`http::registry`) answer `503 agent_not_running` while ServiceRegistry is not
//! running (its monitor would not run either).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::value::SeqAccessDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Text;
use super::memory::Whole;
use super::{Answer, Behaviour, unknown_type};
use crate::agents::services::Services;
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::{ErrorCode, Event, Task, TaskError};
use crate::events::EventBus;
use crate::store::services::{
    self, Beat, Filter, MISSED_BEATS_DOWN, MISSED_BEATS_TTL, Role, Service, ServiceType, Status,
};
use crate::store::{Store, StoreError};
use crate::supervisor::Fleet;
use crate::supervisor::state::{AgentRecord, AgentState};
use crate::supervisor::{AgentTable, StartError};

/// The behaviour's name in the catalog.
pub const AGENT: &str = "ServiceRegistry";

/// Prefix of the ids of the fleet's own agents in `discover`.
pub const MANAGED_PREFIX: &str = "agent:";

/// Default heartbeat interval, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: f64 = 10.0;

/// Shortest heartbeat interval accepted, seconds (the monitor ticks at
/// most every 100 ms).
const MIN_HEARTBEAT_INTERVAL_S: f64 = 0.05;

/// Longest heartbeat interval accepted, seconds (one day).
const MAX_HEARTBEAT_INTERVAL_S: f64 = 86_400.0;

/// Bounds of the monitor's tick.
const MIN_TICK: Duration = Duration::from_millis(100);
const MAX_TICK: Duration = Duration::from_secs(1);

/// The task types of ServiceRegistry.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<RegisterInput, ServiceRow>(
            "registry.register",
            "Registers an external service (model server, tool, agent) or registers it again",
            || {
                vec![
                    json!({"name": "llama-3.1-8b", "type": "model", "url": "http://127.0.0.1:8050/v1",
                           "caps": ["infer", "classify"], "ctx_limit": 8192, "cost_hint_usd_per_1k": 0.002,
                           "heartbeat_interval_s": 10}),
                    json!({"id": "search-1", "name": "searcher", "type": "tool", "role": "staging",
                           "caps": "search", "labels": {"zone": "a"}, "heartbeat_interval_s": 30, "ttl_s": 300}),
                ]
            },
        ),
        rust_task::<HeartbeatInput, ServiceRow>(
            "registry.heartbeat",
            "Records a heartbeat of a registered service, with its health figures",
            || {
                vec![
                    json!({"id": "search-1"}),
                    json!({"id": "search-1", "status": "degraded", "p95_ms": 180.5, "queue_depth": 4, "load": 0.9}),
                ]
            },
        ),
        rust_task::<OrShort<DiscoverInput>, DiscoverOutput>(
            "registry.discover",
            "Lists the registered services and the fleet's agents, filtered",
            || {
                vec![
                    json!({"type": "model", "cap": ["infer"], "status": "ok"}),
                    json!(null),
                    json!({"role": "production", "managed": false}),
                    json!({"cap": "code_generation", "name": "CodeGenerator"}),
                ]
            },
        ),
        rust_task::<PromoteInput, ServiceRow>("registry.promote", "Sets the deployment role of a service", || {
            vec![json!({"id": "search-1", "role": "production"})]
        }),
        rust_task::<OrShort<DeregisterInput>, DeregisterOutput>(
            "registry.deregister",
            "Removes a registered service",
            || vec![json!({"id": "search-1"}), json!("search-1")],
        ),
    ]
}

/// Errors of the registry's operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The input does not decode into the operation's input type, or breaks
    /// a rule across its fields (`ttl_s` below `heartbeat_interval_s`, a
    /// reserved id): "input of TYPE at /json/pointer: what".
    #[error("{0}")]
    Invalid(String),
    /// No service has this id.
    #[error("no service {0}")]
    NoService(String),
    /// The id is one of the fleet's agents, whose state the supervisor owns.
    #[error("{0} is an agent of the fleet: the supervisor reports its state; it cannot be changed here")]
    Managed(String),
    /// The answer does not serialise to JSON (a bug of the registry).
    #[error("{0}")]
    Output(String),
    /// The store failed.
    #[error("registry store: {0}")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The task error carrying this error (`invalid_field` or `internal`).
    pub fn to_task_error(&self) -> TaskError {
        let code = match self {
            RegistryError::Store(_) | RegistryError::Output(_) => ErrorCode::Internal,
            _ => ErrorCode::InvalidField,
        };
        TaskError::new(code, self.to_string())
    }
}

/// The behaviour of ServiceRegistry, if `name` is it.
pub fn behaviour(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    let registry =
        Registry { store: services.store.clone(), events: services.events.clone(), table: fleet.ctx().clone() };
    (name == AGENT).then(|| Arc::new(ServiceRegistry { ctx: registry, monitor: Default::default() }) as _)
}

/// What the registry's operations use: the store (`services`), the event
/// stream and the agent table (fleet agents are listed with live states).
/// Shared by the task path and the HTTP routes (`http::registry`).
#[derive(Clone)]
pub struct Registry {
    /// The SQLite store.
    pub store: Store,
    /// Events.
    pub events: EventBus,
    /// The live agent table.
    pub table: Arc<AgentTable>,
}

/// The ServiceRegistry behaviour: the operations, and the heartbeat monitor
/// while the agent runs.
pub struct ServiceRegistry {
    /// Store, events, live agent records.
    ctx: Registry,
    /// The heartbeat monitor task, from `start` to `stop` (aborted when
    /// dropped, so a behaviour dropped without `stop` leaves nothing behind).
    monitor: parking_lot::Mutex<Option<AbortOnDrop>>,
}

/// A tokio task aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Behaviour for ServiceRegistry {
    async fn start(&self) -> Result<(), StartError> {
        let handle = tokio::spawn(monitor(self.ctx.clone()));
        *self.monitor.lock() = Some(AbortOnDrop(handle));
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let op = Op::of_task_type(&task.task_type).ok_or_else(|| unknown_type(AGENT, &task))?;
        op.run(&self.ctx, &task.input).await.map_err(|e| e.to_task_error())
    }

    async fn stop(&self) {
        self.monitor.lock().take();
    }
}

/// The five operations, shared by the task and HTTP paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `registry.register`
    Register,
    /// `registry.heartbeat`
    Heartbeat,
    /// `registry.discover`
    Discover,
    /// `registry.promote`
    Promote,
    /// `registry.deregister`
    Deregister,
}

impl Op {
    fn of_task_type(t: &str) -> Option<Op> {
        Some(match t {
            "registry.register" => Op::Register,
            "registry.heartbeat" => Op::Heartbeat,
            "registry.discover" => Op::Discover,
            "registry.promote" => Op::Promote,
            "registry.deregister" => Op::Deregister,
            _ => return None,
        })
    }

    /// The operation's task type.
    fn task_type(self) -> &'static str {
        match self {
            Op::Register => "registry.register",
            Op::Heartbeat => "registry.heartbeat",
            Op::Discover => "registry.discover",
            Op::Promote => "registry.promote",
            Op::Deregister => "registry.deregister",
        }
    }

    /// Runs the operation on `input` (a task input or an HTTP body, see the
    /// module docs for its shape): decodes it into the operation's input
    /// type, runs the operation and returns its answer as JSON.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the input does not decode (the
    /// message names its JSON path); the operation's other
    /// [`RegistryError`]s.
    pub async fn run(self, ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
        let t = self.task_type();
        match self {
            Op::Register => answer(t, register(ctx, input_of(t, input)?).await?),
            Op::Heartbeat => answer(t, heartbeat(ctx, input_of(t, input)?).await?),
            Op::Discover => {
                let OrShort(filter) = input_of(t, input)?;
                answer(t, discover(ctx, filter).await?)
            }
            Op::Promote => answer(t, promote(ctx, input_of(t, input)?).await?),
            Op::Deregister => {
                let OrShort(DeregisterInput { id }) = input_of(t, input)?;
                answer(t, deregister(ctx, id).await?)
            }
        }
    }
}

/// `input` decoded into the input type of `task_type`.
fn input_of<I: DeserializeOwned>(task_type: &str, input: &Value) -> Result<I, RegistryError> {
    decode(task_type, input).map_err(|e| RegistryError::Invalid(e.message))
}

/// A typed answer of `task_type` as JSON.
fn answer<O: Serialize>(task_type: &str, output: O) -> Result<Value, RegistryError> {
    encode(task_type, output).map_err(|e| RegistryError::Output(e.message))
}

fn now_s() -> f64 {
    crate::core::unix_time()
}

/// A finite number within `range`, e.g. seconds.
fn number_within<'de, D: Deserializer<'de>>(
    deserializer: D,
    range: std::ops::RangeInclusive<f64>,
    expected: &str,
) -> Result<f64, D::Error> {
    let n = f64::deserialize(deserializer)?;
    if range.contains(&n) { Ok(n) } else { Err(de::Error::invalid_value(Unexpected::Float(n), &expected)) }
}

/// A number ≥ 0 (a cost, a latency, a load, a time to live).
struct NonNegative(f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        number_within(deserializer, 0.0..=f64::MAX, "a number ≥ 0").map(NonNegative)
    }
}

impl JsonSchema for NonNegative {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "NonNegative".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0})
    }
}

/// A heartbeat interval: seconds, from [`MIN_HEARTBEAT_INTERVAL_S`] to
/// [`MAX_HEARTBEAT_INTERVAL_S`].
struct Interval(f64);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expected = format!("seconds from {MIN_HEARTBEAT_INTERVAL_S} to {MAX_HEARTBEAT_INTERVAL_S}");
        number_within(deserializer, MIN_HEARTBEAT_INTERVAL_S..=MAX_HEARTBEAT_INTERVAL_S, &expected).map(Interval)
    }
}

impl JsonSchema for Interval {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Interval".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": MIN_HEARTBEAT_INTERVAL_S, "maximum": MAX_HEARTBEAT_INTERVAL_S})
    }
}

/// A count from 0 to 2³² − 1 (tokens, requests).
type Count = Whole<0, { u32::MAX as i64 }>;

/// `n` of a [`Count`] (0 to 2³² − 1 by its decoding).
fn count(Whole(n): Count) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Capabilities: a list of texts, or one text for a list of one; none
/// blank, each trimmed.
struct Caps(Vec<String>);

impl<'de> Deserialize<'de> for Caps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;

        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a text or an array of texts, none blank")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
                match v.trim() {
                    "" => Err(E::invalid_value(Unexpected::Str(v), &"a string that is not blank")),
                    one => Ok(vec![one.to_string()]),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<String>, A::Error> {
                let all = Vec::<Text>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(all.iter().map(Text::trimmed).collect())
            }
        }

        deserializer.deserialize_any(OneOrMany).map(Caps)
    }
}

impl JsonSchema for Caps {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Caps".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut one = generator.subschema_for::<Text>();
        one.insert("description".into(), "One capability.".into());
        json_schema!({"anyOf": [one, {"type": "array", "items": generator.subschema_for::<Text>()}]})
    }
}

/// A service registering itself, or registering again under its id (the
/// row is replaced, `registered_at` kept).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegisterInput {
    /// Its id (default: a new UUID); ids starting with `agent:` are
    /// reserved for the fleet's agents.
    id: Option<Text>,
    /// Its name, e.g. `llama-3.1-8b`; several services may share one.
    name: Text,
    /// What it is.
    #[serde(rename = "type")]
    kind: ServiceType,
    /// Its deployment role (default `experimental`: not trusted until
    /// promoted).
    role: Option<Role>,
    /// Where it answers.
    url: Option<Text>,
    /// Its capabilities (`infer`, `classify`, `embed`, ...; default none).
    caps: Option<Caps>,
    /// Free-form labels (default `{}`).
    labels: Option<Map<String, Value>>,
    /// Its context window, tokens.
    ctx_limit: Option<Count>,
    /// Its cost estimate, USD per 1,000 tokens.
    cost_hint_usd_per_1k: Option<NonNegative>,
    /// The time it promises between heartbeats, seconds, 0.05–86400
    /// (default 10).
    heartbeat_interval_s: Option<Interval>,
    /// The time without a heartbeat after which the monitor deregisters it,
    /// seconds, at least `heartbeat_interval_s` (default 3 intervals).
    ttl_s: Option<NonNegative>,
}

/// A registered service, as the registry answers it.
#[derive(Serialize, JsonSchema)]
struct ServiceRow {
    /// The row of the `services` table.
    #[serde(flatten)]
    service: Service,
    /// Always `false`: a registered service, not one of the fleet's agents.
    #[schemars(extend("const" = false))]
    managed: bool,
}

impl From<Service> for ServiceRow {
    fn from(service: Service) -> ServiceRow {
        ServiceRow { service, managed: false }
    }
}

/// The service id `id`, trimmed, refusing the fleet's agents.
fn service_id(id: &Text) -> Result<String, RegistryError> {
    let id = id.trimmed();
    if id.starts_with(MANAGED_PREFIX) {
        return Err(RegistryError::Managed(id));
    }
    Ok(id)
}

/// `registry.register`: inserts (or replaces) the service; publishes
/// `registry.registered`. Returns the row.
///
/// # Errors
/// [`RegistryError::Invalid`] for a `ttl_s` below the interval or a
/// reserved id; [`RegistryError::Store`].
async fn register(ctx: &Registry, input: RegisterInput) -> Result<ServiceRow, RegistryError> {
    const T: &str = "registry.register";
    let RegisterInput {
        id,
        name,
        kind,
        role,
        url,
        caps,
        labels,
        ctx_limit,
        cost_hint_usd_per_1k,
        heartbeat_interval_s,
        ttl_s,
    } = input;
    let interval = heartbeat_interval_s.map_or(DEFAULT_HEARTBEAT_INTERVAL_S, |Interval(s)| s);
    let ttl = ttl_s.map_or(MISSED_BEATS_TTL * interval, |NonNegative(s)| s);
    if ttl < interval {
        return Err(RegistryError::Invalid(format!(
            "input of {T} at /ttl_s: must be at least heartbeat_interval_s ({interval} s), got {ttl}"
        )));
    }
    let id = match id.map(|id| id.trimmed()) {
        Some(id) if id.starts_with(MANAGED_PREFIX) => {
            return Err(RegistryError::Invalid(format!(
                "input of {T} at /id: ids starting with {MANAGED_PREFIX:?} are reserved for the fleet's agents"
            )));
        }
        Some(id) => id,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let now = now_s();
    let service = Service {
        id,
        name: name.trimmed(),
        kind,
        role: role.unwrap_or(Role::Experimental),
        url: url.map(|u| u.trimmed()),
        caps: caps.map(|Caps(c)| c).unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        ctx_limit: ctx_limit.map(count),
        cost_hint_usd_per_1k: cost_hint_usd_per_1k.map(|NonNegative(n)| n),
        heartbeat_interval_s: interval,
        ttl_s: ttl,
        status: Status::Ok,
        last_heartbeat_ts: now,
        registered_at: now,
        p95_ms: None,
        queue_depth: None,
        load: None,
    };
    let id = service.id.clone();
    let (replaced, row) = ctx
        .store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let replaced = services::upsert(&tx, &service)?;
            // Read back for `registered_at`, kept from an earlier registration;
            // the row was just written in this transaction, so it is there.
            let row = services::get(&tx, &service.id)?.unwrap_or(service);
            tx.commit()?;
            Ok((replaced, row))
        })
        .await?;
    tracing::info!(service = %id, name = %row.name, kind = row.kind.as_str(), replaced, "service registered");
    ctx.events.emit(Event::RegistryRegistered {
        service: id,
        name: row.name.clone(),
        kind: row.kind.as_str().to_string(),
        role: row.role.as_str().to_string(),
        replaced,
    });
    Ok(row.into())
}

/// A heartbeat of a registered service; absent figures keep their stored
/// value.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HeartbeatInput {
    /// The service's id (`registry.register`'s answer).
    id: Text,
    /// Its health (default `ok`; only the monitor sets `down`).
    status: Option<BeatStatus>,
    /// Its 95th percentile latency, milliseconds.
    p95_ms: Option<NonNegative>,
    /// The requests waiting at it.
    queue_depth: Option<Count>,
    /// Its load, on its own scale (usually 0.0–1.0).
    load: Option<NonNegative>,
}

/// The health a service reports of itself.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum BeatStatus {
    /// Healthy.
    Ok,
    /// Working, but degraded.
    Degraded,
}

/// `registry.heartbeat`: records a heartbeat (status `ok` unless
/// `degraded` is given, and the figures given); publishes
/// `registry.recovered` when the service was `down`. Returns the row.
///
/// # Errors
/// [`RegistryError::NoService`]; [`RegistryError::Managed`] for an `agent:`
/// id; [`RegistryError::Store`].
async fn heartbeat(ctx: &Registry, input: HeartbeatInput) -> Result<ServiceRow, RegistryError> {
    let HeartbeatInput { id, status, p95_ms, queue_depth, load } = input;
    let id = service_id(&id)?;
    let beat = Beat {
        status: match status {
            None | Some(BeatStatus::Ok) => Status::Ok,
            Some(BeatStatus::Degraded) => Status::Degraded,
        },
        p95_ms: p95_ms.map(|NonNegative(n)| n),
        queue_depth: queue_depth.map(count),
        load: load.map(|NonNegative(n)| n),
    };
    let key = id.clone();
    let updated = ctx.store.call(move |conn| services::heartbeat(conn, &key, &beat, now_s())).await?;
    let Some((before, row)) = updated else { return Err(RegistryError::NoService(id)) };
    if before == Status::Down {
        tracing::info!(service = %id, name = %row.name, "service heartbeats again");
        ctx.events.emit(Event::RegistryRecovered {
            service: id,
            name: row.name.clone(),
            status: row.status.as_str().to_string(),
        });
    }
    Ok(row.into())
}

/// Lifecycle state → registry status of a fleet agent.
fn agent_status(state: AgentState) -> Status {
    match state {
        AgentState::Running => Status::Ok,
        AgentState::Starting | AgentState::Backoff => Status::Degraded,
        _ => Status::Down,
    }
}

/// The filters of `registry.discover`; every one given must match.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DiscoverInput {
    /// Only services of this type.
    #[serde(rename = "type")]
    kind: Option<ServiceType>,
    /// Only services in this role.
    role: Option<Role>,
    /// Only services having every one of these capabilities.
    cap: Option<Caps>,
    /// Only services in this status.
    status: Option<Status>,
    /// Only services of this name (trimmed).
    name: Option<Text>,
    /// Only the fleet's own agents (`true`) or only registered services
    /// (`false`); default both.
    managed: Option<bool>,
}

impl Shorthand for DiscoverInput {
    type Short = NoFilter;
    const SHORT_DESCRIPTION: &'static str = "No filter: `null` or blank text lists everything.";
    fn expand(NoFilter: NoFilter) -> DiscoverInput {
        DiscoverInput::default()
    }
}

/// No input: `null` or blank text.
struct NoFilter;

impl<'de> Deserialize<'de> for NoFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Nothing;

        impl Visitor<'_> for Nothing {
            type Value = NoFilter;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of filters, null or blank text")
            }
            fn visit_unit<E: de::Error>(self) -> Result<NoFilter, E> {
                Ok(NoFilter)
            }
            fn visit_none<E: de::Error>(self) -> Result<NoFilter, E> {
                Ok(NoFilter)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NoFilter, E> {
                if v.trim().is_empty() { Ok(NoFilter) } else { Err(E::invalid_value(Unexpected::Str(v), &self)) }
            }
        }

        deserializer.deserialize_any(Nothing)
    }
}

impl JsonSchema for NoFilter {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "NoFilter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^\\s*$"}]})
    }
}

/// What `registry.discover` found.
#[derive(Serialize, JsonSchema)]
struct DiscoverOutput {
    /// The registered services passing the filters (by name, then id), then
    /// the fleet's agents passing them (by name).
    services: Vec<Listed>,
}

/// One entry of `registry.discover`.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum Listed {
    /// A registered service.
    Service(ServiceRow),
    /// One of the fleet's own agents.
    Agent(AgentRow),
}

/// One of the fleet's own agents as the registry lists it: the fields of a
/// registered service (those it has not, `null`), its lifecycle state read
/// at query time.
#[derive(Serialize, JsonSchema)]
struct AgentRow {
    /// `agent:` and the agent's name.
    id: String,
    /// The agent's name.
    name: String,
    /// Always `agent`.
    #[serde(rename = "type")]
    kind: ServiceType,
    /// Always `production`.
    role: Role,
    /// Always `null`: the fleet's agents are reached through the bus.
    url: (),
    /// The task types it handles.
    caps: Vec<String>,
    /// Where it sits in the fleet.
    labels: AgentLabels,
    /// Always `null`.
    ctx_limit: (),
    /// Always `null`.
    cost_hint_usd_per_1k: (),
    /// Always `null`: the fleet's agents do not heartbeat.
    heartbeat_interval_s: (),
    /// Always `null`: the fleet's agents are never deregistered.
    ttl_s: (),
    /// From its lifecycle state: `running` → `ok`, `starting`/`backoff` →
    /// `degraded`, anything else → `down`.
    status: Status,
    /// Its lifecycle state (`running`, `dormant`, ...).
    state: &'static str,
    /// Always `null`.
    last_heartbeat_ts: (),
    /// Always `null`.
    registered_at: (),
    /// Always `null`.
    p95_ms: (),
    /// Always `null`.
    queue_depth: (),
    /// Always `null`.
    load: (),
    /// Always `true`: one of the fleet's agents.
    #[schemars(extend("const" = true))]
    managed: bool,
}

/// The labels of a fleet agent in `registry.discover`.
#[derive(Serialize, JsonSchema)]
struct AgentLabels {
    /// Its group in the catalog.
    group: String,
    /// Its runtime: `builtin`, `llm` or `process`.
    runtime: &'static str,
    /// Whether the fleet needs it (`required` in its spec).
    essential: bool,
}

/// The registry view of one fleet agent, if it passes `filter`.
fn agent_row(ctx: &Registry, r: &AgentRecord, filter: &Filter) -> Option<AgentRow> {
    let caps = ctx.table.catalog.get(&r.name).map(|s| s.handles.clone()).unwrap_or_default();
    let status = agent_status(r.state);
    if !filter.matches(ServiceType::Agent, Role::Production, status, &r.name, &caps) {
        return None;
    }
    Some(AgentRow {
        id: format!("{MANAGED_PREFIX}{}", r.name),
        name: r.name.clone(),
        kind: ServiceType::Agent,
        role: Role::Production,
        url: (),
        caps,
        labels: AgentLabels { group: r.group.clone(), runtime: r.runtime.as_str(), essential: r.essential },
        ctx_limit: (),
        cost_hint_usd_per_1k: (),
        heartbeat_interval_s: (),
        ttl_s: (),
        status,
        state: r.state.as_str(),
        last_heartbeat_ts: (),
        registered_at: (),
        p95_ms: (),
        queue_depth: (),
        load: (),
        managed: true,
    })
}

/// `registry.discover`: the registered services passing the filter, then
/// the fleet's agents passing it (unless `managed` says otherwise).
///
/// # Errors
/// [`RegistryError::Store`].
async fn discover(ctx: &Registry, input: DiscoverInput) -> Result<DiscoverOutput, RegistryError> {
    let DiscoverInput { kind, role, cap, status, name, managed } = input;
    let filter =
        Filter { kind, role, status, name: name.map(|n| n.trimmed()), caps: cap.map(|Caps(c)| c).unwrap_or_default() };
    let mut services = Vec::new();
    if managed != Some(true) {
        let f = filter.clone();
        let rows = ctx.store.call(move |conn| services::list(conn, &f)).await?;
        services.extend(rows.into_iter().map(|row| Listed::Service(row.into())));
    }
    if managed != Some(false) {
        services.extend(ctx.table.snapshot().iter().filter_map(|r| agent_row(ctx, r, &filter)).map(Listed::Agent));
    }
    Ok(DiscoverOutput { services })
}

/// A new role for a service.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PromoteInput {
    /// The service's id.
    id: Text,
    /// Its new deployment role.
    role: Role,
}

/// `registry.promote`: sets the role of a service; publishes
/// `registry.promoted`. Returns the row.
///
/// # Errors
/// [`RegistryError::NoService`]; [`RegistryError::Managed`];
/// [`RegistryError::Store`].
async fn promote(ctx: &Registry, PromoteInput { id, role }: PromoteInput) -> Result<ServiceRow, RegistryError> {
    let id = service_id(&id)?;
    let key = id.clone();
    let updated = ctx.store.call(move |conn| services::set_role(conn, &key, role)).await?;
    let Some((before, row)) = updated else { return Err(RegistryError::NoService(id)) };
    tracing::info!(service = %id, name = %row.name, from = before.as_str(), to = role.as_str(), "service promoted");
    ctx.events.emit(Event::RegistryPromoted {
        service: id,
        name: row.name.clone(),
        from: before.as_str().to_string(),
        to: role.as_str().to_string(),
    });
    Ok(row.into())
}

/// The service to remove.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeregisterInput {
    /// The service's id.
    id: Text,
}

impl Shorthand for DeregisterInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The id alone.";
    fn expand(id: Text) -> DeregisterInput {
        DeregisterInput { id }
    }
}

/// Whether a service was removed.
#[derive(Serialize, JsonSchema)]
struct DeregisterOutput {
    /// `true` when it was registered and is removed, `false` when there was
    /// no such service.
    deregistered: bool,
}

/// `registry.deregister`: deletes a service; publishes
/// `registry.deregistered` (reason `requested`) when there was one.
///
/// # Errors
/// [`RegistryError::Managed`]; [`RegistryError::Store`].
async fn deregister(ctx: &Registry, id: Text) -> Result<DeregisterOutput, RegistryError> {
    let id = service_id(&id)?;
    let key = id.clone();
    let removed = ctx.store.call(move |conn| services::delete(conn, &key)).await?;
    if let Some(s) = &removed {
        tracing::info!(service = %id, name = %s.name, "service deregistered on request");
        ctx.events.emit(Event::RegistryDeregistered { service: id, name: s.name.clone(), reason: "requested".into() });
    }
    Ok(DeregisterOutput { deregistered: removed.is_some() })
}

/// How long the monitor waits between sweeps: a quarter of the shortest
/// interval, within [100 ms, 1 s].
fn tick_for(min_interval_s: Option<f64>) -> Duration {
    min_interval_s.map_or(MAX_TICK, |s| Duration::from_secs_f64(s / 4.0).clamp(MIN_TICK, MAX_TICK))
}

/// Why the monitor deleted `s`.
fn eviction_reason(s: &Service) -> String {
    if (s.ttl_s - MISSED_BEATS_TTL * s.heartbeat_interval_s).abs() < 1e-9 {
        format!("{MISSED_BEATS_TTL} heartbeats missed")
    } else {
        format!("no heartbeat for {} s (ttl_s)", s.ttl_s)
    }
}

/// The heartbeat monitor: sweeps the table until aborted (or the store
/// closes), publishing an event per service marked down or deleted.
async fn monitor(ctx: Registry) {
    let since = now_s();
    loop {
        let swept = ctx
            .store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let sweep = services::sweep(&tx, now_s(), since)?;
                tx.commit()?;
                Ok(sweep)
            })
            .await;
        let tick = match swept {
            Ok(sweep) => {
                for s in &sweep.marked_down {
                    tracing::warn!(service = %s.id, name = %s.name, missed = MISSED_BEATS_DOWN, "service missed heartbeats; marked down");
                    ctx.events.emit(Event::HeartbeatMissed {
                        service: s.id.clone(),
                        name: s.name.clone(),
                        missed: MISSED_BEATS_DOWN as u32,
                        last_seen: s.last_heartbeat_ts,
                        action: "marked_down",
                    });
                }
                for s in &sweep.removed {
                    let reason = eviction_reason(s);
                    tracing::warn!(service = %s.id, name = %s.name, reason = %reason, "service deregistered by the monitor");
                    ctx.events.emit(Event::RegistryDeregistered {
                        service: s.id.clone(),
                        name: s.name.clone(),
                        reason,
                    });
                }
                tick_for(sweep.min_interval_s)
            }
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "registry sweep failed");
                MAX_TICK
            }
        };
        tokio::time::sleep(tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_within_bounds() {
        assert_eq!(tick_for(None), MAX_TICK);
        assert_eq!(tick_for(Some(0.2)), MIN_TICK);
        assert_eq!(tick_for(Some(2.0)), Duration::from_millis(500));
        assert_eq!(tick_for(Some(60.0)), MAX_TICK);
    }

    /// The message of the input error of `op` on `input`.
    fn input_error<I: DeserializeOwned>(op: Op, input: Value) -> String {
        match input_of::<I>(op.task_type(), &input) {
            Err(e @ RegistryError::Invalid(_)) => {
                assert_eq!(e.to_task_error().code, ErrorCode::InvalidField);
                e.to_string()
            }
            Err(e) => panic!("{input}: {e:?}"),
            Ok(_) => panic!("{input} decodes"),
        }
    }

    #[test]
    fn input_errors_name_the_json_path() {
        assert_eq!(
            input_error::<RegisterInput>(Op::Register, json!({"name": "x", "type": "robot"})),
            "input of registry.register at /type: unknown variant `robot`, expected one of `model`, `tool`, `agent`"
        );
        let e = input_error::<RegisterInput>(Op::Register, json!({"name": "x", "type": "model", "colour": "red"}));
        assert!(e.starts_with("input of registry.register at /colour: unknown field `colour`"), "{e}");
        let e = input_error::<RegisterInput>(Op::Register, json!({"name": " ", "type": "model"}));
        assert!(e.starts_with("input of registry.register at /name: the text must have a character"), "{e}");
        let e = input_error::<RegisterInput>(Op::Register, json!({"name": "x", "type": "tool", "caps": ["a", ""]}));
        assert!(e.starts_with("input of registry.register at /caps/1: "), "{e}");
        let e = input_error::<RegisterInput>(Op::Register, json!({"name": "x", "type": "tool", "ctx_limit": -1}));
        assert!(e.contains("at /ctx_limit: invalid value: integer `-1`, expected an integer from 0 to 4294967295"));
        let e = input_error::<RegisterInput>(
            Op::Register,
            json!({"name": "x", "type": "tool", "heartbeat_interval_s": 0.01}),
        );
        assert!(e.contains("at /heartbeat_interval_s: invalid value: floating point `0.01`, expected seconds"), "{e}");
        let e = input_error::<HeartbeatInput>(Op::Heartbeat, json!({"id": "s", "status": "down"}));
        assert!(e.starts_with("input of registry.heartbeat at /status: unknown variant `down`"), "{e}");
        let e = input_error::<OrShort<DiscoverInput>>(Op::Discover, json!("models"));
        assert!(e.starts_with("input of registry.discover at the top level: invalid value: string \"models\""), "{e}");
        let e = input_error::<OrShort<DeregisterInput>>(Op::Deregister, json!(7));
        assert!(e.starts_with("input of registry.deregister at the top level: invalid type: integer `7`"), "{e}");
        assert_eq!(RegistryError::NoService("x".into()).to_task_error().code, ErrorCode::InvalidField);
    }

    #[test]
    fn inputs_accept_their_short_and_loose_forms() {
        for nothing in [json!(null), json!(""), json!("  "), json!({})] {
            let OrShort(f) = input_of::<OrShort<DiscoverInput>>("registry.discover", &nothing).unwrap();
            assert!(f.kind.is_none() && f.cap.is_none() && f.managed.is_none(), "{nothing}");
        }
        let OrShort(f) = input_of::<OrShort<DiscoverInput>>("registry.discover", &json!({"cap": " embed "})).unwrap();
        assert_eq!(f.cap.map(|Caps(c)| c), Some(vec!["embed".to_string()]));
        let OrShort(DeregisterInput { id }) =
            input_of::<OrShort<DeregisterInput>>("registry.deregister", &json!(" svc-1 ")).unwrap();
        assert_eq!(id.trimmed(), "svc-1");
        let r: RegisterInput = input_of(
            "registry.register",
            &json!({"name": "x", "type": "model", "role": null, "ctx_limit": 8192.0, "caps": ["a", " b"]}),
        )
        .unwrap();
        assert_eq!((r.role.is_none(), r.ctx_limit.map(count)), (true, Some(8192)));
        assert_eq!(r.caps.map(|Caps(c)| c), Some(vec!["a".to_string(), "b".to_string()]));
    }

    /// A registry over a temporary store, listing the agents of the `core`
    /// profile (all dormant).
    fn registry() -> (tempfile::TempDir, Registry) {
        use crate::config::{Settings, catalog::Catalog, profile};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let catalog = Catalog::load(&root.join("agents")).unwrap();
        let plan = profile::resolve(&catalog, &profile::load_profile(&root.join("profiles"), "core").unwrap()).unwrap();
        let metrics = crate::telemetry::metrics::Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        let table =
            AgentTable::new(Arc::new(Settings::default()), Arc::new(catalog), Arc::new(plan), events.clone(), metrics);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Registry { store, events, table: Arc::new(table) })
    }

    /// Every example, run in declaration order (register before the
    /// operations on the registered service), answers what the output
    /// schema says.
    #[tokio::test]
    async fn examples_answer_what_the_output_schemas_say() {
        let spec: crate::config::spec::AgentSpec = serde_norway::from_str(
            "{name: ServiceRegistry, group: g, runtime: {kind: builtin}, handles: [registry.register, \
             registry.heartbeat, registry.discover, registry.promote, registry.deregister]}",
        )
        .unwrap();
        let rust = std::collections::BTreeMap::from([(AGENT, tasks())]);
        let table = crate::agents::tasks::TaskTable::build([&spec], &rust).unwrap_or_else(|p| panic!("{p:#?}"));
        let (_dir, registry) = registry();
        let mut discovered_agents = false;
        for t in tasks() {
            let def = table.get(t.task_type).unwrap();
            let op = Op::of_task_type(t.task_type).unwrap();
            for example in def.input_schema["examples"].as_array().unwrap() {
                let output = op.run(&registry, example).await.unwrap_or_else(|e| panic!("{example}: {e}"));
                def.check_output(&output).unwrap_or_else(|e| panic!("{example} -> {output}: {e}"));
                discovered_agents |=
                    output["services"].as_array().is_some_and(|s| s.iter().any(|r| r["managed"] == true));
            }
        }
        assert!(discovered_agents, "no example listed a fleet agent");
    }

    #[tokio::test]
    async fn rows_keep_their_shape_and_registry_errors_stay() {
        let (_dir, registry) = registry();
        let input = json!({"id": " svc-1 ", "name": " embedder ", "type": "model", "caps": " embed ",
                           "labels": {"zone": "a"}, "heartbeat_interval_s": 60});
        let row = Op::Register.run(&registry, &input).await.unwrap();
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "id",
            "name",
            "type",
            "role",
            "url",
            "caps",
            "labels",
            "ctx_limit",
            "cost_hint_usd_per_1k",
            "heartbeat_interval_s",
            "ttl_s",
            "status",
            "last_heartbeat_ts",
            "registered_at",
            "p95_ms",
            "queue_depth",
            "load",
            "managed",
        ];
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        assert_eq!(
            (&row["id"], &row["name"], &row["role"], &row["caps"], &row["ttl_s"], &row["managed"]),
            (
                &json!("svc-1"),
                &json!("embedder"),
                &json!("experimental"),
                &json!(["embed"]),
                &json!(180.0),
                &json!(false)
            )
        );
        let e = Op::Register
            .run(&registry, &json!({"name": "x", "type": "tool", "heartbeat_interval_s": 10, "ttl_s": 5}))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input of registry.register at /ttl_s: must be at least heartbeat_interval_s (10 s), got 5"
        );
        let e =
            Op::Register.run(&registry, &json!({"name": "x", "type": "tool", "id": "agent:Mine"})).await.unwrap_err();
        assert!(matches!(&e, RegistryError::Invalid(m) if m.starts_with("input of registry.register at /id: ")), "{e}");
        let e = Op::Heartbeat.run(&registry, &json!({"id": "nope"})).await.unwrap_err();
        assert!(matches!(e, RegistryError::NoService(ref id) if id == "nope"), "{e}");
        let e =
            Op::Promote.run(&registry, &json!({"id": "agent:ServiceRegistry", "role": "canary"})).await.unwrap_err();
        assert!(matches!(e, RegistryError::Managed(_)), "{e}");
        let agents = Op::Discover.run(&registry, &json!({"managed": true, "name": "ServiceRegistry"})).await.unwrap();
        let me = &agents["services"][0];
        assert_eq!(
            (&me["id"], &me["state"], &me["status"]),
            (&json!("agent:ServiceRegistry"), &json!("dormant"), &json!("down"))
        );
        assert_eq!((&me["url"], &me["labels"]["runtime"]), (&Value::Null, &json!("builtin")));
        assert_eq!(Op::Deregister.run(&registry, &json!("svc-1")).await.unwrap(), json!({"deregistered": true}));
    }

    #[test]
    fn agents_map_lifecycle_states_to_statuses() {
        assert_eq!(agent_status(AgentState::Running), Status::Ok);
        assert_eq!(agent_status(AgentState::Backoff), Status::Degraded);
        assert_eq!(agent_status(AgentState::Dormant), Status::Down);
        assert_eq!(agent_status(AgentState::Fatal), Status::Down);
    }
}
