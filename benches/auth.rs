//! What the token check costs per task (issue 18): [`Auth::check`] with no
//! token in the store (open doors: the early return), with a valid token
//! (one HMAC-SHA-256 and a hash-map lookup), and the bus envelope decoded
//! without and with a `token` field. The end-to-end figure (bus tasks/s at
//! window 64 with and without a token, same run) is
//! `scripts/bench_auth.sh`.
//!
//! Run: `cargo bench --no-default-features --bench auth`.

use std::hint::black_box;

use agentvisor::agents::auth::{Auth, Scope};
use agentvisor::bus::envelope;
use agentvisor::config::Settings;
use agentvisor::store::Store;
use agentvisor::telemetry::metrics::Metrics;
use criterion::{Criterion, criterion_group, criterion_main};

fn auth(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Auth {
    let settings = Settings { data_dir: dir.to_path_buf(), ..Settings::default() };
    rt.block_on(async { Auth::open(&settings, Store::open(dir).expect("store"), Metrics::new()).await.expect("auth") })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (open_dir, locked_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = auth(open_dir.path(), &rt);
    let locked = auth(locked_dir.path(), &rt);
    let token = rt.block_on(locked.create("bench", &[Scope::Tasks], None, None)).expect("token").token;
    let client = || "bus:bench".to_string();
    c.bench_function("auth_check_open_doors", |b| {
        b.iter(|| open.check("bus", &client, black_box(None), Scope::Tasks).unwrap());
    });
    c.bench_function("auth_check_valid_token", |b| {
        b.iter(|| locked.check("bus", &client, black_box(Some(token.as_str())), Scope::Tasks).unwrap());
    });
    let plain = br#"{"id": "b0-1", "type": "utils.echo", "input": "ping"}"#.to_vec();
    let with_token = format!(r#"{{"id": "b0-1", "type": "utils.echo", "input": "ping", "token": "{token}"}}"#);
    c.bench_function("envelope_decode_without_token", |b| {
        b.iter(|| envelope::decode(black_box(&plain), 1 << 20).unwrap());
    });
    c.bench_function("envelope_decode_with_token", |b| {
        b.iter(|| envelope::decode(black_box(with_token.as_bytes()), 1 << 20).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
