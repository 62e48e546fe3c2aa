//! The Rocket.Chat adapter: the socket only resumes the login and listens to the message streams; every action goes over REST, by the routes the server's version has. Implements `Chat`.

pub mod catchup;
pub mod classify;
pub mod conn;
pub mod ddp;
pub mod preflight;
pub mod rest;
pub mod rooms;
pub mod server;
mod session;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;

use self::classify::{Listener, classify};
use self::conn::{CallError, Event, Session, Timing};
use self::rest::{LoggedIn, Rest, RestAuth, RestError};
use self::rooms::{MissingRoom, RoomProblem};
use self::server::{Endpoints, ServerVersion};
use self::session::{keep_rooms, supervise};
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
    server: RwLock<Option<Server>>,
    max_len: AtomicUsize,
    /// Rooms found by name: name → id.
    rooms: Mutex<HashMap<String, String>>,
    /// Needed rooms not reached yet, and why.
    missing: Mutex<Vec<MissingRoom>>,
    /// One password login at a time when a token stops working.
    relogin: tokio::sync::Mutex<()>,
    /// The last password login: its token is resumed on every new socket (and its user document
    /// read), so that reconnects, even failed ones, mint no new tokens.
    password_login: Mutex<Option<LoggedIn>>,
    cancel: CancellationToken,
    /// The connection's supervising task (it holds the store for read marks).
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct Identity {
    user_id: String,
    username: String,
    roles: Vec<String>,
    auth: RestAuth,
}

/// The server the bot talks to.
#[derive(Debug, Clone, Copy)]
struct Server {
    /// `None` when `/api/info` gave no readable version.
    version: Option<ServerVersion>,
    endpoints: Endpoints,
}

/// Why establishing a session failed.
enum EstablishError {
    /// Worth retrying (network, server restarting, rate limit).
    Transient(String),
    /// The server said no to our credentials.
    LoginRejected(String),
    /// The server is older than the oldest supported version.
    Unsupported(String),
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

/// A Meteor-style 17-character random id, used as a client-chosen message `_id` (from the
/// operating system's generator: an id that could be guessed could be posted first by someone else).
pub fn new_message_id() -> String {
    crate::random::token(ID_ALPHABET, 17)
}

/// Pure: the id of the bot's message in `role` about message `of`: the same every time, so a
/// replica that repeats the post (it took over before the first was recorded) adds nothing.
pub fn derived_message_id(of: &str, role: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{role}\n{of}").as_bytes());
    d.iter()
        .take(17)
        .map(|b| ID_ALPHABET[*b as usize % ID_ALPHABET.len()] as char)
        .collect()
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

/// What to do about a bot user the server rate-limits.
pub const RATE_LIMIT_ADVICE: &str = "the bot user lacks the `api-bypass-rate-limit` permission: Rocket.Chat allows it about 10 calls a minute per REST route, so under load its answers wait for the limit to reset; give it the `bot` role, or grant the permission to one of its roles (Administration > Permissions)";

/// A REST failure as the chat layer reports it.
fn rejected(action: &str, e: RestError) -> ChatError {
    ChatError::Rejected {
        action: action.to_string(),
        reason: e.to_string(),
    }
}

/// Pure: what to tell the operator when a password login is refused.
fn login_refusal(error: &str) -> String {
    if error.contains("totp") || error.contains("2fa") {
        format!(
            "{error}: the account asks for a second factor, which a bot cannot give; use a personal access token created with \"Ignore Two Factor Authentication\" (ROCKETOPS_RC_TOKEN)"
        )
    } else if error.eq_ignore_ascii_case("unauthorized") {
        format!("{error}: wrong username or password")
    } else {
        error.to_string()
    }
}

impl RocketChat {
    /// Connects and logs in. Returns once logged in and the needed rooms were looked for; a
    /// rejected login or an unsupported server is an error, not a retry loop. After that the
    /// connection is kept up (reconnect, resume, re-subscribe, catch up) until `cancel`, and rooms
    /// not reached are retried.
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
            server: RwLock::new(None),
            rooms: Mutex::new(HashMap::new()),
            missing: Mutex::new(Vec::new()),
            relogin: tokio::sync::Mutex::new(()),
            password_login: Mutex::new(None),
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
            Ok(Ok(())) => {
                let chat = RocketChat { inner };
                chat.warn_if_rate_limited().await;
                tokio::spawn(keep_rooms(chat.clone()));
                Ok((chat, incoming_rx))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ChatError::Closed),
        }
    }

    /// Waits (bounded) until the connection has closed after its cancellation token fired.
    pub async fn closed(&self, limit: Duration) {
        let task = self.inner.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(t) = task {
            // Shutting down: a supervisor that does not end in time is left to the runtime.
            let _ = tokio::time::timeout(limit, t).await;
        }
    }

    /// Whether the socket is up right now (REST actions work without it).
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

    /// The bot user's roles on the server, as of the last login.
    pub fn roles(&self) -> Vec<String> {
        self.identity().map(|i| i.roles).unwrap_or_default()
    }

    /// The server's version, when `/api/info` gave a readable one.
    pub fn server_version(&self) -> Option<ServerVersion> {
        self.server().and_then(|s| s.version)
    }

    /// The needed rooms (configured rooms and the alerts channel) not reached yet, and why.
    pub fn missing_rooms(&self) -> Vec<MissingRoom> {
        self.inner
            .missing
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    fn identity(&self) -> Option<Identity> {
        self.inner.identity.read().ok().and_then(|g| g.clone())
    }

    fn server(&self) -> Option<Server> {
        self.inner.server.read().ok().and_then(|g| *g)
    }

    fn endpoints(&self) -> Endpoints {
        self.server()
            .map(|s| s.endpoints)
            .unwrap_or_else(|| server::routes(server::NEWEST_KNOWN))
    }

    /// Runs a REST call with the bot's credentials; when the server no longer accepts them
    /// (a password login's token expired or was revoked), logs in again once and repeats it.
    async fn authed<T, F, Fut>(&self, call: F) -> Result<T, RestError>
    where
        F: Fn(RestAuth) -> Fut,
        Fut: Future<Output = Result<T, RestError>>,
    {
        let Some(me) = self.identity() else {
            return Err(RestError::Unauthorized {
                route: "(not logged in yet)".into(),
            });
        };
        match call(me.auth.clone()).await {
            Err(RestError::Unauthorized { route }) => match self.login_again(&me.auth).await {
                Some(fresh) => call(fresh).await,
                None => Err(RestError::Unauthorized { route }),
            },
            other => other,
        }
    }

    /// `GET /api/v1/<route>?<query>` with the bot's credentials (see [`RocketChat::authed`]).
    async fn get(
        &self,
        route: &str,
        query: &[(&str, &str)],
        patience: Duration,
    ) -> Result<Value, RestError> {
        let rest = &self.inner.rest;
        self.authed(|a| async move { rest.get(&a, route, query, patience).await })
            .await
    }

    /// `POST /api/v1/<route>` with the bot's credentials (see [`RocketChat::authed`]).
    async fn post_json(
        &self,
        route: &str,
        body: &Value,
        patience: Duration,
    ) -> Result<Value, RestError> {
        let rest = &self.inner.rest;
        self.authed(|a| async move { rest.post(&a, route, body, patience).await })
            .await
    }

    /// A new password login after `stale` was refused; `None` with a personal access token
    /// (which only an administrator can renew) or when the login fails.
    async fn login_again(&self, stale: &RestAuth) -> Option<RestAuth> {
        let cfg = &self.inner.cfg;
        let (None, Some(user), Some(pw)) = (&cfg.token, &cfg.username, &cfg.password) else {
            tracing::error!(
                "Rocket.Chat no longer accepts the bot's personal access token: create a new one"
            );
            return None;
        };
        let _one = self.inner.relogin.lock().await;
        if let Some(me) = self.identity()
            && me.auth != *stale
        {
            return Some(me.auth);
        }
        match self
            .inner
            .rest
            .login(user, pw.expose(), cfg.call_timeout)
            .await
        {
            Ok(login) => {
                let auth = login.auth.clone();
                if let Ok(mut cached) = self.inner.password_login.lock() {
                    *cached = Some(login);
                }
                tracing::info!("logged in to Rocket.Chat again: the earlier token stopped working");
                if let Ok(mut id) = self.inner.identity.write()
                    && let Some(id) = id.as_mut()
                {
                    id.auth = auth.clone();
                }
                Some(auth)
            }
            Err(e) => {
                tracing::error!(error = %e, "logging in to Rocket.Chat again failed");
                None
            }
        }
    }

    /// Whether the bot user holds `api-bypass-rate-limit` (through one of its roles).
    pub async fn rate_limit_exempt(&self) -> Result<bool, ChatError> {
        let action = "reading permissions";
        let v = self
            .get(
                self.endpoints().permissions,
                &[],
                self.inner.cfg.call_timeout,
            )
            .await
            .map_err(|e| rejected(action, e))?;
        let holders: Vec<String> = v
            .get("update")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|p| p.get("_id").and_then(Value::as_str) == Some("api-bypass-rate-limit"))
            })
            .and_then(|p| p.get("roles"))
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(self.roles().iter().any(|r| holders.contains(r)))
    }

    /// Says at start when the server will rate-limit the bot's REST calls.
    async fn warn_if_rate_limited(&self) {
        let exempt = match self.rate_limit_exempt().await {
            Ok(e) => e,
            // Without the permission list, judge by the roles that hold it by default.
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the server's permissions");
                self.roles().iter().any(|r| r == "bot" || r == "admin")
            }
        };
        if !exempt {
            tracing::warn!(
                user = %self.bot_username(),
                "{}",
                RATE_LIMIT_ADVICE
            );
        }
    }

    /// A public setting's value (`Message_AllowUnrecognizedSlashCommand`), `None` when unset.
    pub async fn public_setting(&self, id: &str) -> Result<Option<Value>, ChatError> {
        let v = self
            .inner
            .rest
            .get_public(
                self.endpoints().public_settings,
                &[("_id", id)],
                self.inner.cfg.call_timeout,
            )
            .await
            .map_err(|e| rejected("reading public settings", e))?;
        Ok(v.get("settings")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|s| s.get("_id").and_then(Value::as_str) == Some(id))
            })
            .and_then(|s| s.get("value").cloned()))
    }

    /// Opens (or finds) the direct-message room with `username`.
    pub async fn direct_room(&self, username: &str) -> Result<String, ChatError> {
        let action = "opening a direct message";
        let body = json!({ "username": username });
        let v = self
            .post_json(self.endpoints().direct, &body, self.inner.cfg.send_deadline)
            .await
            .map_err(|e| rejected(action, e))?;
        v.pointer("/room/rid")
            .or_else(|| v.pointer("/room/_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChatError::Rejected {
                action: action.into(),
                reason: "no room id in the answer".into(),
            })
    }

    /// Whether message `id` exists on the server (a post whose answer was lost may have landed).
    async fn message_exists(&self, id: &str) -> bool {
        self.get(
            self.endpoints().get_message,
            &[("msgId", id)],
            self.inner.cfg.call_timeout,
        )
        .await
        .is_ok_and(|v| v.pointer("/message/_id").and_then(Value::as_str) == Some(id))
    }

    /// Sends one chunk as message `id` with the bot's own id, so that repeating it never posts
    /// twice; `Ok(None)` means the server says it is too long.
    async fn send_one_as(
        &self,
        room_id: &str,
        thread: Option<&str>,
        id: &str,
        text: &str,
        attachments: Option<Value>,
    ) -> Result<Option<MessageRef>, ChatError> {
        let mut message =
            json!({"_id": id, "rid": room_id, "msg": text, "bot": {"i": "rocketops"}});
        if let Some(t) = thread {
            message["tmid"] = json!(t);
        }
        if let Some(a) = attachments {
            message["attachments"] = a;
        }
        let done = MessageRef {
            room_id: room_id.to_string(),
            id: id.to_string(),
        };
        let body = json!({ "message": message });
        match self
            .post_json(self.endpoints().send, &body, self.inner.cfg.send_deadline)
            .await
        {
            Ok(_) => Ok(Some(done)),
            Err(e) if e.code().is_some_and(|c| c.contains("size-exceeded")) => Ok(None),
            // A repeated post (its first answer was lost, or an operation resumed after a crash)
            // is refused as a duplicate id: it is sent if the server has it.
            Err(e) => {
                if self.message_exists(id).await {
                    Ok(Some(done))
                } else {
                    Err(rejected("sending a message", e))
                }
            }
        }
    }

    /// Posts `text` in chunks the server accepts, as fresh messages; returns the first.
    async fn post_chunks(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        self.post_chunks_as(room_id, thread, text, |_| new_message_id())
            .await
    }

    /// Posts `text` in chunks the server accepts, chunk `i` (a finer piece `i + 1000 * j`) as
    /// message `id(i)`; returns the first.
    async fn post_chunks_as(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
        id: impl Fn(usize) -> String,
    ) -> Result<MessageRef, ChatError> {
        let limit = self.inner.max_len.load(Ordering::Relaxed);
        let mut first: Option<MessageRef> = None;
        for (i, chunk) in split_message(text, limit).into_iter().enumerate() {
            match self
                .send_one_as(room_id, thread, &id(i), &chunk, None)
                .await?
            {
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
                    for (j, piece) in split_message(&chunk, smaller).into_iter().enumerate() {
                        match self
                            .send_one_as(room_id, thread, &id(i + 1000 * (j + 1)), &piece, None)
                            .await?
                        {
                            Some(r) => {
                                first.get_or_insert(r);
                            }
                            None => {
                                return Err(ChatError::Rejected {
                                    action: "sending a message".into(),
                                    reason: "the server rejects even short messages as too long"
                                        .into(),
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
        let text = crate::redact::outgoing(text);
        self.post_chunks(room_id, thread, &text).await
    }

    fn new_message_id(&self) -> String {
        new_message_id()
    }

    async fn post_derived(
        &self,
        room_id: &str,
        thread: Option<&str>,
        seed: &str,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        let text = crate::redact::outgoing(text);
        self.post_chunks_as(room_id, thread, &text, |i| {
            derived_message_id(seed, &format!("chunk-{i}"))
        })
        .await
    }

    async fn has_message(&self, id: &str) -> bool {
        self.message_exists(id).await
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
            .send_one_as(room_id, thread, id, &head, None)
            .await?
            .ok_or_else(|| ChatError::Rejected {
                action: "sending a message".into(),
                reason: "longer than the server allows".into(),
            })?;
        for rest in chunks {
            self.post_chunks(room_id, Some(id), &rest).await?;
        }
        Ok(posted)
    }

    async fn edit(&self, message: &MessageRef, text: &str) -> Result<(), ChatError> {
        let text = &crate::redact::outgoing(text);
        let limit = self.inner.max_len.load(Ordering::Relaxed);
        let mut chunks = split_message(text, limit).into_iter();
        let head = chunks.next().unwrap_or_default();
        let body = json!({"roomId": message.room_id, "msgId": message.id, "text": head});
        self.post_json(self.endpoints().edit, &body, self.inner.cfg.send_deadline)
            .await
            .map_err(|e| rejected("editing a message", e))?;
        for rest in chunks {
            self.post_chunks(&message.room_id, Some(&message.id), &rest)
                .await?;
        }
        Ok(())
    }

    async fn react(&self, message: &MessageRef, emoji: &str) -> Result<(), ChatError> {
        let name = emoji.trim_matches(':');
        let body = json!({"messageId": message.id, "emoji": name, "shouldReact": true});
        self.post_json(self.endpoints().react, &body, self.inner.cfg.send_deadline)
            .await
            .map(|_| ())
            .map_err(|e| rejected("reacting", e))
    }

    async fn post_with_buttons(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
        buttons: &[Button],
    ) -> Result<MessageRef, ChatError> {
        let text = &crate::redact::outgoing(text);
        // `msg_in_chat_window`: the clicking user's client posts the button's text as that user's
        // own message (the attachment's default processing, so no processing type is named).
        let actions: Vec<Value> = buttons
            .iter()
            .map(|b| json!({"type": "button", "text": b.label, "msg": b.message, "msg_in_chat_window": true}))
            .collect();
        let attachments = json!([{"button_alignment": "horizontal", "actions": actions}]);
        match self
            .send_one_as(room_id, thread, &new_message_id(), text, Some(attachments))
            .await
        {
            Ok(Some(r)) => Ok(r),
            Ok(None) => self.post_chunks(room_id, thread, text).await,
            Err(e) => {
                // Buttons are a convenience: without them the typed reply still works.
                tracing::warn!(error = %e, "posting buttons failed; posting plain text");
                self.post_chunks(room_id, thread, text).await
            }
        }
    }

    async fn post_attachments(
        &self,
        room_id: &str,
        text: &str,
        attachments: &[Value],
    ) -> Result<MessageRef, ChatError> {
        let text = crate::redact::outgoing(text);
        let attachments: Vec<Value> = attachments.iter().map(outgoing_json).collect();
        self.send_one_as(
            room_id,
            None,
            &new_message_id(),
            &text,
            Some(json!(attachments)),
        )
        .await?
        .ok_or_else(|| ChatError::Rejected {
            action: "posting a message with attachments".into(),
            reason: "longer than the server allows".into(),
        })
    }

    async fn upload(
        &self,
        room_id: &str,
        file: &rest::File,
        text: &str,
    ) -> Result<MessageRef, ChatError> {
        let text = &crate::redact::outgoing(text);
        let (rest, ep) = (&self.inner.rest, self.endpoints());
        let patience = self.inner.cfg.send_deadline;
        match self
            .authed(|a| async move {
                rest.upload(&a, ep.upload, room_id, file, text, patience)
                    .await
            })
            .await
        {
            Ok(id) => Ok(MessageRef {
                room_id: room_id.to_string(),
                id,
            }),
            Err(e) => Err(rejected(&format!("uploading {}", file.name), e)),
        }
    }

    async fn user_roles(&self, username: &str) -> Result<Vec<String>, ChatError> {
        let action = format!("reading the roles of {username}");
        let v = self
            .get(
                self.endpoints().user_info,
                &[("username", username)],
                self.inner.cfg.call_timeout,
            )
            .await
            .map_err(|e| rejected(&action, e))?;
        match v.pointer("/user/roles").and_then(Value::as_array) {
            Some(a) => Ok(a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()),
            None => Err(ChatError::Rejected {
                action,
                reason: "the bot's account needs the `view-full-other-user-info` permission".into(),
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
            .get(
                self.endpoints().room_info,
                &[("roomName", name)],
                self.inner.cfg.call_timeout,
            )
            .await
            .map_err(|_| ChatError::UnknownRoom(name.to_string()))?;
        let rid = v
            .pointer("/room/_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChatError::UnknownRoom(name.to_string()))?;
        if let Ok(mut r) = self.inner.rooms.lock() {
            r.insert(name.to_string(), rid.clone());
        }
        Ok(rid)
    }
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
    fn a_derived_message_id_is_the_same_for_the_same_message_and_role_and_looks_like_a_server_one()
    {
        let a = derived_message_id("m1", "restarted");
        assert_eq!(a, derived_message_id("m1", "restarted"));
        assert_ne!(a, derived_message_id("m2", "restarted"));
        assert_ne!(a, derived_message_id("m1", "other"));
        assert_eq!(a.len(), 17);
        assert!(a.bytes().all(|b| ID_ALPHABET.contains(&b)), "{a}");
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
