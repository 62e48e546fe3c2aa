//! The Rocket.Chat REST calls the bot uses: server info, identity, and the fallbacks for sending and reacting.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("request to {route} failed: {source}")]
    RequestFailed {
        route: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{route} answered {status}: {error}")]
    Refused {
        route: String,
        status: u16,
        /// `errorType` or `error` of the reply.
        error: String,
    },
    #[error("{route} kept answering 429 too-many-requests")]
    RateLimited { route: String },
}

/// Credentials for authenticated routes.
#[derive(Clone)]
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

/// A REST client for one server.
#[derive(Clone, Debug)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

const MAX_RATE_LIMIT_RETRIES: u32 = 5;

impl Rest {
    pub fn new(base_url: &str, timeout: Duration) -> Rest {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("rocketops/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Rest {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// `GET /api/info`: the server's version (public).
    pub async fn server_version(&self) -> Result<String, RestError> {
        let v = self.send("/api/info", None, None).await?;
        Ok(v.get("version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// `GET /api/v1/me`: the bot's own user, roles included.
    pub async fn me(&self, auth: &RestAuth) -> Result<Value, RestError> {
        self.send("/api/v1/me", Some(auth), None).await
    }

    /// `POST /api/v1/chat.sendMessage`, which reports errors that DDP `sendMessage` swallows.
    pub async fn send_message(&self, auth: &RestAuth, message: Value) -> Result<Value, RestError> {
        self.send(
            "/api/v1/chat.sendMessage",
            Some(auth),
            Some(json!({ "message": message })),
        )
        .await
    }

    /// `POST /api/v1/chat.react` (the replacement for the `setReaction` method).
    pub async fn react(
        &self,
        auth: &RestAuth,
        message_id: &str,
        emoji: &str,
    ) -> Result<(), RestError> {
        self.send(
            "/api/v1/chat.react",
            Some(auth),
            Some(json!({"messageId": message_id, "emoji": emoji, "shouldReact": true})),
        )
        .await
        .map(|_| ())
    }

    /// `POST /api/v1/chat.postMessage` with attachments (buttons); returns the message id.
    pub async fn post_message(&self, auth: &RestAuth, body: Value) -> Result<String, RestError> {
        let v = self
            .send("/api/v1/chat.postMessage", Some(auth), Some(body))
            .await?;
        Ok(v.pointer("/message/_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// `GET /api/v1/users.info?username=`: the user's roles (`None` when the bot may not see them).
    pub async fn user_roles(
        &self,
        auth: &RestAuth,
        username: &str,
    ) -> Result<Option<Vec<String>>, RestError> {
        let route = format!("/api/v1/users.info?username={}", url_escape(username));
        let v = self.send(&route, Some(auth), None).await?;
        Ok(v.pointer("/user/roles").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        }))
    }

    /// Uploads a file to a room (`rooms.media`) and posts it with `text` (`rooms.mediaConfirm`);
    /// returns the message id.
    pub async fn upload(
        &self,
        auth: &RestAuth,
        room_id: &str,
        file: &File,
        text: &str,
    ) -> Result<String, RestError> {
        let rid = url_escape(room_id);
        let v = self
            .send_body(
                &format!("/api/v1/rooms.media/{rid}"),
                Some(auth),
                Body::File(file),
            )
            .await?;
        let id = v
            .pointer("/file/_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let v = self
            .send(
                &format!("/api/v1/rooms.mediaConfirm/{rid}/{}", url_escape(&id)),
                Some(auth),
                Some(json!({"msg": text, "description": file.name})),
            )
            .await?;
        Ok(v.pointer("/message/_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Sends a request, waiting out 429 replies as the server asks.
    async fn send(
        &self,
        route: &str,
        auth: Option<&RestAuth>,
        body: Option<Value>,
    ) -> Result<Value, RestError> {
        match &body {
            Some(b) => self.send_body(route, auth, Body::Json(b)).await,
            None => self.send_body(route, auth, Body::None).await,
        }
    }

    async fn send_body(
        &self,
        route: &str,
        auth: Option<&RestAuth>,
        body: Body<'_>,
    ) -> Result<Value, RestError> {
        let url = format!("{}{route}", self.base);
        for _ in 0..MAX_RATE_LIMIT_RETRIES {
            let mut req = match body {
                Body::Json(b) => self.http.post(&url).json(b),
                Body::None => self.http.get(&url),
                Body::File(f) => {
                    let part = reqwest::multipart::Part::bytes(f.bytes.clone())
                        .file_name(f.name.clone())
                        .mime_str(&f.content_type)
                        .map_err(|source| RestError::RequestFailed {
                            route: route.to_string(),
                            source,
                        })?;
                    self.http
                        .post(&url)
                        .multipart(reqwest::multipart::Form::new().part("file", part))
                }
            };
            if let Some(a) = auth {
                req = req
                    .header("X-User-Id", &a.user_id)
                    .header("X-Auth-Token", &a.token);
            }
            let resp = req
                .send()
                .await
                .map_err(|source| RestError::RequestFailed {
                    route: route.to_string(),
                    source,
                })?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = rate_limit_wait(resp.headers());
                tracing::warn!(
                    route,
                    wait_ms = wait.as_millis() as u64,
                    "REST rate limit hit; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() || v.get("success") == Some(&Value::Bool(false)) {
                let error = v
                    .get("errorType")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string();
                return Err(RestError::Refused {
                    route: route.to_string(),
                    status: status.as_u16(),
                    error,
                });
            }
            return Ok(v);
        }
        Err(RestError::RateLimited {
            route: route.to_string(),
        })
    }
}

/// How long a 429 asks us to wait: `X-RateLimit-Reset` is epoch milliseconds.
fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Duration {
    let now = chrono::Utc::now().timestamp_millis();
    headers
        .get("X-RateLimit-Reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map(|reset| Duration::from_millis((reset - now).clamp(50, 60_000) as u64))
        .unwrap_or(Duration::from_secs(1))
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
