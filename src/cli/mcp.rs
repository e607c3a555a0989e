//! `agentvisor mcp`: the MCP server over stdio, for the desktop and coding
//! assistants that spawn it (their config names the command). It talks to
//! the running daemon as `agentvisor send` does (its ROUTER endpoint,
//! default `bus.ingress`), and reads the receipts from the store under
//! `data_dir`. stdout carries only MCP messages; logs go to stderr.
//! Exit code 0 when the client closes the connection.

use std::path::Path;

use super::Cli;
use crate::http::mcp::{Door, McpServer, serve_stdio};

/// Serves MCP on stdin/stdout until the client closes it.
pub(super) async fn mcp(cli: &Cli, endpoint: Option<&str>, data_dir: Option<&Path>) -> anyhow::Result<i32> {
    let mut extra = Vec::new();
    if let Some(d) = data_dir {
        extra.push(("data_dir".to_string(), d.display().to_string()));
    }
    let settings = cli.settings(&extra)?;
    crate::telemetry::tracing_setup::init(&settings.log);
    let endpoint = endpoint.map_or(settings.bus.ingress.clone(), str::to_string);
    tracing::info!(endpoint, "MCP server on stdio");
    let door =
        Door::new(endpoint, settings.data_dir.clone(), settings.tasks.call_timeout()).with_token(cli.token.clone());
    serve_stdio(McpServer::new(door, None)).await?;
    Ok(0)
}
