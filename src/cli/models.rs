//! `agentvisor models pull|fetch|list|rm`: local model files.
//!
//! `pull REF` downloads a GGUF file (see [`crate::models::pull`]) with a
//! progress bar on a terminal (bytes, rate, ETA) or, when stderr is not a
//! terminal, a plain progress line every 10 %; it prints `installed: PATH
//! (sha256 HEX, verified|recorded)` or `already present: PATH`. `fetch` is
//! `pull smollm2-135m`. `list` prints the GGUF files of `models_dir` as a
//! table (model, state, file bytes, parameters, context, loaded bytes, path),
//! or with `--json` one JSON object per line; the states come from a daemon
//! answering on `bus.ingress`, else a note says they are unknown; `--verify`
//! adds the SHA-256 check. `rm NAME` asks a running daemon to unload the
//! model, then deletes the file and its `.sha256`.
//!
//! Exit codes: 0 done; 1 a refused or failed pull/rm (the error's code and
//! message on stderr), or a `--verify` mismatch.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::models::pull::{self, Progress, PullOptions, Pulled, Source};

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
        ModelsAction::Pull { reference, as_name, sha256 } => {
            let options = PullOptions { as_name: as_name.clone(), sha256: sha256.clone(), stall_timeout: None };
            pull_ref(&dir, reference, &options).await
        }
        ModelsAction::Fetch => pull_ref(&dir, pull::BUILTINS[0].name, &PullOptions::default()).await,
        ModelsAction::List { json, verify } => list(&settings, &dir, models_dir.is_some(), *json, *verify).await,
        ModelsAction::Rm { name } => rm(&settings, &dir, name, models_dir.is_some()).await,
    }
}

/// `models pull REF` (and `fetch`).
async fn pull_ref(dir: &Path, reference: &str, options: &PullOptions) -> anyhow::Result<i32> {
    let result = match Source::parse(reference) {
        Ok(source) => {
            let mut bar = Bar::new(reference);
            let r = pull::pull(dir, &source, options, &mut |p| bar.update(p)).await;
            bar.finish();
            r
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(Pulled::AlreadyPresent { path, .. }) => println!("already present: {}", path.display()),
        Ok(Pulled::Installed { path, sha256, verified, resumed_from }) => {
            let how = if verified { "verified" } else { "recorded" };
            let resumed = if resumed_from > 0 { format!(", resumed from byte {resumed_from}") } else { String::new() };
            println!("installed: {} (sha256 {sha256}, {how}{resumed})", path.display());
        }
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, "models pull failed");
            eprintln!("error: {}: {e}", e.code());
            return Ok(1);
        }
    }
    Ok(0)
}

/// The download's progress: indicatif's bar on a terminal, else a plain line
/// every 10 % (every 16 MiB when the size is unknown).
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    started: Instant,
    next_line: u64,
}

impl Bar {
    fn new(what: &str) -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(format!("pulling {what}"));
            b
        });
        Bar { bar, what: what.to_string(), started: Instant::now(), next_line: 0 }
    }

    fn update(&mut self, p: Progress) {
        if let Some(b) = &self.bar {
            if let Some(t) = p.total {
                b.set_length(t);
            }
            b.set_position(p.done);
            return;
        }
        if p.done < self.next_line && Some(p.done) != p.total {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (p.done - p.resumed_from) as f64 / secs;
        let mib = |n: u64| n as f64 / 1_048_576.0;
        let line = match p.total {
            Some(t) if t > 0 => {
                let eta = if rate > 0.0 { (t - p.done.min(t)) as f64 / rate } else { f64::NAN };
                self.next_line = p.done + (t / 10).max(1);
                format!(
                    "pulling {}: {:.1} / {:.1} MiB ({:.0} %), {:.1} MiB/s, ETA {:.0} s",
                    self.what,
                    mib(p.done),
                    mib(t),
                    p.done as f64 * 100.0 / t as f64,
                    rate / 1_048_576.0,
                    eta
                )
            }
            _ => {
                self.next_line = p.done + (16 << 20);
                format!("pulling {}: {:.1} MiB, {:.1} MiB/s", self.what, mib(p.done), rate / 1_048_576.0)
            }
        };
        if p.resumed_from > 0 && p.done == p.resumed_from {
            eprintln!("pulling {}: resuming from byte {}", self.what, p.resumed_from);
        }
        eprintln!("{line}");
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `models rm NAME`: unload through a running daemon, then delete.
async fn rm(settings: &Settings, dir: &Path, name: &str, other_dir: bool) -> anyhow::Result<i32> {
    let file = match pull::check_file_name(name) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", e.code());
            return Ok(1);
        }
    };
    let path = dir.join(&file);
    if !path.exists() {
        eprintln!("error: unknown_model: no model file {} (see `agentvisor models list`)", path.display());
        return Ok(1);
    }
    let model = file.trim_end_matches(".gguf");
    if !other_dir {
        let ask = serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(), "type": "models.unload", "input": {"model": model}, "deadline_ms": 5000,
        });
        let wait = std::time::Duration::from_secs(5);
        let reply = tokio::time::timeout(wait, crate::bus::client::send(&settings.bus.ingress, &ask, wait, |_| {}))
            .await
            .ok()
            .and_then(Result::ok);
        if let Some(e) = reply.filter(|r| r.status != "ok").and_then(|r| r.error) {
            let code = e.code.as_str();
            // Not loaded, or no model manager in this profile: nothing to unload.
            let not_loaded = code == "invalid_field" && e.message.starts_with("unknown_model");
            if !(not_loaded || matches!(code, "unknown_task_type" | "agent_not_running" | "agent_unavailable")) {
                eprintln!("error: {code}: the daemon did not unload {model}: {}", e.message);
                return Ok(1);
            }
        }
    }
    std::fs::remove_file(&path)?;
    let _ = std::fs::remove_file(pull::sha256_path(&path));
    println!("removed: {}", path.display());
    Ok(0)
}

/// `models list`: the files of `dir`, with their states when the daemon
/// answers (asked only for the configured folder, not for `--models-dir`).
async fn list(settings: &Settings, dir: &Path, other_dir: bool, json: bool, verify: bool) -> anyhow::Result<i32> {
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
    let mut rows: Vec<serde_json::Value> = match live {
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
    let mut mismatches = 0;
    if verify {
        for r in &mut rows {
            let Some(path) = r["path"].as_str().map(PathBuf::from) else { continue };
            let state = match pull::recorded_sha256(&path) {
                None => "unrecorded",
                Some(want) => match tokio::task::spawn_blocking(move || pull::hash_file(&path)).await? {
                    Ok(have) if have == want => "ok",
                    Ok(_) => {
                        mismatches += 1;
                        "MISMATCH"
                    }
                    Err(e) => {
                        mismatches += 1;
                        eprintln!("error: {}: {e}", e.code());
                        "unreadable"
                    }
                },
            };
            r["sha256_check"] = serde_json::json!(state);
        }
    }
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        let check = |r: &serde_json::Value| {
            if verify { format!(" {:<10}", r["sha256_check"].as_str().unwrap_or("-")) } else { String::new() }
        };
        println!(
            "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}{}  PATH",
            "MODEL",
            "STATE",
            "FILE_BYTES",
            "PARAMETERS",
            "CONTEXT",
            "LOADED_BYTES",
            if verify { " SHA256    " } else { "" }
        );
        let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
        for r in &rows {
            println!(
                "{:<36} {:<10} {:>12} {:>12} {:>7} {:>14}{}  {}",
                r["name"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("-"),
                num(&r["size_bytes"]),
                num(&r["parameters"]),
                num(&r["context_length"]),
                num(&r["loaded_bytes"]),
                check(r),
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
    if mismatches > 0 {
        eprintln!("error: model_checksum: {mismatches} file(s) do not match their recorded sha256");
        return Ok(1);
    }
    Ok(0)
}
