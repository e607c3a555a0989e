//! The `llm` runtime (DESIGN §7): an agent's role prompt plus the task input
//! become a chat request through HybridRouter. Output is text, or JSON when
//! the spec declares an `output_schema`: validated, one repair attempt
//! (the model is shown its answer and the validation error), then
//! `invalid_output`.
//!
//! Constrained answers (issue 15): a JSON answer is asked for under its
//! JSON Schema — a grammar on embedded models, a forced tool call on
//! OpenAI-compatible backends — so it is valid on any model the first time;
//! the validation and its one repair stay for backends that ignore
//! constraints.
//!
//! The arbiter (the agent whose `role` is `arbiter`, ModelOrchestrator)
//! runs its loop in [`arbiter`]: choose a specialist (by the content
//! estimate, else its model's constrained choice), consult it, review its
//! answer, revise — bounded by `arbiter.max_iterations` and the deadline.
//!
//! Sessions: when the task has a `session`, the agent asks
//! SessionMemoryAgent for the session's history (the newest turns that fit
//! in [`SESSION_HISTORY_TOKENS`], estimated by [`crate::core::estimate_tokens`], oldest first) and puts it between the
//! system prompt and the new input; after answering it appends the user's
//! input and its answer. Without a running SessionMemoryAgent the task is a
//! single turn (logged).
//!
//! The token governor: while ContextManager runs, a session's history is
//! its governor summary plus every turn after it (no token cap here), and
//! each prompt is admitted by the governor ([`super::governor`]): measured
//! on the serving model's tokenizer, summarised first at the target, refused
//! with `context_exhausted` above the hard max when summarising fails. In a
//! profile without ContextManager the history keeps the
//! [`SESSION_HISTORY_TOKENS`] cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::behaviour::extract_json;
use super::builtin::Behaviour;
use super::governor::{CONTEXT_MANAGER, Governor, summary_message};
use super::services::Services;
use crate::config::Settings;
use crate::config::catalog::Catalog;
use crate::config::spec::{AgentSpec, RuntimeSpec};
use crate::core::{
    ChatMessage, ErrorCode, GenParams, Receipt, Task, TaskError, TaskOutput, TaskReply, estimate_tokens,
};
use crate::routing::content::{self, ContentRouter};
use crate::routing::router::{ModelCall, RouterHandle, resolve_model};
use crate::store::context::Usage;
use crate::store::{Store, personas};
use crate::supervisor::{AgentState, Fleet, Peers};
use crate::telemetry::metrics::Metrics;

/// Most tokens of session history put into a request (estimated), so long
/// sessions stay within small models' context.
pub(crate) const SESSION_HISTORY_TOKENS: u32 = 2048;

mod arbiter;

/// The specialists the arbiter may choose, by agent name and role word.
const SPECIALISTS: &[(&str, &str)] = &[
    ("CodeGenerator", "coding"),
    ("ChainOfThoughtAgent", "reasoning"),
    ("CognitiveModelAgent", "analysis"),
    ("NLUAgent", "interpreter"),
];

/// An `llm` agent's behaviour.
pub struct LlmAgent {
    spec: Arc<AgentSpec>,
    /// The other agents: session memory, the specialists.
    peers: Arc<dyn Peers>,
    /// The catalog (a specialist's task type).
    catalog: Arc<Catalog>,
    /// Backends and `models_dir` (a task's `model`).
    settings: Arc<Settings>,
    router: RouterHandle,
    /// A model call's limit when the task has no deadline (`tasks.call_timeout_secs`).
    call_timeout: Duration,
    schema: Option<jsonschema::Validator>,
    /// The store: the session's persona.
    store: Store,
    /// `agentvisor_persona_prompts_total`.
    metrics: Metrics,
    /// The arbiter's content estimator (`None` for other agents, or when
    /// content routing is off).
    content: Option<Arc<ContentRouter>>,
    /// The token governor (used while ContextManager runs).
    governor: Governor,
}

/// What goes into a prompt besides the agent's role prompt and the task
/// input, in prompt order (see the module docs).
#[derive(Default)]
struct PromptContext {
    /// The session persona's system text (system prompt and tone).
    persona: Option<String>,
    /// The token governor's summary of older turns.
    summary: Option<String>,
    /// The session's recent turns, oldest first.
    history: Vec<ChatMessage>,
    /// Memory retrieved for the task.
    memory: Option<String>,
}

impl LlmAgent {
    /// The behaviour of `spec` (an `llm` runtime), or `None` for other runtimes.
    ///
    /// # Errors
    /// The spec's `output_schema` is not a valid JSON Schema.
    pub fn new(spec: Arc<AgentSpec>, services: &Services, fleet: &Fleet) -> Result<Option<LlmAgent>, String> {
        let RuntimeSpec::Llm { output_schema, .. } = &spec.runtime else { return Ok(None) };
        let schema = match output_schema {
            Some(s) => Some(jsonschema::validator_for(s).map_err(|e| format!("{}: output_schema: {e}", spec.name))?),
            None => None,
        };
        let content = if spec.role.as_deref() == Some("arbiter") {
            content::load(&services.settings.routing.content).unwrap_or_else(|e| {
                tracing::error!(agent = %spec.name, error = %e, code = e.code(), "the arbiter routes without content estimates");
                None
            })
        } else {
            None
        };
        Ok(Some(LlmAgent {
            content: content.map(Arc::new),
            spec,
            peers: Arc::new(fleet.clone()),
            catalog: fleet.ctx().catalog.clone(),
            settings: services.settings.clone(),
            router: services.router.clone(),
            call_timeout: services.settings.tasks.call_timeout(),
            schema,
            store: services.store.clone(),
            metrics: services.metrics.clone(),
            governor: Governor::new(services),
        }))
    }

    fn output_schema(&self) -> Option<Value> {
        match &self.spec.runtime {
            RuntimeSpec::Llm { output_schema, .. } => output_schema.clone(),
            _ => None,
        }
    }

    fn runtime(&self) -> (f64, u32, &str) {
        match &self.spec.runtime {
            RuntimeSpec::Llm { complexity, max_tokens, system_prompt, .. } => (*complexity, *max_tokens, system_prompt),
            _ => (0.5, 512, ""),
        }
    }

    /// Whether this agent's calls may be answered from the response cache
    /// (the spec's `runtime.cache`; calls are greedy, so deterministic).
    fn cacheable(&self) -> bool {
        matches!(&self.spec.runtime, RuntimeSpec::Llm { cache: true, .. })
    }

    /// One model call through HybridRouter; its receipt goes to `route`
    /// (the last call's receipt is the reply's route). `json`: the answer
    /// follows the spec's `output_schema` (any JSON object without one).
    async fn ask(
        &self,
        task: &Task,
        messages: Vec<ChatMessage>,
        json: bool,
        stream: bool,
        route: &mut Option<Receipt>,
    ) -> Result<String, TaskError> {
        self.call_model(task, messages, self.params(json), stream, route).await
    }

    /// The generation parameters of this agent's calls: its `max_tokens`,
    /// and with `json` its `output_schema` (any JSON object without one).
    fn params(&self, json: bool) -> GenParams {
        let (_, max_tokens, _) = self.runtime();
        GenParams {
            max_tokens: Some(max_tokens),
            json,
            json_schema: if json { self.output_schema() } else { None },
            ..Default::default()
        }
    }

    /// One model call with these generation parameters (see [`LlmAgent::ask`]).
    async fn call_model(
        &self,
        task: &Task,
        messages: Vec<ChatMessage>,
        params: GenParams,
        stream: bool,
        route: &mut Option<Receipt>,
    ) -> Result<String, TaskError> {
        let timeout = task.deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(self.call_timeout);
        let call = self.model_call(task, messages, params, stream)?;
        match self.router.call(call, timeout).await {
            Ok(answer) => {
                *route = Some(answer.receipt);
                Ok(answer.response.content)
            }
            Err(failure) => {
                if let Some(r) = failure.receipt {
                    *route = Some(*r);
                }
                Err(failure.error)
            }
        }
    }

    /// The model call of `messages` for `task` (also the token governor's
    /// measuring probe: the same routing inputs pick the same model).
    fn model_call(
        &self,
        task: &Task,
        messages: Vec<ChatMessage>,
        params: GenParams,
        stream: bool,
    ) -> Result<ModelCall, TaskError> {
        let (complexity, _, _) = self.runtime();
        let (backend, model) = match &task.model {
            Some(m) => {
                let settings = &self.settings;
                let (backend, model) = resolve_model(&settings.backends, &settings.models_dir, m).ok_or_else(|| {
                    TaskError::new(ErrorCode::InvalidField, format!("field model: {m:?} is not served here"))
                })?;
                (Some(backend), model)
            }
            None => (None, None),
        };
        Ok(ModelCall {
            task_id: task.id.clone(),
            agent: self.spec.name.clone(),
            task_type: task.task_type.clone(),
            complexity: task.complexity,
            agent_complexity: complexity,
            prefer: task.prefer,
            user: task.user.clone(),
            backend,
            model,
            messages,
            params,
            schedule: task.schedule,
            deltas: if stream { task.chunks.clone() } else { None },
            cancel: task.cancel.clone(),
            queue_ms: task.queue_ms,
            content_routing: self.spec.tasks.get(&task.task_type).is_some_and(|t| t.content_routing),
            cache: self.cacheable(),
        })
    }

    /// The prompt, in the documented order: persona, governor summary,
    /// recent turns, retrieved memory, task input.
    fn messages(&self, task: &Task, ctx: &PromptContext) -> Vec<ChatMessage> {
        let (_, _, prompt) = self.runtime();
        let mut m = Vec::with_capacity(ctx.history.len() + 4);
        let system = match &ctx.persona {
            Some(persona) if prompt.is_empty() => persona.clone(),
            Some(persona) => format!("{persona}\n\n{prompt}"),
            None => prompt.to_string(),
        };
        m.push(ChatMessage::new("system", system));
        if let Some(summary) = &ctx.summary {
            m.push(summary_message(summary));
        }
        m.extend_from_slice(&ctx.history);
        if let Some(memory) = &ctx.memory {
            m.push(ChatMessage::new("system", format!("Relevant memory: {memory}")));
        }
        m.push(ChatMessage::new("user", task.input_text()));
        m
    }

    /// Everything a prompt of `task` needs besides the role prompt and the
    /// input; `with_history`: the session's turns too.
    async fn context(&self, task: &Task, with_history: bool) -> PromptContext {
        let (summary, history) = match self.governed(task) {
            Some(session) if with_history => match self.governor.context(session).await {
                Ok(g) => (g.summary.clone(), g.history()),
                Err(e) => {
                    tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "governed history not read");
                    (None, self.history(task).await)
                }
            },
            _ => (None, if with_history { self.history(task).await } else { Vec::new() }),
        };
        PromptContext { persona: self.persona(task).await, summary, history, memory: self.retrieved_memory(task).await }
    }

    /// The task's session when the token governor governs it (ContextManager runs).
    fn governed<'t>(&self, task: &'t Task) -> Option<&'t str> {
        let session = task.session.as_deref()?;
        (self.peers.state(CONTEXT_MANAGER) == Some(AgentState::Running)).then_some(session)
    }

    /// The token governor's admission of the prompt of `ctx` (a governed
    /// session): measured on the serving model; at or above the target the
    /// older turns are summarised first and `ctx` is read again; above the
    /// hard max a prompt that summarising could not bring under it is
    /// refused (`context_exhausted`). Records the measure (`context.usage`).
    async fn admit(&self, task: &Task, ctx: &mut PromptContext, json: bool) -> Result<(), TaskError> {
        let Some(session) = self.governed(task) else { return Ok(()) };
        let probe = |ctx: &PromptContext| self.model_call(task, self.messages(task, ctx), self.params(json), false);
        let mut m = self.governor.measure(probe(&*ctx)?).await?;
        let limits = self.governor.settings().clone();
        if m.ratio() >= limits.target_ratio {
            let trigger = if m.ratio() > limits.hard_max_ratio { "hard_max" } else { "target" };
            match self.governor.summarize(session, trigger).await {
                Ok(done) if done.turns_summarized > 0 => {
                    *ctx = self.context(task, true).await;
                    m = self.governor.measure(probe(&*ctx)?).await?;
                }
                Ok(_) => {}
                Err(e) if m.ratio() > limits.hard_max_ratio => {
                    self.metrics.context_exhausted.with_label_values(&[&self.spec.name]).inc();
                    return Err(TaskError::new(
                        ErrorCode::ContextExhausted,
                        format!(
                            "session {session}: the prompt is {} tokens, {:.2} of {}'s {}-token window (hard max {}),                              and summarising the session failed: {e}",
                            m.tokens,
                            m.ratio(),
                            m.model,
                            m.window,
                            limits.hard_max_ratio
                        ),
                    ));
                }
                Err(e) => {
                    tracing::warn!(agent = %self.spec.name, session, error = %e, "summary at the target failed; the prompt is under the hard max, sent as is");
                }
            }
        }
        if m.ratio() > limits.hard_max_ratio {
            self.metrics.context_exhausted.with_label_values(&[&self.spec.name]).inc();
            return Err(TaskError::new(
                ErrorCode::ContextExhausted,
                format!(
                    "session {session}: the prompt is {} tokens, {:.2} of {}'s {}-token window, above the hard max {}                      even with the older turns summarised",
                    m.tokens,
                    m.ratio(),
                    m.model,
                    m.window,
                    limits.hard_max_ratio
                ),
            ));
        }
        let system_prompt = self.messages(task, ctx).first().map(|s| s.content.clone()).unwrap_or_default();
        self.governor
            .record(Usage {
                session: session.to_string(),
                agent: self.spec.name.clone(),
                user: task.user.clone(),
                system_prompt,
                backend: m.backend.clone(),
                model: m.model.clone(),
                tokens: m.tokens,
                prompt_tokens: Some(m.tokens),
                window: m.window,
                estimated: m.estimated,
            })
            .await;
        Ok(())
    }

    /// The system text of the persona the task's session uses, if any
    /// (a store failure is logged and the prompt goes without it).
    async fn persona(&self, task: &Task) -> Option<String> {
        let session = task.session.clone()?;
        let yaml = self.settings.identity.clone();
        match self.store.call(move |conn| personas::of_session(conn, &yaml, &session)).await {
            Ok(Some(p)) => {
                self.metrics.persona_prompts.with_label_values(&[&self.spec.name]).inc();
                Some(p.prompt())
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "session persona not read");
                None
            }
        }
    }

    /// Memory retrieved for the task when it asks for it. Hook: no task
    /// field asks for retrieval yet, so there is none.
    async fn retrieved_memory(&self, _task: &Task) -> Option<String> {
        None
    }

    /// The session's recent turns (newest that fit the token budget), oldest first.
    async fn history(&self, task: &Task) -> Vec<ChatMessage> {
        let Some(session) = &task.session else { return Vec::new() };
        if self.peers.state("SessionMemoryAgent").is_none() {
            return Vec::new();
        }
        let q = Task::new(format!("{}-history", task.id), "session.history", json!({"session": session, "limit": 200}));
        let turns = match self.peers.call("SessionMemoryAgent", q).await {
            Ok(v) => v.output.get("turns").and_then(Value::as_array).cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "no session history");
                return Vec::new();
            }
        };
        let mut budget = SESSION_HISTORY_TOKENS;
        let mut out = Vec::new();
        for t in turns.iter().rev() {
            let (Some(role), Some(content)) =
                (t.get("role").and_then(Value::as_str), t.get("content").and_then(Value::as_str))
            else {
                continue;
            };
            let tokens = estimate_tokens(content.chars().count());
            if tokens > budget {
                break;
            }
            budget -= tokens;
            out.push(ChatMessage::new(role, content));
        }
        out.reverse();
        out
    }

    /// Appends the user's input and the answer to the session.
    async fn remember(&self, task: &Task, answer: &Value) {
        let Some(session) = &task.session else { return };
        if self.peers.state("SessionMemoryAgent").is_none() {
            return;
        }
        let text = match answer {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let turns = json!({"session": session, "turns": [
            {"role": "user", "content": task.input_text(), "agent": self.spec.name},
            {"role": "assistant", "content": text, "agent": self.spec.name},
        ]});
        let append = Task::new(format!("{}-remember", task.id), "session.append", turns);
        if let Err(e) = self.peers.call("SessionMemoryAgent", append).await {
            tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "turn not stored in the session");
        }
    }

    /// Parses and validates a JSON answer; on failure asks once more with the error.
    async fn json_answer(
        &self,
        task: &Task,
        schema: &jsonschema::Validator,
        ctx: &PromptContext,
        route: &mut Option<Receipt>,
    ) -> Result<Value, TaskError> {
        let mut messages = self.messages(task, ctx);
        let first = self.ask(task, messages.clone(), true, false, route).await?;
        let problem = match check(&first, schema) {
            Ok(v) => return Ok(v),
            Err(p) => p,
        };
        tracing::info!(agent = %self.spec.name, task_id = %task.id, error = %problem, "invalid JSON answer; one repair attempt");
        messages.push(ChatMessage::new("assistant", first));
        messages.push(ChatMessage::new(
            "user",
            format!("That answer is not valid: {problem}. Answer again with only the JSON object the instructions describe, nothing else."),
        ));
        let second = self.ask(task, messages, true, false, route).await?;
        check(&second, schema).map_err(|p| {
            TaskError::new(ErrorCode::InvalidOutput, format!("{} answered invalid JSON twice: {p}", self.spec.name))
        })
    }
}

fn check(text: &str, schema: &jsonschema::Validator) -> Result<Value, String> {
    let v = extract_json(text).ok_or_else(|| "it is not a JSON object".to_string())?;
    schema.validate(&v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// The arbiter's choice: `{"specialist": NAME or ROLE, "reason"}` → (agent, reason).
fn choice(text: &str) -> Option<(&'static str, String)> {
    let v = extract_json(text)?;
    let named = v.get("specialist").and_then(Value::as_str)?.trim().to_lowercase();
    let agent = SPECIALISTS
        .iter()
        .find(|(agent, role)| named == agent.to_lowercase() || named == *role || named.starts_with(role))
        .map(|(agent, _)| *agent)?;
    let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default().to_string();
    Some((agent, reason))
}

impl LlmAgent {
    async fn answer(&self, task: &Task, route: &mut Option<Receipt>) -> Result<Value, TaskError> {
        if self.spec.role.as_deref() == Some("arbiter") {
            return self.arbitrate(task, route).await;
        }
        let mut ctx = self.context(task, true).await;
        self.admit(task, &mut ctx, self.schema.is_some()).await?;
        let answer = match &self.schema {
            Some(schema) => self.json_answer(task, schema, &ctx, route).await,
            None => {
                self.ask(task, self.messages(task, &ctx), false, task.chunks.is_some(), route).await.map(Value::String)
            }
        }?;
        self.remember(task, &answer).await;
        if let Some(session) = self.governed(task) {
            self.governor.after_turn(session, &self.spec.name, task.user.clone()).await;
        }
        Ok(answer)
    }
}

#[async_trait]
impl Behaviour for LlmAgent {
    async fn handle(&self, task: Task) -> Result<Value, TaskError> {
        self.reply(task).await.map(|out| out.output)
    }

    /// The answer with the route of its (last) model call.
    async fn reply(&self, task: Task) -> TaskReply {
        let mut route = None;
        match self.answer(&task, &mut route).await {
            Ok(output) => Ok(TaskOutput { output, route }),
            Err(e) => Err(e.with_route(route)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_by_name_or_role_and_json_in_prose() {
        assert_eq!(choice(r#"{"specialist": "CodeGenerator", "reason": "code"}"#).unwrap().0, "CodeGenerator");
        assert_eq!(choice("Sure! ```json\n{\"specialist\": \"reasoning\"}\n```").unwrap().0, "ChainOfThoughtAgent");
        assert!(choice(r#"{"specialist": "Poet"}"#).is_none());
        assert!(choice("no json here").is_none());
    }
}
