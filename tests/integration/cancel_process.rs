//! Cancelling a task of a process agent: the client gets `cancelled` at
//! once and the program is told (`{"cancel": id}`): the Executor kills the
//! running snippet.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{self, dealer, recv_json, send_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_executor_task_kills_its_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("snippet.pid");
    // The snippet writes its pid outside its scratch directory, which the
    // policy gate refuses unless an allow pattern lets it through.
    let allow = regex::escape(&pidfile.display().to_string());
    let (fleet, ingress) = util::bus_fleet(dir.path(), "full", |s| s.policy.allow.push(allow)).await;
    let mut sock = dealer(&ingress).await;
    let code = format!(
        "import os, time\nopen({:?}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
        pidfile.display().to_string()
    );
    send_json(&mut sock, &json!({"id": "long", "type": "code.execute", "input": {"language": "python", "code": code}}))
        .await;
    util::poll_until(Duration::from_secs(20), "snippet started", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.is_empty())
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(util::pid_alive(pid));
    let t0 = Instant::now();
    send_json(&mut sock, &json!({"id": "c1", "cancel": "long"})).await;
    let mut replies = [recv_json(&mut sock).await, recv_json(&mut sock).await];
    replies.sort_by_key(|r| r["id"].as_str().unwrap_or("").to_string());
    assert_eq!(replies[0]["output"]["cancelled"], "long", "{replies:?}");
    assert_eq!(replies[1]["error"]["code"], "cancelled", "{replies:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    util::poll_until(Duration::from_secs(5), "snippet killed", || !util::pid_alive(pid)).await;
    // The agent itself keeps running and answers the next task.
    send_json(&mut sock, &json!({"id": "next", "type": "code.execute", "input": "print(1 + 1)"})).await;
    let r = recv_json(&mut sock).await;
    assert_eq!(r["output"]["stdout"], "2\n", "{r}");
    fleet.shutdown(Duration::from_secs(10)).await;
}
