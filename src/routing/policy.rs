//! The routing decision (DESIGN §5): which tier and which backends, in which
//! order, answer one model call.
//!
//! Where it sits: HybridRouter calls [`Policy::decide`] once per model call,
//! then walks [`Decision::chain`] in order, asking each backend's
//! [`CircuitBreaker`](super::breaker::CircuitBreaker) before calling it, and
//! records which one answered. The policy is pure: no I/O, no clock, no
//! state; everything it needs is in [`RouteInput`] and the `available`
//! callback. Regexes are compiled once in [`Policy::new`].
//!
//! # The steps of [`Policy::decide`]
//!
//! 1. **Complexity** (DESIGN §5): the task's explicit complexity, else the
//!    first rule whose pattern matches the whole task type
//!    (`^(?:pattern)$`), else the agent spec's default. An explicit
//!    complexity also bypasses the rules' `prefer`: the caller's own judgement
//!    of the task wins over the task-type heuristics.
//! 2. **Side** (the earlier system's `select_backend()`): the matching rule's
//!    `prefer`, else cloud when complexity >= `complexity_threshold`, else
//!    local. The user's `prefer` replaces that side unless the side cannot
//!    serve (no enabled backend, or every breaker open).
//! 3. **Side cannot serve**: cloud → local with [`FALLBACK_TO_LOCAL`]
//!    (unless `failover.cloud_unreachable: fail`: then
//!    [`RoutingError::NoBackend`]); local → cloud with [`FALLBACK_TO_CLOUD`].
//!    Neither side can serve: [`RoutingError::NoBackend`].
//! 4. **Tier**: cloud side → L2, or L3 when `context_tokens >
//!    tiers.large_context_tokens` (no live L3: L2 with
//!    [`LARGE_CONTEXT_TO_L2`]; no live L2: L3 with [`L2_UNAVAILABLE_TO_L3`]).
//!    Local side → L1, except: load above `tiers.high_load_percent` → L2 when
//!    an L2 backend is live and the user did not prefer local
//!    ([`HIGH_LOAD_TO_L2`], the earlier system's "Rule B"); free model memory
//!    `Some(0)` → `failover.vram_exhausted`: `degrade_to_tiny` keeps L1 and
//!    notes [`DEGRADE_TO_TINY`] (the router then asks the model manager for
//!    the tiny model; the policy only records it), `fail` →
//!    [`RoutingError::NoBackend`].
//! 5. **Chain**: the tier's live backends (from `routing.chains[tier]`, or
//!    the enabled backends of that tier in name order), then the failover
//!    tail: after L2 or L3, the live L1 backends when
//!    `cloud_unreachable: fallback_to_local` (or the task is a local one
//!    sent to L2 by load); after L1, the live L2 backends unless the user
//!    preferred local (a local task may spill to fast cloud, never to the
//!    expensive large-context tier, and never against the user's wish).
//!    The first entry of a chain is always a backend of [`Decision::tier`].

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use regex::Regex;

use crate::config::{BackendSettings, Prefer, RoutingSettings, Tier};

/// Fallback: the cloud side could not serve, local answers
/// (`failover.cloud_unreachable: fallback_to_local`, the earlier system's name).
pub(crate) const FALLBACK_TO_LOCAL: &str = "fallback_to_local";
/// Fallback: the local side could not serve (no live L1 backend), cloud answers.
pub(crate) const FALLBACK_TO_CLOUD: &str = "fallback_to_cloud";
/// Fallback: local model memory is exhausted, the tiny model answers
/// (`failover.vram_exhausted: degrade_to_tiny`, the earlier system's name).
pub(crate) const DEGRADE_TO_TINY: &str = "degrade_to_tiny";
/// Fallback: local load above `tiers.high_load_percent`, fast cloud answers.
pub(crate) const HIGH_LOAD_TO_L2: &str = "high_load_to_l2";
/// Fallback: a large context wanted L3 but no L3 backend is live.
pub(crate) const LARGE_CONTEXT_TO_L2: &str = "large_context_to_l2";
/// Fallback: a cloud task wanted L2 but only L3 backends are live.
pub(crate) const L2_UNAVAILABLE_TO_L3: &str = "l2_unavailable_to_l3";

/// Everything one routing decision looks at, besides the breakers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteInput<'a> {
    /// The task type (the envelope's `type`), e.g. `code_generation`.
    pub task_type: &'a str,
    /// Complexity 0.0–1.0 given explicitly by the task; wins over rules.
    /// Values outside the range are clamped, NaN is ignored.
    pub complexity: Option<f64>,
    /// The agent spec's default complexity 0.0–1.0 (`runtime.complexity`),
    /// used when neither the task nor a rule gives one.
    pub agent_complexity: f64,
    /// Tokens in the prompt (system prompt and conversation), estimated.
    pub context_tokens: u32,
    /// The user's preference (the envelope's `prefer`).
    pub prefer: Option<Prefer>,
    /// Local system load, percent 0–100 (SystemDigitalTwin); `None`: unknown.
    pub local_load_percent: Option<f64>,
    /// Free memory for local models, bytes (VRAMOptimizerAgent); `None`:
    /// unknown, not a constraint. Pass `None` when L1 has no embedded backend.
    pub free_model_memory_bytes: Option<u64>,
}

impl<'a> RouteInput<'a> {
    /// An input with only the task type and the agent's default complexity:
    /// no explicit complexity, empty context, no preference, unknown load and memory.
    pub fn new(task_type: &'a str, agent_complexity: f64) -> RouteInput<'a> {
        RouteInput {
            task_type,
            complexity: None,
            agent_complexity,
            context_tokens: 0,
            prefer: None,
            local_load_percent: None,
            free_model_memory_bytes: None,
        }
    }
}

/// Where a decision's complexity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplexitySource {
    /// The task's explicit `complexity`.
    Explicit,
    /// The rule at this index of `routing.rules`.
    Rule(usize),
    /// The agent spec's default.
    AgentDefault,
}

impl ComplexitySource {
    /// `explicit`, `rule` or `agent_default` (for receipts and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            ComplexitySource::Explicit => "explicit",
            ComplexitySource::Rule(_) => "rule",
            ComplexitySource::AgentDefault => "agent_default",
        }
    }
}

/// The outcome of one routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The chosen tier; `chain[0]` belongs to it.
    pub tier: Tier,
    /// Backend names to try in order, failover tail included; never empty.
    pub chain: Vec<String>,
    /// The complexity used, 0.0–1.0.
    pub complexity: f64,
    /// Where `complexity` came from.
    pub complexity_source: ComplexitySource,
    /// Short human text, e.g. `rule code_generation: complexity 0.90 >= 0.70,
    /// cloud preferred by rule; tier L2`.
    pub reason: String,
    /// Failover steps applied, in order, from the closed set of this
    /// module's constants ([`FALLBACK_TO_LOCAL`], [`HIGH_LOAD_TO_L2`], ...).
    pub fallbacks: Vec<String>,
}

/// One thing wrong with `routing:` or a chain's backends.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    /// `complexity_threshold` is not within 0.0..=1.0.
    #[error("routing.complexity_threshold: {value} is outside 0.0..=1.0")]
    ThresholdOutOfRange {
        /// The configured value.
        value: f64,
    },
    /// A rule's pattern is not a valid regex.
    #[error("routing.rules[{index}]: pattern {pattern:?} is not a valid regex: {message}")]
    InvalidPattern {
        /// Index in `routing.rules`.
        index: usize,
        /// The pattern as configured.
        pattern: String,
        /// The regex crate's message.
        message: String,
    },
    /// A rule's complexity is not within 0.0..=1.0.
    #[error("routing.rules[{index}] ({pattern}): complexity {value} is outside 0.0..=1.0")]
    ComplexityOutOfRange {
        /// Index in `routing.rules`.
        index: usize,
        /// The rule's pattern.
        pattern: String,
        /// The configured value.
        value: f64,
    },
    /// A chain names a backend that `backends:` does not have.
    #[error("routing.chains.{tier:?}: unknown backend {backend:?}")]
    UnknownBackend {
        /// The chain's tier.
        tier: Tier,
        /// The name as configured.
        backend: String,
    },
    /// A chain names a backend of another tier (local and cloud would mix).
    #[error("routing.chains.{tier:?}: backend {backend:?} has tier {backend_tier:?}")]
    TierMismatch {
        /// The chain's tier.
        tier: Tier,
        /// The backend.
        backend: String,
        /// The backend's own tier.
        backend_tier: Tier,
    },
    /// A chain names the same backend twice.
    #[error("routing.chains.{tier:?}: backend {backend:?} is listed twice")]
    DuplicateBackend {
        /// The chain's tier.
        tier: Tier,
        /// The backend.
        backend: String,
    },
    /// A `failover:` value is not one of the known policies.
    #[error("routing.failover.{key}: unknown value {value:?} (expected {expected})")]
    UnknownFailover {
        /// `cloud_unreachable` or `vram_exhausted`.
        key: &'static str,
        /// The value as configured.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

/// Errors of the routing policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    /// The routing settings are invalid; every problem is listed.
    #[error("invalid routing configuration: {}", ProblemList(.problems))]
    InvalidConfig {
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
    /// No enabled backend with a closed (or probe-ready) breaker can serve the task.
    #[error("no backend can serve task type {task_type:?}: {reason}")]
    NoBackend {
        /// The task type routed.
        task_type: String,
        /// Why, e.g. `no live backend in L1, L2 or L3`.
        reason: String,
    },
}

impl RoutingError {
    /// Stable code for the wire and metric labels: `invalid_routing_config`, `no_backend`.
    pub fn code(&self) -> &'static str {
        match self {
            RoutingError::InvalidConfig { .. } => "invalid_routing_config",
            RoutingError::NoBackend { .. } => "no_backend",
        }
    }
}

/// Formats problems as `a; b; c`.
struct ProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `Tier` as text (`L1`, `L2`, `L3`), for reasons and metric labels.
pub fn tier_str(tier: Tier) -> &'static str {
    match tier {
        Tier::L1 => "L1",
        Tier::L2 => "L2",
        Tier::L3 => "L3",
    }
}

fn side_str(side: Prefer) -> &'static str {
    match side {
        Prefer::Local => "local",
        Prefer::Cloud => "cloud",
    }
}

const TIERS: [Tier; 3] = [Tier::L1, Tier::L2, Tier::L3];

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::L1 => 0,
        Tier::L2 => 1,
        Tier::L3 => 2,
    }
}

/// `failover.cloud_unreachable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloudUnreachable {
    FallbackToLocal,
    Fail,
}

/// `failover.vram_exhausted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VramExhausted {
    DegradeToTiny,
    Fail,
}

/// A rule with its regex compiled (anchored at both ends).
#[derive(Debug, Clone)]
struct CompiledRule {
    /// The pattern as configured, for reasons.
    pattern: String,
    regex: Regex,
    complexity: f64,
    prefer: Option<Prefer>,
}

/// The compiled routing policy: validated rules, tier chains, thresholds.
/// Cheap to share (`Arc<Policy>`); [`Policy::decide`] takes `&self`.
#[derive(Debug, Clone)]
pub struct Policy {
    threshold: f64,
    rules: Vec<CompiledRule>,
    large_context_tokens: u32,
    high_load_percent: f64,
    cloud_unreachable: CloudUnreachable,
    vram_exhausted: VramExhausted,
    /// Every enabled backend some chain names, once each.
    names: Vec<String>,
    /// Per tier (L1, L2, L3), indexes into `names`, in chain order.
    chains: [Vec<usize>; 3],
}

impl Policy {
    /// Compiles and validates `routing` against the configured `backends`.
    /// Disabled backends are dropped from the chains here; a tier without a
    /// `routing.chains` entry takes its enabled backends in name order.
    ///
    /// # Errors
    /// [`RoutingError::InvalidConfig`] listing every problem at once: a
    /// threshold or rule complexity outside 0.0..=1.0, a pattern that is not a
    /// regex, a chain naming an unknown backend, a backend of another tier or
    /// the same backend twice, an unknown `failover` value.
    pub fn new(
        routing: &RoutingSettings,
        backends: &BTreeMap<String, BackendSettings>,
    ) -> Result<Policy, RoutingError> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&routing.complexity_threshold) {
            problems.push(ConfigProblem::ThresholdOutOfRange { value: routing.complexity_threshold });
        }
        let mut rules = Vec::with_capacity(routing.rules.len());
        for (index, rule) in routing.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.complexity) {
                problems.push(ConfigProblem::ComplexityOutOfRange {
                    index,
                    pattern: rule.pattern.clone(),
                    value: rule.complexity,
                });
            }
            match Regex::new(&format!("^(?:{})$", rule.pattern)) {
                Ok(regex) => rules.push(CompiledRule {
                    pattern: rule.pattern.clone(),
                    regex,
                    complexity: rule.complexity,
                    prefer: rule.prefer,
                }),
                Err(e) => problems.push(ConfigProblem::InvalidPattern {
                    index,
                    pattern: rule.pattern.clone(),
                    message: e.to_string(),
                }),
            }
        }
        let cloud_unreachable = match routing.failover.cloud_unreachable.as_str() {
            "fallback_to_local" => CloudUnreachable::FallbackToLocal,
            "fail" => CloudUnreachable::Fail,
            other => {
                problems.push(ConfigProblem::UnknownFailover {
                    key: "cloud_unreachable",
                    value: other.to_string(),
                    expected: "fallback_to_local or fail",
                });
                CloudUnreachable::FallbackToLocal
            }
        };
        let vram_exhausted = match routing.failover.vram_exhausted.as_str() {
            "degrade_to_tiny" => VramExhausted::DegradeToTiny,
            "fail" => VramExhausted::Fail,
            other => {
                problems.push(ConfigProblem::UnknownFailover {
                    key: "vram_exhausted",
                    value: other.to_string(),
                    expected: "degrade_to_tiny or fail",
                });
                VramExhausted::DegradeToTiny
            }
        };

        let mut names: Vec<String> = Vec::new();
        let mut chains: [Vec<usize>; 3] = Default::default();
        for tier in TIERS {
            let chain = &mut chains[tier_index(tier)];
            let Some(listed) = routing.chains.get(&tier) else {
                for (name, backend) in backends {
                    if backend.tier == tier && backend.enabled {
                        names.push(name.clone());
                        chain.push(names.len() - 1);
                    }
                }
                continue;
            };
            for (position, name) in listed.iter().enumerate() {
                match backends.get(name) {
                    None => problems.push(ConfigProblem::UnknownBackend { tier, backend: name.clone() }),
                    Some(b) if b.tier != tier => {
                        problems.push(ConfigProblem::TierMismatch { tier, backend: name.clone(), backend_tier: b.tier })
                    }
                    Some(_) if listed[..position].contains(name) => {
                        problems.push(ConfigProblem::DuplicateBackend { tier, backend: name.clone() })
                    }
                    Some(b) => {
                        if b.enabled {
                            names.push(name.clone());
                            chain.push(names.len() - 1);
                        }
                    }
                }
            }
        }

        if !problems.is_empty() {
            return Err(RoutingError::InvalidConfig { problems });
        }
        Ok(Policy {
            threshold: routing.complexity_threshold,
            rules,
            large_context_tokens: routing.tiers.large_context_tokens,
            high_load_percent: routing.tiers.high_load_percent,
            cloud_unreachable,
            vram_exhausted,
            names,
            chains,
        })
    }

    /// Every backend a decision may name, once each (the router keeps one
    /// breaker per name).
    pub fn backends(&self) -> &[String] {
        &self.names
    }

    /// The enabled backends of `tier`, in chain order (breakers not consulted).
    #[cfg(test)]
    pub(crate) fn tier_backends(&self, tier: Tier) -> impl Iterator<Item = &str> {
        self.chains[tier_index(tier)].iter().map(|&i| self.names[i].as_str())
    }

    /// Decides the tier and the backend chain for one model call (the steps
    /// are in the module docs). `available(name)` says whether the backend's
    /// breaker lets a call through now; it is called at most once per
    /// backend of [`Policy::backends`] and must not change state (use
    /// [`CircuitBreaker::would_allow`](super::breaker::CircuitBreaker::would_allow),
    /// not `allow`: the router calls `allow` when it actually tries a
    /// backend).
    ///
    /// # Errors
    /// [`RoutingError::NoBackend`] when no live backend can serve: neither
    /// side has one, the cloud side has none and `failover.cloud_unreachable`
    /// is `fail`, or local model memory is exhausted and
    /// `failover.vram_exhausted` is `fail`.
    pub fn decide(&self, input: &RouteInput<'_>, available: &dyn Fn(&str) -> bool) -> Result<Decision, RoutingError> {
        let no_backend = |reason: String| RoutingError::NoBackend { task_type: input.task_type.to_string(), reason };

        // 1. Complexity, and the rule (if any) that gave it.
        let explicit = input.complexity.filter(|c| !c.is_nan()).map(|c| c.clamp(0.0, 1.0));
        let (complexity, source, rule) = match explicit {
            Some(c) => (c, ComplexitySource::Explicit, None),
            None => match self.rules.iter().position(|r| r.regex.is_match(input.task_type)) {
                Some(i) => (self.rules[i].complexity, ComplexitySource::Rule(i), Some(&self.rules[i])),
                None => (input.agent_complexity.clamp(0.0, 1.0), ComplexitySource::AgentDefault, None),
            },
        };

        // 2. Side: rule, else threshold; the user's preference replaces it.
        let by_threshold = if complexity >= self.threshold { Prefer::Cloud } else { Prefer::Local };
        let rule_side = rule.and_then(|r| r.prefer);
        let base = rule_side.unwrap_or(by_threshold);
        let wanted = input.prefer.unwrap_or(base);

        let ok: Vec<bool> = self.names.iter().map(|n| available(n)).collect();
        let live = |tier: Tier| self.chains[tier_index(tier)].iter().any(|&i| ok[i]);
        let (l1, l2, l3) = (live(Tier::L1), live(Tier::L2), live(Tier::L3));
        let can_serve = |side: Prefer| match side {
            Prefer::Local => l1,
            Prefer::Cloud => l2 || l3,
        };

        // 3. A side that cannot serve hands over to the other one.
        let mut fallbacks: Vec<String> = Vec::new();
        let side = if can_serve(wanted) {
            wanted
        } else {
            match wanted {
                Prefer::Cloud if self.cloud_unreachable == CloudUnreachable::Fail => {
                    return Err(no_backend(
                        "no live backend in L2 or L3 and failover.cloud_unreachable is fail".into(),
                    ));
                }
                Prefer::Cloud if l1 => {
                    fallbacks.push(FALLBACK_TO_LOCAL.to_string());
                    Prefer::Local
                }
                Prefer::Local if l2 || l3 => {
                    fallbacks.push(FALLBACK_TO_CLOUD.to_string());
                    Prefer::Cloud
                }
                _ => return Err(no_backend("no live backend in L1, L2 or L3".into())),
            }
        };

        // 4. Tier.
        let tier = match side {
            Prefer::Local => {
                let busy = input.local_load_percent.is_some_and(|load| load > self.high_load_percent);
                if busy && l2 && input.prefer != Some(Prefer::Local) {
                    fallbacks.push(HIGH_LOAD_TO_L2.to_string());
                    Tier::L2
                } else {
                    if input.free_model_memory_bytes == Some(0) {
                        match self.vram_exhausted {
                            VramExhausted::DegradeToTiny => fallbacks.push(DEGRADE_TO_TINY.to_string()),
                            VramExhausted::Fail => {
                                return Err(no_backend(
                                    "local model memory exhausted and failover.vram_exhausted is fail".into(),
                                ));
                            }
                        }
                    }
                    Tier::L1
                }
            }
            Prefer::Cloud => {
                let large = input.context_tokens > self.large_context_tokens;
                if large && l3 {
                    Tier::L3
                } else if large {
                    fallbacks.push(LARGE_CONTEXT_TO_L2.to_string());
                    Tier::L2
                } else if l2 {
                    Tier::L2
                } else {
                    fallbacks.push(L2_UNAVAILABLE_TO_L3.to_string());
                    Tier::L3
                }
            }
        };

        // 5. Chain: the tier's live backends, then the failover tail.
        let mut chain = Vec::with_capacity(self.names.len());
        let mut append = |tier: Tier| {
            for &i in &self.chains[tier_index(tier)] {
                if ok[i] {
                    chain.push(self.names[i].clone());
                }
            }
        };
        append(tier);
        match tier {
            Tier::L1 if input.prefer != Some(Prefer::Local) => append(Tier::L2),
            Tier::L1 => {}
            Tier::L2 | Tier::L3 => {
                if self.cloud_unreachable == CloudUnreachable::FallbackToLocal || side == Prefer::Local {
                    append(Tier::L1)
                }
            }
        }
        debug_assert!(!chain.is_empty(), "a tier is chosen only when it has a live backend");

        // The reason, e.g. "rule code_generation: complexity 0.90 >= 0.70, cloud preferred by rule; tier L2".
        let mut reason = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = match (source, rule) {
            (ComplexitySource::Rule(_), Some(r)) => write!(reason, "rule {}", r.pattern),
            (ComplexitySource::Explicit, _) => write!(reason, "explicit"),
            _ => write!(reason, "agent default"),
        };
        let op = if complexity >= self.threshold { ">=" } else { "<" };
        let _ = write!(reason, ": complexity {complexity:.2} {op} {:.2}, {}", self.threshold, side_str(base));
        let _ = write!(reason, "{}", if rule_side.is_some() { " preferred by rule" } else { " by threshold" });
        if let Some(p) = input.prefer {
            let _ = write!(reason, ", user prefers {}", side_str(p));
        }
        for f in &fallbacks {
            let _ = write!(reason, ", {f}");
        }
        let _ = write!(reason, "; tier {}", tier_str(tier));

        Ok(Decision { tier, chain, complexity, complexity_source: source, reason, fallbacks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendKind, RoutingRule};

    fn backend(kind: BackendKind, tier: Tier, enabled: bool) -> BackendSettings {
        let yaml = format!(
            "kind: {}\ntier: {tier:?}\nenabled: {enabled}\nmodel: m\n",
            match kind {
                BackendKind::Openai => "openai",
                BackendKind::Embedded => "embedded",
            }
        );
        // A literal document of the schema: cannot fail unless the schema changes.
        serde_norway::from_str(&yaml).expect("backend settings parse")
    }

    /// One backend per tier: `local` (L1, embedded), `fast` (L2), `large` (L3).
    fn backends() -> BTreeMap<String, BackendSettings> {
        BTreeMap::from([
            ("local".to_string(), backend(BackendKind::Embedded, Tier::L1, true)),
            ("fast".to_string(), backend(BackendKind::Openai, Tier::L2, true)),
            ("large".to_string(), backend(BackendKind::Openai, Tier::L3, true)),
        ])
    }

    fn policy() -> Policy {
        Policy::new(&RoutingSettings::default(), &backends()).expect("default routing is valid")
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn all(_: &str) -> bool {
        true
    }

    fn decide(p: &Policy, input: RouteInput<'_>) -> Decision {
        p.decide(&input, &all).expect("a backend serves")
    }

    #[test]
    fn every_default_rule() {
        let p = policy();
        let cases = [
            ("code_generation", 0.9, Tier::L2, 0),
            ("large_context_reasoning", 0.95, Tier::L2, 1),
            ("training", 1.0, Tier::L2, 2),
            ("fine_tuning", 1.0, Tier::L2, 2),
            ("simple_chat", 0.2, Tier::L1, 3),
            ("greeting", 0.2, Tier::L1, 3),
            ("command_parsing", 0.3, Tier::L1, 4),
            ("emotion_detection", 0.4, Tier::L1, 5),
        ];
        for (task, complexity, tier, rule) in cases {
            // An agent default on the other side of the threshold: the rule must win.
            let agent = if tier == Tier::L1 { 0.99 } else { 0.01 };
            let d = decide(&p, RouteInput::new(task, agent));
            assert_eq!(d.tier, tier, "{task}: {}", d.reason);
            assert_eq!(d.complexity, complexity, "{task}");
            assert_eq!(d.complexity_source, ComplexitySource::Rule(rule), "{task}");
            assert!(d.fallbacks.is_empty(), "{task}: {:?}", d.fallbacks);
        }
        let d = decide(&p, RouteInput::new("code_generation", 0.5));
        assert_eq!(d.chain, ["fast", "local"]);
        assert_eq!(d.reason, "rule code_generation: complexity 0.90 >= 0.70, cloud preferred by rule; tier L2");
        let d = decide(&p, RouteInput::new("greeting", 0.5));
        assert_eq!(d.chain, ["local", "fast"]);
    }

    #[test]
    fn rules_match_the_whole_task_type() {
        let p = policy();
        let d = decide(&p, RouteInput::new("code_generation_v2", 0.1));
        assert_eq!(d.complexity_source, ComplexitySource::AgentDefault);
        assert_eq!(d.tier, Tier::L1);
        let d = decide(&p, RouteInput::new("pretraining", 0.1));
        assert_eq!(d.complexity_source, ComplexitySource::AgentDefault);
    }

    #[test]
    fn threshold_on_the_agent_default() {
        let p = policy();
        let d = decide(&p, RouteInput::new("complex_analysis", 0.75));
        assert_eq!((d.tier, d.complexity_source), (Tier::L2, ComplexitySource::AgentDefault));
        assert_eq!(d.reason, "agent default: complexity 0.75 >= 0.70, cloud by threshold; tier L2");
        let d = decide(&p, RouteInput::new("basic_qa", 0.5));
        assert_eq!((d.tier, d.complexity), (Tier::L1, 0.5));
        // Exactly at the threshold: cloud.
        assert_eq!(decide(&p, RouteInput::new("x", 0.7)).tier, Tier::L2);
    }

    #[test]
    fn explicit_complexity_wins_over_a_rule() {
        let p = policy();
        let d = decide(&p, RouteInput { complexity: Some(0.1), ..RouteInput::new("code_generation", 0.9) });
        assert_eq!((d.tier, d.complexity, d.complexity_source), (Tier::L1, 0.1, ComplexitySource::Explicit));
        let d = decide(&p, RouteInput { complexity: Some(0.8), ..RouteInput::new("greeting", 0.2) });
        assert_eq!((d.tier, d.complexity_source), (Tier::L2, ComplexitySource::Explicit));
        // Out of range is clamped, NaN ignored.
        let d = decide(&p, RouteInput { complexity: Some(7.0), ..RouteInput::new("greeting", 0.2) });
        assert_eq!(d.complexity, 1.0);
        let d = decide(&p, RouteInput { complexity: Some(f64::NAN), ..RouteInput::new("greeting", 0.9) });
        assert_eq!(d.complexity_source, ComplexitySource::Rule(3));
    }

    #[test]
    fn user_prefers_local_on_a_heavy_task() {
        let p = policy();
        let d = decide(&p, RouteInput { prefer: Some(Prefer::Local), ..RouteInput::new("training", 0.5) });
        assert_eq!(d.tier, Tier::L1);
        // The user asked for local: no cloud tail.
        assert_eq!(d.chain, ["local"]);
        assert!(d.fallbacks.is_empty());
        assert!(d.reason.contains("user prefers local"), "{}", d.reason);
    }

    #[test]
    fn user_prefers_cloud_on_a_light_task() {
        let p = policy();
        let d = decide(&p, RouteInput { prefer: Some(Prefer::Cloud), ..RouteInput::new("greeting", 0.2) });
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L2, ["fast", "local"].to_vec()));
    }

    #[test]
    fn user_prefers_cloud_without_cloud_falls_back_to_local() {
        let mut b = backends();
        b.get_mut("fast").unwrap().enabled = false;
        b.get_mut("large").unwrap().enabled = false;
        let p = Policy::new(&RoutingSettings::default(), &b).unwrap();
        let d = decide(&p, RouteInput { prefer: Some(Prefer::Cloud), ..RouteInput::new("greeting", 0.2) });
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L1, ["local"].to_vec()));
        assert_eq!(d.fallbacks, [FALLBACK_TO_LOCAL]);
        // A heavy task too, by default.
        let d = decide(&p, RouteInput::new("code_generation", 0.5));
        assert_eq!((d.tier, strs(&d.fallbacks)), (Tier::L1, [FALLBACK_TO_LOCAL].to_vec()));
        // Unless failover says fail.
        let mut routing = RoutingSettings::default();
        routing.failover.cloud_unreachable = "fail".into();
        let p = Policy::new(&routing, &b).unwrap();
        let err = p.decide(&RouteInput::new("code_generation", 0.5), &all).unwrap_err();
        assert_eq!(err.code(), "no_backend");
    }

    #[test]
    fn user_prefers_local_without_local_falls_back_to_cloud() {
        let p = policy();
        let d = p
            .decide(&RouteInput { prefer: Some(Prefer::Local), ..RouteInput::new("greeting", 0.2) }, &|n| n != "local")
            .unwrap();
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L2, ["fast"].to_vec()));
        assert_eq!(d.fallbacks, [FALLBACK_TO_CLOUD]);
    }

    #[test]
    fn large_context_goes_to_l3() {
        let p = policy();
        let input = RouteInput { context_tokens: 32_001, ..RouteInput::new("large_context_reasoning", 0.5) };
        let d = decide(&p, input);
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L3, ["large", "local"].to_vec()));
        // At the limit: L2.
        assert_eq!(decide(&p, RouteInput { context_tokens: 32_000, ..input }).tier, Tier::L2);
        // No live L3: L2 with a note.
        let d = p.decide(&input, &|n| n != "large").unwrap();
        assert_eq!((d.tier, strs(&d.fallbacks)), (Tier::L2, [LARGE_CONTEXT_TO_L2].to_vec()));
    }

    #[test]
    fn l2_down_sends_cloud_tasks_to_l3() {
        let p = policy();
        let d = p.decide(&RouteInput::new("code_generation", 0.5), &|n| n != "fast").unwrap();
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L3, ["large", "local"].to_vec()));
        assert_eq!(d.fallbacks, [L2_UNAVAILABLE_TO_L3]);
    }

    #[test]
    fn high_load_sends_local_tasks_to_l2() {
        let p = policy();
        let busy = RouteInput { local_load_percent: Some(95.0), ..RouteInput::new("greeting", 0.2) };
        let d = decide(&p, busy);
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L2, ["fast", "local"].to_vec()));
        assert_eq!(d.fallbacks, [HIGH_LOAD_TO_L2]);
        // At the limit: still local.
        assert_eq!(decide(&p, RouteInput { local_load_percent: Some(90.0), ..busy }).tier, Tier::L1);
        // The user asked for local: stays local.
        assert_eq!(decide(&p, RouteInput { prefer: Some(Prefer::Local), ..busy }).tier, Tier::L1);
        // No live L2: stays local.
        assert_eq!(p.decide(&busy, &|n| n != "fast").unwrap().tier, Tier::L1);
    }

    #[test]
    fn exhausted_model_memory_degrades_to_tiny() {
        let p = policy();
        let input = RouteInput { free_model_memory_bytes: Some(0), ..RouteInput::new("greeting", 0.2) };
        let d = decide(&p, input);
        assert_eq!((d.tier, strs(&d.fallbacks)), (Tier::L1, [DEGRADE_TO_TINY].to_vec()));
        assert!(decide(&p, RouteInput { free_model_memory_bytes: Some(1), ..input }).fallbacks.is_empty());
        let mut routing = RoutingSettings::default();
        routing.failover.vram_exhausted = "fail".into();
        let p = Policy::new(&routing, &backends()).unwrap();
        assert!(matches!(p.decide(&input, &all), Err(RoutingError::NoBackend { .. })));
    }

    #[test]
    fn open_breakers_are_skipped() {
        let mut b = backends();
        b.insert("fast2".into(), backend(BackendKind::Openai, Tier::L2, true));
        let p = Policy::new(&RoutingSettings::default(), &b).unwrap();
        let d = decide(&p, RouteInput::new("code_generation", 0.5));
        assert_eq!(d.chain, ["fast", "fast2", "local"]);
        let d = p.decide(&RouteInput::new("code_generation", 0.5), &|n| n != "fast").unwrap();
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L2, ["fast2", "local"].to_vec()));
        assert!(d.fallbacks.is_empty());
        // Every cloud breaker open: fallback to local.
        let d = p.decide(&RouteInput::new("code_generation", 0.5), &|n| n == "local").unwrap();
        assert_eq!((d.tier, strs(&d.chain)), (Tier::L1, ["local"].to_vec()));
        assert_eq!(d.fallbacks, [FALLBACK_TO_LOCAL]);
    }

    #[test]
    fn all_unavailable_is_no_backend() {
        let p = policy();
        let err = p.decide(&RouteInput::new("greeting", 0.2), &|_| false).unwrap_err();
        assert_eq!(err.code(), "no_backend");
        assert!(err.to_string().contains("greeting"), "{err}");
        let empty = Policy::new(&RoutingSettings::default(), &BTreeMap::new()).unwrap();
        assert!(matches!(
            empty.decide(&RouteInput::new("code_generation", 0.5), &all),
            Err(RoutingError::NoBackend { .. })
        ));
    }

    #[test]
    fn configured_chains_keep_their_order_and_drop_disabled() {
        let mut b = backends();
        b.insert("a_fast".into(), backend(BackendKind::Openai, Tier::L2, true));
        b.insert("off".into(), backend(BackendKind::Openai, Tier::L2, false));
        let mut routing = RoutingSettings::default();
        routing.chains.insert(Tier::L2, vec!["fast".into(), "off".into(), "a_fast".into()]);
        let p = Policy::new(&routing, &b).unwrap();
        assert_eq!(p.tier_backends(Tier::L2).collect::<Vec<_>>(), ["fast", "a_fast"]);
        // Without a chain: name order, disabled dropped.
        let p = Policy::new(&RoutingSettings::default(), &b).unwrap();
        assert_eq!(p.tier_backends(Tier::L2).collect::<Vec<_>>(), ["a_fast", "fast"]);
        assert_eq!(p.backends().len(), 4);
    }

    #[test]
    fn invalid_config_reports_every_problem() {
        let mut routing = RoutingSettings { complexity_threshold: 1.5, ..RoutingSettings::default() };
        routing.rules.push(RoutingRule { pattern: "code(".into(), complexity: 0.5, prefer: None });
        routing.rules.push(RoutingRule { pattern: "x".into(), complexity: -0.1, prefer: None });
        routing.chains.insert(Tier::L2, vec!["nowhere".into(), "local".into(), "fast".into(), "fast".into()]);
        routing.failover.cloud_unreachable = "pray".into();
        let err = Policy::new(&routing, &backends()).unwrap_err();
        assert_eq!(err.code(), "invalid_routing_config");
        let RoutingError::InvalidConfig { problems } = &err else { panic!("{err}") };
        assert_eq!(problems.len(), 7, "{err}");
        assert!(matches!(problems[0], ConfigProblem::ThresholdOutOfRange { .. }));
        assert!(problems.iter().any(|p| matches!(p, ConfigProblem::InvalidPattern { index: 6, .. })));
        assert!(problems.iter().any(|p| matches!(p, ConfigProblem::ComplexityOutOfRange { index: 7, .. })));
        assert!(problems.iter().any(|p| matches!(p, ConfigProblem::UnknownFailover { key: "cloud_unreachable", .. })));
        assert!(problems.contains(&ConfigProblem::UnknownBackend { tier: Tier::L2, backend: "nowhere".into() }));
        assert!(problems.contains(&ConfigProblem::TierMismatch {
            tier: Tier::L2,
            backend: "local".into(),
            backend_tier: Tier::L1
        }));
        assert!(problems.contains(&ConfigProblem::DuplicateBackend { tier: Tier::L2, backend: "fast".into() }));
        assert!(err.to_string().contains("not a valid regex"), "{err}");
    }
}
