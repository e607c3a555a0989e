//! The policy gate: risky tasks are checked before they reach their agent
//! (issue 18). It runs in the agent actor, so every door (the bus, `/v1`,
//! MCP, background jobs, agent-to-agent calls) passes it.
//!
//! Which tasks: the types in `policy.validate` (default `[code.execute]`)
//! and every task of an agent whose spec sets `requires_validation: true`;
//! never the validator's own tasks.
//!
//! How: rules first ([`Policy::rules`]), in this order —
//! 1. `policy.allow` patterns: a match allows (rule `allow_pattern`);
//! 2. `policy.deny` patterns: a match denies (rule `deny_pattern`);
//! 3. built-in rules. For `code.execute` (input: a string of Python, or
//!    `{language: python|python3|sh|shell, code}`):
//!    - `delete_outside_scratch`: a destructive file operation on a path
//!      outside the scratch directory — an absolute path (except `/dev/null`,
//!      `/dev/std*`, `/dev/fd/*`), `~`, `$HOME` or a `..` component — with
//!      `rm`, `rmdir`, `unlink`, `shred`, `truncate`, `mv`, `find -delete`
//!      (or `-exec rm`), `dd of=`, `mkfs*`, `wipefs`, `tee`, a `>` redirect
//!      (after a `cd` out of the scratch directory, any path counts);
//!      in Python `shutil.rmtree`/`move`, `os.remove`/`unlink`/`rmdir`/
//!      `removedirs`/`rename`/`replace`/`truncate`, pathlib's `unlink`/
//!      `rmdir`/`write_text`/`write_bytes` in a snippet naming such a path,
//!      or `open(PATH, "w"|"a"|"x"|"+")` of such a path;
//!    - `fork_bomb`: a shell function that pipes into or backgrounds itself
//!      (`:(){ :|:& };:` and renamed variants), `$0 &`, an endless shell
//!      loop (`while true`, `while :`, `for ((;;))`) that starts background
//!      jobs, Python's `os.fork()` in a loop or an endless loop that starts
//!      processes;
//!    - `network` (when `policy.network` is false, the default): Python
//!      imports of `socket`, `urllib`, `http`, `requests`, `httpx`,
//!      `aiohttp`, `ftplib`, `smtplib`, ... or asyncio connections; shell
//!      `curl`, `wget`, `nc`, `ssh`, `telnet`, `socat`, `ping`, ... and
//!      `/dev/tcp`, `/dev/udp`;
//!    - `harmless` allows: Python without imports, `open`, `exec`, `eval`,
//!      dunder names and the like; shell made only of `echo`, `printf`,
//!      `expr`, `test`, `seq`, `sleep`, `date`, `uname`, ... without file
//!      redirects.
//!
//!    Shell commands run by Python (`os.system`, `subprocess`), `sh -c`,
//!    `bash -c`, `eval` and `python3 -c` are checked with the rules of their
//!    language. For the other checked types: `essential_agent` denies
//!    `system.stop` and `system.restart` of an agent whose spec says
//!    `required: true`.
//! 4. Nothing decided: `policy.undecided` — `allow` (the default), `deny`,
//!    or `model`: the validator agent (`policy.validator`, default
//!    IntentionValidatorAgent, task `intention_validation` with
//!    `{"action"}`) answers `{"decision", "reason"}`; its `deny` denies
//!    (rule `validator`), a failed call or an answer without a decision
//!    denies too (rule `validator_failed`).
//!
//! How strict: the rules read the text, they do not run it. Text inside
//! string literals does not count as a command (`print("rm -rf /")` and
//! `echo "rm -rf /"` are harmless), except in the arguments of a Python
//! snippet that starts processes. Paths built at run time (variables,
//! `os.path.join`) are not followed. This is a policy check, not a
//! sandbox: the Executor's limits remain the resource fence.
//!
//! A denied task is answered `denied_by_policy` with the rule and the
//! reason, and leaves a `policy.denied` event (the audit record, logged at
//! warn). Every decision counts in
//! `agentvisor_policy_decisions_total{task_type,decision,by}` (decision
//! `allow|deny`, by `rule|model|default`).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use super::behaviour::extract_json;
use crate::config::policy::{PolicySettings, Undecided};
use crate::config::spec::AgentSpec;
use crate::core::{ErrorCode, Event, Task, TaskError};
use crate::supervisor::{AgentTable, Peers};

/// Characters of the action kept in a `policy.denied` event.
const EVENT_ACTION_CHARS: usize = 200;
/// Characters of the action sent to the validator agent.
const MODEL_ACTION_CHARS: usize = 16_000;
/// Nesting of `sh -c`, `python3 -c`, `eval`, ... followed at most.
const MAX_DEPTH: usize = 4;

/// What the rules say about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the named rule (`allow_pattern`, `harmless`, `no_code`).
    Allow(&'static str),
    /// Denied by `rule`, for `reason`.
    Deny {
        /// The rule, e.g. `fork_bomb`.
        rule: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// No rule decides: `policy.undecided` does.
    Undecided,
}

fn deny(rule: &'static str, reason: impl Into<String>) -> Verdict {
    Verdict::Deny { rule, reason: reason.into() }
}

/// What the agent actor does with a task after the synchronous checks.
pub(crate) enum Gate {
    /// It runs.
    Pass,
    /// It is answered with this `denied_by_policy` error.
    Refused(TaskError),
    /// The validator agent decides ([`Policy::ask_model`]).
    AskModel,
}

/// The policy gate, built once from `policy:` settings.
#[derive(Debug)]
pub struct Policy {
    settings: PolicySettings,
    allow: Vec<Regex>,
    deny: Vec<Regex>,
}

impl Policy {
    /// The gate of `settings`.
    ///
    /// # Errors
    /// The problems of the settings (an invalid pattern), joined.
    pub fn new(settings: &PolicySettings) -> Result<Policy, String> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let compile = |ps: &[String]| ps.iter().filter_map(|p| Regex::new(p).ok()).collect();
        Ok(Policy { settings: settings.clone(), allow: compile(&settings.allow), deny: compile(&settings.deny) })
    }

    /// Whether a task of `task_type` for the agent of `spec` is checked.
    pub fn checks(&self, spec: &AgentSpec, task_type: &str) -> bool {
        self.settings.enabled
            && spec.name != self.settings.validator
            && (spec.requires_validation || self.settings.validate.iter().any(|t| t == task_type))
    }

    /// The rules' verdict on a task of `task_type` with `input`;
    /// `essential` tells whether an agent is essential (`required: true`).
    pub fn rules(&self, task_type: &str, input: &Value, essential: &dyn Fn(&str) -> bool) -> Verdict {
        let action = action_text(task_type, input);
        if self.allow.iter().any(|r| r.is_match(&action)) {
            return Verdict::Allow("allow_pattern");
        }
        if let Some(r) = self.deny.iter().find(|r| r.is_match(&action)) {
            return deny("deny_pattern", format!("the action matches the deny pattern `{}` (policy.deny)", r.as_str()));
        }
        if task_type == "code.execute" {
            return match snippet(input) {
                Some((Lang::Python, code)) => python_rules(code, self.settings.network, 0),
                Some((Lang::Sh, code)) => sh_rules(code, self.settings.network, 0),
                // Not a snippet: the Executor answers `invalid_input`.
                None => Verdict::Allow("no_code"),
            };
        }
        if matches!(task_type, "system.stop" | "system.restart") {
            let name = match input {
                Value::String(s) => Some(s.trim()),
                Value::Object(o) => o.get("agent").and_then(Value::as_str).map(str::trim),
                _ => None,
            };
            if let Some(name) = name.filter(|n| essential(n)) {
                return deny(
                    "essential_agent",
                    format!("{name} is an essential agent (required: true); {task_type} of it is refused"),
                );
            }
        }
        Verdict::Undecided
    }

    /// Checks `task` for `agent` with the rules, then `policy.undecided`
    /// when it is `allow` or `deny`; records allow and deny decisions.
    pub(crate) fn check(&self, table: &AgentTable, agent: &str, task: &Task) -> Gate {
        let essential = |name: &str| table.catalog.get(name).is_some_and(|s| s.required);
        match self.rules(&task.task_type, &task.input, &essential) {
            Verdict::Allow(_) => {
                count(table, &task.task_type, "allow", "rule");
                Gate::Pass
            }
            Verdict::Deny { rule, reason } => Gate::Refused(refuse(table, agent, task, rule, "rule", &reason)),
            Verdict::Undecided => match self.settings.undecided {
                Undecided::Allow => {
                    count(table, &task.task_type, "allow", "default");
                    Gate::Pass
                }
                Undecided::Deny => {
                    let reason = "no rule allows it and policy.undecided is deny";
                    Gate::Refused(refuse(table, agent, task, "undecided", "default", reason))
                }
                Undecided::Model => Gate::AskModel,
            },
        }
    }

    /// Asks the validator agent about `task` (for `agent`) through `peers`
    /// and records its decision.
    ///
    /// # Errors
    /// `denied_by_policy` when the validator denies, fails, or answers
    /// without a decision.
    pub(crate) async fn ask_model(
        &self,
        table: &AgentTable,
        peers: &dyn Peers,
        agent: &str,
        task: &Task,
    ) -> Result<(), TaskError> {
        let validator = &self.settings.validator;
        let action = format!(
            "task {} for agent {agent}: {}",
            task.task_type,
            truncate(&action_text(&task.task_type, &task.input), MODEL_ACTION_CHARS)
        );
        let mut ask = Task::new(format!("{}.policy", task.id), "intention_validation", json!({"action": action}));
        ask.deadline = task.deadline;
        ask.user = task.user.clone();
        ask.cancel = task.cancel.child_token();
        ask.schedule = task.schedule;
        let answer = peers.call(validator, ask).await;
        let decision = answer.as_ref().ok().and_then(|o| match &o.output {
            Value::String(s) => extract_json(s),
            v => Some(v.clone()),
        });
        let field = |k: &str| decision.as_ref().and_then(|d| d.get(k)).and_then(Value::as_str).map(str::to_string);
        match (field("decision").as_deref(), answer) {
            (Some("allow"), _) => {
                count(table, &task.task_type, "allow", "model");
                Ok(())
            }
            (Some("deny"), _) => {
                let why = field("reason").unwrap_or_else(|| "no reason given".into());
                Err(refuse(table, agent, task, "validator", "model", &format!("{validator} denied it: {why}")))
            }
            (_, Err(e)) => {
                let reason = format!("{validator} could not decide ({}: {})", e.code.as_str(), e.message);
                Err(refuse(table, agent, task, "validator_failed", "model", &reason))
            }
            (_, Ok(o)) => {
                let reason = format!("{validator} could not decide (no allow/deny decision in {})", o.output);
                Err(refuse(table, agent, task, "validator_failed", "model", &truncate(&reason, 500)))
            }
        }
    }
}

/// Counts one decision.
fn count(table: &AgentTable, task_type: &str, decision: &str, by: &str) {
    table.metrics.policy_decisions.with_label_values(&[task_type, decision, by]).inc();
}

/// Records a denial (counter, the agent's task outcome, the `policy.denied`
/// event) and builds its error.
fn refuse(
    table: &AgentTable,
    agent: &str,
    task: &Task,
    rule: &'static str,
    by: &'static str,
    reason: &str,
) -> TaskError {
    count(table, &task.task_type, "deny", by);
    table.metrics.tasks.with_label_values(&[agent, ErrorCode::DeniedByPolicy.as_str()]).inc();
    table.events.emit(Event::PolicyDenied {
        id: task.id.clone(),
        agent: agent.to_string(),
        task_type: task.task_type.clone(),
        rule: rule.to_string(),
        by,
        reason: reason.to_string(),
        action: truncate(&action_text(&task.task_type, &task.input), EVENT_ACTION_CHARS),
        user: task.user.clone(),
    });
    TaskError::new(ErrorCode::DeniedByPolicy, format!("{agent}: denied by policy (rule {rule}): {reason}"))
}

/// The first `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The text the patterns and the validator see: the snippet of a
/// `code.execute` task, else `<type> <input as JSON>`.
pub fn action_text(task_type: &str, input: &Value) -> String {
    match (task_type, snippet(input)) {
        ("code.execute", Some((_, code))) => code.to_string(),
        _ => format!("{task_type} {input}"),
    }
}

/// A snippet's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Sh,
}

/// The language and code of a `code.execute` input, if it is one.
fn snippet(input: &Value) -> Option<(Lang, &str)> {
    match input {
        Value::String(code) => Some((Lang::Python, code)),
        Value::Object(o) => {
            let code = o.get("code")?.as_str()?;
            match o.get("language").map(Value::as_str) {
                None | Some(Some("python" | "python3")) => Some((Lang::Python, code)),
                Some(Some("sh" | "shell")) => Some((Lang::Sh, code)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `path` (as written) lies outside the scratch directory: absolute
/// (devices for output excepted), under `~` or `$HOME`, or with a `..`.
fn is_outside(path: &str) -> bool {
    let p = path.trim();
    if p.starts_with('~') || p.starts_with("$HOME") || p.starts_with("${HOME}") {
        return true;
    }
    if p.starts_with('/') {
        let device = matches!(p, "/dev/null" | "/dev/zero" | "/dev/stdout" | "/dev/stderr" | "/dev/stdin")
            || p.starts_with("/dev/fd/");
        return !device;
    }
    p.split('/').any(|c| c == "..")
}

// ---------------------------------------------------------------- Python

/// A Python snippet with its string literals' contents and comments taken
/// out (`code`), and the literals themselves.
struct PySource {
    code: String,
    literals: Vec<String>,
}

/// Splits Python source into code and string literals (single, double and
/// triple quotes; backslash escapes; `#` comments dropped).
fn py_split(src: &str) -> PySource {
    let chars: Vec<char> = src.chars().collect();
    let (mut code, mut literals) = (String::with_capacity(src.len()), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
            let quote_len = if triple { 3 } else { 1 };
            i += quote_len;
            let mut lit = String::new();
            while i < chars.len() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    lit.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                if chars[i] == c && (!triple || (i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c)) {
                    i += quote_len;
                    break;
                }
                if !triple && chars[i] == '\n' {
                    break;
                }
                lit.push(chars[i]);
                i += 1;
            }
            code.push_str("''");
            literals.push(lit);
            continue;
        }
        code.push(c);
        i += 1;
    }
    PySource { code, literals }
}

static PY_IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^[ \t]*(?:import[ \t]+([\w., \t]+)|from[ \t]+([\w.]+)[ \t]+import)").expect("valid")
});
static PY_NET_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:open_connection|create_connection|start_server|create_datagram_endpoint|urlopen)\s*\(")
        .expect("valid")
});
static PY_SPAWN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\bos\.(?:fork|forkpty|system|popen|spawn\w*|exec\w*|posix_spawn\w*)\s*\(|\bsubprocess\b|\bPopen\s*\(|\bmultiprocessing\b|\bpty\.spawn",
    )
    .expect("valid")
});
static PY_FORK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bos\.(?:fork|forkpty)\s*\(").expect("valid"));
static PY_LOOP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bwhile\b|\bfor\b").expect("valid"));
static PY_ENDLESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bwhile\s*\(?\s*(?:True|1|not\s+False)\s*\)?\s*:|\bitertools\.count\b|\bcount\s*\(\s*\)")
        .expect("valid")
});
static PY_DESTROY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\bshutil\.(?:rmtree|move)\s*\(|\bos\.(?:remove|unlink|rmdir|removedirs|rename|replace|truncate)\s*\(|\.(?:unlink|rmdir|write_text|write_bytes)\s*\(|\b(?:rmtree|unlink|removedirs)\s*\(",
    )
    .expect("valid")
});
static PY_HOME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bexpanduser\s*\(|\bPath\.home\s*\(|\bgetenv\s*\(|\benviron\b").expect("valid"));
static PY_OPEN_WRITE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\bopen\s*\(\s*[rRbBuU]*(?:'([^']*)'|"([^"]*)")\s*,\s*(?:mode\s*=\s*)?[rRbB]*(?:'([^']*)'|"([^"]*)")"#)
        .expect("valid")
});
static PY_UNSAFE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bimport\b|__|\b(?:open|exec|eval|compile|getattr|setattr|delattr|globals|locals|vars|breakpoint|input|help|memoryview)\s*\(")
        .expect("valid")
});

/// Python modules that reach the network.
const PY_NET_MODULES: &[&str] = &[
    "socket",
    "socketserver",
    "ssl",
    "urllib",
    "urllib2",
    "urllib3",
    "http",
    "requests",
    "httpx",
    "aiohttp",
    "ftplib",
    "smtplib",
    "poplib",
    "imaplib",
    "nntplib",
    "telnetlib",
    "xmlrpc",
    "websocket",
    "websockets",
    "paramiko",
    "asyncssh",
    "pycurl",
];

/// The rules for a Python snippet; `depth`: nesting of `-c` code.
fn python_rules(src: &str, network: bool, depth: usize) -> Verdict {
    let py = py_split(src);
    let code = &py.code;
    let spawns = PY_SPAWN.is_match(code);
    // Fork bombs.
    if PY_FORK.is_match(code) && PY_LOOP.is_match(code) {
        return deny("fork_bomb", "os.fork() inside a loop (a fork bomb)");
    }
    if spawns && PY_ENDLESS.is_match(code) {
        return deny("fork_bomb", "an endless loop that starts processes (a fork bomb)");
    }
    // Network.
    if !network {
        for caps in PY_IMPORT.captures_iter(code) {
            let modules = caps.get(1).or_else(|| caps.get(2)).map_or("", |m| m.as_str());
            for module in modules.split(',') {
                let name = module.split_whitespace().next().unwrap_or("");
                let root = name.split('.').next().unwrap_or("");
                if PY_NET_MODULES.contains(&root) {
                    return deny("network", format!("imports {name}, and policy.network is false"));
                }
            }
        }
        if let Some(m) = PY_NET_CALL.find(code) {
            return deny("network", format!("opens a connection ({}), and policy.network is false", m.as_str()));
        }
    }
    // Destructive file operations outside the scratch directory.
    if let Some(m) = PY_DESTROY.find(code) {
        let outside = py.literals.iter().find(|l| is_outside(l));
        if let Some(path) = outside {
            return deny(
                "delete_outside_scratch",
                format!(
                    "{} in a snippet naming {path}, outside the scratch directory",
                    m.as_str().trim_end_matches('(')
                ),
            );
        }
        if PY_HOME.is_match(code) {
            return deny(
                "delete_outside_scratch",
                format!("{} of a path built from the home directory", m.as_str().trim_end_matches('(')),
            );
        }
    }
    for caps in PY_OPEN_WRITE.captures_iter(src) {
        let path = caps.get(1).or_else(|| caps.get(2)).map_or("", |m| m.as_str());
        let mode = caps.get(3).or_else(|| caps.get(4)).map_or("", |m| m.as_str());
        if is_outside(path) && mode.contains(['w', 'a', 'x', '+']) {
            return deny("delete_outside_scratch", format!("opens {path} for writing, outside the scratch directory"));
        }
    }
    // Commands it runs: check its string literals as shell.
    if spawns && depth < MAX_DEPTH {
        let joined = py.literals.join(" ");
        for text in py.literals.iter().chain(std::iter::once(&joined)) {
            if let v @ Verdict::Deny { .. } = sh_rules(text, network, depth + 1) {
                return v;
            }
        }
    }
    if PY_UNSAFE.is_match(code) { Verdict::Undecided } else { Verdict::Allow("harmless") }
}

// ---------------------------------------------------------------- shell

/// One simple command: its words (quotes removed) and its redirections.
#[derive(Debug, Default)]
struct Command {
    words: Vec<String>,
    /// `(operator, target)`: `>`, `>>`, `<`, ...
    redirects: Vec<(String, String)>,
}

/// A shell snippet cut into simple commands (at `;`, `&`, `|`, newlines,
/// parentheses, `$(` and backticks), and the double-quoted strings holding
/// a command substitution (checked as shell of their own).
struct ShSource {
    commands: Vec<Command>,
    nested: Vec<String>,
}

/// Cuts shell source into simple commands. Best effort: quotes, escapes,
/// comments, redirections, `$((...))` and `${...}` are understood;
/// here-documents and `case` patterns are not.
fn sh_split(src: &str) -> ShSource {
    let chars: Vec<char> = src.chars().collect();
    let mut out = ShSource { commands: Vec::new(), nested: Vec::new() };
    let mut cmd = Command::default();
    let mut word = String::new();
    let mut in_word = false;
    let mut redirect: Option<String> = None;
    let finish_word = |cmd: &mut Command, word: &mut String, in_word: &mut bool, redirect: &mut Option<String>| {
        if *in_word {
            match redirect.take() {
                Some(op) => cmd.redirects.push((op, std::mem::take(word))),
                None => cmd.words.push(std::mem::take(word)),
            }
            *in_word = false;
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                if let Some(&n) = chars.get(i + 1)
                    && n != '\n'
                {
                    word.push(n);
                    in_word = true;
                }
                i += 2;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                let mut lit = String::new();
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        lit.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    lit.push(chars[i]);
                    i += 1;
                }
                i += 1;
                if lit.contains("$(") || lit.contains('`') {
                    out.nested.push(lit.clone());
                }
                word.push_str(&lit);
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') && chars.get(i + 2) == Some(&'(') => {
                // Arithmetic: part of the word, up to the matching `))`.
                in_word = true;
                word.push('$');
                i += 1;
                let mut level = 0i32;
                while i < chars.len() {
                    match chars[i] {
                        '(' => level += 1,
                        ')' => level -= 1,
                        _ => {}
                    }
                    word.push(chars[i]);
                    i += 1;
                    if level == 0 {
                        break;
                    }
                }
            }
            '$' if chars.get(i + 1) == Some(&'{') => {
                in_word = true;
                while i < chars.len() && chars[i] != '}' {
                    word.push(chars[i]);
                    i += 1;
                }
                word.push('}');
                i += 1;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
                out.commands.push(std::mem::take(&mut cmd));
                i += 2;
            }
            '>' | '<' => {
                // A file descriptor number before it is part of the operator.
                if in_word && redirect.is_none() && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
                let mut op = c.to_string();
                i += 1;
                while let Some(&n) = chars.get(i) {
                    if n == '>' || n == '|' || (n == '<' && c == '<') {
                        op.push(n);
                        i += 1;
                    } else {
                        break;
                    }
                }
                if chars.get(i) == Some(&'&') {
                    // `>&2`, `<&0`: a descriptor, not a file.
                    i += 1;
                    while chars.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '-') {
                        i += 1;
                    }
                } else {
                    redirect = Some(op);
                }
            }
            '&' if chars.get(i + 1) == Some(&'>') => {
                finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
                i += 2;
                if chars.get(i) == Some(&'>') {
                    i += 1;
                }
                redirect = Some("&>".into());
            }
            ';' | '\n' | '&' | '|' | '(' | ')' | '`' => {
                finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
                if !cmd.words.is_empty() || !cmd.redirects.is_empty() {
                    out.commands.push(std::mem::take(&mut cmd));
                }
                i += 1;
            }
            c if c.is_whitespace() => {
                finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
                i += 1;
            }
            c => {
                word.push(c);
                in_word = true;
                i += 1;
            }
        }
    }
    finish_word(&mut cmd, &mut word, &mut in_word, &mut redirect);
    if !cmd.words.is_empty() || !cmd.redirects.is_empty() {
        out.commands.push(cmd);
    }
    out
}

/// Words that open a command without being it.
const SH_KEYWORDS: &[&str] =
    &["if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}", "!", "time"];
/// Commands that run the command after their options.
const SH_WRAPPERS: &[&str] =
    &["sudo", "doas", "env", "nohup", "command", "exec", "nice", "xargs", "stdbuf", "setsid", "busybox", "builtin"];
/// Commands that change no file, start no process and reach no network.
const SH_HARMLESS: &[&str] = &[
    "echo", "printf", "true", "false", ":", "exit", "return", "expr", "test", "[", "[[", "]]", "seq", "sleep", "date",
    "uname", "pwd", "basename", "dirname", "let", "set", "shift", "read", "id", "whoami", "hostname", "nproc",
];
/// Commands that reach the network.
const SH_NETWORK: &[&str] = &[
    "curl", "wget", "nc", "ncat", "netcat", "telnet", "ssh", "scp", "sftp", "ftp", "socat", "rsync", "ping", "ping6",
    "dig", "nslookup", "host", "aria2c", "lynx", "w3m", "links", "http", "https",
];
/// Commands that delete, truncate or move their file arguments.
const SH_DESTROY: &[&str] = &["rm", "rmdir", "unlink", "shred", "truncate", "mv", "wipefs", "tee"];

/// The command name and its arguments, past keywords, assignments and
/// wrappers (`sudo`, `env`, `xargs`, ...).
fn command_words(words: &[String]) -> Option<(String, &[String])> {
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let assignment = w
            .split_once('=')
            .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if SH_KEYWORDS.contains(&w) || assignment || (i > 0 && w.starts_with('-')) {
            i += 1;
            continue;
        }
        let name = w.rsplit('/').next().unwrap_or(w);
        if SH_WRAPPERS.contains(&name) {
            i += 1;
            continue;
        }
        return Some((name.to_string(), &words[i + 1..]));
    }
    None
}

static SH_FUNC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:function\s+([^\s(){}|&;]+)|([^\s(){}|&;=]+)\s*\(\s*\))\s*\{?").expect("valid"));
static SH_ENDLESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:while|until)\s+(?:true|:|\[\s*1\s*\]|\(\(\s*1\s*\)\)|false)\s*(?:;|\n)\s*do\b|\bfor\s*\(\(\s*;\s*;\s*\)\)")
        .expect("valid")
});

/// Whether `name` occurs in `text` directly followed by a pipe or a
/// background `&`.
fn piped_or_backgrounded(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let rest = text[i + name.len()..].trim_start_matches([' ', '\t']);
        let mut r = rest.chars();
        match (r.next(), r.next()) {
            (Some('|'), next) => next != Some('|'),
            (Some('&'), next) => next != Some('&') && next != Some('>'),
            _ => false,
        }
    })
}

/// Whether `text` starts a background job (a lone `&`).
fn has_background(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'&'
            && (i == 0 || !matches!(b[i - 1], b'&' | b'>' | b'<'))
            && b.get(i + 1).is_none_or(|n| !matches!(n, b'&' | b'>'))
    })
}

/// The rules for a shell snippet; `depth`: nesting of `sh -c` and the like.
fn sh_rules(src: &str, network: bool, depth: usize) -> Verdict {
    // Fork bombs, on the text.
    for caps in SH_FUNC.captures_iter(src) {
        let Some(name) = caps.get(1).or_else(|| caps.get(2)) else { continue };
        let after = &src[caps.get(0).map_or(0, |m| m.end())..];
        if piped_or_backgrounded(after, name.as_str()) {
            return deny(
                "fork_bomb",
                format!("the function {} pipes into or backgrounds itself (a fork bomb)", name.as_str()),
            );
        }
    }
    if piped_or_backgrounded(src, "$0") {
        return deny("fork_bomb", "the script starts itself in the background or a pipe ($0, a fork bomb)");
    }
    for m in SH_ENDLESS.find_iter(src) {
        let body = &src[m.end()..];
        let body = body.find("done").map_or(body, |end| &body[..end]);
        if has_background(body) {
            return deny("fork_bomb", "an endless loop that starts background jobs (a fork bomb)");
        }
    }
    let sh = sh_split(src);
    let mut harmless = sh.nested.is_empty();
    // The working directory left the scratch directory (`cd /`, `cd ..`,
    // `cd` alone): relative paths after it are outside too.
    let mut moved_out: Option<String> = None;
    for c in &sh.commands {
        for (op, target) in &c.redirects {
            if !network && (target.starts_with("/dev/tcp/") || target.starts_with("/dev/udp/")) {
                return deny("network", format!("redirects to {target}, and policy.network is false"));
            }
            if matches!(op.as_str(), ">" | ">|" | "&>") && is_outside(target) {
                return deny(
                    "delete_outside_scratch",
                    format!("`{op} {target}` truncates a file outside the scratch directory"),
                );
            }
            if !matches!(target.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr") {
                harmless = false;
            }
        }
        if !network && let Some(w) = c.words.iter().find(|w| w.contains("/dev/tcp/") || w.contains("/dev/udp/")) {
            return deny("network", format!("uses {w}, and policy.network is false"));
        }
        let Some((name, args)) = command_words(&c.words) else { continue };
        if !SH_HARMLESS.contains(&name.as_str()) {
            harmless = false;
        }
        if !network && SH_NETWORK.contains(&name.as_str()) {
            return deny("network", format!("runs {name}, and policy.network is false"));
        }
        let destructive = SH_DESTROY.contains(&name.as_str())
            || name.starts_with("mkfs")
            || (name == "find" && args.iter().any(|a| a == "-delete" || a == "rm" || a == "shred"));
        if destructive && let Some(path) = args.iter().find(|a| !a.starts_with('-') && is_outside(a)) {
            return deny("delete_outside_scratch", format!("`{name}` on {path}, outside the scratch directory"));
        }
        if let Some(dir) = &moved_out
            && destructive
            && args.iter().any(|a| !a.starts_with('-'))
        {
            return deny("delete_outside_scratch", format!("`{name}` after `cd {dir}`, outside the scratch directory"));
        }
        if matches!(name.as_str(), "cd" | "pushd") {
            match args.iter().find(|a| !a.starts_with('-')) {
                None => moved_out = Some("~".into()),
                Some(dir) if is_outside(dir) => moved_out = Some(dir.clone()),
                Some(_) => {}
            }
        }
        if name == "dd"
            && let Some(path) = args.iter().filter_map(|a| a.strip_prefix("of=")).find(|p| is_outside(p))
        {
            return deny("delete_outside_scratch", format!("`dd` writes {path}, outside the scratch directory"));
        }
        // Code it runs: `sh -c CODE`, `eval CODE`, `python3 -c CODE`.
        if depth < MAX_DEPTH {
            let inner = match name.as_str() {
                "sh" | "bash" | "dash" | "zsh" | "ksh" | "python" | "python3" | "perl" | "ruby" | "node" => {
                    args.iter().position(|a| a == "-c" || a == "-e").and_then(|p| args.get(p + 1))
                }
                _ => None,
            };
            let verdict = match (name.as_str(), inner) {
                ("python" | "python3", Some(code)) => python_rules(code, network, depth + 1),
                (_, Some(code)) => sh_rules(code, network, depth + 1),
                ("eval", None) => sh_rules(&args.join(" "), network, depth + 1),
                _ => Verdict::Undecided,
            };
            if let v @ Verdict::Deny { .. } = verdict {
                return v;
            }
        }
    }
    if depth < MAX_DEPTH {
        for n in &sh.nested {
            if let v @ Verdict::Deny { .. } = sh_rules(n, network, depth + 1) {
                return v;
            }
        }
    }
    if harmless { Verdict::Allow("harmless") } else { Verdict::Undecided }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(network: bool) -> Policy {
        Policy::new(&PolicySettings { network, ..Default::default() }).unwrap()
    }

    fn verdict(p: &Policy, language: &str, code: &str) -> Verdict {
        p.rules("code.execute", &json!({"language": language, "code": code}), &|_| false)
    }

    fn rule_of(v: &Verdict) -> &'static str {
        match v {
            Verdict::Allow(rule) => rule,
            Verdict::Deny { rule, .. } => rule,
            Verdict::Undecided => "undecided",
        }
    }

    #[track_caller]
    fn expect(p: &Policy, cases: &[(&str, &str, &str)]) {
        for (language, code, want) in cases {
            let v = verdict(p, language, code);
            assert_eq!(rule_of(&v), *want, "{language}: {code:?} → {v:?}");
        }
    }

    #[test]
    fn deletes_outside_the_scratch_directory_are_denied() {
        expect(
            &policy(false),
            &[
                ("sh", "rm -rf /tmp/x", "delete_outside_scratch"),
                ("sh", "rm -rf /", "delete_outside_scratch"),
                ("sh", "cd /tmp && rm -fr ../etc", "delete_outside_scratch"),
                ("sh", "rm -rf ~/projects", "delete_outside_scratch"),
                ("sh", "rm -rf \"$HOME\"", "delete_outside_scratch"),
                ("sh", "sudo /bin/rm -r /var/lib/x", "delete_outside_scratch"),
                ("sh", "echo ok; rmdir /srv/empty", "delete_outside_scratch"),
                ("sh", "find / -name '*.log' -delete", "delete_outside_scratch"),
                ("sh", "find /data -exec rm {} +", "delete_outside_scratch"),
                ("sh", "echo > /etc/passwd", "delete_outside_scratch"),
                ("sh", ": >| /home/u/.bashrc", "delete_outside_scratch"),
                ("sh", "dd if=/dev/zero of=/dev/sda", "delete_outside_scratch"),
                ("sh", "mv /etc/hosts x", "delete_outside_scratch"),
                ("sh", "cd / && rm -rf *", "delete_outside_scratch"),
                ("sh", "cd ..; rm -r project", "delete_outside_scratch"),
                ("sh", "cd\nfind . -delete", "delete_outside_scratch"),
                ("sh", "x=$(rm -rf /opt/app)", "delete_outside_scratch"),
                ("sh", "echo \"$(rm -rf /opt/app)\"", "delete_outside_scratch"),
                ("sh", "sh -c 'rm -rf /opt/app'", "delete_outside_scratch"),
                ("sh", "eval rm -rf /opt/app", "delete_outside_scratch"),
                ("sh", "python3 -c \"import shutil; shutil.rmtree('/opt')\"", "delete_outside_scratch"),
                ("python", "import shutil\nshutil.rmtree('/tmp/x')", "delete_outside_scratch"),
                ("python", "import os\nos.remove(\"/etc/hosts\")", "delete_outside_scratch"),
                ("python", "import os\np = '/var/log/syslog'\nos.unlink(p)", "delete_outside_scratch"),
                ("python", "from pathlib import Path\nPath('/tmp/a').unlink()", "delete_outside_scratch"),
                ("python", "from shutil import rmtree\nrmtree('../up')", "delete_outside_scratch"),
                ("python", "import os, shutil\nshutil.rmtree(os.path.expanduser('~'))", "delete_outside_scratch"),
                ("python", "open('/etc/passwd', 'w').write('')", "delete_outside_scratch"),
                ("python", "import os\nos.system('rm -rf /home/u')", "delete_outside_scratch"),
                ("python", "import subprocess\nsubprocess.run(['rm', '-rf', '/srv'])", "delete_outside_scratch"),
            ],
        );
    }

    #[test]
    fn fork_bombs_are_denied() {
        expect(
            &policy(false),
            &[
                ("sh", ":(){ :|:& };:", "fork_bomb"),
                ("sh", ":(){ :|: & };:", "fork_bomb"),
                ("sh", "bomb() { bomb | bomb & }; bomb", "fork_bomb"),
                ("sh", "function f { f & f; }\nf", "fork_bomb"),
                ("sh", "while true; do sleep 1 & done", "fork_bomb"),
                ("sh", "while :\ndo\n  yes > /dev/null &\ndone", "fork_bomb"),
                ("sh", "for ((;;)); do sh -c 'sleep 9' & done", "fork_bomb"),
                ("sh", "$0 & $0 &", "fork_bomb"),
                ("python", "import os\nwhile True:\n    os.fork()", "fork_bomb"),
                ("python", "import os\nfor _ in range(10**6):\n    os.fork()", "fork_bomb"),
                ("python", "import subprocess\nwhile 1:\n    subprocess.Popen(['sleep', '9'])", "fork_bomb"),
            ],
        );
    }

    #[test]
    fn network_is_denied_when_off_and_allowed_when_on() {
        let cases = [
            ("python", "import socket\ns = socket.socket()"),
            ("python", "import os, urllib.request\nurllib.request.urlopen('http://x')"),
            ("python", "from http.client import HTTPConnection"),
            ("python", "import requests"),
            ("python", "import asyncio\nasyncio.open_connection('h', 80)"),
            ("sh", "curl -s https://example.org"),
            ("sh", "wget http://x/y"),
            ("sh", "echo hi | nc 10.0.0.1 9"),
            ("sh", "exec 3<>/dev/tcp/10.0.0.1/80"),
            ("sh", "cat < /dev/tcp/example.org/80"),
            ("python", "import os\nos.system('curl http://x')"),
        ];
        let off = policy(false);
        let on = policy(true);
        for (language, code) in cases {
            assert_eq!(rule_of(&verdict(&off, language, code)), "network", "{code}");
            assert!(!matches!(verdict(&on, language, code), Verdict::Deny { .. }), "{code}");
        }
    }

    #[test]
    fn harmless_snippets_and_look_alikes_run() {
        expect(
            &policy(false),
            &[
                ("python", "print(6*7)", "harmless"),
                ("python", "print('rm -rf /')", "harmless"),
                ("python", "print(\"import socket; shutil.rmtree('/')\")  # os.fork()", "harmless"),
                ("python", "while True:\n    pass", "harmless"),
                ("python", "x = bytearray(2 * 1024**3)\nprint('allocated')", "harmless"),
                ("sh", "echo hello; uname -s", "harmless"),
                ("sh", "echo $((6*7)); echo oops >&2; exit 3", "harmless"),
                ("sh", "echo 'rm -rf /' 2>/dev/null", "harmless"),
                ("sh", "echo \":(){ :|:& };:\"", "harmless"),
                ("sh", "# rm -rf /\necho done", "harmless"),
                // Not harmless, but no rule denies them: policy.undecided decides.
                ("python", "open('notes.txt', 'w').write('x')\nprint(open('notes.txt').read())", "undecided"),
                ("python", "import os\nos.remove('notes.txt')", "undecided"),
                ("python", "import shutil\nshutil.rmtree('build')", "undecided"),
                ("python", "import os\nprint(os.getcwd())", "undecided"),
                ("python", "import os\nos.fork()", "undecided"),
                ("sh", "echo x > a.txt; cat a.txt; rm -f a.txt", "undecided"),
                ("sh", "rm -rf ./build *.o", "undecided"),
                ("sh", "mkdir -p b && cd b && rm -rf *", "undecided"),
                ("sh", "cat /etc/hostname >> log.txt", "undecided"),
                ("sh", "for i in 1 2 3; do sleep 1 & done; wait", "undecided"),
                ("sh", "true && echo ok & wait", "undecided"),
            ],
        );
        assert_eq!(policy(false).rules("code.execute", &json!("print(1)"), &|_| false), Verdict::Allow("harmless"));
        assert_eq!(policy(false).rules("code.execute", &json!({"code": 3}), &|_| false), Verdict::Allow("no_code"));
    }

    #[test]
    fn patterns_come_first_and_admin_rules_apply_to_other_types() {
        let settings = PolicySettings {
            allow: vec![r"^rm -rf /tmp/ok-\w+$".into()],
            deny: vec![r"(?i)\bdrop\s+table\b".into()],
            validate: vec!["code.execute".into(), "system.stop".into()],
            ..Default::default()
        };
        let p = Policy::new(&settings).unwrap();
        assert_eq!(verdict(&p, "sh", "rm -rf /tmp/ok-abc"), Verdict::Allow("allow_pattern"));
        assert_eq!(rule_of(&verdict(&p, "sh", "rm -rf /tmp/other")), "delete_outside_scratch");
        assert_eq!(rule_of(&verdict(&p, "python", "print('DROP TABLE x')")), "deny_pattern");
        let essential = |name: &str| name == "RequestCoordinator";
        let v = p.rules("system.stop", &json!({"agent": "RequestCoordinator"}), &essential);
        assert_eq!(rule_of(&v), "essential_agent");
        assert_eq!(p.rules("system.stop", &json!("ChitchatAgent"), &essential), Verdict::Undecided);
        assert!(Policy::new(&PolicySettings { deny: vec!["(".into()], ..Default::default() }).is_err());
    }

    #[test]
    fn which_tasks_are_checked() {
        let spec = |name: &str, requires_validation: bool| {
            serde_norway::from_str::<AgentSpec>(&format!(
                "{{name: {name}, group: g, runtime: {{kind: builtin}}, requires_validation: {requires_validation}}}"
            ))
            .unwrap()
        };
        let p = policy(false);
        assert!(p.checks(&spec("Executor", false), "code.execute"));
        assert!(!p.checks(&spec("Executor", false), "utils.echo"));
        assert!(p.checks(&spec("Admin", true), "utils.echo"));
        assert!(!p.checks(&spec("IntentionValidatorAgent", true), "intention_validation"));
        let off = Policy::new(&PolicySettings { enabled: false, ..Default::default() }).unwrap();
        assert!(!off.checks(&spec("Executor", false), "code.execute"));
    }

    /// Unbalanced quotes, dangling escapes and expansions, odd characters:
    /// a verdict, never a panic.
    #[test]
    fn odd_input_gets_a_verdict() {
        let p = policy(false);
        for code in [
            "",
            "'",
            "\"",
            "\\",
            "$",
            "$(",
            "$((",
            "${",
            "`",
            "a >",
            "2>&",
            "&>",
            ":(){",
            "f() {",
            "while true; do",
            "x=\"$(",
            "é ü 漢字 $((1+",
            "'''",
            "\"\"\"abc",
            "#",
            "(((",
            ")))",
            "|&;",
            "rm -rf '",
        ] {
            for language in ["sh", "python"] {
                let _ = verdict(&p, language, code);
            }
        }
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }
}
