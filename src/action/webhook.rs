//! The `webhook` action: one HTTP request per URL (Prometheus `/-/reload`, Alertmanager, ...),
//! with an expected status, a timeout and extra headers; the decide stage retries with
//! exponential backoff and jitter. Credentials in a URL (`http://user:pass@host`) become a
//! basic-auth header; the URL is only ever shown as [`WebhookUrl`]'s redacted form.
//! https uses rustls with the system's root certificates.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::Outcome;
use crate::decide::Reload;
use crate::snapshot::Digest;

/// Default request method, as configmap-reload.
pub const DEFAULT_METHOD: &str = "POST";
/// Default expected status.
pub const DEFAULT_STATUS: &str = "2xx";
/// Default time one request may take, response body included.
pub const DEFAULT_TIMEOUT: &str = "5s";
/// Default number of retries after the first attempt.
pub const DEFAULT_RETRIES: &str = "5";
/// Longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// First wait after a failed attempt.
pub const RETRY_FIRST: Duration = Duration::from_millis(500);

#[cfg(feature = "https")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "https"))]
type Connector = HttpConnector;
type HttpsClient = Client<Connector, Empty<Bytes>>;

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The server answered with a status outside the expected range.
    #[error("{method} {url}: status {status}, expected {expected}")]
    Status {
        /// The method.
        method: Method,
        /// The redacted URL.
        url: String,
        /// The status received.
        status: StatusCode,
        /// The expected statuses.
        expected: String,
    },
    /// No complete response within the timeout.
    #[error("{method} {url}: no response within {timeout:?}")]
    Timeout {
        /// The method.
        method: Method,
        /// The redacted URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Connecting, sending or receiving failed (refused, reset, closed early, TLS).
    #[error("{method} {url}: {reason}")]
    Transport {
        /// The method.
        method: Method,
        /// The redacted URL.
        url: String,
        /// The error chain, flattened.
        reason: String,
    },
}

/// A webhook URL: the request URI without credentials, and the basic-auth header they give.
#[derive(Clone)]
pub struct WebhookUrl {
    uri: Uri,
    authorization: Option<HeaderValue>,
    user: Option<String>,
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Shows the URL with any password replaced by `***`.
impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        match (&self.user, &self.authorization) {
            (Some(user), Some(_)) => write!(f, "{scheme}://{user}:***@{authority}{path}"),
            _ => write!(f, "{scheme}://{authority}{path}"),
        }
    }
}

impl FromStr for WebhookUrl {
    type Err = (String, String);

    /// Parses `http(s)://[user[:pass]@]host[:port][/path]`; the error never echoes a password.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = "an http:// or https:// URL, e.g. http://localhost:9090/-/reload";
        let err = |shown: &str| (shown.to_owned(), expected.to_owned());
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| err(raw))?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let shown = format!(
            "{scheme}://{}{host}{path}",
            userinfo.map_or(String::new(), |u| format!(
                "{}:***@",
                u.split(':').next().unwrap_or("")
            ))
        );
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https") || host.is_empty() {
            return Err(err(&shown));
        }
        let path = if path.is_empty() { "/" } else { path };
        let uri: Uri = format!("{scheme}://{host}{path}")
            .parse()
            .map_err(|_| err(&shown))?;
        let (user, authorization) = match userinfo {
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let (user, pass) = (percent_decode(user), percent_decode(pass));
                let token = base64(format!("{user}:{pass}").as_bytes());
                let mut value =
                    HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| err(&shown))?;
                value.set_sensitive(true);
                (Some(user), Some(value))
            }
            None => (None, None),
        };
        Ok(WebhookUrl {
            uri,
            authorization,
            user,
        })
    }
}

/// Expected response statuses: `2xx`, `200`, `200-299`, or a comma-separated list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedStatus {
    ranges: Vec<(u16, u16)>,
    text: String,
}

impl ExpectedStatus {
    /// Whether `status` is expected.
    pub fn accepts(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.ranges
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

impl FromStr for ExpectedStatus {
    type Err = (String, String);

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let err = || {
            (
                raw.to_owned(),
                "a status code (200), a class (2xx), a range (200-299), or a comma-separated list"
                    .to_owned(),
            )
        };
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let mut ranges = Vec::new();
        for part in raw.split(',').map(str::trim) {
            let range = if let Some(class) = part.to_ascii_lowercase().strip_suffix("xx") {
                let digit = class.parse::<u16>().ok().filter(|d| (1..=5).contains(d));
                digit.map(|d| (d * 100, d * 100 + 99))
            } else if let Some((lo, hi)) = part.split_once('-') {
                code(lo).zip(code(hi)).filter(|(lo, hi)| lo <= hi)
            } else {
                code(part).map(|c| (c, c))
            };
            ranges.push(range.ok_or_else(err)?);
        }
        Ok(ExpectedStatus {
            ranges,
            text: raw.trim().to_owned(),
        })
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `Name: value` into a header.
pub fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), (String, String)> {
    let err = || (raw.to_owned(), "a header as Name:value".to_owned());
    let (name, value) = raw.split_once(':').ok_or_else(err)?;
    let name = HeaderName::from_str(name.trim()).map_err(|_| err())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| err())?;
    Ok((name, value))
}

/// Settings of the webhook action.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to send the request; each must succeed.
    pub urls: Vec<WebhookUrl>,
    /// The request method.
    pub method: Method,
    /// Statuses that count as success.
    pub expected: ExpectedStatus,
    /// Time limit for one request, response body included.
    pub timeout: Duration,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Retries after the first attempt.
    pub retries: u32,
}

/// Calls the configured URLs.
pub struct WebhookAction {
    settings: WebhookSettings,
    client: HttpsClient,
    /// Which URLs already succeeded for the content being reloaded, so a retry calls only the
    /// others (nothing is done twice).
    done: Vec<bool>,
    done_for: Vec<Digest>,
}

impl fmt::Debug for WebhookAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAction")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl WebhookAction {
    /// A webhook action; fails when https is used and no system root certificates are found.
    pub fn new(settings: WebhookSettings) -> Result<Self, String> {
        let needs_tls = settings
            .urls
            .iter()
            .any(|u| u.uri.scheme_str() == Some("https"));
        let connector = connector(needs_tls)?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(WebhookAction {
            done: vec![false; settings.urls.len()],
            settings,
            client,
            done_for: Vec::new(),
        })
    }

    /// Retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.settings.retries
    }

    /// Calls every URL not yet successful for this content; fails on the first that fails.
    pub async fn perform(&mut self, reload: &Reload) -> Result<Outcome, WebhookError> {
        let content: Vec<Digest> = reload.volumes.iter().map(|v| v.snapshot.hash).collect();
        if content != self.done_for {
            self.done_for = content;
            self.done = vec![false; self.settings.urls.len()];
        }
        let mut effects = Vec::new();
        for i in 0..self.settings.urls.len() {
            if self.done[i] {
                continue;
            }
            let url = &self.settings.urls[i];
            let started = Instant::now();
            let status = self.call(url).await?;
            self.done[i] = true;
            effects.push(format!(
                "{} {url}: {status} in {:.1}ms",
                self.settings.method,
                started.elapsed().as_secs_f64() * 1000.0
            ));
        }
        Ok(Outcome { effects })
    }

    async fn call(&self, url: &WebhookUrl) -> Result<StatusCode, WebhookError> {
        let method = self.settings.method.clone();
        let transport = |reason: String| WebhookError::Transport {
            method: method.clone(),
            url: url.to_string(),
            reason,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url.uri.clone())
            .header(hyper::header::USER_AGENT, "nudge")
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &self.settings.headers {
            headers.append(name.clone(), value.clone());
        }
        if let Some(auth) = &url.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(error_chain(&e)))?;
            let status = response.status();
            // Read the body so the connection can be reused, and so "closed mid-body" fails.
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(error_chain(&e)))?;
            Ok(status)
        };
        let status = tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .map_err(|_| WebhookError::Timeout {
                method: method.clone(),
                url: url.to_string(),
                timeout: self.settings.timeout,
            })??;
        if !self.settings.expected.accepts(status) {
            return Err(WebhookError::Status {
                method,
                url: url.to_string(),
                status,
                expected: self.settings.expected.to_string(),
            });
        }
        Ok(status)
    }
}

/// The connector: https through rustls with the system roots (read only when an https URL
/// is configured), else plain http.
#[cfg(feature = "https")]
fn connector(needs_tls: bool) -> Result<Connector, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if needs_tls {
        builder.with_native_roots().map_err(|e| {
            format!("no system root certificates for https ({e}); mount the CA bundle (/etc/ssl/certs) into the container")
        })?
    } else {
        // Plain http only: an empty root store; no certificate file is read.
        builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    Ok(builder.https_or_http().enable_http1().build())
}

/// The connector of a build without the `https` feature: plain http only.
#[cfg(not(feature = "https"))]
fn connector(needs_tls: bool) -> Result<Connector, String> {
    if needs_tls {
        return Err(
            "an http:// URL: this nudge has no TLS (the slim image); use the -tls image for https"
                .into(),
        );
    }
    Ok(HttpConnector::new())
}

/// An error and its sources on one line. hyper's errors never carry the URL, so no
/// credential can leak through them.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Decodes `%XX` escapes (userinfo may hold `%40` for `@`, etc.).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (for one basic-auth header, not worth a dependency).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_basic_auth_and_never_show() {
        let url: WebhookUrl = "http://admin:s3cr%40t@localhost:9090/-/reload"
            .parse()
            .unwrap();
        assert_eq!(url.uri.to_string(), "http://localhost:9090/-/reload");
        assert_eq!(url.to_string(), "http://admin:***@localhost:9090/-/reload");
        assert_eq!(format!("{url:?}"), url.to_string());
        let auth = url.authorization.as_ref().unwrap().to_str().unwrap();
        assert_eq!(auth, format!("Basic {}", base64(b"admin:s3cr@t")));
    }

    #[test]
    fn a_bad_url_is_echoed_without_its_password() {
        let (shown, _) = "ftp://u:hunter2@host/".parse::<WebhookUrl>().unwrap_err();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn expected_status_accepts_codes_classes_ranges_and_lists() {
        let s: ExpectedStatus = "2xx".parse().unwrap();
        assert!(s.accepts(StatusCode::OK) && s.accepts(StatusCode::NO_CONTENT));
        assert!(!s.accepts(StatusCode::FOUND));
        let s: ExpectedStatus = "200, 300-302".parse().unwrap();
        assert!(s.accepts(StatusCode::FOUND) && !s.accepts(StatusCode::CREATED));
        assert!("6xx".parse::<ExpectedStatus>().is_err());
        assert!("abc".parse::<ExpectedStatus>().is_err());
    }

    #[test]
    fn headers_parse_as_name_colon_value() {
        let (name, value) = parse_header("X-Reload: yes: really").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-reload", "yes: really")
        );
        assert!(parse_header("no colon").is_err());
    }
}
