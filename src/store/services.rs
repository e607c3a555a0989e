//! The `services` table of ServiceRegistry: external services (models,
//! tools, agents outside the fleet) that registered themselves, their
//! heartbeats and their health, and the sweep of the heartbeat monitor.
//!
//! Where it sits: [`crate::agents::builtin::service_registry`] runs these
//! functions on the store thread; nothing else writes the table. The columns
//! follow the earlier system's `services` table (`service_id` became `id`);
//! times are Unix seconds (`REAL`), as in the other tables, instead of its
//! ISO text, and `heartbeat_interval_s`/`ttl_s` are `REAL` so tests can use
//! sub-second intervals.
//!
//! Filtering ([`Filter`]) happens in Rust over all rows: a registry holds
//! tens to hundreds of services, and the same predicate must also apply to
//! the fleet's own agents, which are not rows of this table.

use rusqlite::{Connection, OptionalExtension, Row, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::StoreError;

/// Schema of this concern, applied once as a versioned migration (4).
pub(crate) const MIGRATION: &str = "CREATE TABLE services (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('model', 'tool', 'agent')),
        role TEXT NOT NULL CHECK (role IN ('production', 'staging', 'canary', 'experimental')),
        url TEXT,
        caps TEXT NOT NULL DEFAULT '[]',
        labels TEXT NOT NULL DEFAULT '{}',
        ctx_limit INTEGER,
        cost_hint_usd_per_1k REAL,
        heartbeat_interval_s REAL NOT NULL,
        ttl_s REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'degraded', 'down')),
        last_heartbeat_ts REAL NOT NULL,
        registered_at REAL NOT NULL,
        p95_ms REAL,
        queue_depth INTEGER,
        load REAL
    );";

/// What a service is (the earlier system's `type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    /// A model server (an OpenAI-compatible endpoint, an embedder, ...).
    Model,
    /// A tool (search, code execution, ...).
    Tool,
    /// An agent (outside the fleet, or one of the fleet's own in `discover`).
    Agent,
}

/// Deployment role (the earlier system's `role` column); `registry.promote`
/// changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves real traffic.
    Production,
    /// Pre-production.
    Staging,
    /// Takes a slice of real traffic.
    Canary,
    /// Newly registered, not trusted yet (the default).
    Experimental,
}

/// Health of a service (the earlier system's `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Heartbeating and healthy.
    Ok,
    /// Heartbeating, but reports itself degraded.
    Degraded,
    /// Missed two heartbeats (set by the monitor, never by the service).
    Down,
}

/// The closed value sets above: parsing from and printing to the wire and
/// the table.
macro_rules! wire_enum {
    ($t:ident { $($v:ident = $s:literal),+ $(,)? }) => {
        impl $t {
            /// Every value, in wire order.
            pub(crate) const ALL: &'static [$t] = &[$($t::$v),+];

            /// The lowercase wire and column value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s),+
                }
            }

            /// The value named `s`, `None` for anything else.
            pub fn parse(s: &str) -> Option<$t> {
                match s {
                    $($s => Some($t::$v),)+
                    _ => None,
                }
            }

            /// `a, b or c`: the accepted values, for error messages.
            pub fn choices() -> String {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => names.join(""),
                }
            }
        }
    };
}

wire_enum!(ServiceType { Model = "model", Tool = "tool", Agent = "agent" });
wire_enum!(Role { Production = "production", Staging = "staging", Canary = "canary", Experimental = "experimental" });
wire_enum!(Status { Ok = "ok", Degraded = "degraded", Down = "down" });

/// One row of the `services` table; serialised as the registry's JSON row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    /// Unique id (the client's, or a generated UUID).
    pub id: String,
    /// Name, e.g. `llama-3.1-8b`; several services may share one.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// Deployment role.
    pub role: Role,
    /// Where it answers, when it has an address.
    pub url: Option<String>,
    /// Capabilities (`infer`, `classify`, `embed`, ...).
    pub caps: Vec<String>,
    /// Free-form labels (a JSON object).
    pub labels: Map<String, Value>,
    /// Context window, tokens.
    pub ctx_limit: Option<u32>,
    /// Cost estimate, USD per 1,000 tokens.
    pub cost_hint_usd_per_1k: Option<f64>,
    /// Promised time between heartbeats, seconds.
    pub heartbeat_interval_s: f64,
    /// Time without a heartbeat after which the monitor deregisters it, seconds.
    pub ttl_s: f64,
    /// Health.
    pub status: Status,
    /// Unix time of the last heartbeat (or of the registration), seconds.
    pub last_heartbeat_ts: f64,
    /// Unix time of the first registration under this id, seconds.
    pub registered_at: f64,
    /// 95th percentile latency the service reports, milliseconds.
    pub p95_ms: Option<f64>,
    /// Requests waiting at the service, as it reports.
    pub queue_depth: Option<u32>,
    /// Load the service reports (its own scale, usually 0.0–1.0).
    pub load: Option<f64>,
}

/// Health figures one heartbeat carries; `None` keeps the stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beat {
    /// New status (`ok` or `degraded`).
    pub status: Status,
    /// 95th percentile latency, milliseconds.
    pub p95_ms: Option<f64>,
    /// Requests waiting.
    pub queue_depth: Option<u32>,
    /// Load.
    pub load: Option<f64>,
}

/// A `discover` query; every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only services of this type.
    pub kind: Option<ServiceType>,
    /// Only services in this role.
    pub role: Option<Role>,
    /// Only services in this status.
    pub status: Option<Status>,
    /// Only services of this name.
    pub name: Option<String>,
    /// Only services having every one of these capabilities.
    pub caps: Vec<String>,
}

impl Filter {
    /// `true` when a service with these fields passes the filter (also used
    /// for the fleet's own agents, which are not rows).
    pub fn matches(&self, kind: ServiceType, role: Role, status: Status, name: &str, caps: &[String]) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.role.is_none_or(|r| r == role)
            && self.status.is_none_or(|s| s == status)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.caps.iter().all(|c| caps.contains(c))
    }

    /// [`Filter::matches`] for a row.
    pub(crate) fn matches_service(&self, s: &Service) -> bool {
        self.matches(s.kind, s.role, s.status, &s.name, &s.caps)
    }
}

/// What one sweep of the heartbeat monitor did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sweep {
    /// Services newly marked `down` (2 heartbeats missed), as they are now.
    pub marked_down: Vec<Service>,
    /// Services deleted (their `ttl_s` passed), as they were.
    pub removed: Vec<Service>,
    /// The shortest heartbeat interval among the services left, seconds
    /// (`None`: the table is empty); the monitor ticks by it.
    pub min_interval_s: Option<f64>,
}

/// Heartbeats missed before the monitor marks a service `down` (the earlier
/// system's rule).
pub(crate) const MISSED_BEATS_DOWN: f64 = 2.0;

/// Default `ttl_s` in heartbeat intervals: deregistered after 3 missed beats
/// (the earlier system's rule).
pub(crate) const MISSED_BEATS_TTL: f64 = 3.0;

const COLUMNS: &str = "id, name, type, role, url, caps, labels, ctx_limit, cost_hint_usd_per_1k, heartbeat_interval_s,
    ttl_s, status, last_heartbeat_ts, registered_at, p95_ms, queue_depth, load";

/// A text column that must hold one value of a closed set; anything else
/// is a conversion error naming the column.
fn enum_col<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unexpected value {text:?} in services").into(),
        )
    })
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Service> {
    let caps: String = row.get(5)?;
    let labels: String = row.get(6)?;
    Ok(Service {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: enum_col(row, 2, ServiceType::parse)?,
        role: enum_col(row, 3, Role::parse)?,
        url: row.get(4)?,
        caps: serde_json::from_str(&caps).unwrap_or_default(),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        ctx_limit: row.get(7)?,
        cost_hint_usd_per_1k: row.get(8)?,
        heartbeat_interval_s: row.get(9)?,
        ttl_s: row.get(10)?,
        status: enum_col(row, 11, Status::parse)?,
        last_heartbeat_ts: row.get(12)?,
        registered_at: row.get(13)?,
        p95_ms: row.get(14)?,
        queue_depth: row.get(15)?,
        load: row.get(16)?,
    })
}

/// Inserts `s`, or replaces every field of the row with its id except
/// `registered_at` (a service registering again after its own restart).
/// Returns `true` when a row was replaced.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn upsert(conn: &Connection, s: &Service) -> Result<bool, StoreError> {
    let existed = get(conn, &s.id)?.is_some();
    conn.execute(
        &format!(
            "INSERT INTO services ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, type = excluded.type, role = excluded.role, url = excluded.url,
                caps = excluded.caps, labels = excluded.labels, ctx_limit = excluded.ctx_limit,
                cost_hint_usd_per_1k = excluded.cost_hint_usd_per_1k,
                heartbeat_interval_s = excluded.heartbeat_interval_s, ttl_s = excluded.ttl_s,
                status = excluded.status, last_heartbeat_ts = excluded.last_heartbeat_ts,
                p95_ms = excluded.p95_ms, queue_depth = excluded.queue_depth, load = excluded.load"
        ),
        params![
            s.id,
            s.name,
            s.kind.as_str(),
            s.role.as_str(),
            s.url,
            Value::from(s.caps.clone()).to_string(),
            Value::Object(s.labels.clone()).to_string(),
            s.ctx_limit,
            s.cost_hint_usd_per_1k,
            s.heartbeat_interval_s,
            s.ttl_s,
            s.status.as_str(),
            s.last_heartbeat_ts,
            s.registered_at,
            s.p95_ms,
            s.queue_depth,
            s.load,
        ],
    )?;
    Ok(existed)
}

/// The service `id`, if registered.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn get(conn: &Connection, id: &str) -> Result<Option<Service>, StoreError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM services WHERE id = ?1"), [id], from_row).optional()?)
}

/// Every service passing `filter`, by name then id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn list(conn: &Connection, filter: &Filter) -> Result<Vec<Service>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM services ORDER BY name, id"))?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        let s = row?;
        if filter.matches_service(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Records a heartbeat of `id` at `now` (Unix seconds): its status and
/// figures (those given), and `last_heartbeat_ts`. Returns the status
/// before and the row after; `None` when no service has that id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn heartbeat(conn: &Connection, id: &str, beat: &Beat, now: f64) -> Result<Option<(Status, Service)>, StoreError> {
    let Some(before) = get(conn, id)? else { return Ok(None) };
    conn.execute(
        "UPDATE services SET status = ?2, last_heartbeat_ts = ?3, p95_ms = COALESCE(?4, p95_ms),
            queue_depth = COALESCE(?5, queue_depth), load = COALESCE(?6, load)
         WHERE id = ?1",
        params![id, beat.status.as_str(), now, beat.p95_ms, beat.queue_depth, beat.load],
    )?;
    Ok(get(conn, id)?.map(|after| (before.status, after)))
}

/// Sets the role of `id`. Returns the role before and the row after;
/// `None` when no service has that id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn set_role(conn: &Connection, id: &str, role: Role) -> Result<Option<(Role, Service)>, StoreError> {
    let Some(before) = get(conn, id)? else { return Ok(None) };
    conn.execute("UPDATE services SET role = ?2 WHERE id = ?1", params![id, role.as_str()])?;
    Ok(get(conn, id)?.map(|after| (before.role, after)))
}

/// Deletes `id`; returns the row it deleted, `None` when there was none.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn delete(conn: &Connection, id: &str) -> Result<Option<Service>, StoreError> {
    let Some(before) = get(conn, id)? else { return Ok(None) };
    conn.execute("DELETE FROM services WHERE id = ?1", [id])?;
    Ok(Some(before))
}

/// One pass of the heartbeat monitor at `now` (Unix seconds). The silence
/// of a service is `now - max(last_heartbeat_ts, since)`: `since` is when
/// the monitor started, so services that could not heartbeat while the
/// registry was down get a fresh allowance. A service silent for more than
/// [`MISSED_BEATS_DOWN`] intervals becomes `down`; one silent for more than
/// its `ttl_s` is deleted (after being marked `down`, when both happen in
/// one pass). Run it inside a transaction.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn sweep(conn: &Connection, now: f64, since: f64) -> Result<Sweep, StoreError> {
    let mut out = Sweep::default();
    for s in list(conn, &Filter::default())? {
        let silent = now - s.last_heartbeat_ts.max(since);
        let mut s = s;
        if s.status != Status::Down && silent > MISSED_BEATS_DOWN * s.heartbeat_interval_s {
            conn.execute("UPDATE services SET status = 'down' WHERE id = ?1", [&s.id])?;
            s.status = Status::Down;
            out.marked_down.push(s.clone());
        }
        if silent > s.ttl_s {
            conn.execute("DELETE FROM services WHERE id = ?1", [&s.id])?;
            out.removed.push(s);
        } else {
            out.min_interval_s =
                Some(out.min_interval_s.map_or(s.heartbeat_interval_s, |m| m.min(s.heartbeat_interval_s)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, interval: f64, at: f64) -> Service {
        Service {
            id: id.into(),
            name: format!("svc-{id}"),
            kind: ServiceType::Model,
            role: Role::Experimental,
            url: Some("http://127.0.0.1:8050".into()),
            caps: vec!["infer".into(), "classify".into()],
            labels: Map::from_iter([("zone".to_string(), Value::from("a"))]),
            ctx_limit: Some(32_768),
            cost_hint_usd_per_1k: Some(0.0),
            heartbeat_interval_s: interval,
            ttl_s: MISSED_BEATS_TTL * interval,
            status: Status::Ok,
            last_heartbeat_ts: at,
            registered_at: at,
            p95_ms: None,
            queue_depth: None,
            load: None,
        }
    }

    #[test]
    fn rows_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentvisor.db");
        let a = service("a", 10.0, 1000.0);
        {
            let conn = crate::store::open_connection(&path).unwrap();
            assert!(!upsert(&conn, &a).unwrap());
        }
        let conn = crate::store::open_connection(&path).unwrap();
        assert_eq!(get(&conn, "a").unwrap(), Some(a.clone()));
        assert_eq!(get(&conn, "nope").unwrap(), None);
        // Registering again replaces the fields but keeps registered_at.
        let again = Service { role: Role::Staging, registered_at: 2000.0, last_heartbeat_ts: 2000.0, ..a.clone() };
        assert!(upsert(&conn, &again).unwrap());
        let got = get(&conn, "a").unwrap().unwrap();
        assert_eq!((got.role, got.registered_at, got.last_heartbeat_ts), (Role::Staging, 1000.0, 2000.0));
    }

    #[test]
    fn heartbeat_role_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        upsert(&conn, &service("a", 10.0, 1000.0)).unwrap();
        let beat = Beat { status: Status::Degraded, p95_ms: Some(120.0), queue_depth: Some(3), load: None };
        let (before, after) = heartbeat(&conn, "a", &beat, 1005.0).unwrap().unwrap();
        assert_eq!((before, after.status, after.last_heartbeat_ts), (Status::Ok, Status::Degraded, 1005.0));
        assert_eq!((after.p95_ms, after.queue_depth, after.load), (Some(120.0), Some(3), None));
        // Figures left out keep their value.
        let beat = Beat { status: Status::Ok, p95_ms: None, queue_depth: None, load: Some(0.5) };
        let (_, after) = heartbeat(&conn, "a", &beat, 1010.0).unwrap().unwrap();
        assert_eq!((after.p95_ms, after.queue_depth, after.load), (Some(120.0), Some(3), Some(0.5)));
        assert_eq!(heartbeat(&conn, "nope", &beat, 1010.0).unwrap(), None);

        let (before, after) = set_role(&conn, "a", Role::Production).unwrap().unwrap();
        assert_eq!((before, after.role), (Role::Experimental, Role::Production));
        assert_eq!(set_role(&conn, "nope", Role::Canary).unwrap(), None);

        assert_eq!(delete(&conn, "a").unwrap().map(|s| s.id), Some("a".to_string()));
        assert_eq!(delete(&conn, "a").unwrap(), None);
        assert_eq!(get(&conn, "a").unwrap(), None);
    }

    #[test]
    fn list_filters_by_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        let a = service("a", 10.0, 1000.0);
        let b = Service {
            kind: ServiceType::Tool,
            role: Role::Production,
            caps: vec!["search".into()],
            ..service("b", 10.0, 1000.0)
        };
        upsert(&conn, &a).unwrap();
        upsert(&conn, &b).unwrap();
        heartbeat(&conn, "b", &Beat { status: Status::Degraded, p95_ms: None, queue_depth: None, load: None }, 1001.0)
            .unwrap();
        let ids = |f: Filter| list(&conn, &f).unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(Filter::default()), ["a", "b"]);
        assert_eq!(ids(Filter { kind: Some(ServiceType::Tool), ..Default::default() }), ["b"]);
        assert_eq!(ids(Filter { role: Some(Role::Experimental), ..Default::default() }), ["a"]);
        assert_eq!(ids(Filter { status: Some(Status::Degraded), ..Default::default() }), ["b"]);
        assert_eq!(ids(Filter { name: Some("svc-a".into()), ..Default::default() }), ["a"]);
        assert_eq!(ids(Filter { caps: vec!["infer".into(), "classify".into()], ..Default::default() }), ["a"]);
        assert_eq!(
            ids(Filter { caps: vec!["infer".into(), "search".into()], ..Default::default() }),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sweep_marks_down_after_two_intervals_and_removes_after_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        upsert(&conn, &service("a", 10.0, 1000.0)).unwrap();
        upsert(&conn, &service("b", 60.0, 1000.0)).unwrap();

        let s = sweep(&conn, 1019.0, 0.0).unwrap();
        assert!(s.marked_down.is_empty() && s.removed.is_empty());
        assert_eq!(s.min_interval_s, Some(10.0));

        let s = sweep(&conn, 1021.0, 0.0).unwrap();
        assert_eq!(s.marked_down.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.marked_down[0].status, Status::Down);
        assert_eq!(get(&conn, "a").unwrap().unwrap().status, Status::Down);
        // Down once: the next pass does not report it again.
        assert!(sweep(&conn, 1025.0, 0.0).unwrap().marked_down.is_empty());

        let s = sweep(&conn, 1031.0, 0.0).unwrap();
        assert_eq!(s.removed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(get(&conn, "a").unwrap(), None);
        assert_eq!(s.min_interval_s, Some(60.0));

        // Silence counts from `since` when the monitor started after the
        // last heartbeat (a registry restart).
        let s = sweep(&conn, 1500.0, 1400.0).unwrap();
        assert!(s.marked_down.is_empty() && s.removed.is_empty(), "{s:?}");
        let s = sweep(&conn, 1530.0, 1400.0).unwrap();
        assert_eq!(s.marked_down.len(), 1);
        assert!(s.removed.is_empty());
        assert_eq!(s.min_interval_s, Some(60.0));
    }

    #[test]
    fn sweep_reports_down_then_removed_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        upsert(&conn, &service("a", 1.0, 1000.0)).unwrap();
        let s = sweep(&conn, 1010.0, 0.0).unwrap();
        assert_eq!((s.marked_down.len(), s.removed.len(), s.min_interval_s), (1, 1, None));
        assert_eq!(s.removed[0].status, Status::Down);
    }

    #[test]
    fn choices_read_as_a_sentence() {
        assert_eq!(ServiceType::choices(), "model, tool or agent");
        assert_eq!(Status::parse("down"), Some(Status::Down));
        assert_eq!(Role::parse("Production"), None);
    }
}
