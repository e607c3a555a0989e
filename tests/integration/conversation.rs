//! The conversation agents (issue 21) over real ZeroMQ against the real
//! fleet with a real SQLite file: DynamicIdentityAgent's personas reaching
//! every llm agent's system prompt (seen by the fake OpenAI server), and a
//! stable code for every bad input.
//!
//! Model outputs here are **recorded/fixed outputs** of the project's fake
//! OpenAI server (`fake_openai.rs`), not a real model: these tests are about
//! what the agents send and do with an answer. The real-model check is
//! `conversation_agents_with_the_real_model` (run in the `embedded` build
//! only: the lean build has no llama.cpp).

use std::collections::BTreeSet;
use std::time::Duration;

use agentvisor::config::{PersonaSettings, Tier};
use serde_json::{Value, json};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// Sends one task, returns its reply (streamed chunks skipped); waits at
/// most 60 s for each message.
pub(crate) async fn call(bus: &mut zeromq::DealerSocket, envelope: Value) -> Value {
    call_within(bus, envelope, Duration::from_secs(60)).await
}

/// [`call`] waiting at most `wait` for each message (real model calls).
async fn call_within(bus: &mut zeromq::DealerSocket, envelope: Value, wait: Duration) -> Value {
    let id = envelope["id"].clone();
    util::send_json(bus, &envelope).await;
    loop {
        let r = util::recv_json_within(bus, wait).await;
        if r.get("event").is_none() && r["id"] == id {
            return r;
        }
    }
}

/// The output of an `ok` reply to `task_type` with `input`.
pub(crate) async fn ok(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> Value {
    let r = call(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input})).await;
    assert_eq!(r["status"], "ok", "{task_type}: {r}");
    r["output"].clone()
}

/// The error code of an `error` reply to `task_type` with `input`.
pub(crate) async fn code(bus: &mut zeromq::DealerSocket, task_type: &str, input: Value) -> String {
    let r = call(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input})).await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    r["error"]["code"].as_str().unwrap_or_default().to_string()
}

const COACH: &str = "You are an upbeat fitness coach; keep answers short and encouraging.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_persona_reaches_every_llm_agents_system_prompt() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("{\"answer\": \"fine\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.identity.personas.insert(
            "butler".into(),
            PersonaSettings {
                system_prompt: "You are a discreet English butler.".into(),
                voice: Some("en-gb".into()),
                tone: Some("formal".into()),
            },
        );
    })
    .await;
    let mut bus = util::dealer(&ingress).await;

    // A persona created by task and set on a session.
    let out = ok(
        &mut bus,
        "identity.set",
        json!({"persona": "coach", "definition": {"system_prompt": COACH, "tone": "friendly"}, "session": "gym-1"}),
    )
    .await;
    assert_eq!(out["persona"]["source"], "task", "{out}");
    assert_eq!(out["session"], "gym-1");
    let got = ok(&mut bus, "identity.get", json!({"session": "gym-1"})).await;
    assert_eq!(got["persona"]["name"], "coach", "{got}");
    assert_eq!(ok(&mut bus, "identity.get", json!({"session": "nobody"})).await["persona"], Value::Null);
    let listed = ok(&mut bus, "identity.list", json!(null)).await;
    let names: Vec<(&str, &str)> = listed["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("butler", "yaml"), ("coach", "task")]);

    // Every llm agent of the fleet answers one task of that session.
    let table = fleet.services.tasks.clone();
    let mut agents = BTreeSet::new();
    let mut sent = Vec::new();
    for def in table.iter().filter(|d| d.runtime == "llm") {
        if !agents.insert(def.agent.clone()) {
            continue;
        }
        let id = format!("persona-{}", def.task_type);
        util::send_json(
            &mut bus,
            &json!({"id": id, "type": def.task_type, "input": def.example, "session": "gym-1", "deadline_ms": 60_000}),
        )
        .await;
        sent.push(id);
    }
    assert!(agents.len() >= 20, "{} llm agents", agents.len());
    let mut replies = 0;
    while replies < sent.len() {
        let r = util::recv_json_within(&mut bus, Duration::from_secs(90)).await;
        if r.get("event").is_none() {
            assert!(sent.contains(&r["id"].as_str().unwrap().to_string()), "{r}");
            replies += 1;
        }
    }
    let requests = fake.requests();
    assert!(requests.len() >= agents.len(), "{} requests for {} agents", requests.len(), agents.len());
    for r in &requests {
        let system = r.body["messages"][0]["content"].as_str().unwrap_or_default();
        assert_eq!(r.body["messages"][0]["role"], "system", "{}", r.body);
        assert!(system.starts_with(&format!("{COACH}\nTone: friendly.")), "no persona first: {system:?}");
    }
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_persona_prompts_total{agent=\"ChitchatAgent\"}"), "{metrics}");

    // Another session gets no persona; a YAML persona switched onto it does.
    let before = fake.requests().len();
    let chat = table.iter().find(|d| d.agent == "ChitchatAgent").unwrap().task_type.clone();
    let r = call(&mut bus, json!({"id": "plain", "type": chat, "input": "hi", "session": "plain-1"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let system = fake.requests()[before].body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(!system.contains(COACH), "{system}");
    ok(&mut bus, "identity.set", json!({"persona": "butler", "session": "plain-1"})).await;
    let r = call(&mut bus, json!({"id": "butlered", "type": chat, "input": "hi", "session": "plain-1"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let system = fake.requests().last().unwrap().body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.starts_with("You are a discreet English butler.\nTone: formal."), "{system}");

    // Bad inputs: stable codes.
    for (input, want) in [
        (json!({"persona": "coach"}), "invalid_field"), // neither session nor definition
        (json!({"persona": "ghost", "session": "s"}), "not_found"), // no such persona
        (json!({"persona": " ", "session": "s"}), "invalid_field"), // blank name
        (json!({"persona": "butler", "definition": {"system_prompt": "x"}}), "invalid_field"), // YAML: read-only
        (json!({"persona": "c", "definition": {"system_prompt": ""}}), "invalid_field"),
        (json!({"persona": "c", "session": "s", "mood": "x"}), "invalid_field"), // unknown field
    ] {
        assert_eq!(code(&mut bus, "identity.set", input.clone()).await, want, "{input}");
    }
    for (input, want) in [
        (json!({}), "invalid_field"),
        (json!({"persona": "coach", "session": "gym-1"}), "invalid_field"),
        (json!({"persona": "ghost"}), "not_found"),
        (json!("coach"), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, "identity.get", input.clone()).await, want, "{input}");
    }
    assert_eq!(code(&mut bus, "identity.list", json!({"all": true})).await, "invalid_field");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// A fleet of the full profile whose `local` backend is `fake` (every model
/// call goes there), with `tweak` on the settings.
async fn fake_fleet(
    data: &std::path::Path,
    fake: &FakeOpenAi,
    tweak: impl FnOnce(&mut agentvisor::config::Settings),
) -> (agentvisor::daemon::System, zeromq::DealerSocket) {
    let base = fake.base_url();
    let (fleet, ingress) = util::bus_fleet(data, "full", |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", base))].into();
        s.routing.rules.clear();
        tweak(s);
    })
    .await;
    let bus = util::dealer(&ingress).await;
    (fleet, bus)
}

/// Polls `goal.status` until the goal is in `state` (at most `secs`); its status.
async fn goal_until(bus: &mut zeromq::DealerSocket, goal: &str, state: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = ok(bus, "goal.status", json!(goal)).await;
        if s["state"] == state {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "goal {goal} not {state}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The arbiter's choice, then the specialist's plan: recorded outputs.
fn push_plan(fake: &FakeOpenAi, subtasks: Value) {
    fake.push(Behaviour::AnswerJson(json!({"specialist": "reasoning", "reason": "a plan is step-by-step reasoning"})));
    fake.push(Behaviour::AnswerJson(json!({"subtasks": subtasks})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_is_planned_by_the_arbiter_run_as_jobs_tracked_cancelled_and_kept_across_restarts() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("Day 1: Alfama. Day 2: Belém. Day 3: Sintra.".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |_| {}).await;

    // Three subtasks for three agents: UnifiedUtilsAgent twice, ChitchatAgent (a model call).
    push_plan(
        &fake,
        json!([
            {"type": "utils.echo", "input": "book the flights"},
            {"type": "utils.hash", "input": {"text": "hotel near Rossio"}},
            {"type": "simple_chat", "input": "Write a day-by-day itinerary for Lisbon."},
        ]),
    );
    let goal = ok(&mut bus, "goal.create", json!({"text": "Plan a three-day trip to Lisbon in May."})).await;
    let id = goal["goal_id"].as_str().unwrap().to_string();
    assert_eq!(goal["state"], "running", "{goal}");
    assert_eq!(goal["planner"], "ChainOfThoughtAgent", "{goal}");
    assert_eq!(goal["subtasks"].as_array().unwrap().len(), 3, "{goal}");
    assert!(goal["subtasks"].as_array().unwrap().iter().all(|s| s["job_id"].as_str().is_some()), "{goal}");
    // The plan was asked through the arbiter, which forwarded it to the specialist.
    // (The subtasks' own model calls may follow: only the first two are the plan's.)
    let prompts: Vec<String> = fake.requests().iter().take(2).map(|r| r.body["messages"].to_string()).collect();
    assert!(prompts.len() == 2 && prompts.iter().all(|p| p.contains("Plan a three-day trip")), "{prompts:?}");

    let done = goal_until(&mut bus, &id, "done", 30).await;
    let subtasks = done["subtasks"].as_array().unwrap();
    assert!(subtasks.iter().all(|s| s["state"] == "done"), "{done}");
    assert_eq!(subtasks[0]["agent"], "UnifiedUtilsAgent");
    assert_eq!(subtasks[2]["agent"], "ChitchatAgent");
    assert_eq!(subtasks[2]["output"], "Day 1: Alfama. Day 2: Belém. Day 3: Sintra.", "{done}");
    assert!(done["finished_at"].as_f64().is_some(), "{done}");
    let job = ok(&mut bus, "async.status", subtasks[1]["job_id"].clone()).await;
    assert_eq!(job["state"], "done", "{job}");

    // A long goal, cancelled: its jobs too.
    push_plan(&fake, json!([{"type": "utils.sleep", "input": 30}, {"type": "utils.sleep", "input": 30}]));
    let long = ok(&mut bus, "goal.create", json!({"text": "Wait a long time."})).await;
    let long_id = long["goal_id"].as_str().unwrap().to_string();
    let c = ok(&mut bus, "goal.cancel", json!({"goal_id": long_id})).await;
    assert_eq!((c["cancelled"].as_bool(), c["state"].as_str()), (Some(true), Some("cancelled")), "{c}");
    let again = ok(&mut bus, "goal.cancel", json!(long_id)).await;
    assert_eq!(again["cancelled"], false, "{again}");
    let job = long["subtasks"][0]["job_id"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ok(&mut bus, "async.status", job.clone()).await["state"] != "cancelled" {
        assert!(std::time::Instant::now() < deadline, "job not cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A goal still running when the daemon stops.
    push_plan(
        &fake,
        json!([{"type": "utils.sleep", "input": 0.3}, {"type": "utils.sleep", "input": 0.3}, {"type": "utils.echo", "input": "x"}]),
    );
    let pending = ok(&mut bus, "goal.create", json!({"text": "Three short waits."})).await;
    let pending_id = pending["goal_id"].as_str().unwrap().to_string();
    let listed = ok(&mut bus, "goal.list", json!({"state": "done"})).await;
    assert_eq!(listed["goals"][0]["goal_id"], json!(id), "{listed}");
    assert_eq!(
        (listed["goals"][0]["subtasks_done"].as_u64(), listed["goals"][0]["subtasks_total"].as_u64()),
        (Some(3), Some(3))
    );

    // Bad inputs and unusable plans: stable codes, no goal stored.
    for (input, want) in [
        (json!({}), "invalid_field"),
        (json!({"text": "  "}), "invalid_field"),
        (json!({"text": "x", "deadline": 3}), "invalid_field"),
        (json!("just text"), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, "goal.create", input.clone()).await, want, "{input}");
    }
    push_plan(&fake, json!([{"type": "system.stop", "input": "ChitchatAgent"}]));
    assert_eq!(code(&mut bus, "goal.create", json!({"text": "Stop the chat."})).await, "invalid_output");
    push_plan(&fake, json!([{"type": "utils.hash", "input": {"text": "a", "algorithm": "md4"}}]));
    assert_eq!(code(&mut bus, "goal.create", json!({"text": "Hash it badly."})).await, "invalid_output");
    push_plan(&fake, json!([]));
    assert_eq!(code(&mut bus, "goal.create", json!({"text": "Nothing to do."})).await, "invalid_output");
    assert_eq!(code(&mut bus, "goal.status", json!("goal-nope")).await, "not_found");
    assert_eq!(code(&mut bus, "goal.cancel", json!({"goal_id": "goal-nope"})).await, "not_found");
    assert_eq!(code(&mut bus, "goal.list", json!({"state": "sleeping"})).await, "invalid_field");
    assert_eq!(code(&mut bus, "goal.list", json!({"limit": -1})).await, "invalid_field");
    assert_eq!(ok(&mut bus, "goal.list", json!(null)).await["goals"].as_array().unwrap().len(), 3);
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_goals_total{state=\"done\"} 1"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;

    // After a restart: every goal as it was, and the running one finishes.
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |_| {}).await;
    assert_eq!(ok(&mut bus, "goal.status", json!(id)).await["state"], "done");
    assert_eq!(ok(&mut bus, "goal.status", json!(long_id)).await["state"], "cancelled");
    let resumed = goal_until(&mut bus, &pending_id, "done", 30).await;
    assert!(resumed["subtasks"].as_array().unwrap().iter().all(|s| s["state"] == "done"), "{resumed}");
    assert_eq!(ok(&mut bus, "goal.list", json!({})).await["goals"].as_array().unwrap().len(), 3);
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// Sends `task_type` for `user` and returns the output of its `ok` reply.
async fn ok_as(bus: &mut zeromq::DealerSocket, user: &str, task_type: &str, input: Value) -> Value {
    let r = call(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input, "user": user}))
        .await;
    assert_eq!(r["status"], "ok", "{task_type}: {r}");
    r["output"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mood_is_recorded_per_user_and_decays_with_the_half_life_setting() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |s| s.mood.half_life_secs = 0.5).await;

    let now =
        ok_as(&mut bus, "ann", "mood.record", json!({"label": "joy", "intensity": 1.0, "text": "I passed!"})).await;
    assert_eq!((now["user"].as_str(), now["label"].as_str()), (Some("ann"), Some("joy")), "{now}");
    assert!(now["intensity"].as_f64().unwrap() > 0.8, "{now}");
    assert_eq!(now["half_life_seconds"], 0.5);
    let recorded = std::time::Instant::now();
    // Decay: the weight halves per half-life (0.5 s).
    loop {
        let m = ok_as(&mut bus, "ann", "mood.current", json!({})).await;
        if m["scores"]["joy"].as_f64().unwrap() <= 0.5 {
            assert!(recorded.elapsed() >= Duration::from_millis(450), "decayed too fast: {m}");
            break;
        }
        assert!(recorded.elapsed() < Duration::from_secs(10), "no decay: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fresh, weaker sadness now outweighs the old joy.
    let m = ok_as(&mut bus, "ann", "mood.record", json!({"label": "sadness", "intensity": 0.6})).await;
    assert_eq!(m["label"], "sadness", "{m}");
    // Per user: Bob has none, anonymous has none.
    let bob = ok_as(&mut bus, "bob", "mood.current", json!(null)).await;
    assert_eq!(
        (bob["label"].as_str(), bob["intensity"].as_f64(), &bob["updated_at"]),
        (Some("neutral"), Some(0.0), &Value::Null)
    );
    assert_eq!(ok(&mut bus, "mood.current", json!({})).await["user"], Value::Null);
    let h = ok_as(&mut bus, "ann", "mood.history", json!({})).await;
    let labels: Vec<&str> = h["entries"].as_array().unwrap().iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["sadness", "joy"]);
    assert_eq!(h["entries"][1]["text"], "I passed!");
    assert_eq!(
        ok_as(&mut bus, "ann", "mood.history", json!({"limit": 1})).await["entries"].as_array().unwrap().len(),
        1
    );
    let later = h["entries"][0]["ts"].as_f64().unwrap();
    assert_eq!(ok_as(&mut bus, "ann", "mood.history", json!({"since": later})).await["entries"], json!([]));
    assert!(fleet.services.metrics.render().contains("agentvisor_mood_records_total{label=\"joy\"} 1"));

    for (t, input) in [
        ("mood.record", json!({"label": "happy", "intensity": 0.5})),
        ("mood.record", json!({"label": "joy", "intensity": 1.5})),
        ("mood.record", json!({"label": "joy"})),
        ("mood.record", json!({"label": "joy", "intensity": 0.5, "user": "eve"})),
        ("mood.current", json!({"user": "ann"})),
        ("mood.history", json!({"limit": 0})),
        ("mood.history", json!({"since": "yesterday"})),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, "invalid_field", "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_fits_the_answer_to_the_emotion_and_persona_and_speaks_it() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |_| {}).await;

    // Neither emotion nor persona: the answer as given, no model call.
    let plain = ok(&mut bus, "response.compose", json!({"answer": "It is 18:40."})).await;
    assert_eq!(plain, json!({"text": "It is 18:40.", "emotion": null, "persona": null, "rewritten": false}));
    assert!(fake.requests().is_empty());

    // The emotion detected by EmotionEngine, the answer rewritten by EmpathyAgent (recorded outputs).
    fake.push(Behaviour::AnswerJson(json!({"label": "anger", "intensity": 0.8})));
    fake.push(Behaviour::Answer("Sorry for the wait: your flight now leaves at 18:40.".into()));
    let r = ok(
        &mut bus,
        "response.compose",
        json!({"answer": "Your flight is delayed; it leaves at 18:40.", "user_text": "Ugh, late again?"}),
    )
    .await;
    assert_eq!(r["text"], "Sorry for the wait: your flight now leaves at 18:40.", "{r}");
    assert_eq!(r["emotion"], json!({"label": "anger", "intensity": 0.8}));
    assert_eq!(r["rewritten"], true);
    let asked = fake.requests();
    assert!(asked[0].body["messages"].to_string().contains("Ugh, late again?"));
    let draft = asked[1].body["messages"].to_string();
    assert!(draft.contains("leaves at 18:40") && draft.contains("anger"), "{draft}");

    // The session's persona: EmpathyAgent's system prompt starts with it.
    ok(
        &mut bus,
        "identity.set",
        json!({"persona": "coach", "definition": {"system_prompt": COACH, "voice": "en-us"}, "session": "gym-2"}),
    )
    .await;
    fake.push(Behaviour::Answer("Great news, champ: it is 18:40!".into()));
    let r = call(
        &mut bus,
        json!({"id": "p1", "type": "response.compose", "session": "gym-2",
               "input": {"answer": "It is 18:40.", "emotion": {"label": "neutral", "intensity": 0.1}}}),
    )
    .await;
    assert_eq!(
        (r["output"]["persona"].as_str(), r["output"]["rewritten"].as_bool()),
        (Some("coach"), Some(true)),
        "{r}"
    );
    let system = fake.requests().last().unwrap().body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.starts_with(COACH), "{system}");

    // Speech through StreamingTTSAgent and the real TTSService (espeak-ng), one chunk per sentence.
    if fleet.ctx().state("TTSService").is_some() {
        util::send_json(
            &mut bus,
            &json!({"id": "sp", "type": "response.speak", "stream": true,
                    "input": {"answer": "The oven is ready. Put the bread in.", "emotion": {"label": "neutral", "intensity": 0.0}}}),
        )
        .await;
        let mut chunks = 0;
        let reply = loop {
            let v = util::recv_json_within(&mut bus, Duration::from_secs(60)).await;
            if v["event"] == "chunk" {
                chunks += 1;
            } else if v["id"] == "sp" {
                break v;
            }
        };
        if reply["status"] == "ok" || std::env::var_os("CI").is_some() {
            assert_eq!(reply["status"], "ok", "{reply}");
            let out = &reply["output"];
            assert_eq!(
                (out["text"].as_str(), out["sentences"].as_u64()),
                (Some("The oven is ready. Put the bread in."), Some(2))
            );
            assert!(out["duration_seconds"].as_f64().unwrap() > 0.2, "{out}");
            assert_eq!(chunks, 2);
        } else {
            eprintln!("no speech here ({reply}); skipping the speech check");
        }
    }

    for (t, input, want) in [
        ("response.compose", json!({}), "invalid_field"),
        ("response.compose", json!({"answer": " "}), "invalid_field"),
        ("response.compose", json!({"answer": "x", "emotion": {"label": "happy", "intensity": 0.5}}), "invalid_field"),
        ("response.compose", json!({"answer": "x", "emotion": {"label": "joy", "intensity": 2}}), "invalid_field"),
        ("response.compose", json!({"answer": "x", "tone": "warm"}), "invalid_field"),
        ("response.compose", json!({"answer": "x", "persona": "ghost"}), "not_found"),
        ("response.speak", json!({"answer": "x", "speed": 10}), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, want, "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_question_tutoring_session_adapts_difficulty_to_right_and_wrong_answers() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |_| {}).await;
    let question = |n: u32| {
        Behaviour::AnswerJson(
            json!({"question": format!("What is {n} + {n}?"), "expected_answer": format!("{}", 2 * n)}),
        )
    };
    let grade = |correct: bool| {
        Behaviour::AnswerJson(json!({"correct": correct, "feedback": if correct { "Right." } else { "Not quite." }}))
    };

    fake.push(question(1));
    let start = ok_as(&mut bus, "lea", "tutoring.session_start", json!({"topic": "addition"})).await;
    let id = start["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        (start["question"]["difficulty"].as_str(), start["mastery"].as_f64()),
        (Some("medium"), Some(0.5)),
        "{start}"
    );
    assert!(!start.to_string().contains("expected_answer"), "the expected answer is kept from the learner: {start}");
    assert!(fake.requests()[0].body["messages"].to_string().contains("medium question about addition"));

    // Right, right, wrong, wrong, right (recorded gradings).
    let mut levels = vec![start["question"]["difficulty"].as_str().unwrap().to_string()];
    let mut prompts_seen = 1;
    for (n, correct) in [true, true, false, false, true].into_iter().enumerate() {
        fake.push(grade(correct));
        fake.push(question(n as u32 + 2));
        let answer = if correct { format!("{}", 2 * (n + 1)) } else { "no idea".to_string() };
        let p = ok_as(&mut bus, "lea", "tutoring.progress", json!({"session_id": id, "answer": answer})).await;
        assert_eq!(p["graded"]["correct"], correct, "{p}");
        assert_eq!(p["graded"]["expected_answer"], format!("{}", 2 * (n + 1)));
        let grading = fake.requests()[prompts_seen].body["messages"].to_string();
        assert!(grading.contains(&format!("Learner's answer: {answer}")), "{grading}");
        // The next question is asked at the level the new mastery picks.
        let level = p["next_question"]["difficulty"].as_str().unwrap().to_string();
        assert!(fake.requests()[prompts_seen + 1].body["messages"].to_string().contains(&format!("{level} question")));
        prompts_seen += 2;
        levels.push(level);
    }
    // Harder after right answers, easier after wrong ones.
    assert_eq!(levels, ["medium", "medium", "hard", "medium", "easy", "medium"]);
    let p = ok_as(&mut bus, "lea", "tutoring.progress", json!({"session_id": id})).await;
    assert_eq!(
        (p["questions_asked"].as_u64(), p["correct_answers"].as_u64(), &p["graded"]),
        (Some(6), Some(3), &Value::Null)
    );

    let end = ok_as(&mut bus, "lea", "tutoring.session_end", json!({"session_id": id})).await;
    assert_eq!((end["questions_asked"].as_u64(), end["correct_answers"].as_u64()), (Some(5), Some(3)), "{end}");
    let mastery = end["mastery"].as_f64().unwrap();
    assert!((mastery - 0.5594).abs() < 0.001, "{end}");
    assert!(end["summary"].as_str().unwrap().contains("3 of 5"), "{end}");
    // Persisted: the learner's mastery starts the next session (medium), another learner starts fresh.
    fake.push(question(9));
    let again = ok_as(&mut bus, "lea", "tutoring.session_start", json!({"topic": "addition"})).await;
    assert_eq!(again["mastery"].as_f64(), Some(mastery));

    for (t, input, want) in [
        ("tutoring.session_start", json!({}), "invalid_field"),
        ("tutoring.session_start", json!({"topic": "x", "difficulty": "extreme"}), "invalid_field"),
        ("tutoring.progress", json!({"session_id": "tut-nope", "answer": "4"}), "not_found"),
        ("tutoring.progress", json!({"session_id": id, "answer": ""}), "invalid_field"),
        ("tutoring.progress", json!({"session_id": id, "answer": "4"}), "invalid_field"), // ended
        ("tutoring.session_end", json!({"session_id": "tut-nope"}), "not_found"),
        ("tutoring.session_end", json!({"session": id}), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, want, "{t} {input}");
    }
    // TutorAgent answering without the JSON asked for.
    fake.push(Behaviour::Answer("Here is a question: what is 2 + 2?".into()));
    assert_eq!(code(&mut bus, "tutoring.session_start", json!({"topic": "addition"})).await, "invalid_output");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// The conversation agents with the real default model (SmolLM2 through
/// llama.cpp): a session's persona, the responder's rewrite, a tutoring
/// question and a goal's plan. The small model may not write the JSON a
/// question or a plan needs: then the stable `invalid_output`, never
/// anything else. Built here (so it type-checks in every build); run by
/// [`conversation_agents_with_the_real_model`] in the `embedded` build.
#[cfg_attr(not(feature = "embedded"), allow(dead_code))]
async fn real_model_checks() {
    let data = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(data.path(), "full", |s| {
        s.models_dir = util::models_dir();
        s.models.threads = 2;
        s.backends = agentvisor::config::Settings::default().backends; // `local`: embedded, L1
        if let Some(local) = s.backends.get_mut("local") {
            local.total_timeout_secs = 300.0;
        }
    })
    .await;
    let mut bus = util::dealer(&ingress).await;
    ok(&mut bus, "identity.set", json!({"persona": "pirate", "definition": {"system_prompt": "You are a pirate. Answer in one short sentence."}, "session": "real-1"})).await;
    // A real model on two shared cores: minutes, not seconds, per answer at worst.
    let wait = Duration::from_secs(300);
    let chat = json!({"id": "chat", "type": "simple_chat", "input": "Say hello.", "session": "real-1", "deadline_ms": 300_000});
    let r = call_within(&mut bus, chat, wait).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert!(!r["output"].as_str().unwrap_or_default().trim().is_empty(), "{r}");
    let compose = json!({"id": "compose", "type": "response.compose", "deadline_ms": 300_000,
        "input": {"answer": "Your parcel arrives on Friday.", "emotion": {"label": "anger", "intensity": 0.8}}});
    let r = call_within(&mut bus, compose, wait).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["output"]["rewritten"], true, "{r}");
    assert!(!r["output"]["text"].as_str().unwrap_or_default().trim().is_empty(), "{r}");
    // Tutoring questions and goal plans with the real model are JSON the
    // 135M default rarely writes (issue 15's constrained choices fix that);
    // their paths are covered with fixed outputs above, and left out here
    // to keep this test to two model answers.
    fleet.shutdown(Duration::from_secs(10)).await;
}

#[cfg(feature = "embedded")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_agents_with_the_real_model() {
    real_model_checks().await;
}

/// The fake model's fixed text for every proactive suggestion (a recorded output, not a real model).
const SUGGESTION: &str = "FAKE MODEL OUTPUT: time for a glass of water.";

fn rule(
    name: &str,
    when: agentvisor::config::ProactiveWhen,
    session: Option<&str>,
) -> agentvisor::config::ProactiveRule {
    agentvisor::config::ProactiveRule {
        name: name.into(),
        when,
        prompt: format!("Suggest something helpful ({name})."),
        agent: None,
        session: session.map(str::to_string),
        enabled: true,
    }
}

/// The next `proactive.suggestion` event of `trigger` (at most `secs`): its fields.
async fn suggestion_event(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<agentvisor::events::Published>>,
    trigger: &str,
    secs: u64,
) -> serde_json::Map<String, Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let p = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no proactive.suggestion of {trigger} within {secs} s"))
            .expect("event stream");
        assert_ne!(p.topic, "proactive.failed", "{:?}", p.data());
        if p.topic == "proactive.suggestion" && p.str("trigger") == Some(trigger) {
            return p.data().clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_rules_fire_on_a_schedule_a_mood_drop_and_an_idle_user() {
    use agentvisor::config::ProactiveWhen;
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer(SUGGESTION.into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |s| {
        s.proactive.rules = vec![
            rule("water", ProactiveWhen { every_seconds: Some(1.0), ..Default::default() }, Some("kitchen-1")),
            rule(
                "cheer-ann",
                ProactiveWhen { mood_below: Some(-0.3), user: Some("ann".into()), ..Default::default() },
                None,
            ),
            rule(
                "nudge-bob",
                ProactiveWhen { idle_seconds: Some(1.5), user: Some("bob".into()), ..Default::default() },
                None,
            ),
            rule("compact", ProactiveWhen { context_above: Some(0.8), ..Default::default() }, None),
        ];
    })
    .await;
    let mut events = fleet.services.events.subscribe();

    // The first task starts the agent (and is bob's last activity).
    let t = ok_as(&mut bus, "bob", "proactive.triggers", json!({})).await;
    let kinds: Vec<(&str, &str)> = t["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("water", "schedule"), ("cheer-ann", "mood_drop"), ("nudge-bob", "idle"), ("compact", "context_usage")]
    );
    assert!(t["triggers"].as_array().unwrap().iter().all(|r| r["last_fired_at"].is_null()), "{t}");
    assert!(t["triggers"][3]["waiting_for"].is_null(), "ContextManager runs in full: {t}");
    assert_eq!(t["triggers"][0]["agent"], "ChitchatAgent");

    // A negative mood for ann: her level drops below −0.3.
    ok_as(&mut bus, "ann", "mood.record", json!({"label": "sadness", "intensity": 0.9, "text": "Rough day."})).await;
    let mood = suggestion_event(&mut events, "cheer-ann", 10).await;
    assert_eq!((mood["text"].as_str(), mood["user"].as_str()), (Some(SUGGESTION), Some("ann")), "{mood:?}");
    let water = suggestion_event(&mut fleet.services.events.subscribe(), "water", 5).await;
    assert_eq!((water["text"].as_str(), water["session"].as_str()), (Some(SUGGESTION), Some("kitchen-1")));
    let idle = suggestion_event(&mut fleet.services.events.subscribe(), "nudge-bob", 5).await;
    assert_eq!(idle["user"], "bob", "{idle:?}");

    // The model was asked with the rule's prompt and the reason.
    let prompts: Vec<String> = fake.requests().iter().map(|r| r.body["messages"].to_string()).collect();
    assert!(prompts.iter().any(|p| p.contains("(cheer-ann)") && p.contains("mood level is -0.90")), "{prompts:?}");

    let s = ok(&mut bus, "proactive.suggest", json!({"session": "kitchen-1", "limit": 1})).await;
    let list = s["suggestions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{s}");
    assert_eq!((list[0]["trigger"].as_str(), list[0]["text"].as_str()), (Some("water"), Some(SUGGESTION)));
    let all = ok(&mut bus, "proactive.suggest", json!(null)).await;
    let at: Vec<f64> =
        all["suggestions"].as_array().unwrap().iter().map(|s| s["created_at"].as_f64().unwrap()).collect();
    assert!(at.len() >= 3 && at.windows(2).all(|w| w[0] >= w[1]), "newest first: {all}");
    let anns = ok_as(&mut bus, "ann", "proactive.suggest", json!({})).await;
    assert!(
        anns["suggestions"].as_array().unwrap().iter().all(|s| s["user"].is_null() || s["user"] == "ann"),
        "{anns}"
    );

    let t = ok(&mut bus, "proactive.triggers", json!(null)).await;
    let fired: Vec<bool> = t["triggers"].as_array().unwrap().iter().map(|r| r["last_fired_at"].is_number()).collect();
    assert_eq!(fired, [true, true, true, false], "{t}");
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_proactive_firings_total{outcome=\"ok\",rule=\"cheer-ann\"} 1"), "{metrics}");

    for (t, input, want) in [
        ("proactive.suggest", json!({"limit": 0}), "invalid_field"),
        ("proactive.suggest", json!({"limit": 101}), "invalid_field"),
        ("proactive.suggest", json!({"session": " "}), "invalid_field"),
        ("proactive.suggest", json!({"user": "ann"}), "invalid_field"),
        ("proactive.suggest", json!("kitchen-1"), "invalid_field"),
        ("proactive.triggers", json!({"all": true}), "invalid_field"),
    ] {
        assert_eq!(code(&mut bus, t, input.clone()).await, want, "{t} {input}");
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// Bad rules are refused when the settings load, every one named.
#[test]
fn bad_proactive_rules_are_named_when_the_settings_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentvisor.yaml");
    std::fs::write(
        &path,
        r#"proactive:
  rules:
    - {name: nothing, when: {}, prompt: "hi"}
    - {name: both, when: {every_seconds: 5, cron: "0 8 * * *"}, prompt: "hi"}
    - {name: badcron, when: {cron: "99 * * * *"}, prompt: "hi"}
    - {name: moody, when: {mood_below: -3}, prompt: "hi"}
    - {name: moody, when: {idle_seconds: 0}, prompt: ""}
"#,
    )
    .unwrap();
    let e = agentvisor::config::Settings::load(Some(&path), &[]).unwrap_err().to_string();
    for part in [
        "rules[0] (\"nothing\"): when names no condition",
        "rules[1] (\"both\"): when names 2 conditions",
        "rules[2] (\"badcron\"): cron \"99 * * * *\"",
        "rules[3] (\"moody\"): mood_below -3 is not within -1..=1",
        "rules[4] (\"moody\"): name is used by an earlier rule",
        "rules[4] (\"moody\"): prompt is empty",
        "rules[4] (\"moody\"): idle_seconds 0 is not > 0",
    ] {
        assert!(e.contains(part), "{part:?} not in {e}");
    }
    std::fs::write(&path, "proactive:\n  rules:\n    - {name: x, when: {every_minutes: 5}, prompt: hi}\n").unwrap();
    let e = agentvisor::config::Settings::load(Some(&path), &[]).unwrap_err().to_string();
    assert!(e.contains("every_minutes"), "{e}");
}

/// A firing whose model call fails is logged, counted and published as
/// `proactive.failed`; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proactive_firing_that_fails_is_published_and_counted() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Status(400));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |s| {
        s.proactive.rules = vec![rule(
            "water",
            agentvisor::config::ProactiveWhen { every_seconds: Some(1.0), ..Default::default() },
            None,
        )];
    })
    .await;
    let mut events = fleet.services.events.subscribe();
    ok(&mut bus, "proactive.triggers", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let p = tokio::time::timeout_at(deadline, events.recv()).await.expect("no proactive.failed").unwrap();
        assert_ne!(p.topic, "proactive.suggestion");
        if p.topic == "proactive.failed" {
            break p.data().clone();
        }
    };
    assert_eq!(failed["trigger"], "water", "{failed:?}");
    assert!(failed["code"].as_str().is_some_and(|c| !c.is_empty()), "{failed:?}");
    assert_eq!(ok(&mut bus, "proactive.suggest", json!({})).await["suggestions"], json!([]));
    let t = ok(&mut bus, "proactive.triggers", json!({})).await;
    assert!(t["triggers"][0]["last_fired_at"].is_number(), "{t}");
    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_proactive_firings_total{outcome=\"failed\",rule=\"water\"}"), "{metrics}");
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// A rule naming an agent that is not an llm agent of the fleet: the agent
/// does not start, and the reply names the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proactive_rule_with_an_unknown_agent_is_named_when_the_agent_starts() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = fake_fleet(dir.path(), &fake, |s| {
        let mut r =
            rule("odd", agentvisor::config::ProactiveWhen { every_seconds: Some(60.0), ..Default::default() }, None);
        r.agent = Some("MoodTrackerAgent".into());
        s.proactive.rules = vec![r];
    })
    .await;
    let r = call(&mut bus, json!({"id": "p1", "type": "proactive.triggers", "input": {}})).await;
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("error"), Some("agent_unavailable")), "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rule \"odd\": agent \"MoodTrackerAgent\" is not an llm agent"), "{r}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
