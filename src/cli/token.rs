//! `agentvisor token create|list|revoke`: API tokens in the store under
//! `data_dir` ([`crate::agents::auth::offline`]). The daemon need not run;
//! a running one sees the change within `auth.reload_secs`. `create` prints
//! the token once: only its keyed hash is kept.

use std::path::Path;

use serde_json::json;

use super::{Cli, TokenAction};
use crate::agents::auth::{offline, parse_scopes};

/// Runs one `token` action; exit code 0, or 1 when `revoke` names no token.
pub(super) fn token(cli: &Cli, action: &TokenAction, data_dir: Option<&Path>) -> anyhow::Result<i32> {
    let mut extra = Vec::new();
    if let Some(d) = data_dir {
        extra.push(("data_dir".to_string(), d.display().to_string()));
    }
    let settings = cli.settings(&extra)?;
    let dir = settings.data_dir.as_path();
    match action {
        TokenAction::Create { subject, scopes, expires_in, name, json } => {
            let scopes = parse_scopes(scopes).map_err(anyhow::Error::msg)?;
            if subject.trim().is_empty() {
                anyhow::bail!("--subject must not be empty");
            }
            if expires_in.is_some_and(|s| s <= 0.0 || !s.is_finite()) {
                anyhow::bail!("--expires-in must be a positive number of seconds");
            }
            let created = offline::create(dir, subject.trim(), &scopes, *expires_in, name.clone())?;
            if *json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "token {} for {} ({}), expires {}; shown only now — store it; clients send it as \
                     AGENTVISOR_TOKEN / --token, or `Authorization: Bearer` over HTTP",
                    created.token_id,
                    created.subject,
                    created.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                    super::jobs::time(created.expires_at),
                );
            }
            Ok(0)
        }
        TokenAction::List { json } => {
            let rows = offline::list(dir)?;
            if *json {
                for r in &rows {
                    let v = json!({
                        "token_id": r.token_id, "subject": r.subject, "scopes": r.scopes.split(',').collect::<Vec<_>>(),
                        "name": r.name, "created_at": r.created_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at,
                    });
                    println!("{v}");
                }
                return Ok(0);
            }
            println!(
                "{:<21} {:<16} {:<18} {:<20} {:<20} {:<20} NAME",
                "ID", "SUBJECT", "SCOPES", "CREATED", "EXPIRES", "REVOKED"
            );
            for r in &rows {
                println!(
                    "{:<21} {:<16} {:<18} {:<20} {:<20} {:<20} {}",
                    r.token_id,
                    r.subject,
                    r.scopes,
                    super::jobs::time(Some(r.created_at)),
                    super::jobs::time(r.expires_at),
                    super::jobs::time(r.revoked_at),
                    r.name.as_deref().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        TokenAction::Revoke { token_id } => match offline::revoke(dir, token_id)? {
            Some(true) => {
                println!("revoked {token_id}");
                Ok(0)
            }
            Some(false) => {
                println!("{token_id} was already revoked");
                Ok(0)
            }
            None => {
                eprintln!("error: no token with id {token_id}");
                Ok(1)
            }
        },
    }
}
