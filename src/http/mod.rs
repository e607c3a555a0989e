//! The ObservabilityHub HTTP server (axum): metrics, health, readiness, the
//! agent tree, admin routes, the task schemas, the OpenAI-compatible
//! gateway and the registry routes. The top layer below the composition
//! root (DESIGN §15): it reads the fleet, the services and the bus status it
//! is given in [`App`].
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text exposition (format 0.0.4) |
//! | `GET /health` | `200 {"status": "ok"\|"draining", "run_id", "uptime_seconds", "admission": "open"\|"draining", "bus": {"ingress", "events", "queued", "running"}, "infrastructure": {"HybridRouter"\|"ModelScheduler"\|"BusDispatcher": {"state", "restarts"}}}` while the daemon runs |
//! | `GET /ready` | `200` when every essential agent is `running` or `unavailable`; else `503`; body `{"ready", "waiting": [{"agent", "state"}], "unavailable": [{"agent", "reason"}]}` |
//! | `GET /agents` | `{"profile", "groups": [{"name", "strategy", "agents": [AGENT]}]}` |
//! | `GET /agents/{name}` | `AGENT`: `{"name", "group", "state", "runtime", "essential", "restarts", "uptime_seconds", "pid", "reason", "dependencies"}` |
//! | `POST /agents/{name}/start` / `stop` / `restart` | `200 AGENT` or `4xx/5xx {"error": {"code", "message"}}` |
//! | `GET /tasks` | every task type: `[{"type", "agent", "runtime", "summary", "input_schema", "output_schema", "example"}]` (as `agentvisor tasks --json`) |
//! | `POST /v1/chat/completions`, `GET /v1/models` | the OpenAI-compatible gateway ([`gateway`]) |
//! | `POST`/`GET`/`DELETE /mcp` | the MCP server's streamable HTTP transport ([`mcp`]): every task type as a tool; only when the bus is bound |
//! | `POST /registry/register`, `PUT /registry/heartbeat`, `GET /registry/discover`, `POST /registry/promote`, `DELETE /registry/{id}` | ServiceRegistry ([`registry`]) |
//! | `POST /agents/{name}/fault` body `{"kind": "panic"\|"error"}` | an agent, or an infrastructure component (`HybridRouter`, `ModelScheduler`, `BusDispatcher`); only with `testing.fault_injection: true` (404 otherwise) |
//!
//! Every route but `/health` and `/ready` asks for `Authorization: Bearer
//! <token>` (an API token, or a web-UI session id; or that session id in the
//! cookie `agentvisor_session`) once a token exists
//! ([`crate::agents::auth`]): `read` for GET routes (and `/metrics` on a
//! non-loopback listener, unless `auth.public_metrics`), `tasks` for `/v1`
//! and `/mcp`, `admin` for agent starts, stops, faults and registry writes.
//! No, unknown, expired or revoked credentials → `401 unauthorized` (with
//! `WWW-Authenticate: Bearer`); a token without the scope → `403
//! forbidden`; a client (by IP address) past the failure limit → `429
//! rate_limited` (with `Retry-After`). `/v1` answers these in OpenAI's
//! error shape. The token's subject is the `/v1` request's `user`.
//!
//! [`upstream`] is a separate server, not part of the daemon: the
//! fixed-answer OpenAI-compatible upstream of the gateway benchmark.

pub mod gateway;
pub mod mcp;
pub mod registry;
pub mod upstream;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

use crate::agents::auth::Scope;
use crate::agents::services::Services;
use crate::bus::BusStatus;
use crate::bus::gate::{Admission, Gate};
use crate::core::{ErrorCode, TaskError};
use crate::supervisor::Infra;
use crate::supervisor::state::AgentState;
use crate::supervisor::{Fault, Fleet, StartError};

/// What the routes read: the fleet, the daemon's services, the bus status.
#[derive(Clone)]
pub struct App {
    /// The fleet (agent table, starts and stops).
    pub fleet: Fleet,
    /// The daemon's services (metrics, router, store, task schemas).
    pub services: Arc<Services>,
    /// The task bus's bound endpoints and queue numbers.
    pub bus: Arc<BusStatus>,
    /// The admission gate (the `/v1` gateway asks it).
    pub gate: Arc<Gate>,
    /// The infrastructure components (states, fault injection).
    pub infra: Infra,
    /// Cancelled when the HTTP server stops: ends the long-lived streams
    /// (MCP sessions), which a graceful stop would otherwise wait for.
    pub stop: CancellationToken,
}

/// The router over `app`.
pub fn router(app: App) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/agents", get(agents))
        .route("/agents/{name}", get(agent))
        .route("/agents/{name}/start", post(start))
        .route("/agents/{name}/stop", post(stop))
        .route("/agents/{name}/restart", post(restart))
        .route("/tasks", get(tasks))
        .route("/v1/chat/completions", post(gateway::chat_completions))
        .route("/v1/models", get(gateway::models))
        .merge(registry::routes());
    if app.fleet.ctx().settings.testing.fault_injection {
        r = r.route("/agents/{name}/fault", post(fault));
    }
    if let Some(service) = mcp_service(&app) {
        r = r.nest_service("/mcp", service);
    }
    r.layer(axum::middleware::from_fn_with_state(app.clone(), authenticate)).with_state(app)
}

/// The scope a request needs and its door label; `None`: open.
fn route_scope(app: &App, method: &Method, path: &str) -> Option<(Scope, &'static str)> {
    let settings = &app.services.settings;
    match path {
        "/health" | "/ready" => None,
        "/metrics" if settings.auth.public_metrics || settings.http_on_loopback() => None,
        p if p.starts_with("/v1/") => Some((Scope::Tasks, "v1")),
        p if p == "/mcp" || p.starts_with("/mcp/") => Some((Scope::Tasks, "mcp")),
        _ if method == Method::GET || method == Method::HEAD => Some((Scope::Read, "http")),
        _ => Some((Scope::Admin, "http")),
    }
}

/// The credential of a request: `Authorization: Bearer <token or session
/// id>`, else the web UI's session cookie (`agentvisor_session=<session id>`,
/// the `session_id` of `auth.session`).
fn credential(headers: &axum::http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE).and_then(|rest| rest.strip_prefix('=')))
    };
    bearer.or_else(cookie).map(|t| t.trim().to_string())
}

/// The web UI's session cookie.
pub const SESSION_COOKIE: &str = "agentvisor_session";

/// The door's check (see the module docs); the principal goes into the
/// request's extensions for the handlers.
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let Some((need, door)) = route_scope(&app, req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = || ip.map_or_else(|| "http:unknown".to_string(), |ip| format!("http:{ip}"));
    let credential = credential(req.headers());
    match app.services.auth.check(door, &client, credential.as_deref(), need) {
        Ok(principal) => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
        Err(e) => {
            let status = match e.code {
                ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::FORBIDDEN,
            };
            let mut resp = if door == "v1" {
                gateway::openai_error(status, e.code.as_str(), &e.message)
            } else {
                error(status, e)
            };
            let headers = resp.headers_mut();
            if status == StatusCode::UNAUTHORIZED {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                // One failure cell frees up every 60 / failures_per_minute seconds.
                let secs = (60.0 / f64::from(app.services.settings.auth.failures_per_minute.max(1))).ceil();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            }
            resp
        }
    }
}

/// The MCP server's streamable HTTP transport ([`mcp`]), over the bound
/// bus; `None` without a bus.
fn mcp_service(app: &App) -> Option<mcp::Service> {
    let (ingress, _) = app.bus.endpoints()?;
    let settings = &app.services.settings;
    let door = mcp::Door::new(ingress, settings.data_dir.clone(), settings.tasks.call_timeout());
    let server = mcp::McpServer::new(door, Some(app.services.metrics.clone()));
    let host = settings.http.listen.rsplit_once(':').map_or(settings.http.listen.as_str(), |(h, _)| h);
    Some(mcp::service(server, host.trim_start_matches('[').trim_end_matches(']'), app.stop.clone()))
}

async fn metrics(State(App { fleet, .. }): State<App>) -> Response {
    fleet.ctx().update_gauges();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], fleet.ctx().metrics.render()).into_response()
}

async fn health(State(App { fleet, bus, gate, infra, services, .. }): State<App>) -> Json<Value> {
    let admission = gate.admission();
    let status = if admission == Admission::Open { "ok" } else { "draining" };
    let bus = bus.bus().is_some().then(|| {
        let mut b = bus.to_json();
        if let Some(o) = b.as_object_mut() {
            o.remove("admission");
        }
        b
    });
    Json(json!({
        "status": status, "uptime_seconds": fleet.ctx().started.elapsed().as_secs_f64(),
        "admission": admission.as_str(), "bus": bus, "infrastructure": infra.status(),
        "run_id": services.run_id,
    }))
}

async fn ready(State(App { fleet, .. }): State<App>) -> Response {
    let mut waiting = Vec::new();
    let mut unavailable = Vec::new();
    for r in fleet.ctx().snapshot().into_iter().filter(|r| r.essential) {
        match r.state {
            AgentState::Running => {}
            AgentState::Unavailable => unavailable.push(json!({"agent": r.name, "reason": r.reason})),
            s => waiting.push(json!({"agent": r.name, "state": s.as_str()})),
        }
    }
    let ready = waiting.is_empty();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"ready": ready, "waiting": waiting, "unavailable": unavailable}))).into_response()
}

/// JSON view of one agent record.
async fn tasks(State(App { services, .. }): State<App>) -> Json<Value> {
    Json(services.tasks.to_json())
}

async fn agents(State(App { fleet, .. }): State<App>) -> Json<Value> {
    let ctx = fleet.ctx();
    let records = ctx.snapshot();
    let groups: Vec<Value> = ctx
        .plan
        .by_group(&ctx.catalog)
        .into_keys()
        .map(|group| {
            let strategy = ctx.catalog.groups.get(&group).map(|g| g.strategy.as_str()).unwrap_or("one_for_one");
            let agents: Vec<Value> = records.iter().filter(|r| r.group == group).map(|r| r.to_json()).collect();
            json!({"name": group, "strategy": strategy, "agents": agents})
        })
        .collect();
    Json(json!({"profile": ctx.plan.name, "groups": groups}))
}

/// `{"error": {"code", "message"}}` with `status`.
fn error(status: StatusCode, e: TaskError) -> Response {
    (status, Json(json!({"error": e}))).into_response()
}

fn start_error(e: StartError) -> Response {
    let status = match e {
        StartError::UnknownAgent(_) => StatusCode::NOT_FOUND,
        StartError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        StartError::Fatal { .. } | StartError::Unavailable { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_task_error())
}

async fn agent(State(App { fleet, .. }): State<App>, Path(name): Path<String>) -> Response {
    match fleet.ctx().record(&name) {
        Some(r) => Json(r.to_json()).into_response(),
        None => start_error(StartError::UnknownAgent(name)),
    }
}

fn record_response(fleet: &Fleet, name: &str, result: Result<(), StartError>) -> Response {
    match result {
        Ok(()) => match fleet.ctx().record(name) {
            Some(r) => Json(r.to_json()).into_response(),
            None => start_error(StartError::UnknownAgent(name.into())),
        },
        Err(e) => start_error(e),
    }
}

async fn start(State(App { fleet, .. }): State<App>, Path(name): Path<String>) -> Response {
    let r = fleet.ensure(&name).await;
    record_response(&fleet, &name, r)
}

async fn stop(State(App { fleet, .. }): State<App>, Path(name): Path<String>) -> Response {
    let r = fleet.stop_agent(&name, AgentState::Stopped, "operator stop").await;
    record_response(&fleet, &name, r)
}

async fn restart(State(App { fleet, .. }): State<App>, Path(name): Path<String>) -> Response {
    let r = fleet.restart_agent(&name).await;
    record_response(&fleet, &name, r)
}

#[derive(serde::Deserialize)]
struct FaultBody {
    kind: Fault,
}

async fn fault(
    State(App { fleet, infra, .. }): State<App>,
    Path(name): Path<String>,
    Json(body): Json<FaultBody>,
) -> Response {
    let injected =
        if infra.has(&name) { infra.inject_fault(&name, body.kind) } else { fleet.inject_fault(&name, body.kind) };
    match injected {
        Ok(()) => Json(json!({"injected": body.kind, "agent": name})).into_response(),
        Err(e) if e.code == ErrorCode::AgentNotRunning => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves (graceful).
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
