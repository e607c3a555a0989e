//! `agentvisor events`: print the event stream.
//!
//! Subscribes to the PUB endpoint (default: `bus.events`) and prints one
//! `TOPIC JSON` line per event whose topic starts with `--topic`, until
//! `--count` events (or forever). Exit code 0.

use super::Cli;

/// Prints the events of `endpoint` under `topic`, at most `count` of them.
pub(super) async fn events(
    cli: &Cli,
    topic: &str,
    count: Option<usize>,
    endpoint: Option<&str>,
) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    let endpoint = endpoint.map_or(settings.bus.events, str::to_string);
    crate::bus::client::events(&endpoint, topic, count).await?;
    Ok(0)
}
