//! ProactiveAgent: suggestions nobody asked for, from trigger rules in the
//! settings (`proactive.rules`). When a rule fires, an llm agent (the rule's
//! `agent`, default `proactive.default_agent`: ChitchatAgent) is asked for the
//! text through an in-process call of its first llm task type (ChitchatAgent:
//! `simple_chat`); the suggestion is stored (the newest `proactive.keep`) and
//! published as a `proactive.suggestion` event. A failed firing is logged,
//! counted (`agentvisor_proactive_firings_total{rule,outcome="failed"}`) and
//! published as `proactive.failed`.
//!
//! The rules run while the agent runs: it starts on its first task, or at
//! boot when a profile lists it. Their kinds:
//!
//! - **schedule** (`every_seconds`, or `cron` in `timezone`): an internal timer.
//! - **mood drop** (`mood_below`, optional `user`): on each `mood.recorded`
//!   event, the user's current mood is read from MoodTrackerAgent
//!   (`mood.current`, decayed with `mood.half_life_secs`) and its level is
//!   the decayed joy minus the decayed sadness, anger, fear and disgust,
//!   clamped to −1…1 (surprise and neutral count 0). The rule fires when the
//!   level falls below `mood_below`, once per drop: it fires again only after
//!   a record puts the level back at or above it.
//! - **idle user** (`idle_seconds`, optional `user`): activity is a task
//!   accepted on the bus with that envelope `user` (`task.accepted` events
//!   carry it). The rule fires once per idle stretch when a user's last task
//!   is `idle_seconds` old; without `user`, for every user seen since the
//!   agent started; a named user's stretch starts when the agent starts.
//! - **context usage** (`context_above`): fires on `context.usage` events
//!   (`{ratio, session?, user?}`, published by the token governor while
//!   ContextManager runs) whose ratio is above the level, once per crossing.
//!   Without a running ContextManager such rules are listed with
//!   `waiting_for` and do not fire.
//!
//! State: the `proactive_suggestions` and `proactive_rules` tables
//! ([`crate::store::proactive`]).
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `proactive.triggers` | nothing | `{"triggers": [{"name", "kind", "enabled", "condition", "agent", "last_fired_at", "waiting_for"}]}` |
//! | `proactive.suggest` | nothing, or `{"session"?, "limit"?}` | `{"suggestions": [...]}`, newest first |

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use parking_lot::Mutex;
use rusqlite::params;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Answer, Background, Behaviour, Empty, Name, Null, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, TaskTable, decode, encode, rust_task};
use crate::config::{ProactiveRule, ProactiveSettings};
use crate::core::{ErrorCode, Event, Task, TaskError, unix_time};
use crate::events::{EventBus, Published};
use crate::store::{Store, StoreError};
use crate::supervisor::{Peers, StartError};
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "ProactiveAgent";

/// The agent whose `mood.current` gives a user's mood.
const MOOD_AGENT: &str = "MoodTrackerAgent";

/// What a context rule waits for.
const CONTEXT_WAITS_FOR: &str = "context.usage events from ContextManager, which is not running";

/// How often schedules and idle users are checked.
const TICK: Duration = Duration::from_millis(200);

/// Default suggestions `proactive.suggest` returns.
const DEFAULT_LIMIT: u32 = 10;

/// The task types of ProactiveAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![
        rust_task::<OrShort<SuggestInput>, SuggestOutput>(
            "proactive.suggest",
            "The current proactive suggestions (from fired trigger rules), newest first, for the asking user or a session",
            || vec![json!({}), json!({"session": "kitchen-1", "limit": 3}), Value::Null],
        ),
        rust_task::<OrShort<Empty>, TriggersOutput>(
            "proactive.triggers",
            "The trigger rules (schedule, context usage, mood drop, idle user) and when each last fired",
            || vec![json!({}), Value::Null],
        ),
    ]
}

/// The ProactiveAgent behaviour.
pub struct Proactive {
    inner: Arc<Inner>,
    runner: Background,
}

impl Proactive {
    /// The behaviour: `settings`' rules; texts from llm agents through
    /// `peers` (their task types from `table`); suggestions in `store`.
    pub fn new(
        store: Store,
        peers: Arc<dyn Peers>,
        table: Arc<TaskTable>,
        settings: ProactiveSettings,
        events: EventBus,
        metrics: Metrics,
    ) -> Proactive {
        Proactive {
            inner: Arc::new(Inner {
                store,
                peers,
                table,
                settings,
                events,
                metrics,
                state: Mutex::new(State::default()),
            }),
            runner: Background::default(),
        }
    }
}

struct Inner {
    store: Store,
    peers: Arc<dyn Peers>,
    table: Arc<TaskTable>,
    settings: ProactiveSettings,
    events: EventBus,
    metrics: Metrics,
    state: Mutex<State>,
}

/// What the rules remember while the agent runs.
#[derive(Default)]
struct State {
    /// Unix seconds each rule last fired (also stored).
    last_fired: BTreeMap<String, f64>,
    /// Schedule rules: Unix seconds of the next firing.
    next: BTreeMap<String, f64>,
    /// Parsed cron patterns by rule.
    crons: BTreeMap<String, (Cron, Tz)>,
    /// Users' last accepted task, Unix seconds.
    seen: BTreeMap<String, f64>,
    /// (rule, user) pairs already fired for the current idle stretch / mood drop / context level.
    latched: BTreeSet<(String, String)>,
    /// (rule, user) firings in flight.
    in_flight: BTreeSet<(String, String)>,
}

/// The kind of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// `every_seconds` or `cron`.
    Schedule,
    /// `context_above`.
    ContextUsage,
    /// `mood_below`.
    MoodDrop,
    /// `idle_seconds`.
    Idle,
}

fn kind(rule: &ProactiveRule) -> Kind {
    let w = &rule.when;
    if w.mood_below.is_some() {
        Kind::MoodDrop
    } else if w.idle_seconds.is_some() {
        Kind::Idle
    } else if w.context_above.is_some() {
        Kind::ContextUsage
    } else {
        Kind::Schedule
    }
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("proactive store: {e}"))
}

/// The mood level of `mood.current`'s `scores`: joy minus sadness, anger,
/// fear and disgust, clamped to −1…1.
fn mood_level(scores: &serde_json::Map<String, Value>) -> f64 {
    let score = |l: &str| scores.get(l).and_then(Value::as_f64).unwrap_or(0.0);
    let negative = ["sadness", "anger", "fear", "disgust"].iter().map(|l| score(l)).sum::<f64>();
    (score("joy") - negative).clamp(-1.0, 1.0)
}

/// The text of an llm agent's answer: a string, or the `answer`/`text` of an object.
fn text_of(output: &Value) -> String {
    match output {
        Value::String(s) => s.trim().to_string(),
        Value::Object(o) => match o.get("answer").or_else(|| o.get("text")) {
            Some(v) => text_of(v),
            None => output.to_string(),
        },
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

#[async_trait]
impl Behaviour for Proactive {
    async fn start(&self) -> Result<(), StartError> {
        let mut problems = self.inner.settings.problems();
        for r in &self.inner.settings.rules {
            let agent = self.inner.agent_of(r);
            if self.inner.task_type_of(agent).is_none() {
                problems.push(format!("rule {:?}: agent {agent:?} is not an llm agent of the fleet", r.name));
            }
        }
        if !problems.is_empty() {
            return Err(StartError::Unavailable { agent: AGENT.into(), reason: problems.join("; ") });
        }
        let fired = self.inner.load().await.map_err(|e| StartError::Failed {
            agent: AGENT.into(),
            reason: format!("cannot read the proactive_rules table: {e}"),
        })?;
        let now = unix_time();
        {
            let mut st = self.inner.state.lock();
            *st = State { last_fired: fired, ..State::default() };
            for r in self.inner.settings.rules.iter().filter(|r| r.enabled) {
                if let Some(e) = r.when.every_seconds {
                    st.next.insert(r.name.clone(), now + e);
                }
                if let Some(c) = &r.when.cron {
                    // Checked by `problems` above.
                    let cron = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build().parse(c);
                    let tz = Tz::from_str(r.when.timezone.as_deref().unwrap_or("UTC"));
                    if let (Ok(cron), Ok(tz)) = (cron, tz) {
                        if let Some(next) = next_cron(&cron, tz, now) {
                            st.next.insert(r.name.clone(), next);
                        }
                        st.crons.insert(r.name.clone(), (cron, tz));
                    }
                }
                if let (Some(_), Some(u)) = (r.when.idle_seconds, &r.when.user) {
                    st.seen.entry(u.clone()).or_insert(now);
                }
            }
        }
        let events = self.inner.events.subscribe();
        self.runner.start(self.inner.clone().run(events));
        Ok(())
    }

    async fn stop(&self) {
        self.runner.stop();
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "proactive.triggers" => {
                let OrShort(Empty {}) = decode(t, &task.input)?;
                encode(t, self.inner.triggers())
            }
            "proactive.suggest" => {
                let OrShort(SuggestInput { session, limit }) = decode(t, &task.input)?;
                let limit = limit.unwrap_or(DEFAULT_LIMIT);
                let session = session.map(|Name(s)| s);
                let user = task.user.clone();
                let suggestions = self
                    .inner
                    .store
                    .call(move |conn| {
                        let mut stmt = conn.prepare(
                            "SELECT id, rule, text, session, user, created_at FROM proactive_suggestions
                             WHERE (?1 IS NULL OR session = ?1) AND (?2 IS NULL OR user IS NULL OR user = ?2)
                             ORDER BY seq DESC LIMIT ?3",
                        )?;
                        let rows = stmt.query_map(params![session, user, limit], |r| {
                            Ok(Suggestion {
                                id: r.get(0)?,
                                trigger: r.get(1)?,
                                text: r.get(2)?,
                                session: r.get(3)?,
                                user: r.get(4)?,
                                created_at: r.get(5)?,
                            })
                        })?;
                        Ok(rows.collect::<Result<_, _>>()?)
                    })
                    .await
                    .map_err(store_error)?;
                encode(t, SuggestOutput { suggestions })
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

/// Edge trigger: `true` when `on` and `key` was not latched (it is now);
/// `on == false` releases it.
fn latch(latched: &mut BTreeSet<(String, String)>, key: (String, String), on: bool) -> bool {
    if on {
        latched.insert(key)
    } else {
        latched.remove(&key);
        false
    }
}

/// The first match of `cron` in `tz` strictly after `t`.
fn next_cron(cron: &Cron, tz: Tz, t: f64) -> Option<f64> {
    let start = tz.timestamp_opt(t.floor() as i64, 0).single()?;
    cron.find_next_occurrence(&start, false).ok().map(|n| n.timestamp() as f64)
}

impl Inner {
    fn agent_of<'a>(&'a self, rule: &'a ProactiveRule) -> &'a str {
        rule.agent.as_deref().unwrap_or(&self.settings.default_agent)
    }

    /// The llm task type `agent` is asked through: its first.
    fn task_type_of(&self, agent: &str) -> Option<String> {
        self.table.iter().find(|d| d.agent == agent && d.runtime == "llm").map(|d| d.task_type.clone())
    }

    async fn load(&self) -> Result<BTreeMap<String, f64>, StoreError> {
        self.store
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT name, last_fired_at FROM proactive_rules")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    fn triggers(&self) -> TriggersOutput {
        let st = self.state.lock();
        let triggers = self
            .settings
            .rules
            .iter()
            .map(|r| {
                let kind = kind(r);
                TriggerOutput {
                    name: r.name.clone(),
                    kind,
                    enabled: r.enabled,
                    condition: serde_json::to_value(&r.when).unwrap_or(Value::Null),
                    agent: self.agent_of(r).to_string(),
                    session: r.session.clone(),
                    last_fired_at: st.last_fired.get(&r.name).copied(),
                    next_fire_at: st.next.get(&r.name).copied(),
                    waiting_for: (kind == Kind::ContextUsage
                        && self.peers.state("ContextManager") != Some(crate::supervisor::AgentState::Running))
                    .then(|| CONTEXT_WAITS_FOR.to_string()),
                }
            })
            .collect();
        TriggersOutput { triggers }
    }

    /// Reacts to events and checks schedules and idle users until aborted.
    async fn run(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<Arc<Published>>) {
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(p) => self.on_event(&p),
                    Err(RecvError::Lagged(n)) => tracing::warn!(agent = AGENT, missed = n, "proactive triggers missed events"),
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(TICK) => {}
            }
            self.tick();
        }
    }

    fn on_event(self: &Arc<Self>, p: &Published) {
        match &p.event {
            Event::TaskAccepted { user: Some(u), .. } => {
                let mut st = self.state.lock();
                st.seen.insert(u.clone(), p.ts);
                let idle: Vec<(String, String)> = st.latched.iter().filter(|(_, w)| w == u).cloned().collect();
                for key in idle {
                    if self.settings.rules.iter().any(|r| r.name == key.0 && r.when.idle_seconds.is_some()) {
                        st.latched.remove(&key);
                    }
                }
            }
            Event::MoodRecorded { user, .. } => {
                for r in self.settings.rules.iter().filter(|r| r.enabled && r.when.mood_below.is_some()) {
                    if r.when.user.is_none() || r.when.user == *user {
                        let (me, rule, user) = (self.clone(), r.clone(), user.clone());
                        tokio::spawn(async move { me.check_mood(rule, user).await });
                    }
                }
            }
            _ if p.topic == "context.usage" => {
                let Some(ratio) = p.data().get("ratio").and_then(Value::as_f64) else { return };
                let user = p.str("user").map(str::to_string);
                for r in self.settings.rules.iter().filter(|r| r.enabled) {
                    let Some(level) = r.when.context_above else { continue };
                    let key = (r.name.clone(), user.clone().unwrap_or_default());
                    let above = ratio > level;
                    let fire = {
                        let mut st = self.state.lock();
                        latch(&mut st.latched, key, above)
                    };
                    if fire {
                        self.fire(r.clone(), user.clone(), format!("context usage is {ratio:.2}, above {level}"));
                    }
                }
            }
            _ => {}
        }
    }

    async fn check_mood(self: Arc<Self>, rule: ProactiveRule, user: Option<String>) {
        let Some(below) = rule.when.mood_below else { return };
        let mut ask = Task::new(format!("proactive-{}-mood", uuid::Uuid::new_v4()), "mood.current", json!({}));
        ask.user = user.clone();
        let level = match self.peers.call(MOOD_AGENT, ask).await {
            Ok(out) => out.output.get("scores").and_then(Value::as_object).map_or(0.0, mood_level),
            Err(e) => {
                self.failed(&rule, user, &e);
                return;
            }
        };
        let key = (rule.name.clone(), user.clone().unwrap_or_default());
        let fire = {
            let mut st = self.state.lock();
            latch(&mut st.latched, key, level < below)
        };
        if fire {
            let who = user.as_deref().unwrap_or("anonymous");
            self.fire(rule, user.clone(), format!("user {who}'s mood level is {level:.2}, below {below}"));
        }
    }

    /// Fires due schedules and idle rules.
    fn tick(self: &Arc<Self>) {
        let now = unix_time();
        let mut due = Vec::new();
        {
            let mut st = self.state.lock();
            for r in self.settings.rules.iter().filter(|r| r.enabled) {
                if let Some(at) = st.next.get(&r.name).copied().filter(|at| *at <= now) {
                    let next = match (r.when.every_seconds, st.crons.get(&r.name)) {
                        (Some(e), _) => Some(if at + e > now { at + e } else { now + e }),
                        (None, Some((cron, tz))) => next_cron(cron, *tz, now),
                        _ => None,
                    };
                    match next {
                        Some(n) => st.next.insert(r.name.clone(), n),
                        None => st.next.remove(&r.name),
                    };
                    let what = match (r.when.every_seconds, &r.when.cron) {
                        (Some(e), _) => format!("every {e} s"),
                        (_, Some(c)) => format!("cron {c}"),
                        _ => String::new(),
                    };
                    due.push((r.clone(), None, format!("scheduled ({what})")));
                }
                if let Some(idle) = r.when.idle_seconds {
                    let users: Vec<(String, f64)> = match &r.when.user {
                        Some(u) => st.seen.get(u).map(|t| (u.clone(), *t)).into_iter().collect(),
                        None => st.seen.iter().map(|(u, t)| (u.clone(), *t)).collect(),
                    };
                    for (u, last) in users {
                        if now - last >= idle && st.latched.insert((r.name.clone(), u.clone())) {
                            let secs = now - last;
                            due.push((r.clone(), Some(u.clone()), format!("user {u} has been idle for {secs:.0} s")));
                        }
                    }
                }
            }
        }
        for (rule, user, detail) in due {
            self.fire(rule, user, detail);
        }
    }

    /// Asks the rule's llm agent for a suggestion (in the background, one
    /// firing per rule and user at a time).
    fn fire(self: &Arc<Self>, rule: ProactiveRule, user: Option<String>, detail: String) {
        let key = (rule.name.clone(), user.clone().unwrap_or_default());
        if !self.state.lock().in_flight.insert(key.clone()) {
            tracing::debug!(agent = AGENT, rule = %rule.name, "previous firing still running; skipped");
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.suggest(&rule, user.clone(), &detail).await;
            me.state.lock().in_flight.remove(&key);
            if let Err(e) = outcome {
                me.failed(&rule, user, &e);
            }
        });
    }

    async fn suggest(&self, rule: &ProactiveRule, user: Option<String>, detail: &str) -> Result<(), TaskError> {
        let now = unix_time();
        self.fired(&rule.name, now).await;
        let agent = self.agent_of(rule).to_string();
        let task_type = self
            .task_type_of(&agent)
            .ok_or_else(|| TaskError::new(ErrorCode::AgentUnavailable, format!("{agent} has no llm task type")))?;
        let id = format!("sug-{}", uuid::Uuid::new_v4().simple());
        let prompt = format!(
            "{}\n\n(Why now: {detail}.) Answer with only the suggestion, in one or two short sentences.",
            rule.prompt.trim()
        );
        let mut ask = Task::new(format!("proactive-{id}"), task_type, json!(prompt));
        ask.user = user.clone();
        ask.session = rule.session.clone();
        let text = text_of(&self.peers.call(&agent, ask).await?.output);
        if text.is_empty() {
            return Err(TaskError::new(ErrorCode::Internal, format!("{agent} answered an empty text")));
        }
        let (sid, name, body, session, u, keep) =
            (id.clone(), rule.name.clone(), text.clone(), rule.session.clone(), user.clone(), self.settings.keep);
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO proactive_suggestions (id, rule, text, session, user, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![sid, name, body, session, u, unix_time()],
                )?;
                conn.execute(
                    "DELETE FROM proactive_suggestions WHERE seq <= (SELECT seq FROM proactive_suggestions
                     ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                    params![keep],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        self.metrics.proactive_firings.with_label_values(&[&rule.name, "ok"]).inc();
        tracing::info!(agent = AGENT, rule = %rule.name, suggestion = %id, "proactive suggestion");
        self.events.emit(Event::ProactiveSuggestion {
            id,
            trigger: rule.name.clone(),
            text,
            session: rule.session.clone(),
            user,
        });
        Ok(())
    }

    /// Records that `rule` fired at `at`.
    async fn fired(&self, rule: &str, at: f64) {
        self.state.lock().last_fired.insert(rule.to_string(), at);
        let name = rule.to_string();
        let saved = self
            .store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO proactive_rules (name, last_fired_at) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET last_fired_at = excluded.last_fired_at",
                    params![name, at],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(agent = AGENT, rule, error = %e, "rule firing time not saved");
        }
    }

    fn failed(&self, rule: &ProactiveRule, user: Option<String>, e: &TaskError) {
        self.metrics.proactive_firings.with_label_values(&[&rule.name, "failed"]).inc();
        // The event is logged at warn (`proactive.failed` is a warning).
        self.events.emit(Event::ProactiveFailed {
            trigger: rule.name.clone(),
            code: e.code.as_str(),
            message: e.message.clone(),
            user,
        });
    }
}

/// Which suggestions to list. With an envelope `user`, only that user's
/// suggestions and those about no user.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SuggestInput {
    /// Only suggestions for this session.
    #[serde(default)]
    session: Option<Name>,
    /// Most suggestions returned, 1–100; default 10.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    limit: Option<u32>,
}

impl Shorthand for SuggestInput {
    type Short = Null;
    const SHORT_DESCRIPTION: &'static str = "Nothing: the latest 10 suggestions.";
    fn expand(_: Null) -> SuggestInput {
        SuggestInput { session: None, limit: None }
    }
}

/// One suggestion.
#[derive(Serialize, JsonSchema)]
struct Suggestion {
    /// Its id.
    id: String,
    /// The name of the rule that fired.
    trigger: String,
    /// The suggestion, written by an llm agent.
    text: String,
    /// The session it is for (the rule's), if any.
    session: Option<String>,
    /// The user it is about (mood drop, idle), if any.
    user: Option<String>,
    /// Made, Unix seconds.
    created_at: f64,
}

/// The current suggestions.
#[derive(Serialize, JsonSchema)]
struct SuggestOutput {
    /// Newest first.
    suggestions: Vec<Suggestion>,
}

/// One rule.
#[derive(Serialize, JsonSchema)]
struct TriggerOutput {
    /// Its name.
    name: String,
    /// Its kind.
    kind: Kind,
    /// `false`: never fired.
    enabled: bool,
    /// The rule's `when` as written in the settings.
    condition: Value,
    /// The llm agent that writes its suggestions.
    agent: String,
    /// The session its suggestions are for, if any.
    session: Option<String>,
    /// Unix seconds of its last firing; null: never fired.
    last_fired_at: Option<f64>,
    /// Schedules: Unix seconds of the next firing; null otherwise.
    next_fire_at: Option<f64>,
    /// What it waits for before it can fire (context usage: ContextManager); null: nothing.
    waiting_for: Option<String>,
}

/// The rules.
#[derive(Serialize, JsonSchema)]
struct TriggersOutput {
    /// In the settings' order.
    triggers: Vec<TriggerOutput>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mood_level_is_joy_minus_the_negative_emotions() {
        let scores = json!({"joy": 0.2, "sadness": 0.5, "fear": 0.1, "surprise": 0.9});
        assert!((mood_level(scores.as_object().unwrap()) + 0.4).abs() < 1e-9);
        assert_eq!(mood_level(json!({"anger": 3.0}).as_object().unwrap()), -1.0);
        assert_eq!(text_of(&json!({"answer": " hi "})), "hi");
    }
}
