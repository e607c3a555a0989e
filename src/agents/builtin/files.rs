//! FileSystemAssistantAgent: sandboxed listing, reading and searching of
//! files under the configured roots (`files.roots`), after the earlier
//! system's repository walker. Walking is `.gitignore`-aware through the
//! `ignore` crate (ripgrep's walker: `.gitignore`, `.ignore` and
//! `.git/info/exclude` rules, hidden files skipped unless
//! `files.skip_hidden: false`), with or without a `.git` folder. State: none
//! (the settings).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `files.list` | `{"root"?, "path"?, "recursive"?, "limit"?}` or nothing | `{"root", "path", "entries": [{"path", "kind", "size_bytes", "modified_at"}], "truncated"}` |
//! | `files.read` | `{"path", "root"?, "offset_bytes"?, "max_bytes"?}` | `{"root", "path", "binary", "size_bytes", "text", "truncated"}` |
//! | `files.search` | `{"query", "regex"?, "root"?, "path"?, "glob"?, "limit"?}` | `{"matches": [{"root", "path", "line", "text"}], "truncated"}` |
//!
//! Sandbox: a path is relative to its root; an absolute path or a `..`
//! component is `forbidden`, and so is a path whose real location (symbolic
//! links resolved) is outside the root. Walks never follow symbolic links
//! (they are listed as `symlink`). `files.read` of a file the walk would skip
//! (ignored by `.gitignore`, or hidden) is `forbidden`; `files.search` skips
//! such files, binary files and files over `files.max_search_file_bytes`.
//!
//! Binary detection: a file is binary when its first 8000 bytes hold a NUL
//! byte (git's `buffer_is_binary` rule, which ripgrep's searcher uses too).
//!
//! Errors: no root configured is `agent_unavailable`; an unknown root, a bad
//! regular expression or glob is `invalid_field`; a path that does not exist
//! is `not_found`; outside the sandbox, `forbidden`; an I/O failure,
//! `internal`. Every refusal is logged and counted
//! (`agentvisor_file_ops_total{op,outcome}`). All file work runs on the
//! blocking pool.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::memory::Whole;
use super::{Answer, Behaviour, Name, Null, Text, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::config::knowledge::FilesSettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "FileSystemAssistantAgent";

/// Bytes looked at for a NUL byte (git's `FIRST_FEW_BYTES`).
const BINARY_SNIFF_BYTES: usize = 8000;
/// Entries of a listing when the input names no limit.
const DEFAULT_LIST_LIMIT: i64 = 1000;
/// Matches of a search when the input names no limit.
const DEFAULT_SEARCH_LIMIT: i64 = 100;
/// Longest matching line returned, characters (the rest is cut).
const MAX_LINE_CHARS: usize = 1000;

/// The task types of FileSystemAssistantAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<ListInput>, ListOutput>(
            "files.list",
            "Lists a directory under the configured roots (.gitignore-aware), optionally recursively",
            || vec![json!({"path": "docs"}), json!({}), json!({"recursive": true, "limit": 50}), json!(null)],
        ),
        rust_task::<ReadInput, ReadOutput>(
            "files.read",
            "Reads a text file under the configured roots; a binary file is reported, not read",
            || {
                vec![
                    json!({"path": "README.md"}),
                    json!({"path": "logs/agentvisor.log", "offset_bytes": 4096, "max_bytes": 65536}),
                ]
            },
        ),
        rust_task::<SearchInput, SearchOutput>(
            "files.search",
            "Searches file contents under the configured roots (.gitignore-aware, binary files skipped)",
            || {
                vec![
                    json!({"query": "max_message_bytes", "glob": "*.rs"}),
                    json!({"query": "fn \\w+_total", "regex": true}),
                ]
            },
        ),
    ]
}

/// A directory to list.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct ListInput {
    /// A configured root by name; default: the first by name.
    #[serde(default)]
    root: Option<Name>,
    /// A directory relative to the root; default: the root itself.
    #[serde(default)]
    path: Option<String>,
    /// Walk subdirectories too; default false.
    #[serde(default)]
    recursive: Option<bool>,
    /// Most entries returned, 1–10000; default 1000.
    #[serde(default)]
    limit: Option<Whole<1, 10_000>>,
}

impl Shorthand for ListInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: the first root, not recursive.";
    fn expand(_: Null) -> ListInput {
        ListInput::default()
    }
}

/// What a listed entry is.
#[derive(Serialize, JsonSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
}

/// One listed entry.
#[derive(Serialize, JsonSchema, Debug)]
struct Entry {
    /// Relative to the root, `/`-separated.
    path: String,
    /// File, directory or symbolic link.
    kind: Kind,
    /// Size of a file, bytes (null for the others).
    size_bytes: Option<u64>,
    /// Last modification, Unix seconds.
    modified_at: Option<f64>,
}

/// A listing.
#[derive(Serialize, JsonSchema)]
struct ListOutput {
    /// The root's name.
    root: String,
    /// The directory listed, relative to the root (`""`: the root).
    path: String,
    /// The entries the walk kept (ignored and hidden ones left out), by path.
    entries: Vec<Entry>,
    /// True when `limit` cut the listing.
    truncated: bool,
}

/// A file to read.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadInput {
    /// A file relative to the root.
    path: Text,
    /// A configured root by name; default: the first by name.
    #[serde(default)]
    root: Option<Name>,
    /// Start reading here, bytes; default 0.
    #[serde(default)]
    offset_bytes: Option<Whole<0, { i64::MAX }>>,
    /// Most bytes read, ≥ 1; default and upper bound: `files.max_read_bytes`.
    #[serde(default)]
    max_bytes: Option<Whole<1, { i64::MAX }>>,
}

/// A file read.
#[derive(Serialize, JsonSchema)]
struct ReadOutput {
    /// The root's name.
    root: String,
    /// The file, relative to the root.
    path: String,
    /// True when the file holds a NUL byte in its first 8000 bytes.
    binary: bool,
    /// Size of the file, bytes.
    size_bytes: u64,
    /// What was read (invalid UTF-8 replaced by U+FFFD); null for a binary file.
    text: Option<String>,
    /// True when the file goes on past what was read.
    truncated: bool,
}

/// A content search.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchInput {
    /// Text to find in a line (a regular expression, Rust `regex` syntax,
    /// when `regex` is true).
    query: Text,
    /// Read `query` as a regular expression; default false.
    #[serde(default)]
    regex: Option<bool>,
    /// A configured root by name; default: every root.
    #[serde(default)]
    root: Option<Name>,
    /// A directory relative to the root to search in; default the root.
    #[serde(default)]
    path: Option<String>,
    /// Only files whose name matches this glob, e.g. `*.rs`.
    #[serde(default)]
    glob: Option<Name>,
    /// Most matches returned, 1–10000; default 100.
    #[serde(default)]
    limit: Option<Whole<1, 10_000>>,
}

/// One matching line.
#[derive(Serialize, JsonSchema)]
struct Match {
    /// The root's name.
    root: String,
    /// The file, relative to the root.
    path: String,
    /// 1-based line number.
    #[schemars(range(min = 1))]
    line: u64,
    /// The matching line (at most 1000 characters).
    text: String,
}

/// The matches found.
#[derive(Serialize, JsonSchema)]
struct SearchOutput {
    /// Matching lines, by root, path and line.
    matches: Vec<Match>,
    /// True when `limit` cut the results.
    truncated: bool,
}

/// Why a file operation was refused.
#[derive(Debug, thiserror::Error)]
enum FilesError {
    #[error("no root is configured (files.roots)")]
    NoRoots,
    #[error("input of {task_type} at /root: no root named {root:?} (configured: {known})")]
    UnknownRoot { task_type: String, root: String, known: String },
    #[error("{path:?} is outside root {root}: {why}")]
    Outside { root: String, path: String, why: &'static str },
    #[error("{path:?} under root {root} is skipped by the walk: {why}")]
    Skipped { root: String, path: String, why: &'static str },
    #[error("no such file or directory under root {root}: {path:?}")]
    Missing { root: String, path: String },
    #[error("{path:?} under root {root} is not a {want}")]
    WrongKind { root: String, path: String, want: &'static str },
    #[error("input of files.search at {at}: {what}")]
    Pattern { at: &'static str, what: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl FilesError {
    fn code(&self) -> ErrorCode {
        match self {
            FilesError::NoRoots => ErrorCode::AgentUnavailable,
            FilesError::UnknownRoot { .. } | FilesError::Pattern { .. } | FilesError::WrongKind { .. } => {
                ErrorCode::InvalidField
            }
            FilesError::Outside { .. } | FilesError::Skipped { .. } => ErrorCode::Forbidden,
            FilesError::Missing { .. } => ErrorCode::NotFound,
            FilesError::Io { .. } => ErrorCode::Internal,
        }
    }

    /// The `outcome` label.
    fn outcome(&self) -> &'static str {
        match self.code() {
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::AgentUnavailable => "no_roots",
            _ => "error",
        }
    }
}

/// A root: its name, its canonical path.
#[derive(Clone)]
struct Root {
    name: String,
    dir: PathBuf,
}

/// The FileSystemAssistantAgent behaviour.
pub struct FileSystemAssistant {
    settings: Arc<FilesSettings>,
    metrics: Metrics,
}

impl FileSystemAssistant {
    /// The behaviour over `settings.roots`.
    pub fn new(settings: FilesSettings, metrics: Metrics) -> FileSystemAssistant {
        FileSystemAssistant { settings: Arc::new(settings), metrics }
    }
}

/// The root named `name` (default the first), canonicalised.
fn root(settings: &FilesSettings, task_type: &str, name: Option<&str>) -> Result<Root, FilesError> {
    let (name, dir) = match name {
        None => settings.roots.iter().next().ok_or(FilesError::NoRoots)?,
        Some(n) => settings.roots.get_key_value(n).ok_or_else(|| {
            if settings.roots.is_empty() {
                FilesError::NoRoots
            } else {
                FilesError::UnknownRoot {
                    task_type: task_type.into(),
                    root: n.into(),
                    known: settings.roots.keys().cloned().collect::<Vec<_>>().join(", "),
                }
            }
        })?,
    };
    let dir = dir.canonicalize().map_err(|error| FilesError::Io { path: dir.display().to_string(), error })?;
    Ok(Root { name: name.clone(), dir })
}

/// The real path of `rel` under `root`: refused when absolute, when it has
/// a `..` component, or when its real location (links resolved) is outside.
fn resolve(root: &Root, rel: &str) -> Result<PathBuf, FilesError> {
    let outside = |why| FilesError::Outside { root: root.name.clone(), path: rel.into(), why };
    let p = Path::new(rel);
    for c in p.components() {
        match c {
            Component::ParentDir => return Err(outside("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => return Err(outside("absolute paths are not allowed")),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    let joined = root.dir.join(p);
    let real = joined.canonicalize().map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => FilesError::Missing { root: root.name.clone(), path: rel.into() },
        _ => FilesError::Io { path: rel.into(), error },
    })?;
    if !real.starts_with(&root.dir) {
        return Err(outside("a symbolic link leads out of the root"));
    }
    Ok(real)
}

/// `path` relative to the root, `/`-separated.
fn relative(root: &Root, path: &Path) -> String {
    let rel = path.strip_prefix(&root.dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<Cow<str>>>().join("/")
}

/// The walker of `dir`: `.gitignore`-aware (also without a `.git` folder;
/// the rules of parent folders apply, as in git), hidden files per the
/// settings, links not followed.
fn walker(settings: &FilesSettings, dir: &Path) -> ignore::WalkBuilder {
    let mut w = ignore::WalkBuilder::new(dir);
    w.hidden(settings.skip_hidden)
        .git_ignore(true)
        .git_exclude(true)
        .ignore(true)
        .require_git(false)
        .parents(true)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b));
    w
}

/// Whether the walk from `root` would reach `file`: each folder on the way,
/// and the file, kept by the walk of its parent (a file inside an ignored
/// folder is skipped too).
fn walk_keeps(settings: &FilesSettings, root: &Root, file: &Path) -> bool {
    let Ok(rel) = file.strip_prefix(&root.dir) else { return false };
    let mut dir = root.dir.clone();
    for c in rel.components() {
        let next = dir.join(c);
        let kept = walker(settings, &dir).max_depth(Some(1)).build().filter_map(Result::ok).any(|e| e.path() == next);
        if !kept {
            return false;
        }
        dir = next;
    }
    true
}

/// Whether `bytes` look binary (a NUL byte).
fn is_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |error| FilesError::Io { path: path.display().to_string(), error }
}

fn list(settings: &FilesSettings, input: ListInput) -> Result<ListOutput, FilesError> {
    let root = root(settings, "files.list", input.root.as_ref().map(|n| n.0.as_str()))?;
    let rel = input.path.unwrap_or_default();
    let dir = resolve(&root, &rel)?;
    if !dir.is_dir() {
        return Err(FilesError::WrongKind { root: root.name, path: rel, want: "directory" });
    }
    let limit = input.limit.map_or(DEFAULT_LIST_LIMIT, |Whole(n)| n) as usize;
    let mut w = walker(settings, &dir);
    if input.recursive != Some(true) {
        w.max_depth(Some(1));
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    for e in w.build() {
        let Ok(e) = e else { continue };
        if e.depth() == 0 {
            continue;
        }
        if entries.len() == limit {
            truncated = true;
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let modified_at =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64());
        entries.push(Entry {
            path: relative(&root, e.path()),
            kind,
            size_bytes: (kind == Kind::File).then_some(meta.len()),
            modified_at,
        });
    }
    Ok(ListOutput { root: root.name.clone(), path: relative(&root, &dir), entries, truncated })
}

fn read(settings: &FilesSettings, input: ReadInput) -> Result<ReadOutput, FilesError> {
    let root = root(settings, "files.read", input.root.as_ref().map(|n| n.0.as_str()))?;
    let rel = input.path.0;
    let file = resolve(&root, &rel)?;
    if !file.is_file() {
        return Err(FilesError::WrongKind { root: root.name, path: rel, want: "file" });
    }
    if !walk_keeps(settings, &root, &file) {
        return Err(FilesError::Skipped {
            root: root.name,
            path: rel,
            why: "ignored by .gitignore/.ignore rules, or hidden",
        });
    }
    let mut f = File::open(&file).map_err(io(&file))?;
    let size_bytes = f.metadata().map_err(io(&file))?.len();
    let mut head = Vec::with_capacity(BINARY_SNIFF_BYTES);
    (&mut f).take(BINARY_SNIFF_BYTES as u64).read_to_end(&mut head).map_err(io(&file))?;
    let path = relative(&root, &file);
    if is_binary(&head) {
        return Ok(ReadOutput { root: root.name, path, binary: true, size_bytes, text: None, truncated: false });
    }
    let offset = input.offset_bytes.map_or(0, |Whole(n)| n as u64);
    let max = input.max_bytes.map_or(settings.max_read_bytes, |Whole(n)| (n as u64).min(settings.max_read_bytes));
    f.seek(SeekFrom::Start(offset)).map_err(io(&file))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).map_err(io(&file))?;
    let truncated = offset.saturating_add(buf.len() as u64) < size_bytes;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(ReadOutput { root: root.name, path, binary: false, size_bytes, text: Some(text), truncated })
}

fn search(settings: &FilesSettings, input: SearchInput) -> Result<SearchOutput, FilesError> {
    let roots = match &input.root {
        Some(Name(n)) => vec![root(settings, "files.search", Some(n))?],
        None if settings.roots.is_empty() => return Err(FilesError::NoRoots),
        None => {
            settings.roots.keys().map(|n| root(settings, "files.search", Some(n))).collect::<Result<Vec<_>, _>>()?
        }
    };
    let pattern = if input.regex == Some(true) { input.query.0.clone() } else { regex::escape(&input.query.0) };
    let re = regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| FilesError::Pattern { at: "/query", what: e.to_string() })?;
    let limit = input.limit.map_or(DEFAULT_SEARCH_LIMIT, |Whole(n)| n) as usize;
    let mut matches = Vec::new();
    for root in roots {
        let rel = input.path.clone().unwrap_or_default();
        let dir = resolve(&root, &rel)?;
        let mut w = walker(settings, &dir);
        if let Some(Name(glob)) = &input.glob {
            let mut ob = ignore::overrides::OverrideBuilder::new(&dir);
            ob.add(glob).map_err(|e| FilesError::Pattern { at: "/glob", what: e.to_string() })?;
            w.overrides(ob.build().map_err(|e| FilesError::Pattern { at: "/glob", what: e.to_string() })?);
        }
        for e in w.build() {
            let Ok(e) = e else { continue };
            if !e.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            if e.metadata().map(|m| m.len() > settings.max_search_file_bytes).unwrap_or(true) {
                continue;
            }
            let Ok(f) = File::open(e.path()) else { continue };
            let mut reader = BufReader::new(f);
            if reader.fill_buf().map(|b| is_binary(&b[..b.len().min(BINARY_SNIFF_BYTES)])).unwrap_or(true) {
                continue;
            }
            let path = relative(&root, e.path());
            let mut line = Vec::new();
            let mut n = 0u64;
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => n += 1,
                }
                if is_binary(&line) {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if re.is_match(text) {
                    if matches.len() == limit {
                        return Ok(SearchOutput { matches, truncated: true });
                    }
                    matches.push(Match {
                        root: root.name.clone(),
                        path: path.clone(),
                        line: n,
                        text: text.chars().take(MAX_LINE_CHARS).collect(),
                    });
                }
            }
        }
    }
    Ok(SearchOutput { matches, truncated: false })
}

impl FileSystemAssistant {
    /// Runs `op` on the blocking pool; counts and logs its outcome.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&FilesSettings) -> Result<T, FilesError> + Send + 'static,
    ) -> Result<T, TaskError> {
        let settings = self.settings.clone();
        let result = tokio::task::spawn_blocking(move || f(&settings))
            .await
            .map_err(|e| TaskError::new(ErrorCode::Internal, format!("{op}: {e}")))?;
        match result {
            Ok(v) => {
                self.metrics.file_ops.with_label_values(&[op, "ok"]).inc();
                Ok(v)
            }
            Err(e) => {
                self.metrics.file_ops.with_label_values(&[op, e.outcome()]).inc();
                tracing::info!(agent = AGENT, op, error = %e, "file operation refused");
                Err(TaskError::new(e.code(), e.to_string()))
            }
        }
    }
}

#[async_trait]
impl Behaviour for FileSystemAssistant {
    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "files.list" => {
                let OrShort(input) = decode(t, &task.input)?;
                encode(t, self.run("list", move |s| list(s, input)).await?)
            }
            "files.read" => {
                let input = decode(t, &task.input)?;
                encode(t, self.run("read", move |s| read(s, input)).await?)
            }
            "files.search" => {
                let input = decode(t, &task.input)?;
                encode(t, self.run("search", move |s| search(s, input)).await?)
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> FilesSettings {
        FilesSettings { roots: [("r".to_string(), dir.to_path_buf())].into(), ..Default::default() }
    }

    #[test]
    fn traversal_symlinks_ignored_and_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        std::fs::create_dir(r.join("sub")).unwrap();
        std::fs::write(r.join("sub/a.txt"), "alpha\nneedle here\n").unwrap();
        std::fs::write(r.join(".gitignore"), "ignored.txt\n").unwrap();
        std::fs::write(r.join("ignored.txt"), "needle hidden").unwrap();
        std::fs::write(r.join("bin.dat"), b"needle\0\x01\x02").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), r.join("escape.txt")).unwrap();
        let s = settings(r);
        let read_input = |p: &str| ReadInput { path: Text(p.into()), root: None, offset_bytes: None, max_bytes: None };
        assert!(matches!(read(&s, read_input("../x")), Err(FilesError::Outside { .. })));
        assert!(matches!(read(&s, read_input("/etc/passwd")), Err(FilesError::Outside { .. })));
        assert!(matches!(read(&s, read_input("escape.txt")), Err(FilesError::Outside { .. })));
        assert!(matches!(read(&s, read_input("ignored.txt")), Err(FilesError::Skipped { .. })));
        assert!(matches!(read(&s, read_input("nope.txt")), Err(FilesError::Missing { .. })));
        let b = read(&s, read_input("bin.dat")).unwrap();
        assert!(b.binary && b.text.is_none());
        let a = read(&s, read_input("sub/a.txt")).unwrap();
        assert_eq!(a.text.as_deref(), Some("alpha\nneedle here\n"));
        let l = list(&s, ListInput { recursive: Some(true), ..Default::default() }).unwrap();
        let paths: Vec<&str> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin.dat", "escape.txt", "sub", "sub/a.txt"]);
        assert_eq!(l.entries[1].kind, Kind::Symlink);
        let found = search(
            &s,
            SearchInput { query: Text("needle".into()), regex: None, root: None, path: None, glob: None, limit: None },
        )
        .unwrap();
        assert_eq!(found.matches.iter().map(|m| (m.path.as_str(), m.line)).collect::<Vec<_>>(), [("sub/a.txt", 2)]);
    }
}
