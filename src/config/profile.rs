//! Profile resolution: which agents a run includes, which start at boot and
//! in which waves, which stay dormant (DESIGN §3).
//!
//! selected = agents of `include_groups` + `include_agents` +
//! `optional_agents.include` − `exclude_groups` − `exclude_agents`; then the
//! dependency closure is added, with a warning naming each agent pulled in.
//! Boot set = essential agents + `autoload_on_startup` + their dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::catalog::{Catalog, Problem, Problems};
use super::profile_spec::{OptionalAgents, ProfileMeta, ProfileSpec, StartupSpec};

/// A resolved profile: what `run` starts and `check` prints.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Profile name.
    pub name: String,
    /// Every agent of the run (selected + pulled in).
    pub agents: BTreeSet<String>,
    /// How many were selected before the dependency closure.
    pub selected: usize,
    /// Agents added by the closure: (agent, the selected agents needing it).
    pub pulled_in: Vec<(String, Vec<String>)>,
    /// Boot waves (essential + autoloaded + their dependencies).
    pub waves: Vec<Vec<String>>,
    /// On-demand agents left dormant at boot.
    pub dormant: Vec<String>,
    /// On-demand agents the profile autoloads.
    pub autoload: Vec<String>,
    /// Boot settings.
    pub startup: StartupSpec,
    /// Warnings (one per pulled-in agent).
    pub warnings: Vec<String>,
}

/// Reads `profiles/<name>.yaml`, or a path to a profile file. The name `all`
/// without a file selects every agent of the catalog.
///
/// # Errors
/// [`Problem::Parse`] / [`Problem::Profile`] when the file is missing or invalid.
pub fn load_profile(profiles_dir: &Path, name_or_path: &str) -> Result<ProfileSpec, Problems> {
    let as_path = PathBuf::from(name_or_path);
    let path = if as_path.extension().is_some_and(|e| e == "yaml" || e == "yml") || as_path.is_file() {
        as_path
    } else {
        profiles_dir.join(format!("{name_or_path}.yaml"))
    };
    if !path.is_file() {
        if name_or_path == "all" {
            return Ok(ProfileSpec {
                profile: ProfileMeta { name: "all".into(), description: "every agent of the catalog".into() },
                ..Default::default()
            });
        }
        return Err(Problems(vec![Problem::Profile {
            message: format!("profile {name_or_path} not found (looked for {})", path.display()),
        }]));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Problems(vec![Problem::Parse { file: path.clone(), message: e.to_string() }]))?;
    serde_norway::from_str(&text).map_err(|e| Problems(vec![Problem::Parse { file: path, message: e.to_string() }]))
}

/// Resolves `profile` against `catalog`.
///
/// # Errors
/// Every unknown group or agent the profile names, at once.
pub fn resolve(catalog: &Catalog, profile: &ProfileSpec) -> Result<Plan, Problems> {
    let sel = &profile.agent_selection;
    let mut problems = Vec::new();
    let all_groups = profile.profile.name == "all" && sel.include_groups.is_empty() && sel.include_agents.is_empty();
    let check_group = |g: &String, problems: &mut Vec<Problem>| {
        if !catalog.groups.contains_key(g) {
            problems
                .push(Problem::Profile { message: format!("unknown group {g} in profile {}", profile.profile.name) });
        }
    };
    let check_agent = |a: &String, problems: &mut Vec<Problem>| {
        if !catalog.agents.contains_key(a) {
            problems
                .push(Problem::Profile { message: format!("unknown agent {a} in profile {}", profile.profile.name) });
        }
    };
    sel.include_groups.iter().chain(&sel.exclude_groups).for_each(|g| check_group(g, &mut problems));
    sel.include_agents
        .iter()
        .chain(&sel.exclude_agents)
        .chain(&sel.autoload_on_startup)
        .for_each(|a| check_agent(a, &mut problems));

    let keep_optional = !matches!(sel.optional_agents, Some(OptionalAgents::Flag(false)));
    let mut chosen: BTreeSet<String> = catalog
        .agents
        .values()
        .filter(|s| all_groups || sel.include_groups.contains(&s.group))
        .filter(|s| keep_optional || s.required)
        .map(|s| s.name.clone())
        .collect();
    chosen.extend(sel.include_agents.iter().cloned());
    match &sel.optional_agents {
        Some(OptionalAgents::List { include }) => {
            include.iter().for_each(|a| check_agent(a, &mut problems));
            chosen.extend(include.iter().cloned());
        }
        Some(OptionalAgents::Word(w)) if w != "all" && w != "none" => problems.push(Problem::Profile {
            message: format!("optional_agents must be all, none, true, false or {{include: [...]}}, not {w}"),
        }),
        Some(OptionalAgents::Word(w)) if w == "none" => chosen.retain(|a| catalog.get(a).is_some_and(|s| s.required)),
        _ => {}
    }
    chosen.retain(|a| match catalog.get(a) {
        Some(s) => !sel.exclude_groups.contains(&s.group) && !sel.exclude_agents.contains(a),
        None => false,
    });
    for a in &sel.autoload_on_startup {
        if catalog.get(a).is_some() && !chosen.contains(a) && !sel.exclude_agents.contains(a) {
            chosen.insert(a.clone());
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let agents = catalog.closure(&chosen);
    let mut pulled_in = Vec::new();
    let mut warnings = Vec::new();
    for extra in agents.difference(&chosen) {
        let needed_by: Vec<String> =
            agents.iter().filter(|a| catalog.get(a).is_some_and(|s| s.dependencies.contains(extra))).cloned().collect();
        warnings.push(format!("{extra} pulled in by dependencies (needed by {})", needed_by.join(", ")));
        pulled_in.push((extra.clone(), needed_by));
    }
    let boot_roots: BTreeSet<String> = agents
        .iter()
        .filter(|a| catalog.get(a).is_some_and(|s| s.required) || sel.autoload_on_startup.contains(a))
        .cloned()
        .collect();
    let boot = catalog.closure(&boot_roots);
    let dormant = agents.difference(&boot).cloned().collect();
    Ok(Plan {
        name: profile.profile.name.clone(),
        selected: chosen.len(),
        waves: catalog.waves(&boot),
        agents,
        pulled_in,
        dormant,
        autoload: sel.autoload_on_startup.clone(),
        startup: profile.startup.clone(),
        warnings,
    })
}

impl Plan {
    /// Agents of the run, grouped by group (for the tree views).
    pub(crate) fn by_group(&self, catalog: &Catalog) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in &self.agents {
            if let Some(s) = catalog.get(a) {
                out.entry(s.group.clone()).or_default().push(a.clone());
            }
        }
        out
    }

    /// Number of agents started at boot.
    pub(crate) fn boot_count(&self) -> usize {
        self.waves.iter().map(Vec::len).sum()
    }
}
