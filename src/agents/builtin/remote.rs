//! RemoteConnectorAgent: links to remote model backends, registry services
//! and other agentvisor nodes, with their health. State: the links, in
//! memory (links made by `remote.connect` are not kept across a restart;
//! the configured ones are made again).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `remote.connect` | `{"name", "kind", "url", "api_key_env"?}` | `LINK` |
//! | `remote.status` | `{"name"?, "check"?}` or nothing | `{"links": [LINK]}` |
//! | `remote.call` | `{"name", "task": {"type"? , "agent"?, "input"?, "priority"?, "deadline_ms"?}}` | `{"name", "status", "agent", "output", "route", "error", "latency_seconds"}` |
//!
//! `LINK` is `{"name", "kind", "url", "state", "latency_seconds",
//! "last_seen_at", "error", "configured", "breaker"}`. Kinds and their health check
//! (each within 5 s; `latency_seconds` is its round trip):
//!
//! - `backend`: an OpenAI-compatible API, `url` its base up to `/v1`;
//!   `GET {url}/models` with `Authorization: Bearer $api_key_env` when the
//!   variable is set (the key itself is never taken as input, kept or
//!   logged). Every enabled `openai` backend of the settings is a link from
//!   the start (`configured: true`, checked at the first `remote.status`
//!   with `check`), and its circuit-breaker state is HybridRouter's
//!   (`breaker`).
//! - `registry`: a registry or any service with a health route: `GET {url}/health`.
//! - `node`: another agentvisor daemon, `url` its RequestCoordinator
//!   ingress (`tcp://host:7201`); checked with a `coordinator.status`
//!   task over ZeroMQ. `remote.call` sends a task envelope to a node link
//!   and answers the remote reply.
//!
//! A link is `connected` when its last check answered (2xx for HTTP, any
//! reply for a node), else `down` with the error. State changes are
//! events (`remote.link`); every check is counted
//! (`agentvisor_remote_checks_total{kind,state}`).
//!
//! Errors: an unknown link is `not_found`; a `url` that does not fit its
//! kind, a `remote.call` to a link that is not a node, or a task naming
//! neither `type` nor `agent`, `invalid_field`; a node that does not answer
//! a call in time, `fetch_failed`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeromq::{Socket, SocketRecv, SocketSend};

use super::memory::Whole;
use super::{Answer, Behaviour, Name, Null, Text, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::config::{BackendKind, BackendSettings};
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::EventBus;
use crate::routing::router::RouterHandle;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "RemoteConnectorAgent";
/// Longest health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The task types of RemoteConnectorAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<ConnectInput, LinkView>(
            "remote.connect",
            "Opens (or re-opens) a link to another node, a remote OpenAI-compatible backend or a registry service, and checks it",
            || {
                vec![
                    json!({"name": "pc2", "kind": "node", "url": "tcp://127.0.0.1:7301"}),
                    json!({"name": "ollama", "kind": "backend", "url": "http://127.0.0.1:11434/v1", "api_key_env": "OLLAMA_API_KEY"}),
                ]
            },
        ),
        rust_task::<CallInput, CallOutput>(
            "remote.call",
            "Sends a task over a link to another node and answers its reply",
            || vec![json!({"name": "pc3", "task": {"type": "utils.echo", "input": "ping"}})],
        ),
        rust_task::<OrShort<StatusInput>, StatusOutput>(
            "remote.status",
            "The links with their health, latency and breaker state; optionally checked now",
            || vec![json!({}), json!({"name": "ollama", "check": true}), json!(null)],
        ),
    ]
}

/// What a link leads to.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LinkKind {
    /// Another agentvisor daemon (its ZeroMQ ingress).
    Node,
    /// An OpenAI-compatible API.
    Backend,
    /// A registry or a service with `GET /health`.
    Registry,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Node => "node",
            LinkKind::Backend => "backend",
            LinkKind::Registry => "registry",
        }
    }
}

/// A link's health.
#[derive(Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LinkState {
    /// The last check answered.
    Connected,
    /// The last check failed, or there was none yet.
    Down,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            LinkState::Connected => "connected",
            LinkState::Down => "down",
        }
    }
}

/// A link to open.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConnectInput {
    /// The link's name, e.g. `pc2`.
    name: Name,
    /// `node`, `backend` or `registry`.
    kind: LinkKind,
    /// The node's ingress (`tcp://host:port`) or the service's base URL (`http(s)://...`).
    url: Text,
    /// Name of the environment variable holding the credential (never the credential itself).
    #[serde(default)]
    api_key_env: Option<Name>,
}

/// Which links to show.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct StatusInput {
    /// Only this link.
    #[serde(default)]
    name: Option<Name>,
    /// Check the links now (default false: the last check's result).
    #[serde(default)]
    check: Option<bool>,
}

impl Shorthand for StatusInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: every link, as last checked.";
    fn expand(_: Null) -> StatusInput {
        StatusInput::default()
    }
}

/// A task to send to a node.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["type"]}, {"required": ["agent"]}]))]
struct RemoteTask {
    /// The task type.
    #[serde(rename = "type", default)]
    task_type: Option<Name>,
    /// The agent to send it to.
    #[serde(default)]
    agent: Option<Name>,
    /// The task's input (any JSON).
    #[serde(default)]
    input: Option<Value>,
    /// Priority 0–9.
    #[serde(default)]
    priority: Option<Whole<0, 9>>,
    /// Milliseconds the remote node has to answer, ≥ 1 (default: this
    /// daemon's `tasks.call_timeout_secs`).
    #[serde(default)]
    deadline_ms: Option<Whole<1, 86_400_000>>,
}

/// A call over a node link.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CallInput {
    /// The link (of kind `node`).
    name: Name,
    /// The task, as an envelope on the bus (type or agent, input, ...).
    task: RemoteTask,
}

/// A link and its health.
#[derive(Serialize, JsonSchema, Clone, Debug)]
struct LinkView {
    /// The link's name.
    name: String,
    /// `node`, `backend` or `registry`.
    kind: LinkKind,
    /// Where it leads.
    url: String,
    /// `connected` or `down`.
    state: LinkState,
    /// Round trip of the last check, seconds.
    #[schemars(range(min = 0.0))]
    latency_seconds: Option<f64>,
    /// When a check last answered, Unix seconds.
    last_seen_at: Option<f64>,
    /// Why it is down.
    error: Option<String>,
    /// A backend of the settings (not made by `remote.connect`).
    configured: bool,
    /// HybridRouter's circuit breaker of a configured backend (`closed`, `open`, `half_open`).
    breaker: Option<String>,
}

/// Links.
#[derive(Serialize, JsonSchema)]
struct StatusOutput {
    /// By name.
    links: Vec<LinkView>,
}

/// A remote reply.
#[derive(Serialize, JsonSchema)]
struct CallOutput {
    /// The link.
    name: String,
    /// The remote reply's status.
    status: RemoteStatus,
    /// The remote agent that answered.
    agent: Option<String>,
    /// The remote reply's output (any JSON).
    output: Value,
    /// The remote reply's route (its routing receipt), if any.
    route: Option<Map<String, Value>>,
    /// The remote error, if any.
    error: Option<RemoteError>,
    /// Round trip, seconds.
    #[schemars(range(min = 0.0))]
    latency_seconds: f64,
}

/// `ok` or `error`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum RemoteStatus {
    /// Answered.
    Ok,
    /// Failed remotely.
    Error,
}

/// The remote error.
#[derive(Serialize, JsonSchema)]
struct RemoteError {
    /// Its stable code.
    code: String,
    /// Its message.
    message: String,
}

/// A link.
struct Link {
    view: LinkView,
    api_key_env: Option<String>,
}

/// The RemoteConnectorAgent behaviour.
pub struct RemoteConnector {
    links: Mutex<BTreeMap<String, Link>>,
    client: reqwest::Client,
    router: RouterHandle,
    events: EventBus,
    metrics: Metrics,
    call_timeout: Duration,
}

impl RemoteConnector {
    /// The behaviour, with a link per enabled `openai` backend of `backends`.
    pub fn new(
        backends: &BTreeMap<String, BackendSettings>,
        router: RouterHandle,
        events: EventBus,
        metrics: Metrics,
        call_timeout: Duration,
    ) -> RemoteConnector {
        let links = backends
            .iter()
            .filter(|(_, b)| b.enabled && b.kind == BackendKind::Openai)
            .filter_map(|(name, b)| {
                let url = b.base_url.clone()?;
                let view = LinkView {
                    name: name.clone(),
                    kind: LinkKind::Backend,
                    url,
                    state: LinkState::Down,
                    latency_seconds: None,
                    last_seen_at: None,
                    error: Some("not checked yet".into()),
                    configured: true,
                    breaker: None,
                };
                Some((name.clone(), Link { view, api_key_env: b.api_key_env.clone() }))
            })
            .collect();
        RemoteConnector {
            links: Mutex::new(links),
            client: reqwest::Client::builder().connect_timeout(CHECK_TIMEOUT).build().unwrap_or_default(),
            router,
            events,
            metrics,
            call_timeout,
        }
    }

    /// Checks `kind` at `url`: the round trip, seconds, or why it failed.
    async fn probe(&self, kind: LinkKind, url: &str, api_key_env: Option<&str>) -> Result<f64, String> {
        let t0 = Instant::now();
        let check = async {
            match kind {
                LinkKind::Backend | LinkKind::Registry => {
                    let path = if kind == LinkKind::Backend { "models" } else { "health" };
                    let mut req = self.client.get(format!("{}/{path}", url.trim_end_matches('/')));
                    if let Some(key) = api_key_env.and_then(|v| std::env::var(v).ok()) {
                        req = req.bearer_auth(key);
                    }
                    let resp = req.send().await.map_err(|e| format!("GET /{path}: {}", without_url(&e)))?;
                    if resp.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("GET /{path}: HTTP {}", resp.status().as_u16()))
                    }
                }
                LinkKind::Node => {
                    let reply = node_call(url, json!({"type": "coordinator.status", "input": null})).await?;
                    if reply.get("status").is_some() {
                        Ok(())
                    } else {
                        Err("the node's reply is not a reply envelope".into())
                    }
                }
            }
        };
        match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(())) => Ok(t0.elapsed().as_secs_f64()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        }
    }

    /// Checks the link `name` and records the result.
    async fn check(&self, name: &str) {
        let Some((kind, url, key)) =
            self.links.lock().get(name).map(|l| (l.view.kind, l.view.url.clone(), l.api_key_env.clone()))
        else {
            return;
        };
        let result = self.probe(kind, &url, key.as_deref()).await;
        let state = if result.is_ok() { LinkState::Connected } else { LinkState::Down };
        self.metrics.remote_checks.with_label_values(&[kind.as_str(), state.as_str()]).inc();
        let mut links = self.links.lock();
        let Some(link) = links.get_mut(name) else { return };
        let before = (link.view.state, link.view.last_seen_at.is_some());
        match result {
            Ok(latency) => {
                link.view.latency_seconds = Some(latency);
                link.view.last_seen_at = Some(unix_time());
                link.view.error = None;
            }
            Err(e) => link.view.error = Some(e),
        }
        link.view.state = state;
        if before.0 != state || !before.1 {
            self.events.emit(Event::RemoteLink {
                name: name.into(),
                kind: kind.as_str(),
                state: state.as_str(),
                error: link.view.error.clone(),
            });
        }
    }

    /// The view of `name` with the router's breaker state.
    async fn views(&self, only: Option<&str>) -> Vec<LinkView> {
        let breakers: BTreeMap<String, String> = match self.router.status().await {
            Some(s) => s["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| Some((b["name"].as_str()?.to_string(), b["breaker"].as_str()?.to_string())))
                .collect(),
            None => BTreeMap::new(),
        };
        self.links
            .lock()
            .values()
            .filter(|l| only.is_none_or(|n| n == l.view.name))
            .map(|l| {
                let mut v = l.view.clone();
                if v.configured {
                    v.breaker = breakers.get(&v.name).cloned();
                }
                v
            })
            .collect()
    }
}

/// A reqwest error's text without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    if let Some(src) = std::error::Error::source(e) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    s
}

/// Sends `envelope` (an id is added) to the node at `endpoint` and waits
/// for its reply (streamed chunks skipped).
async fn node_call(endpoint: &str, mut envelope: Value) -> Result<Value, String> {
    let id = format!("remote-{}", uuid::Uuid::new_v4());
    envelope["id"] = json!(id);
    let mut s = zeromq::DealerSocket::new();
    s.connect(endpoint).await.map_err(|e| format!("connect {endpoint}: {e}"))?;
    let body = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    s.send(zeromq::ZmqMessage::from(body)).await.map_err(|e| format!("send: {e}"))?;
    loop {
        let msg = s.recv().await.map_err(|e| format!("receive: {e}"))?;
        let Some(frame) = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()) else { continue };
        let Ok(reply) = serde_json::from_slice::<Value>(&frame) else { continue };
        if reply.get("event").is_none() && reply["id"] == json!(id) {
            return Ok(reply);
        }
    }
}

#[async_trait]
impl Behaviour for RemoteConnector {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "remote.connect" => {
                let ConnectInput { name: Name(name), kind, url, api_key_env } = decode(t, &task.input)?;
                let url = url.trimmed();
                let fits = match kind {
                    LinkKind::Node => url.starts_with("tcp://") || url.starts_with("ipc://"),
                    LinkKind::Backend | LinkKind::Registry => {
                        reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                    }
                };
                if !fits {
                    let want = if kind == LinkKind::Node { "tcp:// or ipc://" } else { "an http(s) URL" };
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of {t} at /url: a {} link needs {want}, not {url:?}", kind.as_str()),
                    ));
                }
                let view = LinkView {
                    name: name.clone(),
                    kind,
                    url,
                    state: LinkState::Down,
                    latency_seconds: None,
                    last_seen_at: None,
                    error: Some("not checked yet".into()),
                    configured: false,
                    breaker: None,
                };
                self.links.lock().insert(name.clone(), Link { view, api_key_env: api_key_env.map(|Name(v)| v) });
                self.check(&name).await;
                let view = self.views(Some(&name)).await.pop().ok_or_else(|| {
                    TaskError::new(ErrorCode::Internal, format!("link {name} vanished during its check"))
                })?;
                encode(t, view)
            }
            "remote.status" => {
                let OrShort(StatusInput { name, check }) = decode(t, &task.input)?;
                let only = name.map(|Name(n)| n);
                if let Some(n) = &only
                    && !self.links.lock().contains_key(n)
                {
                    return Err(TaskError::new(ErrorCode::NotFound, format!("no link named {n:?}")));
                }
                if check == Some(true) {
                    let names: Vec<String> =
                        self.links.lock().keys().filter(|k| only.as_ref().is_none_or(|n| n == *k)).cloned().collect();
                    futures::future::join_all(names.iter().map(|n| self.check(n))).await;
                }
                encode(t, StatusOutput { links: self.views(only.as_deref()).await })
            }
            "remote.call" => {
                let CallInput { name: Name(name), task: rt } = decode(t, &task.input)?;
                let (kind, url) = self
                    .links
                    .lock()
                    .get(&name)
                    .map(|l| (l.view.kind, l.view.url.clone()))
                    .ok_or_else(|| TaskError::new(ErrorCode::NotFound, format!("no link named {name:?}")))?;
                if kind != LinkKind::Node {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!(
                            "input of {t} at /name: link {name} is a {} link; tasks go to node links",
                            kind.as_str()
                        ),
                    ));
                }
                if rt.task_type.is_none() && rt.agent.is_none() {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of {t} at /task: give `type`, `agent` or both"),
                    ));
                }
                let timeout = rt
                    .deadline_ms
                    .map(|Whole(ms)| Duration::from_millis(ms as u64))
                    .or_else(|| task.deadline.map(|d| d.saturating_duration_since(Instant::now())))
                    .unwrap_or(self.call_timeout);
                let mut envelope =
                    json!({"input": rt.input.unwrap_or(Value::Null), "deadline_ms": timeout.as_millis() as u64});
                if let Some(Name(ty)) = rt.task_type {
                    envelope["type"] = json!(ty);
                }
                if let Some(Name(agent)) = rt.agent {
                    envelope["agent"] = json!(agent);
                }
                if let Some(Whole(p)) = rt.priority {
                    envelope["priority"] = json!(p);
                }
                let t0 = Instant::now();
                let reply = tokio::time::timeout(timeout, node_call(&url, envelope))
                    .await
                    .map_err(|_| {
                        TaskError::new(
                            ErrorCode::FetchFailed,
                            format!("node {name} did not answer within {:.1} s", timeout.as_secs_f64()),
                        )
                    })?
                    .map_err(|e| TaskError::new(ErrorCode::FetchFailed, format!("node {name}: {e}")))?;
                let ok = reply["status"] == "ok";
                encode(
                    t,
                    CallOutput {
                        name,
                        status: if ok { RemoteStatus::Ok } else { RemoteStatus::Error },
                        agent: reply["agent"].as_str().map(str::to_string),
                        output: reply.get("output").cloned().unwrap_or(Value::Null),
                        route: reply.get("route").and_then(Value::as_object).cloned(),
                        error: reply.get("error").and_then(Value::as_object).map(|e| RemoteError {
                            code: e.get("code").and_then(Value::as_str).unwrap_or("").to_string(),
                            message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                        }),
                        latency_seconds: t0.elapsed().as_secs_f64(),
                    },
                )
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}
