//! `agentvisor models pull|list --verify|rm` against a real local HTTP server
//! (axum on loopback) that serves GGUF-headed files, honours `Range`, records
//! the requests it saw, and can cut a transfer in the middle. The CLI runs as
//! a child process, as a user would run it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;

use crate::util::bin;

/// What the server holds and saw.
#[derive(Default)]
struct Served {
    /// `Range` headers of the requests, by path (`-` when none).
    ranges: Mutex<Vec<(String, String)>>,
    /// Cut the next transfer of `/cut/...` after half of the body.
    cut_next: AtomicBool,
}

/// A GGUF-headed file of `n` bytes whose content depends on `seed`.
fn gguf_bytes(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"GGUF\x03\0\0\0".to_vec();
    v.extend((0..n - 8).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

const SIZE: usize = 3 << 20;

fn file_for(name: &str) -> Option<Vec<u8>> {
    match name {
        "tiny.gguf" | "cut.gguf" => Some(gguf_bytes(SIZE, 1)),
        "other.gguf" => Some(gguf_bytes(SIZE / 2, 7)),
        "page.gguf" => Some(b"<html><body>login required</body></html>".repeat(100)),
        _ => None,
    }
}

async fn serve(State(s): State<Arc<Served>>, UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    s.ranges.lock().push((path.clone(), range.clone()));
    let name = path.rsplit('/').next().unwrap_or_default();
    let Some(data) = file_for(name) else { return StatusCode::NOT_FOUND.into_response() };
    let start = range.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<usize>().ok());
    let (status, body, extra) = match start {
        Some(n) if n >= data.len() => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        Some(n) => (
            StatusCode::PARTIAL_CONTENT,
            data[n..].to_vec(),
            Some(format!("bytes {n}-{}/{}", data.len() - 1, data.len())),
        ),
        None => (StatusCode::OK, data, None),
    };
    let len = body.len();
    let cut = path.starts_with("cut/") && s.cut_next.swap(false, Ordering::SeqCst);
    let stream = async_stream(body, cut);
    let mut r = Response::builder().status(status).header(header::CONTENT_LENGTH, len);
    if let Some(cr) = extra {
        r = r.header(header::CONTENT_RANGE, cr);
    }
    r.body(Body::from_stream(stream)).unwrap()
}

/// The body in 64 KiB chunks; with `cut`, an error after half of it (the
/// server then drops the connection mid-transfer).
fn async_stream(body: Vec<u8>, cut: bool) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let half = body.len() / 2;
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = Vec::new();
    let limit = if cut { half } else { body.len() };
    for c in body[..limit].chunks(64 << 10) {
        chunks.push(Ok(c.to_vec()));
    }
    if cut {
        chunks.push(Err(std::io::Error::other("cut by the test server")));
    }
    futures::stream::iter(chunks)
}

/// The server's base URL and its record.
async fn server() -> (String, Arc<Served>) {
    let served = Arc::new(Served::default());
    let app = Router::new().route("/{*path}", get(serve)).with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), served)
}

/// Runs `agentvisor models ARGS` on `models`; (exit code, stdout, stderr).
async fn models_cmd(models: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(bin());
    c.arg("models").args(args).arg("--models-dir").arg(models).env_remove("HF_ENDPOINT");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn pull_downloads_with_progress_records_the_sha256_and_verifies() {
    let (base, served) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let (code, out, err) = models_cmd(&models, &["pull", &format!("{base}/files/tiny.gguf")], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let want = sha(&gguf_bytes(SIZE, 1));
    assert!(out.contains("installed:") && out.contains(&want) && out.contains("recorded"), "{out}");
    // Not a terminal: plain progress lines with bytes, rate and ETA, ending at 100 %.
    assert!(err.contains("MiB/s") && err.contains("ETA") && err.contains("(100 %)"), "{err}");
    assert_eq!(files(&models), ["tiny.gguf", "tiny.gguf.sha256"]);
    assert_eq!(std::fs::read(models.join("tiny.gguf")).unwrap(), gguf_bytes(SIZE, 1));
    assert_eq!(std::fs::read_to_string(models.join("tiny.gguf.sha256")).unwrap(), format!("{want}  tiny.gguf\n"));
    assert_eq!(served.ranges.lock().len(), 1);

    // Again: the same bytes, already present; with the right --sha256: verified.
    let (code, out, _) = models_cmd(&models, &["pull", &format!("{base}/files/tiny.gguf")], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("already present"), "{out}");
    let (code, out, _) =
        models_cmd(&models, &["pull", &format!("{base}/files/tiny.gguf"), "--as", "tiny2", "--sha256", &want], &[])
            .await;
    assert_eq!(code, 0);
    assert!(out.contains("tiny2.gguf") && out.contains("verified"), "{out}");

    // list --verify: both ok; a flipped byte is a MISMATCH and exit code 1.
    let (code, out, err) = models_cmd(&models, &["list", "--verify"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(" ok ").count(), 2, "{out}");
    let mut bytes = std::fs::read(models.join("tiny2.gguf")).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(models.join("tiny2.gguf"), bytes).unwrap();
    let (code, out, err) = models_cmd(&models, &["list", "--verify", "--json"], &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("model_checksum"), "{err}");
    let checks: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["sha256_check"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(checks, ["ok", "MISMATCH"]);

    // rm (no daemon answers): file and checksum gone; an unknown name is refused.
    let (code, out, _) = models_cmd(&models, &["rm", "tiny2"], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(&models), ["tiny.gguf", "tiny.gguf.sha256"]);
    let (code, _, err) = models_cmd(&models, &["rm", "tiny2"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown_model"), "{err}");
}

#[tokio::test]
async fn an_interrupted_pull_resumes_with_a_range_request() {
    let (base, served) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let url = format!("{base}/cut/cut.gguf");
    served.cut_next.store(true, Ordering::SeqCst);
    let (code, out, err) = models_cmd(&models, &["pull", &url], &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("model_download") && err.contains("resume"), "{err}");
    // Only the .part file: nothing under the final name.
    assert_eq!(files(&models), ["cut.gguf.part"]);
    let kept = std::fs::metadata(models.join("cut.gguf.part")).unwrap().len();
    assert!(kept > 0 && kept < SIZE as u64, "{kept}");

    let (code, out, err) = models_cmd(&models, &["pull", &url], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("resumed from byte {kept}")), "{out}");
    assert!(err.contains(&format!("resuming from byte {kept}")), "{err}");
    assert_eq!(std::fs::read(models.join("cut.gguf")).unwrap(), gguf_bytes(SIZE, 1), "the resumed file is whole");
    assert!(out.contains(&sha(&gguf_bytes(SIZE, 1))), "the hash covers the resumed bytes too: {out}");
    let ranges: Vec<String> = served.ranges.lock().iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(ranges, ["-".to_string(), format!("bytes={kept}-")]);
}

#[tokio::test]
async fn refused_pulls_leave_nothing_under_the_final_name() {
    let (base, _served) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("{base}/files/tiny.gguf"), "--sha256".into(), "0".repeat(64)], "model_checksum"),
        (vec![format!("{base}/files/page.gguf")], "model_not_gguf"),
        (vec![format!("{base}/files/missing.gguf")], "404"),
        (vec![format!("{base}/files/tiny.gguf"), "--sha256".into(), "xyz".into()], "model_ref"),
        (vec![format!("{base}/files/noext")], "model_ref"),
        (vec!["llama-9000".into()], "model_ref"),
        (vec!["hf:only/two.gguf".into()], "model_ref"),
    ];
    for (args, want) in cases {
        let mut a = vec!["pull"];
        a.extend(args.iter().map(String::as_str));
        let (code, out, err) = models_cmd(&models, &a, &[]).await;
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(files(&models).is_empty(), "{args:?}: {:?}", files(&models));
    }

    // A refused connection: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, _, err) = models_cmd(&models, &["pull", &format!("http://127.0.0.1:{port}/m.gguf")], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("model_download") && err.to_lowercase().contains("connection refused"), "{err}");

    // A different file under an installed name is refused unless --as.
    let (code, ..) = models_cmd(&models, &["pull", &format!("{base}/files/tiny.gguf")], &[]).await;
    assert_eq!(code, 0);
    let (code, out, err) =
        models_cmd(&models, &["pull", &format!("{base}/files/other.gguf"), "--as", "tiny"], &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("model_exists") && err.contains("--as"), "{err}");
    assert_eq!(
        std::fs::read(models.join("tiny.gguf")).unwrap(),
        gguf_bytes(SIZE, 1),
        "the installed file is untouched"
    );
    assert_eq!(files(&models), ["tiny.gguf", "tiny.gguf.sha256"]);
}

#[tokio::test]
async fn hf_references_resolve_against_the_hub_endpoint() {
    let (base, served) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let (code, out, err) =
        models_cmd(&models, &["pull", "hf:someone/some-GGUF/sub/tiny.gguf@v1.2"], &[("HF_ENDPOINT", &base)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(served.ranges.lock()[0].0, "someone/some-GGUF/resolve/v1.2/sub/tiny.gguf");
    assert!(models.join("tiny.gguf").exists());
    let (code, ..) = models_cmd(&models, &["pull", "hf:someone/repo/other.gguf"], &[("HF_ENDPOINT", &base)]).await;
    assert_eq!(code, 0);
    assert_eq!(served.ranges.lock()[1].0, "someone/repo/resolve/main/other.gguf");
}

/// With a running daemon: `models list` (asked through the bus) sees a file
/// pulled after the start, and `rm` goes through the daemon's unload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sees_a_pulled_file_and_rm_asks_it_to_unload() {
    let (base, _served) = server().await;
    let data = tempfile::tempdir().unwrap();
    let models: PathBuf = data.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let (fleet, ingress) = crate::util::bus_fleet(data.path(), "core", |s| s.models_dir = models.clone()).await;
    let with_daemon = |args: Vec<String>| {
        let mut c = Command::new(bin());
        c.arg("--set")
            .arg(format!("bus.ingress={ingress}"))
            .arg("--set")
            .arg(format!("models_dir={}", models.display()));
        c.arg("models").args(args);
        async move {
            let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (code, out) = with_daemon(vec!["list".into()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no GGUF files") && !out.contains("no daemon answered"), "{out}");
    let (code, out) = with_daemon(vec!["pull".into(), format!("{base}/files/tiny.gguf")]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = with_daemon(vec!["list".into(), "--json".into()]).await;
    assert_eq!(code, 0, "{out}");
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((row["name"].as_str(), row["state"].as_str()), (Some("tiny"), Some("available")), "{row}");
    let (code, out) = with_daemon(vec!["rm".into(), "tiny".into()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed:"), "{out}");
    assert!(files(&models).is_empty());
    fleet.shutdown(std::time::Duration::from_secs(5)).await;
}
