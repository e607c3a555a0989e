//! State on disk (DESIGN §8): one SQLite database, `data_dir/agentvisor.db`,
//! in WAL mode, owned by one dedicated thread. Callers send closures to that
//! thread and await their result, so no SQLite call ever runs inside an
//! actor's handler or on the async runtime.
//!
//! Migrations are versioned with `PRAGMA user_version`; each step runs once,
//! in order, inside a transaction.
//!
//! Audit rows (routing receipts) do not wait on that thread: they go
//! through an [`audit::AuditLog`] that commits them in batches (group
//! commit), off the reply path.

pub mod audit;
pub mod context;
pub mod goals;
pub mod jobs;
pub mod learning;
pub mod memory;
pub mod mood;
pub mod personas;
pub mod proactive;
pub mod provider_stats;
pub mod receipts;
pub mod resources;
pub mod schedules;
pub mod services;
pub mod tokens;
pub mod tutoring;

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        reason: String,
    },
    /// A query failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store thread is gone (daemon stopping).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => "store_open",
            StoreError::Sqlite(_) => "store_query",
            StoreError::Closed => "store_closed",
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle on the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<Job>,
    path: PathBuf,
}

/// Schema migrations, in order; `user_version` counts the ones applied.
const MIGRATIONS: &[&str] = &[
    // 1: routing receipts (the shadow audit).
    "CREATE TABLE receipts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        task_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        task_type TEXT NOT NULL,
        tier TEXT NOT NULL,
        backend TEXT,
        model TEXT,
        complexity REAL NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        fallbacks TEXT NOT NULL,
        outcome TEXT NOT NULL,
        decide_us REAL NOT NULL,
        queue_ms REAL NOT NULL,
        first_token_ms REAL,
        total_ms REAL NOT NULL,
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        cost_usd REAL NOT NULL
    );
    CREATE INDEX receipts_ts ON receipts(ts);
    CREATE INDEX receipts_task ON receipts(task_id);",
    // 2: conversation turns per session (SessionMemoryAgent).
    "CREATE TABLE session_turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        ts REAL NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        agent TEXT
    );
    CREATE INDEX session_turns_session ON session_turns(session, id);",
    // 3: memories and the knowledge base (FTS5).
    memory::MIGRATION,
    // 4: the service registry.
    services::MIGRATION,
    // 5: who asked (the envelope's `user`), on every receipt.
    "ALTER TABLE receipts ADD COLUMN user TEXT;
    CREATE INDEX receipts_user ON receipts(user);",
    // 6: no index on the receipts' task ids. Nothing looks receipts up by
    // task id, and random ids put each insert on its own index page: under
    // load that index was most of the pages every batch wrote (issue 12's
    // profile). Append-ordered `ts` and the few `user`s stay indexed.
    "DROP INDEX IF EXISTS receipts_task;",
    // 7: ResourceManager's reservations (clients' only: agents' and models'
    // are taken again when they start).
    resources::MIGRATION,
    // 8: AsyncProcessor's jobs.
    jobs::MIGRATION,
    // 9: TaskScheduler's schedules.
    schedules::MIGRATION,
    // 10: DynamicIdentityAgent's personas and the sessions using them.
    personas::MIGRATION,
    // 11: GoalManager's goals.
    goals::MIGRATION,
    // 12: MoodTrackerAgent's recorded emotions.
    mood::MIGRATION,
    // 13: TutoringAgent's sessions and mastery.
    tutoring::MIGRATION,
    // 14: ProactiveAgent's suggestions and when each rule last fired.
    proactive::MIGRATION,
    // 15: the content estimate on a receipt (issue 15).
    receipts::MIGRATION_ESTIMATE,
    // 16: memory tiers: tier, importance and its decay clock, reads,
    // mentions, summaries (issue 22).
    memory::TIERS_MIGRATION,
    // 17: the token governor's state per session (ContextManager).
    context::MIGRATION,
    // 18: API tokens and web-UI sessions, as keyed hashes (issue 18).
    tokens::MIGRATION,
    // 19: the learning loop: feedback, corrections, user preferences, agent
    // trust (issue 16).
    learning::MIGRATION,
];

/// How often the checkpointer copies the WAL into the database file.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The checkpointer thread: a `PASSIVE` checkpoint every
/// [`CHECKPOINT_INTERVAL`] on its own connection, until the store thread
/// ends. The store's connection has `wal_autocheckpoint = 0`, so a
/// checkpoint's writes and fsync never stall a commit — under load, or when
/// the disk is slow, they held the store thread for seconds, and through
/// the receipts queue's back-pressure the replies behind it (issue 12). A
/// passive checkpoint waits for no reader or writer; the WAL holds at most
/// about one interval of writes beyond what readers still use.
fn checkpointer(conn: &Connection, store_gone: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    while let Err(RecvTimeoutError::Timeout) = store_gone.recv_timeout(CHECKPOINT_INTERVAL) {
        let t0 = std::time::Instant::now();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying at the next interval");
        }
        let took = t0.elapsed();
        if took > CHECKPOINT_INTERVAL {
            tracing::info!(seconds = took.as_secs_f64(), "slow WAL checkpoint (off the store thread)");
        }
    }
}

/// Opens (creating when needed) and migrates the database at `path`.
///
/// # Errors
/// [`StoreError::Open`] when the file cannot be opened or a migration fails.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open { path: path.to_path_buf(), reason: e.to_string() };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(open_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(sql).map_err(open_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(open_err)?;
        tx.commit().map_err(open_err)?;
        tracing::info!(version = i + 1, path = %path.display(), "store migrated");
    }
    Ok(conn)
}

impl Store {
    /// Opens `data_dir/agentvisor.db` on a new thread.
    ///
    /// # Errors
    /// [`StoreError::Open`].
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Open { path: data_dir.to_path_buf(), reason: e.to_string() })?;
        let path = data_dir.join("agentvisor.db");
        let mut conn = open_connection(&path)?;
        // Checkpoints (copying the WAL into the database file, with its
        // fsync) run on their own thread, never inside a commit of this one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| StoreError::Open { path: path.clone(), reason: e.to_string() })?;
        let (alive, store_gone) = std::sync::mpsc::channel::<()>();
        let spawn_err = |e: std::io::Error| StoreError::Open { path: path.clone(), reason: e.to_string() };
        let checkpoints =
            Connection::open(&path).map_err(|e| StoreError::Open { path: path.clone(), reason: e.to_string() })?;
        std::thread::Builder::new()
            .name("agentvisor-checkpoint".into())
            .spawn(move || checkpointer(&checkpoints, &store_gone))
            .map_err(spawn_err)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("agentvisor-store".into())
            .spawn(move || {
                let _alive = alive; // dropped when this thread ends: the checkpointer ends too
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(spawn_err)?;
        Ok(Store { tx, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `f` on the store thread now (so calls queued in this order run
    /// in this order, whoever awaits first) and returns the future of its
    /// result. Used by callers that order writes under their own lock.
    ///
    /// # Errors
    /// The future resolves to [`StoreError::Closed`] when the thread is
    /// gone, or to `f`'s error.
    pub fn enqueue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Runs `f` on the store thread and returns its result.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the thread is gone, or `f`'s error.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let autocheckpoint: i64 =
            store.call(|conn| Ok(conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?)).await.unwrap();
        assert_eq!(autocheckpoint, 0, "commits on the store thread never checkpoint");
        let db = dir.path().join("agentvisor.db");
        let before = std::fs::metadata(&db).unwrap().len();
        store
            .call(|conn| {
                conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(1000000));")?;
                Ok(())
            })
            .await
            .unwrap();
        // The megabyte sits in the WAL until the checkpointer's next pass.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&db).unwrap().len() < before + 1_000_000 {
            assert!(Instant::now() < deadline, "no checkpoint within 30 s (interval {CHECKPOINT_INTERVAL:?})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
