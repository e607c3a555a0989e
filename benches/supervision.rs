//! Benchmarks of the supervision tree on the real actors, the repository's
//! catalog (`agents/`) and the `full` profile (`profiles/full.yaml`).
//!
//! - `boot_full`: `System::start` + `Fleet::boot` of the `full` profile, up
//!   to the boot report (every agent of the boot waves `running` or
//!   `unavailable`). TTSService runs its real child program
//!   (`python3 agents/speech_io/tts_service.py`).
//! - `boot_full_in_process`: the same with `agent_commands.TTSService: []`,
//!   so no child process starts (TTSService is `unavailable` at once): the
//!   in-process part of boot alone. Target: < 500 ms.
//! - `lazy_start_2_deep`: on a booted fleet, `Fleet::ensure("GoTToTAgent")`
//!   with ChainOfThoughtAgent and GoTToTAgent both `dormant`, so the
//!   on-demand start brings up two agents, one after the other. Target:
//!   median < 5 ms.
//! - `crash_to_running`: a panic injected into SessionMemoryAgent (an
//!   essential builtin agent nothing depends on) until its
//!   `agent.restarted` event, with zero backoff. Target: median < 5 ms.
//!
//! Only the measured part is timed (`iter_custom`): shutdowns and rollbacks
//! between iterations are not. Each fleet gets its own actor-name prefix,
//! since ractor's name registry is process-wide.
//!
//! Besides criterion's report, each benchmark prints one line to stderr
//! with the p50 and p99 of every individually timed iteration (warm-up
//! included; nearest-rank percentiles).
//!
//! Run: `cargo bench --bench supervision`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentvisor::config::Settings;
use agentvisor::daemon::System;
use agentvisor::daemon::load_plan;
use agentvisor::supervisor::Fault;
use agentvisor::supervisor::{AgentState, Fleet};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::broadcast::error::TryRecvError;

/// The profile every benchmark runs.
const PROFILE: &str = "full";
/// Deadline of the untimed shutdowns.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for one restart before the benchmark gives up.
const RESTART_WAIT: Duration = Duration::from_secs(10);
/// The crash target: essential, builtin, and no agent depends on it (so a
/// restart tells nobody and restarts no sibling).
const CRASH_AGENT: &str = "SessionMemoryAgent";

static NEXT_FLEET: AtomicU32 = AtomicU32::new(0);

/// Settings for one fleet: the repository's catalog and profiles, `data`
/// as data dir, and an actor-name prefix no other fleet of this process uses.
fn settings(data: &Path) -> Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut s = Settings {
        agents_dir: root.join("agents"),
        profiles_dir: root.join("profiles"),
        data_dir: data.to_path_buf(),
        ..Settings::default()
    };
    s.testing.actor_name_prefix =
        format!("bench{}-{}/", std::process::id(), NEXT_FLEET.fetch_add(1, Ordering::Relaxed));
    s
}

/// Starts and boots a `full` fleet; panics unless every agent of the boot
/// waves ends `running` or `unavailable`.
async fn booted_fleet(settings: Settings) -> System {
    let (catalog, plan) = load_plan(&settings, None, PROFILE).expect("the repository's catalog and profile load");
    let fleet = System::start(settings, catalog, plan).await.expect("fleet starts");
    let report = fleet.boot().await;
    assert_booted(&fleet, &report.failed);
    fleet
}

/// Panics when boot left an agent of the boot waves neither `running` nor
/// `unavailable` (a benchmark of a broken boot measures nothing).
fn assert_booted(fleet: &Fleet, failed: &[(String, String)]) {
    assert!(failed.is_empty(), "boot failed for {failed:?}");
    let ctx = fleet.ctx();
    for agent in ctx.plan.waves.iter().flatten() {
        let state = ctx.state(agent);
        assert!(
            matches!(state, Some(AgentState::Running | AgentState::Unavailable)),
            "{agent} is {state:?} after boot"
        );
    }
}

/// Every individually timed iteration of one benchmark.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<Duration>>>);

impl Samples {
    fn push(&self, d: Duration) {
        self.0.lock().push(d);
    }

    /// Prints `name: p50 … p99 … over n iterations` and whether the median
    /// meets `target` (when there is one).
    fn report(&self, name: &str, target: Option<Duration>) {
        let mut all = self.0.lock().clone();
        if all.is_empty() {
            return;
        }
        all.sort_unstable();
        // Nearest rank: the smallest sample with at least p of all at or below it.
        let pct = |p: f64| all[((p * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p99) = (pct(0.50), pct(0.99));
        let verdict = match target {
            Some(t) if p50 < t => format!("; target p50 < {:.0} ms: met", ms(t)),
            Some(t) => format!("; target p50 < {:.0} ms: MISSED", ms(t)),
            None => String::new(),
        };
        eprintln!(
            "{name}: p50 {:.3} ms, p99 {:.3} ms, min {:.3} ms, max {:.3} ms over {} iterations{verdict}",
            ms(p50),
            ms(p99),
            ms(all[0]),
            ms(all[all.len() - 1]),
            all.len()
        );
    }
}

/// `boot_full` and `boot_full_in_process`.
fn boot(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("supervision");
    // A boot with its child process takes ~0.2 s, plus an untimed shutdown:
    // flat sampling (the same few boots per sample) and a short warm-up.
    group.sampling_mode(SamplingMode::Flat).sample_size(20).warm_up_time(Duration::from_millis(500));
    for (name, in_process, measurement_secs, target) in
        [("boot_full", false, 6, None), ("boot_full_in_process", true, 2, Some(Duration::from_millis(500)))]
    {
        group.measurement_time(Duration::from_secs(measurement_secs));
        let samples = Samples::default();
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let samples = samples.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let mut s = settings(dir.path());
                        if in_process {
                            // An empty command makes the agent `unavailable` without a child.
                            s.agent_commands.insert("TTSService".into(), Vec::new());
                        }
                        let (catalog, plan) = load_plan(&s, None, PROFILE).expect("catalog and profile load");
                        let t0 = Instant::now();
                        let fleet = System::start(s, catalog, plan).await.expect("fleet starts");
                        let report = fleet.boot().await;
                        let elapsed = t0.elapsed();
                        assert_booted(&fleet, &report.failed);
                        let tts = fleet.ctx().state("TTSService");
                        let want = if in_process { AgentState::Unavailable } else { AgentState::Running };
                        assert_eq!(tts, Some(want), "TTSService after boot");
                        fleet.shutdown(SHUTDOWN_DEADLINE).await;
                        samples.push(elapsed);
                        total += elapsed;
                    }
                    total
                }
            })
        });
        samples.report(&format!("supervision/{name}"), target);
    }
    group.finish();
}

/// `lazy_start_2_deep`.
fn lazy_start(c: &mut Criterion, rt: &Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = rt.block_on(booted_fleet(settings(dir.path())));
    let samples = Samples::default();
    let mut group = c.benchmark_group("supervision");
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("lazy_start_2_deep", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (fleet, samples) = (fleet.clone(), samples.clone());
            async move {
                let ctx = fleet.ctx();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: both back to dormant, dependent first. The
                    // `full` profile autoloads ChainOfThoughtAgent, so the
                    // first round stops it too.
                    for agent in ["GoTToTAgent", "ChainOfThoughtAgent"] {
                        fleet.stop_agent(agent, AgentState::Dormant, "bench").await.expect("stop to dormant");
                        assert_eq!(ctx.state(agent), Some(AgentState::Dormant), "{agent} after stop");
                    }
                    let t0 = Instant::now();
                    fleet.ensure("GoTToTAgent").await.expect("on-demand start");
                    let elapsed = t0.elapsed();
                    assert_eq!(ctx.state("ChainOfThoughtAgent"), Some(AgentState::Running));
                    assert_eq!(ctx.state("GoTToTAgent"), Some(AgentState::Running));
                    samples.push(elapsed);
                    total += elapsed;
                }
                total
            }
        })
    });
    group.finish();
    samples.report("supervision/lazy_start_2_deep", Some(Duration::from_millis(5)));
    rt.block_on(fleet.shutdown(SHUTDOWN_DEADLINE));
}

/// `crash_to_running`.
fn crash_restart(c: &mut Criterion, rt: &Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.testing.fault_injection = true;
    s.supervisor.backoff_initial_secs = 0.0;
    s.supervisor.backoff_jitter = 0.0;
    s.supervisor.max_restarts = 1_000_000;
    let fleet = rt.block_on(booted_fleet(s));
    assert_eq!(fleet.ctx().state(CRASH_AGENT), Some(AgentState::Running));
    let samples = Samples::default();

    // The injected panics are expected; keep their messages out of the report.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut group = c.benchmark_group("supervision");
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("crash_to_running", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (fleet, samples) = (fleet.clone(), samples.clone());
            async move {
                let mut rx = fleet.ctx().events.subscribe();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: forget the events of earlier rounds.
                    loop {
                        match rx.try_recv() {
                            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => panic!("event bus closed"),
                        }
                    }
                    let t0 = Instant::now();
                    fleet.inject_fault(CRASH_AGENT, Fault::Panic).expect("fault injected");
                    let restarted = async {
                        loop {
                            let e = rx.recv().await.expect("event bus open, subscriber keeps up");
                            if e.topic == "agent.restarted" && e.str("agent") == Some(CRASH_AGENT) {
                                return;
                            }
                        }
                    };
                    tokio::time::timeout(RESTART_WAIT, restarted).await.expect("agent.restarted in time");
                    let elapsed = t0.elapsed();
                    samples.push(elapsed);
                    total += elapsed;
                }
                total
            }
        })
    });
    group.finish();
    std::panic::set_hook(previous_hook);
    samples.report("supervision/crash_to_running", Some(Duration::from_millis(5)));
    let restarts = fleet.ctx().record(CRASH_AGENT).map(|r| r.restarts).unwrap_or(0);
    eprintln!("supervision/crash_to_running: {CRASH_AGENT} restarted {restarts} times");
    rt.block_on(fleet.shutdown(SHUTDOWN_DEADLINE));
}

fn supervision(c: &mut Criterion) {
    // The fleets and criterion's futures all run on this one runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    boot(c, &rt);
    lazy_start(c, &rt);
    crash_restart(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = supervision
}
criterion_main!(benches);
