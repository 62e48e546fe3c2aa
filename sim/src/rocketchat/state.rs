//! The simulated Rocket.Chat's data and method semantics: users, tokens, rooms, messages, rate limits and fan-out.
//!
//! Long by design: the server's whole state is one value behind one lock (users, rooms, messages,
//! subscriptions, tokens, limits), and every method and route of every simulated release reads and
//! writes it; split across files, its invariants would be too.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::release::Release;
use crate::ids::{new_message_id, password_digest};

/// The permission that exempts a user from the REST rate limiter.
pub const BYPASS_RATE_LIMIT: &str = "api-bypass-rate-limit";

/// A frame queued for one client connection.
#[derive(Debug, Clone)]
pub enum Out {
    Frame(String),
    Close,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub name: String,
    pub password: String,
    pub roles: Vec<String>,
}

impl User {
    /// Every simulated user's address: `<username>@sandbox.invalid`.
    pub fn email(&self) -> String {
        format!("{}@sandbox.invalid", self.username)
    }
    pub fn is_bot(&self) -> bool {
        self.roles.iter().any(|r| r == "bot")
    }
}

#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    /// Channel name; for a DM, empty.
    pub name: String,
    /// `c`, `p` or `d`.
    pub kind: char,
    pub members: BTreeSet<String>,
}

/// A stored message, rendered to the server's JSON document on the way out.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub rid: String,
    pub msg: String,
    pub ts: i64,
    pub updated_at: i64,
    pub user_id: String,
    pub t: Option<String>,
    pub tmid: Option<String>,
    pub tcount: u32,
    pub edited_at: Option<i64>,
    pub edited_by: Option<String>,
    pub reactions: BTreeMap<String, Vec<String>>,
    pub bot: Option<Value>,
    pub attachments: Option<Value>,
    /// REST `alias` and `emoji`: how the message is shown, kept as given.
    pub alias: Option<String>,
    pub emoji: Option<String>,
}

/// A file uploaded to a room (`rooms.media`), attached to a message once confirmed.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub rid: String,
    pub user_id: String,
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub confirmed: bool,
}

/// The optional parts of a new message.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// Client-chosen id; generated when absent.
    pub id: Option<String>,
    /// Thread parent.
    pub tmid: Option<String>,
    /// System message type.
    pub t: Option<String>,
    pub bot: Option<Value>,
    /// REST `chat.postMessage` attachments (buttons).
    pub attachments: Option<Value>,
    pub alias: Option<String>,
    pub emoji: Option<String>,
}

/// One REST limiter window: counted per route and client address.
#[derive(Debug, Clone, Copy)]
struct RestWindow {
    start: Instant,
    count: u32,
}

/// The REST limiter's answer for a counted call, as its `X-RateLimit-*` headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestQuota {
    pub limit: u32,
    pub remaining: u32,
    /// When the window ends, in epoch milliseconds.
    pub reset_ms: i64,
    /// Whether this call is within the limit.
    pub allowed: bool,
}

/// A rate-limit rule for one DDP method, counted per user.
#[derive(Debug, Clone)]
pub struct RateRule {
    pub limit: u32,
    pub window: Duration,
    /// Users with the `bot` role (`send-many-messages`) are exempt.
    pub exempt_bots: bool,
}

/// What the simulator notes as it happens, for the terminal prompt and the benchmark.
#[derive(Debug, Clone)]
pub enum SimEvent {
    Message {
        room: String,
        message: Value,
        edited: bool,
    },
}

pub(crate) struct Conn {
    pub user_id: Option<String>,
    pub tx: mpsc::UnboundedSender<Out>,
    pub my_messages: bool,
    pub notify: BTreeSet<String>,
    /// Rooms subscribed to one by one (`stream-room-messages` with a room id).
    pub rooms: BTreeSet<String>,
    /// `stream-notify-room` events subscribed to (`<rid>/deleteMessage`, `<rid>/typing`).
    pub room_events: BTreeSet<String>,
}

/// The error of a method the server does not have.
pub fn method_not_found(method: &str) -> Value {
    error_value(404, &format!("Method '{method}' not found"))
}

/// The DDP limiter's refusal, `ms` before its window resets.
fn too_many_requests(ms: u64) -> Value {
    json!({
        "isClientSafe": true,
        "error": "too-many-requests",
        "reason": format!("Error, too many requests. Please slow down. You must wait {} seconds before trying again.", ms.div_ceil(1000)),
        "details": {"timeToReset": ms},
        "errorType": "Meteor.Error"
    })
}

/// How the simulator's personal access tokens begin, telling them from login tokens.
const PAT_PREFIX: &str = "pat-";

/// Replies to a DDP method: `Ok(None)` is a result frame without `result`.
pub type MethodReply = Result<Option<Value>, Value>;

pub struct State {
    pub users: Vec<User>,
    pub tokens: HashMap<String, String>,
    pub rooms: BTreeMap<String, Room>,
    pub messages: Vec<Message>,
    index: HashMap<String, usize>,
    pub(crate) conns: HashMap<u64, Conn>,
    pub rate_rules: HashMap<String, RateRule>,
    rate_log: HashMap<(String, String), VecDeque<Instant>>,
    rest_log: HashMap<(String, IpAddr), RestWindow>,
    /// The REST limit per route and client address: calls per window (`None`: unlimited).
    pub rest_limit: Option<(u32, Duration)>,
    pub max_message_len: usize,
    /// Permissions granted to roles. The admin role also holds every permission not revoked
    /// from it in `admin_revoked`.
    pub role_permissions: HashMap<String, Vec<String>>,
    /// Permissions taken from the admin role.
    pub admin_revoked: BTreeSet<String>,
    /// The release this server plays: which methods and routes it serves.
    pub release: Release,
    /// Every DDP method clients called (over the socket or `method.call*`): (username or "", method).
    pub methods_called: Vec<(String, String)>,
    /// Public settings by id (`Message_MaxAllowedSize` is `max_message_len`, not kept here).
    pub settings: BTreeMap<String, Value>,
    /// Incoming webhooks: id → (token, room id, posting user id).
    pub webhooks: HashMap<String, (String, String, String)>,
    /// Fail the next N webhook calls with HTTP 500.
    pub webhook_failures: u32,
    /// Files uploaded with `rooms.media`, by id.
    pub uploads: HashMap<String, Upload>,
    /// Statuses set with `setUserStatus` and `UserPresence:*`; online when unset.
    pub presence: HashMap<String, String>,
    last_ts: i64,
    pub events: broadcast::Sender<SimEvent>,
}

/// REST answers carry dates as ISO strings where DDP carries `{"$date": ms}`.
pub fn rest_dates(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(ms) = m.get("$date").and_then(Value::as_i64) {
                *v = json!(
                    chrono::DateTime::from_timestamp_millis(ms)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
                return;
            }
            m.values_mut().for_each(rest_dates);
        }
        Value::Array(a) => a.iter_mut().for_each(rest_dates),
        _ => {}
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn error_value(code: impl Into<Value>, reason: &str) -> Value {
    let code = code.into();
    let code_text = match &code {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    json!({
        "isClientSafe": true,
        "error": code,
        "reason": reason,
        "message": format!("{reason} [{code_text}]"),
        "errorType": "Meteor.Error"
    })
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub fn new() -> State {
        let mut rate_rules = HashMap::new();
        rate_rules.insert(
            "sendMessage".to_string(),
            RateRule {
                limit: 5,
                window: Duration::from_secs(1),
                exempt_bots: true,
            },
        );
        rate_rules.insert(
            "createDirectMessage".to_string(),
            RateRule {
                limit: 10,
                window: Duration::from_secs(60),
                exempt_bots: true,
            },
        );
        State {
            users: Vec::new(),
            tokens: HashMap::new(),
            rooms: BTreeMap::new(),
            messages: Vec::new(),
            index: HashMap::new(),
            conns: HashMap::new(),
            rate_rules,
            rate_log: HashMap::new(),
            rest_log: HashMap::new(),
            rest_limit: Some((10, Duration::from_secs(60))),
            max_message_len: 5000,
            // The real defaults: admins and bots skip the REST limiter; bots send many messages.
            role_permissions: HashMap::from([
                ("admin".to_string(), vec![BYPASS_RATE_LIMIT.to_string()]),
                (
                    "bot".to_string(),
                    vec![
                        BYPASS_RATE_LIMIT.to_string(),
                        "send-many-messages".to_string(),
                    ],
                ),
            ]),
            admin_revoked: BTreeSet::new(),
            release: Release::NEWEST,
            methods_called: Vec::new(),
            settings: BTreeMap::from([(
                "Message_AllowUnrecognizedSlashCommand".to_string(),
                Value::Bool(false),
            )]),
            webhooks: HashMap::new(),
            webhook_failures: 0,
            uploads: HashMap::new(),
            presence: HashMap::new(),
            last_ts: 0,
            events: broadcast::channel(4096).0,
        }
    }

    fn next_ts(&mut self) -> i64 {
        self.last_ts = now_ms().max(self.last_ts + 1);
        self.last_ts
    }

    pub fn add_user(&mut self, username: &str, roles: &[&str]) -> String {
        let id = new_message_id();
        self.users.push(User {
            id: id.clone(),
            username: username.to_string(),
            name: capitalise(username),
            password: username.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        });
        id
    }

    pub fn add_channel(&mut self, name: &str, private: bool, members: &[&str]) -> String {
        let id = new_message_id();
        let members = members
            .iter()
            .filter_map(|u| self.user_by_name(u).map(|u| u.id.clone()))
            .collect();
        self.rooms.insert(
            id.clone(),
            Room {
                id: id.clone(),
                name: name.to_string(),
                kind: if private { 'p' } else { 'c' },
                members,
            },
        );
        id
    }

    /// Whether `user` holds `permission` through one of its roles.
    pub fn has_permission(&self, user: &User, permission: &str) -> bool {
        user.roles.iter().any(|r| self.role_has(r, permission))
    }

    /// Whether the role `role` holds `permission`.
    pub fn role_has(&self, role: &str, permission: &str) -> bool {
        (role == "admin" && !self.admin_revoked.contains(permission))
            || self
                .role_permissions
                .get(role)
                .is_some_and(|p| p.iter().any(|x| x == permission))
    }

    /// Grants `permission` to `role` (once).
    pub fn grant_permission(&mut self, role: &str, permission: &str) {
        if role == "admin" {
            self.admin_revoked.remove(permission);
        }
        let held = self.role_permissions.entry(role.to_string()).or_default();
        if !held.iter().any(|p| p == permission) {
            held.push(permission.to_string());
        }
    }

    /// Takes `permission` from `role`.
    pub fn revoke_permission(&mut self, role: &str, permission: &str) {
        if role == "admin" {
            self.admin_revoked.insert(permission.to_string());
        }
        if let Some(held) = self.role_permissions.get_mut(role) {
            held.retain(|p| p != permission);
        }
    }

    /// Every permission named anywhere with the roles holding it, as `permissions.listAll` lists
    /// them (the admin role in each entry it has not lost).
    pub fn permissions_list(&self) -> Vec<Value> {
        let mut names: BTreeSet<&str> = self
            .role_permissions
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        names.extend(self.admin_revoked.iter().map(String::as_str));
        let mut roles: Vec<&str> = self.role_permissions.keys().map(String::as_str).collect();
        if !roles.contains(&"admin") {
            roles.push("admin");
        }
        roles.sort_unstable();
        names
            .into_iter()
            .map(|p| {
                let holders: Vec<&str> = roles
                    .iter()
                    .copied()
                    .filter(|r| self.role_has(r, p))
                    .collect();
                json!({"_id": p, "roles": holders})
            })
            .collect()
    }

    /// A public setting's value (`Message_MaxAllowedSize` follows `max_message_len`).
    pub fn setting(&self, id: &str) -> Option<Value> {
        match id {
            "Message_MaxAllowedSize" => Some(json!(self.max_message_len)),
            _ => self.settings.get(id).cloned(),
        }
    }

    /// Sets a public setting (`Message_MaxAllowedSize` sets `max_message_len`).
    pub fn set_setting(&mut self, id: &str, value: Value) {
        if id == "Message_MaxAllowedSize" {
            if let Some(n) = value.as_u64() {
                self.max_message_len = usize::try_from(n).unwrap_or(usize::MAX);
            }
            return;
        }
        self.settings.insert(id.to_string(), value);
    }

    /// Every public setting's id, sorted.
    pub fn setting_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.settings.keys().cloned().collect();
        ids.push("Message_MaxAllowedSize".to_string());
        ids.sort();
        ids.dedup();
        ids
    }

    /// How many login tokens (not personal access tokens) `username` holds.
    pub fn tokens_of(&self, username: &str) -> usize {
        let Some(uid) = self.user_by_name(username).map(|u| u.id.as_str()) else {
            return 0;
        };
        self.tokens
            .iter()
            .filter(|(t, u)| u.as_str() == uid && !t.starts_with(PAT_PREFIX))
            .count()
    }

    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn room_by_name(&self, name: &str) -> Option<&Room> {
        let name = name.trim_start_matches('#');
        self.rooms.values().find(|r| r.name == name)
    }

    /// A new personal access token for `username`.
    pub fn create_token(&mut self, username: &str) -> Option<String> {
        let uid = self.user_by_name(username)?.id.clone();
        let token = format!("{PAT_PREFIX}{}{}", new_message_id(), new_message_id());
        self.tokens.insert(token.clone(), uid);
        Some(token)
    }

    pub fn user_for_token(&self, user_id: &str, token: &str) -> Option<&User> {
        self.tokens
            .get(token)
            .filter(|uid| *uid == user_id)
            .and_then(|uid| self.user(uid))
    }

    pub fn message_json(&self, m: &Message) -> Value {
        let user = self.user(&m.user_id);
        let mut v = json!({
            "_id": m.id,
            "rid": m.rid,
            "msg": m.msg,
            "ts": {"$date": m.ts},
            "u": {
                "_id": m.user_id,
                "username": user.map(|u| u.username.clone()).unwrap_or_default(),
                "name": user.map(|u| u.name.clone()).unwrap_or_default(),
            },
            "_updatedAt": {"$date": m.updated_at},
            "mentions": mentions(&m.msg, &self.users),
            "channels": channel_mentions(&m.msg, &self.rooms),
            "urls": urls(&m.msg),
            "md": markdown(&m.msg),
        });
        if let Some(t) = &m.t {
            v["t"] = json!(t);
        }
        if let Some(tmid) = &m.tmid {
            v["tmid"] = json!(tmid);
        }
        if m.tcount > 0 {
            v["tcount"] = json!(m.tcount);
        }
        if let Some(at) = m.edited_at {
            v["editedAt"] = json!({"$date": at});
            let by = m.edited_by.clone().unwrap_or_default();
            let name = self
                .user(&by)
                .map(|u| u.username.clone())
                .unwrap_or_default();
            v["editedBy"] = json!({"_id": by, "username": name});
        }
        if !m.reactions.is_empty() {
            let r: serde_json::Map<String, Value> = m
                .reactions
                .iter()
                .map(|(k, users)| (k.clone(), json!({ "usernames": users })))
                .collect();
            v["reactions"] = Value::Object(r);
        }
        if let Some(b) = &m.bot {
            v["bot"] = b.clone();
        }
        if let Some(a) = &m.attachments {
            v["attachments"] = a.clone();
        }
        if let Some(a) = &m.alias {
            v["alias"] = json!(a);
        }
        if let Some(e) = &m.emoji {
            v["emoji"] = json!(e);
        }
        v
    }

    /// Inserts a message and fans it out; returns its document.
    pub fn insert_message(
        &mut self,
        user_id: &str,
        rid: &str,
        text: &str,
        extra: NewMessage,
    ) -> Value {
        let NewMessage {
            id,
            tmid,
            t,
            bot,
            attachments,
            alias,
            emoji,
        } = extra;
        let ts = self.next_ts();
        let m = Message {
            id: id.unwrap_or_else(new_message_id),
            rid: rid.to_string(),
            msg: text.to_string(),
            ts,
            updated_at: ts,
            user_id: user_id.to_string(),
            t,
            tmid: tmid.clone(),
            tcount: 0,
            edited_at: None,
            edited_by: None,
            reactions: BTreeMap::new(),
            bot,
            attachments,
            alias,
            emoji,
        };
        self.index.insert(m.id.clone(), self.messages.len());
        self.messages.push(m);
        let idx = self.messages.len() - 1;
        self.fan_out(idx, false);
        if let Some(parent) = tmid.and_then(|p| self.index.get(&p).copied()) {
            self.messages[parent].tcount += 1;
            self.messages[parent].updated_at = ts;
            self.fan_out(parent, false);
        }
        self.message_json(&self.messages[idx])
    }

    /// Sends a message event to every connection that may see it, and to observers.
    fn fan_out(&mut self, idx: usize, edited: bool) {
        let doc = self.message_json(&self.messages[idx]);
        let Some(room) = self.rooms.get(&self.messages[idx].rid) else {
            return;
        };
        for conn in self.conns.values() {
            let (Some(uid), true) = (&conn.user_id, conn.my_messages) else {
                continue;
            };
            let member = room.members.contains(uid);
            if !member && room.kind != 'c' {
                continue;
            }
            let mut meta = json!({"roomParticipant": member, "roomType": room.kind.to_string()});
            if room.kind != 'd' {
                meta["roomName"] = json!(room.name);
            }
            let frame = json!({
                "msg": "changed",
                "collection": "stream-room-messages",
                "id": "id",
                "fields": {"eventName": "__my_messages__", "args": [doc, meta]}
            });
            let _ = conn.tx.send(Out::Frame(frame.to_string()));
        }
        // Members following their rooms hear that this one changed (its last message).
        for conn in self.conns.values() {
            let Some(uid) = conn.user_id.as_deref().filter(|_| !conn.notify.is_empty()) else {
                continue;
            };
            let event = format!("{uid}/rooms-changed");
            if !room.members.contains(uid) || !conn.notify.contains(&event) {
                continue;
            }
            let mut r = json!({"_id": room.id, "t": room.kind.to_string(), "usersCount": room.members.len(),
                               "lastMessage": doc, "_updatedAt": doc["_updatedAt"]});
            if room.kind != 'd' {
                r["name"] = json!(room.name);
                r["fname"] = json!(room.name);
            }
            let frame = json!({"msg": "changed", "collection": "stream-notify-user", "id": "id",
                               "fields": {"eventName": event, "args": ["updated", r]}});
            let _ = conn.tx.send(Out::Frame(frame.to_string()));
        }
        // Subscribers of the room's own stream get the message under the room id.
        let per_room = json!({
            "msg": "changed",
            "collection": "stream-room-messages",
            "id": "id",
            "fields": {"eventName": room.id, "args": [doc]}
        })
        .to_string();
        for conn in self.conns.values() {
            if conn.rooms.contains(&room.id) {
                let _ = conn.tx.send(Out::Frame(per_room.clone()));
            }
        }
        let _ = self.events.send(SimEvent::Message {
            room: room_label(room, &self.users),
            message: doc,
            edited,
        });
    }

    fn notify_subscription(&self, user_id: &str, room: &Room, action: &str) {
        let event = format!("{user_id}/subscriptions-changed");
        let sub = self.subscription_json(user_id, room);
        let frame = json!({
            "msg": "changed",
            "collection": "stream-notify-user",
            "id": "id",
            "fields": {"eventName": event, "args": [action, sub]}
        })
        .to_string();
        for conn in self.conns.values() {
            if conn.user_id.as_deref() == Some(user_id) && conn.notify.contains(&event) {
                let _ = conn.tx.send(Out::Frame(frame.clone()));
            }
        }
    }

    fn subscription_json(&self, user_id: &str, room: &Room) -> Value {
        let user = self.user(user_id);
        let name = if room.kind == 'd' {
            room.members
                .iter()
                .find(|m| *m != user_id)
                .and_then(|m| self.user(m))
                .map(|u| u.username.clone())
                .unwrap_or_default()
        } else {
            room.name.clone()
        };
        json!({
            "_id": format!("{}{}", room.id, user_id),
            "rid": room.id,
            "t": room.kind.to_string(),
            "name": name,
            "fname": name,
            "u": {"_id": user_id, "username": user.map(|u| u.username.clone()).unwrap_or_default()},
            "open": true,
            "unread": 0,
            "_updatedAt": {"$date": now_ms()},
        })
    }

    /// Checks and counts a rate-limited call; `Err(ms)` is the time to reset.
    fn rate_check(&mut self, user_id: &str, method: &str) -> Result<(), u64> {
        let Some(rule) = self.rate_rules.get(method).cloned() else {
            return Ok(());
        };
        if rule.exempt_bots && self.user(user_id).is_some_and(User::is_bot) {
            return Ok(());
        }
        let now = Instant::now();
        let log = self
            .rate_log
            .entry((user_id.to_string(), method.to_string()))
            .or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= rule.window)
        {
            log.pop_front();
        }
        if log.len() as u32 >= rule.limit {
            let oldest = log.front().copied().unwrap_or(now);
            let reset = rule.window.saturating_sub(now.duration_since(oldest));
            return Err(reset.as_millis().max(1) as u64);
        }
        log.push_back(now);
        Ok(())
    }

    /// Counts a REST call to `route` from `addr`; `None` when REST is not limited. As the real
    /// limiter does, a refused call counts too, and the window is fixed from its first call.
    pub fn rest_rate_check(&mut self, route: &str, addr: IpAddr) -> Option<RestQuota> {
        let (limit, window) = self.rest_limit?;
        let now = Instant::now();
        let w = self
            .rest_log
            .entry((route.to_string(), addr))
            .or_insert(RestWindow {
                start: now,
                count: 0,
            });
        if now.duration_since(w.start) >= window {
            *w = RestWindow {
                start: now,
                count: 0,
            };
        }
        w.count = w.count.saturating_add(1);
        let left = window.saturating_sub(now.duration_since(w.start));
        Some(RestQuota {
            limit,
            remaining: limit.saturating_sub(w.count),
            reset_ms: now_ms().saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX)),
            allowed: w.count <= limit,
        })
    }

    /// Forgets every REST count (when the limit changes).
    pub fn reset_rest_counts(&mut self) {
        self.rest_log.clear();
    }

    /// Password or resume login; on success returns `(user id, token, type)`.
    pub fn login(&mut self, params: &Value) -> Result<(String, String, &'static str), Value> {
        let p = params
            .get(0)
            .ok_or_else(|| error_value(400, "Match failed"))?;
        if let Some(resume) = p.get("resume").and_then(Value::as_str) {
            let uid = self.tokens.get(resume).cloned().ok_or_else(|| {
                error_value(
                    403,
                    "You've been logged out by the server. Please log in again.",
                )
            })?;
            return Ok((uid, resume.to_string(), "resume"));
        }
        let who = p.get("user");
        let user = match (
            who.and_then(|u| u.get("username")).and_then(Value::as_str),
            who.and_then(|u| u.get("email")).and_then(Value::as_str),
        ) {
            (Some(name), _) => self.user_by_name(name),
            (None, Some(email)) => self
                .users
                .iter()
                .find(|u| u.email().eq_ignore_ascii_case(email)),
            _ => return Err(error_value(400, "Match failed")),
        }
        .cloned()
        .ok_or_else(|| error_value(403, "User not found"))?;
        let digest = match p.get("password") {
            Some(Value::String(plain)) => password_digest(plain),
            Some(obj) => obj
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => return Err(error_value(400, "Match failed")),
        };
        if digest != password_digest(&user.password) {
            return Err(error_value(403, "Incorrect password"));
        }
        let token = new_message_id() + &new_message_id();
        self.tokens.insert(token.clone(), user.id.clone());
        Ok((user.id, token, "password"))
    }

    /// A method a client called over the socket or `method.call`/`method.callAnon`, as `caller`
    /// (a user id; `None` before login). Recorded, refused as missing when this release no longer
    /// has it, rate-limited, then run. A successful `login` also answers with the user's id.
    pub fn client_call(
        &mut self,
        caller: Option<&str>,
        method: &str,
        params: &Value,
    ) -> (MethodReply, Option<String>) {
        let username = caller
            .and_then(|id| self.user(id))
            .map(|u| u.username.clone())
            .unwrap_or_default();
        self.methods_called.push((username, method.to_string()));
        if !self.release.has_method(method) {
            return (Err(method_not_found(method)), None);
        }
        if method == "login" {
            return match self.login(params) {
                Ok((uid, token, kind)) => {
                    let expires = now_ms() + 90 * 24 * 3600 * 1000;
                    let result = json!({"id": uid, "token": token, "tokenExpires": {"$date": expires}, "type": kind});
                    (Ok(Some(result)), Some(uid))
                }
                Err(e) => (Err(e), None),
            };
        }
        let Some(uid) = caller else {
            return (Err(error_value("error-invalid-user", "Invalid user")), None);
        };
        if let Err(ms) = self.rate_check(uid, method) {
            return (Err(too_many_requests(ms)), None);
        }
        (self.call(uid, method, params), None)
    }

    /// Runs one DDP method for a logged-in user: the implementation behind the client-facing
    /// [`State::client_call`] and the REST routes that reuse it. Not recorded, not rate-limited,
    /// and served whatever the release (a 9.x server keeps the feature behind REST).
    pub fn call(&mut self, user_id: &str, method: &str, params: &Value) -> MethodReply {
        let arg = |i: usize| params.get(i).cloned().unwrap_or(Value::Null);
        match method {
            "sendMessage" => self.send_message(user_id, &arg(0)),
            "updateMessage" => self.update_message(user_id, &arg(0)).map(|_| None),
            "setReaction" => self
                .set_reaction(user_id, &arg(0), &arg(1), &arg(2))
                .map(|_| None),
            "getRoomIdByNameOrId" => {
                let key = arg(0).as_str().unwrap_or_default().to_string();
                let room = self
                    .rooms
                    .get(&key)
                    .or_else(|| self.room_by_name(&key))
                    .ok_or_else(|| error_value("error-not-allowed", "Not allowed"))?;
                if room.kind != 'c' && !room.members.contains(user_id) {
                    return Err(error_value("error-not-allowed", "Not allowed"));
                }
                Ok(Some(json!(room.id)))
            }
            "joinRoom" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                let room = self
                    .rooms
                    .get(&rid)
                    .cloned()
                    .ok_or_else(|| error_value("error-invalid-room", "Invalid room"))?;
                if room.kind != 'c' && !room.members.contains(user_id) {
                    return Err(error_value("error-not-allowed", "Not allowed"));
                }
                if !room.members.contains(user_id) {
                    if let Some(r) = self.rooms.get_mut(&rid) {
                        r.members.insert(user_id.to_string());
                    }
                    let room = self.rooms[&rid].clone();
                    self.notify_subscription(user_id, &room, "inserted");
                    let name = self
                        .user(user_id)
                        .map(|u| u.username.clone())
                        .unwrap_or_default();
                    self.insert_message(
                        user_id,
                        &rid,
                        &name,
                        NewMessage {
                            t: Some("uj".into()),
                            ..NewMessage::default()
                        },
                    );
                }
                Ok(Some(json!(true)))
            }
            "createDirectMessage" => {
                let mut names = Vec::new();
                for p in params.as_array().cloned().unwrap_or_default() {
                    let Some(n) = p.as_str() else {
                        return Err(error_value(400, "Match failed"));
                    };
                    names.push(n.to_string());
                }
                let mut members = BTreeSet::from([user_id.to_string()]);
                for n in &names {
                    let u = self
                        .user_by_name(n)
                        .ok_or_else(|| error_value("error-invalid-user", "Invalid user"))?;
                    members.insert(u.id.clone());
                }
                let rid: String = members.iter().cloned().collect();
                if !self.rooms.contains_key(&rid) {
                    let room = Room {
                        id: rid.clone(),
                        name: String::new(),
                        kind: 'd',
                        members: members.clone(),
                    };
                    self.rooms.insert(rid.clone(), room.clone());
                    for m in &members {
                        self.notify_subscription(m, &room, "inserted");
                    }
                }
                let usernames: Vec<String> = members
                    .iter()
                    .filter_map(|m| self.user(m).map(|u| u.username.clone()))
                    .collect();
                Ok(Some(
                    json!({"t": "d", "rid": rid, "_id": rid, "usernames": usernames}),
                ))
            }
            "loadHistory" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.readable(user_id, &rid)?;
                let end = crate::ids::read_ejson_date(&arg(1));
                let limit = arg(2).as_u64().unwrap_or(20).min(1000) as usize;
                let msgs: Vec<Value> = self
                    .messages
                    .iter()
                    .rev()
                    .filter(|m| m.rid == rid && end.is_none_or(|e| m.ts < e))
                    .take(limit)
                    .map(|m| self.message_json(m))
                    .collect();
                Ok(Some(json!({"messages": msgs, "unreadNotLoaded": 0})))
            }
            "loadMissedMessages" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.readable(user_id, &rid)?;
                let since = crate::ids::read_ejson_date(&arg(1))
                    .ok_or_else(|| error_value(400, "Match failed"))?;
                let msgs: Vec<Value> = self
                    .messages
                    .iter()
                    .rev()
                    .filter(|m| m.rid == rid && m.ts > since)
                    .map(|m| self.message_json(m))
                    .collect();
                Ok(Some(Value::Array(msgs)))
            }
            "subscriptions/get" => {
                let subs: Vec<Value> = self
                    .rooms
                    .values()
                    .filter(|r| r.members.contains(user_id))
                    .map(|r| self.subscription_json(user_id, r))
                    .collect();
                Ok(Some(Value::Array(subs)))
            }
            "getRoomNameById" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                let room = self
                    .rooms
                    .get(&rid)
                    .ok_or_else(|| error_value("error-not-allowed", "Not allowed"))?;
                if room.kind != 'c' && !room.members.contains(user_id) {
                    return Err(error_value("error-not-allowed", "Not allowed"));
                }
                Ok(Some(json!(room.name)))
            }
            "rooms/get" => {
                let rooms: Vec<Value> = self
                    .rooms
                    .values()
                    .filter(|r| r.members.contains(user_id))
                    .map(|r| self.room_json(r))
                    .collect();
                Ok(Some(Value::Array(rooms)))
            }
            "getUsersOfRoom" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.readable(user_id, &rid)
                    .map_err(|_| error_value("error-not-allowed", "Not allowed"))?;
                let records: Vec<Value> = self.rooms[&rid]
                    .members
                    .iter()
                    .filter_map(|m| self.user(m))
                    .map(|u| json!({"_id": u.id, "username": u.username, "name": u.name, "status": "online"}))
                    .collect();
                Ok(Some(json!({"total": records.len(), "records": records})))
            }
            "getRoomRoles" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.room_roles(user_id, &rid).map(Some)
            }
            "readMessages" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.readable(user_id, &rid)?;
                Ok(None)
            }
            "getSingleMessage" => {
                let id = arg(0).as_str().unwrap_or_default().to_string();
                let m = self
                    .message_index(&id)
                    .map(|i| self.messages[i].clone())
                    .ok_or_else(|| error_value("error-not-allowed", "Not allowed"))?;
                self.readable(user_id, &m.rid)
                    .map_err(|_| error_value("error-not-allowed", "Not allowed"))?;
                Ok(Some(self.message_json(&m)))
            }
            "deleteMessage" => {
                let id = arg(0)["_id"].as_str().unwrap_or_default().to_string();
                self.delete_message(user_id, &id).map(|_| None)
            }
            "loadNextMessages" => {
                let rid = arg(0).as_str().unwrap_or_default().to_string();
                self.readable(user_id, &rid)?;
                let after = crate::ids::read_ejson_date(&arg(1));
                let limit = arg(2).as_u64().unwrap_or(20).min(1000) as usize;
                let msgs: Vec<Value> = self
                    .messages
                    .iter()
                    .filter(|m| m.rid == rid && after.is_none_or(|a| m.ts > a))
                    .take(limit)
                    .map(|m| self.message_json(m))
                    .collect();
                Ok(Some(json!({"messages": msgs})))
            }
            "logout" => {
                self.tokens.retain(|_, uid| uid != user_id);
                Ok(None)
            }
            "UserPresence:setDefaultStatus" => {
                let status = arg(0).as_str().unwrap_or_default().to_string();
                if !["online", "away", "busy", "offline"].contains(&status.as_str()) {
                    return Err(error_value(400, "Match failed"));
                }
                self.presence.insert(user_id.to_string(), status);
                Ok(Some(json!(true)))
            }
            "UserPresence:online" | "UserPresence:away" => {
                let status = method.trim_start_matches("UserPresence:").to_string();
                self.presence.insert(user_id.to_string(), status);
                Ok(Some(json!(true)))
            }
            "setUserStatus" => {
                let status = arg(0).as_str().unwrap_or_default().to_string();
                if !["online", "away", "busy", "offline"].contains(&status.as_str()) {
                    return Err(error_value("error-invalid-status", "Invalid status"));
                }
                self.presence.insert(user_id.to_string(), status);
                Ok(None)
            }
            "getUserRoles" => {
                // Users holding a role beyond the default `user`.
                let list: Vec<Value> = self
                    .users
                    .iter()
                    .filter_map(|u| {
                        let roles: Vec<&String> = u.roles.iter().filter(|r| *r != "user").collect();
                        (!roles.is_empty())
                            .then(|| json!({"_id": u.id, "username": u.username, "roles": roles}))
                    })
                    .collect();
                Ok(Some(Value::Array(list)))
            }
            _ => Err(method_not_found(method)),
        }
    }

    /// A room's holders of room roles, as `getRoomRoles` and `rooms.roles` list them. Room roles
    /// (owner, moderator) are not simulated: the admins among the members are its owners.
    pub fn room_roles(&self, user_id: &str, rid: &str) -> Result<Value, Value> {
        self.readable(user_id, rid)?;
        let owners: Vec<Value> = self.rooms[rid]
            .members
            .iter()
            .filter_map(|m| self.user(m))
            .filter(|u| u.roles.iter().any(|r| r == "admin"))
            .map(|u| json!({"rid": rid, "u": {"_id": u.id, "username": u.username}, "roles": ["owner"]}))
            .collect();
        Ok(Value::Array(owners))
    }

    /// A room as `rooms/get` and the `*.info` routes return it.
    pub fn room_json(&self, room: &Room) -> Value {
        let last = self.messages.iter().rev().find(|m| m.rid == room.id);
        let mut v = json!({
            "_id": room.id,
            "t": room.kind.to_string(),
            "msgs": self.messages.iter().filter(|m| m.rid == room.id).count(),
            "usersCount": room.members.len(),
            "ts": {"$date": 0},
            "_updatedAt": {"$date": last.map_or(0, |m| m.updated_at)},
            "ro": false,
            "default": room.name == "ops",
        });
        if room.kind == 'd' {
            let names: Vec<String> = room
                .members
                .iter()
                .filter_map(|m| self.user(m).map(|u| u.username.clone()))
                .collect();
            v["usernames"] = json!(names);
        } else {
            v["name"] = json!(room.name);
            v["fname"] = json!(room.name);
        }
        if let Some(m) = last {
            v["lastMessage"] = self.message_json(m);
        }
        v
    }

    /// `deleteMessage`: by its author or a user with `force-delete-message`; tells the room.
    pub fn delete_message(&mut self, user_id: &str, id: &str) -> Result<Value, Value> {
        let idx = self
            .message_index(id)
            .ok_or_else(|| error_value("error-action-not-allowed", "Not allowed"))?;
        let m = self.messages[idx].clone();
        let allowed = m.user_id == user_id
            || self
                .user(user_id)
                .is_some_and(|u| self.has_permission(u, "force-delete-message"));
        if !allowed {
            return Err(error_value("error-action-not-allowed", "Not allowed"));
        }
        self.messages.remove(idx);
        self.index = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let event = format!("{}/deleteMessage", m.rid);
        let frame = json!({"msg": "changed", "collection": "stream-notify-room", "id": "id",
                           "fields": {"eventName": event, "args": [{"_id": m.id}]}})
        .to_string();
        for conn in self.conns.values() {
            if conn.room_events.contains(&event) {
                let _ = conn.tx.send(Out::Frame(frame.clone()));
            }
        }
        Ok(json!({"_id": m.id, "rid": m.rid, "u": {"_id": m.user_id}}))
    }

    fn readable(&self, user_id: &str, rid: &str) -> Result<(), Value> {
        match self.rooms.get(rid) {
            Some(r) if r.kind == 'c' || r.members.contains(user_id) => Ok(()),
            _ => Err(error_value("error-invalid-room", "Invalid room")),
        }
    }

    /// `sendMessage`: the real server swallows most errors into an empty result.
    pub fn send_message(&mut self, user_id: &str, m: &Value) -> MethodReply {
        const ALLOWED: &[&str] = &[
            "_id",
            "rid",
            "msg",
            "tmid",
            "tshow",
            "ts",
            "t",
            "bot",
            "content",
            "e2e",
            "e2eMentions",
            "customFields",
            "federation",
            "groupable",
            "sentByEmail",
        ];
        let Some(obj) = m.as_object() else {
            return Err(error_value(400, "Match failed"));
        };
        if obj.keys().any(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(error_value(400, "Match failed"));
        }
        let rid = obj
            .get("rid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let text = obj
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match self.rooms.get(&rid) {
            Some(r) if r.members.contains(user_id) => {}
            _ => return Err(error_value("error-not-allowed", "Not allowed")),
        }
        let id = obj.get("_id").and_then(Value::as_str).map(str::to_string);
        if id.as_ref().is_some_and(|id| self.index.contains_key(id)) {
            return Ok(None);
        }
        if text.chars().count() > self.max_message_len {
            return Ok(None);
        }
        let tmid = obj.get("tmid").and_then(Value::as_str).map(str::to_string);
        let bot = obj.get("bot").cloned();
        let extra = NewMessage {
            id,
            tmid,
            bot,
            ..NewMessage::default()
        };
        Ok(Some(self.insert_message(user_id, &rid, &text, extra)))
    }

    pub fn update_message(&mut self, user_id: &str, m: &Value) -> Result<(), Value> {
        let id = m.get("_id").and_then(Value::as_str).unwrap_or_default();
        let text = m
            .get("msg")
            .and_then(Value::as_str)
            .ok_or_else(|| error_value(400, "Match failed"))?
            .to_string();
        let idx = *self
            .index
            .get(id)
            .ok_or_else(|| error_value("error-action-not-allowed", "Not allowed"))?;
        if self.messages[idx].user_id != user_id {
            return Err(error_value("error-action-not-allowed", "Not allowed"));
        }
        if text.chars().count() > self.max_message_len {
            return Err(error_value(
                "error-message-size-exceeded",
                "Message size exceeds the allowed limit",
            ));
        }
        if self.messages[idx].msg == text {
            return Ok(());
        }
        let ts = self.next_ts();
        let msg = &mut self.messages[idx];
        msg.msg = text;
        msg.edited_at = Some(ts);
        msg.edited_by = Some(user_id.to_string());
        msg.updated_at = ts;
        self.fan_out(idx, true);
        Ok(())
    }

    pub fn set_reaction(
        &mut self,
        user_id: &str,
        emoji: &Value,
        msg_id: &Value,
        should: &Value,
    ) -> Result<(), Value> {
        let emoji = emoji.as_str().unwrap_or_default().to_string();
        let valid = emoji.len() > 2
            && emoji.starts_with(':')
            && emoji.ends_with(':')
            && emoji[1..emoji.len() - 1]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c));
        if !valid {
            return Err(error_value("error-not-allowed", "Invalid emoji provided."));
        }
        let idx = *self
            .index
            .get(msg_id.as_str().unwrap_or_default())
            .ok_or_else(|| error_value("error-not-allowed", "Not allowed"))?;
        let username = self
            .user(user_id)
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let users = self.messages[idx]
            .reactions
            .entry(emoji.clone())
            .or_default();
        let has = users.contains(&username);
        let want = should.as_bool().unwrap_or(!has);
        if want == has {
            return Ok(());
        }
        if want {
            users.push(username);
        } else {
            users.retain(|u| *u != username);
            if users.is_empty() {
                self.messages[idx].reactions.remove(&emoji);
            }
        }
        self.messages[idx].updated_at = self.next_ts();
        self.fan_out(idx, false);
        Ok(())
    }

    /// A room's messages, oldest first, as documents.
    pub fn room_messages(&self, rid: &str) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| m.rid == rid)
            .map(|m| self.message_json(m))
            .collect()
    }

    pub fn message_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `#ops`, or `@alice,@rocketops` for a DM.
pub fn room_label(room: &Room, users: &[User]) -> String {
    if room.kind == 'd' {
        room.members
            .iter()
            .filter_map(|m| users.iter().find(|u| u.id == *m))
            .map(|u| format!("@{}", u.username))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        format!("#{}", room.name)
    }
}

/// A word without the punctuation a sentence puts after it.
fn bare(w: &str) -> &str {
    w.trim_end_matches([':', ',', '.', '!', '?', ';', ')'])
}

/// `#name` words naming a channel, as the server resolves them.
fn channel_mentions(text: &str, rooms: &BTreeMap<String, Room>) -> Value {
    let list: Vec<Value> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('#'))
        .map(bare)
        .filter_map(|name| rooms.values().find(|r| r.kind != 'd' && r.name == name))
        .map(|r| json!({"_id": r.id, "name": r.name}))
        .collect();
    Value::Array(list)
}

/// Links in the text, as the server lists them (without fetched previews).
fn urls(text: &str) -> Value {
    let list: Vec<Value> = text
        .split_whitespace()
        .map(bare)
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|u| json!({"url": u}))
        .collect();
    Value::Array(list)
}

/// The message parsed as the server's `md` field: a paragraph per line, with plain text, user and
/// channel mentions, links, and `*bold*`, `_italic_` and `` `code` `` spans (nesting is not parsed).
fn markdown(text: &str) -> Value {
    fn plain(v: &str) -> Value {
        json!({"type": "PLAIN_TEXT", "value": v})
    }
    fn word(w: &str) -> Option<Value> {
        let b = bare(w);
        let token = if let Some(u) = b.strip_prefix('@').filter(|u| !u.is_empty()) {
            json!({"type": "MENTION_USER", "value": plain(u)})
        } else if let Some(c) = b.strip_prefix('#').filter(|c| !c.is_empty()) {
            json!({"type": "MENTION_CHANNEL", "value": plain(c)})
        } else if b.starts_with("http://") || b.starts_with("https://") {
            json!({"type": "LINK", "value": {"src": plain(b), "label": [plain(b)]}})
        } else {
            let span = |mark: char, kind: &str| {
                b.strip_prefix(mark)
                    .and_then(|x| x.strip_suffix(mark))
                    .filter(|x| !x.is_empty())
                    .map(|x| match kind {
                        "INLINE_CODE" => json!({"type": kind, "value": plain(x)}),
                        _ => json!({"type": kind, "value": [plain(x)]}),
                    })
            };
            span('*', "BOLD")
                .or_else(|| span('_', "ITALIC"))
                .or_else(|| span('`', "INLINE_CODE"))?
        };
        Some(token)
    }
    let mut blocks = Vec::new();
    for line in text.lines() {
        let mut parts: Vec<Value> = Vec::new();
        let mut run = String::new();
        for (i, w) in line.split(' ').enumerate() {
            if i > 0 {
                run.push(' ');
            }
            match word(w) {
                Some(t) => {
                    if !run.is_empty() {
                        parts.push(plain(&run));
                        run.clear();
                    }
                    parts.push(t);
                    run.push_str(&w[bare(w).len()..]);
                }
                None => run.push_str(w),
            }
        }
        if !run.is_empty() {
            parts.push(plain(&run));
        }
        blocks.push(json!({"type": "PARAGRAPH", "value": parts}));
    }
    Value::Array(blocks)
}

fn mentions(text: &str, users: &[User]) -> Value {
    let list: Vec<Value> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('@'))
        .map(|w| w.trim_end_matches([':', ',', '.']))
        .filter_map(|name| users.iter().find(|u| u.username == name))
        .map(|u| json!({"_id": u.id, "username": u.username}))
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod md_tests {
    use super::*;

    #[test]
    fn a_message_parses_into_paragraphs_of_text_mentions_links_and_spans() {
        let md = markdown("hi @alice, see https://x.invalid/a.\n*bold* and `code`");
        assert_eq!(
            md,
            json!([
                {"type": "PARAGRAPH", "value": [
                    {"type": "PLAIN_TEXT", "value": "hi "},
                    {"type": "MENTION_USER", "value": {"type": "PLAIN_TEXT", "value": "alice"}},
                    {"type": "PLAIN_TEXT", "value": ", see "},
                    {"type": "LINK", "value": {"src": {"type": "PLAIN_TEXT", "value": "https://x.invalid/a"}, "label": [{"type": "PLAIN_TEXT", "value": "https://x.invalid/a"}]}},
                    {"type": "PLAIN_TEXT", "value": "."}]},
                {"type": "PARAGRAPH", "value": [
                    {"type": "BOLD", "value": [{"type": "PLAIN_TEXT", "value": "bold"}]},
                    {"type": "PLAIN_TEXT", "value": " and "},
                    {"type": "INLINE_CODE", "value": {"type": "PLAIN_TEXT", "value": "code"}}]}
            ])
        );
        assert_eq!(markdown(""), json!([]));
        assert_eq!(
            markdown("  @ # "),
            json!([{"type": "PARAGRAPH", "value": [{"type": "PLAIN_TEXT", "value": "  @ # "}]}])
        );
    }
}
