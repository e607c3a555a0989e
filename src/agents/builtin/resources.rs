//! ResourceManager: the one ledger of what the machine has and who holds
//! it (CPU cores, host memory, GPUs, GPU memory, ports). State: the
//! [`Ledger`] built by the composition root (clients' reservations in the
//! `resource_reservations` table); while the agent runs, its upkeep expires
//! reservations at their TTL and releases those of holder agents that stop
//! or crash.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `resource.request` | `{"holder", "cpu"?, "memory_bytes"?, "gpu"?, "gpu_memory_bytes"?, "ports"?, "mem_mb"?, "gpu_mem_mb"?, "ttl_seconds"?, "wait_seconds"?}` | the reservation, or `resource_denied` naming what is short |
//! | `resource.release` | `{"reservation_id"}` or `{"holder"}` | `{"released": n}` |
//! | `resource.renew` | `{"reservation_id", "ttl_seconds"?}` | the reservation with its new `expires_at` |
//! | `resource.status` | nothing, `{"holder"}` or the holder as text | `{"capacity", "reserved", "free", "reservations", "waiting"}` |
//!
//! Units as everywhere in the project: `cpu` in cores, memory in bytes; the
//! earlier system's `mem_mb` / `gpu_mem_mb` (MiB) are accepted as aliases.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Answer, Behaviour, Name, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::core::{ErrorCode, Task, TaskError};
use crate::store::resources::{self, Amounts, Ask, Ledger, LedgerError, Owner, Reservation, Status};
use crate::supervisor::StartError;

/// The agent's name.
pub(crate) const AGENT: &str = "ResourceManager";

/// How often the upkeep looks for expired reservations.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Bytes per MiB (the earlier system's `mem_mb`).
const MIB: f64 = 1024.0 * 1024.0;

/// Longest `wait_seconds`, seconds (one hour).
const MAX_WAIT_SECS: f64 = 3600.0;

/// The task types of ResourceManager.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<RequestInput, ReservationOutput>(
            "resource.request",
            "Reserves CPU, memory, GPU, GPU memory or ports for a holder: granted, denied naming what is short, or waits FIFO",
            || {
                vec![
                    json!({"holder": "my-batch-job", "cpu": 0.5, "memory_bytes": 1_048_576, "ttl_seconds": 60}),
                    json!({"holder": "my-batch-job", "cpu": 0.25, "mem_mb": 1, "wait_seconds": 0.1}),
                    json!({"holder": "LocalFineTunerAgent", "ports": 1, "ttl_seconds": 3600}),
                ]
            },
        ),
        rust_task::<ReleaseInput, ReleaseOutput>(
            "resource.release",
            "Releases a reservation by id, or every reservation of a holder",
            || vec![json!({"holder": "my-batch-job"}), json!({"holder": "LocalFineTunerAgent"})],
        ),
        rust_task::<RenewInput, ReservationOutput>(
            "resource.renew",
            "Renews a reservation's TTL from now (its own TTL, or a new one)",
            || vec![json!({"reservation_id": "res-0123456789abcdef", "ttl_seconds": 60})],
        ),
        rust_task::<OrShort<StatusInput>, StatusOutput>(
            "resource.status",
            "The ledger: capacity, reserved and free of each resource, and the reservations (optionally of one holder)",
            || vec![json!({}), json!({"holder": "ModelManagerSuite"}), json!("my-batch-job")],
        ),
    ]
}

/// The ResourceManager behaviour.
pub struct ResourceManager {
    /// The ledger (shared with the model manager and process agents).
    pub ledger: Arc<Ledger>,
    /// The upkeep task while the agent runs (aborted on stop).
    pub upkeep: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ResourceManager {
    /// The behaviour over `ledger`.
    pub fn new(ledger: Arc<Ledger>) -> ResourceManager {
        ResourceManager { ledger, upkeep: Mutex::new(None) }
    }
}

fn ledger_error(e: LedgerError) -> TaskError {
    match e {
        LedgerError::Denied { holder, short, ahead } if short.is_empty() => TaskError::new(
            ErrorCode::ResourceDenied,
            format!("{holder}: {ahead} request(s) are waiting ahead; ask with wait_seconds to queue behind them"),
        ),
        e @ LedgerError::Denied { .. } => TaskError::new(ErrorCode::ResourceDenied, e.to_string()),
        e @ LedgerError::NotFound(_) => TaskError::new(ErrorCode::NotFound, e.to_string()),
        LedgerError::Store(e) => TaskError::new(ErrorCode::Internal, format!("resource ledger: {e}")),
    }
}

fn invalid(message: impl Into<String>) -> TaskError {
    let e = TaskError::new(ErrorCode::InvalidField, message);
    tracing::info!(agent = AGENT, error = %e.message, "resource task refused");
    e
}

#[async_trait]
impl Behaviour for ResourceManager {
    async fn start(&self) -> Result<(), StartError> {
        let handle = tokio::spawn(resources::upkeep(self.ledger.clone(), EXPIRY_TICK));
        if let Some(old) = self.upkeep.lock().replace(handle) {
            old.abort();
        }
        Ok(())
    }

    async fn stop(&self) {
        if let Some(h) = self.upkeep.lock().take() {
            h.abort();
        }
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "resource.request" => {
                let input: RequestInput = decode(t, &task.input)?;
                let ask = input.ask()?;
                let r = self.ledger.request(ask).await.map_err(ledger_error)?;
                encode(t, ReservationOutput::from(r))
            }
            "resource.release" => {
                let released = match decode(t, &task.input)? {
                    ReleaseInput { reservation_id: Some(Name(id)), holder: None } => {
                        self.ledger.release(&id).await.map_err(ledger_error).map(|_| 1)?
                    }
                    ReleaseInput { reservation_id: None, holder: Some(Name(holder)) } => {
                        self.ledger.release_holder(&holder).await.map_err(ledger_error)?
                    }
                    _ => return Err(invalid("input of resource.release: give reservation_id or holder, not both")),
                };
                encode(t, ReleaseOutput { released })
            }
            "resource.renew" => {
                let RenewInput { reservation_id: Name(id), ttl_seconds } = decode(t, &task.input)?;
                let r = self.ledger.renew(&id, ttl_seconds.map(|p| p.0)).await.map_err(ledger_error)?;
                encode(t, ReservationOutput::from(r))
            }
            "resource.status" => {
                let OrShort(StatusInput { holder }) = decode(t, &task.input)?;
                encode(t, StatusOutput::from(self.ledger.status(holder.as_ref().map(|n| n.0.as_str()))))
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// A number of at least 0 (cores, MiB, seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NonNegative(pub f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(deserializer)?;
        if v >= 0.0 { Ok(NonNegative(v)) } else { Err(de::Error::custom(format!("must be at least 0, got {v}"))) }
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

/// A number above 0 (seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positive(pub f64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(deserializer)?;
        if v > 0.0 { Ok(Positive(v)) } else { Err(de::Error::custom(format!("must be above 0, got {v}"))) }
    }
}

impl JsonSchema for Positive {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Positive".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "exclusiveMinimum": 0})
    }
}

/// What to reserve, for whom, for how long. At least one amount; an
/// unknown resource name is an unknown field.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    /// Who holds the reservation: an agent name (its reservations are
    /// released when it stops or crashes), or any client name.
    holder: Name,
    /// CPU cores (fractional).
    #[serde(default)]
    cpu: Option<NonNegative>,
    /// Host memory, bytes.
    #[serde(default)]
    memory_bytes: Option<u64>,
    /// GPUs (a count).
    #[serde(default)]
    gpu: Option<u64>,
    /// GPU memory, bytes.
    #[serde(default)]
    gpu_memory_bytes: Option<u64>,
    /// Ports from the configured range (`resources.port_range`), a count;
    /// the grant names them.
    #[serde(default)]
    ports: Option<u64>,
    /// Alias of `memory_bytes` in MiB (the earlier system's name); not with `memory_bytes`.
    #[serde(default)]
    mem_mb: Option<NonNegative>,
    /// Alias of `gpu_memory_bytes` in MiB (the earlier system's name); not with `gpu_memory_bytes`.
    #[serde(default)]
    gpu_mem_mb: Option<NonNegative>,
    /// The reservation expires after this many seconds unless renewed; default: never.
    #[serde(default)]
    ttl_seconds: Option<Positive>,
    /// When short, wait up to this many seconds (FIFO, at most 3600) instead
    /// of being denied; default 0.
    #[serde(default)]
    wait_seconds: Option<NonNegative>,
}

impl RequestInput {
    fn ask(self) -> Result<Ask, TaskError> {
        let mib = |name: &str, v: NonNegative| -> Result<u64, TaskError> {
            let bytes = (v.0 * MIB).round();
            if bytes > u64::MAX as f64 {
                return Err(invalid(format!("input of resource.request at /{name}: too large")));
            }
            Ok(bytes as u64)
        };
        let memory_bytes = match (self.memory_bytes, self.mem_mb) {
            (Some(_), Some(_)) => return Err(invalid("input of resource.request: memory_bytes and mem_mb together")),
            (Some(b), None) => b,
            (None, Some(m)) => mib("mem_mb", m)?,
            (None, None) => 0,
        };
        let gpu_memory_bytes = match (self.gpu_memory_bytes, self.gpu_mem_mb) {
            (Some(_), Some(_)) => {
                return Err(invalid("input of resource.request: gpu_memory_bytes and gpu_mem_mb together"));
            }
            (Some(b), None) => b,
            (None, Some(m)) => mib("gpu_mem_mb", m)?,
            (None, None) => 0,
        };
        let amounts = Amounts {
            cpu: self.cpu.map_or(0.0, |c| c.0),
            memory_bytes,
            gpu: self.gpu.unwrap_or(0),
            gpu_memory_bytes,
            ports: self.ports.unwrap_or(0),
        };
        if amounts.is_zero() {
            return Err(invalid(
                "input of resource.request: ask for at least one of cpu, memory_bytes, gpu, gpu_memory_bytes, ports",
            ));
        }
        Ok(Ask {
            holder: self.holder.0,
            amounts,
            ttl_seconds: self.ttl_seconds.map(|t| t.0),
            wait: Duration::from_secs_f64(self.wait_seconds.map_or(0.0, |w| w.0.min(MAX_WAIT_SECS))),
            owner: Owner::Client,
        })
    }
}

/// One reservation.
#[derive(Serialize, JsonSchema)]
struct ReservationOutput {
    /// The reservation's id (`res-…`).
    reservation_id: String,
    /// Who holds it.
    holder: String,
    /// CPU cores.
    cpu: f64,
    /// Host memory, bytes.
    memory_bytes: u64,
    /// GPUs.
    gpu: u64,
    /// GPU memory, bytes.
    gpu_memory_bytes: u64,
    /// The port numbers held.
    ports: Vec<u16>,
    /// When it was granted, Unix seconds.
    created_at: f64,
    /// When it expires, Unix seconds; `null`: never.
    expires_at: Option<f64>,
}

impl From<Reservation> for ReservationOutput {
    fn from(r: Reservation) -> Self {
        ReservationOutput {
            reservation_id: r.reservation_id,
            holder: r.holder,
            cpu: r.cpu,
            memory_bytes: r.memory_bytes,
            gpu: r.gpu,
            gpu_memory_bytes: r.gpu_memory_bytes,
            ports: r.ports,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// The reservation to release, or the holder whose reservations to release
/// (exactly one of the two).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseInput {
    /// The reservation's id.
    #[serde(default)]
    reservation_id: Option<Name>,
    /// Every reservation of this holder.
    #[serde(default)]
    holder: Option<Name>,
}

/// How many were released.
#[derive(Serialize, JsonSchema)]
struct ReleaseOutput {
    /// Reservations released (0 for a holder that held none).
    released: usize,
}

/// The reservation to renew.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RenewInput {
    /// The reservation's id.
    reservation_id: Name,
    /// The new TTL from now, seconds; default: the TTL it was granted with.
    #[serde(default)]
    ttl_seconds: Option<Positive>,
}

/// Whose reservations to list.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StatusInput {
    /// Only this holder's reservations; default: all.
    #[serde(default)]
    holder: Option<Name>,
}

impl Shorthand for StatusInput {
    type Short = NameOrNull;
    const SHORT_DESCRIPTION: &'static str = "The holder's name alone, or nothing (null) for all.";
    fn expand(NameOrNull(holder): NameOrNull) -> StatusInput {
        StatusInput { holder }
    }
}

/// A name, or `null`.
struct NameOrNull(Option<Name>);

impl<'de> Deserialize<'de> for NameOrNull {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = NameOrNull;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameOrNull, E> {
                Name::deserialize(de::IntoDeserializer::<E>::into_deserializer(v)).map(|n| NameOrNull(Some(n)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NameOrNull, E> {
                Ok(NameOrNull(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<NameOrNull, E> {
                Ok(NameOrNull(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for NameOrNull {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "NameOrNull".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "null"], "minLength": 1, "pattern": "\\S"})
    }
}

/// Amounts of each resource.
#[derive(Serialize, JsonSchema)]
struct AmountsOutput {
    /// CPU cores.
    cpu: f64,
    /// Host memory, bytes.
    memory_bytes: u64,
    /// GPUs.
    gpu: u64,
    /// GPU memory, bytes.
    gpu_memory_bytes: u64,
    /// Ports (a count).
    ports: u64,
}

impl From<Amounts> for AmountsOutput {
    fn from(a: Amounts) -> Self {
        AmountsOutput {
            cpu: a.cpu,
            memory_bytes: a.memory_bytes,
            gpu: a.gpu,
            gpu_memory_bytes: a.gpu_memory_bytes,
            ports: a.ports,
        }
    }
}

/// The ledger.
#[derive(Serialize, JsonSchema)]
struct StatusOutput {
    /// What the machine has (detected, or `resources.*` in the config).
    capacity: AmountsOutput,
    /// What reservations hold.
    reserved: AmountsOutput,
    /// Capacity minus reserved.
    free: AmountsOutput,
    /// The reservations (all, or the holder's), oldest first.
    reservations: Vec<ReservationOutput>,
    /// Requests waiting for resources.
    waiting: usize,
}

impl From<Status> for StatusOutput {
    fn from(s: Status) -> Self {
        StatusOutput {
            capacity: s.capacity.into(),
            reserved: s.reserved.into(),
            free: s.free.into(),
            reservations: s.reservations.into_iter().map(Into::into).collect(),
            waiting: s.waiting,
        }
    }
}
