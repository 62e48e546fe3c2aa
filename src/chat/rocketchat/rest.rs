//! The Rocket.Chat REST client: every action the bot takes (log in, post, edit, react, upload, rooms, history, roles, settings), retried through outages and paced by the server's rate limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("request to {route} failed: {reason}")]
    RequestFailed { route: String, reason: String },
    #[error("{route} answered {status}: {error}")]
    Refused {
        route: String,
        status: u16,
        /// `errorType` or `error` of the reply.
        error: String,
    },
    #[error("{route} refused the bot's credentials (401): log in again")]
    Unauthorized { route: String },
    #[error(
        "{route} is rate limited by the server for another {wait_secs} s, past the time allowed; give the bot user the `api-bypass-rate-limit` permission (the `bot` role has it)"
    )]
    RateLimited { route: String, wait_secs: u64 },
}

impl RestError {
    /// The server's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RestError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Credentials for authenticated routes.
#[derive(Clone, PartialEq, Eq)]
pub struct RestAuth {
    pub user_id: String,
    pub token: String,
}

impl std::fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuth")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

pub use crate::chat::File;

#[derive(Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    File(&'a File),
}

/// What a successful password login returns.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub auth: RestAuth,
    /// The user document (`username`, `roles`).
    pub me: Value,
}

/// A REST client for one server. Cheap to clone; clones share the rate-limit gates.
#[derive(Clone, Debug)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    /// Per route: no request before this instant (the server's `X-RateLimit-Reset`).
    gates: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Rest {
    /// A client for `base_url`; `timeout` bounds each request.
    pub fn new(base_url: &str, timeout: Duration) -> Rest {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("rocketops/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Rest {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            gates: Arc::default(),
        }
    }

    /// `GET /api/info` (public): the server's version string.
    pub async fn server_version(&self, patience: Duration) -> Result<String, RestError> {
        let v = self.call("/api/info", None, Body::None, patience).await?;
        Ok(v.get("version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// `POST /api/v1/login` with a username and password; a new token each time.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        patience: Duration,
    ) -> Result<LoggedIn, RestError> {
        let body = json!({"user": user, "password": password});
        let v = self
            .call("/api/v1/login", None, Body::Json(&body), patience)
            .await?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        match (s("/data/userId"), s("/data/authToken")) {
            (Some(user_id), Some(token)) => Ok(LoggedIn {
                auth: RestAuth { user_id, token },
                me: v.pointer("/data/me").cloned().unwrap_or(Value::Null),
            }),
            _ => Err(RestError::Refused {
                route: "/api/v1/login".into(),
                status: 200,
                error: "no userId or authToken in the answer".into(),
            }),
        }
    }

    /// `GET /api/v1/me`: the bot's own user, roles included.
    pub async fn me(&self, auth: &RestAuth, patience: Duration) -> Result<Value, RestError> {
        self.call("/api/v1/me", Some(auth), Body::None, patience)
            .await
    }

    /// `GET` an authenticated `/api/v1/<route>?<query>`.
    pub async fn get(
        &self,
        auth: &RestAuth,
        route: &str,
        query: &[(&str, &str)],
        patience: Duration,
    ) -> Result<Value, RestError> {
        self.call(&with_query(route, query), Some(auth), Body::None, patience)
            .await
    }

    /// `GET` a public `/api/v1/<route>?<query>` (no credentials).
    pub async fn get_public(
        &self,
        route: &str,
        query: &[(&str, &str)],
        patience: Duration,
    ) -> Result<Value, RestError> {
        self.call(&with_query(route, query), None, Body::None, patience)
            .await
    }

    /// `POST` a JSON body to an authenticated `/api/v1/<route>`.
    pub async fn post(
        &self,
        auth: &RestAuth,
        route: &str,
        body: &Value,
        patience: Duration,
    ) -> Result<Value, RestError> {
        self.call(
            &format!("/api/v1/{route}"),
            Some(auth),
            Body::Json(body),
            patience,
        )
        .await
    }

    /// Uploads a file to a room (`media`, multipart) and posts it with `text` (`confirm`);
    /// returns the message id.
    pub async fn upload(
        &self,
        auth: &RestAuth,
        (media, confirm): (&str, &str),
        room_id: &str,
        file: &File,
        text: &str,
        patience: Duration,
    ) -> Result<String, RestError> {
        let rid = url_escape(room_id);
        let v = self
            .call(
                &format!("/api/v1/{media}/{rid}"),
                Some(auth),
                Body::File(file),
                patience,
            )
            .await?;
        let id = v
            .pointer("/file/_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let body = json!({"msg": text, "description": file.name});
        let v = self
            .call(
                &format!("/api/v1/{confirm}/{rid}/{}", url_escape(&id)),
                Some(auth),
                Body::Json(&body),
                patience,
            )
            .await?;
        Ok(v.pointer("/message/_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// The instant before which `key` must not be called again, if the server said so.
    fn gate(&self, key: &str) -> Option<Instant> {
        let gates = self.gates.lock().ok()?;
        gates.get(key).copied().filter(|t| *t > Instant::now())
    }

    fn close_gate(&self, key: &str, until: Instant) {
        if let Ok(mut g) = self.gates.lock() {
            let e = g.entry(key.to_string()).or_insert(until);
            if *e < until {
                *e = until;
            }
        }
    }

    /// Sends a request, waiting out rate limits and retrying through outages (connection
    /// refused, timeouts, 5xx) with backoff, for up to `patience`. Every route the bot calls is
    /// safe to repeat: posts carry the bot's own message id.
    async fn call(
        &self,
        route: &str,
        auth: Option<&RestAuth>,
        body: Body<'_>,
        patience: Duration,
    ) -> Result<Value, RestError> {
        let url = format!("{}{route}", self.base);
        let key = route_key(route);
        let started = Instant::now();
        let deadline = started + patience;
        let mut delays = crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if let Some(until) = self.gate(&key) {
                if until > deadline {
                    return Err(RestError::RateLimited {
                        route: key,
                        wait_secs: until.saturating_duration_since(Instant::now()).as_secs(),
                    });
                }
                sleep_until(until).await;
            }
            let sent = Instant::now();
            let outcome = self.request(&url, auth, body).await;
            let failure = match outcome {
                Ok(resp) => {
                    crate::telemetry::metrics()
                        .chat_request_seconds
                        .observe(sent.elapsed().as_secs_f64());
                    let status = resp.status();
                    let pacing = pacing(resp.headers());
                    if let Some(reset) = pacing.exhausted_until {
                        self.close_gate(&key, reset);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        crate::telemetry::metrics().chat_rate_limited.inc();
                        let until = pacing
                            .reset
                            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                        tracing::warn!(
                            route = %key,
                            wait_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                            "Rocket.Chat rate limit reached; waiting for its reset"
                        );
                        self.close_gate(&key, until);
                        continue;
                    }
                    if status.is_server_error() {
                        format!("HTTP {status}")
                    } else {
                        let v: Value = resp.json().await.unwrap_or(Value::Null);
                        if status == StatusCode::UNAUTHORIZED && auth.is_some() {
                            return Err(RestError::Unauthorized { route: key });
                        }
                        if !status.is_success() || v.get("success") == Some(&Value::Bool(false)) {
                            let error = v
                                .get("errorType")
                                .or_else(|| v.get("error"))
                                .and_then(Value::as_str)
                                .or_else(|| v.get("message").and_then(Value::as_str))
                                .unwrap_or("unknown error");
                            return Err(RestError::Refused {
                                route: key,
                                status: status.as_u16(),
                                error: crate::redact::outgoing(error),
                            });
                        }
                        return Ok(v);
                    }
                }
                Err(e) => e,
            };
            let wait = delays.next().unwrap_or(Duration::from_secs(5));
            if Instant::now() + wait > deadline {
                return Err(RestError::RequestFailed {
                    route: key,
                    reason: failure,
                });
            }
            tracing::debug!(route = %key, reason = %failure, "Rocket.Chat request failed; retrying");
            sleep(wait).await;
        }
    }

    async fn request(
        &self,
        url: &str,
        auth: Option<&RestAuth>,
        body: Body<'_>,
    ) -> Result<reqwest::Response, String> {
        let mut req = match body {
            Body::Json(b) => self.http.post(url).json(b),
            Body::None => self.http.get(url),
            Body::File(f) => {
                let part = reqwest::multipart::Part::bytes(f.bytes.clone())
                    .file_name(f.name.clone())
                    .mime_str(&f.content_type)
                    .map_err(|e| e.to_string())?;
                self.http
                    .post(url)
                    .multipart(reqwest::multipart::Form::new().part("file", part))
            }
        };
        if let Some(a) = auth {
            req = req
                .header("X-User-Id", &a.user_id)
                .header("X-Auth-Token", &a.token);
        }
        req.send().await.map_err(|e| {
            // The request's URL carries no secret, but keep the message short and plain.
            let e = e.without_url();
            if e.is_timeout() {
                "no answer within the request timeout".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {e}")
            } else {
                e.to_string()
            }
        })
    }
}

/// The rate-limit headers of one answer.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pacing {
    /// `X-RateLimit-Reset`, as an instant.
    reset: Option<Instant>,
    /// When `X-RateLimit-Remaining` is 0: the reset, before which the next call would be refused.
    exhausted_until: Option<Instant>,
}

/// Reads `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch milliseconds).
fn pacing(headers: &reqwest::header::HeaderMap) -> Pacing {
    let num = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let reset = num("X-RateLimit-Reset").map(|reset_ms| {
        let now_ms = chrono::Utc::now().timestamp_millis();
        Instant::now() + Duration::from_millis((reset_ms - now_ms).clamp(0, 120_000) as u64)
    });
    let exhausted = num("X-RateLimit-Remaining").is_some_and(|r| r <= 0);
    Pacing {
        reset,
        exhausted_until: reset.filter(|_| exhausted),
    }
}

/// The rate limiter's unit: the route without its query or path parameters
/// (`/api/v1/rooms.media/RID` → `/api/v1/rooms.media`).
fn route_key(route: &str) -> String {
    let path = route.split('?').next().unwrap_or(route);
    match path.strip_prefix("/api/v1/") {
        Some(rest) => format!("/api/v1/{}", rest.split('/').next().unwrap_or(rest)),
        None => path.to_string(),
    }
}

/// `/api/v1/<route>?k=v&…`, escaped.
fn with_query(route: &str, query: &[(&str, &str)]) -> String {
    let mut path = format!("/api/v1/{route}");
    for (i, (k, v)) in query.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(&url_escape(k));
        path.push('=');
        path.push_str(&url_escape(v));
    }
    path
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_unit_is_the_route_without_parameters() {
        assert_eq!(
            route_key("/api/v1/chat.sendMessage"),
            "/api/v1/chat.sendMessage"
        );
        assert_eq!(route_key("/api/v1/rooms.media/abc"), "/api/v1/rooms.media");
        assert_eq!(
            route_key("/api/v1/rooms.info?roomName=ops"),
            "/api/v1/rooms.info"
        );
        assert_eq!(route_key("/api/info"), "/api/info");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_closes_the_route_until_the_reset() {
        let mut h = reqwest::header::HeaderMap::new();
        let reset = chrono::Utc::now().timestamp_millis() + 30_000;
        h.insert("X-RateLimit-Remaining", "0".parse().unwrap());
        h.insert("X-RateLimit-Reset", reset.to_string().parse().unwrap());
        let p = pacing(&h);
        let until = p.exhausted_until.expect("closed");
        let wait = until - Instant::now();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        h.insert("X-RateLimit-Remaining", "3".parse().unwrap());
        assert_eq!(pacing(&h).exhausted_until, None);
        assert!(pacing(&reqwest::header::HeaderMap::new()).reset.is_none());
    }

    #[test]
    fn names_are_escaped_in_queries() {
        assert_eq!(url_escape("a b/#c"), "a%20b%2F%23c");
    }
}
