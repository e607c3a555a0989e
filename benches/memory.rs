//! Memory store and knowledge-base search latency at 10 000 and 100 000
//! entries, on the store functions directly (no bus, no store thread): the
//! cost SQLite itself adds to `memory.store` and `kb.search`.
//!
//! - Each size gets its own database (a temp file, WAL, migrated by
//!   `store::open_connection` like the daemon's), populated in one
//!   transaction with N memories and N knowledge-base documents of generated
//!   text: deterministic pseudo-random words (a fixed-seed xorshift) drawn
//!   from a 2 000-word vocabulary (`w0000`…`w1999`) with a skew, so some
//!   words are common and most are rare, as in prose.
//! - `memory.store`: [`insert_memory`] of one new memory (40 words, 3 tags),
//!   autocommit, timed one by one over 2 000 inserts.
//! - `kb.search`: [`kb_search`] of a 2–3 word query (limit 10), timed one by
//!   one over 500 queries of words drawn like the text.
//!
//! Printed to stderr for each size: populate time, then p50/p99 (nearest
//! rank) and mean of each operation, and how many documents a query matches
//! (bm25 scores every one of them before the top 10 are kept). Criterion then measures both on the 100 000
//! database.
//!
//! Run: `cargo bench --bench memory`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agentvisor::store::memory::{Memory, insert_memory, kb_add, kb_search, match_expression};
use agentvisor::store::open_connection;
use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::Connection;

/// Distinct words of the generated text.
const VOCABULARY: u64 = 2_000;
/// Words of one memory's text.
const MEMORY_WORDS: usize = 40;
/// Words of one knowledge-base document's text.
const DOC_WORDS: usize = 120;
/// Inserts timed one by one, per size.
const INSERTS: usize = 2_000;
/// Searches timed one by one, per size.
const SEARCHES: usize = 500;
/// Database sizes, entries (memories, and as many documents).
const SIZES: [usize; 2] = [10_000, 100_000];

/// Deterministic pseudo-random words (xorshift64*, fixed seed).
struct Words(u64);

impl Words {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// One word; the square of a uniform draw makes low indices common.
    fn word(&mut self) -> String {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        format!("w{:04}", ((u * u) * VOCABULARY as f64) as u64)
    }

    fn text(&mut self, words: usize) -> String {
        (0..words).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }

    fn memory(&mut self, i: usize) -> Memory {
        let id = format!("{:016x}-{i}", self.next_u64());
        let text = self.text(MEMORY_WORDS);
        Memory {
            tags: vec![self.word(), self.word(), self.word()],
            session: Some(format!("s{}", i % 100)),
            ..Memory::new(id, i as f64, "fact".into(), text, 0.5)
        }
    }
}

/// A migrated database in `dir` with `n` memories and `n` documents.
fn populate(dir: &tempfile::TempDir, n: usize, words: &mut Words) -> Connection {
    let mut conn = open_connection(&dir.path().join(format!("bench-{n}.db"))).unwrap_or_else(|e| panic!("{e}"));
    let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        insert_memory(&tx, &words.memory(i)).unwrap_or_else(|e| panic!("{e}"));
        let title = words.text(4);
        kb_add(&tx, &title, &words.text(DOC_WORDS), "bench", i as f64).unwrap_or_else(|e| panic!("{e}"));
    }
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
    conn
}

/// Nearest-rank percentile of sorted samples.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, n: usize, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    eprintln!(
        "  {what:<12} at {n:>6}: p50 {:>10.1?}  p99 {:>10.1?}  mean {:>10.1?}  ({} samples)",
        nearest_rank(&samples, 50.0),
        nearest_rank(&samples, 99.0),
        mean,
        samples.len()
    );
}

/// How many documents match `query` (not just the 10 returned).
fn matching(conn: &Connection, query: &str) -> i64 {
    let Some(expr) = match_expression(query) else { return 0 };
    conn.query_row("SELECT count(*) FROM kb WHERE kb MATCH ?1", [expr], |r| r.get(0)).unwrap_or_else(|e| panic!("{e}"))
}

/// A 2–3 word query drawn like the text.
fn query(words: &mut Words) -> String {
    let n = 2 + (words.next_u64() % 2) as usize;
    words.text(n)
}

fn memory(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut words = Words(0x9E37_79B9_7F4A_7C15);
    eprintln!(
        "memory benchmark: vocabulary {VOCABULARY} words, memories of {MEMORY_WORDS} words, documents of {DOC_WORDS}"
    );
    let mut largest = None;
    for n in SIZES {
        let t0 = Instant::now();
        let conn = populate(&dir, n, &mut words);
        eprintln!("  populate     at {n:>6}: {:.1?} ({n} memories + {n} documents, one transaction)", t0.elapsed());
        let inserts = (0..INSERTS)
            .map(|i| {
                let m = words.memory(n + i);
                let t = Instant::now();
                insert_memory(&conn, &m).unwrap_or_else(|e| panic!("{e}"));
                t.elapsed()
            })
            .collect();
        report("memory.store", n, inserts);
        let mut matches = Vec::with_capacity(SEARCHES);
        let searches = (0..SEARCHES)
            .map(|_| {
                let q = query(&mut words);
                let t = Instant::now();
                black_box(kb_search(&conn, &q, 10).unwrap_or_else(|e| panic!("{e}")));
                let elapsed = t.elapsed();
                matches.push(matching(&conn, &q));
                elapsed
            })
            .collect();
        report("kb.search", n, searches);
        matches.sort();
        eprintln!(
            "  kb.search    at {n:>6}: documents matching a query (any term): median {}, p99 {}",
            matches[matches.len() / 2],
            matches[matches.len() * 99 / 100]
        );
        largest = Some((n, conn));
    }
    let Some((n, conn)) = largest else { return };
    let mut g = c.benchmark_group("memory");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    g.bench_function(format!("store_at_{n}"), |b| {
        b.iter_batched(
            || {
                i += 1;
                words.memory(10 * n + i)
            },
            |m| insert_memory(&conn, &m).unwrap_or_else(|e| panic!("{e}")),
            criterion::BatchSize::SmallInput,
        )
    });
    let queries: Vec<String> = (0..64).map(|_| query(&mut words)).collect();
    let mut q = queries.iter().cycle();
    g.bench_function(format!("kb_search_at_{n}"), |b| {
        b.iter(|| {
            let query = q.next().map(String::as_str).unwrap_or("w0001 w0002");
            black_box(kb_search(&conn, query, 10).unwrap_or_else(|e| panic!("{e}")))
        })
    });
    g.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
