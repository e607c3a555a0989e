//! `agentvisor check`: resolve and validate a profile.
//!
//! Prints the catalog size, the profile's agents (selected and pulled in by
//! dependencies), warnings, the boot waves and the dormant agents, then
//! `ok: no problems` (exit 0); on problems prints `error: PROBLEMS` on stdout
//! and exits 1.

use super::{Cli, ProfileArgs};
use crate::config::catalog::Catalog;
use crate::config::profile::Plan;
use crate::{agents, daemon};

/// Checks `profile`; exit code 0 when it resolves, 1 on any problem.
pub(super) fn check(cli: &Cli, profile: &ProfileArgs) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    match daemon::load_plan(&settings, profile.catalog.as_deref(), &profile.profile) {
        Ok((catalog, plan)) => {
            // Task schemas: an invalid declaration is a problem; a handled type
            // without one takes any input (a warning).
            let tasks = agents::task_table(&catalog);
            for t in &tasks.undeclared {
                println!("warning: {t}: no task schema (neither in Rust nor under tasks:); it takes any input");
            }
            if !tasks.problems.is_empty() {
                println!("error: {} task schema problems:", tasks.problems.len());
                for p in &tasks.problems {
                    println!("  [task_schema] {p}");
                }
                return Ok(1);
            }
            print_check(&catalog, &plan);
            Ok(0)
        }
        Err(problems) => {
            println!("error: {problems}");
            Ok(1)
        }
    }
}

/// Prints the report of a profile that resolved.
fn print_check(catalog: &Catalog, plan: &Plan) {
    println!("catalog: {} agents in {} groups", catalog.agents.len(), catalog.groups.len());
    println!(
        "profile {}: {} agents ({} selected + {} pulled in by dependencies)",
        plan.name,
        plan.agents.len(),
        plan.selected,
        plan.pulled_in.len()
    );
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    println!(
        "boot: {} agents in {} waves (parallel_starts {})",
        plan.boot_count(),
        plan.waves.len(),
        plan.startup.parallel_starts
    );
    for (i, wave) in plan.waves.iter().enumerate() {
        println!("  wave {}: {}", i + 1, wave.join(", "));
    }
    println!("dormant (on demand): {} agents", plan.dormant.len());
    if !plan.dormant.is_empty() {
        println!("  {}", plan.dormant.join(", "));
    }
    println!("ok: no problems");
}
