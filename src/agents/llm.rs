//! The `llm` runtime (DESIGN §7): an agent's role prompt plus the task input
//! become a chat request through HybridRouter. Output is text, or JSON when
//! the spec declares an `output_schema`: validated, one repair attempt
//! (the model is shown its answer and the validation error), then
//! `invalid_output`.
//!
//! The arbiter (the agent whose `role` is `arbiter`, ModelOrchestrator)
//! asks the model which specialist fits — `{"specialist", "reason"}` — starts
//! that specialist on demand, forwards the task to it, and answers
//! `{"specialist", "reason", "answer"}`. A malformed choice is repaired once
//! through the interpreter specialist (NLUAgent), else `invalid_output`.
//!
//! Sessions: when the task has a `session`, the agent asks
//! SessionMemoryAgent for the session's history (the newest turns that fit
//! in [`SESSION_HISTORY_TOKENS`], oldest first) and puts it between the
//! system prompt and the new input; after answering it appends the user's
//! input and its answer. Without a running SessionMemoryAgent the task is a
//! single turn (logged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ractor::rpc::CallResult;
use serde_json::{Value, json};

use super::builtin::Behaviour;
use super::task::{ErrorCode, Task, TaskError, TaskReply};
use crate::backends::ChatMessage;
use crate::config::spec::{AgentSpec, RuntimeSpec};
use crate::routing::router::{ModelCall, RouterMsg};
use crate::supervisor::context::FleetCtx;

/// Longest a model call may take when the task has no deadline.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Most tokens of session history put into a request (estimated at 4
/// characters per token), so long sessions stay within small models' context.
pub const SESSION_HISTORY_TOKENS: usize = 2048;

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
    ctx: Arc<FleetCtx>,
    schema: Option<jsonschema::Validator>,
}

impl LlmAgent {
    /// The behaviour of `spec` (an `llm` runtime), or `None` for other runtimes.
    ///
    /// # Errors
    /// The spec's `output_schema` is not a valid JSON Schema.
    pub fn new(spec: Arc<AgentSpec>, ctx: Arc<FleetCtx>) -> Result<Option<LlmAgent>, String> {
        let RuntimeSpec::Llm { output_schema, .. } = &spec.runtime else { return Ok(None) };
        let schema = match output_schema {
            Some(s) => Some(jsonschema::validator_for(s).map_err(|e| format!("{}: output_schema: {e}", spec.name))?),
            None => None,
        };
        Ok(Some(LlmAgent { spec, ctx, schema }))
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

    /// One model call through HybridRouter; leaves the receipt on the task.
    async fn ask(
        &self,
        task: &Task,
        messages: Vec<ChatMessage>,
        json: bool,
        stream: bool,
    ) -> Result<String, TaskError> {
        let router =
            self.ctx.router().ok_or_else(|| TaskError::new(ErrorCode::Internal, "HybridRouter is not running"))?;
        let (complexity, max_tokens, _) = self.runtime();
        let timeout =
            task.deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(DEFAULT_CALL_TIMEOUT);
        let call = ModelCall {
            task_id: task.id.clone(),
            agent: self.spec.name.clone(),
            task_type: task.task_type.clone(),
            complexity: task.complexity,
            agent_complexity: complexity,
            prefer: task.prefer,
            backend: None,
            model: None,
            messages,
            max_tokens: Some(max_tokens),
            temperature: None,
            json,
            json_schema: if json { self.output_schema() } else { None },
            top_p: None,
            priority: task.priority,
            push_to_front: task.push_to_front,
            deltas: if stream { task.chunks.clone() } else { None },
            cancel: task.cancel.clone(),
            queue_ms: task.queue_ms,
        };
        let result = router.call(|reply| RouterMsg::Call(Box::new(call), reply), Some(timeout)).await;
        match result {
            Ok(CallResult::Success(Ok(answer))) => {
                *task.receipt.lock() = Some(answer.receipt);
                Ok(answer.response.content)
            }
            Ok(CallResult::Success(Err(failure))) => {
                if let Some(r) = failure.receipt {
                    *task.receipt.lock() = Some(r);
                }
                Err(failure.error)
            }
            Ok(CallResult::Timeout) => {
                Err(TaskError::new(ErrorCode::DeadlineExceeded, "the model call did not finish in time"))
            }
            Ok(CallResult::SenderError) | Err(_) => {
                Err(TaskError::new(ErrorCode::Internal, "HybridRouter stopped during the call"))
            }
        }
    }

    fn messages(&self, task: &Task, history: &[ChatMessage]) -> Vec<ChatMessage> {
        let (_, _, prompt) = self.runtime();
        let mut m = Vec::with_capacity(history.len() + 2);
        m.push(ChatMessage::new("system", prompt));
        m.extend_from_slice(history);
        m.push(ChatMessage::new("user", task.input_text()));
        m
    }

    /// The session's recent turns (newest that fit the token budget), oldest first.
    async fn history(&self, task: &Task) -> Vec<ChatMessage> {
        let (Some(session), Some(fleet)) = (&task.session, self.ctx.fleet()) else { return Vec::new() };
        if self.ctx.state("SessionMemoryAgent").is_none() {
            return Vec::new();
        }
        let q = Task::new(format!("{}-history", task.id), "session.history", json!({"session": session, "limit": 200}));
        let turns = match fleet.call("SessionMemoryAgent", q).await {
            Ok(v) => v.get("turns").and_then(Value::as_array).cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "no session history");
                return Vec::new();
            }
        };
        let mut budget = SESSION_HISTORY_TOKENS * 4;
        let mut out = Vec::new();
        for t in turns.iter().rev() {
            let (Some(role), Some(content)) =
                (t.get("role").and_then(Value::as_str), t.get("content").and_then(Value::as_str))
            else {
                continue;
            };
            if content.len() > budget {
                break;
            }
            budget -= content.len();
            out.push(ChatMessage::new(role, content));
        }
        out.reverse();
        out
    }

    /// Appends the user's input and the answer to the session.
    async fn remember(&self, task: &Task, answer: &Value) {
        let (Some(session), Some(fleet)) = (&task.session, self.ctx.fleet()) else { return };
        if self.ctx.state("SessionMemoryAgent").is_none() {
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
        if let Err(e) =
            fleet.call("SessionMemoryAgent", Task::new(format!("{}-remember", task.id), "session.append", turns)).await
        {
            tracing::warn!(agent = %self.spec.name, task_id = %task.id, error = %e, "turn not stored in the session");
        }
    }

    /// Parses and validates a JSON answer; on failure asks once more with the error.
    async fn json_answer(&self, task: &Task, schema: &jsonschema::Validator, history: &[ChatMessage]) -> TaskReply {
        let mut messages = self.messages(task, history);
        let first = self.ask(task, messages.clone(), true, false).await?;
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
        let second = self.ask(task, messages, true, false).await?;
        check(&second, schema).map_err(|p| {
            TaskError::new(ErrorCode::InvalidOutput, format!("{} answered invalid JSON twice: {p}", self.spec.name))
        })
    }

    async fn arbitrate(&self, task: &Task) -> TaskReply {
        let fleet = self.ctx.fleet().ok_or_else(|| TaskError::new(ErrorCode::ShuttingDown, "the fleet is stopping"))?;
        let raw = self.ask(task, self.messages(task, &[]), true, false).await?;
        let (specialist, reason) = match choice(&raw) {
            Some(c) => c,
            None => {
                // Repair through the interpreter specialist, once.
                let mut repair = Task::new(
                    format!("{}-repair", task.id),
                    "nlu",
                    json!(format!(
                        "Repair this malformed tool call. The tool is choose_specialist with arguments specialist \
                         (one of CodeGenerator, ChainOfThoughtAgent, CognitiveModelAgent, NLUAgent) and reason: {raw}"
                    )),
                );
                repair.deadline = task.deadline;
                repair.cancel = task.cancel.clone();
                let repaired = fleet.call("NLUAgent", repair).await?;
                choice(&repaired.get("entities").cloned().unwrap_or(repaired.clone()).to_string()).ok_or_else(|| {
                    TaskError::new(
                        ErrorCode::InvalidOutput,
                        format!("the arbiter's choice could not be repaired: {raw}"),
                    )
                })?
            }
        };
        tracing::info!(task_id = %task.id, specialist, reason, "arbiter chose");
        let spec = self.ctx.catalog.get(specialist);
        let task_type = spec.and_then(|s| s.handles.first().cloned()).unwrap_or_else(|| task.task_type.clone());
        let mut forward = task.clone();
        forward.task_type = task_type;
        forward.receipt = Default::default();
        let answer = fleet.call(specialist, forward.clone()).await?;
        if let Some(r) = forward.receipt.lock().take() {
            *task.receipt.lock() = Some(r);
        }
        Ok(json!({"specialist": specialist, "reason": reason, "answer": answer}))
    }
}

/// Extracts the JSON object of a model answer (tolerating code fences and prose around it).
fn extract_json(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return Some(v);
    }
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
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

#[async_trait]
impl Behaviour for LlmAgent {
    async fn handle(&self, task: Task) -> TaskReply {
        if self.spec.role.as_deref() == Some("arbiter") {
            return self.arbitrate(&task).await;
        }
        let history = self.history(&task).await;
        let answer = match &self.schema {
            Some(schema) => self.json_answer(&task, schema, &history).await,
            None => {
                self.ask(&task, self.messages(&task, &history), false, task.chunks.is_some()).await.map(Value::String)
            }
        }?;
        self.remember(&task, &answer).await;
        Ok(answer)
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
