//! Tokens on every door (issue 18): the API tokens AuthenticationAgent
//! manages and the check every door (the ZeroMQ ROUTER, HTTP, `/v1`,
//! `/mcp`) runs before it accepts a request.
//!
//! - A token is `av_` + 64 hex digits (256 random bits); a web-UI session
//!   id is `avs_` + the same. Neither is ever stored, logged or
//!   published: the store keeps HMAC-SHA-256 of it under the daemon's key
//!   (`data_dir/auth.key`, 32 random bytes, mode 0600, made on first use).
//!   Random tokens need no password hashing; one HMAC (about a microsecond)
//!   and a hash-map lookup verify one.
//! - Scopes: `read` (GET routes, `/metrics`), `tasks` (run tasks), `admin`
//!   (the types of `auth.admin_tasks`, agent starts and stops, registry
//!   writes). Every valid token may read; `admin` grants everything.
//! - When: the doors ask for a token as soon as one exists (stored, in
//!   `auth.tokens_file` or in `AGENTVISOR_TOKEN`); with none, loopback
//!   listeners stay open and a non-loopback listener refuses to start
//!   ([`Auth::refusal`]).
//! - Failures (no, unknown, expired or revoked credentials) are logged,
//!   counted in `agentvisor_auth_failures_total{door,reason}` and
//!   rate-limited per client (`governor`'s GCRA: `auth.failure_burst` in a
//!   row, then `auth.failures_per_minute`); a client past it is answered
//!   `rate_limited` with no check until a cell frees up.
//! - The daemon keeps the token table in memory and re-reads it every
//!   `auth.reload_secs` (tokens made or revoked by the CLI, which writes the
//!   store directly); changes made by task apply at once.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, KeyInit as _, Mac as _};
use parking_lot::{Mutex, RwLock};
use rand::RngCore as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::config::catalog::Catalog;
use crate::config::{AuthSettings, Settings};
use crate::core::{ErrorCode, TaskError};
use crate::store::tokens::{self, SessionRow, TokenRow};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// The environment variable of one more static token (the daemon) and of
/// the client's token (the CLI).
pub const TOKEN_ENV: &str = "AGENTVISOR_TOKEN";
/// Prefix of API tokens.
const TOKEN_PREFIX: &str = "av_";
/// Prefix of web-UI session ids.
const SESSION_PREFIX: &str = "avs_";
/// Shortest static token accepted, characters.
const MIN_STATIC_CHARS: usize = 32;

type Hash = [u8; 32];

/// A permission a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET routes and metrics (every valid token has it).
    Read,
    /// Running tasks of every type not in `auth.admin_tasks`.
    Tasks,
    /// Everything: admin task types, agent starts and stops, registry writes.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Tasks => "tasks",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "read" => Some(Scope::Read),
            "tasks" => Some(Scope::Tasks),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Parses `tasks,read` into scopes.
///
/// # Errors
/// The first unknown name, or an empty list.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let s = Scope::parse(part).ok_or_else(|| format!("unknown scope {part:?} (tasks, admin, read)"))?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err("no scope given (tasks, admin, read)".into());
    }
    Ok(out)
}

fn join_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Who a request comes from, once its credential checked out (a shared
/// view of the token's entry: no copy on the hot path).
#[derive(Debug, Clone)]
pub struct Principal(Arc<Entry>);

impl Principal {
    /// The token's public id.
    pub fn token_id(&self) -> &str {
        &self.0.token_id
    }

    /// The token's subject: becomes the task envelope's `user`.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// Its scopes.
    pub fn scopes(&self) -> &[Scope] {
        &self.0.scopes
    }

    /// Whether the scopes allow `need` (`admin` allows all; any token reads).
    pub fn allows(&self, need: Scope) -> bool {
        need == Scope::Read || self.scopes().contains(&need) || self.scopes().contains(&Scope::Admin)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    token_id: String,
    subject: String,
    scopes: Vec<Scope>,
    expires_at: Option<f64>,
    revoked: bool,
}

impl Entry {
    fn from_row(row: &TokenRow) -> Entry {
        Entry {
            token_id: row.token_id.clone(),
            subject: row.subject.clone(),
            scopes: parse_scopes(&row.scopes).unwrap_or_default(),
            expires_at: row.expires_at,
            revoked: row.revoked_at.is_some(),
        }
    }

    /// `None` when usable at `now`, else why not.
    fn invalid(&self, now: f64) -> Option<Reason> {
        if self.revoked {
            Some(Reason::Revoked)
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some(Reason::Expired)
        } else {
            None
        }
    }
}

#[derive(Default)]
struct Snapshot {
    tokens: HashMap<Hash, Arc<Entry>>,
    by_id: HashMap<String, Arc<Entry>>,
    /// Session hash → (token id, expiry).
    sessions: HashMap<Hash, (String, f64)>,
    /// Until when (Unix seconds) some token is usable: the doors ask for one
    /// before then; `f64::INFINITY` for a token without expiry, 0 for none.
    usable_until: f64,
}

impl Snapshot {
    fn insert(&mut self, hash: Hash, entry: Entry) {
        if !entry.revoked {
            self.usable_until = self.usable_until.max(entry.expires_at.unwrap_or(f64::INFINITY));
        }
        let entry = Arc::new(entry);
        self.by_id.insert(entry.token_id.clone(), entry.clone());
        self.tokens.insert(hash, entry);
    }

    fn any_usable(&self, now: f64) -> bool {
        now < self.usable_until
    }
}

/// Why a credential was refused (the `reason` label and the verify answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No credential at all.
    Missing,
    /// Not a token (or session) of this daemon.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Unknown => "unknown",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
        }
    }
}

/// A new token, as `auth.token_create` and `agentvisor token create` show
/// it (the only time the token itself is seen).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Created {
    /// The token's public id (for listing and revoking).
    pub token_id: String,
    /// The secret token (256 random bits); stored only as a keyed hash.
    pub token: String,
    /// Who the token is for.
    pub subject: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Unix seconds; `null`: never.
    pub expires_at: Option<f64>,
}

/// The answer of `auth.token_verify`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Verified {
    /// Whether the token may be used now.
    pub valid: bool,
    /// The token's id (known tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Its subject (known tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its scopes (known tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// Unix seconds; `null`: never (known tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<f64>>,
    /// Why an invalid token is invalid: `unknown`, `expired` or `revoked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// A web-UI session (`auth.session`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Session {
    /// The session cookie's value (`avs_...`); stored only as a keyed hash.
    pub session_id: String,
    /// The token's subject.
    pub subject: String,
    /// The token's scopes.
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub expires_at: f64,
}

/// The keyed hash of tokens: HMAC-SHA-256 under the daemon's key.
#[derive(Clone)]
pub struct Hasher(Hmac<Sha256>);

impl Hasher {
    /// The hasher of the key in `data_dir/auth.key`, made (32 random bytes,
    /// mode 0600) when absent.
    ///
    /// # Errors
    /// The key file cannot be read or made, or is not 32 bytes.
    pub fn open(data_dir: &Path) -> std::io::Result<Hasher> {
        let key = load_key(&data_dir.join("auth.key"))?;
        Ok(Hasher(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length")))
    }

    fn hash(&self, secret: &str) -> Hash {
        let mut mac = self.0.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new token row for `subject` (and the token, shown once).
    pub fn new_token(
        &self,
        subject: &str,
        scopes: &[Scope],
        expires_in_secs: Option<f64>,
        name: Option<String>,
    ) -> (Created, TokenRow) {
        let now = unix_now();
        let token = random_secret(TOKEN_PREFIX);
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let token_id = format!("tok_{}", hex::encode(id));
        let expires_at = expires_in_secs.map(|s| now + s);
        let row = TokenRow {
            token_id: token_id.clone(),
            hash: self.hash(&token).to_vec(),
            subject: subject.to_string(),
            scopes: join_scopes(scopes),
            name,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        (Created { token_id, token, subject: subject.to_string(), scopes: scopes.to_vec(), expires_at }, row)
    }
}

fn load_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = |path: &Path| -> std::io::Result<[u8; 32]> {
        let bytes = std::fs::read(path)?;
        bytes.try_into().map_err(|b: Vec<u8>| {
            std::io::Error::other(format!("{} holds {} bytes, not a 32-byte key", path.display(), b.len()))
        })
    };
    if path.exists() {
        return read(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        // Another process (the CLI, a second daemon) made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e),
    }
}

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Errors of [`Auth::open`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file cannot be read or made.
    #[error("auth key: {0}")]
    Key(#[from] std::io::Error),
    /// The tokens file or `AGENTVISOR_TOKEN` is unreadable or holds a bad line.
    #[error("{0}")]
    Static(String),
    /// The token table cannot be read.
    #[error("token table: {0}")]
    Store(#[from] StoreError),
}

/// The doors' check and the token table (AuthenticationAgent's state).
pub struct Auth {
    hasher: Hasher,
    store: Store,
    settings: AuthSettings,
    statics: Vec<(Hash, Entry)>,
    snapshot: RwLock<Snapshot>,
    limiter: DefaultKeyedRateLimiter<String>,
    blocked: Mutex<HashMap<String, Instant>>,
    admin_tasks: HashSet<String>,
    metrics: Metrics,
}

impl Auth {
    /// The key, the static tokens (`auth.tokens_file`, `AGENTVISOR_TOKEN`)
    /// and the stored ones.
    ///
    /// # Errors
    /// [`AuthError`] for an unreadable key or tokens file, a static token
    /// shorter than 32 characters or with unknown scopes, or the store.
    pub async fn open(settings: &Settings, store: Store, metrics: Metrics) -> Result<Auth, AuthError> {
        let hasher = Hasher::open(&settings.data_dir)?;
        let auth_settings = settings.auth.clone();
        let mut lines = Vec::new();
        if let Some(path) = &auth_settings.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AuthError::Static(format!("auth.tokens_file {}: {e}", path.display())))?;
            lines.extend(
                text.lines().enumerate().map(|(i, l)| (format!("{}:{}", path.display(), i + 1), l.to_string())),
            );
        }
        if let Ok(token) = std::env::var(TOKEN_ENV)
            && !token.trim().is_empty()
        {
            lines.push((TOKEN_ENV.to_string(), token));
        }
        let statics = static_tokens(&hasher, &lines)?;
        let per_minute = NonZeroU32::new(auth_settings.failures_per_minute.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(auth_settings.failure_burst.max(1)).expect("at least 1");
        let auth = Auth {
            hasher,
            store,
            admin_tasks: auth_settings.admin_tasks.iter().cloned().collect(),
            settings: auth_settings,
            statics,
            snapshot: RwLock::new(Snapshot::default()),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            blocked: Mutex::new(HashMap::new()),
            metrics,
        };
        auth.reload().await?;
        Ok(auth)
    }

    /// Re-reads the token and session tables (expired sessions are deleted).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn reload(&self) -> Result<(), StoreError> {
        let now = unix_now();
        let (rows, sessions) =
            self.store.call(move |conn| Ok((tokens::all(conn)?, tokens::live_sessions(conn, now)?))).await?;
        let mut snap = Snapshot::default();
        for (hash, entry) in &self.statics {
            snap.insert(*hash, entry.clone());
        }
        for row in &rows {
            if let Ok(hash) = Hash::try_from(row.hash.as_slice()) {
                snap.insert(hash, Entry::from_row(row));
            }
        }
        for s in sessions {
            if let Ok(hash) = Hash::try_from(s.hash.as_slice()) {
                snap.sessions.insert(hash, (s.token_id, s.expires_at));
            }
        }
        *self.snapshot.write() = snap;
        Ok(())
    }

    /// Re-reads the tables every `auth.reload_secs` until the store closes
    /// (the daemon stopped).
    pub fn spawn_reloader(self: &Arc<Self>) {
        let auth = Arc::downgrade(self);
        let every = Duration::from_secs_f64(self.settings.reload_secs.max(0.05));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(auth) = auth.upgrade() else { return };
                match auth.reload().await {
                    Ok(()) => {}
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot re-read the token table; keeping the last one"),
                }
            }
        });
    }

    /// Whether the doors ask for a token: one exists that is usable now.
    pub fn required(&self) -> bool {
        self.snapshot.read().any_usable(unix_now())
    }

    /// Why the daemon must not start with `settings`, if it must not: a
    /// listener reachable from another host while no token exists, or the
    /// PUB socket off loopback without `auth.public_events`.
    pub fn refusal(&self, settings: &Settings) -> Option<String> {
        let exposed = settings.exposed_listeners();
        if let Some((key, addr)) = exposed.iter().find(|(k, _)| *k == "bus.events")
            && !settings.auth.public_events
        {
            return Some(format!(
                "{key} = {addr} is reachable from other hosts, and the PUB socket cannot authenticate \
                 subscribers: bind it to 127.0.0.1 or ipc:// (remote clients use the authenticated HTTP \
                 routes), or set auth.public_events: true"
            ));
        }
        if !exposed.is_empty() && !self.required() {
            let list = exposed.iter().map(|(k, a)| format!("{k} = {a}")).collect::<Vec<_>>().join(", ");
            return Some(format!(
                "{list} is reachable from other hosts but no API token exists: create one with \
                 `agentvisor token create --subject <who> --scopes tasks,read` (or admin), or set \
                 {TOKEN_ENV} / auth.tokens_file, or listen on 127.0.0.1"
            ));
        }
        None
    }

    /// The scope a task needs: `admin` for the types of `auth.admin_tasks`
    /// (for a task naming only its `agent`: when that agent handles one),
    /// else `tasks`; a task wrapping another (`input.task` with `type` or
    /// `agent`, as `async.submit` and `schedule.add` take) needs the
    /// wrapped task's scope too.
    pub fn task_scope(&self, catalog: &Catalog, task_type: Option<&str>, agent: Option<&str>, input: &Value) -> Scope {
        let admin = |task_type: Option<&str>, agent: Option<&str>| match (task_type, agent) {
            (Some(t), _) => self.admin_tasks.contains(t),
            (None, Some(a)) => {
                catalog.agents.get(a).is_some_and(|s| s.handles.iter().any(|t| self.admin_tasks.contains(t)))
            }
            (None, None) => false,
        };
        let wrapped = input
            .get("task")
            .filter(|t| t.is_object())
            .is_some_and(|t| admin(t.get("type").and_then(Value::as_str), t.get("agent").and_then(Value::as_str)));
        if wrapped || admin(task_type, agent) { Scope::Admin } else { Scope::Tasks }
    }

    /// The check of every door: `Ok(None)` while no token exists (open
    /// doors), `Ok(Some(principal))` for a usable credential (token or
    /// session id) with the scope `need`.
    ///
    /// # Errors
    /// `unauthorized` (no, unknown, expired or revoked credential),
    /// `forbidden` (a usable one without `need`), `rate_limited` (this
    /// `client` failed too often). Each is logged and counted by `door`.
    /// `client` names the caller (made only when needed: a refusal, or
    /// while some client is cut off).
    pub fn check(
        &self,
        door: &'static str,
        client: &dyn Fn() -> String,
        credential: Option<&str>,
        need: Scope,
    ) -> Result<Option<Principal>, TaskError> {
        let now = unix_now();
        let found = {
            let snap = self.snapshot.read();
            if !snap.any_usable(now) {
                return Ok(None);
            }
            credential.map(|c| self.lookup(&snap, c, now))
        };
        if let Some((client, until)) = self.blocked_until(client) {
            return Err(self.refuse(door, &client, "rate_limited", rate_limited(until)));
        }
        let reason = match found {
            None => Reason::Missing,
            Some(Err(reason)) => reason,
            Some(Ok(p)) if p.allows(need) => return Ok(Some(p)),
            Some(Ok(p)) => {
                let e = TaskError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the token {} of {} lacks the {} scope this needs",
                        p.token_id(),
                        p.subject(),
                        need.as_str()
                    ),
                );
                return Err(self.refuse(door, &client(), "scope", e));
            }
        };
        let client = client();
        let e = TaskError::new(ErrorCode::Unauthorized, unauthorized_message(reason));
        if let Err(not_until) = self.limiter.check_key(&client) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock()));
            let until = Instant::now() + wait;
            self.blocked.lock().insert(client.clone(), until);
            return Err(self.refuse(door, &client, reason.as_str(), rate_limited(until)));
        }
        Err(self.refuse(door, &client, reason.as_str(), e))
    }

    /// The client and until when it is cut off, if it is.
    fn blocked_until(&self, client: &dyn Fn() -> String) -> Option<(String, Instant)> {
        let mut blocked = self.blocked.lock();
        if blocked.is_empty() {
            return None;
        }
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        let client = client();
        blocked.get(&client).copied().map(|until| (client, until))
    }

    fn refuse(&self, door: &'static str, client: &str, reason: &str, e: TaskError) -> TaskError {
        self.metrics.auth_failures.with_label_values(&[door, reason]).inc();
        tracing::info!(door, client, reason, code = e.code.as_str(), "request refused: {}", e.message);
        e
    }

    fn lookup(&self, snap: &Snapshot, credential: &str, now: f64) -> Result<Principal, Reason> {
        let hash = self.hasher.hash(credential.trim());
        if credential.starts_with(SESSION_PREFIX) {
            let (token_id, expires_at) = snap.sessions.get(&hash).ok_or(Reason::Unknown)?;
            if *expires_at <= now {
                return Err(Reason::Expired);
            }
            let entry = snap.by_id.get(token_id).ok_or(Reason::Revoked)?;
            return entry.invalid(now).map_or_else(|| Ok(Principal(entry.clone())), Err);
        }
        let entry = snap.tokens.get(&hash).ok_or(Reason::Unknown)?;
        entry.invalid(now).map_or_else(|| Ok(Principal(entry.clone())), Err)
    }

    /// `auth.token_create`: a new stored token.
    ///
    /// # Errors
    /// `invalid_field` for an empty subject or no scope; `internal` when the
    /// store fails.
    pub async fn create(
        &self,
        subject: &str,
        scopes: &[Scope],
        expires_in_secs: Option<f64>,
        name: Option<String>,
    ) -> Result<Created, TaskError> {
        if subject.trim().is_empty() || scopes.is_empty() {
            return Err(TaskError::new(ErrorCode::InvalidField, "a token needs a subject and at least one scope"));
        }
        let (created, row) = self.hasher.new_token(subject, scopes, expires_in_secs, name);
        self.store.call(move |conn| tokens::insert(conn, &row)).await.map_err(store_error)?;
        self.reload().await.map_err(store_error)?;
        Ok(created)
    }

    /// `auth.token_revoke`: `Ok(true)` revoked now, `Ok(false)` already revoked.
    ///
    /// # Errors
    /// `not_found` (no such id), `invalid_field` (a static token: remove
    /// its line instead), `internal` (store).
    pub async fn revoke(&self, token_id: &str) -> Result<bool, TaskError> {
        if self.statics.iter().any(|(_, e)| e.token_id == token_id) {
            return Err(TaskError::new(
                ErrorCode::InvalidField,
                format!("{token_id} is a static token (auth.tokens_file or {TOKEN_ENV}): remove it there"),
            ));
        }
        let id = token_id.to_string();
        let done = self.store.call(move |conn| tokens::revoke(conn, &id, unix_now())).await.map_err(store_error)?;
        let Some(revoked) = done else {
            return Err(TaskError::new(ErrorCode::NotFound, format!("no token with id {token_id}")));
        };
        self.reload().await.map_err(store_error)?;
        Ok(revoked)
    }

    /// `auth.token_verify`.
    pub fn verify(&self, token: &str) -> Verified {
        let snap = self.snapshot.read();
        let hash = self.hasher.hash(token.trim());
        match snap.tokens.get(&hash) {
            None => Verified {
                valid: false,
                token_id: None,
                subject: None,
                scopes: None,
                expires_at: None,
                reason: Some(Reason::Unknown),
            },
            Some(e) => {
                let reason = e.invalid(unix_now());
                Verified {
                    valid: reason.is_none(),
                    token_id: Some(e.token_id.clone()),
                    subject: Some(e.subject.clone()),
                    scopes: Some(e.scopes.clone()),
                    expires_at: Some(e.expires_at),
                    reason,
                }
            }
        }
    }

    /// `auth.session`: a web-UI session for a usable token, lasting
    /// `ttl_secs` (default `auth.session_ttl_secs`), never past the token.
    ///
    /// # Errors
    /// `unauthorized` for a token that is not usable; `internal` (store).
    pub async fn session(&self, token: &str, ttl_secs: Option<f64>) -> Result<Session, TaskError> {
        let now = unix_now();
        let principal = {
            let snap = self.snapshot.read();
            let hash = self.hasher.hash(token.trim());
            match snap.tokens.get(&hash) {
                None => Err(Reason::Unknown),
                Some(e) => e.invalid(now).map_or_else(|| Ok((Principal(e.clone()), e.expires_at)), Err),
            }
        };
        let (principal, token_expiry) =
            principal.map_err(|r| TaskError::new(ErrorCode::Unauthorized, unauthorized_message(r)))?;
        let ttl = ttl_secs.unwrap_or(self.settings.session_ttl_secs);
        let expires_at = token_expiry.map_or(now + ttl, |t| t.min(now + ttl));
        let session_id = random_secret(SESSION_PREFIX);
        let row = SessionRow {
            hash: self.hasher.hash(&session_id).to_vec(),
            token_id: principal.token_id().to_string(),
            expires_at,
        };
        self.store.call(move |conn| tokens::insert_session(conn, &row, now)).await.map_err(store_error)?;
        self.reload().await.map_err(store_error)?;
        Ok(Session {
            session_id,
            subject: principal.subject().to_string(),
            scopes: principal.scopes().to_vec(),
            expires_at,
        })
    }
}

fn unauthorized_message(reason: Reason) -> String {
    match reason {
        Reason::Missing => "this door needs an API token: the envelope's `token` field on the bus, \
                            `Authorization: Bearer <token>` over HTTP (the CLI's --token or AGENTVISOR_TOKEN)"
            .into(),
        Reason::Unknown => "the token is not valid here".into(),
        Reason::Expired => "the token (or session) has expired".into(),
        Reason::Revoked => "the token has been revoked".into(),
    }
}

fn rate_limited(until: Instant) -> TaskError {
    let secs = until.saturating_duration_since(Instant::now()).as_secs_f64().ceil().max(1.0);
    TaskError::new(ErrorCode::RateLimited, format!("too many failed attempts from this client: retry in {secs:.0} s"))
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("token store: {e}"))
}

/// The static tokens of `lines` (`(where, line)`).
fn static_tokens(hasher: &Hasher, lines: &[(String, String)]) -> Result<Vec<(Hash, Entry)>, AuthError> {
    let mut out = Vec::new();
    for (at, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let token = parts.next().unwrap_or_default();
        if token.chars().count() < MIN_STATIC_CHARS {
            return Err(AuthError::Static(format!(
                "{at}: a static token needs at least {MIN_STATIC_CHARS} characters (e.g. `openssl rand -base64 32`)"
            )));
        }
        let subject = parts.next().unwrap_or("operator").to_string();
        let scopes = match parts.next() {
            Some(list) => parse_scopes(list).map_err(|e| AuthError::Static(format!("{at}: {e}")))?,
            None => vec![Scope::Tasks, Scope::Admin, Scope::Read],
        };
        let hash = hasher.hash(token);
        let token_id = format!("static_{}", hex::encode(&hash[..4]));
        out.push((hash, Entry { token_id, subject, scopes, expires_at: None, revoked: false }));
    }
    Ok(out)
}

/// `agentvisor token`: the token table of `data_dir`, read and written
/// directly (the daemon sees changes within `auth.reload_secs`).
pub mod offline {
    use super::*;

    fn open(data_dir: &Path) -> anyhow::Result<(Hasher, rusqlite::Connection)> {
        let hasher = Hasher::open(data_dir)?;
        std::fs::create_dir_all(data_dir)?;
        let conn = crate::store::open_connection(&data_dir.join("agentvisor.db"))?;
        Ok((hasher, conn))
    }

    /// Creates a token.
    ///
    /// # Errors
    /// The key or the store cannot be opened or written.
    pub fn create(
        data_dir: &Path,
        subject: &str,
        scopes: &[Scope],
        expires_in_secs: Option<f64>,
        name: Option<String>,
    ) -> anyhow::Result<Created> {
        let (hasher, conn) = open(data_dir)?;
        let (created, row) = hasher.new_token(subject, scopes, expires_in_secs, name);
        tokens::insert(&conn, &row)?;
        Ok(created)
    }

    /// Every stored token (never the secret).
    ///
    /// # Errors
    /// The store cannot be opened or read.
    pub fn list(data_dir: &Path) -> anyhow::Result<Vec<TokenRow>> {
        let conn = crate::store::open_connection(&data_dir.join("agentvisor.db"))?;
        Ok(tokens::all(&conn)?)
    }

    /// Revokes a token: `Some(true)` now, `Some(false)` already, `None` unknown id.
    ///
    /// # Errors
    /// The store cannot be opened or written.
    pub fn revoke(data_dir: &Path, token_id: &str) -> anyhow::Result<Option<bool>> {
        let conn = crate::store::open_connection(&data_dir.join("agentvisor.db"))?;
        Ok(tokens::revoke(&conn, token_id, unix_now())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_admin_allows_all() {
        assert_eq!(parse_scopes("tasks, read").unwrap(), vec![Scope::Tasks, Scope::Read]);
        assert!(parse_scopes("root").is_err());
        assert!(parse_scopes("").is_err());
        let p = |s: &[Scope]| {
            Principal(Arc::new(Entry {
                token_id: "t".into(),
                subject: "s".into(),
                scopes: s.to_vec(),
                expires_at: None,
                revoked: false,
            }))
        };
        assert!(p(&[Scope::Admin]).allows(Scope::Tasks));
        assert!(p(&[Scope::Read]).allows(Scope::Read));
        assert!(!p(&[Scope::Read]).allows(Scope::Tasks));
        assert!(p(&[Scope::Tasks]).allows(Scope::Read));
        assert!(!p(&[Scope::Tasks]).allows(Scope::Admin));
    }

    #[test]
    fn static_lines_need_length_and_known_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hasher::open(dir.path()).unwrap();
        let long = "x".repeat(40);
        let ok =
            static_tokens(&h, &[("f:1".into(), format!("{long} ci tasks")), ("f:2".into(), "# note".into())]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!((ok[0].1.subject.as_str(), ok[0].1.scopes.clone()), ("ci", vec![Scope::Tasks]));
        assert!(static_tokens(&h, &[("f:1".into(), "short".into())]).is_err());
        assert!(static_tokens(&h, &[("f:1".into(), format!("{long} ci root"))]).is_err());
    }

    #[test]
    fn the_key_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let a = Hasher::open(dir.path()).unwrap().hash("av_x");
        let b = Hasher::open(dir.path()).unwrap().hash("av_x");
        assert_eq!(a, b, "the same key on the second open");
        let mode = std::fs::metadata(dir.path().join("auth.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
