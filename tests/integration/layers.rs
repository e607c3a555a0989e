//! Layers: imports point one way (DESIGN §15, issue 10).
//!
//! Reads every `.rs` file under `src/` and every path into the crate in it:
//! `use` lines (grouped ones too, across lines), inline paths in code
//! (`crate::store::Store::open(..)`, `pub(in crate::x)`), and `super::` /
//! `self::` paths, resolved against the file's module and the inline `mod x { .. }`
//! blocks around them, so `super::super::routing` in `src/agents/builtin/x.rs`
//! counts as `crate::routing`. Comments (doc comments included) and string and
//! char literals are blanked first; `pub(crate)` and `pub(super)` are not paths.
//!
//! The rule: a top-level module uses only itself and the modules below it in
//! [`ORDER`]; a name not in [`ORDER`] fails too. Inside one top-level module the
//! submodules (`src/config/catalog.rs`, `src/agents/builtin/..`) form no cycle;
//! the module's own `mod.rs` is exempt, as the parent that re-exports them.
//! `src/main.rs`, `src/lib.rs` (and `src/bin/`) are exempt.

use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};
use std::path::Path;

/// The top-level modules of `src/`, top to bottom (DESIGN §15 and the README's
/// Layout section draw the same list). `cli` may use `daemon`, not the reverse.
const ORDER: &str = "cli daemon http bus agents supervisor routing backends models store events telemetry config core";

/// A token of blanked source and its line.
type Tok = (String, usize);

/// One path into the crate, found in a source file.
#[derive(Debug)]
struct Use {
    line: usize,
    /// As written, e.g. `super::super::routing::ROUTER_NAME`.
    text: String,
    /// What it names, from the crate root: `["routing", "ROUTER_NAME"]`.
    target: Vec<String>,
}

/// A file of `src/` with its module path (`src/agents/builtin/x.rs` is `agents::builtin::x`).
struct SourceFile {
    rel: String,
    module: Vec<String>,
    uses: Vec<Use>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with comments and the insides of string and char literals turned into
/// spaces; newlines are kept, so line numbers stay right.
fn blank_comments_and_strings(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, ch)| c.get(i + k) == Some(&ch));
    let (mut out, mut i) = (String::with_capacity(src.len()), 0);
    while i < c.len() {
        let start = i;
        if at(i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0; // block comments nest
            while i < c.len() {
                if at(i, "/*") {
                    (depth, i) = (depth + 1, i + 2);
                } else if at(i, "*/") {
                    (depth, i) = (depth - 1, i + 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            i += 3; // an escaped char literal: `'\n'`, `'\''`, `'\u{..}'`
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3; // a char literal; `'a` without a closing quote is a lifetime
        } else if is_ident_char(c[i]) {
            // Raw strings (`r#".."#`, `br".."`) start where an identifier would.
            let prefix = ["r", "br", "cr"].into_iter().find(|p| at(i, p)).map_or(0, str::len);
            let hashes = c[i + prefix..].iter().take_while(|&&ch| ch == '#').count();
            if prefix > 0 && c.get(i + prefix + hashes) == Some(&'"') {
                let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                i += prefix + hashes + 1;
                while i < c.len() && !at(i, &close) {
                    i += 1;
                }
                i += close.len();
            } else {
                while i < c.len() && is_ident_char(c[i]) {
                    out.push(c[i]);
                    i += 1;
                }
                continue;
            }
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let end = i.min(c.len());
        out.extend(c[start..end].iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    }
    out
}

/// Tokens of blanked source: identifiers, `::`, and single punctuation characters, with their line.
fn tokens(clean: &str) -> Vec<Tok> {
    let c: Vec<char> = clean.chars().collect();
    let (mut toks, mut i, mut line) = (Vec::new(), 0, 1);
    while i < c.len() {
        let start = i;
        if c[i] == '\n' {
            line += 1;
        } else if is_ident_char(c[i]) {
            while i + 1 < c.len() && is_ident_char(c[i + 1]) {
                i += 1;
            }
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            i += 1;
        }
        if !c[start].is_whitespace() {
            toks.push((c[start..=i].iter().collect(), line));
        }
        i += 1;
    }
    toks
}

/// Flattens the use tree starting at `toks[i]` into one path per leaf; returns the index after it.
fn use_tree<'t>(toks: &'t [Tok], mut i: usize, mut path: Vec<&'t Tok>, out: &mut Vec<Vec<&'t Tok>>) -> usize {
    loop {
        match toks.get(i).map(|t| t.0.as_str()) {
            Some("::") => i += 1,
            Some("{") => {
                i += 1;
                while i < toks.len() && toks[i].0 != "}" {
                    let next = if toks[i].0 == "," { i + 1 } else { use_tree(toks, i, path.clone(), out) };
                    i = next.max(i + 1);
                }
                return i + 1;
            }
            Some("as") => {
                out.push(path);
                return i + 2;
            }
            Some(s) if s.starts_with(is_ident_char) => {
                path.push(&toks[i]);
                i += 1;
            }
            Some("*") => {
                out.push(path);
                return i + 1;
            }
            _ => {
                out.push(path);
                return i;
            }
        }
    }
}

/// Resolves `crate::`, `self::` and `super::` paths seen from `module`; `None` for other paths.
fn resolve(module: &[String], segs: &[&str]) -> Option<Vec<String>> {
    let supers = segs.iter().take_while(|s| **s == "super").count();
    let (base, rest) = match *segs.first()? {
        "crate" => (&[][..], &segs[1..]),
        "self" => (module, &segs[1..]),
        "super" => (module.get(..module.len().checked_sub(supers)?)?, &segs[supers..]),
        _ => return None,
    };
    let target: Vec<String> =
        base.iter().cloned().chain(rest.iter().filter(|s| **s != "self").map(|s| s.to_string())).collect();
    (!target.is_empty()).then_some(target)
}

/// Every path into the crate in the source of module `module` (e.g. `["agents", "builtin", "x"]`).
fn crate_paths(module: &[String], src: &str) -> Vec<Use> {
    let toks = tokens(&blank_comments_and_strings(src));
    let text = |i: usize| toks.get(i).map_or("", |t| t.0.as_str());
    let (mut uses, mut inline_mods, mut depth, mut i) = (Vec::new(), Vec::<(String, usize)>::new(), 0, 0);
    while i < toks.len() {
        let mut paths = Vec::new();
        match text(i) {
            "{" => depth += 1,
            "}" => {
                if inline_mods.last().is_some_and(|m| m.1 == depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if text(i + 2) == "{" => {
                depth += 1;
                inline_mods.push((text(i + 1).to_string(), depth));
                i += 2;
            }
            "use" => {
                i = use_tree(&toks, i + 1, Vec::new(), &mut paths);
                while i < toks.len() && text(i) != ";" {
                    i += 1;
                }
            }
            "crate" | "super" | "self" if text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") => {
                let mut path = vec![&toks[i]];
                while text(i + 1) == "::" && text(i + 2).starts_with(is_ident_char) {
                    path.push(&toks[i + 2]);
                    i += 2;
                }
                paths.push(path);
            }
            _ => {}
        }
        let here: Vec<String> = module.iter().cloned().chain(inline_mods.iter().map(|m| m.0.clone())).collect();
        for path in paths {
            let segs: Vec<&str> = path.iter().map(|t| t.0.as_str()).collect();
            if let Some(target) = resolve(&here, &segs) {
                let named = path.iter().find(|t| !["crate", "self", "super"].contains(&t.0.as_str()));
                let line = named.or(path.last()).map_or(0, |t| t.1);
                let text = segs.join("::").trim_end_matches("::self").to_string();
                uses.push(Use { line, text, target });
            }
        }
        i += 1;
    }
    uses
}

/// Every `.rs` file under `src/` except the exempt crate roots, sorted, with its paths.
fn crate_sources() -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).expect("src/ is readable").map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    let mut files = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "lib.rs" || rel == "main.rs" || rel.starts_with("bin/") {
            continue;
        }
        let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let uses = crate_paths(&module, &std::fs::read_to_string(&path).unwrap());
        files.push(SourceFile { rel: format!("src/{rel}"), module, uses });
    }
    files
}

/// The cycles of a directed graph: each strongly connected part with more than
/// one node (its members), and its shortest cycle through its first node (`[a, b, a]`).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<(BTreeSet<String>, Vec<String>)> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from).or_default().push(to);
    }
    fn reach<'a>(next: &BTreeMap<&'a str, Vec<&'a str>>, from: &'a str) -> BTreeSet<&'a str> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(n) = todo.pop() {
            todo.extend(next.get(n).into_iter().flatten().copied().filter(|m| seen.insert(*m)));
        }
        seen
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for &n in next.keys() {
        let part: BTreeSet<&str> =
            reach(&next, n).into_iter().filter(|m| *m != n && reach(&next, m).contains(n)).collect();
        if part.is_empty() || done.contains(n) {
            continue;
        }
        done.extend(part.iter().copied());
        // Breadth-first from n, inside its part, back to n.
        let (mut prev, mut queue) = (BTreeMap::<&str, &str>::new(), VecDeque::from([n]));
        while let Some(m) = queue.pop_front() {
            let out = next.get(m).map_or(&[][..], Vec::as_slice);
            if out.contains(&n) {
                let mut cycle = vec![n, m];
                while let Some(p) = prev.get(cycle.last().unwrap()) {
                    cycle.push(p);
                }
                let members = part.iter().chain([&n]).map(|s| s.to_string()).collect();
                found.push((members, cycle.iter().rev().map(|s| s.to_string()).collect()));
                break;
            }
            for &k in out.iter().filter(|k| part.contains(*k)) {
                if let btree_map::Entry::Vacant(slot) = prev.entry(k) {
                    slot.insert(m);
                    queue.push_back(k);
                }
            }
        }
    }
    found
}

#[test]
fn modules_use_only_modules_below_them() {
    let files = crate_sources();
    let n_crate: usize = files.iter().flat_map(|f| &f.uses).filter(|u| u.text.starts_with("crate::")).count();
    assert!(files.len() > 50 && n_crate > 100, "the walk saw {} files, {n_crate} crate:: paths", files.len());
    let rank = |m: &str| ORDER.split(' ').position(|o| o == m);
    // (from, to, file, line) → paths; an unknown module → where it appears.
    let mut upward: BTreeMap<(&str, &str, &str, usize), Vec<&str>> = BTreeMap::new();
    let mut unknown: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in &files {
        let from = f.module[0].as_str();
        let Some(from_rank) = rank(from) else {
            unknown.entry(from).or_default().push(format!("{} (the file itself)", f.rel));
            continue;
        };
        for u in &f.uses {
            let to = u.target[0].as_str();
            match rank(to) {
                None => unknown.entry(to).or_default().push(format!("{}:{}  {}", f.rel, u.line, u.text)),
                Some(to_rank) if to_rank < from_rank => {
                    let at = upward.entry((from, to, &f.rel, u.line)).or_default();
                    if !at.contains(&u.text.as_str()) {
                        at.push(&u.text);
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut report = String::new();
    let mut pair = ("", "");
    for ((from, to, file, line), texts) in &upward {
        if pair != (*from, *to) {
            pair = (from, to);
            report += &format!("\n{from} uses {to}, which is above it:\n");
        }
        report += &format!("    {file}:{line}  {}\n", texts.join(", "));
    }
    for (name, places) in &unknown {
        report += &format!(
            "\n`{name}` is not a module of the declared order: add it to ORDER in tests/integration/layers.rs \
             and to DESIGN §15 and the README's Layout (or fix the path):\n    {}\n",
            places.join("\n    ")
        );
    }
    assert!(
        report.is_empty(),
        "a module may use only modules below it (DESIGN §15, top to bottom: {ORDER}):\n{report}"
    );
}

#[test]
fn submodules_of_one_module_form_no_cycle() {
    let files = crate_sources();
    let children: BTreeSet<(&str, &str)> =
        files.iter().filter(|f| f.module.len() > 1).map(|f| (f.module[0].as_str(), f.module[1].as_str())).collect();
    // top module → (from child, to child) → where.
    let mut edges: BTreeMap<&str, BTreeMap<(String, String), Vec<String>>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.module.len() > 1) {
        let (top, from) = (f.module[0].as_str(), f.module[1].as_str());
        for u in &f.uses {
            let to = u.target.get(1).map_or("", String::as_str);
            if u.target[0] == top && to != from && children.contains(&(top, to)) {
                let at = edges.entry(top).or_default().entry((from.to_string(), to.to_string())).or_default();
                at.push(format!("{}:{} {}", f.rel, u.line, u.text));
            }
        }
    }
    let mut report = String::new();
    for (top, graph) in &edges {
        for (members, cycle) in cycles(&graph.keys().cloned().collect()) {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            report += &format!("\n{top}: {} (e.g. {})\n", names.join(", "), cycle.join(" -> "));
            for ((from, to), at) in graph.iter().filter(|(e, _)| members.contains(&e.0) && members.contains(&e.1)) {
                let more = if at.len() > 3 { format!(" (+{} more)", at.len() - 3) } else { String::new() };
                report += &format!("    {from} -> {to}: {}{more}\n", at[..at.len().min(3)].join("; "));
            }
        }
    }
    assert!(report.is_empty(), "submodules of one module import each other in a cycle (DESIGN §15):\n{report}");
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(String::from).collect()
}

fn targets(uses: &[Use]) -> Vec<String> {
    uses.iter().map(|u| format!("{}@{}", u.target.join("::"), u.line)).collect()
}

#[test]
fn parser_reads_grouped_uses_across_lines() {
    let src = "use std::sync::Arc;\npub use crate::{\n    config::{self, Settings},\n    store::receipts::Receipt as R,\n};\nuse crate::events::*;\n";
    let uses = crate_paths(&module("bus::ingress"), src);
    assert_eq!(targets(&uses), ["config@3", "config::Settings@3", "store::receipts::Receipt@4", "events@6"]);
    assert_eq!(uses[2].text, "crate::store::receipts::Receipt");
}

#[test]
fn parser_reads_inline_paths_and_pub_in_but_not_pub_crate() {
    let src = "pub(crate) fn f<'a>(x: &'a str) -> crate::routing::router::RouterMsg {\n    let s: crate::store::Store = crate::store::Store::open::<u8>();\n}\npub(in crate::agents) struct S;\npub(super) struct T;\n";
    let uses = crate_paths(&module("supervisor::context"), src);
    assert_eq!(targets(&uses), ["routing::router::RouterMsg@1", "store::Store@2", "store::Store::open@2", "agents@4"]);
}

#[test]
fn parser_skips_comments_and_literals() {
    let src = "//! [`crate::cli`]\n/// crate::daemon\n/* crate::http /* nested */ crate::bus */\nlet c = '\"'; let e = '\\''; let s = \"crate::http \\\" crate::bus\";\nlet r = br#\"crate::\"cli\"#; use crate::core::Task; // crate::cli\n";
    let uses = crate_paths(&module("config::spec"), src);
    assert_eq!(targets(&uses), ["core::Task@5"]);
}

#[test]
fn parser_resolves_super_and_self_against_the_file_and_inline_mods() {
    let src = "use super::{Behaviour, super::actor::AgentMsg};\nfn f() { super::super::super::routing::go(); }\nmod tests {\n    use super::*;\n    use super::super::super::llm;\n}\nuse self::inner::X;\n";
    let uses = crate_paths(&module("agents::builtin::x"), src);
    let want = [
        "agents::builtin::Behaviour@1",
        "agents::actor::AgentMsg@1",
        "routing::go@2",
        "agents::builtin::x@4",
        "agents::llm@5",
        "agents::builtin::x::inner::X@7",
    ];
    assert_eq!(targets(&uses), want);
    assert!(crate_paths(&module("cli"), "use super::super::x;").is_empty(), "climbing above the crate is no path");
}

#[test]
fn cycle_finder_reports_each_cycle_once() {
    let edges = [("catalog", "legacy"), ("legacy", "catalog"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
    let edges = edges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let found = cycles(&edges);
    let members: Vec<Vec<&str>> = found.iter().map(|f| f.0.iter().map(String::as_str).collect()).collect();
    assert_eq!(members, [vec!["a", "b", "c"], vec!["catalog", "legacy"]]);
    assert_eq!(found[0].1, ["a", "b", "c", "a"]);
    assert_eq!(found[1].1, ["catalog", "legacy", "catalog"]);
}
