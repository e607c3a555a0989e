//! `agentvisor bench`: the benchmarks.
//!
//! - `bench [bus]` ([`bus`]): the load generator over the ZeroMQ ingress;
//!   with `--baseline`, alternating rounds against a bare zmq.rs ROUTER echo
//!   and the daemon; `bench echo` serves that echo in its own process.
//! - `bench gateway` ([`gateway`]): `POST /v1/chat/completions` against the
//!   upstream directly and through agentvisor, in alternating rounds.
//! - `bench upstream` ([`gateway`]): the fixed-answer upstream, served.
//!
//! A comparison runs the same load against a baseline and against
//! agentvisor, alternating within one run (baseline, agentvisor, baseline,
//! ...), so that both sides see the same machine state and the result is a
//! ratio from one run: each side's rate and latency percentiles over all its
//! rounds, the rate ratio (agentvisor / baseline, %) and the latency
//! agentvisor adds (p50, p99, ms). Text: one line per round and side as it
//! finishes, a table, the verdict line; `--json`: one JSON object.

mod bus;
mod gateway;

use serde_json::{Map, Value, json};

use super::{BenchArgs, BenchMode, Cli};
use crate::telemetry::latency::{Samples, Summary};

/// Runs the benchmark `args` asks for; its exit code (0 when nothing failed).
pub(super) async fn bench(cli: &Cli, args: &BenchArgs) -> anyhow::Result<i32> {
    match &args.mode {
        None => bus::load(cli, &args.load).await,
        Some(BenchMode::Bus { load, baseline: false, .. }) => bus::load(cli, load).await,
        Some(BenchMode::Bus { load, baseline: true, rounds, echo }) => {
            bus::baseline(cli, load, *rounds, echo.as_deref()).await
        }
        Some(BenchMode::Echo { listen, task_type, input, endpoint }) => {
            bus::echo(cli, listen, task_type, input, endpoint.as_deref()).await
        }
        Some(BenchMode::Gateway(g)) => gateway::gateway(cli, g).await,
        Some(BenchMode::Upstream { listen }) => gateway::upstream(listen).await,
    }
}

/// What one side counts: `tasks` or `requests`, and its rate's unit.
#[derive(Debug, Clone, Copy)]
struct Unit {
    /// Plural noun: `tasks`, `requests`.
    what: &'static str,
    /// Rate unit in text: `tasks/s`, `req/s`.
    rate: &'static str,
}

/// One side of a comparison: its name, target and what its rounds measured.
#[derive(Debug)]
struct Side {
    name: &'static str,
    target: String,
    samples: Samples,
    rounds: Vec<Summary>,
}

impl Side {
    fn new(name: &'static str, target: String) -> Side {
        Side { name, target, samples: Samples::default(), rounds: Vec::new() }
    }
}

/// The two sides after their rounds, and what they compare to.
#[derive(Debug)]
struct Comparison {
    baseline: Side,
    subject: Side,
    base: Summary,
    summary: Summary,
    unit: Unit,
}

impl Comparison {
    /// `subject` req/s (or tasks/s) as a percentage of `baseline`'s.
    fn ratio_percent(&self) -> f64 {
        if self.base.per_second > 0.0 { 100.0 * self.summary.per_second / self.base.per_second } else { 0.0 }
    }

    fn errors(&self) -> usize {
        self.base.errors + self.summary.errors
    }

    /// `{SETTINGS.., BASELINE: SIDE, SUBJECT: SIDE, "ratio_percent", "added_p50_ms", "added_p99_ms"}`
    /// where SIDE is `{"target", WHAT, "ok", "errors", "seconds", WHAT_per_second, "p50_ms", "p99_ms", "max_ms", "rounds": [..]}`.
    fn to_json(&self, settings: Value) -> Value {
        let mut out = match settings {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for (side, total) in [(&self.baseline, &self.base), (&self.subject, &self.summary)] {
            let mut v = summary_json(total, self.unit);
            v.insert("target".into(), json!(side.target));
            let rounds: Vec<Value> = side.rounds.iter().map(|r| Value::Object(summary_json(r, self.unit))).collect();
            v.insert("rounds".into(), Value::Array(rounds));
            out.insert(side.name.into(), Value::Object(v));
        }
        out.insert("ratio_percent".into(), json!(self.ratio_percent()));
        out.insert("added_p50_ms".into(), json!(self.summary.p50_ms - self.base.p50_ms));
        out.insert("added_p99_ms".into(), json!(self.summary.p99_ms - self.base.p99_ms));
        Value::Object(out)
    }

    /// The table and the verdict line; `how` ends the verdict (the settings).
    fn print(&self, how: &str) {
        let Unit { what, rate } = self.unit;
        let width = self.baseline.name.len().max(self.subject.name.len());
        println!(
            "{:width$}  {what:>9}  {:>6}  {rate:>9}  {:>8}  {:>8}  {:>8}",
            "", "errors", "p50 ms", "p99 ms", "max ms"
        );
        for (side, s) in [(&self.baseline, &self.base), (&self.subject, &self.summary)] {
            println!(
                "{:width$}  {:>9}  {:>6}  {:>9.0}  {:>8.3}  {:>8.3}  {:>8.3}  {}",
                side.name, s.count, s.errors, s.per_second, s.p50_ms, s.p99_ms, s.max_ms, side.target
            );
        }
        println!(
            "{} adds p50 {:+.3} ms, p99 {:+.3} ms; {rate} {:.1} % of {} ({how})",
            self.subject.name,
            self.summary.p50_ms - self.base.p50_ms,
            self.summary.p99_ms - self.base.p99_ms,
            self.ratio_percent(),
            self.baseline.name,
        );
    }
}

/// The map of one summary, with the unit's names: `{WHAT, "ok", "errors",
/// "seconds", WHAT_per_second, "p50_ms", "p99_ms", "max_ms"}`.
fn summary_json(s: &Summary, unit: Unit) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(unit.what.into(), json!(s.count));
    m.insert("ok".into(), json!(s.ok));
    m.insert("errors".into(), json!(s.errors));
    m.insert("seconds".into(), json!(s.seconds));
    m.insert(format!("{}_per_second", unit.what), json!(s.per_second));
    m.insert("p50_ms".into(), json!(s.p50_ms));
    m.insert("p99_ms".into(), json!(s.p99_ms));
    m.insert("max_ms".into(), json!(s.max_ms));
    m
}

/// Runs `rounds` rounds of `run(0)` (the baseline) then `run(1)` (agentvisor);
/// prints each side's round as it finishes unless `quiet`.
async fn alternate(
    mut sides: [Side; 2],
    rounds: usize,
    unit: Unit,
    quiet: bool,
    mut run: impl AsyncFnMut(usize) -> anyhow::Result<Samples>,
) -> anyhow::Result<Comparison> {
    let width = sides[0].name.len().max(sides[1].name.len());
    for round in 1..=rounds {
        for (i, side) in sides.iter_mut().enumerate() {
            let mut samples = run(i).await?;
            let s = samples.summary();
            if !quiet {
                println!(
                    "round {round}/{rounds}  {:width$}  {} {}, {} errors in {:.2} s: {:.0} {}; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    side.name,
                    s.count,
                    unit.what,
                    s.errors,
                    s.seconds,
                    s.per_second,
                    unit.rate,
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms
                );
            }
            side.rounds.push(s);
            side.samples.merge(samples);
        }
    }
    let [mut baseline, mut subject] = sides;
    let (base, summary) = (baseline.samples.summary(), subject.samples.summary());
    Ok(Comparison { baseline, subject, base, summary, unit })
}
