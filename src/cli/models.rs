//! `agentvisor models fetch|list`: local model files.
//!
//! `fetch` downloads and verifies the default model and prints `already
//! present: PATH` or `installed: PATH (sha256 verified)`. `list` prints the
//! GGUF files of `models_dir` as a table (model, state, file bytes,
//! parameters, context, loaded bytes, path), or with `--json` one JSON object
//! per line; the states come from a daemon answering on `bus.ingress`, else a
//! note says they are unknown. Exit code 0.

use std::path::{Path, PathBuf};

use super::{Cli, ModelsAction};
use crate::config::Settings;

/// Runs `action` on `models_dir` (default: the `models_dir` setting).
pub(super) async fn models(cli: &Cli, action: &ModelsAction, models_dir: Option<&Path>) -> anyhow::Result<i32> {
    let mut extra = Vec::new();
    if let Some(d) = models_dir {
        extra.push(("models_dir".to_string(), d.display().to_string()));
    }
    let settings = cli.settings(&extra)?;
    let dir = settings.models_dir.clone();
    match action {
        ModelsAction::Fetch => fetch(dir).await?,
        ModelsAction::List { json } => list(&settings, &dir, models_dir.is_some(), *json).await?,
    }
    Ok(0)
}

/// `models fetch`: installs the default model into `dir` unless present.
async fn fetch(dir: PathBuf) -> anyhow::Result<()> {
    let fetched = tokio::task::spawn_blocking(move || crate::models::fetch_default(&dir)).await??;
    match fetched {
        crate::models::Fetched::AlreadyPresent(p) => println!("already present: {}", p.display()),
        crate::models::Fetched::Installed(p) => {
            println!("installed: {} (sha256 verified)", p.display())
        }
    }
    Ok(())
}

/// `models list`: the files of `dir`, with their states when the daemon
/// answers (asked only for the configured folder, not for `--models-dir`).
async fn list(settings: &Settings, dir: &Path, other_dir: bool, json: bool) -> anyhow::Result<()> {
    // States come from the running daemon (ModelManagerSuite); without one, or for
    // another folder (`--models-dir`), files only.
    let ask = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(), "type": "models.list", "input": null, "deadline_ms": 2000,
    });
    let wait = std::time::Duration::from_secs(2);
    let live = if other_dir {
        None
    } else {
        tokio::time::timeout(wait, crate::bus::client::send(&settings.bus.ingress, &ask, wait, |_| {}))
            .await
            .ok()
            .and_then(Result::ok)
            .filter(|r| r.status == "ok")
            .and_then(|r| r.output)
            .and_then(|o| o.get("models").and_then(|m| m.as_array()).cloned())
    };
    let daemon = live.is_some();
    let rows: Vec<serde_json::Value> = match live {
        Some(rows) => rows,
        None => crate::models::scan(dir)?
            .into_iter()
            .map(|m| {
                let mut v = serde_json::to_value(&m).unwrap_or_default();
                v["estimated_bytes"] = serde_json::json!(m.estimated_bytes(settings.models.context_tokens));
                v
            })
            .collect(),
    };
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!(
            "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}  PATH",
            "MODEL", "STATE", "FILE_BYTES", "PARAMETERS", "CONTEXT", "LOADED_BYTES"
        );
        let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
        for r in &rows {
            println!(
                "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}  {}",
                r["name"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("-"),
                num(&r["size_bytes"]),
                num(&r["parameters"]),
                num(&r["context_length"]),
                num(&r["loaded_bytes"]),
                r["path"].as_str().unwrap_or("")
            );
        }
        if rows.is_empty() {
            println!("(no GGUF files in {}; run `agentvisor models fetch`)", dir.display());
        }
        if !daemon && !other_dir {
            println!("(no daemon answered on {}: states unknown)", settings.bus.ingress);
        }
    }
    Ok(())
}
