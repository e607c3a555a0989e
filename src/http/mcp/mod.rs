//! The MCP server (Model Context Protocol, with the official Rust SDK
//! `rmcp`): every task type of the run as an MCP tool, the agent tree and
//! the recent receipts as resources, so that desktop and coding assistants
//! can use the fleet.
//!
//! Two transports, one server ([`McpServer`]):
//! - **stdio**: `agentvisor mcp [--endpoint tcp://...]`, spawned by the
//!   assistant ([`serve_stdio`]);
//! - **streamable HTTP** at `/mcp` on the daemon's HTTP listener ([`service`]).
//!
//! Both send their tasks to the daemon's task bus like any client
//! (`agentvisor send`): a DEALER connection per call to the ROUTER endpoint
//! ([`door::Door`]), so admission, the queue, deadlines, cancellation,
//! receipts and metrics are the bus's own.
//!
//! | MCP | what it does |
//! | --- | --- |
//! | `tools/list` | one tool per task type the run serves (`coordinator.tasks`), named as [`tools`] says (`utils.hash` → `utils_hash`), description from the type's summary, input schema from its JSON Schema; plus `fleet_status` (`system.agents`) and `agent_restart` (`system.restart`) |
//! | `tools/call` | one task; the result's `structuredContent` is `{"output", "route", "agent", "task_id"}`, its `content` the output as text, then the route as JSON text; reserved arguments `_model` and `_prefer` go to the envelope's `model` and `prefer` |
//! | progress | a call with a `progressToken` streams: each chunk of the answer is a `notifications/progress` (`progress` = chunk number, `message` = the text) |
//! | cancellation | the client's cancel (`notifications/cancelled`, or a closed HTTP stream) sends `{"cancel": id}` to the bus: the task stops |
//! | `resources/list`, `resources/read` | `agentvisor://agents`: the agent tree (`{"profile", "groups": [{"name", "agents": [AGENT]}]}`, from `system.agents`); `agentvisor://receipts`: the newest 50 routing receipts, newest last (from the SQLite store in `data_dir`) |
//!
//! Errors are MCP (JSON-RPC) errors whose `data` is `{"code", "message",
//! "agent", "task_id"}` with the project's stable error code: input that
//! does not fit the schema, an unknown `_model` (the message lists the
//! known ones), unknown tool → `-32602` (invalid params); every other code
//! → `-32603` (internal error).

mod door;
pub(crate) mod tools;

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode as RpcCode, Implementation,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub use door::Door;
use tools::Tools;

use crate::bus::envelope::Reply;
use crate::core::{ErrorCode, TaskError};
use crate::telemetry::metrics::Metrics;

/// URI of the agent tree resource.
const AGENTS_URI: &str = "agentvisor://agents";
/// URI of the recent receipts resource.
const RECEIPTS_URI: &str = "agentvisor://receipts";
/// Receipts the receipts resource shows.
const RECEIPTS_SHOWN: u32 = 50;

/// The MCP server over one daemon's bus. Cheap to clone (the streamable
/// HTTP transport makes one per session).
#[derive(Clone)]
pub struct McpServer {
    door: Arc<Door>,
    /// The tools last built from `coordinator.tasks` (refreshed by every
    /// `tools/list`, and by a call naming a tool it lacks).
    tools: Arc<Mutex<Option<Arc<Tools>>>>,
    /// Counts refused calls (`agentvisor_bad_requests_total{code}`) when
    /// the server runs in the daemon.
    metrics: Option<Metrics>,
}

impl McpServer {
    /// A server sending its tasks through `door`; refused calls are counted
    /// in `metrics` when given.
    pub fn new(door: Door, metrics: Option<Metrics>) -> McpServer {
        McpServer { door: Arc::new(door), tools: Arc::default(), metrics }
    }

    /// The door for a request: over HTTP, one carrying the request's Bearer
    /// token (the bus checks it, and each tool's scope); else the server's.
    fn door(&self, context: &RequestContext<RoleServer>) -> Arc<Door> {
        let bearer = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get(axum::http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_string());
        match bearer {
            Some(token) => Arc::new((*self.door).clone().with_token(Some(token))),
            None => self.door.clone(),
        }
    }

    /// Fresh tools from the daemon (and cached).
    async fn refresh(&self, door: &Door) -> Result<Arc<Tools>, McpError> {
        let served = door.served().await.map_err(|e| self.error(&e, None, None))?;
        let (tools, problems) = Tools::build(&served);
        for p in &problems {
            tracing::warn!(problem = %p, "MCP tool left out");
        }
        let tools = Arc::new(tools);
        *self.tools.lock().await = Some(tools.clone());
        Ok(tools)
    }

    /// The tool `name`, from the cache or (when it lacks it) fresh.
    async fn tool(&self, door: &Door, name: &str) -> Result<(Arc<Tools>, tools::ToolDef), McpError> {
        let cached = self.tools.lock().await.clone();
        let tools = match cached {
            Some(t) if t.get(name).is_some() => t,
            _ => self.refresh(door).await?,
        };
        match tools.get(name).cloned() {
            Some(tool) => Ok((tools, tool)),
            None => {
                let e = TaskError::new(
                    ErrorCode::UnknownTaskType,
                    format!("no tool {name} (profile {} serves {} tools; see tools/list)", tools.profile, tools.len()),
                );
                Err(self.error(&e, None, None))
            }
        }
    }

    /// The MCP error for a task error, counted and logged.
    fn error(&self, e: &TaskError, agent: Option<&str>, task_id: Option<&str>) -> McpError {
        let code = match e.code {
            ErrorCode::InvalidField
            | ErrorCode::MalformedJson
            | ErrorCode::UnknownTaskType
            | ErrorCode::UnknownAgent
            | ErrorCode::MessageTooLarge => RpcCode::INVALID_PARAMS,
            _ => RpcCode::INTERNAL_ERROR,
        };
        if let Some(m) = &self.metrics
            && task_id.is_none()
        {
            // Refused here, before the bus (which counts its own).
            m.bad_requests.with_label_values(&[e.code.as_str()]).inc();
        }
        tracing::info!(code = e.code.as_str(), error = %e.message, task_id, "MCP call answered with an error");
        let data = json!({"code": e.code.as_str(), "message": e.message, "agent": agent, "task_id": task_id});
        McpError::new(code, e.message.clone(), Some(data))
    }

    /// The tool result of an `ok` reply, or the MCP error of an `error` one.
    fn result(&self, reply: Reply, task_id: &str) -> Result<CallToolResponse, McpError> {
        if let Some(e) = &reply.error {
            return Err(self.error(e, reply.agent.as_deref(), Some(task_id)));
        }
        let output = reply.output.unwrap_or(Value::Null);
        let mut content = vec![ContentBlock::text(match &output {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
        })];
        if let Some(route) = &reply.route {
            content.push(ContentBlock::text(format!("route: {route}")));
        }
        let structured = json!({"output": output, "route": reply.route, "agent": reply.agent, "task_id": task_id});
        let mut result = CallToolResult::success(content);
        result.structured_content = Some(structured);
        Ok(result.into())
    }

    /// `{"profile", "groups": [{"name", "agents": [AGENT]}]}` from `system.agents`.
    async fn agent_tree(&self, door: &Door) -> Result<Value, McpError> {
        let reply = door.ask_simple("system.agents", Value::Null).await.map_err(|e| self.error(&e, None, None))?;
        let id = reply.id.clone().unwrap_or_default();
        if let Some(e) = &reply.error {
            return Err(self.error(e, reply.agent.as_deref(), Some(&id)));
        }
        let out = reply.output.unwrap_or(Value::Null);
        let mut groups: std::collections::BTreeMap<String, Vec<Value>> = std::collections::BTreeMap::new();
        for a in out["agents"].as_array().into_iter().flatten() {
            let group = a["group"].as_str().unwrap_or("-").to_string();
            groups.entry(group).or_default().push(a.clone());
        }
        let groups: Vec<Value> =
            groups.into_iter().map(|(name, agents)| json!({"name": name, "agents": agents})).collect();
        Ok(json!({"profile": out["profile"], "groups": groups}))
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("agentvisor", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "agentvisor's fleet of agents: one tool per task type (utils.hash is utils_hash). Every tool takes the \
                 reserved arguments _model (a model name) and _prefer (local or cloud). Resources: agentvisor://agents \
                 (the agent tree), agentvisor://receipts (recent routing receipts).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self.refresh(&self.door(&context)).await?;
        let list: Vec<Tool> = tools
            .iter()
            .map(|t| {
                Tool::new_with_raw(t.name.clone(), Some(t.description.clone().into()), Arc::new(t.input_schema.clone()))
                    .with_raw_output_schema(Arc::new(t.output_schema.clone()))
                    .with_title(t.task_type.clone())
            })
            .collect();
        Ok(ListToolsResult::with_all_items(list).with_ttl_ms(0))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let door = self.door(&context);
        let (_, tool) = self.tool(&door, &request.name).await?;
        let call = tool
            .call(request.arguments)
            .map_err(|bad| self.error(&TaskError::new(ErrorCode::InvalidField, bad.message), None, None))?;
        let progress = context.meta.get_progress_token();
        let task_id = format!("mcp-{}", uuid::Uuid::new_v4().simple());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
        let peer = context.peer.clone();
        let forward = async move {
            while let Some((seq, delta)) = rx.recv().await {
                if let Some(token) = &progress {
                    let note = ProgressNotificationParam::new(token.clone(), seq as f64).with_message(delta);
                    if let Err(e) = peer.notify_progress(note).await {
                        tracing::debug!(error = %e, "MCP progress notification not sent");
                    }
                }
            }
        };
        let stream = context.meta.get_progress_token().is_some();
        let ask = async move {
            let r = door
                .ask(&task_id, call, stream, &context.ct, move |chunk| {
                    let seq = chunk["seq"].as_u64().unwrap_or(0);
                    let delta = chunk["delta"].as_str().unwrap_or_default().to_string();
                    let _ = tx.send((seq, delta));
                })
                .await;
            (task_id, r)
        };
        let ((task_id, reply), ()) = tokio::join!(ask, forward);
        let reply = reply.map_err(|e| self.error(&e, None, None))?;
        self.result(reply, &task_id)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources = vec![
            Resource::new(AGENTS_URI, "agents")
                .with_title("Agent tree")
                .with_description("The profile's agents by group, each with its state, restarts and uptime")
                .with_mime_type("application/json"),
            Resource::new(RECEIPTS_URI, "receipts")
                .with_title("Recent receipts")
                .with_description(format!(
                    "The newest {RECEIPTS_SHOWN} routing receipts (backend, model, tier, reason, timings, tokens, cost), newest last"
                ))
                .with_mime_type("application/json"),
        ];
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let value = match request.uri.as_str() {
            AGENTS_URI => self.agent_tree(&self.door(&context)).await?,
            RECEIPTS_URI => {
                let receipts = self.door.receipts(RECEIPTS_SHOWN).await.map_err(|e| self.error(&e, None, None))?;
                json!({"receipts": receipts})
            }
            other => {
                let e = TaskError::new(
                    ErrorCode::InvalidField,
                    format!("no resource {other}; known: {AGENTS_URI}, {RECEIPTS_URI}"),
                );
                return Err(self.error(&e, None, None));
            }
        };
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        let contents = ResourceContents::text(text, request.uri).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).with_ttl_ms(0).into())
    }
}

/// Serves MCP over stdin/stdout until the client closes it.
///
/// # Errors
/// The MCP handshake fails, or the transport breaks.
pub async fn serve_stdio(server: McpServer) -> anyhow::Result<()> {
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// The streamable HTTP transport, as mounted at `/mcp`.
pub type Service = StreamableHttpService<McpServer, LocalSessionManager>;

/// The streamable HTTP transport over `server`, mounted at `/mcp` by the
/// daemon's router. Requests must name a loopback host or `listen_host`
/// (`http.listen`'s host) in `Host` (rmcp's guard against DNS rebinding).
/// Every session ends when `stop` is cancelled.
pub fn service(server: McpServer, listen_host: &str, stop: tokio_util::sync::CancellationToken) -> Service {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !hosts.iter().any(|h| h == listen_host) {
        hosts.push(listen_host.to_string());
    }
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_cancellation_token(stop)
        // A closed stream is noticed at the next write: keep-alives bound the wait.
        .with_sse_keep_alive(Some(Duration::from_secs(5)));
    StreamableHttpService::new(move || Ok(server.clone()), Arc::new(LocalSessionManager::default()), config)
}
