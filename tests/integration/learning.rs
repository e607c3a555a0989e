//! The learning agents of issue 16 over real ZeroMQ against the real fleet
//! with a real SQLite file: FeedbackHandler's feedback tied to the routing
//! receipt of a task that really ran (through the fake OpenAI server),
//! LearningManager's preferences per user and corrections, and
//! AgentTrustScorer's trust of an agent whose backend fails, then recovers.
//! Stable codes for every bad input. The trust arithmetic's invariants are
//! a property test.
//!
//! Model outputs here are fixed outputs of the fake OpenAI server
//! (`fake_openai.rs`), not a real model: these tests are about what the
//! learning agents store and compute from real tasks and receipts.

use std::path::Path;
use std::time::{Duration, Instant};

use agentvisor::agents::builtin::trust::{Outcome, TrustModel};
use agentvisor::config::{Settings, Tier, TrustSettings};
use agentvisor::daemon::System;
use agentvisor::store::learning::TrustRow;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::conversation::{call, code, ok};
use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util;

/// A small profile: the bus, ChitchatAgent (an llm agent making real model
/// calls), the three learning agents, DynamicIdentityAgent (personas);
/// AgentTrustScorer starts at boot so it sees every outcome.
fn profile(dir: &Path) -> String {
    let path = dir.join("learning-test.yaml");
    std::fs::write(
        &path,
        "profile: {name: learning-test, description: \"the learning agents and one llm agent\"}\n\
         agent_selection:\n  include_groups: [infrastructure_registry, coordination_resource]\n  \
         include_agents: [ChitchatAgent, FeedbackHandler, LearningManager, AgentTrustScorer, DynamicIdentityAgent]\n  \
         autoload_on_startup: [AgentTrustScorer]\n",
    )
    .unwrap();
    path.display().to_string()
}

/// A booted fleet of [`profile`] whose only backend is `fake`; its breaker
/// never opens (the trust test wants every failure to reach the backend).
async fn start(dir: &Path, fake: &FakeOpenAi, tweak: impl FnOnce(&mut Settings)) -> (System, zeromq::DealerSocket) {
    let profile = profile(dir);
    let (fleet, ingress) = util::bus_fleet(&dir.join("data"), &profile, |s| {
        s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
        s.routing.rules.clear();
        s.routing.breaker.failure_threshold = 1_000_000;
        tweak(s);
    })
    .await;
    let bus = util::dealer(&ingress).await;
    (fleet, bus)
}

/// Sends `envelope` (with an id) and returns the reply.
async fn send(bus: &mut zeromq::DealerSocket, envelope: Value) -> Value {
    call(bus, envelope).await
}

/// A `greeting` task to ChitchatAgent with `id`, as `user`.
async fn greet(bus: &mut zeromq::DealerSocket, id: &str, user: Option<&str>) -> Value {
    let mut envelope = json!({"id": id, "type": "greeting", "input": "Good morning!", "deadline_ms": 30_000});
    if let Some(u) = user {
        envelope["user"] = json!(u);
    }
    send(bus, envelope).await
}

/// The output of an ok reply to `task_type` with `input`, as `user`.
async fn ok_as(bus: &mut zeromq::DealerSocket, user: &str, task_type: &str, input: Value) -> Value {
    let r = send(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input, "user": user}))
        .await;
    assert_eq!(r["status"], "ok", "{task_type} as {user}: {r}");
    r["output"].clone()
}

/// The error code of a reply to `task_type` with `input`, as `user`.
async fn code_as(bus: &mut zeromq::DealerSocket, user: &str, task_type: &str, input: Value) -> String {
    let r = send(bus, json!({"id": uuid::Uuid::new_v4().to_string(), "type": task_type, "input": input, "user": user}))
        .await;
    assert_eq!(r["status"], "error", "{task_type} {input}: {r}");
    r["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_and_corrections_are_tied_to_real_receipts_and_preferences_are_per_user() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer("Good morning to you too!".into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = start(dir.path(), &fake, |_| {}).await;
    let mut events = util::EventLog::new(&fleet.fleet);

    // A task that made a real model call: its receipt names the agent, tier and backend.
    let r = greet(&mut bus, "fb-1", Some("ana")).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["route"]["backend"], "local", "{r}");

    let f = ok_as(
        &mut bus,
        "ana",
        "feedback.record",
        json!({"task_id": "fb-1", "rating": 2, "correction": "Good morning, Ana!", "better_specialist": "EmpathyAgent"}),
    )
    .await;
    assert_eq!(f["task_id"], "fb-1", "{f}");
    assert_eq!(f["agent"], "ChitchatAgent", "{f}");
    assert_eq!(
        (f["tier"].as_str(), f["backend"].as_str(), f["model"].as_str()),
        (Some("L1"), Some("local"), Some("fake-local"))
    );
    assert_eq!((f["user"].as_str(), f["rating"].as_i64(), f["thumbs"].as_str()), (Some("ana"), Some(2), None));
    assert_eq!(f["better_specialist"], "EmpathyAgent");
    let recorded =
        events.wait_for(Duration::from_secs(20), "feedback.recorded", |e| e.topic == "feedback.recorded").await;
    assert_eq!((recorded.str("task_id"), recorded.str("agent")), (Some("fb-1"), Some("ChitchatAgent")));
    assert_eq!(recorded.data()["rating"], 2);
    let thumbs = ok_as(&mut bus, "bo", "feedback.record", json!({"task_id": "fb-1", "thumbs": "up"})).await;
    assert_eq!((thumbs["thumbs"].as_str(), thumbs["rating"].as_i64()), (Some("up"), None), "{thumbs}");

    // Bad input: unknown task, ratings out of range, both or neither of rating and thumbs.
    assert_eq!(code(&mut bus, "feedback.record", json!({"task_id": "no-such-task", "rating": 3})).await, "not_found");
    for bad in [
        json!({"task_id": "fb-1", "rating": 6}),
        json!({"task_id": "fb-1", "rating": 0}),
        json!({"task_id": "fb-1", "rating": 2.5}),
        json!({"task_id": "fb-1", "thumbs": "sideways"}),
        json!({"task_id": "fb-1", "rating": 3, "thumbs": "up"}),
        json!({"task_id": "fb-1"}),
        json!({"task_id": "fb-1", "rating": 3, "stars": 3}),
    ] {
        assert_eq!(code(&mut bus, "feedback.record", bad.clone()).await, "invalid_field", "{bad}");
    }
    assert_eq!(
        code(&mut bus, "feedback.record", json!({"task_id": "fb-1", "rating": 3, "better_specialist": "NoSuchAgent"}))
            .await,
        "unknown_agent"
    );

    // Listed newest first, per task and per agent.
    let listed = ok(&mut bus, "feedback.list", json!({"task_id": "fb-1"})).await;
    let got: Vec<(Option<&str>, Option<i64>)> =
        listed["feedback"].as_array().unwrap().iter().map(|f| (f["thumbs"].as_str(), f["rating"].as_i64())).collect();
    assert_eq!(got, [(Some("up"), None), (None, Some(2))], "{listed}");
    let one = ok(&mut bus, "feedback.list", json!({"agent": "ChitchatAgent", "limit": 1})).await;
    assert_eq!(one["feedback"].as_array().map(Vec::len), Some(1));
    assert_eq!(ok(&mut bus, "feedback.list", json!({"agent": "CodeGenerator"})).await["feedback"], json!([]));
    assert_eq!(ok(&mut bus, "feedback.list", Value::Null).await["feedback"].as_array().map(Vec::len), Some(2));
    assert_eq!(code(&mut bus, "feedback.list", json!({"limit": 0})).await, "invalid_field");

    // Corrections: the feedback's, then one recorded directly.
    let from_feedback = ok(&mut bus, "corrections.list", json!({"task_id": "fb-1"})).await;
    assert_eq!(from_feedback["corrections"][0]["correction"], "Good morning, Ana!", "{from_feedback}");
    let c = ok_as(
        &mut bus,
        "ana",
        "corrections.record",
        json!({"task_id": "fb-1", "correction": "Good morning! How can I help?", "note": "too short"}),
    )
    .await;
    assert_eq!(
        (c["agent"].as_str(), c["user"].as_str(), c["note"].as_str()),
        (Some("ChitchatAgent"), Some("ana"), Some("too short"))
    );
    let all = ok(&mut bus, "corrections.list", json!({"limit": 10})).await;
    let texts: Vec<&str> =
        all["corrections"].as_array().unwrap().iter().map(|c| c["correction"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Good morning! How can I help?", "Good morning, Ana!"]);
    assert_eq!(code(&mut bus, "corrections.record", json!({"task_id": "nope", "correction": "x"})).await, "not_found");
    assert_eq!(code(&mut bus, "corrections.record", json!({"task_id": "fb-1"})).await, "invalid_field");

    // Preferences: each user sees only their own.
    let set = ok_as(
        &mut bus,
        "ana",
        "preferences.set",
        json!({"preferred_tier": "L1", "language": "pt-BR", "cost_cap_usd": 0.02}),
    )
    .await;
    assert_eq!(set["user"], "ana");
    assert_eq!(
        set["preferences"],
        json!({"preferred_tier": "L1", "persona": null, "language": "pt-BR", "cost_cap_usd": 0.02})
    );
    assert!(set["updated_at"].as_f64().is_some(), "{set}");
    ok_as(&mut bus, "bo", "preferences.set", json!({"preferred_tier": "L3"})).await;
    let bo = ok_as(&mut bus, "bo", "preferences.get", json!({})).await;
    assert_eq!(
        bo["preferences"],
        json!({"preferred_tier": "L3", "persona": null, "language": null, "cost_cap_usd": null})
    );
    let anonymous = ok(&mut bus, "preferences.get", Value::Null).await;
    assert_eq!((anonymous["user"].clone(), anonymous["updated_at"].clone()), (Value::Null, Value::Null), "{anonymous}");
    assert_eq!(anonymous["preferences"]["preferred_tier"], Value::Null);
    // null clears one field; the others stay.
    ok_as(&mut bus, "ana", "preferences.set", json!({"language": null})).await;
    let ana = ok_as(&mut bus, "ana", "preferences.get", json!(null)).await;
    assert_eq!(
        ana["preferences"],
        json!({"preferred_tier": "L1", "persona": null, "language": null, "cost_cap_usd": 0.02})
    );
    // A persona must exist.
    assert_eq!(code_as(&mut bus, "ana", "preferences.set", json!({"persona": "pirate"})).await, "not_found");
    ok(&mut bus, "identity.set", json!({"persona": "pirate", "definition": {"system_prompt": "Talk like a pirate."}}))
        .await;
    let pirate = ok_as(&mut bus, "ana", "preferences.set", json!({"persona": "pirate"})).await;
    assert_eq!(pirate["preferences"]["persona"], "pirate");
    assert_eq!(ok_as(&mut bus, "bo", "preferences.get", json!({})).await["preferences"]["persona"], Value::Null);
    for bad in [
        json!({}),
        json!({"preferred_tier": "L9"}),
        json!({"language": "english please"}),
        json!({"cost_cap_usd": -1}),
        json!({"favourite_colour": "blue"}),
    ] {
        assert_eq!(code_as(&mut bus, "ana", "preferences.set", bad.clone()).await, "invalid_field", "{bad}");
    }

    let metrics = fleet.services.metrics.render();
    assert!(metrics.contains("agentvisor_learning_records_total{kind=\"feedback\"} 2"), "{metrics}");
    assert!(metrics.contains("agentvisor_learning_records_total{kind=\"correction\"} 2"));
    assert!(metrics.contains("agentvisor_learning_records_total{kind=\"preferences\"} 4"));
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// ChitchatAgent's entry of `trust.score`.
async fn trust_of(bus: &mut zeromq::DealerSocket, agent: &str) -> Value {
    let out = ok(bus, "trust.score", json!({"agent": agent})).await;
    assert_eq!(out["scores"].as_array().map(Vec::len), Some(1), "{out}");
    out["scores"][0].clone()
}

/// Asks `trust.score` until `done` holds for `agent`'s entry (the scorer
/// counts outcomes from the event stream, a moment after the reply); panics
/// after 30 s.
async fn trust_when(bus: &mut zeromq::DealerSocket, agent: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = trust_of(bus, agent).await;
        if done(&entry) {
            return entry;
        }
        assert!(Instant::now() < deadline, "trust of {agent} never reached {what}: {entry}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_of_an_agent_whose_backend_fails_drops_below_the_floor_and_recovers() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, mut bus) = start(dir.path(), &fake, |s| s.trust.floor = 0.3).await;
    let mut events = util::EventLog::new(&fleet.fleet);

    let fresh = trust_of(&mut bus, "ChitchatAgent").await;
    assert_eq!((fresh["score"].as_f64(), fresh["updated_at"].clone()), (Some(0.5), Value::Null), "{fresh}");
    let all = ok(&mut bus, "trust.score", json!({})).await;
    assert_eq!((all["floor"].as_f64(), all["half_life_seconds"].as_f64()), (Some(0.3), Some(604_800.0)), "{all}");

    // Six failures of the backend: six failures of the agent.
    for i in 0..6 {
        let r = greet(&mut bus, &format!("fail-{i}"), None).await;
        assert_eq!(r["error"]["code"], "backend_error", "{r}");
    }
    let low = trust_when(&mut bus, "ChitchatAgent", "6 failures", |e| e["failures"].as_f64() > Some(5.99)).await;
    let score = low["score"].as_f64().unwrap();
    // Beta(1, 1 + 6): 1/8, give or take the decay of a few seconds.
    assert!((score - 0.125).abs() < 1e-3, "{low}");
    assert_eq!((low["below_floor"].as_bool(), low["successes"].as_f64()), (Some(true), Some(0.0)), "{low}");
    let [lo, hi] = [low["interval"][0].as_f64().unwrap(), low["interval"][1].as_f64().unwrap()];
    assert!(0.0 <= lo && lo <= score && score <= hi && hi <= 1.0, "{low}");
    let crossed = events
        .wait_for(Duration::from_secs(20), "trust.floor_crossed below", |e| {
            e.topic == "trust.floor_crossed" && e.data()["below"] == true
        })
        .await;
    assert_eq!(crossed.str("agent"), Some("ChitchatAgent"));

    // The backend recovers: twenty successes lift the agent over the floor again.
    fake.set_default(Behaviour::Answer("Hello!".into()));
    for i in 0..20 {
        let r = greet(&mut bus, &format!("ok-{i}"), None).await;
        assert_eq!(r["status"], "ok", "{r}");
    }
    let high = trust_when(&mut bus, "ChitchatAgent", "20 successes", |e| e["successes"].as_f64() > Some(19.99)).await;
    let recovered = high["score"].as_f64().unwrap();
    // Beta(21, 7): 0.75.
    assert!((recovered - 0.75).abs() < 1e-3 && recovered > score, "{high}");
    assert_eq!(high["below_floor"], false, "{high}");
    events
        .wait_for(Duration::from_secs(20), "trust.floor_crossed above", |e| {
            e.topic == "trust.floor_crossed" && e.data()["below"] == false
        })
        .await;

    // A poor rating through FeedbackHandler counts against it.
    ok(&mut bus, "feedback.record", json!({"task_id": "ok-0", "rating": 1})).await;
    let rated = trust_when(&mut bus, "ChitchatAgent", "a rating", |e| e["ratings"].as_f64() > Some(0.99)).await;
    assert_eq!(rated["mean_rating"].as_f64().map(f64::round), Some(1.0), "{rated}");
    assert!(rated["score"].as_f64().unwrap() < recovered, "{rated}");

    // trust.record: an outside judge's outcome; bad input gets stable codes.
    let judged =
        ok(&mut bus, "trust.record", json!({"agent": "ChitchatAgent", "outcome": "timeout", "rating": 2})).await;
    assert!(judged["score"].as_f64().unwrap() < rated["score"].as_f64().unwrap(), "{judged}");
    let after = trust_of(&mut bus, "ChitchatAgent").await;
    assert!(after["timeouts"].as_f64() > Some(0.99), "{after}");
    assert_eq!(
        code(&mut bus, "trust.record", json!({"agent": "NoSuchAgent", "outcome": "success"})).await,
        "unknown_agent"
    );
    assert_eq!(code(&mut bus, "trust.score", json!({"agent": "NoSuchAgent"})).await, "unknown_agent");
    for bad in [
        json!({"agent": "ChitchatAgent", "outcome": "meh"}),
        json!({"agent": "ChitchatAgent", "outcome": "success", "rating": 9}),
        json!({"agent": "ChitchatAgent"}),
    ] {
        assert_eq!(code(&mut bus, "trust.record", bad.clone()).await, "invalid_field", "{bad}");
    }

    // The history survives a restart of the scorer (SQLite).
    fleet.fleet.restart_agent("AgentTrustScorer").await.expect("restart");
    let reloaded = trust_of(&mut bus, "ChitchatAgent").await;
    assert!(reloaded["successes"].as_f64() > Some(19.99) && reloaded["failures"].as_f64() > Some(5.99), "{reloaded}");
    assert!(fleet.services.metrics.render().contains("agentvisor_trust_outcomes_total{outcome=\"failure\"} 6"));
    fleet.shutdown(Duration::from_secs(10)).await;
}

/// One step of a trust history: an outcome or a rating, after a pause.
#[derive(Debug, Clone)]
enum Step {
    Outcome(Outcome),
    Rating(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Outcome(Outcome::Success)),
        Just(Step::Outcome(Outcome::Failure)),
        Just(Step::Outcome(Outcome::Timeout)),
        (0u8..=7).prop_map(Step::Rating),
    ]
}

proptest! {
    /// Whatever the settings and the sequence (outcomes, ratings, long and
    /// no pauses, a clock going back), trust stays within 0..=1, inside its
    /// interval, and the decayed counts stay finite and ≥ 0.
    #[test]
    fn trust_stays_within_zero_and_one_whatever_the_sequence(
        half_life in 0.001f64..1e9,
        prior_successes in 1e-6f64..100.0,
        prior_failures in 1e-6f64..100.0,
        rating_weight in 0.0f64..50.0,
        floor in 0.0f64..=1.0,
        steps in proptest::collection::vec((step(), -10.0f64..1e7), 0..200),
    ) {
        let model = TrustModel::new(&TrustSettings { half_life_secs: half_life, prior_successes, prior_failures, rating_weight, floor });
        let (mut row, mut now) = (TrustRow::default(), 0.0);
        for (s, pause) in steps {
            now += pause;
            row = match s {
                Step::Outcome(o) => model.record(&row, o, now),
                Step::Rating(r) => model.rate(&row, r, now),
            };
            let score = model.score(&row, now);
            prop_assert!((0.0..=1.0).contains(&score.score), "{score:?}");
            prop_assert!(score.interval[0] <= score.score && score.score <= score.interval[1], "{score:?}");
            prop_assert!(score.interval[0] >= 0.0 && score.interval[1] <= 1.0, "{score:?}");
            let r = score.row;
            for v in [r.successes, r.failures, r.timeouts, r.rated_good, r.rated_poor, r.ratings, r.rating_sum] {
                prop_assert!(v.is_finite() && v >= 0.0, "{r:?}");
            }
        }
    }
}
