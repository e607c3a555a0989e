//! `agentvisor send`: send one task over ZeroMQ and print the answer.
//!
//! Prints the output on stdout (a string as is, other JSON pretty-printed;
//! with `--stream` the deltas as they come), an error as `error: CODE:
//! MESSAGE` and the timings line on stderr; with `--json` the chunks and the
//! reply envelope as JSON lines. Exit code 0 when the reply's status is `ok`,
//! else 1.

use super::Cli;

/// Text, or JSON when it parses as JSON.
pub(super) fn parse_input(input: &str) -> serde_json::Value {
    serde_json::from_str(input).unwrap_or_else(|_| serde_json::Value::String(input.to_string()))
}

/// Sends one task of `task_type` to `endpoint` (default: `bus.ingress`) and
/// prints the reply; exit code 0 when it is `ok`, else 1.
#[expect(clippy::too_many_arguments, reason = "the fields of `Command::Send`, as clap parsed them")]
pub(super) async fn send(
    cli: &Cli,
    task_type: &str,
    input: &str,
    agent: Option<&str>,
    priority: u8,
    stream: bool,
    json: bool,
    timeout: f64,
    endpoint: Option<&str>,
) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    let endpoint = endpoint.map_or(settings.bus.ingress, str::to_string);
    let id = uuid::Uuid::new_v4().to_string();
    let mut env = serde_json::json!({
        "id": id, "type": task_type, "input": parse_input(input), "priority": priority,
        "stream": stream, "deadline_ms": (timeout * 1000.0) as u64,
    });
    if let Some(a) = agent {
        env["agent"] = serde_json::json!(a);
    }
    if let Some(t) = &cli.token {
        env["token"] = serde_json::json!(t);
    }
    let json_out = json;
    let reply = crate::bus::client::send(&endpoint, &env, std::time::Duration::from_secs_f64(timeout + 1.0), |chunk| {
        if json_out {
            println!("{chunk}");
        } else if let Some(d) = chunk.get("delta").and_then(|d| d.as_str()) {
            use std::io::Write;
            print!("{d}");
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    if json_out {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        if stream {
            println!();
        }
        match (&reply.output, &reply.error) {
            (Some(serde_json::Value::String(s)), _) if !stream => println!("{s}"),
            (Some(v), _) if !stream => println!("{}", serde_json::to_string_pretty(v)?),
            (_, Some(e)) => eprintln!("error: {}: {}", e.code, e.message),
            _ => {}
        }
        if let Some(t) = reply.timings_ms {
            eprintln!(
                "agent {} · {} · total {:.2} ms (queue {:.2}, start {:.2}, backend {:.2})",
                reply.agent.as_deref().unwrap_or("-"),
                reply.status,
                t.total,
                t.queue,
                t.start,
                t.backend
            );
        }
    }
    Ok(if reply.status == "ok" { 0 } else { 1 })
}
