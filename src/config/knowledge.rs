//! Settings of the knowledge and tool agents (issue 22): `web:`
//! (UnifiedWebAgent), `files:` (FileSystemAssistantAgent), `memory:`
//! (MemoryOrchestratorService's tiers and decay) and `dreaming:`
//! (DreamingModeAgent's idle-time consolidation). Every struct rejects
//! unknown keys; option names carry their units.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `web:` — what UnifiedWebAgent may fetch and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// URL schemes allowed; default `[http, https]`.
    pub allowed_schemes: Vec<String>,
    /// Hosts allowed (exact names, or `*.example.org` for a domain and its
    /// subdomains); default empty: every host.
    pub allowed_hosts: Vec<String>,
    /// Networks (CIDR, e.g. `127.0.0.1/32`) allowed although they are
    /// private, loopback, link-local or otherwise not global; default empty:
    /// every such address is refused (SSRF protection), at every redirect hop.
    pub allowed_networks: Vec<String>,
    /// Most bytes downloaded per page; default 2 MiB. A task may ask for
    /// less, never more.
    pub max_bytes: u64,
    /// Time limit of one fetch (robots.txt, redirects and body), seconds;
    /// default 15. A task may ask for less, never more.
    pub timeout_seconds: f64,
    /// Redirects followed, at most; default 5.
    pub max_redirects: u32,
    /// Read and obey `/robots.txt` of each host; default true.
    pub respect_robots_txt: bool,
    /// The `User-Agent` sent, and the agent name robots.txt rules are read for.
    pub user_agent: String,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            allowed_schemes: vec!["http".into(), "https".into()],
            allowed_hosts: Vec::new(),
            allowed_networks: Vec::new(),
            max_bytes: 2 * 1024 * 1024,
            timeout_seconds: 15.0,
            max_redirects: 5,
            respect_robots_txt: true,
            user_agent: "agentvisor".into(),
        }
    }
}

/// `files:` — the roots FileSystemAssistantAgent may read, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSettings {
    /// Roots by name (`files: {roots: {repo: /srv/repo}}`); a task names a
    /// root, by default the first by name. Default none: every task answers
    /// `agent_unavailable` until a root is configured.
    pub roots: BTreeMap<String, PathBuf>,
    /// Most bytes `files.read` returns; default 1 MiB.
    pub max_read_bytes: u64,
    /// Files larger than this are skipped by `files.search`, bytes; default 4 MiB.
    pub max_search_file_bytes: u64,
    /// Also skip hidden files and directories (dot files); default true.
    pub skip_hidden: bool,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings {
            roots: BTreeMap::new(),
            max_read_bytes: 1024 * 1024,
            max_search_file_bytes: 4 * 1024 * 1024,
            skip_hidden: true,
        }
    }
}

/// `memory:` — MemoryOrchestratorService's tiers: importance with decay and
/// promotion from short-term to long-term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryTierSettings {
    /// Importance of a memory stored without one (0–1); default 0.5.
    pub default_importance: f64,
    /// Seconds after which a memory's importance counts half, counted from
    /// its last access (store, get or merge); default 7 days.
    pub importance_half_life_secs: f64,
    /// A short-term memory whose decayed importance reaches this is promoted
    /// to long-term at the next consolidation; default 0.8.
    pub promote_importance: f64,
    /// A short-term memory read (`memory.get`) this many times is promoted
    /// at once; default 3.
    pub promote_accesses: u32,
    /// A short-term memory mentioned this many times (itself plus merged
    /// duplicates) is promoted at consolidation; default 2.
    pub promote_mentions: u32,
}

impl Default for MemoryTierSettings {
    fn default() -> Self {
        MemoryTierSettings {
            default_importance: 0.5,
            importance_half_life_secs: 7.0 * 86_400.0,
            promote_importance: 0.8,
            promote_accesses: 3,
            promote_mentions: 2,
        }
    }
}

/// `dreaming:` — DreamingModeAgent's idle-time consolidation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DreamingSettings {
    /// The fleet is idle when no task has been on the bus for this long,
    /// seconds; default 300.
    pub idle_seconds: f64,
    /// Consolidate on its own once per idle stretch (while the agent runs);
    /// default true. `dreaming.consolidate` runs it by task.
    pub auto: bool,
    /// How often the idle watcher looks, seconds; default 5.
    pub check_every_secs: f64,
    /// Two memories of the same kind whose word sets have at least this
    /// Jaccard similarity are near duplicates (0–1); default 0.85.
    pub near_duplicate_similarity: f64,
    /// Short-term memories older than this are summarised into long-term
    /// ones, seconds; default 1 day.
    pub summarise_after_secs: f64,
    /// Memories per summary, at most; default 20.
    pub summary_batch: usize,
    /// Summaries written per run, at most (each one model call); default 10.
    pub max_summaries_per_run: usize,
    /// Keep the originals of summarised memories (marked summarised);
    /// default true. `false` deletes them once their summary is stored.
    pub keep_summarised: bool,
    /// Most tokens of one summary; default 256.
    pub summary_max_tokens: u32,
}

impl Default for DreamingSettings {
    fn default() -> Self {
        DreamingSettings {
            idle_seconds: 300.0,
            auto: true,
            check_every_secs: 5.0,
            near_duplicate_similarity: 0.85,
            summarise_after_secs: 86_400.0,
            summary_batch: 20,
            max_summaries_per_run: 10,
            keep_summarised: true,
            summary_max_tokens: 256,
        }
    }
}
