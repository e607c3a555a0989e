//! `agentvisor agents`: list a profile's agents.
//!
//! Prints a table (agent, group, runtime, boot or on-demand start, handled
//! task types, dependencies), or with `--tree` the supervision tree (root,
//! groups with their restart strategy, agents). A profile that does not
//! resolve prints `error: PROBLEMS` on stdout and exits 1.

use super::{Cli, ProfileArgs};
use crate::config::catalog::Catalog;
use crate::config::profile::Plan;
use crate::daemon;

/// Lists the agents of `profile` as a table, or as a tree when `tree`; exit
/// code 0, or 1 when the profile does not resolve.
pub(super) fn agents(cli: &Cli, profile: &ProfileArgs, tree: bool) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    match daemon::load_plan(&settings, profile.catalog.as_deref(), &profile.profile) {
        Ok((catalog, plan)) => {
            if tree {
                print_tree(&catalog, &plan);
            } else {
                print_table(&catalog, &plan);
            }
            Ok(0)
        }
        Err(problems) => {
            println!("error: {problems}");
            Ok(1)
        }
    }
}

/// One line per agent of the plan, under a header.
fn print_table(catalog: &Catalog, plan: &Plan) {
    println!("{:<30} {:<24} {:<9} {:<10} {:<40} DEPENDENCIES", "AGENT", "GROUP", "RUNTIME", "START", "HANDLES");
    for name in &plan.agents {
        let Some(s) = catalog.get(name) else { continue };
        let start = if plan.dormant.contains(name) { "on_demand" } else { "boot" };
        println!(
            "{:<30} {:<24} {:<9} {:<10} {:<40} {}",
            s.name,
            s.group,
            s.runtime.kind().as_str(),
            start,
            s.handles.join(","),
            s.dependencies.join(",")
        );
    }
}

/// The supervision tree: root, groups (with their strategy), agents.
fn print_tree(catalog: &Catalog, plan: &Plan) {
    println!("agentvisor (root supervisor, profile {})", plan.name);
    let groups = plan.by_group(catalog);
    let n = groups.len();
    for (i, (group, agents)) in groups.iter().enumerate() {
        let strategy = catalog.groups.get(group).map(|g| g.strategy.as_str()).unwrap_or("one_for_one");
        let (branch, indent) = if i + 1 == n { ("└──", "    ") } else { ("├──", "│   ") };
        println!("{branch} group: {group} ({strategy})");
        for (j, a) in agents.iter().enumerate() {
            let Some(s) = catalog.get(a) else { continue };
            let leaf = if j + 1 == agents.len() { "└──" } else { "├──" };
            let start = if plan.dormant.contains(a) { "on demand" } else { "boot" };
            println!("{indent}{leaf} {a} [{}, {start}]", s.runtime.kind().as_str());
        }
    }
}
