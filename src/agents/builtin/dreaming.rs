//! DreamingModeAgent: consolidates the memories of MemoryOrchestratorService
//! while the fleet is idle. State: the activity it observes (the `task.*`
//! events), whether a run is in progress, and the last run's result; the
//! memories themselves are the `memories` table ([`crate::store::memory`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `dreaming.consolidate` | `{"dry_run"?, "force"?}` or nothing | `{"ran", "reason"?, "merged_duplicates", "exact_duplicates", "near_duplicates", "promoted", "summaries_added", "summarised", "memories_before", "memories_after", "duration_seconds", "summary_error"?}` |
//! | `dreaming.status` | nothing | `{"idle", "running", "idle_seconds", "idle_threshold_seconds", "in_flight", "runs", "last_run_at", "last_result"}` |
//!
//! **Idle.** Activity is a task on the bus: the agent reads the `task.accepted`,
//! `task.completed`, `task.failed` events (tasks addressed to itself do not
//! count). The fleet is idle when no task is in flight and the last one
//! ended `dreaming.idle_seconds` ago or more. With `dreaming.auto`, a
//! consolidation runs by itself once per idle stretch (checked every
//! `dreaming.check_every_secs`); `dreaming.consolidate` runs it by task, and
//! only when idle unless `force` is true. One run at a time.
//!
//! **A run.** Over every live memory, oldest first:
//!
//! 1. *Exact duplicates* — same kind and the same words (case, punctuation
//!    and white space ignored) — and *near duplicates* — same kind, word
//!    sets with a Jaccard similarity of at least
//!    `dreaming.near_duplicate_similarity` — are merged into the oldest of
//!    them, which is kept as it was written (the original); its `mentions`
//!    add up, its tags are the union, its importance the highest, and it is
//!    long-term when one of them was. Candidate pairs come from prefix
//!    filtering (Bayardo et al., "Scaling up all pairs similarity search",
//!    2007): two sets that similar share a word among the rarest
//!    `|s| − ⌈t·|s|⌉ + 1` of each, so only those pairs are compared.
//! 2. *Promotion* — a short-term memory mentioned `memory.promote_mentions`
//!    times, or whose decayed importance reaches `memory.promote_importance`,
//!    becomes long-term.
//! 3. *Summaries* — short-term memories older than
//!    `dreaming.summarise_after_secs` and not yet summarised (summaries and
//!    memories with a time to live excepted) are grouped by session, oldest
//!    first, `dreaming.summary_batch` at a time; each group is summarised
//!    by a model through HybridRouter (at most
//!    `dreaming.max_summaries_per_run` calls) and stored as a long-term
//!    memory of kind `summary` whose `sources` name the group. The
//!    originals are kept (marked `summarised_at`) unless
//!    `dreaming.keep_summarised` is false.
//!
//! Merges and promotions are one transaction; each summary another. A
//! model failure stops the summaries of that run (`summary_error`); what
//! was done stays. `dry_run` reports what would change without changing
//! anything (no model call: `summaries_added` counts the groups).
//!
//! Events: `dreaming.consolidated` after each run that changed something
//! or not. Metrics: `agentvisor_dreaming_runs_total{outcome}`,
//! `agentvisor_memories_consolidated_total{action}`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::{Answer, Background, Behaviour, Empty, Null, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::config::knowledge::{DreamingSettings, MemoryTierSettings};
use crate::core::{ChatMessage, ErrorCode, Event, GenParams, Task, TaskError, unix_time};
use crate::events::{EventBus, Published};
use crate::routing::router::{ModelCall, RouterHandle};
use crate::store::memory::{self as db, Memory, Merge, Tier, decayed};
use crate::store::{Store, StoreError};
use crate::supervisor::StartError;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "DreamingModeAgent";

/// The kind of the memories summaries are stored as.
pub(crate) const SUMMARY_KIND: &str = "summary";

/// The task types of DreamingModeAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<ConsolidateInput>, ConsolidateOutput>(
            "dreaming.consolidate",
            "Consolidates memories: merges duplicates, promotes, summarises old short-term memories into long-term ones",
            || vec![json!({"dry_run": true}), json!({"force": true}), json!(null)],
        ),
        rust_task::<OrShort<Empty>, StatusOutput>(
            "dreaming.status",
            "Whether the fleet is idle, whether consolidation runs, and the last run's result",
            || vec![json!({}), json!(null)],
        ),
    ]
}

/// A consolidation request.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct ConsolidateInput {
    /// Only report what would change; default false.
    #[serde(default)]
    dry_run: Option<bool>,
    /// Run even when the fleet is not idle; default false.
    #[serde(default)]
    force: Option<bool>,
}

impl Shorthand for ConsolidateInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: run now if the fleet is idle.";
    fn expand(_: Null) -> ConsolidateInput {
        ConsolidateInput::default()
    }
}

/// What a consolidation did (or, with `dry_run`, would do).
#[derive(Serialize, JsonSchema, Clone, Default, Debug)]
pub(crate) struct ConsolidateOutput {
    /// False when skipped (the fleet is not idle, or a run is in progress).
    ran: bool,
    /// Why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Whether nothing was changed (`dry_run`).
    dry_run: bool,
    /// Exact and near duplicates merged away.
    merged_duplicates: u64,
    /// Of those, exact duplicates (same words).
    exact_duplicates: u64,
    /// Of those, near duplicates (similar word sets).
    near_duplicates: u64,
    /// Short-term memories promoted to long-term.
    promoted: u64,
    /// Long-term memories written from summaries.
    summaries_added: u64,
    /// Short-term memories those summaries were made from.
    summarised: u64,
    /// Live memories before the run.
    memories_before: u64,
    /// Live memories after it.
    memories_after: u64,
    /// Time the run took, seconds.
    duration_seconds: f64,
    /// Why the summaries stopped early (a model call failed), if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_error: Option<String>,
}

/// The idle watcher and the runs.
#[derive(Serialize, JsonSchema)]
struct StatusOutput {
    /// No task in flight and none for `idle_threshold_seconds`.
    idle: bool,
    /// A consolidation is running.
    running: bool,
    /// Time since the last task on the bus ended (or since the agent started), seconds.
    idle_seconds: f64,
    /// `dreaming.idle_seconds`.
    idle_threshold_seconds: f64,
    /// Tasks on the bus now (other than this agent's).
    in_flight: u64,
    /// Consolidations run since the agent started (dry runs excluded).
    runs: u64,
    /// When the last one ended, Unix seconds; null: never.
    last_run_at: Option<f64>,
    /// The last run's answer (as `dreaming.consolidate`'s).
    last_result: Option<ConsolidateOutput>,
}

/// What the agent saw of the fleet's tasks.
struct Activity {
    /// The event stream, read on each look.
    rx: broadcast::Receiver<Arc<Published>>,
    /// When the last task (not ours) was accepted or ended, Unix seconds.
    last_at: f64,
    /// Ids of the tasks in flight (not ours).
    in_flight: BTreeSet<String>,
    /// The current idle stretch has had its automatic run.
    stretch_done: bool,
}

impl Activity {
    /// Reads every event published since the last look.
    fn observe(&mut self, now: f64) {
        loop {
            match self.rx.try_recv() {
                Ok(p) => match &p.event {
                    Event::TaskAccepted { id, agent, .. } if agent != AGENT => {
                        self.in_flight.insert(id.clone());
                        self.active(p.ts);
                    }
                    Event::TaskCompleted { id, .. } | Event::TaskFailed { id, .. } if self.in_flight.remove(id) => {
                        self.active(p.ts);
                    }
                    _ => {}
                },
                Err(TryRecvError::Lagged(_)) => {
                    // Events were missed: count it as activity, forget what was in flight.
                    self.in_flight.clear();
                    self.active(now);
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn active(&mut self, ts: f64) {
        self.last_at = self.last_at.max(ts);
        self.stretch_done = false;
    }

    /// Seconds idle at `now` (0 while a task is in flight).
    fn idle_for(&self, now: f64) -> f64 {
        if self.in_flight.is_empty() { (now - self.last_at).max(0.0) } else { 0.0 }
    }
}

/// The DreamingModeAgent behaviour.
pub struct Dreaming {
    inner: Arc<Inner>,
    watcher: Background,
}

struct Inner {
    store: Store,
    router: RouterHandle,
    events: EventBus,
    metrics: Metrics,
    settings: DreamingSettings,
    tiers: MemoryTierSettings,
    /// Longest model call.
    call_timeout: Duration,
    activity: Mutex<Option<Activity>>,
    running: AtomicBool,
    runs: Mutex<(u64, Option<f64>, Option<ConsolidateOutput>)>,
}

impl Dreaming {
    /// The behaviour: memories in `store`, summaries through `router`,
    /// activity from `events`.
    pub fn new(
        store: Store,
        router: RouterHandle,
        events: EventBus,
        metrics: Metrics,
        settings: DreamingSettings,
        tiers: MemoryTierSettings,
        call_timeout: Duration,
    ) -> Dreaming {
        Dreaming {
            inner: Arc::new(Inner {
                store,
                router,
                events,
                metrics,
                settings,
                tiers,
                call_timeout,
                activity: Mutex::new(None),
                running: AtomicBool::new(false),
                runs: Mutex::new((0, None, None)),
            }),
            watcher: Background::default(),
        }
    }
}

/// Clears the running flag when a run ends, however it ends.
struct RunGuard<'a>(&'a AtomicBool);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Inner {
    /// Idle seconds and tasks in flight, after reading the new events.
    fn look(&self) -> (f64, u64, bool) {
        let now = unix_time();
        let mut a = self.activity.lock();
        match a.as_mut() {
            Some(a) => {
                a.observe(now);
                (a.idle_for(now), a.in_flight.len() as u64, a.stretch_done)
            }
            None => (0.0, 0, true),
        }
    }

    /// Checks every `check_every_secs`; runs once per idle stretch.
    async fn watch(self: Arc<Self>) {
        let every = Duration::from_secs_f64(self.settings.check_every_secs.max(0.01));
        loop {
            tokio::time::sleep(every).await;
            let (idle, _, done) = self.look();
            if !done && idle >= self.settings.idle_seconds {
                if let Some(a) = self.activity.lock().as_mut() {
                    a.stretch_done = true;
                }
                let out = self.consolidate(false, true).await;
                if let Err(e) = out {
                    tracing::warn!(agent = AGENT, error = %e, "automatic consolidation failed");
                }
            }
        }
    }

    /// One run, unless another is in progress or (without `force`) the fleet is busy.
    async fn run(&self, dry_run: bool, force: bool) -> Result<ConsolidateOutput, TaskError> {
        let (idle, in_flight, _) = self.look();
        if !force && idle < self.settings.idle_seconds {
            self.metrics.dreaming_runs.with_label_values(&["not_idle"]).inc();
            let reason = if in_flight > 0 {
                format!("the fleet is not idle: {in_flight} task(s) in flight")
            } else {
                format!(
                    "the fleet is not idle: the last task ended {idle:.1} s ago (dreaming.idle_seconds: {})",
                    self.settings.idle_seconds
                )
            };
            return Ok(ConsolidateOutput { reason: Some(reason), dry_run, ..Default::default() });
        }
        self.consolidate(dry_run, false).await
    }

    async fn consolidate(&self, dry_run: bool, auto: bool) -> Result<ConsolidateOutput, TaskError> {
        if self.running.swap(true, Ordering::AcqRel) {
            self.metrics.dreaming_runs.with_label_values(&["in_progress"]).inc();
            return Ok(ConsolidateOutput {
                reason: Some("a consolidation is in progress".into()),
                dry_run,
                ..Default::default()
            });
        }
        let _guard = RunGuard(&self.running);
        let t0 = Instant::now();
        let result = self.consolidate_now(dry_run).await;
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                self.metrics.dreaming_runs.with_label_values(&["failed"]).inc();
                return Err(e);
            }
        };
        out.duration_seconds = t0.elapsed().as_secs_f64();
        let m = &self.metrics.memories_consolidated;
        if dry_run {
            self.metrics.dreaming_runs.with_label_values(&["dry_run"]).inc();
        } else {
            self.metrics.dreaming_runs.with_label_values(&["ran"]).inc();
            m.with_label_values(&["merged"]).inc_by(out.merged_duplicates);
            m.with_label_values(&["promoted"]).inc_by(out.promoted);
            m.with_label_values(&["summarised"]).inc_by(out.summarised);
            self.events.emit(Event::DreamingConsolidated {
                merged_duplicates: out.merged_duplicates,
                promoted: out.promoted,
                summaries_added: out.summaries_added,
                memories_before: out.memories_before,
                memories_after: out.memories_after,
                auto,
            });
            let mut runs = self.runs.lock();
            runs.0 += 1;
            runs.1 = Some(unix_time());
            runs.2 = Some(out.clone());
        }
        tracing::info!(
            agent = AGENT,
            dry_run,
            auto,
            merged = out.merged_duplicates,
            promoted = out.promoted,
            summaries = out.summaries_added,
            "memories consolidated"
        );
        Ok(out)
    }

    async fn consolidate_now(&self, dry_run: bool) -> Result<ConsolidateOutput, TaskError> {
        let now = unix_time();
        let memories = self.store.call(move |conn| db::live_memories(conn, now)).await.map_err(store_error)?;
        let before = memories.len() as u64;
        let plan = plan(memories, &self.settings, &self.tiers, now);
        let mut out = ConsolidateOutput {
            ran: true,
            dry_run,
            merged_duplicates: plan.exact + plan.near,
            exact_duplicates: plan.exact,
            near_duplicates: plan.near,
            promoted: plan.promoted,
            memories_before: before,
            ..Default::default()
        };
        if dry_run {
            out.summaries_added = plan.batches.len() as u64;
            out.summarised = plan.batches.iter().map(|b| b.len() as u64).sum();
            let deleted = if self.settings.keep_summarised { 0 } else { out.summarised };
            out.memories_after = before - out.merged_duplicates + out.summaries_added - deleted;
            return Ok(out);
        }
        let Plan { merges, promote, batches, .. } = plan;
        self.store
            .call(move |conn| db::apply_consolidation(conn, &merges, &promote, &[]))
            .await
            .map_err(store_error)?;
        for batch in batches {
            match self.summarise(&batch).await {
                Ok(text) => {
                    let summary = summary_memory(&batch, text, unix_time());
                    let keep = self.settings.keep_summarised;
                    let n = batch.len() as u64;
                    let at = unix_time();
                    self.store
                        .call(move |conn| db::store_summary(conn, &summary, at, keep))
                        .await
                        .map_err(store_error)?;
                    out.summaries_added += 1;
                    out.summarised += n;
                    if !keep {
                        self.metrics.memories_consolidated.with_label_values(&["deleted"]).inc_by(n);
                    }
                }
                Err(e) => {
                    tracing::warn!(agent = AGENT, error = %e, "summary failed; the run's other summaries are skipped");
                    out.summary_error = Some(e.to_string());
                    break;
                }
            }
        }
        let now = unix_time();
        let (short, long) = self.store.call(move |conn| db::tier_counts(conn, now)).await.map_err(store_error)?;
        out.memories_after = short + long;
        Ok(out)
    }

    /// A summary of `batch` from a model, through HybridRouter.
    async fn summarise(&self, batch: &[Memory]) -> Result<String, TaskError> {
        let notes: Vec<String> = batch.iter().map(|m| format!("- {}", m.text.trim())).collect();
        let call = ModelCall {
            task_id: format!("dreaming-{}", uuid::Uuid::new_v4()),
            agent: AGENT.into(),
            task_type: "dreaming.consolidate".into(),
            agent_complexity: 0.2,
            messages: vec![
                ChatMessage::new(
                    "system",
                    "You consolidate an assistant's memories. Summarise the notes below in at most three sentences. \
                     Keep every name, number and date. Answer with the summary only.",
                ),
                ChatMessage::new("user", notes.join("\n")),
            ],
            params: GenParams { max_tokens: Some(self.settings.summary_max_tokens), ..Default::default() },
            ..Default::default()
        };
        let answer = self.router.call(call, self.call_timeout).await.map_err(|f| f.error)?;
        let text = answer.response.content.trim().to_string();
        if text.is_empty() {
            return Err(TaskError::new(ErrorCode::InvalidOutput, "the model answered an empty summary"));
        }
        Ok(text)
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("memory store: {e}"))
}

/// The long-term memory summarising `batch`.
fn summary_memory(batch: &[Memory], text: String, now: f64) -> Memory {
    let importance = batch.iter().map(|m| m.importance).fold(0.0, f64::max);
    Memory {
        tags: vec![SUMMARY_KIND.into()],
        session: batch.first().and_then(|m| m.session.clone()),
        tier: Tier::Long,
        sources: batch.iter().map(|m| m.id.clone()).collect(),
        ..Memory::new(uuid::Uuid::new_v4().to_string(), now, SUMMARY_KIND.into(), text, importance)
    }
}

/// What a consolidation of `memories` (oldest first) at `now` would do,
/// without doing it: the counts a `dry_run` answers. Public for the
/// benchmark (`benches/dreaming.rs`); the agent runs the same planning.
pub fn dry_plan(memories: Vec<Memory>, settings: &DreamingSettings, tiers: &MemoryTierSettings, now: f64) -> DryPlan {
    let p = plan(memories, settings, tiers, now);
    DryPlan { exact_duplicates: p.exact, near_duplicates: p.near, promoted: p.promoted, summaries: p.batches.len() }
}

/// The counts of [`dry_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DryPlan {
    /// Exact duplicates to merge away.
    pub exact_duplicates: u64,
    /// Near duplicates to merge away.
    pub near_duplicates: u64,
    /// Short-term memories to promote.
    pub promoted: u64,
    /// Summaries to write (model calls).
    pub summaries: usize,
}

/// What a run changes.
#[derive(Debug, Default)]
struct Plan {
    merges: Vec<Merge>,
    promote: Vec<String>,
    batches: Vec<Vec<Memory>>,
    exact: u64,
    near: u64,
    promoted: u64,
}

/// The words of `text`: lowercase runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Jaccard similarity of two sorted, deduplicated word lists.
fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 { 1.0 } else { both as f64 / union as f64 }
}

/// Steps 1–3 of the module doc over `memories` (oldest first), at `now`.
fn plan(memories: Vec<Memory>, s: &DreamingSettings, tiers: &MemoryTierSettings, now: f64) -> Plan {
    let t = s.near_duplicate_similarity.clamp(0.0, 1.0);
    // Word ids ordered by document frequency (rarest first): the prefix order.
    let texts: Vec<Vec<String>> = memories.iter().map(|m| words(&m.text)).collect();
    let mut df: HashMap<&str, u32> = HashMap::new();
    for ws in &texts {
        for w in ws.iter().collect::<BTreeSet<_>>() {
            *df.entry(w.as_str()).or_default() += 1;
        }
    }
    let mut vocab: Vec<(&str, u32)> = df.into_iter().collect();
    vocab.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let rank: HashMap<&str, u32> = vocab.iter().enumerate().map(|(i, (w, _))| (*w, i as u32)).collect();
    let sets: Vec<Vec<u32>> = texts
        .iter()
        .map(|ws| {
            let mut ids: Vec<u32> = ws.iter().map(|w| rank[w.as_str()]).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();

    let mut plan = Plan::default();
    // Keepers: index into `memories` → the merge being built (None: untouched).
    let mut exact: HashMap<(&str, String), usize> = HashMap::new();
    let mut prefix_index: HashMap<(&str, u32), Vec<usize>> = HashMap::new();
    let mut merged: BTreeMap<usize, Merge> = BTreeMap::new();
    let mut keeper_of: Vec<Option<usize>> = vec![None; memories.len()];
    let prefix_len = |n: usize| n - ((t * n as f64).ceil() as usize).min(n) + 1;
    for (i, m) in memories.iter().enumerate() {
        let key = (m.kind.as_str(), texts[i].join(" "));
        let mut target = exact.get(&key).copied();
        let is_exact = target.is_some();
        if target.is_none() && !sets[i].is_empty() && t > 0.0 {
            let mut candidates: BTreeSet<usize> = BTreeSet::new();
            for w in sets[i].iter().take(prefix_len(sets[i].len())) {
                if let Some(ks) = prefix_index.get(&(m.kind.as_str(), *w)) {
                    candidates.extend(ks.iter().copied());
                }
            }
            target = candidates.into_iter().find(|&k| jaccard(&sets[k], &sets[i]) >= t);
        }
        match target {
            Some(k) => {
                keeper_of[i] = Some(k);
                if is_exact {
                    plan.exact += 1;
                } else {
                    plan.near += 1;
                }
                let entry = merged.entry(k).or_insert_with(|| Merge { keeper: memories[k].clone(), removed: vec![] });
                let keeper = &mut entry.keeper;
                keeper.mentions += m.mentions;
                for tag in &m.tags {
                    if !keeper.tags.contains(tag) {
                        keeper.tags.push(tag.clone());
                    }
                }
                keeper.importance = keeper.importance.max(m.importance);
                keeper.accessed_at = keeper.accessed_at.max(m.accessed_at);
                if m.tier == Tier::Long {
                    keeper.tier = Tier::Long;
                }
                entry.removed.push(m.id.clone());
            }
            None => {
                exact.insert(key, i);
                for w in sets[i].iter().take(prefix_len(sets[i].len())) {
                    prefix_index.entry((m.kind.as_str(), *w)).or_default().push(i);
                }
            }
        }
    }
    let half_life = tiers.importance_half_life_secs;
    let promotes = |m: &Memory| {
        m.mentions >= tiers.promote_mentions.max(1)
            || decayed(m.importance, now - m.accessed_at, half_life) >= tiers.promote_importance
    };
    // Promotion of the keepers.
    for (i, m) in memories.iter().enumerate() {
        if keeper_of[i].is_some() {
            continue;
        }
        match merged.get_mut(&i) {
            Some(merge) if m.tier == Tier::Short && (merge.keeper.tier == Tier::Long || promotes(&merge.keeper)) => {
                merge.keeper.tier = Tier::Long;
                plan.promoted += 1;
            }
            Some(_) => {}
            None if m.tier == Tier::Short && promotes(m) => {
                plan.promote.push(m.id.clone());
                plan.promoted += 1;
            }
            None => {}
        }
    }
    // Summary groups: old, short-term, unsummarised keepers, by session.
    let promoted: BTreeSet<&str> = plan.promote.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<Option<&str>, Vec<Memory>> = BTreeMap::new();
    for (i, m) in memories.iter().enumerate() {
        let tier = merged.get(&i).map_or(m.tier, |g| g.keeper.tier);
        if keeper_of[i].is_none()
            && tier == Tier::Short
            && !promoted.contains(m.id.as_str())
            && m.summarised_at.is_none()
            && m.expires_at.is_none()
            && m.kind != SUMMARY_KIND
            && m.ts <= now - s.summarise_after_secs
        {
            groups.entry(m.session.as_deref()).or_default().push(m.clone());
        }
    }
    let mut batches: Vec<Vec<Memory>> = groups
        .into_values()
        .flat_map(|g| g.chunks(s.summary_batch.max(1)).map(<[Memory]>::to_vec).collect::<Vec<_>>())
        .collect();
    batches.sort_by(|a, b| a[0].ts.total_cmp(&b[0].ts));
    batches.truncate(s.max_summaries_per_run);
    plan.batches = batches;
    plan.merges = merged.into_values().collect();
    plan
}

#[async_trait]
impl Behaviour for Dreaming {
    async fn start(&self) -> Result<(), StartError> {
        *self.inner.activity.lock() = Some(Activity {
            rx: self.inner.events.subscribe(),
            last_at: unix_time(),
            in_flight: BTreeSet::new(),
            stretch_done: false,
        });
        if self.inner.settings.auto {
            self.watcher.start(self.inner.clone().watch());
        }
        Ok(())
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "dreaming.consolidate" => {
                let OrShort(ConsolidateInput { dry_run, force }) = decode(t, &task.input)?;
                encode(t, self.inner.run(dry_run == Some(true), force == Some(true)).await?)
            }
            "dreaming.status" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                let (idle, in_flight, _) = self.inner.look();
                let (runs, last_run_at, last_result) = self.inner.runs.lock().clone();
                encode(
                    t,
                    StatusOutput {
                        idle: idle >= self.inner.settings.idle_seconds,
                        running: self.inner.running.load(Ordering::Acquire),
                        idle_seconds: idle,
                        idle_threshold_seconds: self.inner.settings.idle_seconds,
                        in_flight,
                        runs,
                        last_run_at,
                        last_result,
                    },
                )
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }

    async fn stop(&self) {
        self.watcher.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, ts: f64, text: &str) -> Memory {
        Memory::new(id.into(), ts, "fact".into(), text.into(), 0.5)
    }

    #[test]
    fn exact_and_near_duplicates_merge_into_the_oldest() {
        let s = DreamingSettings { summarise_after_secs: 1e9, ..Default::default() };
        let tiers = MemoryTierSettings { promote_importance: 2.0, ..Default::default() };
        let ms = vec![
            m("a", 1.0, "Ada likes green tea in the morning"),
            m("b", 2.0, "ada LIKES green tea, in the morning!"),
            m("c", 3.0, "Ada likes green tea in the morning too"),
            m("d", 4.0, "Bob likes black coffee at night"),
            m("e", 5.0, "the oven is on"),
            m("f", 6.0, "the oven is off"),
        ];
        let p = plan(ms, &s, &tiers, 10.0);
        assert_eq!((p.exact, p.near), (1, 1), "{p:?}");
        assert_eq!(p.merges.len(), 1);
        assert_eq!(p.merges[0].keeper.id, "a");
        assert_eq!(p.merges[0].removed, ["b", "c"]);
        assert_eq!(p.merges[0].keeper.mentions, 3);
        assert_eq!(p.merges[0].keeper.tier, Tier::Long, "mentioned 3 times: promoted");
        assert_eq!(p.promoted, 1);
        assert!(p.batches.is_empty());
    }

    #[test]
    fn old_short_term_memories_are_grouped_for_summaries() {
        let s = DreamingSettings { summarise_after_secs: 5.0, summary_batch: 2, ..Default::default() };
        let tiers = MemoryTierSettings { promote_importance: 2.0, ..Default::default() };
        let ms = (0..5).map(|i| m(&format!("m{i}"), i as f64, &format!("note number {i} about topic {i}"))).collect();
        let p = plan(ms, &s, &tiers, 8.0);
        let ids: Vec<Vec<&str>> = p.batches.iter().map(|b| b.iter().map(|m| m.id.as_str()).collect()).collect();
        assert_eq!(ids, [vec!["m0", "m1"], vec!["m2", "m3"]], "m4 is too young");
    }

    #[test]
    fn jaccard_of_sorted_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[1, 2, 3]), 1.0);
        assert_eq!(jaccard(&[1, 2], &[3, 4]), 0.0);
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
    }
}
