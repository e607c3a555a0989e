//! ServiceRegistry (DESIGN §8): the registry of external services — model
//! servers, tools, agents outside the fleet — with heartbeats, TTL eviction
//! and promotion, after the earlier system's registry and heartbeat monitor.
//! State: the `services` table of the SQLite store
//! ([`crate::store::services`]), so registrations survive a daemon restart.
//! The fleet's own agents are listed too, from the live records at query
//! time.
//!
//! Where it sits: tasks arrive over ZeroMQ like any other; the same
//! operations are HTTP routes of the ObservabilityHub server ([`routes`]).
//! Both paths call one function per operation ([`register`],
//! [`heartbeat`], [`discover`], [`promote`], [`deregister`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `registry.register` | `{"name", "type", "role"?, "url"?, "caps"?: [..], "labels"?: {..}, "ctx_limit"?, "cost_hint_usd_per_1k"?, "heartbeat_interval_s"?, "ttl_s"?, "id"?}` | `ROW` |
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
//! until promoted); `status` is `ok`, `degraded` or `down`.
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
//! Errors: `invalid_field` naming the field (a bad value, an unknown field,
//! a reserved id), and `invalid_field` `no service ID` for an unknown id
//! (not `unknown_agent`: a service is not an agent of this run); over HTTP,
//! 400 and 404 respectively, as `{"error": {"code", "message"}}`.
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Answer, Behaviour, unknown_type};
use crate::agents::services::Services;
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

/// Errors of the registry's operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A field of the input is missing, of the wrong type, out of range,
    /// unknown or reserved.
    #[error("input of {op}: field \"{field}\": {reason}")]
    Invalid {
        /// The operation (`registry.register`, ...).
        op: &'static str,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input is not a JSON object (or, for deregister, an id).
    #[error("input of {op}: {reason}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected.
        reason: String,
    },
    /// No service has this id.
    #[error("no service {0}")]
    NoService(String),
    /// The id is one of the fleet's agents, whose state the supervisor owns.
    #[error("{0} is an agent of the fleet: the supervisor reports its state; it cannot be changed here")]
    Managed(String),
    /// The store failed.
    #[error("registry store: {0}")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The task error carrying this error (`invalid_field` or `internal`).
    pub fn to_task_error(&self) -> TaskError {
        let code = match self {
            RegistryError::Store(_) => ErrorCode::Internal,
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

    /// Runs the operation on `input`.
    ///
    /// # Errors
    /// The operation's [`RegistryError`].
    pub async fn run(self, ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
        match self {
            Op::Register => register(ctx, input).await,
            Op::Heartbeat => heartbeat(ctx, input).await,
            Op::Discover => discover(ctx, input).await,
            Op::Promote => promote(ctx, input).await,
            Op::Deregister => deregister(ctx, input).await,
        }
    }
}

fn now_s() -> f64 {
    crate::core::unix_time()
}

/// One row as the registry's JSON: the columns and `"managed": false`.
fn row_json(s: &Service) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("managed".into(), Value::Bool(false));
    }
    v
}

/// The fields of a task input or HTTP body, with checks that name the field.
struct Input<'a> {
    op: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Input<'a> {
    /// `input` as an object with no fields beyond `allowed`.
    fn new(op: &'static str, input: &'a Value, allowed: &[&str]) -> Result<Input<'a>, RegistryError> {
        let Value::Object(map) = input else {
            return Err(RegistryError::Shape { op, reason: "expected a JSON object".into() });
        };
        let input = Input { op, map };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(input.invalid(k, format!("unknown field; expected one of {}", allowed.join(", "))));
        }
        Ok(input)
    }

    fn invalid(&self, field: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::Invalid { op: self.op, field: field.into(), reason: reason.into() }
    }

    /// The field, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A non-empty text field.
    fn text(&self, key: &str) -> Result<Option<&'a str>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
            Some(_) => Err(self.invalid(key, "must be a non-empty string")),
        }
    }

    fn required_text(&self, key: &str) -> Result<&'a str, RegistryError> {
        self.text(key)?.ok_or_else(|| self.invalid(key, "missing"))
    }

    /// A value of a closed set.
    fn choice<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        choices: fn() -> String,
    ) -> Result<Option<T>, RegistryError> {
        match self.text(key) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => {
                parse(s).map(Some).ok_or_else(|| self.invalid(key, format!("must be {} (got {s:?})", choices())))
            }
            Err(_) => Err(self.invalid(key, format!("must be {}", choices()))),
        }
    }

    /// A finite number ≥ 0.
    fn number(&self, key: &str) -> Result<Option<f64>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Some)
                .ok_or_else(|| self.invalid(key, "must be a number ≥ 0")),
        }
    }

    /// An integer from 0 to 2³² − 1.
    fn count(&self, key: &str) -> Result<Option<u32>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.invalid(key, "must be an integer from 0 to 4294967295")),
        }
    }

    /// A list of non-empty strings (one string counts as a list of one).
    fn strings(&self, key: &str) -> Result<Vec<String>, RegistryError> {
        let bad = || self.invalid(key, "must be a string or an array of non-empty strings");
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(vec![s.trim().to_string()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// The service id, refusing the fleet's agents.
    fn service_id(&self) -> Result<&'a str, RegistryError> {
        let id = self.required_text("id")?;
        if id.starts_with(MANAGED_PREFIX) {
            return Err(RegistryError::Managed(id.to_string()));
        }
        Ok(id)
    }
}

/// `registry.register`: validates `input` and inserts (or replaces) the
/// service; publishes `registry.registered`. Returns the row.
///
/// # Errors
/// [`RegistryError::Invalid`] naming the field; [`RegistryError::Store`].
pub async fn register(ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
    const FIELDS: &[&str] = &[
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
    ];
    let inp = Input::new("registry.register", input, FIELDS)?;
    let name = inp.required_text("name")?.to_string();
    let kind = inp
        .choice("type", ServiceType::parse, ServiceType::choices)?
        .ok_or_else(|| inp.invalid("type", format!("missing; must be {}", ServiceType::choices())))?;
    let role = inp.choice("role", Role::parse, Role::choices)?.unwrap_or(Role::Experimental);
    let labels = match inp.get("labels") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(inp.invalid("labels", "must be a JSON object")),
    };
    let interval = inp.number("heartbeat_interval_s")?.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_S);
    if !(MIN_HEARTBEAT_INTERVAL_S..=MAX_HEARTBEAT_INTERVAL_S).contains(&interval) {
        return Err(inp.invalid(
            "heartbeat_interval_s",
            format!("must be from {MIN_HEARTBEAT_INTERVAL_S} to {MAX_HEARTBEAT_INTERVAL_S} seconds"),
        ));
    }
    let ttl = inp.number("ttl_s")?.unwrap_or(MISSED_BEATS_TTL * interval);
    if ttl < interval {
        return Err(inp.invalid("ttl_s", format!("must be at least heartbeat_interval_s ({interval} s)")));
    }
    let id = match inp.text("id")? {
        Some(id) if id.starts_with(MANAGED_PREFIX) => {
            return Err(
                inp.invalid("id", format!("ids starting with {MANAGED_PREFIX:?} are reserved for the fleet's agents"))
            );
        }
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let now = now_s();
    let service = Service {
        id,
        name,
        kind,
        role,
        url: inp.text("url")?.map(str::to_string),
        caps: inp.strings("caps")?,
        labels,
        ctx_limit: inp.count("ctx_limit")?,
        cost_hint_usd_per_1k: inp.number("cost_hint_usd_per_1k")?,
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
    Ok(row_json(&row))
}

/// `registry.heartbeat`: records a heartbeat (status `ok` unless
/// `degraded` is given, and the figures given); publishes
/// `registry.recovered` when the service was `down`. Returns the row.
///
/// # Errors
/// [`RegistryError::Invalid`]; [`RegistryError::NoService`];
/// [`RegistryError::Managed`] for an `agent:` id; [`RegistryError::Store`].
pub async fn heartbeat(ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
    let inp = Input::new("registry.heartbeat", input, &["id", "status", "p95_ms", "queue_depth", "load"])?;
    let id = inp.service_id()?.to_string();
    let status = match inp.choice("status", Status::parse, || "ok or degraded".into())? {
        None | Some(Status::Ok) => Status::Ok,
        Some(Status::Degraded) => Status::Degraded,
        Some(Status::Down) => return Err(inp.invalid("status", "must be ok or degraded (the monitor sets down)")),
    };
    let beat = Beat {
        status,
        p95_ms: inp.number("p95_ms")?,
        queue_depth: inp.count("queue_depth")?,
        load: inp.number("load")?,
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
    Ok(row_json(&row))
}

/// Lifecycle state → registry status of a fleet agent.
fn agent_status(state: AgentState) -> Status {
    match state {
        AgentState::Running => Status::Ok,
        AgentState::Starting | AgentState::Backoff => Status::Degraded,
        _ => Status::Down,
    }
}

/// The registry view of one fleet agent, if it passes `filter`.
fn agent_json(ctx: &Registry, r: &AgentRecord, filter: &Filter) -> Option<Value> {
    let caps = ctx.table.catalog.get(&r.name).map(|s| s.handles.clone()).unwrap_or_default();
    let status = agent_status(r.state);
    if !filter.matches(ServiceType::Agent, Role::Production, status, &r.name, &caps) {
        return None;
    }
    Some(json!({
        "id": format!("{MANAGED_PREFIX}{}", r.name), "name": r.name, "type": ServiceType::Agent,
        "role": Role::Production, "url": null, "caps": caps,
        "labels": {"group": r.group, "runtime": r.runtime.as_str(), "essential": r.essential},
        "ctx_limit": null, "cost_hint_usd_per_1k": null, "heartbeat_interval_s": null, "ttl_s": null,
        "status": status, "state": r.state.as_str(), "last_heartbeat_ts": null, "registered_at": null,
        "p95_ms": null, "queue_depth": null, "load": null, "managed": true,
    }))
}

/// `registry.discover`: the registered services passing the filter, then
/// the fleet's agents passing it (unless `managed` says otherwise).
/// Returns `{"services": [ROW]}`.
///
/// # Errors
/// [`RegistryError::Invalid`]; [`RegistryError::Store`].
pub async fn discover(ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
    let empty = Value::Object(Map::new());
    let input = match input {
        Value::Null => &empty,
        Value::String(s) if s.trim().is_empty() => &empty,
        other => other,
    };
    let inp = Input::new("registry.discover", input, &["type", "role", "cap", "status", "name", "managed"])?;
    let filter = Filter {
        kind: inp.choice("type", ServiceType::parse, ServiceType::choices)?,
        role: inp.choice("role", Role::parse, Role::choices)?,
        status: inp.choice("status", Status::parse, Status::choices)?,
        name: inp.text("name")?.map(str::to_string),
        caps: inp.strings("cap")?,
    };
    let managed = match inp.get("managed") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(inp.invalid("managed", "must be true or false")),
    };
    let mut out = Vec::new();
    if managed != Some(true) {
        let f = filter.clone();
        let rows = ctx.store.call(move |conn| services::list(conn, &f)).await?;
        out.extend(rows.iter().map(row_json));
    }
    if managed != Some(false) {
        out.extend(ctx.table.snapshot().iter().filter_map(|r| agent_json(ctx, r, &filter)));
    }
    Ok(json!({"services": out}))
}

/// `registry.promote`: sets the role of a service; publishes
/// `registry.promoted`. Returns the row.
///
/// # Errors
/// [`RegistryError::Invalid`]; [`RegistryError::NoService`];
/// [`RegistryError::Managed`]; [`RegistryError::Store`].
pub async fn promote(ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
    let inp = Input::new("registry.promote", input, &["id", "role"])?;
    let id = inp.service_id()?.to_string();
    let role = inp
        .choice("role", Role::parse, Role::choices)?
        .ok_or_else(|| inp.invalid("role", format!("missing; must be {}", Role::choices())))?;
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
    Ok(row_json(&row))
}

/// `registry.deregister`: deletes a service; publishes
/// `registry.deregistered` (reason `requested`) when there was one.
/// Returns `{"deregistered": bool}`.
///
/// # Errors
/// [`RegistryError::Invalid`]/[`RegistryError::Shape`];
/// [`RegistryError::Managed`]; [`RegistryError::Store`].
pub async fn deregister(ctx: &Registry, input: &Value) -> Result<Value, RegistryError> {
    let wrapped;
    let input = match input {
        Value::String(s) => {
            wrapped = json!({"id": s});
            &wrapped
        }
        other => other,
    };
    let inp = Input::new("registry.deregister", input, &["id"])?;
    let id = inp.service_id()?.to_string();
    let key = id.clone();
    let removed = ctx.store.call(move |conn| services::delete(conn, &key)).await?;
    if let Some(s) = &removed {
        tracing::info!(service = %id, name = %s.name, "service deregistered on request");
        ctx.events.emit(Event::RegistryDeregistered { service: id, name: s.name.clone(), reason: "requested".into() });
    }
    Ok(json!({"deregistered": removed.is_some()}))
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

    #[test]
    fn input_errors_name_the_field() {
        let v = json!({"name": "x", "type": "robot"});
        let inp = Input::new("registry.register", &v, &["name", "type"]).unwrap();
        let e = inp.choice("type", ServiceType::parse, ServiceType::choices).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input of registry.register: field \"type\": must be model, tool or agent (got \"robot\")"
        );
        let e = Input::new("registry.register", &json!({"nam": 1}), &["name"]).err().unwrap();
        assert!(e.to_string().contains("field \"nam\": unknown field"), "{e}");
        assert_eq!(RegistryError::NoService("x".into()).to_task_error().code, ErrorCode::InvalidField);
    }

    #[test]
    fn agents_map_lifecycle_states_to_statuses() {
        assert_eq!(agent_status(AgentState::Running), Status::Ok);
        assert_eq!(agent_status(AgentState::Backoff), Status::Degraded);
        assert_eq!(agent_status(AgentState::Dormant), Status::Down);
        assert_eq!(agent_status(AgentState::Fatal), Status::Down);
    }
}
