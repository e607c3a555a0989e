//! UnifiedWebAgent: fetches a web page and answers its readable text and
//! title. State: an HTTP client (reqwest, rustls) and the `web:` settings.
//!
//! | type | input | output |
//! | --- | --- | --- |
//! | `web_fetch` | `{"url", "max_bytes"?, "timeout_seconds"?}` or the URL as text | `{"url", "status", "title", "text", "content_type", "bytes", "truncated", "fetch_seconds"}` |
//!
//! How a fetch goes:
//!
//! 1. The URL's scheme must be in `web.allowed_schemes` and its host match
//!    `web.allowed_hosts` (when not empty), else `forbidden`.
//! 2. The host is resolved; when any of its addresses is not a global
//!    unicast address (private, loopback, link-local, shared, documentation,
//!    multicast, unspecified, ... — the IANA special-purpose registries) and
//!    not inside `web.allowed_networks`, the fetch is `forbidden` (SSRF
//!    protection). The client's own resolver applies the same rule when it
//!    connects, so a DNS answer that changes between the check and the
//!    connection (DNS rebinding) still cannot reach such an address; proxies
//!    from the environment are not used.
//! 3. With `web.respect_robots_txt`, the origin's `/robots.txt` is read
//!    (RFC 9309: a 4xx answer allows everything, a 5xx answer or no answer
//!    disallows everything) and a disallowed path is `forbidden`.
//! 4. The page is requested without automatic redirects: each redirect
//!    (at most `web.max_redirects`) goes through steps 1–3 again.
//! 5. The body is read up to `max_bytes` (the task's, at most
//!    `web.max_bytes`); beyond it the page is cut and `truncated` is true.
//! 6. HTML goes through `dom_smoothie` (a port of Mozilla's readability.js)
//!    for the title and the main text; when it finds no article, the page's
//!    `<title>` and no text. `text/*` and JSON bodies are answered as they
//!    are. Other types get an empty text. Bytes are read as UTF-8 (invalid
//!    sequences replaced).
//!
//! The whole fetch (robots.txt, redirects, body) has `timeout_seconds` (the
//! task's, at most `web.timeout_seconds`). Errors: `forbidden` (scheme, host,
//! address, robots.txt), `fetch_failed` (unreachable, too many redirects,
//! timed out), `invalid_field` (a URL that does not parse). Each outcome is
//! counted (`agentvisor_web_fetches_total{outcome}`) and refusals are logged.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use ipnet::IpNet;
use reqwest::Url;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Unexpected};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::memory::Whole;
use super::{Answer, Behaviour, Text, unknown_type};
use crate::agents::tasks::{OrShort, RustTask, Shorthand, decode, encode, rust_task};
use crate::config::knowledge::WebSettings;
use crate::core::{ErrorCode, Task, TaskError};
use crate::supervisor::StartError;
use crate::telemetry::metrics::Metrics;

/// The agent's name.
pub(crate) const AGENT: &str = "UnifiedWebAgent";

/// Most bytes of a robots.txt read (Google reads 500 KiB; RFC 9309 asks for at least 500 KiB).
const ROBOTS_MAX_BYTES: u64 = 512 * 1024;

/// The task types of UnifiedWebAgent.
pub(crate) fn tasks() -> Vec<RustTask> {
    vec![rust_task::<OrShort<FetchInput>, FetchOutput>(
        "web_fetch",
        "Fetches a web page as readable text and title, within size and time limits (private addresses refused, robots.txt respected)",
        || {
            vec![
                json!({"url": "https://www.rust-lang.org/"}),
                json!({"url": "https://en.wikipedia.org/wiki/Actor_model", "max_bytes": 500000, "timeout_seconds": 10}),
                json!("https://example.org/"),
            ]
        },
    )]
}

/// A page to fetch.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FetchInput {
    /// An absolute URL (`http` or `https` unless configured otherwise).
    url: Text,
    /// Most bytes downloaded, ≥ 1; default and upper bound: `web.max_bytes`.
    #[serde(default)]
    max_bytes: Option<Whole<1, { i64::MAX }>>,
    /// Time limit of the whole fetch, seconds, > 0; default and upper bound:
    /// `web.timeout_seconds`.
    #[serde(default)]
    timeout_seconds: Option<Seconds>,
}

impl Shorthand for FetchInput {
    type Short = Text;
    const SHORT_DESCRIPTION: &'static str = "The URL alone, with the configured limits.";
    fn expand(url: Text) -> FetchInput {
        FetchInput { url, max_bytes: None, timeout_seconds: None }
    }
}

/// A number of seconds, > 0.
pub(crate) struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        if secs > 0.0 && secs.is_finite() {
            Ok(Seconds(secs))
        } else {
            Err(de::Error::invalid_value(Unexpected::Float(secs), &"a number of seconds greater than 0"))
        }
    }
}

impl JsonSchema for Seconds {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Seconds".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "exclusiveMinimum": 0})
    }
}

/// A fetched page.
#[derive(Serialize, JsonSchema)]
struct FetchOutput {
    /// The final URL, after redirects.
    url: String,
    /// The final HTTP status.
    status: u16,
    /// The page's title, when it has one.
    title: Option<String>,
    /// The page's readable text.
    text: String,
    /// The `Content-Type` header, if any.
    content_type: Option<String>,
    /// Bytes of the body downloaded.
    bytes: u64,
    /// True when the body was cut at `max_bytes`.
    truncated: bool,
    /// Time the fetch took, seconds.
    fetch_seconds: f64,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum WebError {
    #[error("input of web_fetch at /url: {0}")]
    BadUrl(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("robots.txt of {origin} disallows {url} for {agent}")]
    Robots { origin: String, url: String, agent: String },
    #[error("fetching {url} took longer than {seconds} s")]
    Timeout { url: String, seconds: f64 },
    #[error("fetching {url}: {reason}")]
    Failed { url: String, reason: String },
}

impl WebError {
    fn code(&self) -> ErrorCode {
        match self {
            WebError::BadUrl(_) => ErrorCode::InvalidField,
            WebError::Forbidden(_) | WebError::Robots { .. } => ErrorCode::Forbidden,
            WebError::Timeout { .. } | WebError::Failed { .. } => ErrorCode::FetchFailed,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            WebError::BadUrl(_) => "invalid_field",
            WebError::Forbidden(_) => "forbidden",
            WebError::Robots { .. } => "robots_denied",
            WebError::Timeout { .. } => "timeout",
            WebError::Failed { .. } => "failed",
        }
    }
}

/// Which addresses may be reached: global unicast ones, and those inside
/// the allowed networks.
#[derive(Debug, Clone)]
struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Why `ip` may not be reached, or `None` when it may.
    fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        special_range(ip)
    }
}

/// The special-purpose range `ip` belongs to (IANA IPv4 and IPv6
/// Special-Purpose Address Registries; multicast), or `None` for a global
/// unicast address.
fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (private)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0] == 0x0064 && s[1] == 0xff9b {
                Some("IPv4/IPv6 translation")
            } else if s[0] == 0x2002 {
                // 6to4 embeds an IPv4 address in bits 16..48.
                special_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
            } else {
                None
            }
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.is_unspecified() || o[0] == 0 {
        Some("\"this network\"")
    } else if v4.is_broadcast() {
        Some("broadcast")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if v4.is_documentation() {
        Some("documentation")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space (carrier-grade NAT)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// The client's resolver: the system's, minus the addresses the policy
/// refuses (an answer with none left is an error).
struct CheckedResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.refuses(a.ip()).is_none()).collect();
            if kept.is_empty() {
                return Err(format!("{host}: no address that may be reached").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The UnifiedWebAgent behaviour.
pub struct WebFetcher {
    settings: Arc<WebSettings>,
    policy: AddressPolicy,
    client: reqwest::Client,
    metrics: Metrics,
    /// What is wrong with the settings (a bad network, a client that did
    /// not build): the start fails with it.
    problem: Option<String>,
}

impl WebFetcher {
    /// The behaviour with `settings`; a bad `web.allowed_networks` entry
    /// makes its start fail, naming the entry.
    pub fn new(settings: WebSettings, metrics: Metrics) -> WebFetcher {
        let mut problems = Vec::new();
        let allowed = settings
            .allowed_networks
            .iter()
            .filter_map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| problems.push(format!("web.allowed_networks: {n:?}: {e}")))
                    .ok()
            })
            .collect();
        let policy = AddressPolicy { allowed };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(settings.user_agent.clone())
            .dns_resolver(Arc::new(CheckedResolver { policy: policy.clone() }))
            .build()
            .unwrap_or_else(|e| {
                problems.push(format!("web client: {e}"));
                reqwest::Client::new()
            });
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        WebFetcher { settings: Arc::new(settings), policy, client, metrics, problem }
    }

    /// Refuses `url` when its scheme, host or any address of its host is not allowed.
    async fn check(&self, url: &Url) -> Result<(), WebError> {
        let s = &self.settings;
        if !s.allowed_schemes.iter().any(|a| a.eq_ignore_ascii_case(url.scheme())) {
            return Err(WebError::Forbidden(format!(
                "{url}: scheme {} is not allowed (web.allowed_schemes: {})",
                url.scheme(),
                s.allowed_schemes.join(", ")
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(WebError::BadUrl(format!("{url} has no host")));
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if !s.allowed_hosts.is_empty() && !s.allowed_hosts.iter().any(|h| host_matches(h, &bare)) {
            return Err(WebError::Forbidden(format!("{url}: host {bare} is not in web.allowed_hosts")));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((bare.as_str(), port))
                .await
                .map_err(|e| WebError::Failed { url: url.to_string(), reason: format!("cannot resolve {bare}: {e}") })?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addrs {
            if let Some(range) = self.policy.refuses(ip) {
                return Err(WebError::Forbidden(format!(
                    "{url}: {bare} resolves to {ip}, a {range} address (allow it in web.allowed_networks)"
                )));
            }
        }
        Ok(())
    }

    /// Obeys the robots.txt of `url`'s origin (RFC 9309).
    async fn robots(&self, url: &Url) -> Result<(), WebError> {
        let Ok(robots_url) = texting_robots::get_robots_url(url.as_str()) else {
            return Ok(());
        };
        let Ok(robots) = Url::parse(&robots_url) else { return Ok(()) };
        let origin = url.origin().ascii_serialization();
        let agent = self.settings.user_agent.clone();
        let denied = || WebError::Robots { origin: origin.clone(), url: url.to_string(), agent: agent.clone() };
        let resp = match self.client.get(robots).send().await {
            Ok(r) => r,
            // Unreachable: complete disallow (RFC 9309 §2.3.1.4).
            Err(_) => return Err(denied()),
        };
        let status = resp.status();
        if status.is_client_error() || status.is_redirection() {
            return Ok(()); // no robots.txt: everything allowed (§2.3.1.3)
        }
        if !status.is_success() {
            return Err(denied()); // 5xx: complete disallow (§2.3.1.4)
        }
        let (body, _) = read_body(resp, ROBOTS_MAX_BYTES).await.map_err(|_| denied())?;
        match texting_robots::Robot::new(&agent, &body) {
            Ok(robot) if robot.allowed(url.as_str()) => Ok(()),
            Ok(_) => Err(denied()),
            Err(_) => Ok(()), // unparsable: no rules
        }
    }

    /// Steps 1–5 of the module doc: the final URL, status, content type, body and whether it was cut.
    async fn download(&self, start: Url, max_bytes: u64) -> Result<Downloaded, WebError> {
        let mut url = start;
        let mut redirects = 0;
        loop {
            self.check(&url).await?;
            if self.settings.respect_robots_txt {
                self.robots(&url).await?;
            }
            let resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| WebError::Failed { url: url.to_string(), reason: error_chain(&e) })?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(location) = resp.headers().get(reqwest::header::LOCATION)
            {
                if redirects == self.settings.max_redirects {
                    return Err(WebError::Failed {
                        url: url.to_string(),
                        reason: format!("more than {} redirects (web.max_redirects)", self.settings.max_redirects),
                    });
                }
                let next = location
                    .to_str()
                    .ok()
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| WebError::Failed { url: url.to_string(), reason: "a bad Location header".into() })?;
                url = next;
                redirects += 1;
                continue;
            }
            let content_type =
                resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (body, truncated) = read_body(resp, max_bytes)
                .await
                .map_err(|e| WebError::Failed { url: url.to_string(), reason: error_chain(&e) })?;
            return Ok(Downloaded { url, status: status.as_u16(), content_type, body, truncated });
        }
    }

    async fn fetch(&self, input: FetchInput) -> Result<FetchOutput, WebError> {
        let t0 = Instant::now();
        let raw = input.url.trimmed();
        let url = Url::parse(&raw).map_err(|e| WebError::BadUrl(format!("{raw:?} is not an absolute URL: {e}")))?;
        let max_bytes =
            input.max_bytes.map_or(self.settings.max_bytes, |Whole(n)| (n as u64).min(self.settings.max_bytes));
        let seconds = input
            .timeout_seconds
            .map_or(self.settings.timeout_seconds, |Seconds(s)| s.min(self.settings.timeout_seconds));
        let d =
            tokio::time::timeout(Duration::from_secs_f64(seconds.max(0.001)), self.download(url.clone(), max_bytes))
                .await
                .map_err(|_| WebError::Timeout { url: url.to_string(), seconds })??;
        let Downloaded { url, status, content_type, body, truncated } = d;
        let bytes = body.len() as u64;
        let ct = content_type.clone().unwrap_or_default().to_ascii_lowercase();
        let page_url = url.to_string();
        let (title, text) = tokio::task::spawn_blocking(move || readable(&ct, &body, &page_url))
            .await
            .map_err(|e| WebError::Failed { url: url.to_string(), reason: format!("text extraction: {e}") })?;
        Ok(FetchOutput {
            url: url.to_string(),
            status,
            title,
            text,
            content_type,
            bytes,
            truncated,
            fetch_seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// A downloaded page.
struct Downloaded {
    url: Url,
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    truncated: bool,
}

/// Whether the allowed-hosts entry `pattern` (`name` or `*.domain`) matches `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
        None => host == pattern,
    }
}

/// The body of `resp`, at most `max` bytes, and whether it went on.
async fn read_body(resp: reqwest::Response, max: u64) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = (max as usize).saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The error and its sources, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Title and readable text of a body of content type `ct` (lowercase).
fn readable(ct: &str, body: &[u8], url: &str) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(body);
    let html = ct.contains("html") || (ct.is_empty() && text.trim_start().starts_with('<'));
    if html {
        let cfg = dom_smoothie::Config { text_mode: dom_smoothie::TextMode::Formatted, ..Default::default() };
        let Ok(mut r) = dom_smoothie::Readability::new(text.as_ref(), Some(url), Some(cfg.clone())) else {
            return (None, String::new());
        };
        match r.parse() {
            Ok(article) => {
                let title = Some(article.title.trim().to_string()).filter(|t| !t.is_empty());
                (title, article.text_content.trim().to_string())
            }
            Err(_) => match dom_smoothie::Readability::new(text.as_ref(), Some(url), Some(cfg)) {
                Ok(r) => (Some(r.get_article_title().trim().to_string()).filter(|t| !t.is_empty()), String::new()),
                Err(_) => (None, String::new()),
            },
        }
    } else if ct.starts_with("text/") || ct.contains("json") || ct.contains("xml") || ct.is_empty() {
        (None, text.into_owned())
    } else {
        (None, String::new())
    }
}

#[async_trait]
impl Behaviour for WebFetcher {
    async fn start(&self) -> Result<(), StartError> {
        match &self.problem {
            Some(reason) => Err(StartError::Failed { agent: AGENT.into(), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    async fn handle(&self, task: Task) -> Answer {
        let t = task.task_type.as_str();
        match t {
            "web_fetch" => {
                let OrShort(input) = decode(t, &task.input).inspect_err(|_| {
                    self.metrics.web_fetches.with_label_values(&["invalid_field"]).inc();
                })?;
                match self.fetch(input).await {
                    Ok(out) => {
                        self.metrics.web_fetches.with_label_values(&["ok"]).inc();
                        encode(t, out)
                    }
                    Err(e) => {
                        self.metrics.web_fetches.with_label_values(&[e.outcome()]).inc();
                        tracing::info!(agent = AGENT, task_id = %task.id, error = %e, "web fetch refused or failed");
                        Err(TaskError::new(e.code(), e.to_string()))
                    }
                }
            }
            _ => Err(unknown_type(AGENT, &task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_refused_unless_allowed() {
        let p = AddressPolicy { allowed: vec![] };
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2002:7f00:1::",
        ] {
            assert!(p.refuses(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(p.refuses(ip.parse().unwrap()).is_none(), "{ip}");
        }
        let p = AddressPolicy { allowed: vec!["127.0.0.1/32".parse().unwrap()] };
        assert!(p.refuses("127.0.0.1".parse().unwrap()).is_none());
        assert!(p.refuses("127.0.0.2".parse().unwrap()).is_some());
    }

    #[test]
    fn hosts_match_exactly_or_by_domain() {
        assert!(host_matches("example.org", "example.org"));
        assert!(!host_matches("example.org", "www.example.org"));
        assert!(host_matches("*.example.org", "www.example.org"));
        assert!(host_matches("*.example.org", "example.org"));
        assert!(!host_matches("*.example.org", "badexample.org"));
    }

    #[test]
    fn html_becomes_title_and_text() {
        let html = "<html><head><title>Hello page</title></head><body><article><h1>Hello</h1>\
            <p>The quick brown fox jumps over the lazy dog. This sentence is here to make the article long enough, \
            with commas, more words, and more words again, so that the readability scorer keeps it.</p></article></body></html>";
        let (title, text) = readable("text/html; charset=utf-8", html.as_bytes(), "http://x.test/");
        assert_eq!(title.as_deref(), Some("Hello page"));
        assert!(text.contains("quick brown fox"), "{text}");
        let (title, text) = readable("text/plain", b"plain words", "http://x.test/");
        assert_eq!((title, text.as_str()), (None, "plain words"));
    }
}
