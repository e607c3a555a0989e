//! The ledger of accepted tasks: every task the bus admitted and has not
//! answered yet, with where its reply goes. It outlives the dispatcher (a
//! restarted dispatcher rebuilds its queues from it) and makes the bus's
//! rule hold — an accepted task gets exactly one reply: whoever answers a
//! task first [`Ledger::take`]s its entry, and only the taker sends.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::envelope::ValidTask;
use super::reply::ClientAddr;

/// A task id as seen by one client: (client identity, task id).
pub type Key = (Bytes, String);

/// Where an accepted task is.
pub enum Stage {
    /// Waiting in its agent's queue (the task itself is kept here).
    Queued(Box<ValidTask>),
    /// Being worked on; cancel it with the token.
    Running(CancellationToken),
}

/// One accepted task.
pub struct Entry {
    /// Where the reply goes.
    pub client: ClientAddr,
    /// The agent serving it.
    pub agent: String,
    /// 0–9.
    pub priority: u8,
    /// Admission order.
    pub seq: u64,
    /// When the message arrived.
    pub received: Instant,
    /// When the answer is due.
    pub deadline: Option<Instant>,
    /// Queued or running.
    pub stage: Stage,
}

/// A task leaving the queue for its run.
pub struct Started {
    /// The task.
    pub task: Box<ValidTask>,
    /// Where the reply goes.
    pub client: ClientAddr,
    /// When the message arrived.
    pub received: Instant,
    /// When the answer is due.
    pub deadline: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    queued: usize,
}

/// The accepted, unanswered tasks. Cheap to share (`Arc`).
#[derive(Default)]
pub struct Ledger(Mutex<Inner>);

impl Ledger {
    /// Whether `key` is in flight.
    pub fn contains(&self, key: &Key) -> bool {
        self.0.lock().map.contains_key(key)
    }

    /// Records an admitted (queued) task.
    pub fn admit(&self, key: Key, entry: Entry) {
        let mut g = self.0.lock();
        if matches!(entry.stage, Stage::Queued(_)) {
            g.queued += 1;
        }
        g.map.insert(key, entry);
    }

    /// Moves a queued task to running under `token`; what its run needs,
    /// or `None` when it was answered meanwhile (cancelled, expired, drained).
    pub fn start(&self, key: &Key, token: CancellationToken) -> Option<Started> {
        let mut g = self.0.lock();
        let entry = g.map.get_mut(key)?;
        if !matches!(entry.stage, Stage::Queued(_)) {
            return None;
        }
        let Stage::Queued(task) = std::mem::replace(&mut entry.stage, Stage::Running(token)) else { return None };
        let started =
            Started { task, client: entry.client.clone(), received: entry.received, deadline: entry.deadline };
        g.queued -= 1;
        Some(started)
    }

    /// Takes the entry to answer it: only the caller that gets `Some`
    /// replies.
    pub fn take(&self, key: &Key) -> Option<Entry> {
        let mut g = self.0.lock();
        let entry = g.map.remove(key)?;
        if matches!(entry.stage, Stage::Queued(_)) {
            g.queued -= 1;
        }
        Some(entry)
    }

    /// The running task's cancel token; `None` when queued or gone.
    pub fn token(&self, key: &Key) -> Option<CancellationToken> {
        match &self.0.lock().map.get(key)?.stage {
            Stage::Running(t) => Some(t.clone()),
            Stage::Queued(_) => None,
        }
    }

    /// Keys of `client`'s tasks.
    pub fn keys_of(&self, client: &Bytes) -> Vec<Key> {
        self.0.lock().map.keys().filter(|k| k.0 == *client).cloned().collect()
    }

    /// Queued tasks whose deadline passed at `now`.
    pub fn expired(&self, now: Instant) -> Vec<Key> {
        let g = self.0.lock();
        g.map
            .iter()
            .filter(|(_, e)| matches!(e.stage, Stage::Queued(_)) && e.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every entry as (key, agent, priority, seq, running): what a
    /// restarted dispatcher rebuilds its queues from.
    pub fn outline(&self) -> Vec<(Key, String, u8, u64, bool)> {
        let g = self.0.lock();
        g.map
            .iter()
            .map(|(k, e)| (k.clone(), e.agent.clone(), e.priority, e.seq, matches!(e.stage, Stage::Running(_))))
            .collect()
    }

    /// Takes every entry (the end of a drain).
    pub fn take_all(&self) -> Vec<(Key, Entry)> {
        let mut g = self.0.lock();
        g.queued = 0;
        g.map.drain().collect()
    }

    /// Tasks accepted and not answered.
    pub fn len(&self) -> usize {
        self.0.lock().map.len()
    }

    /// Whether every accepted task was answered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (queued, running).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.0.lock();
        (g.queued, g.map.len() - g.queued)
    }
}
