//! The ObservabilityHub HTTP server (axum): metrics, health, readiness, the
//! agent tree, and admin routes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text exposition (format 0.0.4) |
//! | `GET /health` | `200 {"status": "ok", "uptime_seconds"}` while the daemon runs |
//! | `GET /ready` | `200` when every essential agent is `running` or `unavailable`; else `503`; body `{"ready", "waiting": [{"agent", "state"}], "unavailable": [{"agent", "reason"}]}` |
//! | `GET /agents` | `{"profile", "groups": [{"name", "strategy", "agents": [AGENT]}]}` |
//! | `GET /agents/{name}` | `AGENT`: `{"name", "group", "state", "runtime", "essential", "restarts", "uptime_seconds", "pid", "reason", "dependencies"}` |
//! | `POST /agents/{name}/start` / `stop` / `restart` | `200 AGENT` or `4xx/5xx {"error": {"code", "message"}}` |
//! | `POST /v1/chat/completions`, `GET /v1/models` | the OpenAI-compatible gateway ([`super::gateway`]) |
//! | `POST /registry/register`, `PUT /registry/heartbeat`, `GET /registry/discover`, `POST /registry/promote`, `DELETE /registry/{id}` | ServiceRegistry ([`crate::agents::builtin::service_registry`]) |
//! | `POST /agents/{name}/fault` body `{"kind": "panic"\|"error"}` | only with `testing.fault_injection: true` (404 otherwise) |

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::agents::actor::{Fault, StartError};
use crate::agents::task::{ErrorCode, TaskError};
use crate::supervisor::Fleet;
use crate::supervisor::state::{AgentRecord, AgentState};

/// The router over `fleet`.
pub fn router(fleet: Fleet) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/agents", get(agents))
        .route("/agents/{name}", get(agent))
        .route("/agents/{name}/start", post(start))
        .route("/agents/{name}/stop", post(stop))
        .route("/agents/{name}/restart", post(restart))
        .route("/v1/chat/completions", post(super::gateway::chat_completions))
        .route("/v1/models", get(super::gateway::models))
        .merge(crate::agents::builtin::service_registry::routes());
    if fleet.ctx().settings.testing.fault_injection {
        r = r.route("/agents/{name}/fault", post(fault));
    }
    r.with_state(fleet)
}

async fn metrics(State(fleet): State<Fleet>) -> Response {
    fleet.ctx().update_gauges();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], fleet.ctx().metrics.render()).into_response()
}

async fn health(State(fleet): State<Fleet>) -> Json<Value> {
    let bus = fleet.ctx().bus_endpoints().map(|(ingress, events)| json!({"ingress": ingress, "events": events}));
    Json(json!({"status": "ok", "uptime_seconds": fleet.ctx().started.elapsed().as_secs_f64(), "bus": bus}))
}

async fn ready(State(fleet): State<Fleet>) -> Response {
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
pub fn record_json(r: &AgentRecord) -> Value {
    json!({
        "name": r.name, "group": r.group, "state": r.state.as_str(), "runtime": r.runtime.as_str(),
        "essential": r.essential, "restarts": r.restarts,
        "uptime_seconds": r.uptime().map(|d| d.as_secs_f64()), "pid": r.pid, "reason": r.reason,
        "dependencies": r.dependencies,
    })
}

async fn agents(State(fleet): State<Fleet>) -> Json<Value> {
    let ctx = fleet.ctx();
    let records = ctx.snapshot();
    let groups: Vec<Value> = ctx
        .plan
        .by_group(&ctx.catalog)
        .into_keys()
        .map(|group| {
            let strategy = ctx.catalog.groups.get(&group).map(|g| g.strategy.as_str()).unwrap_or("one_for_one");
            let agents: Vec<Value> = records.iter().filter(|r| r.group == group).map(record_json).collect();
            json!({"name": group, "strategy": strategy, "agents": agents})
        })
        .collect();
    Json(json!({"profile": ctx.plan.name, "groups": groups}))
}

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

async fn agent(State(fleet): State<Fleet>, Path(name): Path<String>) -> Response {
    match fleet.ctx().record(&name) {
        Some(r) => Json(record_json(&r)).into_response(),
        None => start_error(StartError::UnknownAgent(name)),
    }
}

fn record_response(fleet: &Fleet, name: &str, result: Result<(), StartError>) -> Response {
    match result {
        Ok(()) => match fleet.ctx().record(name) {
            Some(r) => Json(record_json(&r)).into_response(),
            None => start_error(StartError::UnknownAgent(name.into())),
        },
        Err(e) => start_error(e),
    }
}

async fn start(State(fleet): State<Fleet>, Path(name): Path<String>) -> Response {
    let r = fleet.ensure(&name).await;
    record_response(&fleet, &name, r)
}

async fn stop(State(fleet): State<Fleet>, Path(name): Path<String>) -> Response {
    let r = fleet.stop_agent(&name, AgentState::Stopped, "operator stop").await;
    record_response(&fleet, &name, r)
}

async fn restart(State(fleet): State<Fleet>, Path(name): Path<String>) -> Response {
    let r = fleet.restart_agent(&name).await;
    record_response(&fleet, &name, r)
}

#[derive(serde::Deserialize)]
struct FaultBody {
    kind: Fault,
}

async fn fault(State(fleet): State<Fleet>, Path(name): Path<String>, Json(body): Json<FaultBody>) -> Response {
    match fleet.inject_fault(&name, body.kind) {
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
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
