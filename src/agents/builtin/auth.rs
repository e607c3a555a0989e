//! AuthenticationAgent: API tokens and web-UI sessions over the daemon's
//! token table ([`crate::agents::auth`]). The doors check tokens without
//! this agent (the check is in-process and cheap); the agent makes, checks
//! and revokes them by task, as `agentvisor token` does on the store file.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `auth.token_create` | `{"subject", "scopes": ["tasks"\|"admin"\|"read"], "expires_in_seconds"?, "name"?}` | `{"token_id", "token", "subject", "scopes", "expires_at"}` (the token is shown only here) |
//! | `auth.token_verify` | `{"token"}` | `{"valid", "token_id"?, "subject"?, "scopes"?, "expires_at"?, "reason"?: "unknown"\|"expired"\|"revoked"}` |
//! | `auth.token_revoke` | `{"token_id"}` | `{"token_id", "revoked"}` (`false`: already revoked) |
//! | `auth.session` | `{"token", "ttl_seconds"?}` | `{"session_id", "subject", "scopes", "expires_at"}` |
//!
//! Errors: an unknown `token_id` is `not_found`; a static token (from
//! `auth.tokens_file` or `AGENTVISOR_TOKEN`) cannot be revoked by task
//! (`invalid_field`); a session for an unusable token is `unauthorized`.
//! `auth.token_create` and `auth.token_revoke` need the `admin` scope
//! (`auth.admin_tasks`).

use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::resources::Positive;
use super::{Answer, Behaviour, Name, unknown_type};
use crate::agents::auth::{Auth, Created, Scope, Session, Verified};
use crate::agents::tasks::{RustTask, decode, encode, rust_task};
use crate::core::{ErrorCode, Task, TaskError};

/// The agent's name.
pub(crate) const AGENT: &str = "AuthenticationAgent";

/// The task types of AuthenticationAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<CreateInput, Created>(
            "auth.token_create",
            "Creates an API token for a subject with scopes and an expiry; the token is shown only in this answer",
            || {
                vec![
                    json!({"subject": "alice", "scopes": ["tasks", "read"], "expires_in_seconds": 2_592_000, "name": "alice laptop"}),
                ]
            },
        ),
        rust_task::<TokenInput, Verified>(
            "auth.token_verify",
            "Checks a token: valid or not, and its subject, scopes and expiry",
            || vec![json!({"token": "av_5f0c1e7a9b2d4c6e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d2e4f6a8b0c1d3e"})],
        ),
        rust_task::<RevokeInput, Revoked>("auth.token_revoke", "Revokes a token by its id", || {
            vec![json!({"token_id": "tok_1a2b3c4d5e6f7a8b"})]
        }),
        rust_task::<SessionInput, Session>(
            "auth.session",
            "Logs in to the web UI: exchanges a valid token for a session id (the cookie's value) with the same subject and scopes",
            || {
                vec![
                    json!({"token": "av_5f0c1e7a9b2d4c6e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d2e4f6a8b0c1d3e", "ttl_seconds": 43_200}),
                ]
            },
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    /// Who the token is for; becomes the task envelope's `user`.
    subject: Name,
    /// What it may do: `tasks` (run tasks), `admin` (everything), `read` (GET routes, metrics).
    #[schemars(length(min = 1))]
    scopes: Vec<Scope>,
    /// Lifetime, seconds; default: no expiry.
    #[serde(default)]
    expires_in_seconds: Option<Positive>,
    /// A label to recognise the token by in listings.
    #[serde(default)]
    name: Option<Name>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TokenInput {
    /// The token.
    token: Name,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RevokeInput {
    /// The token's id (`agentvisor token list`).
    token_id: Name,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    /// A usable token.
    token: Name,
    /// Session lifetime, seconds; default `auth.session_ttl_secs`, never past the token's expiry.
    #[serde(default)]
    ttl_seconds: Option<Positive>,
}

#[derive(Serialize, JsonSchema)]
struct Revoked {
    /// The token's id.
    token_id: String,
    /// `false` when it was already revoked.
    revoked: bool,
}

/// The AuthenticationAgent behaviour.
pub struct Authentication {
    auth: Arc<Auth>,
}

impl Authentication {
    /// The behaviour over the daemon's token table.
    pub(crate) fn new(auth: Arc<Auth>) -> Authentication {
        Authentication { auth }
    }
}

#[async_trait]
impl Behaviour for Authentication {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "auth.token_create" => {
                let CreateInput { subject, scopes, expires_in_seconds, name } = decode(t, &task.input)?;
                if scopes.is_empty() {
                    return Err(TaskError::new(
                        ErrorCode::InvalidField,
                        format!("input of {t} at /scopes: give at least one"),
                    ));
                }
                let created =
                    self.auth.create(&subject.0, &scopes, expires_in_seconds.map(|p| p.0), name.map(|n| n.0)).await?;
                tracing::info!(token_id = %created.token_id, subject = %created.subject, "API token created by task");
                encode(t, &created)
            }
            "auth.token_verify" => {
                let TokenInput { token } = decode(t, &task.input)?;
                encode(t, self.auth.verify(&token.0))
            }
            "auth.token_revoke" => {
                let RevokeInput { token_id } = decode(t, &task.input)?;
                let revoked = self.auth.revoke(&token_id.0).await?;
                tracing::info!(token_id = %token_id.0, revoked, "API token revoked by task");
                encode(t, Revoked { token_id: token_id.0, revoked })
            }
            "auth.session" => {
                let SessionInput { token, ttl_seconds } = decode(t, &task.input)?;
                encode(t, self.auth.session(&token.0, ttl_seconds.map(|p| p.0)).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}
