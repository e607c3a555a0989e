//! Content-aware routing (issue 15): the kind and complexity of a request
//! estimated from what it says, before the tier is chosen.
//!
//! Where it sits: HybridRouter asks [`ContentRouter::estimate`] in its
//! decision step for calls that opt in (`auto`, `/v1` with `model: auto` or
//! none, task types whose spec sets `content_routing: true`); the arbiter
//! asks it to pick the specialist before asking its model. Pure and
//! synchronous: no I/O after [`ContentRouter::from_yaml`].
//!
//! # How (a semantic router over a lexical embedding)
//!
//! Each route of the YAML (`routes/content.yaml`: complexity, specialist,
//! labelled example utterances) is a set of example vectors. A text becomes
//! a sparse TF-IDF vector of hashed features — lower-cased words, word
//! bigrams, character trigrams inside words, symbol classes (`sym:(`,
//! `<num>`) — L2-normalised. The estimate is the `k` nearest examples by
//! cosine similarity, each voting for its route with its similarity; the
//! route with the most weight wins and its **confidence** is its share of
//! the votes (0 when no example shares a feature). The route's complexity is
//! the estimate's complexity. Below `min_confidence` the caller falls back:
//! the arbiter asks its model, the router keeps the configured complexity.
//!
//! Not built: embeddings from a model (llama.cpp embedding mode of a local
//! GGUF, an OpenAI-compatible `/embeddings` backend). The lexical vectors
//! separate the labelled test set well enough (`cargo test content::` prints
//! the confusion table) at a few microseconds per estimate.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::config::ContentRoutingSettings;
use crate::core::ChatMessage;
pub use crate::core::RouteEstimate;

/// The routes shipped with agentvisor (`routes/content.yaml`).
pub const DEFAULT_ROUTES_YAML: &str = include_str!("../../routes/content.yaml");

/// Nearest examples that vote (tuned on the tuning part of `tests/data/requests.jsonl`).
pub const DEFAULT_K: usize = 5;

/// The arbiter's four specialists (DESIGN §2): the only valid route specialists.
pub const SPECIALISTS: &[&str] = &["CodeGenerator", "ChainOfThoughtAgent", "CognitiveModelAgent", "NLUAgent"];

/// The estimator `settings` describe: `None` when content routing is off.
///
/// # Errors
/// As [`ContentRouter::from_file`] / [`ContentRouter::from_yaml`].
pub fn load(settings: &ContentRoutingSettings) -> Result<Option<ContentRouter>, ContentError> {
    if !settings.enabled {
        return Ok(None);
    }
    let router = match &settings.routes_file {
        Some(path) => ContentRouter::from_file(path, settings.neighbours, SPECIALISTS)?,
        None => ContentRouter::from_yaml(DEFAULT_ROUTES_YAML, settings.neighbours, SPECIALISTS)?,
    };
    Ok(Some(router))
}

/// What a conversation asks: its last user message (empty when none).
pub fn request_text(messages: &[ChatMessage]) -> &str {
    messages.iter().rev().find(|m| m.role == "user").map_or("", |m| m.content.as_str())
}

/// Errors reading a routes file.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The file could not be read.
    #[error("content routes file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// The YAML does not fit the schema, or a route is invalid (every problem listed).
    #[error("content routes: {0}")]
    Invalid(String),
}

impl ContentError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            ContentError::Read { .. } => "config_not_found",
            ContentError::Invalid(_) => "invalid_config",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: BTreeMap<String, RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    complexity: f64,
    specialist: String,
    #[serde(default)]
    description: String,
    examples: Vec<String>,
}

/// One route: what its requests are and who answers them.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Route name (`coding`, `chitchat`, ...).
    pub name: String,
    /// Complexity 0.0–1.0 of its requests.
    pub complexity: f64,
    /// The arbiter's specialist for it (an agent name).
    pub specialist: String,
    /// One line saying what it covers.
    pub description: String,
}

/// A sparse vector: (feature hash, weight), sorted by hash.
type Sparse = Vec<(u64, f32)>;

/// The estimator: routes, their example vectors and the feature weights.
#[derive(Debug)]
pub struct ContentRouter {
    routes: Vec<Route>,
    /// (route index, normalised vector) per example.
    examples: Vec<(usize, Sparse)>,
    /// Inverse document frequency per feature seen in the examples.
    idf: HashMap<u64, f32>,
    /// Nearest examples that vote.
    k: usize,
}

impl ContentRouter {
    /// The routes of `yaml` (the shape of `routes/content.yaml`); the four
    /// specialists are the only valid `specialist` values.
    ///
    /// # Errors
    /// [`ContentError::Invalid`] listing every problem: bad YAML, a
    /// complexity outside 0–1, an unknown specialist, a route without examples.
    pub fn from_yaml(yaml: &str, k: usize, specialists: &[&str]) -> Result<ContentRouter, ContentError> {
        let file: RoutesFile = serde_norway::from_str(yaml).map_err(|e| ContentError::Invalid(e.to_string()))?;
        let mut problems = Vec::new();
        if file.routes.is_empty() {
            problems.push("no routes".to_string());
        }
        let mut routes = Vec::new();
        let mut texts = Vec::new();
        for (name, r) in file.routes {
            if !(0.0..=1.0).contains(&r.complexity) {
                problems.push(format!("{name}: complexity {} is outside 0.0-1.0", r.complexity));
            }
            if !specialists.contains(&r.specialist.as_str()) {
                problems.push(format!(
                    "{name}: specialist {:?} is not one of {}",
                    r.specialist,
                    specialists.join(", ")
                ));
            }
            if r.examples.iter().all(|e| e.trim().is_empty()) {
                problems.push(format!("{name}: no examples"));
            }
            let index = routes.len();
            texts.extend(r.examples.into_iter().filter(|e| !e.trim().is_empty()).map(|e| (index, e)));
            routes.push(Route { name, complexity: r.complexity, specialist: r.specialist, description: r.description });
        }
        if !problems.is_empty() {
            return Err(ContentError::Invalid(problems.join("; ")));
        }
        // Document frequency over the examples, then smoothed IDF.
        let counts: Vec<(usize, HashMap<u64, f32>)> = texts.iter().map(|(i, t)| (*i, features(t))).collect();
        let mut df: HashMap<u64, u32> = HashMap::new();
        for (_, f) in &counts {
            for h in f.keys() {
                *df.entry(*h).or_default() += 1;
            }
        }
        let n = counts.len() as f32;
        let idf: HashMap<u64, f32> =
            df.into_iter().map(|(h, d)| (h, ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)).collect();
        let examples = counts.into_iter().map(|(i, f)| (i, vectorise(f, &idf))).collect();
        Ok(ContentRouter { routes, examples, idf, k: k.max(1) })
    }

    /// The routes of the file at `path`.
    ///
    /// # Errors
    /// [`ContentError::Read`] when it cannot be read; else as [`ContentRouter::from_yaml`].
    pub fn from_file(path: &Path, k: usize, specialists: &[&str]) -> Result<ContentRouter, ContentError> {
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| ContentError::Read { path: path.display().to_string(), error: e.to_string() })?;
        ContentRouter::from_yaml(&yaml, k, specialists)
    }

    /// The routes, in name order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route a text most resembles, its complexity and the confidence
    /// 0.0–1.0 (the winning route's share of the `k` nearest examples'
    /// similarity; 0 when nothing matches). `used` is left `false`: the
    /// caller sets it when the estimate decided.
    pub fn estimate(&self, text: &str) -> RouteEstimate {
        self.estimate_with(text, f64::INFINITY)
    }

    /// As [`ContentRouter::estimate`], with `used` set when the confidence
    /// is at least `min_confidence`.
    pub fn estimate_with(&self, text: &str, min_confidence: f64) -> RouteEstimate {
        let v = vectorise(features(text), &self.idf);
        let mut sims: Vec<(f32, usize)> = self.examples.iter().map(|(r, e)| (dot(&v, e), *r)).collect();
        let k = self.k.min(sims.len());
        if k > 0 {
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        }
        let mut votes = vec![0f32; self.routes.len()];
        for (s, r) in sims.iter().take(k) {
            votes[*r] += s.max(0.0);
        }
        let total: f32 = votes.iter().sum();
        let (best, weight) =
            votes.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or((0, 0.0), |(i, w)| (i, *w));
        let route = &self.routes[best];
        RouteEstimate {
            route: route.name.clone(),
            complexity: route.complexity,
            confidence: if total > 0.0 { f64::from(weight / total) } else { 0.0 },
            specialist: route.specialist.clone(),
            used: false,
        }
        .decided(min_confidence)
    }
}

/// FNV-1a, 64 bit: a stable feature hash (the same on every run and machine).
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Feature counts of a text: words, word bigrams, character trigrams of
/// words (with boundary marks), symbol and number classes.
fn features(text: &str) -> HashMap<u64, f32> {
    let mut f: HashMap<u64, f32> = HashMap::new();
    let mut add = |h: u64, w: f32| *f.entry(h).or_default() += w;
    let lower = text.to_lowercase();
    let mut words: Vec<&str> = Vec::new();
    for token in lower.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '_') {
        let token = token.trim_matches('\'');
        if token.is_empty() {
            continue;
        }
        if token.chars().all(|c| c.is_ascii_digit()) {
            add(hash(&["<num>"]), 1.0);
            continue;
        }
        words.push(token);
    }
    for c in lower.chars().filter(|c| !c.is_alphanumeric() && !c.is_whitespace()) {
        let mut buf = [0u8; 4];
        add(hash(&["sym", c.encode_utf8(&mut buf)]), 0.5);
    }
    for w in &words {
        add(hash(&["w", w]), 1.0);
        let marked: Vec<char> = std::iter::once('^').chain(w.chars()).chain(std::iter::once('$')).collect();
        for tri in marked.windows(3) {
            let s: String = tri.iter().collect();
            add(hash(&["c", &s]), 0.25);
        }
    }
    for pair in words.windows(2) {
        add(hash(&["b", pair[0], pair[1]]), 1.0);
    }
    f
}

/// Sublinear TF × IDF, L2-normalised, sorted by feature. Features unseen
/// in the examples are dropped (they cannot match any example).
fn vectorise(counts: HashMap<u64, f32>, idf: &HashMap<u64, f32>) -> Sparse {
    let mut v: Sparse =
        counts.into_iter().filter_map(|(h, c)| idf.get(&h).map(|w| (h, (1.0 + c.ln().max(0.0)) * w))).collect();
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, w) in &mut v {
            *w /= norm;
        }
    }
    v.sort_unstable_by_key(|(h, _)| *h);
    v
}

/// Dot product of two sorted sparse vectors.
fn dot(a: &Sparse, b: &Sparse) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    s
}

impl RouteEstimate {
    /// Marks the estimate `used` when its confidence reaches `min_confidence`.
    fn decided(mut self, min_confidence: f64) -> RouteEstimate {
        self.used = self.confidence > 0.0 && self.confidence >= min_confidence;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAVY: &[&str] = &["coding", "maths", "reasoning"];
    const LIGHT: &[&str] = &["writing", "roleplay", "chitchat", "humanities"];
    /// The default `routing.complexity_threshold`: at or above, heavy.
    const THRESHOLD: f64 = 0.7;

    fn labelled() -> Vec<(String, String, String)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/requests.jsonl");
        std::fs::read_to_string(path)
            .expect("tests/data/requests.jsonl")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                let s = |k: &str| v[k].as_str().expect("a string field").to_string();
                (s("category"), s("split"), s("text"))
            })
            .collect()
    }

    fn router() -> ContentRouter {
        ContentRouter::from_yaml(DEFAULT_ROUTES_YAML, DEFAULT_K, SPECIALISTS).expect("the shipped routes load")
    }

    #[test]
    fn the_labelled_set_is_split_once_and_the_test_part_is_not_in_the_routes() {
        let rows = labelled();
        assert!(rows.len() >= 200, "{} labelled requests", rows.len());
        let test: Vec<_> = rows.iter().filter(|r| r.1 == "test").collect();
        assert!(test.len() >= 80, "{} test requests", test.len());
        assert!(rows.iter().all(|r| r.1 == "test" || r.1 == "tuning"));
        for (_, _, text) in &test {
            let quoted = serde_json::to_string(text).unwrap();
            assert!(!DEFAULT_ROUTES_YAML.contains(&quoted), "a test request is an example: {text}");
        }
    }

    /// Acceptance: heavy vs light separation on the held-out test part ≥ 85 %.
    /// Prints the per-category confusion table (route chosen per category).
    #[test]
    fn heavy_and_light_separate_on_the_held_out_part() {
        let r = router();
        let mut table: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let (mut right, mut total) = (0, 0);
        let mut per_cat: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (cat, split, text) in labelled() {
            if split != "test" {
                continue;
            }
            let e = r.estimate(&text);
            *table.entry(cat.clone()).or_default().entry(e.route.clone()).or_default() += 1;
            let heavy = HEAVY.contains(&cat.as_str());
            if heavy || LIGHT.contains(&cat.as_str()) {
                let ok = (e.complexity >= THRESHOLD) == heavy;
                total += 1;
                right += usize::from(ok);
                let c = per_cat.entry(cat).or_default();
                c.0 += usize::from(ok);
                c.1 += 1;
            }
        }
        let routes: Vec<&str> = r.routes().iter().map(|x| x.name.as_str()).collect();
        eprintln!("category \\ route | {}", routes.join(" | "));
        for (cat, row) in &table {
            let cells: Vec<String> = routes.iter().map(|x| row.get(*x).copied().unwrap_or(0).to_string()).collect();
            eprintln!("{cat} | {}", cells.join(" | "));
        }
        for (cat, (ok, n)) in &per_cat {
            eprintln!("{cat}: {ok}/{n} on the right side");
        }
        let share = right as f64 / total as f64;
        eprintln!("heavy/light separation on the test part: {right}/{total} = {:.1} %", share * 100.0);
        assert!(share >= 0.85, "separation {share}");
    }

    #[test]
    fn the_route_carries_its_specialist_and_a_confidence() {
        let r = router();
        let e = r.estimate("Write a Python function that sorts a list of tuples by the second element.");
        assert_eq!(e.route, "coding");
        assert_eq!(e.specialist, "CodeGenerator");
        assert!(e.confidence > 0.5, "{e:?}");
        let e = r.estimate("жжж ыыы");
        assert_eq!(e.confidence, 0.0, "nothing in common: no confidence");
        assert!(r.estimate("").confidence == 0.0);
    }

    #[test]
    fn bad_routes_files_list_every_problem() {
        let yaml = "routes:\n  a: {complexity: 1.5, specialist: Poet, examples: []}\n";
        let e = ContentRouter::from_yaml(yaml, 3, SPECIALISTS).unwrap_err().to_string();
        assert!(e.contains("outside") && e.contains("Poet") && e.contains("no examples"), "{e}");
        assert!(ContentRouter::from_yaml("routes: [", 3, SPECIALISTS).is_err());
        assert!(ContentRouter::from_yaml("routes: {}", 3, SPECIALISTS).is_err());
        assert_eq!(
            ContentRouter::from_file(Path::new("/nonexistent/routes.yaml"), 3, SPECIALISTS).unwrap_err().code(),
            "config_not_found"
        );
    }
}
