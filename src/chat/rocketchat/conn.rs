//! One DDP session over one WebSocket: handshake, heartbeat, method calls, subscriptions and stream events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::ddp::{self, DdpError, ServerFrame};

/// Heartbeat and timeout settings for a session.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Send a ping when the server has been silent this long.
    pub ping_interval: Duration,
    /// Declare the server dead when a ping gets no answer (any frame) this long.
    pub ping_timeout: Duration,
    /// Give up on the socket connect plus DDP handshake after this long.
    pub connect_timeout: Duration,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not open the WebSocket {url}: {source}")]
    SocketFailed {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("timed out opening {url}")]
    TimedOut { url: String },
    #[error("server refused DDP version 1 (it offered {offered})")]
    VersionRejected { offered: String },
    #[error("connection closed during the DDP handshake")]
    ClosedDuringHandshake,
}

/// Why a method call or subscription failed.
#[derive(Debug, thiserror::Error, Clone)]
pub enum CallError {
    #[error("connection lost before the server answered")]
    Disconnected,
    #[error("server returned an error: {0}")]
    Server(DdpError),
}

/// Something a subscription delivered.
#[derive(Debug, Clone)]
pub enum Event {
    /// `stream-room-messages`: `[message, meta]` (meta absent on per-room subscriptions).
    RoomMessage { message: Value, meta: Option<Value> },
    /// `stream-notify-user`: event name (`<uid>/subscriptions-changed`) and its args.
    NotifyUser { event: String, args: Value },
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    ClosedByServer,
    /// The server stopped answering pings within the timeout.
    Unresponsive,
    SocketError(String),
    /// Every handle to the session was dropped.
    Abandoned,
}

enum Request {
    Method {
        name: String,
        params: Value,
        reply: oneshot::Sender<Result<Option<Value>, CallError>>,
    },
    Sub {
        name: String,
        params: Value,
        reply: oneshot::Sender<Result<Option<Value>, CallError>>,
    },
    Close,
}

/// A live DDP session. Cheap to share; calls fail with `Disconnected` once it ends.
#[derive(Debug)]
pub struct Session {
    requests: mpsc::UnboundedSender<Request>,
    pub session_id: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Method { name, .. } => write!(f, "Method({name})"),
            Request::Sub { name, .. } => write!(f, "Sub({name})"),
            Request::Close => write!(f, "Close"),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    format!("{prefix}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Session {
    /// Opens the socket, does the DDP handshake and starts the session's pump task.
    pub async fn open(
        url: &str,
        timing: Timing,
    ) -> Result<
        (
            Session,
            mpsc::UnboundedReceiver<Event>,
            tokio::task::JoinHandle<SessionEnd>,
        ),
        OpenError,
    > {
        let handshake = async {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
                .await
                .map_err(|e| OpenError::SocketFailed {
                    url: url.to_string(),
                    source: Box::new(e),
                })?;
            ws.send(Message::text(ddp::connect_frame()))
                .await
                .map_err(|e| OpenError::SocketFailed {
                    url: url.to_string(),
                    source: Box::new(e),
                })?;
            loop {
                let Some(frame) = ws.next().await else {
                    return Err(OpenError::ClosedDuringHandshake);
                };
                let text = match frame {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(_)) => return Err(OpenError::ClosedDuringHandshake),
                    Ok(_) => continue,
                    Err(e) => {
                        return Err(OpenError::SocketFailed {
                            url: url.to_string(),
                            source: Box::new(e),
                        });
                    }
                };
                match ddp::parse_server_frame(&text) {
                    Ok(ServerFrame::Connected { session }) => return Ok((ws, session)),
                    Ok(ServerFrame::Failed { version }) => {
                        return Err(OpenError::VersionRejected { offered: version });
                    }
                    Ok(ServerFrame::Ping { id }) => {
                        let _ = ws.send(Message::text(ddp::pong_frame(id.as_deref()))).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping malformed frame during handshake")
                    }
                }
            }
        };
        let (ws, session_id) =
            timeout(timing.connect_timeout, handshake)
                .await
                .map_err(|_| OpenError::TimedOut {
                    url: url.to_string(),
                })??;
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(ws, req_rx, ev_tx, timing));
        Ok((
            Session {
                requests: req_tx,
                session_id,
            },
            ev_rx,
            pump,
        ))
    }

    /// Calls a method; `Ok(None)` is a result frame that carried no `result`.
    pub async fn call(&self, name: &str, params: Value) -> Result<Option<Value>, CallError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Method {
                name: name.to_string(),
                params,
                reply,
            })
            .map_err(|_| CallError::Disconnected)?;
        rx.await.unwrap_or(Err(CallError::Disconnected))
    }

    /// Subscribes and waits for `ready` (or `nosub`).
    pub async fn subscribe(&self, name: &str, params: Value) -> Result<(), CallError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Sub {
                name: name.to_string(),
                params,
                reply,
            })
            .map_err(|_| CallError::Disconnected)?;
        rx.await.unwrap_or(Err(CallError::Disconnected)).map(|_| ())
    }

    /// Whether the pump is still running.
    pub fn is_open(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Asks the pump to close the socket.
    pub fn close(&self) {
        let _ = self.requests.send(Request::Close);
    }
}

type Pending = HashMap<String, oneshot::Sender<Result<Option<Value>, CallError>>>;

async fn pump(
    mut ws: Ws,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    timing: Timing,
) -> SessionEnd {
    let mut pending: Pending = HashMap::new();
    let mut last_inbound = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        let deadline = match ping_sent {
            Some(sent) => sent + timing.ping_timeout,
            None => last_inbound + timing.ping_interval,
        };
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return SessionEnd::ClosedByServer,
                    Some(Ok(Message::Binary(_))) => {
                        tracing::warn!("skipping a binary frame: DDP frames are text");
                        last_inbound = Instant::now();
                        ping_sent = None;
                        continue;
                    }
                    Some(Ok(_)) => {
                        last_inbound = Instant::now();
                        ping_sent = None;
                        continue;
                    }
                    Some(Err(e)) => return SessionEnd::SocketError(e.to_string()),
                };
                last_inbound = Instant::now();
                ping_sent = None;
                if let Some(reply) = handle_frame(&text, &mut pending, &events)
                    && let Err(e) = ws.send(Message::text(reply)).await {
                        return SessionEnd::SocketError(e.to_string());
                    }
            }
            req = requests.recv() => {
                let (id, frame, reply) = match req {
                    Some(Request::Method { name, params, reply }) => {
                        let id = next_id("m");
                        let frame = ddp::method_frame(&id, &name, &params);
                        (id, frame, reply)
                    }
                    Some(Request::Sub { name, params, reply }) => {
                        let id = next_id("s");
                        let frame = ddp::sub_frame(&id, &name, &params);
                        (id, frame, reply)
                    }
                    Some(Request::Close) => {
                        let _ = ws.close(None).await;
                        return SessionEnd::Abandoned;
                    }
                    None => {
                        let _ = ws.close(None).await;
                        return SessionEnd::Abandoned;
                    }
                };
                pending.insert(id, reply);
                if let Err(e) = ws.send(Message::text(frame)).await {
                    return SessionEnd::SocketError(e.to_string());
                }
            }
            _ = sleep_until(deadline) => {
                if ping_sent.is_some() {
                    tracing::warn!(
                        timeout_ms = timing.ping_timeout.as_millis() as u64,
                        "server stopped answering pings; dropping the connection"
                    );
                    return SessionEnd::Unresponsive;
                }
                ping_sent = Some(Instant::now());
                if let Err(e) = ws.send(Message::text(ddp::ping_frame(&next_id("p")))).await {
                    return SessionEnd::SocketError(e.to_string());
                }
            }
        }
    }
}

/// Applies one inbound frame; returns a frame to send back, if any.
fn handle_frame(
    text: &str,
    pending: &mut Pending,
    events: &mpsc::UnboundedSender<Event>,
) -> Option<String> {
    let frame = match ddp::parse_server_frame(text) {
        Ok(f) => f,
        Err(e) => {
            let shown: String = text.chars().take(200).collect();
            tracing::warn!(error = %e, frame = %shown, "skipping a frame that could not be understood");
            return None;
        }
    };
    match frame {
        ServerFrame::Ping { id } => return Some(ddp::pong_frame(id.as_deref())),
        ServerFrame::Result { id, result, error } => {
            if let Some(reply) = pending.remove(&id) {
                let _ = reply.send(match error {
                    Some(e) => Err(CallError::Server(e)),
                    None => Ok(result),
                });
            }
        }
        ServerFrame::Ready { subs } => {
            for id in subs {
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(Ok(None));
                }
            }
        }
        ServerFrame::NoSub { id, error } => {
            if let Some(reply) = pending.remove(&id) {
                let _ = reply.send(Err(CallError::Server(error.unwrap_or(DdpError {
                    code: "nosub".into(),
                    reason: "subscription refused".into(),
                    details: Value::Null,
                }))));
            } else {
                tracing::warn!(sub = %id, ?error, "server ended a subscription");
            }
        }
        ServerFrame::Changed { collection, fields } => {
            let args = fields.get("args").cloned().unwrap_or(Value::Null);
            match collection.as_str() {
                "stream-room-messages" => {
                    let mut it = args.as_array().cloned().unwrap_or_default().into_iter();
                    match it.next() {
                        Some(message) if message.is_object() => {
                            let _ = events.send(Event::RoomMessage {
                                message,
                                meta: it.next(),
                            });
                        }
                        _ => tracing::warn!(
                            "skipping a stream-room-messages event without a message"
                        ),
                    }
                }
                "stream-notify-user" => {
                    let event = fields
                        .get("eventName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let _ = events.send(Event::NotifyUser { event, args });
                }
                other => tracing::debug!(collection = other, "ignoring change"),
            }
        }
        ServerFrame::Error { reason } => {
            tracing::warn!(%reason, "server reported a protocol error");
        }
        ServerFrame::Unknown { msg } => tracing::debug!(%msg, "ignoring unknown frame type"),
        ServerFrame::ServerId
        | ServerFrame::Connected { .. }
        | ServerFrame::Failed { .. }
        | ServerFrame::Pong { .. }
        | ServerFrame::Updated
        | ServerFrame::Added { .. }
        | ServerFrame::Removed { .. } => {}
    }
    None
}
