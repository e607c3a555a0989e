//! The service registry's HTTP routes (ServiceRegistry's operations over
//! HTTP, sharing one implementation with the `registry.*` tasks):
//!
//! | route | operation |
//! | --- | --- |
//! | `POST /registry/register` | `registry.register` (JSON body) |
//! | `PUT /registry/heartbeat` | `registry.heartbeat` (JSON body) |
//! | `GET /registry/discover?type=&role=&cap=&status=&name=&managed=` | `registry.discover` (`cap=a,b`: both) |
//! | `POST /registry/promote` | `registry.promote` (JSON body) |
//! | `DELETE /registry/{id}`, `POST /registry/deregister` | `registry.deregister` |
//!
//! They answer `503 agent_not_running` while ServiceRegistry is not running
//! (its monitor would not run either).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Map, Value, json};

use super::{App, error};
use crate::agents::builtin::service_registry::{AGENT, Op, Registry, RegistryError};
use crate::config::spec::RuntimeSpec;
use crate::core::{ErrorCode, TaskError};
use crate::supervisor::AgentState;

/// The HTTP status of a registry error: 400, 404 (no service) or 500.
fn status_of(e: &RegistryError) -> StatusCode {
    match e {
        RegistryError::NoService(_) => StatusCode::NOT_FOUND,
        RegistryError::Store(_) | RegistryError::Output(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// HTTP routes of the registry, merged into the ObservabilityHub server
/// (see the module docs for the table).
pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/registry/register", post(http_register))
        .route("/registry/heartbeat", put(http_heartbeat))
        .route("/registry/discover", get(http_discover))
        .route("/registry/promote", post(http_promote))
        .route("/registry/deregister", post(http_deregister))
        .route("/registry/{id}", delete(http_delete))
}

/// Runs `op` for an HTTP request, while ServiceRegistry runs.
async fn http(app: &App, op: Op, input: Result<Value, JsonRejection>) -> Response {
    let ctx = app.fleet.ctx();
    let agent = ctx
        .plan
        .agents
        .iter()
        .filter_map(|a| ctx.catalog.get(a))
        .find(|s| matches!(&s.runtime, RuntimeSpec::Builtin { .. }) && s.behaviour_name() == AGENT);
    let Some(agent) = agent else {
        return error(
            StatusCode::NOT_FOUND,
            TaskError::new(ErrorCode::UnknownAgent, format!("no {AGENT} in this run")),
        );
    };
    match ctx.state(&agent.name) {
        Some(AgentState::Running) => {}
        state => {
            let state = state.map_or("absent", AgentState::as_str);
            let e = TaskError::new(ErrorCode::AgentNotRunning, format!("{} is {state}", agent.name));
            return error(StatusCode::SERVICE_UNAVAILABLE, e);
        }
    }
    let input = match input {
        Ok(v) => v,
        Err(rejection) => {
            return error(StatusCode::BAD_REQUEST, TaskError::new(ErrorCode::MalformedJson, rejection.body_text()));
        }
    };
    let registry =
        Registry { store: app.services.store.clone(), events: app.services.events.clone(), table: ctx.clone() };
    match op.run(&registry, &input).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(status_of(&e), e.to_task_error()),
    }
}

async fn http_register(State(app): State<App>, body: Result<Json<Value>, JsonRejection>) -> Response {
    http(&app, Op::Register, body.map(|Json(v)| v)).await
}

async fn http_heartbeat(State(app): State<App>, body: Result<Json<Value>, JsonRejection>) -> Response {
    http(&app, Op::Heartbeat, body.map(|Json(v)| v)).await
}

async fn http_promote(State(app): State<App>, body: Result<Json<Value>, JsonRejection>) -> Response {
    http(&app, Op::Promote, body.map(|Json(v)| v)).await
}

async fn http_deregister(State(app): State<App>, body: Result<Json<Value>, JsonRejection>) -> Response {
    http(&app, Op::Deregister, body.map(|Json(v)| v)).await
}

async fn http_delete(State(app): State<App>, Path(id): Path<String>) -> Response {
    http(&app, Op::Deregister, Ok(json!({"id": id}))).await
}

/// Query parameters as a `registry.discover` input: empty ones dropped,
/// `cap` split on commas, `managed` as a boolean when it reads as one.
fn discover_input(query: std::collections::BTreeMap<String, String>) -> Value {
    let mut m = Map::new();
    for (k, v) in query.into_iter().filter(|(_, v)| !v.trim().is_empty()) {
        let value = match (k.as_str(), v.trim()) {
            ("cap", caps) => Value::from(caps.split(',').map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>()),
            ("managed", "true") => Value::Bool(true),
            ("managed", "false") => Value::Bool(false),
            (_, text) => Value::from(text),
        };
        m.insert(k, value);
    }
    Value::Object(m)
}

async fn http_discover(
    State(app): State<App>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    http(&app, Op::Discover, Ok(discover_input(query))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_discover_input() {
        let q = [("cap", "infer, embed"), ("type", "model"), ("role", ""), ("managed", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(discover_input(q), json!({"cap": ["infer", "embed"], "type": "model", "managed": false}));
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(status_of(&RegistryError::NoService("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&RegistryError::Managed("x".into())), StatusCode::BAD_REQUEST);
    }
}
