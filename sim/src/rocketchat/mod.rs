//! The Rocket.Chat simulator: DDP over WebSocket at `/websocket`, the REST routes bots use, and a control API with fault injection.

mod http;
pub mod release;
pub mod state;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use release::{Release, UnknownRelease};
use state::{NewMessage, Out, State};
pub use state::{RateRule, SimEvent};

/// How the simulator listens and times its heartbeat.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Silence after which the server pings a client (the real server: 15 s).
    pub ping_interval: Duration,
    /// How long after its ping the server waits before closing (the real server: 15 s).
    pub ping_timeout: Duration,
    /// Create the sandbox's users and channels.
    pub seed: bool,
    /// The Rocket.Chat release served: its methods, routes and reported version.
    pub release: Release,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(15),
            seed: true,
            release: Release::NEWEST,
        }
    }
}

/// The seeded accounts: (username, roles). Each password equals the username.
pub const SEED_USERS: &[(&str, &[&str])] = &[
    ("admin", &["admin", "user"]),
    ("alice", &["user", "ops"]),
    ("bob", &["user"]),
    ("rocketops", &["bot"]),
];

/// The seeded public channels; every seeded user is a member.
pub const SEED_CHANNELS: &[&str] = &["ops", "alerts"];

/// Why a control request failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("no user `{0}`")]
    UnknownUser(String),
    #[error("no room `{0}`")]
    UnknownRoom(String),
    #[error("no message `{0}`")]
    UnknownMessage(String),
    #[error("refused: {0}")]
    Refused(String),
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub refuse_until: Option<Instant>,
    pub delay: Duration,
    pub silent: bool,
}

pub(crate) struct SimInner {
    pub state: Mutex<State>,
    pub faults: Mutex<Faults>,
    pub cfg: SimConfig,
    pub next_conn: AtomicU64,
    pub shutdown: CancellationToken,
}

impl SimInner {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Clone it freely; `stop` (or dropping every clone's server) ends it.
#[derive(Clone)]
pub struct RocketChatSim {
    inner: Arc<SimInner>,
    addr: SocketAddr,
}

impl RocketChatSim {
    /// Binds and starts serving.
    pub async fn start(cfg: SimConfig) -> std::io::Result<RocketChatSim> {
        let mut state = State::new();
        state.release = cfg.release;
        if cfg.seed {
            for (name, roles) in SEED_USERS {
                state.add_user(name, roles);
            }
            let names: Vec<&str> = SEED_USERS.iter().map(|(n, _)| *n).collect();
            for ch in SEED_CHANNELS {
                state.add_channel(ch, false, &names);
            }
            // As the README asks admins to do: the bot may read other users' roles, and unknown
            // slash commands reach the bot as messages.
            state.grant_permission("bot", "view-full-other-user-info");
            state.set_setting("Message_AllowUnrecognizedSlashCommand", Value::Bool(true));
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(SimInner {
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            cfg,
            next_conn: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        });
        let app = http::router(inner.clone());
        let stop = inner.shutdown.clone();
        // Like any server with small interactive frames: no Nagle delay on replies.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(RocketChatSim { inner, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes every connection.
    pub fn stop(&self) {
        self.drop_connections();
        self.inner.shutdown.cancel();
    }

    /// Adds a user (password = username).
    /// Whether a user of that name exists.
    pub fn has_user(&self, username: &str) -> bool {
        self.inner.state().user_by_name(username).is_some()
    }

    /// A room's id by its name (`ops`).
    pub fn room_id(&self, name: &str) -> Option<String> {
        self.inner.state().room_by_name(name).map(|r| r.id.clone())
    }

    pub fn add_user(&self, username: &str, roles: &[&str]) -> String {
        self.inner.state().add_user(username, roles)
    }

    /// Adds a public channel (or a private group) with these members.
    pub fn add_channel(&self, name: &str, private: bool, members: &[&str]) -> String {
        self.inner.state().add_channel(name, private, members)
    }

    /// A new personal access token for `username`, and the user's id.
    pub fn create_token(&self, username: &str) -> Result<(String, String), SimError> {
        let mut st = self.inner.state();
        let token = st
            .create_token(username)
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        let id = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .unwrap_or_default();
        Ok((token, id))
    }

    /// Posts as `username` in `room`: `#ops`/`ops`, or `@bob` for the DM between the poster and bob.
    pub fn post(&self, username: &str, room: &str, text: &str) -> Result<Value, SimError> {
        self.post_in(username, room, text, None)
    }

    /// Posts as `username` in `room`, as a reply in the thread `tmid` when given.
    pub fn post_in(
        &self,
        username: &str,
        room: &str,
        text: &str,
        tmid: Option<&str>,
    ) -> Result<Value, SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        let rid = resolve_room(&mut st, &uid, room)?;
        if !st.rooms[&rid].members.contains(&uid) {
            return Err(SimError::Refused(format!("{username} is not in {room}")));
        }
        let extra = NewMessage {
            tmid: tmid.map(str::to_string),
            ..NewMessage::default()
        };
        Ok(st.insert_message(&uid, &rid, text, extra))
    }

    /// Posts a system message (`t` = `uj`, `ru`, ...) in `room`.
    pub fn post_system(
        &self,
        username: &str,
        room: &str,
        t: &str,
        text: &str,
    ) -> Result<Value, SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        let rid = resolve_room(&mut st, &uid, room)?;
        let extra = NewMessage {
            t: Some(t.to_string()),
            ..NewMessage::default()
        };
        Ok(st.insert_message(&uid, &rid, text, extra))
    }

    /// Edits a message as `username` (who must be its author).
    pub fn edit(&self, username: &str, message_id: &str, text: &str) -> Result<(), SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        st.update_message(&uid, &serde_json::json!({"_id": message_id, "msg": text}))
            .map_err(|e| SimError::Refused(e.to_string()))
    }

    /// Makes `username` a member of `room` (as if invited).
    pub fn join(&self, username: &str, room: &str) -> Result<(), SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        let rid = st
            .room_by_name(room)
            .map(|r| r.id.clone())
            .ok_or_else(|| SimError::UnknownRoom(room.into()))?;
        if let Some(r) = st.rooms.get_mut(&rid) {
            r.members.insert(uid);
        }
        Ok(())
    }

    /// Adds `emoji` (without colons) as `username`'s reaction to a message.
    pub fn react(&self, username: &str, message_id: &str, emoji: &str) -> Result<(), SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        st.set_reaction(
            &uid,
            &Value::String(format!(":{emoji}:")),
            &Value::String(message_id.into()),
            &Value::Bool(true),
        )
        .map_err(|e| SimError::Refused(e.to_string()))
    }

    /// A room's messages, oldest first (edits applied, reactions included).
    pub fn messages(&self, room: &str) -> Result<Vec<Value>, SimError> {
        let st = self.inner.state();
        let rid = st
            .room_by_name(room)
            .map(|r| r.id.clone())
            .or_else(|| st.rooms.get(room).map(|r| r.id.clone()))
            .ok_or_else(|| SimError::UnknownRoom(room.into()))?;
        Ok(st.room_messages(&rid))
    }

    /// The DM room id between two users, if it exists.
    pub fn direct_room(&self, a: &str, b: &str) -> Option<String> {
        let st = self.inner.state();
        let ua = st.user_by_name(a)?.id.clone();
        let ub = st.user_by_name(b)?.id.clone();
        st.rooms
            .values()
            .find(|r| {
                r.kind == 'd'
                    && r.members.len() == 2
                    && r.members.contains(&ua)
                    && r.members.contains(&ub)
            })
            .map(|r| r.id.clone())
    }

    /// Closes every client connection (clients see the socket drop).
    pub fn drop_connections(&self) {
        let mut st = self.inner.state();
        for (_, c) in st.conns.drain() {
            let _ = c.tx.send(Out::Close);
        }
    }

    /// Refuses new WebSocket connections (HTTP 503) for `d`.
    pub fn refuse_connections_for(&self, d: Duration) {
        self.inner.faults().refuse_until = Some(Instant::now() + d);
    }

    /// Delays every outgoing frame by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.inner.faults().delay = d;
    }

    /// While on, the server sends nothing at all (no pongs, no results) and keeps sockets open.
    pub fn set_silent(&self, on: bool) {
        self.inner.faults().silent = on;
    }

    /// Sends a raw text frame to every connection (to test malformed frames).
    pub fn inject_frame(&self, raw: &str) {
        let st = self.inner.state();
        for c in st.conns.values() {
            let _ = c.tx.send(Out::Frame(raw.to_string()));
        }
    }

    /// Sets (or with `None` removes) the per-user rate limit of a DDP method.
    pub fn set_rate_limit(&self, method: &str, rule: Option<RateRule>) {
        let mut st = self.inner.state();
        match rule {
            Some(r) => {
                st.rate_rules.insert(method.to_string(), r);
            }
            None => {
                st.rate_rules.remove(method);
            }
        }
    }

    /// Creates an incoming webhook that posts into `room` as `username`; returns its URL.
    pub fn create_webhook(&self, room: &str, username: &str) -> Result<String, SimError> {
        let path = self.create_webhook_path(room, username)?;
        Ok(format!("{}{path}", self.url()))
    }

    /// As [`RocketChatSim::create_webhook`], answering with the URL's path (`/hooks/ID/TOKEN`).
    pub fn create_webhook_path(&self, room: &str, username: &str) -> Result<String, SimError> {
        let mut st = self.inner.state();
        let uid = st
            .user_by_name(username)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(username.into()))?;
        let rid = resolve_room(&mut st, &uid, room)?;
        let id = crate::ids::new_message_id();
        let token = crate::ids::new_message_id() + &crate::ids::new_message_id();
        st.webhooks.insert(id.clone(), (token.clone(), rid, uid));
        Ok(format!("/hooks/{id}/{token}"))
    }

    /// A file uploaded with `rooms.media`: (name, content type, bytes), once confirmed.
    pub fn upload(&self, id: &str) -> Option<(String, String, Vec<u8>)> {
        self.inner
            .state()
            .uploads
            .get(id)
            .filter(|u| u.confirmed)
            .map(|u| (u.name.clone(), u.content_type.clone(), u.bytes.clone()))
    }

    /// Makes the next `n` webhook calls fail with HTTP 500.
    pub fn fail_webhooks(&self, n: u32) {
        self.inner.state().webhook_failures = n;
    }

    /// Grants a permission (`view-full-other-user-info`, ...) to a role.
    pub fn grant_permission(&self, role: &str, permission: &str) {
        self.inner.state().grant_permission(role, permission);
    }

    /// Takes a permission (`api-bypass-rate-limit`, ...) from a role, the admin role included.
    pub fn revoke_permission(&self, role: &str, permission: &str) {
        self.inner.state().revoke_permission(role, permission);
    }

    /// Sets the REST limit (calls per window, per route and client address; `None`: unlimited)
    /// and starts every count afresh. The real default: 10 per 60 s.
    pub fn set_rest_rate_limit(&self, limit: Option<(u32, Duration)>) {
        let mut st = self.inner.state();
        st.rest_limit = limit;
        st.reset_rest_counts();
    }

    /// Sets a public setting (`Message_AllowUnrecognizedSlashCommand`, `Message_MaxAllowedSize`, ...).
    pub fn set_setting(&self, id: &str, value: Value) {
        self.inner.state().set_setting(id, value);
    }

    /// The release this simulator plays.
    pub fn release(&self) -> Release {
        self.inner.state().release
    }

    /// Every DDP method clients called, over the socket or `method.call`/`method.callAnon`, in
    /// order: (username, or "" before login; method). The simulator's own uses are not included.
    pub fn methods_called(&self) -> Vec<(String, String)> {
        self.inner.state().methods_called.clone()
    }

    /// How many login tokens `username` holds: each password login mints one (personal access
    /// tokens are not counted; `logout` drops them all).
    pub fn tokens_of(&self, username: &str) -> usize {
        self.inner.state().tokens_of(username)
    }

    /// Sets the server's `Message_MaxAllowedSize`.
    pub fn set_max_message_len(&self, n: usize) {
        self.inner.state().max_message_len = n;
    }

    /// Live feed of messages inserted or edited.
    pub fn events(&self) -> broadcast::Receiver<SimEvent> {
        self.inner.state().events.subscribe()
    }

    /// How many WebSocket connections were ever accepted (a reconnect adds one).
    pub fn connections_accepted(&self) -> u64 {
        self.inner
            .next_conn
            .load(std::sync::atomic::Ordering::Relaxed)
            - 1
    }

    /// How many DDP connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.state().conns.len()
    }

    /// How many connections have logged in as `username`.
    pub fn sessions_of(&self, username: &str) -> usize {
        let st = self.inner.state();
        let Some(uid) = st.user_by_name(username).map(|u| u.id.clone()) else {
            return 0;
        };
        st.conns
            .values()
            .filter(|c| c.user_id.as_deref() == Some(uid.as_str()) && c.my_messages)
            .count()
    }
}

/// Finds a room by `#name`/`name`/id, or the DM for `@user` (created when missing).
fn resolve_room(st: &mut State, poster: &str, spec: &str) -> Result<String, SimError> {
    if let Some(other) = spec.strip_prefix('@') {
        let ou = st
            .user_by_name(other)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(other.into()))?;
        if let Some(r) = st.rooms.values().find(|r| {
            r.kind == 'd'
                && r.members.len() == 2
                && r.members.contains(poster)
                && r.members.contains(&ou)
        }) {
            return Ok(r.id.clone());
        }
        let name = other.to_string();
        let reply = st
            .call(poster, "createDirectMessage", &serde_json::json!([name]))
            .map_err(|e| SimError::Refused(e.to_string()))?;
        return reply
            .and_then(|v| v.get("rid").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| SimError::UnknownRoom(spec.into()));
    }
    st.room_by_name(spec)
        .map(|r| r.id.clone())
        .or_else(|| st.rooms.get(spec).map(|r| r.id.clone()))
        .ok_or_else(|| SimError::UnknownRoom(spec.into()))
}
