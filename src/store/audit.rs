//! Audit writes off the reply path: an [`AuditLog`] queues rows (routing
//! receipts today) on a bounded channel and one writer task commits them
//! in batches — group commit — on the store thread.
//!
//! Shapes and guarantees, for a log of batch size `B` (1 ≤ `B` ≤
//! [`MAX_BATCH`]; receipts: `store.receipts_batch`, default 1024):
//!
//! - **Queue**: a bounded channel of capacity `B`. [`AuditLog::append`]
//!   returns as soon as the row is queued (microseconds), so the caller's
//!   reply goes out without waiting for SQLite.
//! - **Group commit**: the writer waits for a first row, takes whatever
//!   else is already queued up to `B` rows, waits up to the log's
//!   *linger* (receipts: `store.receipts_linger_ms`, default 5 ms) for the
//!   batch to fill, and commits it in ONE transaction; then loops. Under
//!   load a batch holds many rows, so SQLite writes each page once per
//!   batch instead of once per row; a lone row is committed after the
//!   linger (0: at once). A flush or the close cuts the linger short.
//! - **Back-pressure, never a drop**: when the queue is full, the append is
//!   counted (`agentvisor_audit_backpressure_total{log}`) and then waits for
//!   room — the caller (the model call's task) is slowed, nothing is lost.
//! - **Crash bound**: rows whose append returned but that are not yet
//!   committed are at most `B` in the transaction being committed plus `B`
//!   queued: a crash of the process (SIGKILL, panic=abort) loses at most
//!   **2 × `B`** rows ([`AuditLog::loss_bound`]). Committed rows survive a
//!   process crash (WAL); with `synchronous=NORMAL` an OS crash or power
//!   loss may also lose the last committed transactions.
//! - **Clean stop loses nothing**: [`AuditLog::close`] stops the queue,
//!   commits every queued row and waits for that. An append after the close
//!   (a model call that outlived the router's stop) is written directly in
//!   its own transaction and awaited (`outcome="direct"`).
//! - **Errors**: a batch that cannot be committed (`store_query`,
//!   `store_closed`) is logged (warn, with the code and the row count) and
//!   its rows counted as `agentvisor_audit_rows_total{log,outcome="failed"}`.
//!   Stored rows count as `outcome="batched"` or `"direct"`; batch sizes go
//!   to `agentvisor_audit_batch_rows{log}`, commit times (seconds, the
//!   wait for the store thread included) to
//!   `agentvisor_audit_commit_seconds{log}`; a commit over 1 s is logged.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};
use rusqlite::Connection;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// Largest batch size (and queue capacity) of a log; larger settings are
/// capped to it.
pub const MAX_BATCH: usize = 1 << 20;

/// Inserts a batch of rows; called inside the batch's transaction.
pub type InsertBatch<T> = fn(&Connection, &[T]) -> Result<(), StoreError>;

enum Item<T> {
    Row(T),
    /// Answered once every row queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
}

/// The counters of one log (`log` label resolved once).
#[derive(Clone)]
struct Counters {
    backpressure: IntCounter,
    batched: IntCounter,
    direct: IntCounter,
    failed: IntCounter,
    batch_rows: Histogram,
    commit_seconds: Histogram,
}

impl Counters {
    fn new(metrics: &Metrics, log: &str) -> Counters {
        let rows = |outcome: &str| metrics.audit_rows.with_label_values(&[log, outcome]);
        Counters {
            backpressure: metrics.audit_backpressure.with_label_values(&[log]),
            batched: rows("batched"),
            direct: rows("direct"),
            failed: rows("failed"),
            batch_rows: metrics.audit_batch_rows.with_label_values(&[log]),
            commit_seconds: metrics.audit_commit_seconds.with_label_values(&[log]),
        }
    }
}

struct Inner<T> {
    name: &'static str,
    tx: mpsc::Sender<Item<T>>,
    store: Store,
    insert: InsertBatch<T>,
    batch: usize,
    closing: CancellationToken,
    done: watch::Receiver<bool>,
    counters: Counters,
}

/// Handle on one audit log and its writer task; cheap to clone (every
/// clone feeds the same queue).
pub struct AuditLog<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for AuditLog<T> {
    fn clone(&self) -> Self {
        AuditLog { inner: self.inner.clone() }
    }
}

impl<T: Send + 'static> AuditLog<T> {
    /// Starts the writer task of the log `name` (the `log` metric label)
    /// over `store`: batches of at most `batch` rows (capped to
    /// `1..=`[`MAX_BATCH`]), queue capacity `batch`, rows written by
    /// `insert`. Must be called inside a tokio runtime.
    pub fn start(
        name: &'static str,
        store: Store,
        (batch, linger): (usize, Duration),
        insert: InsertBatch<T>,
        metrics: &Metrics,
    ) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        let (tx, rx) = mpsc::channel(batch);
        let (done_tx, done) = watch::channel(false);
        let closing = CancellationToken::new();
        let counters = Counters::new(metrics, name);
        let writer = Writer { name, rx, store: store.clone(), insert, batch, linger, counters: counters.clone() };
        tokio::spawn(writer.run(closing.clone(), done_tx));
        AuditLog { inner: Arc::new(Inner { name, tx, store, insert, batch, closing, done, counters }) }
    }

    /// The batch size (also the queue capacity).
    pub fn batch(&self) -> usize {
        self.inner.batch
    }

    /// Most rows a process crash can lose: 2 × the batch size (one batch
    /// being committed, one queued).
    pub fn loss_bound(&self) -> usize {
        2 * self.inner.batch
    }

    /// Queues `row`; returns once it is queued, not stored. A full queue
    /// is counted as back-pressure and waited out; after [`AuditLog::close`]
    /// the row is written directly (and awaited).
    pub async fn append(&self, row: T) {
        let row = match self.inner.tx.try_send(Item::Row(row)) {
            Ok(()) => return,
            Err(TrySendError::Full(row)) => {
                self.inner.counters.backpressure.inc();
                match self.inner.tx.send(row).await {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(row)) => row,
                }
            }
            Err(TrySendError::Closed(row)) => row,
        };
        if let Item::Row(row) = row {
            self.direct(row).await;
        }
    }

    /// Waits until every row appended before this call is committed (or
    /// counted as failed): read-your-writes for readers of the table.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Item::Flush(tx)).await.is_ok() && rx.await.is_ok() {
            return;
        }
        // Closed: the writer commits what was queued, then ends.
        self.wait_done().await;
    }

    /// Stops batching: every row queued so far is committed before this
    /// returns; later appends are written directly. Idempotent.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.wait_done().await;
    }

    async fn wait_done(&self) {
        let mut done = self.inner.done.clone();
        // An error means the writer task is gone (runtime stopping): nothing left to wait for.
        let _ = done.wait_for(|d| *d).await;
    }

    /// One row in its own transaction (the log is closed).
    async fn direct(&self, row: T) {
        let insert = self.inner.insert;
        let result = self.inner.store.call(move |conn| commit(conn, insert, std::slice::from_ref(&row))).await;
        match result {
            Ok(()) => self.inner.counters.direct.inc(),
            Err(e) => {
                self.inner.counters.failed.inc();
                tracing::warn!(log = self.inner.name, code = e.code(), error = %e, rows = 1, "audit row not stored");
            }
        }
    }
}

/// Inserts `rows` in one transaction.
fn commit<T>(conn: &mut Connection, insert: InsertBatch<T>, rows: &[T]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    insert(&tx, rows)?;
    tx.commit()?;
    Ok(())
}

/// The writer task.
struct Writer<T> {
    name: &'static str,
    rx: mpsc::Receiver<Item<T>>,
    store: Store,
    insert: InsertBatch<T>,
    batch: usize,
    linger: Duration,
    counters: Counters,
}

impl<T: Send + 'static> Writer<T> {
    async fn run(mut self, closing: CancellationToken, done: watch::Sender<bool>) {
        let mut closed = false;
        loop {
            let first = tokio::select! {
                biased;
                item = self.rx.recv() => item,
                () = closing.cancelled(), if !closed => {
                    // No new rows; the queued ones still come out of recv.
                    self.rx.close();
                    closed = true;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut rows = Vec::new();
            let mut waiters = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Item::Row(r) => rows.push(r),
                    Item::Flush(w) => waiters.push(w),
                }
                if rows.len() < self.batch {
                    next = self.rx.try_recv().ok();
                }
            }
            // Linger: a batch not yet full waits up to `linger` for more
            // rows (fewer, larger transactions under load); a flush or the
            // close cuts it short.
            let deadline = Instant::now() + self.linger;
            while rows.len() < self.batch && waiters.is_empty() && !closed && !self.linger.is_zero() {
                let item = tokio::select! {
                    biased;
                    item = self.rx.recv() => item,
                    () = closing.cancelled() => None,
                    () = tokio::time::sleep_until(deadline) => None,
                };
                match item {
                    Some(Item::Row(r)) => rows.push(r),
                    Some(Item::Flush(w)) => waiters.push(w),
                    None => break,
                }
            }
            if !rows.is_empty() {
                self.commit(rows).await;
            }
            for w in waiters {
                let _ = w.send(());
            }
        }
        let _ = done.send(true);
    }

    async fn commit(&self, rows: Vec<T>) {
        let n = rows.len();
        let insert = self.insert;
        let t0 = std::time::Instant::now();
        let result = self.store.call(move |conn| commit(conn, insert, &rows)).await;
        let took = t0.elapsed();
        self.counters.commit_seconds.observe(took.as_secs_f64());
        if took > Duration::from_secs(1) {
            tracing::info!(
                log = self.name,
                rows = n,
                seconds = took.as_secs_f64(),
                "slow audit commit (the disk or the store thread)"
            );
        }
        self.counters.batch_rows.observe(n as f64);
        match result {
            Ok(()) => self.counters.batched.inc_by(n as u64),
            Err(e) => {
                self.counters.failed.inc_by(n as u64);
                tracing::warn!(log = self.name, code = e.code(), error = %e, rows = n, "audit batch not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::params;

    use super::*;

    /// Rows of the test table: `(n, batch)`; `batch` numbers the transactions.
    fn insert_numbers(conn: &Connection, rows: &[u32]) -> Result<(), StoreError> {
        let batch: i64 = conn.query_row("SELECT COALESCE(MAX(batch), 0) + 1 FROM t", [], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached("INSERT INTO t (n, batch) VALUES (?1, ?2)")?;
        for n in rows {
            stmt.execute(params![n, batch])?;
        }
        Ok(())
    }

    async fn store_with_table(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).unwrap();
        store
            .call(|conn| {
                conn.execute_batch(
                    "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, batch INTEGER NOT NULL)",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        store
    }

    async fn rows(store: &Store) -> Vec<(u32, i64)> {
        store
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT n, batch FROM t ORDER BY id")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap()
    }

    /// Holds the store thread until the returned sender is dropped or sent to.
    /// Holds the store thread until the returned sender sends (or drops);
    /// returns once the thread is held, so the writer's next commit waits.
    async fn block_store(store: &Store) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (held_tx, held) = oneshot::channel::<()>();
        let store = store.clone();
        tokio::spawn(async move {
            let _ = store
                .call(move |_| {
                    let _ = held_tx.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await;
        });
        held.await.expect("the store thread runs the blocking call");
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_bounded_ordered_and_back_pressure_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let metrics = Metrics::new();
        let log = AuditLog::start("receipts", store.clone(), (4, Duration::ZERO), insert_numbers, &metrics);
        assert_eq!((log.batch(), log.loss_bound()), (4, 8));
        let release = block_store(&store).await;
        let writer = log.clone();
        let appends = tokio::spawn(async move {
            for n in 0..10u32 {
                writer.append(n).await;
            }
        });
        // The store is held: one row in the writer's hands, 4 queued, the
        // sixth append waits — counted, not dropped.
        let bp = metrics.audit_backpressure.with_label_values(&["receipts"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bp.get() == 0 {
            assert!(std::time::Instant::now() < deadline, "no back-pressure counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!appends.is_finished(), "the caller waits while the queue is full");
        release.send(()).unwrap();
        appends.await.unwrap();
        log.flush().await;
        let got = rows(&store).await;
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>(), "order kept");
        let mut sizes = std::collections::BTreeMap::<i64, usize>::new();
        for (_, b) in &got {
            *sizes.entry(*b).or_default() += 1;
        }
        assert!(sizes.values().all(|s| *s <= 4), "batches: {sizes:?}");
        assert!(sizes.values().any(|s| *s == 4), "the queued rows went in one transaction: {sizes:?}");
        let batched = metrics.audit_rows.with_label_values(&["receipts", "batched"]).get();
        assert_eq!(batched, 10);
        assert_eq!(metrics.audit_batch_rows.with_label_values(&["receipts"]).get_sample_count() as usize, sizes.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_linger_gathers_rows_into_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let metrics = Metrics::new();
        let log = AuditLog::start("receipts", store.clone(), (8, Duration::from_secs(1)), insert_numbers, &metrics);
        for n in 0..5u32 {
            log.append(n).await;
        }
        // No flush: the writer commits the five after its linger, together.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rows(&store).await.len() < 5 {
            assert!(std::time::Instant::now() < deadline, "rows not committed after the linger");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows(&store).await, (0..5).map(|n| (n, 1)).collect::<Vec<_>>(), "one transaction");
        // A full batch does not wait for the linger; a flush cuts it short.
        for n in 5..14u32 {
            log.append(n).await;
        }
        log.flush().await;
        let got = rows(&store).await;
        assert_eq!(got.len(), 14);
        assert_eq!(got[5..13].iter().map(|r| r.1).collect::<Vec<_>>(), [2; 8], "the full batch of 8");
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_commits_everything_queued_and_later_rows_go_direct() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let metrics = Metrics::new();
        let log = AuditLog::start("receipts", store.clone(), (8, Duration::ZERO), insert_numbers, &metrics);
        let release = block_store(&store).await;
        for n in 0..9u32 {
            log.append(n).await; // one taken by the writer, eight queued
        }
        let closing = {
            let log = log.clone();
            tokio::spawn(async move { log.close().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "close waits for the queued rows");
        drop(release);
        closing.await.unwrap();
        assert_eq!(rows(&store).await.len(), 9, "nothing queued is lost");
        log.append(9).await; // after the close: written directly, awaited
        log.flush().await;
        log.close().await;
        assert_eq!(rows(&store).await.iter().map(|r| r.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        let count = |o: &str| metrics.audit_rows.with_label_values(&["receipts", o]).get();
        assert_eq!((count("batched"), count("direct"), count("failed")), (9, 1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap(); // no table `t`: every insert fails
        let metrics = Metrics::new();
        let log = AuditLog::start("receipts", store, (4, Duration::ZERO), insert_numbers, &metrics);
        log.append(1).await;
        log.append(2).await;
        log.close().await;
        assert_eq!(metrics.audit_rows.with_label_values(&["receipts", "failed"]).get(), 2);
        assert_eq!(metrics.audit_rows.with_label_values(&["receipts", "batched"]).get(), 0);
    }
}
