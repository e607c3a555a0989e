//! The resource ledger (ResourceManager's state, DESIGN §13): what the
//! machine has (CPU cores, host memory, GPUs, GPU memory, a port range) and
//! who holds what. One ledger per daemon, shared by ResourceManager (its
//! tasks), the model manager (each loaded model's memory) and process agents
//! (their spec's `resources:`).
//!
//! Where it sits: in the store layer, so that the layers above it (models,
//! agents) can all reserve through it. It keeps the reservations in memory
//! under one lock and writes clients' reservations through to SQLite before
//! answering (table `resource_reservations`); agents' and models'
//! reservations live in memory only, since they are taken again when their
//! holder starts. At open, stale rows (past their TTL) are deleted with a
//! `resource.expired` event.
//!
//! Requests that do not fit are denied naming what is short, or wait up to
//! their `wait_seconds` in one FIFO queue: a release grants waiters from the
//! head while the head fits, and a new request never overtakes a waiter.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::params;
use serde::Serialize;
use tokio::sync::oneshot;

use super::{Store, StoreError};
use crate::config::ResourceSettings;
use crate::core::{Event, unix_time};
use crate::events::EventBus;
use crate::telemetry::metrics::Metrics;

/// Migration 6: the clients' reservations.
pub(crate) const MIGRATION: &str = "CREATE TABLE resource_reservations (
    id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_bytes INTEGER NOT NULL,
    gpu INTEGER NOT NULL,
    gpu_memory_bytes INTEGER NOT NULL,
    ports TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    ttl_seconds REAL
);
CREATE INDEX resource_reservations_holder ON resource_reservations(holder);";

/// The resource names, in the order of every listing and metric label.
pub const RESOURCES: [&str; 5] = ["cpu", "memory_bytes", "gpu", "gpu_memory_bytes", "ports"];

/// Amounts of each resource, base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Amounts {
    /// CPU cores (fractional).
    pub cpu: f64,
    /// Host memory, bytes.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpu: u64,
    /// GPU memory, bytes.
    pub gpu_memory_bytes: u64,
    /// Ports (a count).
    pub ports: u64,
}

/// Slack on CPU comparisons, cores: sums of fractions are not exact.
const CPU_EPSILON: f64 = 1e-9;

impl Amounts {
    /// Each resource as `(name, value)` in [`RESOURCES`] order, as f64.
    pub fn each(&self) -> [(&'static str, f64); 5] {
        [
            ("cpu", self.cpu),
            ("memory_bytes", self.memory_bytes as f64),
            ("gpu", self.gpu as f64),
            ("gpu_memory_bytes", self.gpu_memory_bytes as f64),
            ("ports", self.ports as f64),
        ]
    }

    /// Nothing asked.
    pub fn is_zero(&self) -> bool {
        self.each().iter().all(|(_, v)| *v == 0.0)
    }

    fn plus(&self, o: &Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu + o.cpu,
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            gpu: self.gpu.saturating_add(o.gpu),
            gpu_memory_bytes: self.gpu_memory_bytes.saturating_add(o.gpu_memory_bytes),
            ports: self.ports.saturating_add(o.ports),
        }
    }

    fn minus(&self, o: &Amounts) -> Amounts {
        Amounts {
            cpu: (self.cpu - o.cpu).max(0.0),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            gpu: self.gpu.saturating_sub(o.gpu),
            gpu_memory_bytes: self.gpu_memory_bytes.saturating_sub(o.gpu_memory_bytes),
            ports: self.ports.saturating_sub(o.ports),
        }
    }

    /// The resources of `ask` that `free` cannot cover.
    fn short_of(ask: &Amounts, free: &Amounts) -> Vec<Short> {
        ask.each()
            .into_iter()
            .zip(free.each())
            .filter(|((name, a), (_, f))| if *name == "cpu" { *a > *f + CPU_EPSILON } else { a > f })
            .map(|((resource, asked), (_, free))| Short { resource, asked, free, capacity: 0.0 })
            .collect()
    }
}

/// One resource a request is short of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Short {
    /// The resource name.
    pub resource: &'static str,
    /// Asked, base units.
    pub asked: f64,
    /// Free when asked, base units.
    pub free: f64,
    /// The machine's capacity, base units.
    pub capacity: f64,
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: asked {}, free {} of {}", self.resource, self.asked, self.free, self.capacity)
    }
}

/// What the machine has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// The amounts (`ports` = the size of the range).
    pub amounts: Amounts,
    /// The port range, inclusive.
    #[serde(skip)]
    pub port_range: (u16, u16),
}

impl Capacity {
    /// Detects CPU cores and host memory (`sysinfo`), GPUs and their memory
    /// (NVML; 0 without a driver), then applies the overrides of `settings`.
    /// Blocking (NVML init, a memory reading): call it off the runtime.
    pub fn detect(settings: &ResourceSettings) -> Capacity {
        let cpu = settings.cpu.unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
        let memory_bytes = settings.memory_bytes.unwrap_or_else(|| {
            // sysinfo fails only on an unsupported OS: no memory to grant then.
            sysinfo::System::new().map_or(0, |mut sys| {
                sys.refresh_memory();
                sys.total_memory()
            })
        });
        let (gpu, gpu_memory_bytes) = match (settings.gpu, settings.gpu_memory_bytes) {
            (Some(g), Some(m)) => (g, m),
            (g, m) => {
                let (dg, dm) = detect_gpus();
                (g.unwrap_or(dg), m.unwrap_or(dm))
            }
        };
        Capacity::new(cpu, memory_bytes, gpu, gpu_memory_bytes, settings.port_range)
    }

    /// A capacity of these amounts and the inclusive port range `[first, last]`.
    pub fn new(cpu: f64, memory_bytes: u64, gpu: u64, gpu_memory_bytes: u64, port_range: [u16; 2]) -> Capacity {
        let [first, last] = port_range;
        let ports = if last >= first { u64::from(last - first) + 1 } else { 0 };
        Capacity {
            amounts: Amounts { cpu: cpu.max(0.0), memory_bytes, gpu, gpu_memory_bytes, ports },
            port_range: (first, last),
        }
    }
}

/// GPUs and their total memory through NVML; `(0, 0)` without a driver.
fn detect_gpus() -> (u64, u64) {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else { return (0, 0) };
    let count = nvml.device_count().unwrap_or(0);
    let memory = (0..count)
        .filter_map(|i| nvml.device_by_index(i).ok())
        .filter_map(|d| d.memory_info().ok())
        .map(|m| m.total)
        .sum();
    (u64::from(count), memory)
}

/// Who takes a reservation: decides whether it is written to SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A `resource.request` task: persisted; survives a daemon restart.
    Client,
    /// A process agent's spec `resources:`: memory only.
    Agent,
    /// A local model loaded by the model manager: memory only.
    Model,
}

/// One reservation, as `resource.status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservation {
    /// `res-<uuid>`.
    pub reservation_id: String,
    /// Who holds it.
    pub holder: String,
    /// CPU cores.
    pub cpu: f64,
    /// Host memory, bytes.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpu: u64,
    /// GPU memory, bytes.
    pub gpu_memory_bytes: u64,
    /// The ports held.
    pub ports: Vec<u16>,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds; `None`: no expiry.
    pub expires_at: Option<f64>,
    /// The TTL it was granted with (renewals reuse it), seconds.
    #[serde(skip)]
    pub ttl_seconds: Option<f64>,
    /// Who took it.
    #[serde(skip)]
    pub owner: Owner,
}

impl Reservation {
    fn amounts(&self) -> Amounts {
        Amounts {
            cpu: self.cpu,
            memory_bytes: self.memory_bytes,
            gpu: self.gpu,
            gpu_memory_bytes: self.gpu_memory_bytes,
            ports: self.ports.len() as u64,
        }
    }
}

/// A request for resources.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Who will hold the reservation.
    pub holder: String,
    /// How much.
    pub amounts: Amounts,
    /// Expiry after the grant, seconds; `None`: never.
    pub ttl_seconds: Option<f64>,
    /// How long to wait (FIFO) when short; zero: deny at once.
    pub wait: Duration,
    /// Who asks.
    pub owner: Owner,
}

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The request does not fit (after its wait).
    #[error("denied for {holder}: {}", .short.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Denied {
        /// Who asked.
        holder: String,
        /// What is short; empty when it would fit but waiters are ahead.
        short: Vec<Short>,
        /// Waiters ahead of it when denied.
        ahead: usize,
    },
    /// No reservation with that id.
    #[error("no reservation {0}")]
    NotFound(String),
    /// SQLite failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The free, reserved and capacity figures and the reservations.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// What the machine has.
    pub capacity: Amounts,
    /// What is held.
    pub reserved: Amounts,
    /// What is left.
    pub free: Amounts,
    /// The reservations (all, or one holder's), oldest first.
    pub reservations: Vec<Reservation>,
    /// Requests waiting.
    pub waiting: usize,
}

struct Waiter {
    id: u64,
    ask: Ask,
    since: Instant,
    tx: oneshot::Sender<Reservation>,
}

#[derive(Default)]
struct State {
    reserved: Amounts,
    reservations: BTreeMap<String, Reservation>,
    used_ports: BTreeSet<u16>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

/// The ledger; share it as `Arc<Ledger>`.
pub struct Ledger {
    state: Mutex<State>,
    capacity: Capacity,
    store: Store,
    events: EventBus,
    metrics: Metrics,
}

/// A queued SQLite write of the ledger.
type Write = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;

/// Work to finish outside the lock: rows to write, events to emit.
#[derive(Default)]
struct After {
    writes: Vec<Write>,
    events: Vec<Event>,
}

impl Ledger {
    /// The ledger of `capacity`: loads the reservations of `store`, deleting
    /// (with `resource.expired`) those past their TTL.
    ///
    /// # Errors
    /// [`StoreError`] when the table cannot be read.
    pub async fn open(
        store: Store,
        capacity: Capacity,
        events: EventBus,
        metrics: Metrics,
    ) -> Result<Ledger, StoreError> {
        let now = unix_time();
        let (live, stale) = store
            .call(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, holder, cpu, memory_bytes, gpu, gpu_memory_bytes, ports, created_at, expires_at, ttl_seconds
                     FROM resource_reservations ORDER BY created_at",
                )?;
                let rows = stmt.query_map([], |r| {
                    let ports: String = r.get(6)?;
                    Ok(Reservation {
                        reservation_id: r.get(0)?,
                        holder: r.get(1)?,
                        cpu: r.get(2)?,
                        memory_bytes: r.get::<_, i64>(3)? as u64,
                        gpu: r.get::<_, i64>(4)? as u64,
                        gpu_memory_bytes: r.get::<_, i64>(5)? as u64,
                        ports: serde_json::from_str(&ports).unwrap_or_default(),
                        created_at: r.get(7)?,
                        expires_at: r.get(8)?,
                        ttl_seconds: r.get(9)?,
                        owner: Owner::Client,
                    })
                })?;
                let all: Vec<Reservation> = rows.collect::<Result<_, _>>()?;
                drop(stmt);
                let (stale, live): (Vec<_>, Vec<_>) =
                    all.into_iter().partition(|r| r.expires_at.is_some_and(|e| e <= now));
                for r in &stale {
                    conn.execute("DELETE FROM resource_reservations WHERE id = ?1", params![r.reservation_id])?;
                }
                Ok((live, stale))
            })
            .await?;
        let ledger = Ledger { state: Mutex::new(State::default()), capacity, store, events, metrics };
        {
            let mut s = ledger.state.lock();
            for r in live {
                s.reserved = s.reserved.plus(&r.amounts());
                s.used_ports.extend(r.ports.iter().copied());
                s.reservations.insert(r.reservation_id.clone(), r);
            }
        }
        for r in stale {
            tracing::info!(reservation = %r.reservation_id, holder = %r.holder, "reservation expired while the daemon was down");
            ledger.events.emit(Event::ResourceExpired {
                reservation_id: r.reservation_id,
                holder: r.holder,
                expires_at: r.expires_at.unwrap_or(now),
            });
        }
        for (name, v) in ledger.capacity.amounts.each() {
            ledger.metrics.resource_capacity.with_label_values(&[name]).set(v);
        }
        ledger.publish_reserved();
        Ok(ledger)
    }

    /// What the machine has.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    fn publish_reserved(&self) {
        let (reserved, waiting) = {
            let s = self.state.lock();
            (s.reserved, s.waiters.len())
        };
        for (name, v) in reserved.each() {
            self.metrics.resource_reserved.with_label_values(&[name]).set(v);
        }
        self.metrics.resource_waiting.set(waiting as i64);
    }

    fn short(&self, ask: &Amounts, s: &State) -> Vec<Short> {
        let free = self.capacity.amounts.minus(&s.reserved);
        let mut short = Amounts::short_of(ask, &free);
        for sh in &mut short {
            sh.capacity = self.capacity.amounts.each().iter().find(|(n, _)| *n == sh.resource).map_or(0.0, |(_, v)| *v);
        }
        short
    }

    /// Grants `ask` in `s` (it fits): takes the ports, records it, queues
    /// its write and its event in `after`.
    fn grant(&self, s: &mut State, ask: Ask, waited: Duration, after: &mut After) -> Reservation {
        let (first, last) = self.capacity.port_range;
        let mut ports = Vec::new();
        if ask.amounts.ports > 0 {
            for p in first..=last {
                if !s.used_ports.contains(&p) {
                    ports.push(p);
                    if ports.len() as u64 == ask.amounts.ports {
                        break;
                    }
                }
            }
        }
        s.used_ports.extend(ports.iter().copied());
        let now = unix_time();
        let r = Reservation {
            reservation_id: format!("res-{}", uuid::Uuid::new_v4().simple()),
            holder: ask.holder,
            cpu: ask.amounts.cpu,
            memory_bytes: ask.amounts.memory_bytes,
            gpu: ask.amounts.gpu,
            gpu_memory_bytes: ask.amounts.gpu_memory_bytes,
            ports,
            created_at: now,
            expires_at: ask.ttl_seconds.map(|t| now + t),
            ttl_seconds: ask.ttl_seconds,
            owner: ask.owner,
        };
        s.reserved = s.reserved.plus(&r.amounts());
        s.reservations.insert(r.reservation_id.clone(), r.clone());
        if r.owner == Owner::Client {
            let row = r.clone();
            after.writes.push(Box::pin(self.store.enqueue(move |conn| {
                conn.execute(
                    "INSERT INTO resource_reservations
                     (id, holder, cpu, memory_bytes, gpu, gpu_memory_bytes, ports, created_at, expires_at, ttl_seconds)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        row.reservation_id,
                        row.holder,
                        row.cpu,
                        row.memory_bytes as i64,
                        row.gpu as i64,
                        row.gpu_memory_bytes as i64,
                        serde_json::to_string(&row.ports).unwrap_or_else(|_| "[]".into()),
                        row.created_at,
                        row.expires_at,
                        row.ttl_seconds
                    ],
                )?;
                Ok(())
            })));
        }
        after.events.push(Event::ResourceGranted {
            reservation_id: r.reservation_id.clone(),
            holder: r.holder.clone(),
            cpu: r.cpu,
            memory_bytes: r.memory_bytes,
            gpu: r.gpu,
            gpu_memory_bytes: r.gpu_memory_bytes,
            ports: r.ports.clone(),
            expires_at: r.expires_at,
            waited_seconds: waited.as_secs_f64(),
        });
        r
    }

    /// Removes reservation `id` in `s`, queueing its delete and event.
    fn remove(&self, s: &mut State, id: &str, why: Removal, after: &mut After) -> Option<Reservation> {
        let r = s.reservations.remove(id)?;
        s.reserved = s.reserved.minus(&r.amounts());
        for p in &r.ports {
            s.used_ports.remove(p);
        }
        if r.owner == Owner::Client {
            let id = r.reservation_id.clone();
            after.writes.push(Box::pin(self.store.enqueue(move |conn| {
                conn.execute("DELETE FROM resource_reservations WHERE id = ?1", params![id])?;
                Ok(())
            })));
        }
        after.events.push(match why {
            Removal::Expired => Event::ResourceExpired {
                reservation_id: r.reservation_id.clone(),
                holder: r.holder.clone(),
                expires_at: r.expires_at.unwrap_or_else(unix_time),
            },
            Removal::Released(reason) => {
                Event::ResourceReleased { reservation_id: r.reservation_id.clone(), holder: r.holder.clone(), reason }
            }
        });
        Some(r)
    }

    /// Grants waiters from the head of the queue while the head fits.
    fn settle(&self, s: &mut State, after: &mut After) {
        while let Some(head) = s.waiters.front() {
            if head.tx.is_closed() {
                s.waiters.pop_front();
                continue;
            }
            if !self.short(&head.ask.amounts, s).is_empty() {
                break;
            }
            let Some(w) = s.waiters.pop_front() else { break };
            let r = self.grant(s, w.ask, w.since.elapsed(), after);
            self.metrics.resource_requests.with_label_values(&["waited"]).inc();
            if let Err(r) = w.tx.send(r) {
                // The waiter gave up at this very moment: nobody holds it.
                self.remove(s, &r.reservation_id, Removal::Released("waiter_gone"), after);
            }
        }
    }

    /// Writes, then emits, then publishes the gauges.
    async fn finish(&self, after: After) -> Result<(), StoreError> {
        let mut result = Ok(());
        for w in after.writes {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "resource ledger write failed");
                result = Err(e);
            }
        }
        for e in after.events {
            self.events.emit(e);
        }
        self.publish_reserved();
        result
    }

    /// Grants `ask` when it fits and nobody waits; else waits up to
    /// `ask.wait` in the FIFO queue; else denies naming what is short. A
    /// client's reservation is in SQLite before this returns.
    ///
    /// # Errors
    /// [`LedgerError::Denied`]; [`LedgerError::Store`] when the write failed.
    pub async fn request(&self, ask: Ask) -> Result<Reservation, LedgerError> {
        let t0 = Instant::now();
        let mut after = After::default();
        let (holder, wait) = (ask.holder.clone(), ask.wait);
        enum Next {
            Granted(Reservation),
            Denied(Vec<Short>, usize),
            Wait(oneshot::Receiver<Reservation>, u64),
        }
        let next = {
            let mut s = self.state.lock();
            let short = self.short(&ask.amounts, &s);
            let ahead = s.waiters.len();
            if short.is_empty() && ahead == 0 {
                Next::Granted(self.grant(&mut s, ask, Duration::ZERO, &mut after))
            } else if wait.is_zero() || !self.short(&ask.amounts, &State::default()).is_empty() {
                Next::Denied(short, ahead)
            } else {
                let (tx, rx) = oneshot::channel();
                s.next_waiter += 1;
                let id = s.next_waiter;
                self.events.emit(Event::ResourceWaiting {
                    holder: holder.clone(),
                    ahead,
                    short: short.iter().map(|x| x.resource).collect(),
                });
                s.waiters.push_back(Waiter { id, ask, since: t0, tx });
                Next::Wait(rx, id)
            }
        };
        let (mut rx, id) = match next {
            Next::Granted(r) => {
                self.metrics.resource_requests.with_label_values(&["granted"]).inc();
                self.finish(after).await?;
                return Ok(r);
            }
            Next::Denied(short, ahead) => return Err(self.deny(holder, short, ahead, t0, "denied")),
            Next::Wait(rx, id) => (rx, id),
        };
        self.publish_reserved();
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(r)) => {
                self.publish_reserved();
                Ok(r)
            }
            _ => {
                let left = {
                    let mut s = self.state.lock();
                    let pos = s.waiters.iter().position(|w| w.id == id);
                    match pos.and_then(|i| s.waiters.remove(i)) {
                        Some(w) => {
                            let short = self.short(&w.ask.amounts, &s);
                            // Its leaving may unblock the ones behind it.
                            self.settle(&mut s, &mut after);
                            Some((short, pos.unwrap_or(0)))
                        }
                        None => None,
                    }
                };
                let Some((short, ahead)) = left else {
                    // Granted between the timeout and the lock.
                    if let Ok(r) = rx.try_recv() {
                        self.publish_reserved();
                        return Ok(r);
                    }
                    return Err(self.deny(holder, Vec::new(), 0, t0, "timed_out"));
                };
                self.finish(after).await?;
                Err(self.deny(holder, short, ahead, t0, "timed_out"))
            }
        }
    }

    fn deny(&self, holder: String, short: Vec<Short>, ahead: usize, t0: Instant, outcome: &str) -> LedgerError {
        self.metrics.resource_requests.with_label_values(&[outcome]).inc();
        tracing::info!(holder = %holder, short = ?short, ahead, "resource request denied");
        self.events.emit(Event::ResourceDenied {
            holder: holder.clone(),
            short: short.iter().map(|s| s.resource).collect(),
            waited_seconds: t0.elapsed().as_secs_f64(),
        });
        LedgerError::Denied { holder, short, ahead }
    }

    /// Grants `ask` now when it fits (no waiting, never persisted: for
    /// agents' and models' own reservations); `Err` names what is short.
    ///
    /// # Errors
    /// [`LedgerError::Denied`].
    pub fn reserve_now(&self, ask: Ask) -> Result<Reservation, LedgerError> {
        debug_assert!(ask.owner != Owner::Client, "clients' reservations are written through request()");
        let mut after = After::default();
        let mut s = self.state.lock();
        let short = self.short(&ask.amounts, &s);
        if !short.is_empty() {
            let ahead = s.waiters.len();
            drop(s);
            return Err(self.deny(ask.holder, short, ahead, Instant::now(), "denied"));
        }
        let r = self.grant(&mut s, ask, Duration::ZERO, &mut after);
        drop(s);
        self.metrics.resource_requests.with_label_values(&["granted"]).inc();
        self.emit_now(after);
        Ok(r)
    }

    /// Emits the events of `after` (its writes taken out) and the gauges.
    fn emit_now(&self, after: After) {
        for e in after.events {
            self.events.emit(e);
        }
        self.publish_reserved();
    }

    /// Releases every reservation of `holder` whatever its owner, with
    /// `reason`, synchronously for memory-only ones; the number released.
    /// Clients' rows are deleted in the background.
    pub fn release_holder_now(&self, holder: &str, reason: &'static str) -> usize {
        self.release_where_now(|r| r.holder == holder, reason)
    }

    /// Releases every memory-only reservation of `owner` (a crashed model
    /// scheduler's models); the number released.
    pub fn release_owned_now(&self, owner: Owner, reason: &'static str) -> usize {
        debug_assert!(owner != Owner::Client);
        self.release_where_now(|r| r.owner == owner, reason)
    }

    /// Releases every reservation `which` picks, with `reason`; the number
    /// released.
    fn release_where_now(&self, which: impl Fn(&Reservation) -> bool, reason: &'static str) -> usize {
        let mut after = After::default();
        let n = {
            let mut s = self.state.lock();
            let ids: Vec<String> =
                s.reservations.values().filter(|r| which(r)).map(|r| r.reservation_id.clone()).collect();
            for id in &ids {
                self.remove(&mut s, id, Removal::Released(reason), &mut after);
            }
            if !ids.is_empty() {
                self.settle(&mut s, &mut after);
            }
            ids.len()
        };
        if n > 0 || !after.events.is_empty() {
            self.emit_now_with_writes(after);
        }
        n
    }

    /// Emits the events of `after` now; its writes finish in the background.
    fn emit_now_with_writes(&self, mut after: After) {
        let writes = std::mem::take(&mut after.writes);
        self.emit_now(after);
        if !writes.is_empty() {
            tokio::spawn(async move {
                for w in writes {
                    if let Err(e) = w.await {
                        tracing::error!(error = %e, "resource ledger write failed");
                    }
                }
            });
        }
    }

    /// Releases reservation `id`.
    ///
    /// # Errors
    /// [`LedgerError::NotFound`]; [`LedgerError::Store`].
    pub async fn release(&self, id: &str) -> Result<Reservation, LedgerError> {
        let mut after = After::default();
        let r = {
            let mut s = self.state.lock();
            let r = self
                .remove(&mut s, id, Removal::Released("requested"), &mut after)
                .ok_or_else(|| LedgerError::NotFound(id.to_string()))?;
            self.settle(&mut s, &mut after);
            r
        };
        self.finish(after).await?;
        Ok(r)
    }

    /// Releases every reservation of `holder` (clients' rows deleted before
    /// it returns); the number released.
    ///
    /// # Errors
    /// [`LedgerError::Store`].
    pub async fn release_holder(&self, holder: &str) -> Result<usize, LedgerError> {
        let mut after = After::default();
        let n = {
            let mut s = self.state.lock();
            let ids: Vec<String> =
                s.reservations.values().filter(|r| r.holder == holder).map(|r| r.reservation_id.clone()).collect();
            for id in &ids {
                self.remove(&mut s, id, Removal::Released("requested"), &mut after);
            }
            self.settle(&mut s, &mut after);
            ids.len()
        };
        self.finish(after).await?;
        Ok(n)
    }

    /// Renews reservation `id`: it expires `ttl_seconds` from now (default:
    /// its own TTL; a reservation without one stays without).
    ///
    /// # Errors
    /// [`LedgerError::NotFound`]; [`LedgerError::Store`].
    pub async fn renew(&self, id: &str, ttl_seconds: Option<f64>) -> Result<Reservation, LedgerError> {
        let mut after = After::default();
        let r = {
            let mut s = self.state.lock();
            let r = s.reservations.get_mut(id).ok_or_else(|| LedgerError::NotFound(id.to_string()))?;
            let ttl = ttl_seconds.or(r.ttl_seconds);
            r.ttl_seconds = ttl;
            r.expires_at = ttl.map(|t| unix_time() + t);
            let r = r.clone();
            if r.owner == Owner::Client {
                let (id, expires_at, ttl) = (r.reservation_id.clone(), r.expires_at, r.ttl_seconds);
                after.writes.push(Box::pin(self.store.enqueue(move |conn| {
                    conn.execute(
                        "UPDATE resource_reservations SET expires_at = ?2, ttl_seconds = ?3 WHERE id = ?1",
                        params![id, expires_at, ttl],
                    )?;
                    Ok(())
                })));
            }
            after.events.push(Event::ResourceRenewed {
                reservation_id: r.reservation_id.clone(),
                holder: r.holder.clone(),
                expires_at: r.expires_at,
            });
            r
        };
        self.finish(after).await?;
        Ok(r)
    }

    /// Expires the reservations past their TTL (with `resource.expired`)
    /// and grants the waiters that now fit; the number expired.
    ///
    /// # Errors
    /// [`LedgerError::Store`].
    pub async fn expire_due(&self) -> Result<usize, LedgerError> {
        let now = unix_time();
        let mut after = After::default();
        let n = {
            let mut s = self.state.lock();
            let due: Vec<String> = s
                .reservations
                .values()
                .filter(|r| r.expires_at.is_some_and(|e| e <= now))
                .map(|r| r.reservation_id.clone())
                .collect();
            for id in &due {
                self.remove(&mut s, id, Removal::Expired, &mut after);
            }
            if !due.is_empty() {
                self.settle(&mut s, &mut after);
            }
            due.len()
        };
        if n > 0 {
            self.finish(after).await?;
        }
        Ok(n)
    }

    /// Capacity, reserved, free and the reservations (of `holder`, or all).
    pub fn status(&self, holder: Option<&str>) -> Status {
        let s = self.state.lock();
        let mut reservations: Vec<Reservation> =
            s.reservations.values().filter(|r| holder.is_none_or(|h| r.holder == h)).cloned().collect();
        reservations.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Status {
            capacity: self.capacity.amounts,
            reserved: s.reserved,
            free: self.capacity.amounts.minus(&s.reserved),
            reservations,
            waiting: s.waiters.len(),
        }
    }
}

/// Why a reservation leaves the ledger.
#[derive(Clone, Copy)]
enum Removal {
    Expired,
    Released(&'static str),
}

/// The ledger's upkeep, run by ResourceManager while it runs: expires
/// reservations at their TTL (checked every `tick`) and releases the
/// reservations of a holder agent that stops, fails or goes fatal
/// (`agent.*` events). Runs until aborted.
pub async fn upkeep(ledger: Arc<Ledger>, tick: Duration) {
    let mut events = ledger.events.subscribe();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(e) = ledger.expire_due().await {
                    tracing::warn!(error = %e, "resource expiry failed");
                }
            }
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let reason = match ev.topic {
                        "agent.stopped" => "holder_stopped",
                        "agent.failed" => "holder_failed",
                        "agent.fatal" => "holder_fatal",
                        "agent.unavailable" => "holder_unavailable",
                        _ => continue,
                    };
                    if let Some(agent) = ev.str("agent") {
                        let n = ledger.release_holder_now(agent, reason);
                        if n > 0 {
                            tracing::info!(agent, released = n, reason, "holder agent down: reservations released");
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "resource upkeep lagged behind the event stream");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ledger(dir: &std::path::Path, cap: Capacity) -> (Arc<Ledger>, EventBus) {
        let metrics = Metrics::new();
        let events = EventBus::new(metrics.events.clone());
        let store = Store::open(dir).unwrap();
        (Arc::new(Ledger::open(store, cap, events.clone(), metrics).await.unwrap()), events)
    }

    fn ask(holder: &str, gpu_memory_bytes: u64, wait: f64) -> Ask {
        Ask {
            holder: holder.into(),
            amounts: Amounts { gpu_memory_bytes, ..Default::default() },
            ttl_seconds: None,
            wait: Duration::from_secs_f64(wait),
            owner: Owner::Client,
        }
    }

    #[tokio::test]
    async fn waiters_are_served_fifo_and_reservations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capacity::new(2.0, 1000, 1, 100, [30000, 30001]);
        let (l, _) = ledger(dir.path(), cap.clone()).await;
        let a = l.request(ask("a", 100, 0.0)).await.unwrap();
        let l2 = l.clone();
        let b = tokio::spawn(async move { l2.request(ask("b", 60, 5.0)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let l3 = l.clone();
        let c = tokio::spawn(async move { l3.request(ask("c", 40, 5.0)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(l.request(ask("d", 1, 0.0)).await, Err(LedgerError::Denied { ahead: 2, .. })));
        l.release(&a.reservation_id).await.unwrap();
        let (b, c) = (b.await.unwrap().unwrap(), c.await.unwrap().unwrap());
        assert!(b.created_at <= c.created_at);
        assert_eq!(l.status(None).free.gpu_memory_bytes, 0);
        let ports = Ask { amounts: Amounts { ports: 2, ..Default::default() }, ..ask("p", 0, 0.0) };
        assert_eq!(l.request(ports).await.unwrap().ports, vec![30000, 30001]);
        drop(l);
        let (l, _) = ledger(dir.path(), cap).await;
        let st = l.status(None);
        assert_eq!(st.reservations.len(), 3);
        assert_eq!(st.reserved.gpu_memory_bytes, 100);
        assert_eq!(st.reserved.ports, 2);
        assert!(matches!(l.release("res-nope").await, Err(LedgerError::NotFound(_))));
        assert_eq!(l.release_holder("b").await.unwrap(), 1);
        assert!(l.status(Some("c")).reservations[0].reservation_id == c.reservation_id);
    }

    #[tokio::test]
    async fn more_than_capacity_is_denied_at_once_naming_the_resource() {
        let dir = tempfile::tempdir().unwrap();
        let (l, _) = ledger(dir.path(), Capacity::new(2.0, 1000, 0, 0, [1, 0])).await;
        let big = Ask { amounts: Amounts { cpu: 2.5, gpu: 1, ..Default::default() }, ..ask("x", 0, 10.0) };
        match l.request(big).await {
            Err(LedgerError::Denied { short, .. }) => {
                assert_eq!(short.iter().map(|s| s.resource).collect::<Vec<_>>(), ["cpu", "gpu"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
