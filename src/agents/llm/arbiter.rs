//! The arbiter's loop (issue 15; the earlier system's orchestrated
//! pipeline, seed 002): ModelOrchestrator answers `auto` and `orchestrate`.
//!
//! 1. **Choose** a specialist: for `auto`, the content estimate's route
//!    when it is confident (`routing.content.min_confidence`), else the arbiter's model
//!    under [`choice_schema`] (`{"specialist" ∈ the four, "reason"}`: a
//!    grammar on embedded models, the forced tool `consult_specialist` on
//!    OpenAI-compatible ones). A choice that is still malformed (a backend
//!    ignoring constraints) is repaired once through NLUAgent, else
//!    `invalid_output`. The model's choice has a third of the time left;
//!    when it fails or runs out, the content estimate's route (however
//!    unsure) is the choice, if it found one.
//! 2. **Consult** it: the task goes to the specialist (started on demand)
//!    as its first task type, with the estimate's complexity when the task
//!    has none.
//! 3. **Review** the answer with the arbiter's model under
//!    [`review_schema`] (the tool `review_answer`): `accept` ends the loop;
//!    `revise` sends the answer and the critique to the named specialist;
//!    `change_phase` moves to the phase named in `note` with the named
//!    specialist; `continue_current_phase` lets the named specialist go on
//!    from the work so far; `request_user_input` ends with `{"needs_input":
//!    {"question"}}` (status ok; the question is stored in the session, so
//!    the user's next task in it continues).
//!    A specialist that fails (not by the deadline) before any answer is
//!    replaced by CognitiveModelAgent (ChainOfThoughtAgent if that one
//!    failed) while consultations are left.
//!    A specialist AgentTrustScorer scores under `trust.floor` is passed
//!    over for the next of the four that is not (when the scorer runs).
//! 4. Bounded by `arbiter.max_iterations` consultations and the task's
//!    deadline: when either runs out before an `accept`, the answer is the
//!    best one so far (highest review score, the later on a tie) and the
//!    receipt says why (`route.arbiter`: `max_iterations`, `deadline`).
//!
//! The reply's `route` is the last specialist call's receipt with
//! `steps: [{specialist, tier, backend, ms, verdict}]`, `estimate` and
//! `arbiter` (how the loop ended).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{LlmAgent, choice};
use crate::core::{ChatMessage, ErrorCode, GenParams, Receipt, RouteEstimate, RouteStep, Task, TaskError, TaskReply};
use crate::routing::content::SPECIALISTS;

/// The choice's tool: which specialist answers, and why.
pub(super) fn choice_schema() -> Value {
    json!({
        "title": "consult_specialist",
        "description": "Consult the specialist that fits the request.",
        "type": "object",
        "required": ["specialist", "reason"],
        "additionalProperties": false,
        "properties": {
            "specialist": {"type": "string", "enum": SPECIALISTS},
            "reason": {"type": "string", "maxLength": 200},
        },
    })
}

/// The review's verdicts (the earlier arbiter's tools besides the consults).
const VERDICTS: [&str; 5] = ["accept", "revise", "change_phase", "continue_current_phase", "request_user_input"];

/// The review's tool: the verdict, a score 0–10, the specialist for the
/// next step and the note (critique, phase name or question).
pub(super) fn review_schema() -> Value {
    json!({
        "title": "review_answer",
        "description": "Review the specialist's answer to the request.",
        "type": "object",
        "required": ["verdict", "score", "specialist", "note"],
        "additionalProperties": false,
        "properties": {
            "verdict": {"type": "string", "enum": VERDICTS},
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
            "specialist": {"type": "string", "enum": SPECIALISTS},
            "note": {"type": "string", "maxLength": 240},
        },
    })
}

/// One review, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Review {
    verdict: &'static str,
    score: i64,
    specialist: &'static str,
    note: String,
}

/// A review answer → [`Review`]; `None` when it does not fit [`review_schema`].
fn review(text: &str) -> Option<Review> {
    let v = super::extract_json(text)?;
    let verdict = v.get("verdict").and_then(Value::as_str)?.trim().to_lowercase();
    let verdict = *VERDICTS.iter().find(|x| **x == verdict)?;
    let named = v.get("specialist").and_then(Value::as_str).unwrap_or_default();
    let specialist = choice(&json!({"specialist": named}).to_string()).map(|c| c.0).unwrap_or(SPECIALISTS[0]);
    Some(Review {
        verdict,
        score: v.get("score").and_then(Value::as_i64).unwrap_or(0).clamp(0, 10),
        specialist,
        note: v.get("note").and_then(Value::as_str).unwrap_or_default().to_string(),
    })
}

/// The best answer so far: (review score, answer, specialist, reason, its route).
struct Best {
    score: i64,
    answer: Value,
    specialist: &'static str,
    route: Option<Receipt>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl LlmAgent {
    /// The arbiter's answer (see the module docs).
    pub(super) async fn arbitrate(&self, task: &Task, route: &mut Option<Receipt>) -> Result<Value, TaskError> {
        // The loop's calls end a little before the task's deadline, so the
        // best answer so far still reaches the caller in time.
        let inner = reserve_time(task);
        let task = &inner;
        let settings = &self.settings.arbiter;
        let request = task.input_text();
        // `auto` only: `orchestrate` (GoalManager's plans) lets the model choose.
        let estimate: Option<RouteEstimate> = self
            .content
            .as_ref()
            .filter(|_| task.task_type == "auto")
            .map(|c| c.estimate_with(&request, self.settings.routing.content.min_confidence));
        let (specialist, reason) = match estimate.as_ref().filter(|e| e.used) {
            Some(e) => {
                let agent = SPECIALISTS.iter().find(|s| **s == e.specialist).copied().unwrap_or(SPECIALISTS[0]);
                (agent, format!("content route {} (confidence {:.2})", e.route, e.confidence))
            }
            None => self.timed_choice(task, estimate.as_ref(), route).await?,
        };
        let below = self.below_trust_floor(task).await;
        let (specialist, reason) = match passed_over(specialist, &below) {
            Some(next) => {
                tracing::info!(task_id = %task.id, specialist, next, "under the trust floor: passed over");
                (next, format!("{reason}; {specialist} is under the trust floor, {next} answers"))
            }
            None => (specialist, reason),
        };
        let mut specialist = specialist;
        tracing::info!(task_id = %task.id, specialist, reason, "arbiter chose");
        let complexity = task.complexity.or(estimate.as_ref().filter(|e| e.used).map(|e| e.complexity));
        let max = settings.max_iterations.max(1);
        let mut steps: Vec<RouteStep> = Vec::new();
        let mut best: Option<Best> = None;
        let mut input = task.input.clone();
        let mut ended = "max_iterations";
        let mut needs_input: Option<String> = None;
        let mut partial = false;
        let mut last_step = Duration::ZERO;
        for i in 0..max {
            // No time left for another consultation like the last one.
            if task.deadline.is_some_and(|d| Instant::now() + last_step >= d) {
                ended = "deadline";
                break;
            }
            let t0 = Instant::now();
            let mut forward = task.clone();
            forward.task_type = self
                .catalog
                .get(specialist)
                .and_then(|s| s.handles.first().cloned())
                .unwrap_or_else(|| task.task_type.clone());
            forward.input = input.clone();
            forward.complexity = complexity;
            let (result, written) = consult(self.peers.as_ref(), specialist, forward).await;
            let (answer, answer_route) = match result {
                Ok(out) => (out.output, out.route),
                Err(e) => {
                    match best.take() {
                        // The deadline cut the first answer short: what the
                        // specialist had written by then is the best so far.
                        None if e.code == ErrorCode::DeadlineExceeded && !written.trim().is_empty() => {
                            tracing::warn!(task_id = %task.id, specialist, chars = written.len(), "deadline: the answer is partial");
                            steps.push(step(specialist, e.route.as_deref(), t0, "partial"));
                            let route = e.route.map(|r| *r);
                            best = Some(Best { score: 0, answer: Value::String(written), specialist, route });
                            ended = "deadline";
                            partial = true;
                            break;
                        }
                        // A specialist that could not answer (invalid JSON
                        // from a small model, say): a text generalist tries,
                        // while consultations are left.
                        None if i + 1 < max
                            && !matches!(e.code, ErrorCode::DeadlineExceeded | ErrorCode::Cancelled)
                            && generalist(specialist, &below).is_some() =>
                        {
                            steps.push(step(specialist, e.route.as_deref(), t0, "failed"));
                            let next = generalist(specialist, &below).unwrap_or(specialist);
                            tracing::warn!(task_id = %task.id, specialist, next, error = %e, "specialist failed; another one tries");
                            specialist = next;
                            continue;
                        }
                        // Nothing to fall back on: the specialist's error is the answer.
                        None => {
                            steps.push(step(specialist, e.route.as_deref(), t0, "failed"));
                            if e.route.is_some() {
                                *route = e.route.clone().map(|r| *r);
                            }
                            return Err(e);
                        }
                        Some(b) => {
                            steps.push(step(specialist, e.route.as_deref(), t0, "failed"));
                            tracing::warn!(task_id = %task.id, specialist, error = %e, "revision failed; the best answer so far stands");
                            ended =
                                if e.code == ErrorCode::DeadlineExceeded { "deadline" } else { "specialist_failed" };
                            best = Some(b);
                            break;
                        }
                    }
                }
            };
            let last = i + 1 == max;
            if !settings.review {
                steps.push(step(specialist, answer_route.as_ref(), t0, "unreviewed"));
                best = Some(Best { score: 0, answer, specialist, route: answer_route });
                ended = "unreviewed";
                break;
            }
            let mut review_route = None;
            let verdict = self.review(task, &request, specialist, &answer, &mut review_route).await;
            let r = match verdict {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => {
                    // An unreadable or failed review does not throw the answer away.
                    if let Err(e) = &verdict {
                        tracing::warn!(task_id = %task.id, error = %e, "review failed; the answer stands unreviewed");
                        ended = if e.code == ErrorCode::DeadlineExceeded { "deadline" } else { "unreviewed" };
                    } else {
                        tracing::warn!(task_id = %task.id, "review unreadable; the answer stands unreviewed");
                        ended = "unreviewed";
                    }
                    steps.push(step(specialist, answer_route.as_ref(), t0, "unreviewed"));
                    keep_best(&mut best, Best { score: 0, answer, specialist, route: answer_route });
                    break;
                }
            };
            steps.push(step(specialist, answer_route.as_ref(), t0, r.verdict));
            last_step = t0.elapsed();
            tracing::info!(task_id = %task.id, specialist, verdict = r.verdict, score = r.score, "arbiter reviewed");
            let previous = text_of(&answer);
            let candidate = Best { score: r.score, answer, specialist, route: answer_route };
            if r.verdict == "accept" {
                // The accepted answer is the answer, whatever scored higher before.
                best = Some(candidate);
                ended = "accepted";
                break;
            }
            keep_best(&mut best, candidate);
            match r.verdict {
                "request_user_input" => {
                    ended = "needs_input";
                    needs_input = Some(if r.note.trim().is_empty() {
                        "Please say more about what you need.".to_string()
                    } else {
                        r.note.clone()
                    });
                    break;
                }
                _ if last => break,
                verdict => {
                    let from = specialist;
                    specialist = passed_over(r.specialist, &below).unwrap_or(r.specialist);
                    input = Value::String(match verdict {
                        "revise" => format!(
                            "{request}\n\nA previous answer (by {from}):\n{previous}\n\nCritique: {}\n\
                             Write an improved answer to the request.",
                            r.note
                        ),
                        "change_phase" => format!(
                            "{request}\n\nWork so far (by {from}):\n{previous}\n\nNext phase: {}. Do this phase's work.",
                            r.note
                        ),
                        _ => format!(
                            "{request}\n\nWork so far (by {from}):\n{previous}\n\nContinue the current phase. {}",
                            r.note
                        ),
                    });
                }
            }
        }
        let Some(best) = best else {
            // The deadline passed before any answer.
            return Err(TaskError::new(
                ErrorCode::DeadlineExceeded,
                "the deadline passed before a specialist answered",
            )
            .with_route(route.take()));
        };
        let mut receipt = best.route.or(route.take()).unwrap_or_else(|| Receipt {
            task_id: task.id.clone(),
            agent: self.spec.name.clone(),
            task_type: task.task_type.clone(),
            tier: "none".into(),
            outcome: "ok".into(),
            ..Default::default()
        });
        receipt.steps = steps;
        receipt.estimate = estimate;
        receipt.arbiter = Some(ended.to_string());
        *route = Some(receipt);
        if let Some(question) = needs_input {
            let out = json!({"needs_input": {"question": question}});
            self.remember(task, &Value::String(question)).await;
            return Ok(out);
        }
        let mut out = json!({"specialist": best.specialist, "reason": reason, "answer": best.answer});
        if partial {
            out["partial"] = Value::Bool(true);
        }
        Ok(out)
    }

    /// The specialists AgentTrustScorer scores under `trust.floor` (none
    /// when it is not running: it is not started for this).
    async fn below_trust_floor(&self, task: &Task) -> Vec<String> {
        if self.peers.state("AgentTrustScorer") != Some(crate::supervisor::AgentState::Running) {
            return Vec::new();
        }
        let mut ask = Task::new(format!("{}-trust", task.id), "trust.score", json!({}));
        ask.deadline = task.deadline;
        match self.peers.call("AgentTrustScorer", ask).await {
            Ok(out) => out.output["scores"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["below_floor"] == true)
                .filter_map(|s| s["agent"].as_str().map(str::to_string))
                .collect(),
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "trust scores unavailable; no specialist is passed over");
                Vec::new()
            }
        }
    }

    /// The arbiter model's choice within a third of the time left (the
    /// consultation needs the rest). When it fails or runs out and the
    /// content estimate found a route, however unsure, that route is the
    /// choice (the reason says so); else the choice's error.
    async fn timed_choice(
        &self,
        task: &Task,
        estimate: Option<&RouteEstimate>,
        route: &mut Option<Receipt>,
    ) -> Result<(&'static str, String), TaskError> {
        let mut boxed = task.clone();
        let cancel = task.cancel.child_token();
        boxed.cancel = cancel.clone();
        if let Some(d) = task.deadline {
            let now = Instant::now();
            boxed.deadline = Some(now + d.saturating_duration_since(now) / 3);
        }
        let result = self.model_choice(&boxed, route).await;
        if result.is_err() {
            // The choice's generation stops (not the task).
            cancel.cancel();
        }
        let fallback = estimate
            .filter(|e| e.confidence > 0.0)
            .and_then(|e| SPECIALISTS.iter().find(|s| **s == e.specialist).map(|s| (*s, e)));
        match (result, fallback) {
            (Err(e), Some((agent, est))) if e.code != ErrorCode::Cancelled => {
                tracing::warn!(task_id = %task.id, error = %e, route = est.route, "the arbiter's model did not choose; the content route stands");
                let reason = format!(
                    "content route {} (confidence {:.2}; the arbiter's model did not choose: {})",
                    est.route, est.confidence, e.code
                );
                Ok((agent, reason))
            }
            (result, _) => result,
        }
    }

    /// The arbiter model's constrained choice; a malformed one (a backend
    /// ignoring constraints) repaired once through NLUAgent.
    async fn model_choice(
        &self,
        task: &Task,
        route: &mut Option<Receipt>,
    ) -> Result<(&'static str, String), TaskError> {
        let ctx = self.context(task, true).await;
        let raw = self.decide(task, self.messages(task, &ctx), choice_schema(), route).await?;
        if let Some(c) = choice(&raw) {
            return Ok(c);
        }
        let mut repair = Task::new(
            format!("{}-repair", task.id),
            "nlu",
            json!(format!(
                "Repair this malformed tool call. The tool is consult_specialist with arguments specialist \
                 (one of {}) and reason: {raw}",
                SPECIALISTS.join(", ")
            )),
        );
        repair.deadline = task.deadline;
        repair.cancel = task.cancel.clone();
        // The repair answers in the same session (its persona too) for the same user.
        repair.session = task.session.clone();
        repair.user = task.user.clone();
        let repaired = self.peers.call("NLUAgent", repair).await?.output;
        choice(&repaired.get("entities").cloned().unwrap_or(repaired.clone()).to_string()).ok_or_else(|| {
            TaskError::new(ErrorCode::InvalidOutput, format!("the arbiter's choice could not be repaired: {raw}"))
        })
    }

    /// The arbiter model's review of `answer` (`None`: unreadable).
    async fn review(
        &self,
        task: &Task,
        request: &str,
        specialist: &str,
        answer: &Value,
        route: &mut Option<Receipt>,
    ) -> Result<Option<Review>, TaskError> {
        // The arbiter's own prompt (with the session's persona), the review as the user's turn.
        let ctx = self.context(task, false).await;
        let mut messages = self.messages(task, &ctx);
        let text = format!(
            "Review this answer.\n\nRequest:\n{request}\n\nAnswer of {specialist}:\n{}\n\n\
             Call review_answer: verdict accept if it answers the request, else revise (with the \
             specialist to redo it and the critique in note), change_phase, continue_current_phase, \
             or request_user_input (the question for the user in note); score 0-10.",
            text_of(answer)
        );
        if let Some(last) = messages.last_mut() {
            *last = ChatMessage::new("user", text);
        }
        let raw = self.decide(task, messages, review_schema(), route).await?;
        Ok(review(&raw))
    }

    /// One constrained decision of the arbiter's model.
    async fn decide(
        &self,
        task: &Task,
        messages: Vec<ChatMessage>,
        schema: Value,
        route: &mut Option<Receipt>,
    ) -> Result<String, TaskError> {
        let params = GenParams {
            max_tokens: Some(self.settings.arbiter.decision_max_tokens),
            json: true,
            json_schema: Some(schema),
            ..Default::default()
        };
        self.call_model(task, messages, params, false, route).await
    }
}

/// The task with its deadline moved earlier by a tenth of the time left
/// (20 ms to 500 ms): the time to answer with the best answer so far.
fn reserve_time(task: &Task) -> Task {
    let mut inner = task.clone();
    if let Some(d) = task.deadline {
        let left = d.saturating_duration_since(Instant::now());
        let reserve = (left / 10).clamp(Duration::from_millis(20), Duration::from_millis(500)).min(left / 2);
        inner.deadline = Some(d - reserve);
    }
    inner
}

/// Consults `specialist` with `forward`, streaming its answer: the text it
/// has written is kept (and passed on to the caller's stream, if any), so a
/// deadline that cuts the answer short still leaves what was written. The
/// consultation runs under a child of the task's cancellation token, which
/// is cancelled when the call ends without an answer (the deadline), so the
/// specialist's model stops generating.
async fn consult(peers: &dyn crate::supervisor::Peers, specialist: &str, mut forward: Task) -> (TaskReply, String) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let caller = forward.chunks.replace(tx);
    let cancel = forward.cancel.child_token();
    forward.cancel = cancel.clone();
    let mut written = String::new();
    let keep = |piece: String, written: &mut String| {
        written.push_str(&piece);
        if let Some(caller) = &caller {
            let _ = caller.send(piece);
        }
    };
    let call = peers.call(specialist, forward);
    tokio::pin!(call);
    let result = loop {
        tokio::select! {
            biased;
            Some(piece) = rx.recv() => keep(piece, &mut written),
            result = &mut call => break result,
        }
    };
    while let Ok(piece) = rx.try_recv() {
        keep(piece, &mut written);
    }
    if result.is_err() {
        cancel.cancel();
    }
    (result, written)
}

/// A step's record from the specialist's route.
fn step(specialist: &str, route: Option<&Receipt>, t0: Instant, verdict: &str) -> RouteStep {
    RouteStep {
        specialist: specialist.to_string(),
        tier: route.map_or_else(|| "none".to_string(), |r| r.tier.clone()),
        backend: route.and_then(|r| r.backend.clone()),
        ms: t0.elapsed().as_secs_f64() * 1e3,
        verdict: verdict.to_string(),
    }
}

/// When `wanted` is under the trust floor: the next of the four
/// specialists (in their order, wrapping) that is not; `None` when `wanted`
/// is trusted, or when every specialist is under the floor (then `wanted`
/// answers: someone must).
fn passed_over(wanted: &'static str, below: &[String]) -> Option<&'static str> {
    if !below.iter().any(|b| b == wanted) {
        return None;
    }
    let at = SPECIALISTS.iter().position(|s| *s == wanted).unwrap_or(0);
    (1..SPECIALISTS.len()).map(|i| SPECIALISTS[(at + i) % SPECIALISTS.len()]).find(|s| !below.iter().any(|b| b == s))
}

/// Who answers when `failed` could not: CognitiveModelAgent (free text,
/// any request), or ChainOfThoughtAgent when that one failed; `None` when
/// it is under the trust floor too.
fn generalist(failed: &str, below: &[String]) -> Option<&'static str> {
    let next = if failed == "CognitiveModelAgent" { "ChainOfThoughtAgent" } else { "CognitiveModelAgent" };
    (next != failed && !below.iter().any(|b| b == next)).then_some(next)
}

/// Keeps the higher-scored answer; the newer one on a tie.
fn keep_best(best: &mut Option<Best>, new: Best) {
    if best.as_ref().is_none_or(|b| new.score >= b.score) {
        *best = Some(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_parse_and_fit_their_schema() {
        let r = review(r#"{"verdict": "revise", "score": 4, "specialist": "reasoning", "note": "step 2 is wrong"}"#)
            .unwrap();
        assert_eq!(
            (r.verdict, r.score, r.specialist, r.note.as_str()),
            ("revise", 4, "ChainOfThoughtAgent", "step 2 is wrong")
        );
        assert_eq!(review(r#"{"verdict": "ACCEPT", "score": 99}"#).unwrap().score, 10);
        assert!(review(r#"{"verdict": "maybe"}"#).is_none());
        assert!(review("no json").is_none());
        for schema in [choice_schema(), review_schema()] {
            assert!(jsonschema::validator_for(&schema).is_ok());
        }
        let v = jsonschema::validator_for(&review_schema()).unwrap();
        assert!(v.is_valid(&json!({"verdict": "accept", "score": 7, "specialist": "NLUAgent", "note": ""})));
        assert!(!v.is_valid(&json!({"verdict": "accept", "score": 11, "specialist": "NLUAgent", "note": ""})));
    }

    #[test]
    fn a_specialist_under_the_trust_floor_is_passed_over_for_the_next_one() {
        let below = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(passed_over("CodeGenerator", &below(&[])), None);
        assert_eq!(passed_over("CodeGenerator", &below(&["NLUAgent"])), None);
        assert_eq!(passed_over("CodeGenerator", &below(&["CodeGenerator"])), Some("ChainOfThoughtAgent"));
        assert_eq!(passed_over("NLUAgent", &below(&["NLUAgent", "CodeGenerator"])), Some("ChainOfThoughtAgent"));
        assert_eq!(passed_over("NLUAgent", &below(SPECIALISTS)), None, "all under: the wanted one answers");
    }

    #[test]
    fn the_best_answer_is_the_highest_scored_and_the_newest_on_a_tie() {
        let mut best = None;
        let b = |score, a: &str| Best { score, answer: json!(a), specialist: "NLUAgent", route: None };
        keep_best(&mut best, b(5, "first"));
        keep_best(&mut best, b(3, "worse"));
        assert_eq!(best.as_ref().unwrap().answer, "first");
        keep_best(&mut best, b(5, "tie"));
        assert_eq!(best.as_ref().unwrap().answer, "tie");
    }
}
