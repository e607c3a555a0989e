//! DreamingModeAgent's consolidation planning (duplicate detection by
//! prefix filtering, promotion, summary groups) over 1 000, 10 000 and
//! 50 000 memories, in memory (no store, no model): the CPU a run spends
//! before its one transaction and its model calls.
//!
//! Memories are generated deterministically: 12-word facts drawn from a
//! 5 000-word vocabulary, 5 % exact copies (case changed) and 5 % near
//! copies (one word added) of earlier ones. Printed to stderr for each size:
//! one planning's time and what it found; criterion then measures the
//! 10 000 case.
//!
//! Run: `cargo bench --bench dreaming`.

use std::hint::black_box;
use std::time::Instant;

use agentvisor::agents::builtin::dreaming::dry_plan;
use agentvisor::config::knowledge::{DreamingSettings, MemoryTierSettings};
use agentvisor::store::memory::Memory;
use criterion::{Criterion, criterion_group, criterion_main};

/// Memories of each size.
const SIZES: [usize; 3] = [1_000, 10_000, 50_000];

/// `n` memories, 10 % of them planted duplicates.
fn memories(n: usize) -> Vec<Memory> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut texts: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let text = match i % 20 {
            7 if i > 0 => texts[(next() as usize) % i].to_uppercase(),
            13 if i > 0 => format!("{} indeed", texts[(next() as usize) % i]),
            _ => (0..12).map(|_| format!("w{}", next() % 5_000)).collect::<Vec<_>>().join(" "),
        };
        texts.push(text);
    }
    texts.into_iter().enumerate().map(|(i, t)| Memory::new(format!("m{i}"), i as f64, "fact".into(), t, 0.5)).collect()
}

fn bench(c: &mut Criterion) {
    let settings = DreamingSettings::default();
    let tiers = MemoryTierSettings::default();
    let now = 1e9;
    for n in SIZES {
        let ms = memories(n);
        let t0 = Instant::now();
        let plan = dry_plan(ms, &settings, &tiers, now);
        eprintln!("dreaming plan over {n} memories: {:.1} ms, {plan:?}", t0.elapsed().as_secs_f64() * 1e3);
    }
    let ms = memories(10_000);
    c.bench_function("dreaming_plan_10k", |b| b.iter(|| black_box(dry_plan(ms.clone(), &settings, &tiers, now))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
