//! `policy:` — the gate in front of risky tasks (issue 18): which tasks are
//! checked, what happens when no rule decides, whether snippets may use the
//! network, and the operator's own allow and deny patterns. The rules
//! themselves live in `agents::policy`. Unknown keys are errors.

use serde::{Deserialize, Serialize};

/// What happens to a checked task that no rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undecided {
    /// It runs (counted with `by="default"`).
    Allow,
    /// It is refused with `denied_by_policy` (`by="default"`).
    Deny,
    /// The validator agent (`policy.validator`) decides; a failed call denies.
    Model,
}

/// `policy:` — the policy gate every task passes on its way to its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// `false`: no task is checked. Default `true`.
    pub enabled: bool,
    /// Task types checked, whatever their agent; default `[code.execute,
    /// system.stop]` (the admin action a task, or a plan the arbiter made,
    /// must not take on an essential agent: `essential_agent`; operators
    /// stop one with `POST /agents/{name}/stop`).
    /// Agents whose spec sets `requires_validation: true` have all their
    /// tasks checked as well.
    pub validate: Vec<String>,
    /// What happens when no rule decides; default `allow`, so that a fresh
    /// install without a model backend still runs harmless snippets (the
    /// rules deny the risky patterns they know; `model` asks the validator,
    /// `deny` keeps only what a rule or an allow pattern lets through).
    pub undecided: Undecided,
    /// `code.execute` snippets may use the network (sockets, HTTP clients,
    /// curl, wget, nc, `/dev/tcp`); default `false`: they are denied.
    pub network: bool,
    /// Regular expressions (Rust `regex` syntax); a checked task whose
    /// action text matches one is allowed before any other rule. The action
    /// text is the snippet for `code.execute`, else `<type> <input as JSON>`.
    /// Default none.
    pub allow: Vec<String>,
    /// Regular expressions; a checked task whose action text matches one
    /// (and no allow pattern) is denied with rule `deny_pattern`. Default none.
    pub deny: Vec<String>,
    /// The agent asked when `undecided: model`; default
    /// `IntentionValidatorAgent` (task type `intention_validation`). Its own
    /// tasks are never checked.
    pub validator: String,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            enabled: true,
            validate: vec!["code.execute".into(), "system.stop".into()],
            undecided: Undecided::Allow,
            network: false,
            allow: Vec::new(),
            deny: Vec::new(),
            validator: "IntentionValidatorAgent".into(),
        }
    }
}

impl PolicySettings {
    /// Every problem of these settings, each naming its key: a pattern that
    /// is not a valid regular expression, an empty validator name.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, patterns) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    problems.push(format!("policy.{key}[{i}] is not a valid regular expression: {e}"));
                }
            }
        }
        if self.validator.trim().is_empty() {
            problems.push("policy.validator must name an agent".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let s = PolicySettings::default();
        assert!(s.enabled && !s.network);
        assert_eq!(
            (s.validate.as_slice(), s.undecided),
            (&["code.execute".to_string(), "system.stop".to_string()][..], Undecided::Allow)
        );
        assert!(s.problems().is_empty());
        let bad = PolicySettings { allow: vec!["(".into()], deny: vec!["ok".into(), "[".into()], ..s };
        let problems = bad.problems().join("; ");
        assert!(problems.contains("policy.allow[0]") && problems.contains("policy.deny[1]"), "{problems}");
        let s = super::super::Settings::load(None, &[("policy.undecided".into(), "model".into())]).unwrap();
        assert_eq!(s.policy.undecided, Undecided::Model);
        let err = super::super::Settings::load(None, &[("policy.undecided".into(), "maybe".into())]).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
