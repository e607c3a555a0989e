//! The policy gate in front of `code.execute` (issue 18), end to end: the
//! real daemon binary with the real Executor child over real ZeroMQ refuses
//! risky snippets with `denied_by_policy` and the rule's reason before they
//! run (the files they target survive, the listener they would reach gets
//! no connection), leaves a `policy.denied` event on the PUB socket and
//! counts every decision; harmless and scratch-directory snippets still run.
//! With `policy.undecided: model` an in-process fleet asks
//! IntentionValidatorAgent, whose model is a fake OpenAI-compatible server
//! answering scripted decisions (none of them a model's output).
//!
//! The risky snippets are defused where the rules allow it (a fork-bomb
//! function that is defined but never called, a forking loop that never
//! loops), so that a broken gate fails the test without harming the machine.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use agentvisor::config::Tier;
use agentvisor::config::policy::Undecided;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SubSocket};

use crate::fake_openai::{Behaviour, FakeOpenAi, backend_settings};
use crate::util::{self, Daemon, EventLog};

/// How long one event may take to show up.
const WAIT: Duration = Duration::from_secs(30);

/// A profile with the bus (RequestCoordinator), the Executor and
/// IntentionValidatorAgent (both on demand).
fn write_profile(dir: &Path) -> String {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        "profile: {name: policy, description: \"the bus, the Executor and the validator\"}\n\
         agent_selection: {include_agents: [RequestCoordinator, Executor, IntentionValidatorAgent]}\n",
    )
    .unwrap();
    path.display().to_string()
}

/// Asserts `reply` is `denied_by_policy` naming `rule`; returns the message.
#[track_caller]
fn denied(reply: &Value, rule: &str) -> String {
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "denied_by_policy", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains(&format!("(rule {rule})")), "{reply}");
    message
}

/// The value of the Prometheus sample `name{labels}` in `metrics` (0 when absent).
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{')?;
            let rest = rest.trim_end_matches('}');
            let all = labels.iter().all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if metric == name && all { value.parse().ok() } else { None }
        })
        .unwrap_or(0.0)
}

/// The next event on `sub` within `wait`.
async fn next_event(sub: &mut SubSocket, wait: Duration) -> Option<Value> {
    let msg = tokio::time::timeout(wait, sub.recv()).await.ok()?.ok()?;
    serde_json::from_slice(msg.into_vec().get(1)?).ok()
}

/// A SUB socket on `events` for `policy.denied`, once it gets them: sends
/// denied probes until one's event shows up (a subscription reaches the PUB
/// side some time after the connect).
async fn subscribe(events: &str, sock: &mut DealerSocket) -> SubSocket {
    let mut sub = SubSocket::new();
    sub.connect(events).await.expect("connect to the PUB socket");
    sub.subscribe("policy.denied").await.expect("subscribe");
    for n in 0..100 {
        let reply = util::ask(sock, util::exec_task(&format!("probe-{n}"), "sh", "rm -rf /nonexistent/probe")).await;
        denied(&reply, "delete_outside_scratch");
        if next_event(&mut sub, Duration::from_millis(100)).await.is_some() {
            while next_event(&mut sub, Duration::from_millis(100)).await.is_some() {}
            return sub;
        }
    }
    panic!("the SUB socket never got a policy.denied event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_snippets_are_denied_by_policy_and_allowed_ones_run() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    let (mut d, ingress, events) = Daemon::with_bus(&profile, dir.path(), &[], &[]).await;
    let mut sock = util::dealer(&ingress).await;
    let mut sub = subscribe(&events, &mut sock).await;

    // Files outside the scratch directory that the snippets target.
    let victim_sh = dir.path().join("victim-sh");
    let victim_py = dir.path().join("victim-py");
    for v in [&victim_sh, &victim_py] {
        std::fs::create_dir_all(v).unwrap();
        std::fs::write(v.join("keep.txt"), "keep").unwrap();
    }
    // A listener the network snippets would reach.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let risky = [
        ("rm", "sh", format!("rm -rf {}", victim_sh.display()), "delete_outside_scratch"),
        (
            "rmtree",
            "python",
            format!("import shutil\nshutil.rmtree({:?})", victim_py.display().to_string()),
            "delete_outside_scratch",
        ),
        ("bomb-sh", "sh", "bomb() { bomb | bomb & }\necho defined".to_string(), "fork_bomb"),
        ("bomb-py", "python", "import os\nwhile False:\n    os.fork()\nprint('no fork')".to_string(), "fork_bomb"),
        (
            "socket",
            "python",
            format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()"),
            "network",
        ),
        (
            "urllib",
            "python",
            format!("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)"),
            "network",
        ),
        ("curl", "sh", format!("curl -s -m 2 http://127.0.0.1:{port}/"), "network"),
    ];
    for (id, language, snippet, rule) in &risky {
        let message = denied(&util::ask(&mut sock, util::exec_task(id, language, snippet)).await, rule);
        assert!(message.starts_with("Executor: denied by policy"), "{message}");
        let event = next_event(&mut sub, WAIT).await.unwrap_or_else(|| panic!("no policy.denied event for {id}"));
        assert_eq!(
            (event["topic"].as_str(), event["id"].as_str(), event["agent"].as_str()),
            (Some("policy.denied"), Some(*id), Some("Executor")),
            "{event}"
        );
        assert_eq!(
            (event["type"].as_str(), event["rule"].as_str(), event["by"].as_str()),
            (Some("code.execute"), Some(*rule), Some("rule"))
        );
        assert!(event["reason"].as_str().is_some_and(|r| !r.is_empty() && message.ends_with(r)), "{event}");
        assert!(event["action"].as_str().is_some_and(|a| snippet.starts_with(a.trim_end_matches('…'))), "{event}");
    }
    // None of them ran.
    for v in [&victim_sh, &victim_py] {
        assert_eq!(std::fs::read_to_string(v.join("keep.txt")).unwrap(), "keep", "{} was touched", v.display());
    }
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a snippet connected");

    // Allowed snippets run and answer: harmless ones (by rule), and
    // scratch-directory file work (no rule decides: policy.undecided = allow).
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("six", "python", "print(6*7)")).await).clone();
    assert_eq!(out["stdout"], "42\n", "{out}");
    let out =
        util::exec_output(&util::ask(&mut sock, util::exec_task("look", "python", "print('rm -rf /')")).await).clone();
    assert_eq!(out["stdout"], "rm -rf /\n", "{out}");
    let py = "open('notes.txt', 'w').write('hello')\nprint(open('notes.txt').read())";
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("rw", "python", py)).await).clone();
    assert_eq!(out["stdout"], "hello\n", "{out}");
    let py = "import os\nopen('gone.txt', 'w').close()\nos.remove('gone.txt')\nprint('gone.txt' in os.listdir('.'))";
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("del-py", "python", py)).await).clone();
    assert_eq!(out["stdout"], "False\n", "{out}");
    let sh = "mkdir -p build && echo x > build/a.o && rm -rf build && ls";
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("del-sh", "sh", sh)).await).clone();
    assert_eq!((out["stdout"].as_str(), out["exit_code"].as_i64()), (Some("snippet.sh\n"), Some(0)), "{out}");
    assert!(next_event(&mut sub, Duration::from_millis(200)).await.is_none(), "an allowed snippet left policy.denied");

    let metrics = d.get_text("/metrics").await;
    let decisions = |decision: &str, by: &str| {
        sample(
            &metrics,
            "agentvisor_policy_decisions_total",
            &[("task_type", "code.execute"), ("decision", decision), ("by", by)],
        )
    };
    // The probes were denied too.
    assert!(decisions("deny", "rule") >= risky.len() as f64 + 1.0, "{metrics}");
    assert_eq!(decisions("allow", "rule"), 2.0, "print(6*7) and the look-alike are harmless");
    assert_eq!(decisions("allow", "default"), 3.0, "the scratch-directory snippets");
    assert!(
        sample(&metrics, "agentvisor_tasks_total", &[("agent", "Executor"), ("outcome", "denied_by_policy")]) >= 1.0,
        "{metrics}"
    );
    assert!(sample(&metrics, "agentvisor_events_total", &[("topic", "policy.denied")]) >= risky.len() as f64);
    d.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_snippets_go_to_the_validator_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    write_profile(dir.path());
    let fake = FakeOpenAi::start().await;
    let mut s = util::bus_settings(dir.path());
    s.profiles_dir = dir.path().to_path_buf();
    s.backends = [("local".to_string(), backend_settings(Tier::L1, "fake-local", fake.base_url()))].into();
    s.routing.content.enabled = false;
    s.cache.enabled = false;
    s.policy.undecided = Undecided::Model;
    let fleet = util::fleet(s, None, "policy").await;
    fleet.boot().await;
    let (ingress, _) = fleet.bus_endpoints().expect("bus bound");
    let mut sock = util::dealer(&ingress).await;
    let mut log = EventLog::new(&fleet);
    let undecided = "import os\nprint(os.getcwd() != '')";

    // The validator allows: the snippet runs.
    fake.push(Behaviour::AnswerJson(json!({"decision": "allow", "reason": "prints a boolean"})));
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("m1", "python", undecided)).await).clone();
    assert_eq!(out["stdout"], "True\n", "{out}");
    let asked = fake.requests();
    assert_eq!(asked.len(), 1, "one validation");
    assert!(asked[0].body.to_string().contains("os.getcwd()"), "the validator saw the snippet: {}", asked[0].body);

    // The validator denies: denied_by_policy with its reason.
    fake.push(Behaviour::AnswerJson(json!({"decision": "deny", "reason": "scripted: not what the user asked"})));
    let message = denied(&util::ask(&mut sock, util::exec_task("m2", "python", undecided)).await, "validator");
    assert!(message.contains("IntentionValidatorAgent denied it: scripted: not what the user asked"), "{message}");
    let e = log.wait_for(WAIT, "policy.denied m2", |e| e.topic == "policy.denied" && e.str("id") == Some("m2")).await;
    assert_eq!((e.str("rule"), e.str("by")), (Some("validator"), Some("model")));

    // The validator's model fails: denied, saying the validator could not decide.
    fake.push(Behaviour::Status(500));
    let message = denied(&util::ask(&mut sock, util::exec_task("m3", "python", undecided)).await, "validator_failed");
    assert!(message.contains("IntentionValidatorAgent could not decide"), "{message}");

    // Rules still decide first: no model call for a harmless or a risky snippet.
    let before = fake.requests().len();
    let out = util::exec_output(&util::ask(&mut sock, util::exec_task("m4", "python", "print(1)")).await).clone();
    assert_eq!(out["stdout"], "1\n");
    denied(&util::ask(&mut sock, util::exec_task("m5", "sh", "rm -rf /nonexistent/x")).await, "delete_outside_scratch");
    assert_eq!(fake.requests().len(), before, "the rules decided without the model");

    let metrics = fleet.services.metrics.render();
    let by_model = |decision: &str| {
        sample(
            &metrics,
            "agentvisor_policy_decisions_total",
            &[("task_type", "code.execute"), ("decision", decision), ("by", "model")],
        )
    };
    assert_eq!((by_model("allow"), by_model("deny")), (1.0, 2.0), "{metrics}");
    fleet.shutdown(Duration::from_secs(15)).await;
}
