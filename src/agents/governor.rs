//! The token governor (issue 14, seed 003: "target context use 0.50, hard
//! max 0.75, Save-State → Clear → Resume"): what ContextManager knows of
//! each session's context, shared by the ContextManager and
//! ProactiveContextMonitor behaviours and the `llm` runtime.
//!
//! - **Context of a session**: its summary (when any) plus the turns after
//!   the turn the summary covers (`context_states`, `session_turns`).
//! - **Measure**: HybridRouter decides first, then the prompt is counted for
//!   the model that would serve it ([`crate::routing::measure`]): exactly
//!   with a local model's own chat template and tokenizer (equal to the
//!   generation's `tokens_in`), by estimate for a remote model.
//! - **Admission** (the llm runtime, before each prompt of a session, while
//!   ContextManager runs): at or above `context.target_ratio` of the window
//!   the older turns are summarised first (a model call through HybridRouter,
//!   with its receipt); above `context.hard_max_ratio` a prompt that could
//!   not be brought under it is refused with `context_exhausted` — never
//!   sent truncated.
//! - **After each turn** the session's context (system text, summary,
//!   turns) is measured again and published as a `context.usage` event
//!   (ProactiveContextMonitor summarises ahead of the next turn from it).
//! - **Summaries** replace the older turns (all but the newest
//!   `context.keep_turns`) and are saved: SQLite plus a readable
//!   `data_dir/runs/<run_id>_summary.md` (one section per summary or save).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::services::Services;
use crate::config::ContextSettings;
use crate::core::{ChatMessage, ErrorCode, Event, GenParams, TaskError, unix_time};
use crate::events::EventBus;
use crate::routing::measure::Measure;
use crate::routing::router::{ModelCall, RouterHandle};
use crate::store::context::{self, ContextState, Turn, Usage};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// The agent whose running switches the governor on for llm prompts.
pub(crate) const CONTEXT_MANAGER: &str = "ContextManager";

/// The summariser's instructions.
const SUMMARY_PROMPT: &str = "Summarise the conversation below in a few short sentences. Keep names, facts, \
    numbers, decisions and open questions; leave out greetings. Answer with the summary only.";

/// How long measuring a prompt may take (a local tokenizer may need its model loaded).
const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);

/// A session's context: its summary and the turns after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionContext {
    /// The summary of the older turns.
    pub summary: Option<String>,
    /// The turns after the summary, oldest first.
    pub turns: Vec<Turn>,
    /// The stored state, if the governor has seen the session.
    pub state: Option<ContextState>,
}

impl SessionContext {
    /// The turns as chat messages.
    pub fn history(&self) -> Vec<ChatMessage> {
        self.turns.iter().map(|t| ChatMessage::new(&t.role, t.content.clone())).collect()
    }
}

/// The system message that carries a summary in a prompt (one wording for
/// the llm runtime and the governor's own measures).
pub(crate) fn summary_message(summary: &str) -> ChatMessage {
    ChatMessage::new("system", format!("Summary of the earlier conversation: {summary}"))
}

/// What a summary did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summarized {
    /// The session.
    pub session: String,
    /// The summary now in use.
    pub summary: String,
    /// Context tokens before.
    pub tokens_before: u32,
    /// Context tokens after.
    pub tokens_after: u32,
    /// Turns this summary replaced (0: nothing to summarise).
    pub turns_summarized: u32,
    /// The readable summary file.
    pub summary_path: Option<String>,
}

/// The governor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Governor {
    settings: ContextSettings,
    router: RouterHandle,
    store: Store,
    events: EventBus,
    metrics: Metrics,
    /// `data_dir/runs/<run_id>_summary.md`.
    summary_file: PathBuf,
}

fn store_error(e: StoreError) -> TaskError {
    TaskError::new(ErrorCode::Internal, format!("context store: {e}"))
}

impl Governor {
    /// The governor of the daemon's `services`.
    pub fn new(services: &Services) -> Governor {
        let s = &services.settings;
        Governor {
            settings: s.context.clone(),
            router: services.router.clone(),
            store: services.store.clone(),
            events: services.events.clone(),
            metrics: services.metrics.clone(),
            summary_file: s.data_dir.join("runs").join(format!("{}_summary.md", services.run_id)),
        }
    }

    /// `context.*` settings.
    pub fn settings(&self) -> &ContextSettings {
        &self.settings
    }

    /// `ok`, `over_target` or `over_hard_max` for a ratio.
    pub fn state_of(&self, ratio: f64) -> &'static str {
        if ratio > self.settings.hard_max_ratio {
            "over_hard_max"
        } else if ratio >= self.settings.target_ratio {
            "over_target"
        } else {
            "ok"
        }
    }

    /// The session's summary and the turns after it.
    ///
    /// # Errors
    /// `internal` when the store fails.
    pub async fn context(&self, session: &str) -> Result<SessionContext, TaskError> {
        let s = session.to_string();
        self.store
            .call(move |conn| {
                let state = context::get(conn, &s)?;
                let covered = state.as_ref().map_or(0, |st| st.covered_turn);
                let turns = context::turns_after(conn, &s, covered)?;
                Ok(SessionContext { summary: state.as_ref().and_then(|st| st.summary.clone()), turns, state })
            })
            .await
            .map_err(store_error)
    }

    /// Measures `probe`'s prompt on the model HybridRouter would pick.
    ///
    /// # Errors
    /// As [`RouterHandle::measure`].
    pub async fn measure(&self, probe: ModelCall) -> Result<Measure, TaskError> {
        self.router.measure(probe, MEASURE_TIMEOUT).await
    }

    /// Records a measure of `session` and publishes it (`context.usage`);
    /// `prompt`: the measure is of a prompt about to be sent.
    pub async fn record(&self, usage: Usage) {
        let ratio = f64::from(usage.tokens) / f64::from(usage.window.max(1));
        self.events.emit(Event::ContextUsage {
            session: usage.session.clone(),
            agent: usage.agent.clone(),
            user: usage.user.clone(),
            tokens: usage.tokens,
            window: usage.window,
            ratio,
            state: self.state_of(ratio),
            model: Some(usage.model.clone()),
            estimated: usage.estimated,
        });
        let now = unix_time();
        if let Err(e) = self.store.call(move |conn| context::record_usage(conn, &usage, now)).await {
            tracing::warn!(error = %e, "context usage not stored");
        }
    }

    /// The messages of the session's context as its next prompt holds them
    /// (before the new input): the last prompt's system text, the summary,
    /// the turns.
    fn context_messages(ctx: &SessionContext) -> Vec<ChatMessage> {
        let mut m = Vec::with_capacity(ctx.turns.len() + 2);
        if let Some(system) = ctx.state.as_ref().and_then(|s| s.system_prompt.clone()) {
            m.push(ChatMessage::new("system", system));
        }
        if let Some(summary) = &ctx.summary {
            m.push(summary_message(summary));
        }
        m.extend(ctx.history());
        m
    }

    /// A measuring probe of `messages` on the backend and model the session
    /// was last measured on (else as HybridRouter decides).
    fn probe(state: Option<&ContextState>, session: &str, messages: Vec<ChatMessage>) -> ModelCall {
        ModelCall {
            task_id: format!("context-{session}"),
            agent: state.and_then(|s| s.agent.clone()).unwrap_or_else(|| CONTEXT_MANAGER.into()),
            task_type: "context.usage".into(),
            agent_complexity: 0.5,
            backend: state.and_then(|s| s.backend.clone()),
            model: state.and_then(|s| s.model.clone()),
            messages,
            ..Default::default()
        }
    }

    /// Measures the session's context now.
    ///
    /// # Errors
    /// As [`Governor::context`] and [`Governor::measure`].
    pub async fn measure_session(&self, session: &str) -> Result<(SessionContext, Measure), TaskError> {
        let ctx = self.context(session).await?;
        let probe = Self::probe(ctx.state.as_ref(), session, Self::context_messages(&ctx));
        let m = self.measure(probe).await?;
        Ok((ctx, m))
    }

    /// Measures the session after a turn and publishes it (`context.usage`).
    pub async fn after_turn(&self, session: &str, agent: &str, user: Option<String>) {
        match self.measure_session(session).await {
            Ok((ctx, m)) => {
                let system_prompt = ctx.state.and_then(|s| s.system_prompt).unwrap_or_default();
                self.record(Usage {
                    session: session.to_string(),
                    agent: agent.to_string(),
                    user,
                    system_prompt,
                    backend: m.backend,
                    model: m.model,
                    tokens: m.tokens,
                    prompt_tokens: None,
                    window: m.window,
                    estimated: m.estimated,
                })
                .await;
            }
            Err(e) => tracing::warn!(session, agent, error = %e, "session context not measured after the turn"),
        }
    }

    /// Summarises the session's older turns (all but the newest
    /// `context.keep_turns`) with one model call through HybridRouter and
    /// puts the summary in their place; saves the state (SQLite and the
    /// summary file). `trigger` labels the metric (`target`, `hard_max`,
    /// `task`, `monitor`). Nothing to summarise: `turns_summarized` 0.
    ///
    /// # Errors
    /// The model call's error (`backend_error`, `no_backend`, ...);
    /// `invalid_output` for an empty summary; `internal` for the store.
    pub async fn summarize(&self, session: &str, trigger: &'static str) -> Result<Summarized, TaskError> {
        let result = self.summarize_inner(session).await;
        let outcome = match &result {
            Ok(s) if s.turns_summarized == 0 => "nothing_to_summarize",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        self.metrics.context_summaries.with_label_values(&[trigger, outcome]).inc();
        if let Err(e) = &result {
            tracing::warn!(session, trigger, error = %e, "context summary failed");
        }
        result
    }

    async fn summarize_inner(&self, session: &str) -> Result<Summarized, TaskError> {
        let (ctx, before) = self.measure_session(session).await?;
        let keep = self.settings.keep_turns as usize;
        if ctx.turns.len() <= keep {
            return Ok(Summarized {
                session: session.to_string(),
                summary: ctx.summary.unwrap_or_default(),
                tokens_before: before.tokens,
                tokens_after: before.tokens,
                turns_summarized: 0,
                summary_path: None,
            });
        }
        let old = &ctx.turns[..ctx.turns.len() - keep];
        let mut transcript = String::new();
        if let Some(s) = &ctx.summary {
            transcript.push_str(&format!("Earlier summary: {s}\n\n"));
        }
        for t in old {
            let who = match t.role.as_str() {
                "user" => "User",
                "assistant" => "Assistant",
                _ => "Note",
            };
            transcript.push_str(&format!("{who}: {}\n", t.content.trim()));
        }
        let call = ModelCall {
            task_id: format!("context-summarize-{}", uuid::Uuid::new_v4().simple()),
            agent: CONTEXT_MANAGER.into(),
            task_type: "context.summarize".into(),
            agent_complexity: 0.2,
            user: ctx.state.as_ref().and_then(|s| s.user.clone()),
            backend: self.settings.summarizer_backend.clone(),
            model: None,
            messages: vec![ChatMessage::new("system", SUMMARY_PROMPT), ChatMessage::new("user", transcript)],
            params: GenParams { max_tokens: Some(self.settings.summary_max_tokens), ..Default::default() },
            ..Default::default()
        };
        let answer = self.router.call(call, MEASURE_TIMEOUT).await.map_err(|f| f.error)?;
        let summary = answer.response.content.trim().to_string();
        if summary.is_empty() {
            return Err(TaskError::new(ErrorCode::InvalidOutput, "the summariser answered an empty summary"));
        }
        let covered = old.last().map_or(0, |t| t.id);
        let turns = old.len() as u32;
        let (s, text, now) = (session.to_string(), summary.clone(), unix_time());
        self.store
            .call(move |conn| context::set_summary(conn, &s, &text, covered, turns, now))
            .await
            .map_err(store_error)?;
        let (_, after) = self.measure_session(session).await?;
        let (s, tokens) = (session.to_string(), after.tokens);
        if let Err(e) = self.store.call(move |conn| context::set_tokens(conn, &s, tokens, now)).await {
            tracing::warn!(session, error = %e, "context tokens not stored");
        }
        let total = ctx.state.as_ref().map_or(0, |s| s.turns_summarized) + turns;
        let section = format!(
            "## Session `{session}` — summary at {}\n\n- model: {} (receipt {}), turns summarised: {turns} ({total} in all)\n\
             - context: {} → {} tokens of a {}-token window\n\n{summary}\n\n",
            rfc3339(now),
            answer.receipt.model.as_deref().unwrap_or("?"),
            answer.receipt.task_id,
            before.tokens,
            after.tokens,
            after.window,
        );
        let summary_path = self.append_file(section).await;
        self.events.emit(Event::ContextSummarized {
            session: session.to_string(),
            turns_summarized: total,
            tokens_before: before.tokens,
            tokens_after: after.tokens,
            model: answer.receipt.model.clone(),
        });
        tracing::info!(session, turns, before = before.tokens, after = after.tokens, "context summarised");
        Ok(Summarized {
            session: session.to_string(),
            summary,
            tokens_before: before.tokens,
            tokens_after: after.tokens,
            turns_summarized: turns,
            summary_path,
        })
    }

    /// Appends `section` to the run's summary file (a title first when it
    /// is new); its path, or `None` when it could not be written (logged).
    async fn append_file(&self, section: String) -> Option<String> {
        let path = self.summary_file.clone();
        let run = path.file_name().map(|f| f.to_string_lossy().trim_end_matches("_summary.md").to_string());
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let new = !path.exists();
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            if new {
                writeln!(f, "# agentvisor run {} — context summaries\n", run.unwrap_or_default())?;
            }
            f.write_all(section.as_bytes())?;
            f.sync_data()?;
            Ok(path)
        })
        .await;
        match written {
            Ok(Ok(p)) => Some(p.display().to_string()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "summary file not written");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "summary file not written");
                None
            }
        }
    }

    /// `context.usage`: the session's last measure.
    ///
    /// # Errors
    /// `not_found` when the governor has not measured the session.
    pub async fn usage(&self, session: &str) -> Result<Value, TaskError> {
        let ctx = self.context(session).await?;
        let Some(st) = ctx.state.filter(|s| s.window > 0) else {
            return Err(TaskError::new(
                ErrorCode::NotFound,
                format!("the governor has not measured session {session:?}"),
            ));
        };
        let ratio = f64::from(st.tokens) / f64::from(st.window.max(1));
        Ok(json!({
            "session": session, "tokens": st.tokens, "window": st.window, "ratio": ratio,
            "state": self.state_of(ratio), "model": st.model, "backend": st.backend, "estimated": st.estimated,
            "prompt_tokens": st.prompt_tokens, "summary": st.summary, "turns_summarized": st.turns_summarized,
            "turns": ctx.turns.len(), "target_ratio": self.settings.target_ratio,
            "hard_max_ratio": self.settings.hard_max_ratio,
        }))
    }

    /// `context.save_state`: marks the state saved and writes it to the summary file.
    ///
    /// # Errors
    /// `internal` when the store fails.
    pub async fn save_state(&self, session: &str) -> Result<Value, TaskError> {
        let ctx = self.context(session).await?;
        let (s, now) = (session.to_string(), unix_time());
        self.store.call(move |conn| context::mark_saved(conn, &s, now)).await.map_err(store_error)?;
        let mut section = format!(
            "## Session `{session}` — state saved at {}\n\n- turns after the summary: {}\n\n",
            rfc3339(now),
            ctx.turns.len()
        );
        section.push_str(&format!("Summary: {}\n\n", ctx.summary.as_deref().unwrap_or("(none yet)")));
        for t in &ctx.turns {
            section.push_str(&format!("> **{}**: {}\n>\n", t.role, t.content.trim().replace('\n', " ")));
        }
        section.push('\n');
        let path = self.append_file(section).await;
        Ok(json!({"session": session, "saved_at": now, "summary_path": path, "turns": ctx.turns.len()}))
    }

    /// `context.resume`: the saved summary and the context measured again.
    ///
    /// # Errors
    /// As [`Governor::measure_session`].
    pub async fn resume(&self, session: &str) -> Result<Value, TaskError> {
        let (ctx, m) = self.measure_session(session).await?;
        let resumed = ctx.state.as_ref().is_some_and(|s| s.saved_at.is_some() || s.summary.is_some());
        if ctx.state.is_some() {
            let (s, tokens, now) = (session.to_string(), m.tokens, unix_time());
            let _ = self.store.call(move |conn| context::set_tokens(conn, &s, tokens, now)).await;
        }
        Ok(json!({
            "session": session, "resumed": resumed, "summary": ctx.summary, "tokens": m.tokens,
            "window": m.window, "turns": ctx.turns.len(),
        }))
    }

    /// Sessions measured since `since` (Unix seconds) with their ratio.
    ///
    /// # Errors
    /// `internal` when the store fails.
    pub async fn active_sessions(&self, since: f64) -> Result<Vec<(String, f64)>, TaskError> {
        self.store.call(move |conn| context::active(conn, since)).await.map_err(store_error)
    }
}

/// `2026-12-02T10:40:00Z` for Unix seconds.
fn rfc3339(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}
