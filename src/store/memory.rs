//! Tables of the memory agents, at the bottom of the flow: the behaviours of
//! MemoryOrchestratorService and KnowledgeBase
//! ([`crate::agents::builtin::memory`]) send closures calling these functions
//! to the store thread; the benchmark calls them directly.
//!
//! - `memories`: one row per memory (uuid id, kind, text, JSON tags, optional
//!   session, optional expiry). Expired rows are invisible to every read here
//!   and deleted by [`delete_expired`] (MemoryOrchestratorService's sweeper).
//!   [`search_memories`] is a substring search (`LIKE`), not a ranked one:
//!   memories are short notes read by recency; ranked full-text search is the
//!   knowledge base's job.
//! - `kb_docs` + `kb`: the knowledge base. `kb_docs` holds the documents with
//!   `AUTOINCREMENT` ids (a deleted id is never handed out again); `kb` is an
//!   FTS5 index over its `title`, `text` and `source` (external content,
//!   tokenizer `porter unicode61`), kept in step by triggers. [`kb_search`]
//!   ranks with FTS5's `bm25()`.
//!
//! Times are Unix seconds (`f64`), passed in by the caller so that expiry is
//! testable without waiting.

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Schema of this concern, applied once as a versioned migration (3).
pub(crate) const MIGRATION: &str = "CREATE TABLE memories (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        tags TEXT NOT NULL,
        session TEXT,
        expires_at REAL
    );
    CREATE INDEX memories_ts ON memories(ts);
    CREATE INDEX memories_session ON memories(session, ts) WHERE session IS NOT NULL;
    CREATE INDEX memories_expires ON memories(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE kb_docs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        title TEXT NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE kb USING fts5(
        title, text, source,
        content = 'kb_docs', content_rowid = 'id',
        tokenize = 'porter unicode61'
    );
    CREATE TRIGGER kb_docs_ai AFTER INSERT ON kb_docs BEGIN
        INSERT INTO kb(rowid, title, text, source) VALUES (new.id, new.title, new.text, new.source);
    END;
    CREATE TRIGGER kb_docs_ad AFTER DELETE ON kb_docs BEGIN
        INSERT INTO kb(kb, rowid, title, text, source) VALUES ('delete', old.id, old.title, old.text, old.source);
    END;
    CREATE TRIGGER kb_docs_au AFTER UPDATE ON kb_docs BEGIN
        INSERT INTO kb(kb, rowid, title, text, source) VALUES ('delete', old.id, old.title, old.text, old.source);
        INSERT INTO kb(rowid, title, text, source) VALUES (new.id, new.title, new.text, new.source);
    END;";

/// Schema of the memory tiers (issue 22), a migration of its own: the tier
/// (`short` until promoted), the importance (0–1) and its clock
/// (`accessed_at`, from which it decays), how often a memory was read and
/// mentioned (itself plus the duplicates merged into it), when it was
/// summarised, and the memories a summary was made from (a JSON array).
pub(crate) const TIERS_MIGRATION: &str = "ALTER TABLE memories ADD COLUMN tier TEXT NOT NULL DEFAULT 'short';
    ALTER TABLE memories ADD COLUMN importance REAL NOT NULL DEFAULT 0.5;
    ALTER TABLE memories ADD COLUMN accessed_at REAL;
    ALTER TABLE memories ADD COLUMN accesses INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE memories ADD COLUMN mentions INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE memories ADD COLUMN summarised_at REAL;
    ALTER TABLE memories ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
    UPDATE memories SET accessed_at = ts;
    CREATE INDEX memories_tier ON memories(tier, ts);";

/// Most search terms a query keeps (the rest are ignored), bounding the
/// cost of one search.
pub(crate) const MAX_TERMS: usize = 32;

/// Column weights of `bm25()`: a match in the title counts twice a match in
/// the text; a match in the source half.
const BM25_WEIGHTS: &str = "2.0, 1.0, 0.5";

/// One memory, as stored and as `memory.get` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Memory {
    /// Uuid (v4), chosen at store time.
    pub id: String,
    /// When it was stored, Unix seconds.
    pub ts: f64,
    /// Free-form category chosen by the caller (`fact`, `preference`, ...).
    pub kind: String,
    /// The remembered text.
    pub text: String,
    /// Free-form labels (a JSON array in the table).
    pub tags: Vec<String>,
    /// The conversation session it belongs to, if any.
    pub session: Option<String>,
    /// When it expires, Unix seconds; `null` (`None`): never.
    pub expires_at: Option<f64>,
    /// `short` (new) or `long` (promoted, merged from repeated mentions, or a summary).
    pub tier: Tier,
    /// Importance as stored, 0–1; it counts less as time since
    /// `accessed_at` passes (halved every `memory.importance_half_life_secs`).
    pub importance: f64,
    /// Last store, read or merge, Unix seconds (the clock of the decay).
    pub accessed_at: f64,
    /// Times it was read by `memory.get`.
    pub accesses: u32,
    /// Times it was stored: 1, plus the duplicates merged into it.
    pub mentions: u32,
    /// When consolidation summarised it into a long-term memory, Unix
    /// seconds; `null`: not summarised.
    pub summarised_at: Option<f64>,
    /// For a summary: the ids of the memories it was made from.
    pub sources: Vec<String>,
}

impl Memory {
    /// A new short-term memory stored at `ts` (Unix seconds) with
    /// `importance`: no tags, session or expiry, never read, mentioned once.
    pub fn new(id: String, ts: f64, kind: String, text: String, importance: f64) -> Memory {
        Memory {
            id,
            ts,
            kind,
            text,
            tags: Vec::new(),
            session: None,
            expires_at: None,
            tier: Tier::Short,
            importance,
            accessed_at: ts,
            accesses: 0,
            mentions: 1,
            summarised_at: None,
            sources: Vec::new(),
        }
    }
}

/// A memory's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Short-term: new memories, candidates for merging and summarising.
    Short,
    /// Long-term: promoted memories and summaries.
    Long,
}

impl Tier {
    /// `short` or `long`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Short => "short",
            Tier::Long => "long",
        }
    }
}

/// `importance` decayed over `age_secs` with `half_life_secs`: halved every half-life.
pub fn decayed(importance: f64, age_secs: f64, half_life_secs: f64) -> f64 {
    importance * 0.5f64.powf(age_secs.max(0.0) / half_life_secs.max(1e-3))
}

/// Filters of [`search_memories`].
#[derive(Debug, Clone, Default)]
pub struct MemoryQuery {
    /// Whitespace-separated terms; a memory matches when its text contains
    /// every term (SQLite `LIKE`: case-insensitive for ASCII letters only).
    pub query: String,
    /// Only memories of this kind.
    pub kind: Option<String>,
    /// Only memories of this session.
    pub session: Option<String>,
    /// Only memories of this tier.
    pub tier: Option<Tier>,
    /// Most results.
    pub limit: u32,
}

/// One knowledge-base search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KbHit {
    /// The document id (`kb.add`'s answer).
    pub id: i64,
    /// Its title.
    pub title: String,
    /// Its source (URL, file, person; empty when none was given).
    pub source: String,
    /// Up to 16 tokens of the text around the match, matched terms in `[` `]`.
    pub snippet: String,
    /// Relevance: `-bm25` with the column weights title 2, text 1, source 0.5;
    /// higher is better (FTS5's `bm25()` itself is lower-is-better).
    pub score: f64,
}

fn memory_of(row: &Row<'_>) -> rusqlite::Result<Memory> {
    let tags: String = row.get(4)?;
    let sources: String = row.get(13)?;
    let tier: String = row.get(7)?;
    let ts: f64 = row.get(1)?;
    Ok(Memory {
        tier: if tier == "long" { Tier::Long } else { Tier::Short },
        importance: row.get(8)?,
        accessed_at: row.get::<_, Option<f64>>(9)?.unwrap_or(ts),
        accesses: row.get(10)?,
        mentions: row.get(11)?,
        summarised_at: row.get(12)?,
        // Written as a JSON array; anything else reads as none.
        sources: serde_json::from_str(&sources).unwrap_or_default(),
        id: row.get(0)?,
        ts: row.get(1)?,
        kind: row.get(2)?,
        text: row.get(3)?,
        // Written by `insert_memory` as a JSON array; anything else reads as no tags.
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        session: row.get(5)?,
        expires_at: row.get(6)?,
    })
}

const MEMORY_COLUMNS: &str = "id, ts, kind, text, tags, session, expires_at, tier, importance, accessed_at, accesses, mentions, summarised_at, sources";

/// Inserts one memory.
///
/// # Errors
/// [`StoreError::Sqlite`], among others when the id is taken.
pub fn insert_memory(conn: &Connection, m: &Memory) -> Result<(), StoreError> {
    let tags = serde_json::to_string(&m.tags).unwrap_or_else(|_| "[]".into());
    let sources = serde_json::to_string(&m.sources).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO memories (id, ts, kind, text, tags, session, expires_at, tier, importance, accessed_at, \
         accesses, mentions, summarised_at, sources) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        m.id,
        m.ts,
        m.kind,
        m.text,
        tags,
        m.session,
        m.expires_at,
        m.tier.as_str(),
        m.importance,
        m.accessed_at,
        m.accesses,
        m.mentions,
        m.summarised_at,
        sources
    ])?;
    Ok(())
}

/// Records a read of the memory `id` at `now`: its decay clock restarts,
/// its read count grows, and a short-term memory read `promote_accesses`
/// times becomes long-term. `false` when there is no such live memory.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn touch_memory(conn: &Connection, id: &str, now: f64, promote_accesses: u32) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE memories SET accessed_at = ?2, accesses = accesses + 1, \
             tier = CASE WHEN accesses + 1 >= ?3 THEN 'long' ELSE tier END \
             WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )?
        .execute(params![id, now, promote_accesses])?;
    Ok(n > 0)
}

/// Sets the tier of the live memory `id`; its tier before, or `None` when
/// there is no such memory.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn set_tier(conn: &Connection, id: &str, tier: Tier, now: f64) -> Result<Option<Tier>, StoreError> {
    let before: Option<String> = conn
        .prepare_cached("SELECT tier FROM memories WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)")?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    let Some(before) = before else { return Ok(None) };
    conn.prepare_cached("UPDATE memories SET tier = ?2 WHERE id = ?1")?.execute(params![id, tier.as_str()])?;
    Ok(Some(if before == "long" { Tier::Long } else { Tier::Short }))
}

/// Every live memory at `now`, oldest first (consolidation's input).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn live_memories(conn: &Connection, now: f64) -> Result<Vec<Memory>, StoreError> {
    let sql =
        format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE (expires_at IS NULL OR expires_at > ?1) ORDER BY ts, id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![now], memory_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Counts of live memories per tier at `now`: (short, long).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn tier_counts(conn: &Connection, now: f64) -> Result<(u64, u64), StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(tier = 'short'), 0), COALESCE(SUM(tier = 'long'), 0) FROM memories \
         WHERE expires_at IS NULL OR expires_at > ?1",
        )?
        .query_row(params![now], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?)
}

/// One merge of consolidation: the memory kept (with its new tags,
/// importance, mentions, tier and clock) and the duplicates deleted.
#[derive(Debug, Clone)]
pub(crate) struct Merge {
    /// The kept memory, as it is to be written.
    pub keeper: Memory,
    /// The ids of the duplicates merged into it.
    pub removed: Vec<String>,
}

/// Applies consolidation's changes in one transaction: the merges, the
/// promotions to long-term, and the deletions.
///
/// # Errors
/// [`StoreError::Sqlite`] (nothing is changed then).
pub(crate) fn apply_consolidation(
    conn: &mut Connection,
    merges: &[Merge],
    promote: &[String],
    delete: &[String],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE memories SET tags = ?2, importance = ?3, mentions = ?4, tier = ?5, accessed_at = ?6 WHERE id = ?1",
        )?;
        let mut del = tx.prepare_cached("DELETE FROM memories WHERE id = ?1")?;
        for m in merges {
            let k = &m.keeper;
            let tags = serde_json::to_string(&k.tags).unwrap_or_else(|_| "[]".into());
            update.execute(params![k.id, tags, k.importance, k.mentions, k.tier.as_str(), k.accessed_at])?;
            for id in &m.removed {
                del.execute([id])?;
            }
        }
        let mut up = tx.prepare_cached("UPDATE memories SET tier = 'long' WHERE id = ?1")?;
        for id in promote {
            up.execute([id])?;
        }
        for id in delete {
            del.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Stores `summary` and marks its sources summarised at `now` (or deletes
/// them when `keep_sources` is false), in one transaction.
///
/// # Errors
/// [`StoreError::Sqlite`] (nothing is changed then).
pub(crate) fn store_summary(
    conn: &mut Connection,
    summary: &Memory,
    now: f64,
    keep_sources: bool,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    insert_memory(&tx, summary)?;
    {
        let mut mark = tx.prepare_cached("UPDATE memories SET summarised_at = ?2 WHERE id = ?1")?;
        let mut delete = tx.prepare_cached("DELETE FROM memories WHERE id = ?1")?;
        for id in &summary.sources {
            if keep_sources {
                mark.execute(params![id, now])?;
            } else {
                delete.execute([id])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// The memory `id`, unless it does not exist or expired at `now` (Unix
/// seconds).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn get_memory(conn: &Connection, id: &str, now: f64) -> Result<Option<Memory>, StoreError> {
    let sql =
        format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)");
    Ok(conn.prepare_cached(&sql)?.query_row(params![id, now], memory_of).optional()?)
}

/// Deletes the memory `id`; `true` when it existed and had not expired at
/// `now` (an expired row is deleted too, but counts as already gone).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn delete_memory(conn: &Connection, id: &str, now: f64) -> Result<bool, StoreError> {
    let expires_at: Option<Option<f64>> = conn
        .prepare_cached("DELETE FROM memories WHERE id = ?1 RETURNING expires_at")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    Ok(matches!(expires_at, Some(e) if e.is_none_or(|t| t > now)))
}

/// Deletes every memory expired at `now` (Unix seconds); returns how many.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn delete_expired(conn: &Connection, now: f64) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached("DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ?1")?.execute([now])?)
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Unexpired memories whose text contains every whitespace-separated term of
/// `q.query` (at most [`MAX_TERMS`]; `%` and `_` match themselves), filtered
/// by kind and session, newest first, at most `q.limit`. A query without
/// terms matches every memory of the filters.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn search_memories(conn: &Connection, q: &MemoryQuery, now: f64) -> Result<Vec<Memory>, StoreError> {
    let mut sql = format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE (expires_at IS NULL OR expires_at > ?1)");
    let mut args: Vec<rusqlite::types::Value> = vec![now.into()];
    for term in q.query.split_whitespace().take(MAX_TERMS) {
        args.push(format!("%{}%", like_escape(term)).into());
        sql.push_str(&format!(" AND text LIKE ?{} ESCAPE '\\'", args.len()));
    }
    if let Some(kind) = &q.kind {
        args.push(kind.clone().into());
        sql.push_str(&format!(" AND kind = ?{}", args.len()));
    }
    if let Some(session) = &q.session {
        args.push(session.clone().into());
        sql.push_str(&format!(" AND session = ?{}", args.len()));
    }
    if let Some(tier) = q.tier {
        args.push(tier.as_str().to_string().into());
        sql.push_str(&format!(" AND tier = ?{}", args.len()));
    }
    args.push(i64::from(q.limit).into());
    sql.push_str(&format!(" ORDER BY ts DESC, id LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), memory_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds one document to the knowledge base at `ts` (Unix seconds); returns
/// its id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn kb_add(conn: &Connection, title: &str, text: &str, source: &str, ts: f64) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO kb_docs (ts, title, text, source) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![ts, title, text, source])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes the document `id`; `true` when it existed.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub(crate) fn kb_delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.prepare_cached("DELETE FROM kb_docs WHERE id = ?1")?.execute([id])? > 0)
}

/// The FTS5 `MATCH` expression of a user query, or `None` when it has no
/// word: the query is cut into runs of letters and digits (what the
/// `unicode61` tokenizer calls tokens; everything else — quotes, brackets,
/// `*`, `:`, `^`, `-` — separates), each run becomes a quoted string, and the
/// strings are joined with `OR`. So `foo"bar AND (` becomes
/// `"foo" OR "bar" OR "AND"`: operators and column filters of the FTS5
/// syntax are never live, and any document holding any term matches, bm25
/// ranking those with more (and rarer) terms first. At most [`MAX_TERMS`]
/// terms are kept.
pub fn match_expression(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TERMS)
        // No `"` can be left in a term; doubling it would be FTS5's escape.
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// The documents matching `query` (see [`match_expression`]), best first by
/// bm25, at most `limit`. A query without words matches nothing.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn kb_search(conn: &Connection, query: &str, limit: u32) -> Result<Vec<KbHit>, StoreError> {
    let Some(expr) = match_expression(query) else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT rowid, title, source, snippet(kb, 1, '[', ']', '…', 16), bm25(kb, {BM25_WEIGHTS}) AS rank_
         FROM kb WHERE kb MATCH ?1 ORDER BY rank_ LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![expr, limit], |r| {
        Ok(KbHit {
            id: r.get(0)?,
            title: r.get(1)?,
            source: r.get(2)?,
            snippet: r.get(3)?,
            score: -r.get::<_, f64>(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("agentvisor.db")).unwrap();
        (dir, conn)
    }

    fn memory(id: &str, ts: f64, kind: &str, text: &str, session: Option<&str>, expires_at: Option<f64>) -> Memory {
        Memory {
            id: id.into(),
            ts,
            kind: kind.into(),
            text: text.into(),
            tags: vec!["t1".into(), "t2".into()],
            session: session.map(str::to_string),
            expires_at,
            tier: Tier::Short,
            importance: 0.5,
            accessed_at: ts,
            accesses: 0,
            mentions: 1,
            summarised_at: None,
            sources: Vec::new(),
        }
    }

    #[test]
    fn memories_round_trip_expire_and_delete() {
        let (_dir, conn) = conn();
        let m = memory("a", 100.0, "fact", "the sky is blue", Some("s1"), None);
        insert_memory(&conn, &m).unwrap();
        insert_memory(&conn, &memory("b", 101.0, "fact", "short lived", None, Some(150.0))).unwrap();
        assert!(insert_memory(&conn, &m).is_err(), "ids are unique");
        assert_eq!(get_memory(&conn, "a", 200.0).unwrap(), Some(m));
        assert!(get_memory(&conn, "b", 149.0).unwrap().is_some());
        assert_eq!(get_memory(&conn, "b", 150.0).unwrap(), None, "expired at expires_at");
        assert_eq!(delete_expired(&conn, 149.0).unwrap(), 0);
        assert_eq!(delete_expired(&conn, 151.0).unwrap(), 1);
        assert_eq!(get_memory(&conn, "b", 0.0).unwrap(), None, "the row is gone");
        assert!(delete_memory(&conn, "a", 200.0).unwrap());
        assert!(!delete_memory(&conn, "a", 200.0).unwrap());
        assert!(!delete_memory(&conn, "never", 200.0).unwrap());
        insert_memory(&conn, &memory("c", 1.0, "fact", "x", None, Some(5.0))).unwrap();
        assert!(!delete_memory(&conn, "c", 10.0).unwrap(), "an expired memory counts as gone");
    }

    #[test]
    fn memory_search_filters_and_orders_newest_first() {
        let (_dir, conn) = conn();
        insert_memory(&conn, &memory("1", 1.0, "fact", "Ada likes green tea", Some("s1"), None)).unwrap();
        insert_memory(&conn, &memory("2", 2.0, "preference", "Ada prefers TEA without sugar", Some("s1"), None))
            .unwrap();
        insert_memory(&conn, &memory("3", 3.0, "fact", "Bob likes coffee", Some("s2"), None)).unwrap();
        insert_memory(&conn, &memory("4", 4.0, "fact", "Ada's tea expired", None, Some(5.0))).unwrap();
        insert_memory(&conn, &memory("5", 5.0, "fact", "100% sure", None, None)).unwrap();
        let ids = |q: MemoryQuery| -> Vec<String> {
            search_memories(&conn, &q, 10.0).unwrap().into_iter().map(|m| m.id).collect()
        };
        let q = |query: &str| MemoryQuery { query: query.into(), limit: 10, ..Default::default() };
        assert_eq!(ids(q("ada tea")), ["2", "1"]);
        assert_eq!(ids(MemoryQuery { kind: Some("fact".into()), ..q("tea") }), ["1"]);
        assert_eq!(ids(MemoryQuery { session: Some("s2".into()), ..q("likes") }), ["3"]);
        assert_eq!(ids(MemoryQuery { limit: 1, ..q("ada") }), ["2"]);
        assert_eq!(ids(q("100%")), ["5"]);
        assert_eq!(ids(q("0_")), Vec::<String>::new(), "_ is literal");
        assert_eq!(ids(q("' OR 1=1 --")), Vec::<String>::new());
    }

    #[test]
    fn match_expression_quotes_every_term() {
        assert_eq!(match_expression("rust borrow checker").as_deref(), Some("\"rust\" OR \"borrow\" OR \"checker\""));
        assert_eq!(match_expression("foo\"bar AND (").as_deref(), Some("\"foo\" OR \"bar\" OR \"AND\""));
        assert_eq!(match_expression("title:x* NEAR(a b) -c ^d").as_deref().map(|e| e.matches('"').count()), Some(14));
        assert_eq!(match_expression("  \"()*:^  "), None);
        assert_eq!(match_expression(&"w ".repeat(100)).map(|e| e.matches(" OR ").count()), Some(MAX_TERMS - 1));
    }

    #[test]
    fn kb_ranks_by_bm25_survives_hostile_queries_and_never_reuses_ids() {
        let (_dir, conn) = conn();
        let rust =
            kb_add(&conn, "Rust ownership", "The borrow checker enforces ownership and borrowing rules.", "book", 1.0)
                .unwrap();
        let py =
            kb_add(&conn, "Python", "Python has a garbage collector; nothing like a borrow checker.", "", 2.0).unwrap();
        let soup = kb_add(&conn, "Soup", "Simmer onions and carrots for an hour.", "grandma", 3.0).unwrap();
        let hits = kb_search(&conn, "rust borrow checker", 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [rust, py]);
        assert!(hits[0].score > hits[1].score, "{hits:?}");
        assert!(hits[0].snippet.contains("[borrow]"), "{}", hits[0].snippet);
        assert_eq!(kb_search(&conn, "CARROTS", 10).unwrap()[0].id, soup, "porter + case folding: carrots ~ CARROTS");
        assert_eq!(kb_search(&conn, "simmering", 10).unwrap()[0].id, soup, "porter stems simmering to simmer");
        assert_eq!(kb_search(&conn, "rust borrow checker", 1).unwrap().len(), 1);
        for hostile in ["foo\"bar AND (", "\"", "NEAR(", "title:", "*", "a OR", ")(", "'; DROP TABLE kb; --", "é\u{0}x"]
        {
            kb_search(&conn, hostile, 10).unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
        }
        assert!(kb_delete(&conn, soup).unwrap());
        assert!(!kb_delete(&conn, soup).unwrap());
        assert!(kb_search(&conn, "carrots", 10).unwrap().is_empty());
        let next = kb_add(&conn, "New", "fresh", "", 4.0).unwrap();
        assert!(next > soup, "a deleted id is not reused: {next} after {soup}");
    }
}
