//! `agentvisor check`: the true sizes of the four profiles, and every
//! catalog problem reported at once.

use std::process::Command;

use crate::util::{bin, builtin, root, write_catalog};

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).arg("check").args(args).current_dir(root()).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn reference_profiles_resolve_to_their_true_sizes() {
    for (profile, total, selected, pulled) in
        [("core", 14, 14, 0), ("vision", 21, 18, 3), ("learning", 34, 34, 0), ("full", 77, 77, 0)]
    {
        let (code, out) = check(&["--profile", profile]);
        assert_eq!(code, 0, "{out}");
        let expected =
            format!("profile {profile}: {total} agents ({selected} selected + {pulled} pulled in by dependencies)");
        assert!(out.contains(&expected), "expected `{expected}` in:\n{out}");
        assert!(out.contains("ok: no problems"), "{out}");
    }
    let (_, out) = check(&["--profile", "vision"]);
    for agent in ["ObservabilityHub_PC2", "MemoryOrchestratorService", "CacheManager"] {
        assert!(out.contains(&format!("warning: {agent} pulled in by dependencies")), "{agent} not named in:\n{out}");
    }
    // Boot waves put dependencies first: ServiceRegistry is in wave 1.
    let (_, out) = check(&["--profile", "core"]);
    assert!(out.contains("wave 1: ServiceRegistry"), "{out}");
}

#[test]
fn a_broken_catalog_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let agents = write_catalog(
        dir.path(),
        &[
            &builtin("CycleA", "g1", true, &["CycleB"]),
            &builtin("CycleB", "g1", true, &["CycleA"]),
            &builtin("Lonely", "g1", true, &["DoesNotExist"]),
            &builtin("Dup", "g1", true, &[]),
            &builtin("Dup", "g2", true, &[]),
            "name: Typo\ngroup: g2\nrequired: true\nruntime: {kind: builtin}\nrestrat: {type: permanent}\n",
        ],
    );
    let (code, out) = check(&["--profile", "all", "--catalog", agents.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[dependency_cycle] dependency cycle: CycleA -> CycleB -> CycleA"), "{out}");
    assert!(out.contains("[unknown_dependency] Lonely depends on DoesNotExist"), "{out}");
    assert!(out.contains("[duplicate_name] agent name Dup is defined more than once"), "{out}");
    assert!(out.contains("unknown field `restrat`"), "{out}");
    assert!(out.contains("4 problem(s)"), "{out}");
}

#[test]
fn task_schema_problems_fail_check_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = [
        "name: Shouter",
        "group: g1",
        "required: true",
        "handles: [shout, whisper]",
        "tasks:",
        "  shout:",
        "    summary: shout a text",
        "    input_schema: {type: string, minLength: 1}",
        "    output_schema: {type: string}",
        "    examples: [42]",
        "runtime: {kind: process, command: []}",
    ]
    .join("\n");
    let agents = write_catalog(dir.path(), &[&spec]);
    let (code, out) = check(&["--profile", "all", "--catalog", agents.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[task_schema]") && out.contains("shout"), "the bad example is named:\n{out}");
    assert!(out.contains("warning: whisper (Shouter): no task schema"), "the undeclared type is named:\n{out}");
    let out = Command::new(bin()).args(["tasks", "--catalog", agents.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unknown_profile_and_agents_command() {
    let (code, out) = check(&["--profile", "nope"]);
    assert_eq!(code, 1);
    assert!(out.contains("profile nope not found"), "{out}");

    let out = Command::new(bin()).args(["agents", "--profile", "core", "--tree"]).current_dir(root()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("group: speech_io (rest_for_one)"), "{text}");
    assert!(text.contains("TTSService [process, boot]"), "{text}");
    let out = Command::new(bin()).args(["agents", "--profile", "full"]).current_dir(root()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 78, "header + 77 agents:\n{text}");
}

#[test]
fn settings_layer_environment_over_file_and_reject_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("tiny.yaml"),
        "profile: {name: tiny}\nagent_selection: {include_agents: [ObservabilityHub]}\n",
    )
    .unwrap();
    let cfg = dir.path().join("agentvisor.yaml");
    std::fs::write(&cfg, format!("agents_dir: {}\nprofiles_dir: /nonexistent\n", root().join("agents").display()))
        .unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(bin())
            .args(["--config", cfg.to_str().unwrap(), "check", "--profile", "tiny"])
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    // The file's profiles_dir does not exist: the profile is not found.
    let (code, out) = run(&[]);
    assert_eq!(code, Some(1), "{out}");
    // The environment wins over the file.
    let (code, out) = run(&[("AGENTVISOR__PROFILES_DIR", profiles.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("profile tiny: 2 agents (1 selected + 1 pulled in by dependencies)"), "{out}");
    // An unknown key is an error, naming it.
    let (code, out) = run(&[("AGENTVISOR__HTTP__LISTNE", "x")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("listne"), "{out}");
}
