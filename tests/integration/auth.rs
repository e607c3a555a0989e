//! Tokens on every door (issue 18): the real daemon binary, tokens made by
//! the real CLI and by task, and every door tried the way clients use it —
//! a ZeroMQ DEALER, HTTP with and without a Bearer token, the OpenAI-shaped
//! `/v1`, MCP's streamable HTTP, `agentvisor send` with `AGENTVISOR_TOKEN`.
//! At the end every log line, event, stored row (jobs and receipts
//! included) is searched for the tokens: none may appear.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_openai::FakeOpenAi;
use crate::util::{self, ask, dealer};

/// A test profile: the bus, the system and utility agents, AsyncProcessor
/// and AuthenticationAgent.
const PROFILE: &str = "profile: {name: auth-test}
agent_selection:
  include_groups: [infrastructure_registry, coordination_resource]
  include_agents: [UnifiedSystemAgent, UnifiedUtilsAgent, AsyncProcessor, AuthenticationAgent]
";

/// One daemon run whose stdout and stderr go to files.
struct Run {
    child: tokio::process::Child,
    base: String,
    ingress: String,
    events: String,
    logs: Vec<PathBuf>,
    http: reqwest::Client,
}

impl Run {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `agentvisor ARGS` in `cwd` with `env` (and no inherited AGENTVISOR_TOKEN).
async fn cli(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(util::bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("AGENTVISOR_TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the CLI runs")
}

/// `agentvisor token create --json`: `(token_id, token)`.
async fn create_token(dir: &Path, data: &Path, subject: &str, scopes: &str, extra: &[&str]) -> (String, String) {
    let data = data.display().to_string();
    let mut args = vec!["token", "create", "--data-dir", &data, "--subject", subject, "--scopes", scopes, "--json"];
    args.extend(extra);
    let out = cli(dir, &args, &[]).await;
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (v["token_id"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
}

/// Starts `run` with the test profile, logs to files under `dir`; `None`
/// with the child's exit status when it exits before listening.
async fn start(dir: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Run, (i32, String)> {
    let profile = dir.join("auth-test.yaml");
    std::fs::write(&profile, PROFILE).unwrap();
    let n = std::fs::read_dir(dir).unwrap().count();
    let (out_path, err_path) = (dir.join(format!("stdout-{n}.log")), dir.join(format!("stderr-{n}.log")));
    let mut cmd = tokio::process::Command::new(util::bin());
    cmd.args(["run", "--profile", &profile.display().to_string(), "--data-dir", &data.display().to_string()])
        .args(["--set", "bus.ingress=tcp://127.0.0.1:0", "--set", "bus.events=tcp://127.0.0.1:0"])
        .args([
            "--set",
            "auth.reload_secs=0.2",
            "--set",
            "auth.failure_burst=10",
            "--set",
            "auth.failures_per_minute=1",
        ])
        .args(if args.contains(&"--http-listen") { &[][..] } else { &["--http-listen", "127.0.0.1:0"][..] })
        .args(args)
        .current_dir(util::root())
        .env_remove("AGENTVISOR_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug,hyper=info,h2=info,reqwest=info")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("http: listening on ")) {
            break format!("http://{addr}");
        }
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            return Err((status.code().unwrap_or(-1), stderr));
        }
        assert!(Instant::now() < deadline, "the daemon listens within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::new();
    let health: Value = http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
    let ingress = health["bus"]["ingress"].as_str().expect("ingress").to_string();
    let events = health["bus"]["events"].as_str().expect("events").to_string();
    Ok(Run { child, base, ingress, events, logs: vec![out_path, err_path], http })
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("ok")
}

fn echo(id: &str, token: Option<&str>) -> Value {
    let mut v = json!({"id": id, "type": "utils.echo", "input": "hi"});
    if let Some(t) = token {
        v["token"] = json!(t);
    }
    v
}

/// Every event published while `run` is live, collected in the background.
fn collect_events(endpoint: String) -> tokio::task::JoinHandle<Vec<String>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = tokio::spawn(async move {
        use zeromq::{Socket, SocketRecv};
        let mut sub = zeromq::SubSocket::new();
        sub.connect(&endpoint).await.expect("connect PUB");
        sub.subscribe("").await.expect("subscribe");
        let _ = ready_tx.send(());
        let mut seen = Vec::new();
        while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
            for f in msg.into_vecdeque() {
                seen.push(String::from_utf8_lossy(&f).into_owned());
            }
        }
        seen
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    h
}

/// The answer of an MCP JSON-RPC request over streamable HTTP (JSON or
/// one SSE `data:` line), with the session id header when the server sets one.
async fn mcp(run: &Run, token: Option<&str>, session: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    let mut req = run
        .http
        .post(run.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let r = req.send().await.expect("mcp post");
    let status = r.status().as_u16();
    let sid = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or(Value::Null)
    });
    (status, sid, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_asks_for_a_token_with_the_scope_it_needs_and_no_token_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Tokens made by the CLI before the daemon runs.
    let (_, admin) = create_token(dir.path(), &data, "ops", "admin", &[]).await;
    let (_, tasks) = create_token(dir.path(), &data, "alice", "tasks,read", &["--name", "alice laptop"]).await;
    let (_, read) = create_token(dir.path(), &data, "grafana", "read", &[]).await;
    let (_, short) = create_token(dir.path(), &data, "temp", "tasks", &["--expires-in", "1"]).await;
    let (gone_id, gone) = create_token(dir.path(), &data, "bob", "tasks", &[]).await;
    let data_s = data.display().to_string();
    let out = cli(dir.path(), &["token", "revoke", &gone_id, "--data-dir", &data_s], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(dir.path(), &["token", "revoke", "tok_nosuch", "--data-dir", &data_s], &[]).await;
    assert_eq!(out.status.code(), Some(1), "an unknown id fails");
    let out = cli(dir.path(), &["token", "list", "--json", "--data-dir", &data_s], &[]).await;
    let listed: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().any(|t| t["token_id"] == gone_id.as_str() && t["revoked_at"].is_number()));
    assert!(listed.iter().any(|t| t["name"] == "alice laptop" && t["scopes"] == json!(["tasks", "read"])));
    let all_tokens = [&admin, &tasks, &read, &short, &gone];
    for t in all_tokens {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(t.as_str()), "list never shows a token");
    }

    // A fake model backend, so that a /v1 call leaves a receipt.
    let fake = FakeOpenAi::start().await;
    let config = dir.path().join("agentvisor.yaml");
    let backend = format!(
        "backends:\n  local: {{kind: openai, tier: L1, base_url: {}, model: fake-local, max_retries: 0}}\n",
        fake.base_url()
    );
    std::fs::write(&config, backend).unwrap();
    let config_s = config.display().to_string();
    let mut run = start(dir.path(), &data, &["--config", &config_s], &[]).await.expect("starts on loopback");
    let events = collect_events(run.events.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await; // `short` expires
    let mut s = dealer(&run.ingress).await;

    // The bus. Refused credentials count against their connection's failure
    // budget (10 in a row here), so each refused case uses a connection of its own.
    let once = async |v: Value| ask(&mut dealer(&run.ingress).await, v).await;
    assert_eq!(code(&once(echo("b1", None)).await), "unauthorized");
    let ok = ask(&mut s, echo("b2", Some(&tasks))).await;
    assert_eq!((code(&ok), &ok["output"]), ("ok", &json!("hi")), "{ok}");
    assert_eq!(code(&ask(&mut s, echo("b3", Some(&admin))).await), "ok", "admin allows everything");
    let r = once(echo("b4", Some(&short))).await;
    assert_eq!(code(&r), "unauthorized");
    assert!(r["error"]["message"].as_str().unwrap().contains("expired"), "{r}");
    let r = once(echo("b5", Some(&gone))).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("revoked"), "{r}");
    let r = ask(&mut s, echo("b6", Some(&read))).await;
    assert_eq!(code(&r), "forbidden", "a read token runs no task: {r}");
    let stop = json!({"id": "b7", "type": "system.stop", "input": {"agent": "UnifiedUtilsAgent"}, "token": tasks});
    let r = ask(&mut s, stop).await;
    assert_eq!(code(&r), "forbidden", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("admin"), "{r}");
    let wrapped = json!({"id": "b8", "type": "async.submit", "token": tasks,
        "input": {"task": {"type": "system.stop", "input": {"agent": "UnifiedUtilsAgent"}}}});
    assert_eq!(code(&ask(&mut s, wrapped).await), "forbidden", "a wrapped admin task needs admin too");
    let direct = json!({"id": "b9", "agent": "UnifiedSystemAgent", "input": {}, "token": tasks});
    assert_eq!(code(&ask(&mut s, direct).await), "forbidden", "an agent handling admin types needs admin");
    // Admin actions pass the policy gate too: no task stops an essential agent.
    let stop = json!({"id": "b9b", "type": "system.stop", "input": "RequestCoordinator", "token": admin});
    let r = ask(&mut s, stop).await;
    assert_eq!(code(&r), "denied_by_policy", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("essential_agent"), "{r}");
    let status = json!({"id": "b10", "type": "system.status", "input": "UnifiedUtilsAgent", "token": admin});
    assert_eq!(code(&ask(&mut s, status).await), "ok");
    // A stored job (its row must not hold the token) and the subject as user.
    let job = json!({"id": "b11", "type": "async.submit", "token": tasks, "user": "mallory",
        "input": {"task": {"type": "utils.echo", "input": "stored"}}});
    let r = ask(&mut s, job).await;
    assert_eq!(code(&r), "ok", "{r}");
    let cancel = json!({"cancel": "nothing-running", "token": "av_wrong"});
    assert_eq!(code(&once(cancel).await), "unauthorized", "cancels are checked too");

    // HTTP.
    let get = |path: &str, token: Option<&str>| {
        let mut r = run.http.get(run.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/health", None).await.unwrap().status(), 200, "/health stays open");
    assert_eq!(get("/metrics", None).await.unwrap().status(), 200, "a loopback listener serves /metrics");
    let r = get("/agents", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(get("/agents", Some(&read)).await.unwrap().status(), 200);
    assert_eq!(get("/tasks", Some(&tasks)).await.unwrap().status(), 200, "any valid token reads");
    assert_eq!(get("/agents", Some(&gone)).await.unwrap().status(), 401);
    let restart =
        |token: &str| run.http.post(run.url("/agents/UnifiedUtilsAgent/restart")).bearer_auth(token.to_string()).send();
    let r = restart(&tasks).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    assert_eq!(restart(&admin).await.unwrap().status(), 200);
    // /v1, in OpenAI's error shape.
    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    let r = run.http.post(run.url("/v1/chat/completions")).json(&chat).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
        (Some("unauthorized"), Some("invalid_request_error"))
    );
    let r = run.http.post(run.url("/v1/chat/completions")).bearer_auth(&read).json(&chat).send().await.unwrap();
    assert_eq!(r.status(), 403, "a read token cannot call models");
    let chat_as = json!({"model": "auto", "user": "mallory", "messages": [{"role": "user", "content": "hi"}]});
    let r = run.http.post(run.url("/v1/chat/completions")).bearer_auth(&tasks).json(&chat_as).send().await.unwrap();
    assert_eq!(r.status(), 200, "a tasks token passes the door");
    assert_eq!(get("/v1/models", None).await.unwrap().status(), 401);
    // MCP over streamable HTTP: the door, then each tool's scope on the bus.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "auth-test", "version": "1"}}});
    let (status, _, _) = mcp(&run, None, None, init.clone()).await;
    assert_eq!(status, 401);
    let (status, sid, body) = mcp(&run, Some(&tasks), None, init).await;
    assert_eq!(status, 200, "{body}");
    let sid = sid.expect("a session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    mcp(&run, Some(&tasks), Some(&sid), note).await;
    let call = |name: &str, args: Value| json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": args}});
    let (_, _, body) = mcp(&run, Some(&tasks), Some(&sid), call("utils_echo", json!({"input": "via mcp"}))).await;
    assert!(body["result"].is_object(), "a tasks token runs a tool: {body}");
    let (_, _, body) =
        mcp(&run, Some(&tasks), Some(&sid), call("system_stop", json!({"agent": "UnifiedUtilsAgent"}))).await;
    assert_eq!(body["error"]["data"]["code"], "forbidden", "an admin tool needs admin: {body}");

    // The CLI with AGENTVISOR_TOKEN, and without.
    let out = cli(
        dir.path(),
        &["send", "utils.echo", "from the cli", "--endpoint", &run.ingress],
        &[("AGENTVISOR_TOKEN", &tasks)],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from the cli", "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(dir.path(), &["send", "utils.echo", "x", "--endpoint", &run.ingress], &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"), "{out:?}");

    // Brute force: a connection guessing tokens is cut off after the burst
    // (10), even with a valid token then; another connection is not.
    let mut guesser = dealer(&run.ingress).await;
    let mut codes = Vec::new();
    for i in 0..13 {
        let r = ask(&mut guesser, echo(&format!("g{i}"), Some(&format!("av_{i:064}")))).await;
        codes.push(code(&r).to_string());
    }
    assert_eq!(codes[..10], ["unauthorized"; 10]);
    assert_eq!(codes[10..], ["rate_limited"; 3], "{codes:?}");
    assert_eq!(code(&ask(&mut guesser, echo("g-valid", Some(&tasks))).await), "rate_limited");
    assert_eq!(code(&ask(&mut s, echo("b12", Some(&tasks))).await), "ok", "other clients go on");
    let metrics = get("/metrics", None).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"agentvisor_auth_failures_total{door="bus",reason="rate_limited"}"#), "{metrics}");
    assert!(metrics.contains(r#"agentvisor_auth_failures_total{door="http",reason="scope"}"#), "{metrics}");
    // Over HTTP the client is the IP address (5 failures so far): guesses
    // run into 429 within the burst, and then a valid token does too.
    let mut guesses = 0;
    while get("/agents", Some("av_guess")).await.unwrap().status() == 401 {
        guesses += 1;
        assert!(guesses <= 10, "the burst bounds the guesses");
    }
    let r = get("/agents", Some(&read)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // No token anywhere: logs, events, the store (jobs, receipts, tokens).
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        let pid = run.child.id().unwrap() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
        run.child.wait().await.unwrap()
    })
    .await
    .expect("stops");
    assert!(status.success(), "{status:?}");
    let events = events.await.unwrap();
    assert!(events.iter().any(|e| e.contains("task.accepted")), "events were seen");
    assert!(events.iter().any(|e| e.contains("\"user\":\"alice\"")), "the token's subject is the user");
    assert!(!events.iter().any(|e| e.contains("mallory")), "the envelope's own user gives way to the subject");
    let out = cli(dir.path(), &["receipts", "--json", "--data-dir", &data_s], &[]).await;
    let receipts: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(receipts.iter().any(|r| r["user"] == "alice"), "the /v1 receipt names the subject: {receipts:?}");
    assert!(!receipts.iter().any(|r| r["user"] == "mallory"));
    let mut haystacks: Vec<(String, Vec<u8>)> =
        events.into_iter().map(|e| ("event".to_string(), e.into_bytes())).collect();
    for path in run.logs.iter().cloned().chain(walk(&data)) {
        haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    let logs = String::from_utf8_lossy(&haystacks.iter().find(|(p, _)| p.contains("stderr")).unwrap().1).into_owned();
    assert!(logs.contains("request refused"), "refusals are logged");
    for token in all_tokens {
        let hex_part = token.trim_start_matches("av_");
        for (place, bytes) in &haystacks {
            assert!(!contains(bytes, hex_part.as_bytes()), "a token appears in {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_by_task_work_at_once_and_sessions_follow_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let static_token = "static-operator-token-0123456789abcdef";
    let run = start(dir.path(), &data, &[], &[("AGENTVISOR_TOKEN", static_token)]).await.expect("starts");
    let mut s = dealer(&run.ingress).await;
    let task =
        |id: &str, t: &str, input: Value, token: &str| json!({"id": id, "type": t, "input": input, "token": token});
    assert_eq!(code(&ask(&mut s, echo("e0", None)).await), "unauthorized", "a static token locks the doors");
    let r =
        ask(&mut s, task("c1", "auth.token_create", json!({"subject": "carol", "scopes": ["tasks"]}), static_token))
            .await;
    assert_eq!(code(&r), "ok", "{r}");
    let (carol_id, carol) =
        (r["output"]["token_id"].as_str().unwrap().to_string(), r["output"]["token"].as_str().unwrap().to_string());
    assert!(carol.starts_with("av_") && carol.len() == 67, "{carol}");
    assert_eq!(code(&ask(&mut s, echo("e1", Some(&carol))).await), "ok", "usable at once");
    let r = ask(&mut s, task("c2", "auth.token_create", json!({"subject": "eve", "scopes": ["admin"]}), &carol)).await;
    assert_eq!(code(&r), "forbidden", "making tokens needs admin");
    let r = ask(&mut s, task("v1", "auth.token_verify", json!({"token": carol}), &carol)).await;
    assert_eq!((r["output"]["valid"].as_bool(), r["output"]["subject"].as_str()), (Some(true), Some("carol")), "{r}");
    let r = ask(&mut s, task("v2", "auth.token_verify", json!({"token": "av_nope"}), &carol)).await;
    assert_eq!(r["output"], json!({"valid": false, "reason": "unknown"}));
    // A session for the web UI: its id works as a Bearer credential.
    let r = ask(&mut s, task("s1", "auth.session", json!({"token": carol, "ttl_seconds": 600}), &carol)).await;
    let session = r["output"]["session_id"].as_str().expect("session id").to_string();
    let agents = |cred: String| run.http.get(run.url("/agents")).bearer_auth(cred).send();
    assert_eq!(agents(session.clone()).await.unwrap().status(), 200);
    let with_cookie =
        run.http.get(run.url("/agents")).header("cookie", format!("theme=dark; agentvisor_session={session}"));
    assert_eq!(with_cookie.send().await.unwrap().status(), 200, "the session cookie opens the door too");
    // Revoked: the token and its session stop at once.
    let r = ask(&mut s, task("r1", "auth.token_revoke", json!({"token_id": carol_id}), static_token)).await;
    assert_eq!(r["output"], json!({"token_id": carol_id, "revoked": true}));
    assert_eq!(code(&ask(&mut s, echo("e2", Some(&carol))).await), "unauthorized");
    assert_eq!(agents(session).await.unwrap().status(), 401);
    let r = ask(&mut s, task("r2", "auth.token_revoke", json!({"token_id": carol_id}), static_token)).await;
    assert_eq!(r["output"]["revoked"], false, "already revoked");
    // Bad input: stable codes.
    let r = ask(&mut s, task("r3", "auth.token_revoke", json!({"token_id": "tok_nosuch"}), static_token)).await;
    assert_eq!(code(&r), "not_found");
    let r =
        ask(&mut s, task("c3", "auth.token_create", json!({"subject": "x", "scopes": ["root"]}), static_token)).await;
    assert_eq!(code(&r), "invalid_field");
    let r = ask(&mut s, task("c4", "auth.token_create", json!({"subject": "x", "scopes": []}), static_token)).await;
    assert_eq!(code(&r), "invalid_field");
    let r = ask(&mut s, task("s2", "auth.session", json!({"token": carol}), static_token)).await;
    assert_eq!(code(&r), "unauthorized", "no session for a revoked token");
    // Clients from their own ecosystems: pyzmq (the example client) and openai.
    let v1 = format!("{}/v1", run.base);
    if let Some(r) = util::python_report("auth_clients_check.py", &[&run.ingress, &v1, static_token], "openai").await {
        assert_eq!(
            r["zmq"],
            json!({"none": "unauthorized", "wrong": "unauthorized", "valid": "ok", "output": "hi", "env": "ok"}),
            "{r}"
        );
        assert_eq!(r["openai"]["wrong"], json!({"status": 401, "code": "unauthorized"}), "{r}");
        assert!(r["openai"]["valid"]["models"].is_array(), "{r}");
    }
    let static_id = ask(&mut s, task("v3", "auth.token_verify", json!({"token": static_token}), static_token)).await
        ["output"]["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = ask(&mut s, task("r4", "auth.token_revoke", json!({"token_id": static_id}), static_token)).await;
    assert_eq!(code(&r), "invalid_field", "a static token is removed from its file, not revoked: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_reachable_from_other_hosts_needs_a_token_and_the_pub_socket_stays_local() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wide = ["--http-listen", "0.0.0.0:0"];
    let (status, stderr) = match start(dir.path(), &data, &wide, &[]).await {
        Err(e) => e,
        Ok(_) => panic!("a non-loopback listener without tokens must not start"),
    };
    assert_ne!(status, 0);
    assert!(stderr.contains("no API token exists") && stderr.contains("agentvisor token create"), "{stderr}");
    let token = "a-long-enough-secret-for-the-docker-image-0001";
    let run = start(dir.path(), &data, &wide, &[("AGENTVISOR_TOKEN", token)]).await.expect("starts with a token");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(run.http.get(run.url("/agents")).send().await.unwrap()), 401);
    assert_eq!(status(run.http.get(run.url("/agents")).bearer_auth(token).send().await.unwrap()), 200);
    assert_eq!(status(run.http.get(run.url("/metrics")).send().await.unwrap()), 401, "metrics need read off loopback");
    assert_eq!(status(run.http.get(run.url("/health")).send().await.unwrap()), 200, "the HEALTHCHECK stays open");
    drop(run);
    let pub_wide = ["--set", "bus.events=tcp://0.0.0.0:0"];
    let (_, stderr) = match start(dir.path(), &data, &pub_wide, &[("AGENTVISOR_TOKEN", token)]).await {
        Err(e) => e,
        Ok(_) => panic!("a PUB socket off loopback must not start"),
    };
    assert!(stderr.contains("PUB socket cannot authenticate"), "{stderr}");
    let (_, stderr) = match start(dir.path(), &data, &[], &[("AGENTVISOR_TOKEN", "short")]).await {
        Err(e) => e,
        Ok(_) => panic!("a short static token must not start"),
    };
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
