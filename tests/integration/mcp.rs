//! The MCP server (issue 17) with the official MCP Python SDK as the client,
//! over stdio (`agentvisor mcp`, the real binary, spawned by the SDK) and
//! over streamable HTTP (`/mcp` on the daemon's HTTP server), against the
//! `full` profile on real actors and the real ZeroMQ bus; llm agents
//! answered by a real local OpenAI-compatible server (FakeOpenAi).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;

use crate::fake_openai::{Behaviour, FakeOpenAi, STREAM_PIECES, local_and_cloud};
use crate::util;

/// Every model call's answer: the arbiter reads it as its choice (the
/// specialist for `auto`); other agents answer it as text.
const ANSWER: &str = r#"{"specialist": "CodeGenerator", "reason": "scripted choice"}"#;

fn tool_name(task_type: &str) -> String {
    task_type.replace('.', "_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_python_sdk_uses_the_fleet_over_stdio_and_streamable_http() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behaviour::Answer(ANSWER.into()));
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| {
        local_and_cloud(s, &fake);
        // The light/heavy split of these calls is the rule one, not the content estimate.
        s.routing.content.enabled = false;
    })
    .await;
    let mut events = util::EventLog::new(&fleet);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = fleet.http_app();
    let stop = app.stop.clone();
    let server = tokio::spawn(agentvisor::http::serve(listener, agentvisor::http::router(app), async move {
        stop.cancelled().await
    }));

    let bin = util::bin();
    let data = dir.path().display().to_string();
    let url = format!("{base}/mcp");
    let args = [bin.to_str().unwrap(), ingress.as_str(), data.as_str(), url.as_str()];
    let Some(report) = util::python_report("mcp_client_check.py", &args, "mcp").await else { return };

    // What the run serves, asked over the bus.
    let mut bus = util::dealer(&ingress).await;
    let served = util::ask(&mut bus, json!({"id": "types", "type": "coordinator.tasks"})).await;
    assert_eq!(served["status"], "ok", "{served}");
    let types: Vec<&Value> = served["output"]["types"].as_array().unwrap().iter().collect();
    assert!(types.len() > 50, "the full profile serves most of the catalog: {}", types.len());
    let mut expected: BTreeSet<String> = types.iter().map(|t| tool_name(t["type"].as_str().unwrap())).collect();
    expected.extend(["fleet_status".to_string(), "agent_restart".to_string()]);

    let abc = hex::encode(sha2::Sha256::digest(b"abc"));
    for transport in ["stdio", "http"] {
        let r = &report[transport];
        let tools = r["tools"].as_object().unwrap();
        let names: BTreeSet<String> = tools.keys().cloned().collect();
        assert_eq!(names, expected, "{transport}: one tool per served type, plus fleet_status and agent_restart");
        for t in &types {
            let task_type = t["type"].as_str().unwrap();
            let tool = &tools[&tool_name(task_type)];
            assert_eq!(tool["title"], task_type, "{transport}: the title is the task type");
            let description = tool["description"].as_str().unwrap();
            assert!(description.contains(task_type), "{transport} {task_type}: {description}");
            let schema = &tool["input_schema"];
            assert_eq!(schema["type"], "object", "{transport} {task_type}: {schema}");
            assert!(schema["properties"]["_model"].is_object() && schema["properties"]["_prefer"].is_object());
            assert!(tool["output_schema"]["properties"]["output"].is_object(), "{transport} {task_type}");
        }
        // The schema comes from the task's: utils.hash's object form.
        let hash = &tools["utils_hash"]["input_schema"];
        assert_eq!(hash["properties"]["algorithm"]["enum"], json!(["sha256"]), "{hash}");
        assert_eq!(hash["required"], json!(["text"]), "{hash}");
        // simple_chat takes its text as `input`.
        assert_eq!(tools["simple_chat"]["input_schema"]["required"], json!(["input"]));

        // utils_hash with the example input.
        let h = &r["hash"];
        assert_eq!(h["example"], json!({"text": "abc", "algorithm": "sha256"}), "{h}");
        assert_eq!(h["structured"]["output"]["hex"], abc, "{h}");
        assert_eq!(h["structured"]["agent"], "UnifiedUtilsAgent", "{h}");
        assert!(h["text"][0].as_str().unwrap().contains(&abc), "{h}");

        // A streamed simple_chat: its chunks came as progress notifications.
        let s = &r["stream"];
        assert_eq!(s["structured"]["output"], ANSWER, "{s}");
        let progress = s["progress"].as_array().unwrap();
        assert_eq!(progress.len(), STREAM_PIECES, "{transport}: one notification per chunk: {s}");
        let streamed: String = progress.iter().map(|p| p["message"].as_str().unwrap()).collect();
        assert_eq!(streamed, ANSWER, "{s}");
        assert_eq!(s["structured"]["route"]["backend"], "local", "light task, routing chose the local tier: {s}");

        // `auto`: the arbiter chose, the specialist answered.
        let a = &r["auto"];
        assert_eq!(a["agent"], "ModelOrchestrator", "{a}");
        assert_eq!(a["output"]["specialist"], "CodeGenerator", "{a}");
        assert_eq!(a["output"]["answer"], ANSWER, "{a}");

        // `_model`: known is used (visible in the route); unknown is refused listing the known ones.
        let k = &r["model_known"];
        assert_eq!(
            (k["route"]["backend"].as_str(), k["route"]["model"].as_str()),
            (Some("cloud_fast"), Some("fake-cloud")),
            "{k}"
        );
        let u = &r["model_unknown"];
        assert_eq!(u["code"], -32602, "{u}");
        assert_eq!(u["data"]["code"], "invalid_field", "{u}");
        let message = u["message"].as_str().unwrap();
        assert!(message.contains("gpt-9") && message.contains("fake-local") && message.contains("cloud_fast"), "{u}");
        let w = &r["model_wrong_type"];
        assert_eq!((w["code"].as_i64(), w["data"]["code"].as_str()), (Some(-32602), Some("invalid_field")), "{w}");
        assert!(w["message"].as_str().unwrap().contains("_model"), "{w}");

        // The client gave up on utils_sleep 120 s.
        assert_eq!(r["cancel"]["cancelled"], true, "{}", r["cancel"]);

        // A schema violation names the field; the daemon goes on.
        let v = &r["violation"];
        assert_eq!((v["code"].as_i64(), v["data"]["code"].as_str()), (Some(-32602), Some("invalid_field")), "{v}");
        assert!(v["message"].as_str().unwrap().contains("/algorithm"), "{v}");
        assert_eq!(r["unknown_tool"]["data"]["code"], "unknown_task_type", "{}", r["unknown_tool"]);
        assert_eq!(r["after"]["output"]["hex"], hex::encode(sha2::Sha256::digest(b"after")));

        // fleet_status and the resources.
        let agents = fleet.ctx().plan.agents.len();
        assert_eq!(r["fleet"], json!({"profile": "full", "agents": agents}), "{transport}");
        assert_eq!(r["resources"], json!(["agentvisor://agents", "agentvisor://receipts"]));
        assert_eq!(r["tree"]["profile"], "full");
        assert_eq!(r["tree"]["agents"], agents);
        let receipts = r["receipts"].as_array().unwrap();
        assert!(receipts.iter().any(|x| x["backend"] == "cloud_fast"), "the _model call's receipt: {receipts:?}");
    }

    // Both cancellations reached the task: utils.sleep ended `cancelled` (task.cancelled).
    let cancelled = |e: &agentvisor::events::Published| {
        e.topic == "task.cancelled" && e.str("agent") == Some("UnifiedUtilsAgent") && e.str("code") == Some("cancelled")
    };
    util::poll_until(Duration::from_secs(20), "two cancelled utils.sleep tasks", || {
        events.drain();
        events.seen.iter().filter(|e| cancelled(e)).count() >= 2
    })
    .await;
    let status = util::ask(&mut bus, json!({"id": "st", "type": "coordinator.status"})).await;
    assert_eq!(
        (status["output"]["queued"].as_u64(), status["output"]["running"].as_u64()),
        (Some(0), Some(1)),
        "{status}"
    );

    // /v1: an unknown model name is routed as auto (http.strict_models is off).
    let http = reqwest::Client::new();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let resp = http.post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["x_agentvisor_route"]["backend"], "local", "{body}");

    server.abort();
    fleet.shutdown(Duration::from_secs(10)).await;
}
