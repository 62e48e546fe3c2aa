//! The Rocket.Chat adapter: a reconnecting DDP client that logs in, subscribes, catches up on missed messages and implements `Chat`.

pub mod classify;
pub mod conn;
pub mod ddp;
pub mod rest;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use self::classify::{Listener, classify};
use self::conn::{CallError, Event, Session, Timing};
use self::ddp::DdpError;
use self::rest::{Rest, RestAuth, RestError};
use crate::chat::split::split_message;
use crate::chat::{Button, Chat, ChatError, Incoming, MessageRef};
use crate::config::RocketChatConfig;
use crate::store::Store;

/// Options beyond the server settings.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Pass on messages from other bots.
    pub respond_to_bots: bool,
    /// Where read marks live; with a store, missed messages are fetched after each reconnect.
    pub store: Option<Store>,
}

/// A handle to the bot's Rocket.Chat connection. Cheap to clone.
#[derive(Clone)]
pub struct RocketChat {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RocketChatConfig,
    ws_url: String,
    rest: Rest,
    session: watch::Receiver<Option<Arc<Session>>>,
    identity: RwLock<Option<Identity>>,
    max_len: AtomicUsize,
    rooms: Mutex<HashMap<String, String>>,
    cancel: CancellationToken,
    /// The connection's supervising task (it holds the store for read marks).
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct Identity {
    user_id: String,
    username: String,
    auth: RestAuth,
}

/// Why establishing a session failed.
enum EstablishError {
    /// Worth retrying (network, server restarting, rate limit).
    Transient(String),
    /// The server said no to our credentials.
    LoginRejected(String),
}

/// `ws(s)://host/path/websocket` for an `http(s)://host/path` base URL.
pub fn websocket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{rest}/websocket")
}

/// Lowercase hex SHA-256, the digest Rocket.Chat's password login expects.
pub fn password_digest(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";

/// A Meteor-style 17-character random id, used as a client-chosen message `_id`.
pub fn new_message_id() -> String {
    (0..17)
        .map(|_| ID_ALPHABET[fastrand::usize(..ID_ALPHABET.len())] as char)
        .collect()
}

/// Capped exponential backoff with jitter: attempt 0 waits about `min`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let exp = min.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Ids already passed on in this process, so re-deliveries (reactions, thread counters) are dropped.
/// Kept as 8 bytes of each id's SHA-256, not as two copies of the id: the newest few thousand.
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        RecentIds {
            set: HashSet::with_capacity(cap),
            order: VecDeque::with_capacity(cap),
            cap,
        }
    }
    fn insert(&mut self, id: &str) -> bool {
        let h = crate::store::message_digest(id);
        if self.set.contains(&h) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(h);
        self.order.push_back(h);
        true
    }
}

enum Failure {
    Server(DdpError),
    Chat(ChatError),
}

impl RocketChat {
    /// Connects and logs in. Returns once logged in; a rejected login is an error, not a retry loop.
    /// After that the connection is kept up (reconnect, re-login, re-subscribe, catch up) until `cancel`.
    pub async fn connect(
        cfg: RocketChatConfig,
        options: ConnectOptions,
        cancel: CancellationToken,
    ) -> Result<(RocketChat, mpsc::UnboundedReceiver<Incoming>), ChatError> {
        let (session_tx, session_rx) = watch::channel(None);
        let inner = Arc::new(Inner {
            ws_url: websocket_url(&cfg.url),
            rest: Rest::new(&cfg.url, cfg.call_timeout),
            max_len: AtomicUsize::new(cfg.max_message_len),
            session: session_rx,
            identity: RwLock::new(None),
            rooms: Mutex::new(HashMap::new()),
            cancel,
            supervisor: Mutex::new(None),
            cfg,
        });
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            inner.clone(),
            session_tx,
            incoming_tx,
            first_tx,
            options,
        ));
        if let Ok(mut s) = inner.supervisor.lock() {
            *s = Some(task);
        }
        match first_rx.await {
            Ok(Ok(())) => Ok((RocketChat { inner }, incoming_rx)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ChatError::Closed),
        }
    }

    /// Waits (bounded) until the connection has closed after its cancellation token fired.
    pub async fn closed(&self, limit: Duration) {
        let task = self.inner.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(t) = task {
            let _ = tokio::time::timeout(limit, t).await;
        }
    }

    /// Whether a session is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner
            .session
            .borrow()
            .as_ref()
            .is_some_and(|s| s.is_open())
    }

    /// The bot's user id on the server.
    pub fn user_id(&self) -> String {
        self.identity().map(|i| i.user_id).unwrap_or_default()
    }

    fn identity(&self) -> Option<Identity> {
        self.inner.identity.read().ok().and_then(|g| g.clone())
    }

    /// Opens (or finds) the direct-message room with `username`.
    pub async fn direct_room(&self, username: &str) -> Result<String, ChatError> {
        let v = self
            .call(
                "opening a direct message",
                "createDirectMessage",
                json!([username]),
            )
            .await?;
        v.as_ref()
            .and_then(|v| v.get("rid"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChatError::Rejected {
                action: "opening a direct message".into(),
                reason: "no room id in the answer".into(),
            })
    }

    async fn call(
        &self,
        action: &str,
        method: &str,
        params: Value,
    ) -> Result<Option<Value>, ChatError> {
        self.call_raw(action, method, params)
            .await
            .map_err(|f| match f {
                Failure::Server(e) => ChatError::Rejected {
                    action: action.to_string(),
                    reason: e.to_string(),
                },
                Failure::Chat(c) => c,
            })
    }

    /// Calls a method on the current session, waiting through reconnects and rate limits until the send deadline.
    async fn call_raw(
        &self,
        action: &str,
        method: &str,
        params: Value,
    ) -> Result<Option<Value>, Failure> {
        let cfg = &self.inner.cfg;
        let started = Instant::now();
        let deadline = started + cfg.send_deadline;
        let gave_up = || {
            Failure::Chat(ChatError::GaveUp {
                action: action.to_string(),
                waited_secs: started.elapsed().as_secs(),
            })
        };
        let mut avoid: Option<Arc<Session>> = None;
        loop {
            let session =
                self.next_session(avoid.as_ref(), deadline)
                    .await
                    .map_err(|e| match e {
                        ChatError::GaveUp { .. } => gave_up(),
                        other => Failure::Chat(other),
                    })?;
            let sent = Instant::now();
            match timeout(cfg.call_timeout, session.call(method, params.clone())).await {
                Ok(Ok(v)) => {
                    crate::telemetry::metrics()
                        .ddp_rtt_seconds
                        .observe(sent.elapsed().as_secs_f64());
                    return Ok(v);
                }
                Ok(Err(CallError::Server(e))) => match e.rate_limit_wait_ms() {
                    Some(ms) => {
                        tracing::warn!(method, wait_ms = ms, "rate limited by the server; waiting");
                        if Instant::now() + Duration::from_millis(ms) > deadline {
                            return Err(gave_up());
                        }
                        sleep(Duration::from_millis(ms.clamp(10, 60_000))).await;
                        avoid = None;
                    }
                    None => return Err(Failure::Server(e)),
                },
                Ok(Err(CallError::Disconnected)) => {
                    tracing::debug!(
                        method,
                        "connection lost during call; retrying after reconnect"
                    );
                    avoid = Some(session);
                }
                Err(_) => {
                    tracing::warn!(method, "no answer within the call timeout; retrying");
                    avoid = None;
                }
            }
            if Instant::now() >= deadline {
                return Err(gave_up());
            }
        }
    }

    /// The current session, waiting for one (other than `avoid`) up to `deadline`.
    async fn next_session(
        &self,
        avoid: Option<&Arc<Session>>,
        deadline: Instant,
    ) -> Result<Arc<Session>, ChatError> {
        let mut rx = self.inner.session.clone();
        loop {
            if self.inner.cancel.is_cancelled() {
                return Err(ChatError::Closed);
            }
            let current = rx.borrow_and_update().clone();
            if let Some(s) = current {
                let stale = avoid.is_some_and(|a| Arc::ptr_eq(a, &s));
                if !stale && s.is_open() {
                    return Ok(s);
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Err(ChatError::Closed) },
                _ = sleep_until(deadline) => return Err(ChatError::GaveUp { action: String::new(), waited_secs: 0 }),
                _ = sleep(Duration::from_millis(200)) => {}
                _ = self.inner.cancel.cancelled() => return Err(ChatError::Closed),
            }
        }
    }

    /// Sends one chunk; `Ok(None)` means the server says it is too long.
    async fn send_one(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<MessageRef>, ChatError> {
        self.send_one_as(room_id, thread, &new_message_id(), text)
            .await
    }

    /// Sends one chunk as message `id` (an already-saved one counts as sent).
    async fn send_one_as(
        &self,
        room_id: &str,
        thread: Option<&str>,
        id: &str,
        text: &str,
    ) -> Result<Option<MessageRef>, ChatError> {
        let id = id.to_string();
        let mut message =
            json!({"_id": id, "rid": room_id, "msg": text, "bot": {"i": "rocketops"}});
        if let Some(t) = thread {
            message["tmid"] = json!(t);
        }
        let done = MessageRef {
            room_id: room_id.to_string(),
            id: id.clone(),
        };
        // A result frame without `result` is a swallowed failure or an already-saved duplicate:
        // one retry with the same id, then REST, which reports what went wrong.
        for _ in 0..2 {
            if self
                .call("sending a message", "sendMessage", json!([message]))
                .await?
                .is_some()
            {
                return Ok(Some(done));
            }
        }
        let Some(me) = self.identity() else {
            return Err(ChatError::Closed);
        };
        match self.inner.rest.send_message(&me.auth, message).await {
            Ok(_) => Ok(Some(done)),
            Err(RestError::Refused { error, .. }) if error.contains("size-exceeded") => Ok(None),
            Err(RestError::Refused { error, .. })
                if error.contains("already-exists") || error.contains("duplicate") =>
            {
                Ok(Some(done))
            }
            Err(e) => Err(ChatError::Rejected {
                action: "sending a message".into(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Chat for RocketChat {
    fn bot_username(&self) -> String {
        self.identity().map(|i| i.username).unwrap_or_default()
    }

    async fn post(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        let text = &crate::redact::outgoing(text);
        let limit = self.inner.max_len.load(Ordering::Relaxed);
        let mut first: Option<MessageRef> = None;
        for chunk in split_message(text, limit) {
            let thread = thread.or(None);
            match self.send_one(room_id, thread, &chunk).await? {
                Some(r) => {
                    first.get_or_insert(r);
                }
                None => {
                    // The server's limit is lower than configured: learn it and split finer.
                    let smaller = (chunk.chars().count() * 2 / 3).max(100);
                    self.inner.max_len.store(smaller, Ordering::Relaxed);
                    tracing::warn!(
                        limit = smaller,
                        "server rejected a message as too long; splitting finer"
                    );
                    for piece in split_message(&chunk, smaller) {
                        match self.send_one(room_id, thread, &piece).await? {
                            Some(r) => {
                                first.get_or_insert(r);
                            }
                            None => {
                                return Err(ChatError::Rejected {
                                    action: "sending a message".into(),
                                    reason: "message too long even after splitting".into(),
                                });
                            }
                        }
                    }
                }
            }
        }
        first.ok_or_else(|| ChatError::Rejected {
            action: "sending a message".into(),
            reason: "empty message".into(),
        })
    }

    fn new_message_id(&self) -> String {
        new_message_id()
    }

    async fn post_as(
        &self,
        room_id: &str,
        thread: Option<&str>,
        id: &str,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        let text = &crate::redact::outgoing(text);
        let limit = self.inner.max_len.load(Ordering::Relaxed);
        let mut chunks = split_message(text, limit).into_iter();
        let head = chunks.next().unwrap_or_default();
        let posted = self
            .send_one_as(room_id, thread, id, &head)
            .await?
            .ok_or_else(|| ChatError::Rejected {
                action: "sending a message".into(),
                reason: "longer than the server allows".into(),
            })?;
        for rest in chunks {
            self.post(room_id, Some(id), &rest).await?;
        }
        Ok(posted)
    }

    async fn edit(&self, message: &MessageRef, text: &str) -> Result<(), ChatError> {
        let text = &crate::redact::outgoing(text);
        let limit = self.inner.max_len.load(Ordering::Relaxed);
        let mut chunks = split_message(text, limit).into_iter();
        let head = chunks.next().unwrap_or_default();
        self.call(
            "editing a message",
            "updateMessage",
            json!([{"_id": message.id, "rid": message.room_id, "msg": head}]),
        )
        .await?;
        for rest in chunks {
            self.post(&message.room_id, Some(&message.id), &rest)
                .await?;
        }
        Ok(())
    }

    async fn react(&self, message: &MessageRef, emoji: &str) -> Result<(), ChatError> {
        let name = emoji.trim_matches(':');
        match self
            .call_raw(
                "reacting",
                "setReaction",
                json!([format!(":{name}:"), message.id, true]),
            )
            .await
        {
            Ok(_) => Ok(()),
            // `setReaction` is on its way out (8.x): fall back to REST.
            Err(Failure::Server(e)) if e.code == "404" => {
                let me = self.identity().ok_or(ChatError::Closed)?;
                self.inner
                    .rest
                    .react(&me.auth, &message.id, name)
                    .await
                    .map_err(|e| ChatError::Rejected {
                        action: "reacting".into(),
                        reason: e.to_string(),
                    })
            }
            Err(Failure::Server(e)) => Err(ChatError::Rejected {
                action: "reacting".into(),
                reason: e.to_string(),
            }),
            Err(Failure::Chat(c)) => Err(c),
        }
    }

    async fn post_with_buttons(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
        buttons: &[Button],
    ) -> Result<MessageRef, ChatError> {
        let text = &crate::redact::outgoing(text);
        let me = self.identity().ok_or(ChatError::Closed)?;
        let actions: Vec<Value> = buttons
            .iter()
            .map(|b| json!({"type": "button", "text": b.label, "msg": b.message, "msg_in_chat_window": true, "msg_processing_type": "sendMessage"}))
            .collect();
        let mut body = json!({"roomId": room_id, "text": text, "attachments": [{"button_alignment": "horizontal", "actions": actions}]});
        if let Some(t) = thread {
            body["tmid"] = json!(t);
        }
        match self.inner.rest.post_message(&me.auth, body).await {
            Ok(id) => Ok(MessageRef {
                room_id: room_id.to_string(),
                id,
            }),
            Err(e) => {
                // Buttons are a convenience: without them the typed reply still works.
                tracing::warn!(error = %e, "posting buttons failed; posting plain text");
                self.post(room_id, thread, text).await
            }
        }
    }

    async fn post_attachments(
        &self,
        room_id: &str,
        text: &str,
        attachments: &[Value],
    ) -> Result<MessageRef, ChatError> {
        let me = self.identity().ok_or(ChatError::Closed)?;
        let text = crate::redact::outgoing(text);
        let attachments: Vec<Value> = attachments.iter().map(outgoing_json).collect();
        let body = json!({"roomId": room_id, "text": text, "attachments": attachments});
        match self.inner.rest.post_message(&me.auth, body).await {
            Ok(id) => Ok(MessageRef {
                room_id: room_id.to_string(),
                id,
            }),
            Err(e) => Err(ChatError::Rejected {
                action: "posting a message with attachments".into(),
                reason: e.to_string(),
            }),
        }
    }

    async fn upload(
        &self,
        room_id: &str,
        file: &rest::File,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        let me = self.identity().ok_or(ChatError::Closed)?;
        let text = crate::redact::outgoing(text);
        match self.inner.rest.upload(&me.auth, room_id, file, &text).await {
            Ok(id) => Ok(MessageRef {
                room_id: room_id.to_string(),
                id,
            }),
            Err(e) => Err(ChatError::Rejected {
                action: format!("uploading {}", file.name),
                reason: e.to_string(),
            }),
        }
    }

    async fn user_roles(&self, username: &str) -> Result<Vec<String>, ChatError> {
        let me = self.identity().ok_or(ChatError::Closed)?;
        match self.inner.rest.user_roles(&me.auth, username).await {
            Ok(Some(roles)) => Ok(roles),
            Ok(None) => Err(ChatError::Rejected {
                action: format!("reading the roles of {username}"),
                reason: "the bot's account needs the `view-full-other-user-info` permission".into(),
            }),
            Err(e) => Err(ChatError::Rejected {
                action: format!("reading the roles of {username}"),
                reason: e.to_string(),
            }),
        }
    }

    async fn room_id(&self, name: &str) -> Result<String, ChatError> {
        let name = name.trim_start_matches('#');
        if let Some(rid) = self
            .inner
            .rooms
            .lock()
            .ok()
            .and_then(|r| r.get(name).cloned())
        {
            return Ok(rid);
        }
        let v = self
            .call("finding a room", "getRoomIdByNameOrId", json!([name]))
            .await
            .map_err(|_| ChatError::UnknownRoom(name.to_string()))?;
        let rid = v
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChatError::UnknownRoom(name.to_string()))?;
        if let Ok(mut r) = self.inner.rooms.lock() {
            r.insert(name.to_string(), rid.clone());
        }
        Ok(rid)
    }
}

/// Keeps a session up for as long as the bot runs.
async fn supervise(
    inner: Arc<Inner>,
    session_tx: watch::Sender<Option<Arc<Session>>>,
    incoming: mpsc::UnboundedSender<Incoming>,
    first: oneshot::Sender<Result<(), ChatError>>,
    options: ConnectOptions,
) {
    let mut first = Some(first);
    let mut failures: u32 = 0;
    let mut recent = RecentIds::new(4096);
    let cancel = inner.cancel.clone();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        // Read marks start at the moment before subscribing, not after: a message posted while
        // the subscription is being set up is then caught up in order with the later ones,
        // instead of arriving live behind a newer message that catch-up already handed on.
        let connecting_ms = chrono::Utc::now().timestamp_millis();
        let attempt = tokio::select! {
            r = establish(&inner, first.is_some()) => r,
            _ = cancel.cancelled() => break,
        };
        match attempt {
            Ok((session, mut events, pump)) => {
                failures = 0;
                if first.is_none() {
                    crate::telemetry::metrics().reconnects.inc();
                }
                let session = Arc::new(session);
                session_tx.send_replace(Some(session.clone()));
                if let Some(f) = first.take() {
                    if let Some(store) = &options.store
                        && let Err(e) = store.init_global_mark(connecting_ms)
                    {
                        tracing::error!(error = %e, "cannot initialise read marks");
                    }
                    let _ = f.send(Ok(()));
                }
                let me = inner
                    .identity
                    .read()
                    .ok()
                    .and_then(|i| i.as_ref().map(|i| i.user_id.clone()))
                    .unwrap_or_default();
                let listener = Listener {
                    my_user_id: &me,
                    respond_to_bots: options.respond_to_bots,
                };
                if let Some(store) = &options.store {
                    match catch_up(&session, store, &listener).await {
                        Ok(missed) => {
                            if !missed.is_empty() {
                                tracing::info!(
                                    count = missed.len(),
                                    "catching up on messages sent while disconnected"
                                );
                            }
                            for m in missed {
                                if recent.insert(&m.id) && incoming.send(m).is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "catching up failed; continuing with live messages")
                        }
                    }
                }
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            None => break,
                            Some(Event::RoomMessage { message, meta }) => {
                                match classify(&message, meta.as_ref(), &listener) {
                                    Ok(m) if m.redelivered => tracing::debug!(
                                        id = %m.id,
                                        "message re-sent after a reaction, reply, pin or edit; not a new command"
                                    ),
                                    Ok(m) => {
                                        if recent.insert(&m.id) && incoming.send(m).is_err() {
                                            cancel.cancel();
                                        }
                                    }
                                    Err(why) => tracing::trace!(?why, "message not for the bot"),
                                }
                            }
                            Some(Event::NotifyUser { event, args }) => {
                                tracing::debug!(%event, args = %args, "user notification");
                            }
                        },
                        _ = cancel.cancelled() => break,
                    }
                }
                session_tx.send_replace(None);
                if cancel.is_cancelled() {
                    session.close();
                    let _ = pump.await;
                    break;
                }
                let why = pump.await;
                tracing::warn!(?why, "connection to Rocket.Chat lost; reconnecting");
            }
            Err(EstablishError::LoginRejected(reason)) => {
                let user = inner
                    .cfg
                    .username
                    .clone()
                    .unwrap_or_else(|| "(token user)".into());
                let err = ChatError::LoginRejected {
                    user,
                    server: inner.cfg.url.clone(),
                    reason,
                };
                if let Some(f) = first.take() {
                    let _ = f.send(Err(err));
                    return;
                }
                tracing::error!(error = %err, "login rejected after a reconnect; will keep trying");
                failures = failures.saturating_add(4);
            }
            Err(EstablishError::Transient(reason)) => {
                tracing::warn!(%reason, server = %inner.cfg.url, "cannot connect to Rocket.Chat; will retry");
                failures = failures.saturating_add(1);
            }
        }
        let wait = backoff(failures, inner.cfg.reconnect_min, inner.cfg.reconnect_max);
        tokio::select! {
            _ = sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    session_tx.send_replace(None);
    if let Some(f) = first.take() {
        let _ = f.send(Err(ChatError::Closed));
    }
}

type Established = (
    Session,
    mpsc::UnboundedReceiver<Event>,
    tokio::task::JoinHandle<conn::SessionEnd>,
);

/// Opens a socket, logs in, subscribes and joins the configured rooms.
async fn establish(inner: &Inner, first: bool) -> Result<Established, EstablishError> {
    let cfg = &inner.cfg;
    let timing = Timing {
        ping_interval: cfg.ping_interval,
        ping_timeout: cfg.ping_timeout,
        connect_timeout: cfg.connect_timeout,
    };
    let (session, events, pump) = Session::open(&inner.ws_url, timing)
        .await
        .map_err(|e| EstablishError::Transient(e.to_string()))?;
    let transient = |e: CallError| EstablishError::Transient(e.to_string());

    let params = match (&cfg.token, &cfg.username, &cfg.password) {
        (Some(token), _, _) => json!([{ "resume": token.expose() }]),
        (None, Some(user), Some(pw)) => json!([{
            "user": { "username": user },
            "password": { "digest": password_digest(pw.expose()), "algorithm": "sha-256" }
        }]),
        _ => {
            return Err(EstablishError::LoginRejected(
                "no credentials configured".into(),
            ));
        }
    };
    let login = match timeout(cfg.call_timeout, session.call("login", params)).await {
        Err(_) => return Err(EstablishError::Transient("login timed out".into())),
        Ok(Err(CallError::Server(e))) if e.rate_limit_wait_ms().is_some() => {
            return Err(EstablishError::Transient(e.to_string()));
        }
        Ok(Err(CallError::Server(e))) => return Err(EstablishError::LoginRejected(e.to_string())),
        Ok(Err(e)) => return Err(transient(e)),
        Ok(Ok(None)) => return Err(EstablishError::Transient("login answered nothing".into())),
        Ok(Ok(Some(v))) => v,
    };
    let user_id = login
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let token = login
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if user_id.is_empty() || token.is_empty() {
        return Err(EstablishError::Transient(
            "login result lacks id or token".into(),
        ));
    }
    let auth = RestAuth {
        user_id: user_id.clone(),
        token,
    };
    let known = inner.identity.read().ok().and_then(|i| i.clone());
    let username = match (&known, &cfg.username) {
        (Some(k), _) if k.user_id == user_id => k.username.clone(),
        (_, Some(u)) if cfg.token.is_none() => u.clone(),
        _ => match inner.rest.me(&auth).await {
            Ok(me) => {
                let roles: Vec<&str> = me
                    .get("roles")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !roles.contains(&"bot") {
                    tracing::warn!(
                        ?roles,
                        "the bot account lacks the `bot` role: the server will rate-limit its messages"
                    );
                }
                me.get("username")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            }
            Err(e) => cfg.username.clone().ok_or_else(|| {
                EstablishError::Transient(format!("cannot learn the bot's username: {e}"))
            })?,
        },
    };
    if let Ok(mut id) = inner.identity.write() {
        *id = Some(Identity {
            user_id: user_id.clone(),
            username: username.clone(),
            auth,
        });
    }
    if first {
        match inner.rest.server_version().await {
            Ok(v) => {
                tracing::info!(server = %cfg.url, version = %v, user = %username, "logged in to Rocket.Chat")
            }
            Err(e) => {
                tracing::warn!(server = %cfg.url, error = %e, "logged in, but /api/info did not answer")
            }
        }
    }

    session
        .subscribe(
            "stream-room-messages",
            json!(["__my_messages__", {"useCollection": false, "args": []}]),
        )
        .await
        .map_err(transient)?;
    if let Err(e) = session
        .subscribe(
            "stream-notify-user",
            json!([format!("{user_id}/subscriptions-changed"), {"useCollection": false, "args": []}]),
        )
        .await
    {
        tracing::warn!(error = %e, "no room notifications; new rooms still arrive with their messages");
    }
    for room in &cfg.rooms {
        let name = room.trim_start_matches('#');
        let rid = match session.call("getRoomIdByNameOrId", json!([name])).await {
            Ok(Some(Value::String(rid))) => rid,
            Ok(other) => {
                tracing::warn!(room = name, answer = ?other, "cannot find configured room");
                continue;
            }
            Err(CallError::Disconnected) => return Err(transient(CallError::Disconnected)),
            Err(e) => {
                tracing::warn!(room = name, error = %e, "cannot find configured room");
                continue;
            }
        };
        if let Err(e) = session.call("joinRoom", json!([rid])).await {
            tracing::warn!(room = name, error = %e, "cannot join configured room");
        }
        if let Ok(mut r) = inner.rooms.lock() {
            r.insert(name.to_string(), rid);
        }
    }
    Ok((session, events, pump))
}

const HISTORY_PAGE: usize = 50;
const HISTORY_MAX_PAGES: usize = 20;

/// Fetches, for every room the bot is in, the messages newer than its read mark, oldest first.
async fn catch_up(
    session: &Session,
    store: &Store,
    who: &Listener<'_>,
) -> Result<Vec<Incoming>, String> {
    let subs = session
        .call("subscriptions/get", json!([]))
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Value::Null);
    let subs = subs
        .as_array()
        .or_else(|| subs.get("update").and_then(Value::as_array))
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for sub in subs {
        let Some(rid) = sub.get("rid").and_then(Value::as_str) else {
            continue;
        };
        let Some(mark) = store.read_mark(rid).map_err(|e| e.to_string())? else {
            continue;
        };
        let meta = json!({
            "roomParticipant": true,
            "roomType": sub.get("t").cloned().unwrap_or(Value::Null),
            "roomName": sub.get("name").cloned().unwrap_or(Value::Null),
        });
        let mut end = Value::Null;
        for _ in 0..HISTORY_MAX_PAGES {
            let page = session
                .call("loadHistory", json!([rid, end, HISTORY_PAGE, Value::Null]))
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or(Value::Null);
            let messages = page
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut reached = false;
            let mut oldest = None;
            for m in &messages {
                let Some(ts) = m.get("ts").and_then(ddp::read_ejson_date) else {
                    continue;
                };
                oldest = Some(ts);
                if ts <= mark {
                    reached = true;
                    break;
                }
                if let Ok(mut inc) = classify(m, Some(&meta), who) {
                    inc.caught_up = true;
                    out.push(inc);
                }
            }
            match oldest {
                Some(ts) if !reached && messages.len() == HISTORY_PAGE => end = ddp::ejson_date(ts),
                _ => break,
            }
        }
    }
    out.sort_by_key(|m| m.ts_ms);
    Ok(out)
}

/// Every string in a JSON value (message attachments) passed through the last redaction pass.
fn outgoing_json(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::outgoing(s)),
        Value::Array(a) => Value::Array(a.iter().map(outgoing_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), outgoing_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_the_scheme_and_path() {
        assert_eq!(
            websocket_url("https://chat.example.org/"),
            "wss://chat.example.org/websocket"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:3000/rc"),
            "ws://127.0.0.1:3000/rc/websocket"
        );
    }

    #[test]
    fn the_password_digest_is_lowercase_sha256_hex() {
        assert_eq!(
            password_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn message_ids_look_like_meteor_ids() {
        let id = new_message_id();
        assert_eq!(id.len(), 17);
        assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert_ne!(id, new_message_id());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = backoff(attempt, min, max);
            assert!(d <= max, "{attempt}: {d:?}");
        }
        assert!(backoff(0, min, max) <= min);
        assert!(backoff(30, min, max) >= max / 2);
    }

    #[test]
    fn recent_ids_forget_the_oldest_beyond_capacity() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        r.insert("b");
        r.insert("c");
        assert!(r.insert("a"));
    }
}
