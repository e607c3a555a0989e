//! The earlier system's routing benchmark (`scripts/routing_benchmark.py`,
//! "Routing selects cloud for >= 95% heavy tasks") on [`Policy::decide`].
//!
//! - 120 tasks: 60 heavy (10 each of code_generation,
//!   large_context_reasoning, training, fine_tuning, complex_analysis,
//!   multi_step_reasoning) and 60 light (10 each of simple_chat, greeting,
//!   command_parsing, emotion_detection, short_translation, basic_qa), plus
//!   edge cases with user preferences and explicit complexity.
//! - Config: the default routing rules and one backend per tier (`local`
//!   embedded L1, `fast` openai L2, `large` openai L3), each behind a
//!   closed circuit breaker.
//! - Each task's agent default complexity comes from the repository's
//!   catalog (`agents/`): the agent that handles the task type, its
//!   `runtime.complexity` when it is an `llm` agent, else 0.5.
//!
//! Printed once to stderr: heavy→cloud accuracy (all 60, and the four heavy
//! types the rules name: target 100 %), light→local accuracy, the edge
//! cases, then p50/p99 of 100 000 individually timed decisions (nearest
//! rank) and the throughput of 100 000 back-to-back decisions. Criterion
//! then measures `decide` on its own. Targets: p99 < 20 µs.
//!
//! Run: `cargo bench --bench routing`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::config::catalog::Catalog;
use agentvisor::config::spec::RuntimeSpec;
use agentvisor::config::{BackendSettings, Prefer, RoutingSettings, Tier};
use agentvisor::routing::breaker::CircuitBreaker;
use agentvisor::routing::policy::{Decision, Policy, RouteInput, tier_str};
use criterion::{Criterion, criterion_group, criterion_main};

/// Heavy task types of the earlier benchmark; the first four are named by the default rules.
const HEAVY: [&str; 6] = [
    "code_generation",
    "large_context_reasoning",
    "training",
    "fine_tuning",
    "complex_analysis",
    "multi_step_reasoning",
];
/// How many heavy types the default rules name (the first ones of `HEAVY`).
const HEAVY_BY_RULE: usize = 4;
/// Light task types of the earlier benchmark.
const LIGHT: [&str; 6] =
    ["simple_chat", "greeting", "command_parsing", "emotion_detection", "short_translation", "basic_qa"];
/// Tasks per type.
const PER_TYPE: usize = 10;
/// Decisions timed for the percentiles and the throughput.
const SAMPLES: usize = 100_000;
/// Agent default for task types no `llm` agent handles (the spec's default).
const DEFAULT_COMPLEXITY: f64 = 0.5;

/// `local` (embedded, L1), `fast` (openai, L2), `large` (openai, L3).
fn backends() -> BTreeMap<String, BackendSettings> {
    let yaml = r#"
local: {kind: embedded, tier: L1, model: tinyllama-1.1b-chat.Q4_K_M.gguf}
fast: {kind: openai, tier: L2, base_url: "https://api.deepinfra.com/v1/openai", api_key_env: DEEPINFRA_API_KEY, model: meta-llama/Meta-Llama-3-70B-Instruct}
large: {kind: openai, tier: L3, base_url: "https://generativelanguage.googleapis.com/v1beta/openai", api_key_env: GEMINI_API_KEY, model: gemini-1.5-pro, context_tokens: 1000000}
"#;
    // A literal document of the schema: fails only if the schema changes.
    serde_norway::from_str(yaml).expect("benchmark backends parse")
}

/// The agent default complexity of `task_type`, from the catalog.
fn agent_complexity(catalog: &Catalog, task_type: &str) -> f64 {
    let spec = catalog.handlers.get(task_type).and_then(|agent| catalog.get(agent));
    match spec.map(|s| &s.runtime) {
        Some(RuntimeSpec::Llm { complexity, .. }) => *complexity,
        _ => DEFAULT_COMPLEXITY,
    }
}

/// Prompt size of a task: large-context reasoning carries a long document.
fn context_tokens(task_type: &str, i: usize) -> u32 {
    if task_type == "large_context_reasoning" { 40_000 + 1_000 * i as u32 } else { 200 + 50 * i as u32 }
}

struct Task {
    task_type: &'static str,
    agent_complexity: f64,
    context_tokens: u32,
    heavy: bool,
}

fn tasks(catalog: &Catalog) -> Vec<Task> {
    let mut out = Vec::with_capacity(2 * HEAVY.len() * PER_TYPE);
    for (types, heavy) in [(&HEAVY, true), (&LIGHT, false)] {
        for &task_type in types {
            let agent_complexity = agent_complexity(catalog, task_type);
            for i in 0..PER_TYPE {
                out.push(Task { task_type, agent_complexity, context_tokens: context_tokens(task_type, i), heavy });
            }
        }
    }
    out
}

fn input(task: &Task) -> RouteInput<'static> {
    RouteInput {
        context_tokens: task.context_tokens,
        local_load_percent: Some(35.0),
        ..RouteInput::new(task.task_type, task.agent_complexity)
    }
}

fn is_cloud(d: &Decision) -> bool {
    d.tier != Tier::L1
}

fn percent(hits: usize, total: usize) -> f64 {
    100.0 * hits as f64 / total as f64
}

/// Nearest-rank percentile of sorted samples.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn routing(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog = Catalog::load(&root.join("agents")).unwrap_or_else(|e| panic!("catalog agents/: {e}"));
    let backends = backends();
    let routing = RoutingSettings::default();
    let policy = Policy::new(&routing, &backends).unwrap_or_else(|e| panic!("{e}"));
    let breakers: HashMap<String, CircuitBreaker> =
        backends.keys().map(|name| (name.clone(), CircuitBreaker::new(&routing.breaker))).collect();
    let now = Instant::now();
    let available = |name: &str| breakers.get(name).is_some_and(|b| b.would_allow(now));
    let decide = |input: &RouteInput<'_>| policy.decide(input, &available).unwrap_or_else(|e| panic!("{e}"));

    // Accuracy.
    let tasks = tasks(&catalog);
    let (mut heavy_cloud, mut heavy_total, mut named_cloud, mut named_total) = (0, 0, 0, 0);
    let (mut light_local, mut light_total) = (0, 0);
    let mut tiers: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for task in &tasks {
        let d = decide(&input(task));
        *tiers.entry(task.task_type).or_default().entry(tier_str(d.tier)).or_default() += 1;
        if task.heavy {
            heavy_total += 1;
            heavy_cloud += usize::from(is_cloud(&d));
            if HEAVY[..HEAVY_BY_RULE].contains(&task.task_type) {
                named_total += 1;
                named_cloud += usize::from(is_cloud(&d));
            }
        } else {
            light_total += 1;
            light_local += usize::from(!is_cloud(&d));
        }
    }
    eprintln!("routing benchmark: {} tasks, default rules, backends local (L1) fast (L2) large (L3)", tasks.len());
    for task_type in HEAVY.iter().chain(LIGHT.iter()) {
        eprintln!(
            "  {task_type:<24} agent default {:.2} -> {:?}",
            agent_complexity(&catalog, task_type),
            tiers.get(task_type).cloned().unwrap_or_default()
        );
    }
    eprintln!(
        "heavy -> cloud: {heavy_cloud}/{heavy_total} = {:.1} %; the four rule-named types: {named_cloud}/{named_total} = {:.1} % (target 100 %)",
        percent(heavy_cloud, heavy_total),
        percent(named_cloud, named_total)
    );
    eprintln!("light -> local: {light_local}/{light_total} = {:.1} %", percent(light_local, light_total));

    // Edge cases.
    let code = agent_complexity(&catalog, "code_generation");
    let greeting = agent_complexity(&catalog, "greeting");
    let edges: [(&str, RouteInput<'static>); 8] = [
        (
            "prefer local on code_generation",
            RouteInput { prefer: Some(Prefer::Local), ..RouteInput::new("code_generation", code) },
        ),
        ("prefer local on training", RouteInput { prefer: Some(Prefer::Local), ..RouteInput::new("training", 0.5) }),
        (
            "prefer cloud on greeting",
            RouteInput { prefer: Some(Prefer::Cloud), ..RouteInput::new("greeting", greeting) },
        ),
        (
            "explicit 0.2 on code_generation",
            RouteInput { complexity: Some(0.2), ..RouteInput::new("code_generation", code) },
        ),
        ("explicit 0.9 on greeting", RouteInput { complexity: Some(0.9), ..RouteInput::new("greeting", greeting) }),
        (
            "greeting at 95 % local load",
            RouteInput { local_load_percent: Some(95.0), ..RouteInput::new("greeting", greeting) },
        ),
        (
            "greeting, model memory exhausted",
            RouteInput { free_model_memory_bytes: Some(0), ..RouteInput::new("greeting", greeting) },
        ),
        (
            "code_generation, 100k context",
            RouteInput { context_tokens: 100_000, ..RouteInput::new("code_generation", code) },
        ),
    ];
    eprintln!("edge cases:");
    for (name, edge) in &edges {
        let d = decide(edge);
        eprintln!("  {name:<36} {} chain {:?} fallbacks {:?}: {}", tier_str(d.tier), d.chain, d.fallbacks, d.reason);
    }
    let cloud_dead = |name: &str| name == "local";
    let d = policy.decide(&RouteInput::new("code_generation", code), &cloud_dead).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "  {:<36} {} chain {:?} fallbacks {:?}",
        "code_generation, cloud breakers open",
        tier_str(d.tier),
        d.chain,
        d.fallbacks
    );

    // Latency: each decision timed on its own, then back to back.
    let inputs: Vec<RouteInput<'static>> = tasks.iter().map(input).chain(edges.iter().map(|(_, e)| *e)).collect();
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let input = &inputs[i % inputs.len()];
        let start = Instant::now();
        black_box(decide(black_box(input)));
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let start = Instant::now();
    for i in 0..SAMPLES {
        black_box(decide(black_box(&inputs[i % inputs.len()])));
    }
    let elapsed = start.elapsed();
    eprintln!(
        "decide over {SAMPLES} decisions: p50 {:?}, p99 {:?}, max {:?} (target p99 < 20 µs); throughput {:.0} decisions/s",
        nearest_rank(&samples, 50.0),
        nearest_rank(&samples, 99.0),
        samples[samples.len() - 1],
        SAMPLES as f64 / elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("routing");
    let code_input = input(&tasks[0]);
    group.bench_function("decide_code_generation", |b| b.iter(|| decide(black_box(&code_input))));
    let mut i = 0;
    group.bench_function("decide_mixed", |b| {
        b.iter(|| {
            i = (i + 1) % inputs.len();
            decide(black_box(&inputs[i]))
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
