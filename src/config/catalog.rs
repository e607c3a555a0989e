//! The catalog: every agent spec, loaded from `agents/<group>/<Agent>.yaml`
//! (or the earlier system's single file, see [`crate::config::legacy`]) and
//! validated as a whole.
//!
//! Validation reports every problem at once (unknown key, unknown
//! dependency, cycle, duplicate name, essential agent depending on an
//! on-demand one, two agents claiming a task type, a task schema for a type
//! the agent does not handle), as DESIGN §3 asks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::spec::{AgentSpec, Autoload, GroupSpec};

/// One problem found in a catalog or profile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A file could not be read or parsed (unknown keys land here too).
    Parse {
        /// The file.
        file: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Two specs use the same agent name.
    DuplicateName {
        /// The name.
        name: String,
        /// Where each one came from.
        files: Vec<PathBuf>,
    },
    /// A file's name, or its folder, does not match the spec inside.
    Misplaced {
        /// The file.
        file: PathBuf,
        /// What does not match.
        message: String,
    },
    /// A dependency names no agent of the catalog.
    UnknownDependency {
        /// The agent.
        agent: String,
        /// The missing dependency.
        dependency: String,
    },
    /// Dependencies form a cycle (the path, first name repeated at the end).
    Cycle {
        /// The agents on the cycle.
        path: Vec<String>,
    },
    /// An essential agent depends on an on-demand one.
    EssentialOnDemand {
        /// The essential agent.
        agent: String,
        /// Its on-demand dependency.
        dependency: String,
    },
    /// Two or more agents claim a task type without distinct priorities.
    TaskTypeConflict {
        /// The task type.
        task_type: String,
        /// The claimants.
        agents: Vec<String>,
    },
    /// A `tasks` entry names a type the agent does not list in `handles`.
    TaskSchema {
        /// The agent.
        agent: String,
        /// The task type of the entry.
        task_type: String,
    },
    /// `required` and `autoload` disagree.
    AutoloadMismatch {
        /// The agent.
        agent: String,
    },
    /// A profile names something the catalog lacks, or is otherwise invalid.
    Profile {
        /// What is wrong.
        message: String,
    },
}

impl Problem {
    /// Stable code of the problem kind.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Parse { .. } => "parse_error",
            Problem::DuplicateName { .. } => "duplicate_name",
            Problem::Misplaced { .. } => "misplaced_spec",
            Problem::UnknownDependency { .. } => "unknown_dependency",
            Problem::Cycle { .. } => "dependency_cycle",
            Problem::EssentialOnDemand { .. } => "essential_depends_on_on_demand",
            Problem::TaskTypeConflict { .. } => "task_type_conflict",
            Problem::TaskSchema { .. } => "task_schema",
            Problem::AutoloadMismatch { .. } => "autoload_mismatch",
            Problem::Profile { .. } => "profile_error",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.code())?;
        match self {
            Problem::Parse { file, message } => write!(f, "{}: {message}", file.display()),
            Problem::DuplicateName { name, files } => {
                let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                write!(f, "agent name {name} is defined more than once: {}", files.join(", "))
            }
            Problem::Misplaced { file, message } => write!(f, "{}: {message}", file.display()),
            Problem::UnknownDependency { agent, dependency } => {
                write!(f, "{agent} depends on {dependency}, which is not in the catalog")
            }
            Problem::Cycle { path } => write!(f, "dependency cycle: {}", path.join(" -> ")),
            Problem::EssentialOnDemand { agent, dependency } => {
                write!(f, "essential agent {agent} depends on on-demand agent {dependency}")
            }
            Problem::TaskTypeConflict { task_type, agents } => {
                write!(f, "task type {task_type} is claimed by {} without distinct priorities", agents.join(", "))
            }
            Problem::TaskSchema { agent, task_type } => {
                write!(f, "{agent} declares a schema under tasks for {task_type}, which is not in its handles")
            }
            Problem::AutoloadMismatch { agent } => {
                write!(f, "{agent}: required: true cannot go with autoload: on_demand")
            }
            Problem::Profile { message } => write!(f, "{message}"),
        }
    }
}

/// Every problem of a catalog or profile, reported together.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

/// A validated catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Agent specs by name.
    pub agents: BTreeMap<String, Arc<AgentSpec>>,
    /// Group settings by name (groups without `_group.yaml` get defaults).
    pub groups: BTreeMap<String, GroupSpec>,
    /// The project root: process agents run here.
    pub root: PathBuf,
    /// Task type → the agent that answers it.
    pub handlers: BTreeMap<String, String>,
}

impl Catalog {
    /// Loads a catalog from `path`: a folder of `<group>/<Agent>.yaml` files,
    /// or one file in the earlier system's `agent_groups:` format.
    ///
    /// # Errors
    /// Every problem found, at once.
    pub fn load(path: &Path) -> Result<Catalog, Problems> {
        if path.is_file() {
            let legacy = super::legacy::read(path)
                .map_err(|message| Problems(vec![Problem::Parse { file: path.to_path_buf(), message }]))?;
            return Catalog::build(legacy.specs, legacy.groups, legacy.base, Vec::new());
        }
        if !path.is_dir() {
            return Err(Problems(vec![Problem::Parse {
                file: path.to_path_buf(),
                message: "catalog not found (expected a folder of agent specs or a startup_config file)".into(),
            }]));
        }
        let mut problems = Vec::new();
        let mut specs: Vec<(PathBuf, AgentSpec)> = Vec::new();
        let mut groups = BTreeMap::new();
        let mut group_dirs: Vec<PathBuf> =
            read_dir_sorted(path, &mut problems).into_iter().filter(|p| p.is_dir()).collect();
        group_dirs.sort();
        for dir in group_dirs {
            let group_name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            for file in read_dir_sorted(&dir, &mut problems) {
                let is_yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if !is_yaml {
                    continue;
                }
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let text = match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(Problem::Parse { file: file.clone(), message: e.to_string() });
                        continue;
                    }
                };
                if stem == "_group" {
                    match serde_norway::from_str::<GroupSpec>(&text) {
                        Ok(g) => {
                            groups.insert(group_name.clone(), g);
                        }
                        Err(e) => problems.push(Problem::Parse { file: file.clone(), message: e.to_string() }),
                    }
                    continue;
                }
                match serde_norway::from_str::<AgentSpec>(&text) {
                    Ok(spec) => {
                        if spec.name != stem {
                            problems.push(Problem::Misplaced {
                                file: file.clone(),
                                message: format!("file name should be {}.yaml", spec.name),
                            });
                        }
                        if spec.group != group_name {
                            problems.push(Problem::Misplaced {
                                file: file.clone(),
                                message: format!("agent of group {} is in folder {group_name}", spec.group),
                            });
                        }
                        specs.push((file, spec));
                    }
                    Err(e) => problems.push(Problem::Parse { file, message: e.to_string() }),
                }
            }
        }
        let root = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Catalog::build(specs, groups, root, problems)
    }

    /// Validates parsed specs and builds the catalog. `problems` carries
    /// problems found while parsing, so that all are reported together.
    ///
    /// # Errors
    /// Every problem found, parsing ones included.
    pub fn build(
        specs: Vec<(PathBuf, AgentSpec)>,
        mut groups: BTreeMap<String, GroupSpec>,
        root: PathBuf,
        mut problems: Vec<Problem>,
    ) -> Result<Catalog, Problems> {
        let mut agents: BTreeMap<String, Arc<AgentSpec>> = BTreeMap::new();
        let mut origins: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for (file, spec) in specs {
            origins.entry(spec.name.clone()).or_default().push(file);
            if spec.required && spec.autoload == Autoload::OnDemand {
                problems.push(Problem::AutoloadMismatch { agent: spec.name.clone() });
            }
            for task_type in spec.tasks.keys().filter(|t| !spec.handles.contains(t)) {
                problems.push(Problem::TaskSchema { agent: spec.name.clone(), task_type: task_type.clone() });
            }
            groups.entry(spec.group.clone()).or_default();
            agents.entry(spec.name.clone()).or_insert_with(|| Arc::new(spec));
        }
        for (name, files) in &origins {
            if files.len() > 1 {
                problems.push(Problem::DuplicateName { name: name.clone(), files: files.clone() });
            }
        }
        for spec in agents.values() {
            for dep in &spec.dependencies {
                match agents.get(dep) {
                    None => {
                        problems.push(Problem::UnknownDependency { agent: spec.name.clone(), dependency: dep.clone() })
                    }
                    Some(d) if spec.required && d.on_demand() => {
                        problems.push(Problem::EssentialOnDemand { agent: spec.name.clone(), dependency: dep.clone() })
                    }
                    Some(_) => {}
                }
            }
        }
        problems.extend(find_cycles(&agents));
        let (handlers, conflicts) = task_handlers(&agents);
        problems.extend(conflicts);
        if problems.is_empty() {
            Ok(Catalog { agents, groups, root, handlers })
        } else {
            problems.sort();
            problems.dedup();
            Err(Problems(problems))
        }
    }

    /// The spec of `name`, if the catalog has it.
    pub fn get(&self, name: &str) -> Option<&Arc<AgentSpec>> {
        self.agents.get(name)
    }

    /// Agents that depend directly on `name`.
    pub(crate) fn dependents(&self, name: &str) -> Vec<String> {
        self.agents.values().filter(|s| s.dependencies.iter().any(|d| d == name)).map(|s| s.name.clone()).collect()
    }

    /// Start waves of `names`: wave 0 has no dependency inside `names`, wave
    /// n depends only on waves < n. Dependencies outside `names` are ignored.
    /// Assumes a validated (acyclic) catalog.
    pub fn waves(&self, names: &BTreeSet<String>) -> Vec<Vec<String>> {
        let mut level: BTreeMap<String, usize> = BTreeMap::new();
        fn depth(cat: &Catalog, name: &str, names: &BTreeSet<String>, level: &mut BTreeMap<String, usize>) -> usize {
            if let Some(l) = level.get(name) {
                return *l;
            }
            let l = cat
                .get(name)
                .map(|s| {
                    s.dependencies
                        .iter()
                        .filter(|d| names.contains(*d))
                        .map(|d| depth(cat, d, names, level) + 1)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            level.insert(name.to_string(), l);
            l
        }
        for n in names {
            depth(self, n, names, &mut level);
        }
        let mut waves: Vec<Vec<String>> = Vec::new();
        for (name, l) in level {
            if waves.len() <= l {
                waves.resize(l + 1, Vec::new());
            }
            waves[l].push(name);
        }
        waves
    }

    /// `names` plus every agent they depend on, transitively.
    pub(crate) fn closure(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<String> = names.iter().cloned().collect();
        while let Some(n) = stack.pop() {
            if !out.insert(n.clone()) {
                continue;
            }
            if let Some(spec) = self.get(&n) {
                stack.extend(spec.dependencies.iter().cloned());
            }
        }
        out
    }
}

fn read_dir_sorted(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            v
        }
        Err(e) => {
            problems.push(Problem::Parse { file: dir.to_path_buf(), message: e.to_string() });
            Vec::new()
        }
    }
}

/// Every dependency cycle, each reported once (rotated to start at its
/// smallest name).
fn find_cycles(agents: &BTreeMap<String, Arc<AgentSpec>>) -> Vec<Problem> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        n: &str,
        agents: &BTreeMap<String, Arc<AgentSpec>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        marks.insert(n.to_string(), Mark::Active);
        stack.push(n.to_string());
        if let Some(spec) = agents.get(n) {
            for d in &spec.dependencies {
                match marks.get(d.as_str()).copied().unwrap_or(Mark::New) {
                    Mark::Active => {
                        if let Some(pos) = stack.iter().position(|s| s == d) {
                            let mut cycle: Vec<String> = stack[pos..].to_vec();
                            if let Some(min) = cycle.iter().enumerate().min_by_key(|(_, s)| *s).map(|(i, _)| i) {
                                cycle.rotate_left(min);
                            }
                            found.insert(cycle);
                        }
                    }
                    Mark::New if agents.contains_key(d) => visit(d, agents, marks, stack, found),
                    _ => {}
                }
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
    }
    let mut marks: BTreeMap<String, Mark> = agents.keys().map(|k| (k.clone(), Mark::New)).collect();
    let mut found = BTreeSet::new();
    for name in agents.keys() {
        if marks.get(name) == Some(&Mark::New) {
            visit(name, agents, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
        .into_iter()
        .map(|mut path| {
            path.push(path[0].clone());
            Problem::Cycle { path }
        })
        .collect()
}

/// Task type → agent, and the conflicts (claimants without distinct priorities).
fn task_handlers(agents: &BTreeMap<String, Arc<AgentSpec>>) -> (BTreeMap<String, String>, Vec<Problem>) {
    let mut claims: BTreeMap<&str, Vec<&AgentSpec>> = BTreeMap::new();
    for spec in agents.values() {
        for t in &spec.handles {
            claims.entry(t.as_str()).or_default().push(spec);
        }
    }
    let mut handlers = BTreeMap::new();
    let mut problems = Vec::new();
    for (task_type, claimants) in claims {
        if claimants.len() > 1 {
            let prios: BTreeSet<Option<u8>> = claimants.iter().map(|s| s.priority).collect();
            if prios.contains(&None) || prios.len() != claimants.len() {
                problems.push(Problem::TaskTypeConflict {
                    task_type: task_type.to_string(),
                    agents: claimants.iter().map(|s| s.name.clone()).collect(),
                });
                continue;
            }
        }
        if let Some(winner) = claimants.iter().max_by_key(|s| s.priority) {
            handlers.insert(task_type.to_string(), winner.name.clone());
        }
    }
    (handlers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::RuntimeSpec;

    fn spec(name: &str, required: bool, deps: &[&str], handles: &[&str]) -> (PathBuf, AgentSpec) {
        (
            PathBuf::from(format!("{name}.yaml")),
            AgentSpec {
                name: name.into(),
                group: "g".into(),
                required,
                autoload: if required { Autoload::OnStartup } else { Autoload::OnDemand },
                description: String::new(),
                port: None,
                dependencies: deps.iter().map(|s| s.to_string()).collect(),
                role: None,
                handles: handles.iter().map(|s| s.to_string()).collect(),
                tasks: Default::default(),
                priority: None,
                max_concurrency: 16,
                restart: Default::default(),
                runtime: RuntimeSpec::Builtin { behaviour: None },
                resources: None,
                requires_validation: false,
            },
        )
    }

    #[test]
    fn reports_every_problem_at_once() {
        let specs = vec![
            spec("A", true, &["B"], &["x"]),
            spec("B", true, &["C"], &["x"]),
            spec("C", true, &["A", "Nope"], &[]),
            spec("D", true, &["E"], &[]),
            spec("E", false, &[], &[]),
            spec("D", true, &[], &[]),
        ];
        let err = Catalog::build(specs, BTreeMap::new(), PathBuf::new(), vec![]).unwrap_err();
        let codes: BTreeSet<&str> = err.0.iter().map(|p| p.code()).collect();
        assert_eq!(
            codes,
            BTreeSet::from([
                "duplicate_name",
                "unknown_dependency",
                "dependency_cycle",
                "essential_depends_on_on_demand",
                "task_type_conflict"
            ]),
            "{err}"
        );
        let cycle = err.0.iter().find(|p| p.code() == "dependency_cycle").unwrap();
        assert_eq!(cycle.to_string(), "[dependency_cycle] dependency cycle: A -> B -> C -> A");
    }

    #[test]
    fn a_task_schema_for_an_unhandled_type_is_a_problem() {
        let task = |summary: &str| crate::config::spec::TaskSpec {
            summary: summary.into(),
            input_schema: None,
            output_schema: None,
            examples: vec![serde_json::json!("hi")],
            content_routing: false,
        };
        let (file, mut a) = spec("A", true, &[], &["chat"]);
        a.tasks.insert("chat".into(), task("handled: fine"));
        a.tasks.insert("chta".into(), task("a typo"));
        let err = Catalog::build(vec![(file, a)], BTreeMap::new(), PathBuf::new(), vec![]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].code(), "task_schema");
        assert_eq!(
            err.0[0].to_string(),
            "[task_schema] A declares a schema under tasks for chta, which is not in its handles"
        );
    }

    #[test]
    fn waves_follow_dependencies() {
        let specs = vec![spec("A", true, &[], &[]), spec("B", true, &["A"], &[]), spec("C", true, &["A", "B"], &[])];
        let cat = Catalog::build(specs, BTreeMap::new(), PathBuf::new(), vec![]).unwrap();
        let all: BTreeSet<String> = cat.agents.keys().cloned().collect();
        assert_eq!(cat.waves(&all), vec![vec!["A".to_string()], vec!["B".to_string()], vec!["C".to_string()]]);
    }
}
