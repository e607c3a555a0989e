//! `agentvisor tasks`: every task type of the catalog with its agent,
//! runtime and summary; `--json` prints `[{"type", "agent", "runtime",
//! "summary", "input_schema", "output_schema", "example"}]` (what `GET /tasks`
//! serves), `--markdown` the reference `docs/tasks.md` is generated from.
//! Exit 1 when a declaration is invalid or a handled type has no schema
//! (listed on stderr).

use std::path::Path;

use super::Cli;
use crate::agents::{self, tasks::Assembly};
use crate::config::catalog::Catalog;

/// Lists the task types of the catalog at `catalog` (default: `agents_dir`).
pub(super) fn tasks(cli: &Cli, catalog: Option<&Path>, json: bool, markdown: bool) -> anyhow::Result<i32> {
    let settings = cli.settings(&[])?;
    let catalog = match Catalog::load(catalog.unwrap_or(&settings.agents_dir)) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("error: {problems}");
            return Ok(1);
        }
    };
    let Assembly { table, problems, undeclared } = agents::task_table(&catalog);
    if json {
        println!("{}", serde_json::to_string_pretty(&table.to_json())?);
    } else if markdown {
        print!("{}", table.markdown());
    } else {
        for def in table.iter() {
            println!("{:<34} {:<28} {:<8} {}", def.task_type, def.agent, def.runtime, def.summary);
        }
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    for t in &undeclared {
        eprintln!("error: {t}: no schema (neither in Rust nor under tasks:)");
    }
    Ok(if problems.is_empty() && undeclared.is_empty() { 0 } else { 1 })
}
