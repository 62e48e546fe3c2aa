//! The simulator's HTTP side: the WebSocket upgrade, the REST routes bots use, and the `/_sim` control API.
//!
//! Long by design: one handler per REST route the simulated releases serve, each short, listed in
//! one router so that what a release serves is read in one place.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State as AxState, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::state::{BYPASS_RATE_LIMIT, RateRule, RestQuota, User};
use super::{RocketChatSim, SimInner};

type Sim = AxState<Arc<SimInner>>;

/// The REST routes served by `/api/v1/{route}` (one handler for them all), with their HTTP method.
const CATCH_ALL_ROUTES: &[(&str, &str)] = &[
    ("channels.info", "GET"),
    ("channels.history", "GET"),
    ("channels.join", "POST"),
    ("groups.info", "GET"),
    ("groups.history", "GET"),
    ("rooms.info", "GET"),
    ("rooms.join", "POST"),
    ("rooms.roles", "GET"),
    ("im.create", "POST"),
    ("im.history", "GET"),
    ("chat.getMessage", "GET"),
    ("chat.delete", "POST"),
    ("users.list", "GET"),
    ("subscriptions.get", "GET"),
    ("permissions.listAll", "GET"),
    ("settings.public", "GET"),
];

/// The REST routes with handlers of their own (the first path segment after `/api/v1/`).
const OWN_ROUTES: &[&str] = &[
    "login",
    "method.call",
    "method.callAnon",
    "me",
    "users.info",
    "chat.postMessage",
    "chat.sendMessage",
    "chat.update",
    "chat.react",
    "rooms.media",
    "rooms.mediaConfirm",
];

/// The route a REST path names when the simulator serves it: `chat.postMessage` for
/// `/api/v1/chat.postMessage`, `method.call` for `/api/v1/method.call/x`, `info` for `/api/info`.
fn served_route(path: &str) -> Option<&str> {
    if path == "/api/info" {
        return Some("info");
    }
    let route = path.strip_prefix("/api/v1/")?.split('/').next()?;
    (OWN_ROUTES.contains(&route) || CATCH_ALL_ROUTES.iter().any(|(r, _)| *r == route))
        .then_some(route)
}

pub(crate) fn router(sim: Arc<SimInner>) -> Router {
    let api = Router::new()
        .route("/api/info", get(info))
        .route("/api/v1/login", post(login))
        .route("/api/v1/method.call/{method}", post(method_call))
        .route("/api/v1/method.callAnon/{method}", post(method_call_anon))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users.info", get(users_info))
        .route("/api/v1/chat.postMessage", post(post_message))
        .route("/api/v1/chat.sendMessage", post(send_message))
        .route("/api/v1/chat.update", post(chat_update))
        .route("/api/v1/chat.react", post(chat_react))
        .route("/api/v1/rooms.media/{rid}", post(rooms_media))
        .route(
            "/api/v1/rooms.mediaConfirm/{rid}/{file_id}",
            post(rooms_media_confirm),
        )
        .route("/api/v1/{route}", any(rest_v1))
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            rest_limiter,
        ));
    Router::new()
        .route("/websocket", any(websocket))
        .route("/sockjs/websocket", any(websocket))
        .merge(api)
        .route("/file-upload/{id}/{name}", get(file_upload))
        .route("/hooks/{id}/{token}", post(incoming_webhook))
        .route("/_sim/post", post(ctl_post))
        .route("/_sim/edit", post(ctl_edit))
        .route("/_sim/messages", get(ctl_messages))
        .route("/_sim/drop", post(ctl_drop))
        .route("/_sim/refuse", post(ctl_refuse))
        .route("/_sim/delay", post(ctl_delay))
        .route("/_sim/silence", post(ctl_silence))
        .route("/_sim/inject", post(ctl_inject))
        .route("/_sim/rate-limit", post(ctl_rate_limit))
        .route("/_sim/token", post(ctl_token))
        .route("/_sim/webhook", post(ctl_webhook))
        .route("/_sim/rest-rate-limit", post(ctl_rest_rate_limit))
        .route("/_sim/permission", post(ctl_permission))
        .with_state(sim)
}

async fn websocket(AxState(sim): Sim, upgrade: WebSocketUpgrade) -> Response {
    let refusing = sim
        .faults()
        .refuse_until
        .is_some_and(|t| Instant::now() < t);
    if refusing {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "refusing connections (fault injected)",
        )
            .into_response();
    }
    upgrade
        .on_upgrade(move |socket| super::ws::serve_socket(sim, socket))
        .into_response()
}

fn fail(status: StatusCode, error: &str, error_type: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "error": error, "errorType": error_type})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"status": "error", "message": "You must be logged in to do this."})),
    )
        .into_response()
}

/// The user named by the `X-User-Id` and `X-Auth-Token` headers, if they match.
fn header_user(st: &super::state::State, headers: &HeaderMap) -> Option<User> {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    st.user_for_token(&h("X-User-Id"), &h("X-Auth-Token"))
        .cloned()
}

/// The authenticated user (the REST limiter has already counted the call).
fn authed(sim: &SimInner, headers: &HeaderMap) -> Result<User, Box<Response>> {
    header_user(&sim.state(), headers).ok_or_else(|| Box::new(unauthorized()))
}

fn not_found() -> Response {
    fail(StatusCode::NOT_FOUND, "Not found", "not-found")
}

/// The REST limiter, as the real server's: each served route is counted per client address
/// (default 10 calls per 60 s), unless the caller's user holds `api-bypass-rate-limit`. Every
/// counted answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch ms); over the
/// limit the answer is 429. A route the release does not have is a 404, as an unknown one is.
async fn rest_limiter(AxState(sim): Sim, req: Request, next: Next) -> Response {
    let Some(route) = served_route(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let quota = {
        let mut st = sim.state();
        if !st.release.has_route(&route) {
            return not_found();
        }
        let exempt = header_user(&st, req.headers())
            .is_some_and(|u| st.has_permission(&u, BYPASS_RATE_LIMIT));
        if exempt {
            None
        } else {
            let key = format!("{route} {}", req.method());
            st.rest_rate_check(&key, addr)
        }
    };
    let Some(q) = quota else {
        return next.run(req).await;
    };
    let mut resp = if q.allowed {
        next.run(req).await
    } else {
        let wait = u64::try_from(q.reset_ms - super::state::now_ms())
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        fail(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Error, too many requests. Please slow down. You must wait {wait} seconds before trying this endpoint again."
            ),
            "error-too-many-requests",
        )
    };
    rate_headers(resp.headers_mut(), &q);
    resp
}

fn rate_headers(hs: &mut HeaderMap, q: &RestQuota) {
    hs.insert("X-RateLimit-Limit", HeaderValue::from(q.limit));
    hs.insert("X-RateLimit-Remaining", HeaderValue::from(q.remaining));
    hs.insert("X-RateLimit-Reset", HeaderValue::from(q.reset_ms));
}

/// `GET /api/info`: the version without its patch number, unless the caller may view
/// statistics, who gets the full version and `info` too.
async fn info(AxState(sim): Sim, headers: HeaderMap) -> Json<Value> {
    let st = sim.state();
    let release = st.release;
    let full = header_user(&st, &headers).is_some_and(|u| st.has_permission(&u, "view-statistics"));
    let mut v = json!({"version": release.short_version(), "minimumClientVersions": {"desktop": "4.0.0", "mobile": "4.0.0"}, "success": true});
    if full {
        v["version"] = json!(release.version());
        v["info"] = json!({"version": release.version()});
    }
    Json(v)
}

async fn login(AxState(sim): Sim, Json(body): Json<Value>) -> Response {
    let mut st = sim.state();
    let params = if let Some(r) = body.get("resume") {
        json!([{ "resume": r }])
    } else {
        let user = body
            .get("user")
            .or_else(|| body.get("username"))
            .cloned()
            .unwrap_or(Value::Null);
        json!([{ "user": {"username": user}, "password": body.get("password").cloned().unwrap_or(Value::Null) }])
    };
    match st.login(&params) {
        Ok((uid, token, _)) => {
            let me = st.user(&uid).map(user_json).unwrap_or(Value::Null);
            Json(
                json!({"status": "success", "data": {"authToken": token, "userId": uid, "me": me}}),
            )
            .into_response()
        }
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "error", "error": "Unauthorized", "message": "Unauthorized"})),
        )
            .into_response(),
    }
}

fn user_json(u: &User) -> Value {
    json!({"_id": u.id, "username": u.username, "name": u.name, "roles": u.roles, "status": "online", "active": true, "type": if u.is_bot() {"bot"} else {"user"},
           "emails": [{"address": u.email(), "verified": true}]})
}

/// A method's error as a REST answer: 400 with the error's reason and type.
fn method_failure(e: &Value) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        e["reason"].as_str().unwrap_or("error"),
        &match &e["error"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    )
}

fn ok(mut v: Value) -> Response {
    v["success"] = json!(true);
    Json(v).into_response()
}

/// The REST routes bots and integrations use beyond the core ones: room and message lookups,
/// history, joining, direct messages, deletion, users and subscriptions. Unknown routes get 404
/// as on a real server.
async fn rest_v1(
    AxState(sim): Sim,
    axum::extract::Path(route): axum::extract::Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let Some((_, expected)) = CATCH_ALL_ROUTES
        .iter()
        .find(|(r, m)| *r == route && *m == method.as_str())
    else {
        return not_found();
    };
    let writes = *expected == "POST";
    if route == "settings.public" {
        return settings_public(&sim, q.get("_id").map(String::as_str));
    }
    let caller = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let body: Value = if writes {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Invalid JSON body",
                    "error-invalid-body",
                );
            }
        }
    } else {
        Value::Null
    };
    let mut st = sim.state();
    let param = |k: &str| {
        q.get(k)
            .cloned()
            .or_else(|| body.get(k).and_then(Value::as_str).map(str::to_string))
    };
    // A room named by `roomId` or `roomName`, that the caller may read.
    let room = |st: &super::state::State| {
        let found = match (param("roomId"), param("roomName")) {
            (Some(id), _) => st.rooms.get(&id),
            (None, Some(n)) => st.room_by_name(n.trim_start_matches('#')),
            _ => None,
        };
        found
            .filter(|r| r.kind == 'c' || r.members.contains(&caller.id))
            .cloned()
    };
    let no_room = || {
        fail(
            StatusCode::BAD_REQUEST,
            "The required \"roomId\" or \"roomName\" param provided does not match any channel [error-room-not-found]",
            "error-room-not-found",
        )
    };
    match route.as_str() {
        "channels.info" | "groups.info" | "rooms.info" => {
            let Some(r) = room(&st) else {
                return no_room();
            };
            let kind_ok = match route.as_str() {
                "channels.info" => r.kind == 'c',
                "groups.info" => r.kind == 'p',
                _ => true,
            };
            if !kind_ok {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "The required \"roomId\" or \"roomName\" param provided does not match any channel [error-room-not-found]",
                    "error-room-not-found",
                );
            }
            let key = match route.as_str() {
                "channels.info" => "channel",
                "groups.info" => "group",
                _ => "room",
            };
            ok(json!({ key: st.room_json(&r) }))
        }
        "channels.history" | "groups.history" | "im.history" => {
            let Some(r) = room(&st) else {
                return no_room();
            };
            let count = param("count")
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(20)
                .min(1000);
            let date = |k: &str| {
                param(k)
                    .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
                    .map(|d| d.timestamp_millis())
            };
            let (latest, oldest) = (date("latest"), date("oldest"));
            // With `inclusive=true`, messages at exactly `latest` or `oldest` count too.
            let inclusive = param("inclusive").is_some_and(|v| v == "true");
            let msgs: Vec<Value> = st
                .messages
                .iter()
                .rev()
                .filter(|m| {
                    m.rid == r.id
                        && latest.is_none_or(|l| m.ts < l || (inclusive && m.ts == l))
                        && oldest.is_none_or(|o| m.ts > o || (inclusive && m.ts == o))
                })
                .take(count)
                .map(|m| st.message_json(m))
                .map(|mut m| {
                    super::state::rest_dates(&mut m);
                    m
                })
                .collect();
            ok(json!({ "messages": msgs }))
        }
        "channels.join" => {
            // Public channels only: a private group is not found, member or not.
            let Some(r) = room(&st).filter(|r| r.kind == 'c') else {
                return no_room();
            };
            let rid = r.id;
            match st.call(&caller.id, "joinRoom", &json!([rid])) {
                Ok(_) => {
                    let r = st.rooms[&rid].clone();
                    ok(json!({ "channel": st.room_json(&r) }))
                }
                Err(e) => method_failure(&e),
            }
        }
        "rooms.join" => {
            let rid = param("roomId").unwrap_or_default();
            match st.call(&caller.id, "joinRoom", &json!([rid])) {
                Ok(_) => {
                    let r = st.rooms[&rid].clone();
                    ok(json!({ "room": st.room_json(&r) }))
                }
                Err(e) => method_failure(&e),
            }
        }
        "rooms.roles" => {
            let rid = param("rid").unwrap_or_default();
            match st.room_roles(&caller.id, &rid) {
                Ok(roles) => ok(json!({ "roles": roles })),
                Err(e) => method_failure(&e),
            }
        }
        "permissions.listAll" => ok(json!({ "update": st.permissions_list(), "remove": [] })),
        "im.create" => {
            let Some(name) = param("username") else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Body param \"username\" or \"usernames\" is required",
                    "error-invalid-params",
                );
            };
            match st.call(&caller.id, "createDirectMessage", &json!([name])) {
                Ok(Some(r)) => ok(json!({ "room": r })),
                Ok(None) => ok(json!({})),
                Err(e) => method_failure(&e),
            }
        }
        "chat.getMessage" => {
            let id = param("msgId").unwrap_or_default();
            match st.call(&caller.id, "getSingleMessage", &json!([id])) {
                Ok(Some(mut m)) => {
                    super::state::rest_dates(&mut m);
                    ok(json!({ "message": m }))
                }
                _ => fail(
                    StatusCode::BAD_REQUEST,
                    "Not allowed [error-not-allowed]",
                    "error-not-allowed",
                ),
            }
        }
        "chat.delete" => {
            let id = param("msgId").unwrap_or_default();
            match st.delete_message(&caller.id, &id) {
                Ok(m) => ok(json!({ "_id": m["_id"], "ts": super::state::now_ms(), "message": m })),
                Err(e) => method_failure(&e),
            }
        }
        "users.list" => {
            let users: Vec<Value> = st.users.iter().map(user_json).collect();
            let n = users.len();
            ok(json!({ "users": users, "count": n, "offset": 0, "total": n }))
        }
        "subscriptions.get" => match st.call(&caller.id, "subscriptions/get", &json!([])) {
            Ok(Some(mut subs)) => {
                super::state::rest_dates(&mut subs);
                ok(json!({ "update": subs, "remove": [] }))
            }
            Ok(None) => ok(json!({ "update": [], "remove": [] })),
            Err(e) => method_failure(&e),
        },
        _ => not_found(),
    }
}

/// `GET /api/v1/settings.public?_id=A,B` (no login needed): the named public settings, or all.
fn settings_public(sim: &SimInner, ids: Option<&str>) -> Response {
    let st = sim.state();
    let ids: Vec<String> = match ids {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => st.setting_ids(),
    };
    let settings: Vec<Value> = ids
        .iter()
        .filter_map(|id| st.setting(id).map(|v| json!({"_id": id, "value": v})))
        .collect();
    let n = settings.len();
    ok(json!({ "settings": settings, "count": n, "offset": 0, "total": n }))
}

/// `POST /api/v1/method.call/:method`: a DDP method over REST, as today's web client calls them.
/// The body's `message` is the DDP `method` frame as a string; so is the answer's.
async fn method_call(
    AxState(sim): Sim,
    axum::extract::Path(method): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match authed(&sim, &headers) {
        Ok(u) => method_over_rest(&sim, Some(u.id), &method, &body),
        Err(r) => *r,
    }
}

/// `POST /api/v1/method.callAnon/:method`: the same without a login (`login` itself, typically).
async fn method_call_anon(
    AxState(sim): Sim,
    axum::extract::Path(method): axum::extract::Path<String>,
    Json(body): Json<Value>,
) -> Response {
    method_over_rest(&sim, None, &method, &body)
}

fn method_over_rest(sim: &SimInner, uid: Option<String>, method: &str, body: &Value) -> Response {
    let Some(call) = body["message"]
        .as_str()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Match error: the 'message' param must be a DDP method frame as a string",
            "error-invalid-params",
        );
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let params = call.get("params").cloned().unwrap_or_else(|| json!([]));
    let (reply, _) = sim.state().client_call(uid.as_deref(), method, &params);
    let (status, ok, frame) = match reply {
        Ok(Some(r)) => (
            StatusCode::OK,
            true,
            json!({"msg": "result", "id": id, "result": r}),
        ),
        Ok(None) => (StatusCode::OK, true, json!({"msg": "result", "id": id})),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            false,
            json!({"msg": "result", "id": id, "error": e}),
        ),
    };
    (
        status,
        Json(json!({"message": frame.to_string(), "success": ok})),
    )
        .into_response()
}

async fn me(AxState(sim): Sim, headers: HeaderMap) -> Response {
    match authed(&sim, &headers) {
        Ok(u) => {
            let mut v = user_json(&u);
            v["success"] = json!(true);
            Json(v).into_response()
        }
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct UsersInfoQuery {
    username: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

async fn users_info(
    AxState(sim): Sim,
    headers: HeaderMap,
    Query(q): Query<UsersInfoQuery>,
) -> Response {
    let caller = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let st = sim.state();
    let found = match (&q.username, &q.user_id) {
        (Some(n), _) => st.user_by_name(n),
        (None, Some(id)) => st.user(id),
        _ => None,
    };
    let Some(u) = found else {
        return fail(
            StatusCode::BAD_REQUEST,
            "User not found.",
            "error-invalid-user",
        );
    };
    let mut v = user_json(u);
    let full = caller.id == u.id || st.has_permission(&caller, "view-full-other-user-info");
    if !full && let Some(o) = v.as_object_mut() {
        o.remove("roles");
    }
    Json(json!({"user": v, "success": true})).into_response()
}

async fn post_message(AxState(sim): Sim, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = sim.state();
    let target = body
        .get("roomId")
        .or_else(|| body.get("channel"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let rid = match super::resolve_room(&mut st, &user.id, &target) {
        Ok(r) => r,
        Err(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Invalid room",
                "error-invalid-channel",
            );
        }
    };
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    if !st
        .rooms
        .get(&rid)
        .is_some_and(|r| r.members.contains(&user.id))
    {
        return fail(StatusCode::BAD_REQUEST, "Not allowed", "error-not-allowed");
    }
    if text.chars().count() > st.max_message_len {
        return fail(
            StatusCode::BAD_REQUEST,
            "Message size exceeds the allowed limit",
            "error-message-size-exceeded",
        );
    }
    let extra = super::state::NewMessage {
        tmid: body.get("tmid").and_then(Value::as_str).map(str::to_string),
        attachments: body.get("attachments").cloned(),
        bot: user.is_bot().then(|| json!({"i": "rest"})),
        alias: body
            .get("alias")
            .and_then(Value::as_str)
            .map(str::to_string),
        emoji: body
            .get("emoji")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    let doc = rest_doc(st.insert_message(&user.id, &rid, text, extra));
    Json(json!({"ts": doc["ts"], "channel": target, "message": doc, "success": true}))
        .into_response()
}

/// The largest upload accepted (Rocket.Chat's `FileUpload_MaxFileSize` default).
const MAX_UPLOAD: usize = 100 * 1024 * 1024;

/// `POST /api/v1/rooms.media/:rid` (multipart, field `file`): stores the file, unconfirmed.
async fn rooms_media(
    AxState(sim): Sim,
    axum::extract::Path(rid): axum::extract::Path<String>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut file = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                if field.name() != Some("file") {
                    return fail(StatusCode::BAD_REQUEST, "Invalid field", "invalid-field");
                }
                let name = field.file_name().unwrap_or("file").to_string();
                let content_type = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_string();
                match field.bytes().await {
                    Ok(b) if b.len() > MAX_UPLOAD => {
                        return fail(
                            StatusCode::BAD_REQUEST,
                            "File size exceeds the allowed size",
                            "error-file-too-large",
                        );
                    }
                    Ok(b) => file = Some((name, content_type, b.to_vec())),
                    Err(_) => {
                        return fail(StatusCode::BAD_REQUEST, "Invalid upload", "invalid-upload");
                    }
                }
            }
            Ok(None) => break,
            Err(_) => return fail(StatusCode::BAD_REQUEST, "Invalid upload", "invalid-upload"),
        }
    }
    let Some((name, content_type, bytes)) = file else {
        return fail(
            StatusCode::BAD_REQUEST,
            "[No file uploaded]",
            "error-no-file",
        );
    };
    let mut st = sim.state();
    if !st
        .rooms
        .get(&rid)
        .is_some_and(|r| r.members.contains(&user.id))
    {
        return fail(StatusCode::BAD_REQUEST, "Not allowed", "error-not-allowed");
    }
    let id = crate::ids::new_message_id();
    let url = format!("/file-upload/{id}/{name}");
    st.uploads.insert(
        id.clone(),
        super::state::Upload {
            id: id.clone(),
            rid,
            user_id: user.id.clone(),
            name,
            content_type,
            bytes,
            confirmed: false,
        },
    );
    Json(json!({"file": {"_id": id, "url": url}, "success": true})).into_response()
}

/// `POST /api/v1/rooms.mediaConfirm/:rid/:fileId` (`{msg, description}`): posts the file.
async fn rooms_media_confirm(
    AxState(sim): Sim,
    axum::extract::Path((rid, file_id)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = sim.state();
    let Some(up) = st.uploads.get_mut(&file_id) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "File not found",
            "error-file-not-found",
        );
    };
    if up.rid != rid || up.user_id != user.id || up.confirmed {
        return fail(
            StatusCode::BAD_REQUEST,
            "File not found",
            "error-file-not-found",
        );
    }
    up.confirmed = true;
    let url = format!("/file-upload/{}/{}", up.id, up.name);
    let mut attachment = json!({
        "type": "file",
        "title": up.name,
        "title_link": url,
        "title_link_download": true,
        "description": body.get("description").cloned().unwrap_or(Value::Null),
    });
    if up.content_type.starts_with("image/") {
        attachment["image_url"] = json!(url);
        attachment["image_type"] = json!(up.content_type);
        attachment["image_size"] = json!(up.bytes.len());
    }
    let text = body
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let extra = super::state::NewMessage {
        tmid: body.get("tmid").and_then(Value::as_str).map(str::to_string),
        attachments: Some(json!([attachment])),
        ..Default::default()
    };
    let doc = st.insert_message(&user.id, &rid, &text, extra);
    Json(json!({"message": doc, "success": true})).into_response()
}

/// `GET /file-upload/:id/:name`: a confirmed file, to a logged-in user.
async fn file_upload(
    AxState(sim): Sim,
    axum::extract::Path((id, _name)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authed(&sim, &headers) {
        return *r;
    }
    let st = sim.state();
    match st.uploads.get(&id).filter(|u| u.confirmed) {
        Some(u) => (
            [(axum::http::header::CONTENT_TYPE, u.content_type.clone())],
            u.bytes.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// A message document as REST answers carry it: dates as ISO strings.
fn rest_doc(mut doc: Value) -> Value {
    super::state::rest_dates(&mut doc);
    doc
}

/// `POST /api/v1/chat.sendMessage {"message": {_id?, rid, msg, tmid?, attachments?, alias?, emoji?}}`.
/// Unlike the DDP method it takes attachments, alias and emoji, and reports every failure.
async fn send_message(AxState(sim): Sim, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = sim.state();
    let Some(m) = body.get("message").and_then(Value::as_object) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "The \"message\" parameter must be provided.",
            "error-invalid-params",
        );
    };
    let text_of = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let rid = text_of("rid").unwrap_or_default();
    let text = text_of("msg").unwrap_or_default();
    if !st
        .rooms
        .get(&rid)
        .is_some_and(|r| r.members.contains(&user.id))
    {
        return fail(StatusCode::BAD_REQUEST, "Not allowed", "error-not-allowed");
    }
    let id = text_of("_id");
    if id
        .as_deref()
        .is_some_and(|id| st.message_index(id).is_some())
    {
        // Nothing is inserted. The real server's answer to a reused `_id` is unconfirmed: a
        // client should look the message up with chat.getMessage before taking it as sent.
        return fail(
            StatusCode::BAD_REQUEST,
            "A message with this _id already exists",
            "error-message-already-exists",
        );
    }
    if text.chars().count() > st.max_message_len {
        return fail(
            StatusCode::BAD_REQUEST,
            "Message size exceeds the allowed limit",
            "error-message-size-exceeded",
        );
    }
    let attachments = m.get("attachments").cloned();
    if attachments.as_ref().is_some_and(|a| !a.is_array()) {
        return fail(
            StatusCode::BAD_REQUEST,
            "Match failed",
            "error-invalid-params",
        );
    }
    let extra = super::state::NewMessage {
        id,
        tmid: text_of("tmid"),
        bot: m
            .get("bot")
            .cloned()
            .or_else(|| user.is_bot().then(|| json!({"i": "rest"}))),
        attachments,
        alias: text_of("alias"),
        emoji: text_of("emoji"),
        ..Default::default()
    };
    let doc = st.insert_message(&user.id, &rid, &text, extra);
    ok(json!({ "message": rest_doc(doc) }))
}

async fn chat_update(AxState(sim): Sim, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = sim.state();
    let id = body.get("msgId").cloned().unwrap_or(Value::Null);
    // Only the text changes: the message keeps its attachments, alias and the rest.
    let room_id = body
        .get("roomId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let in_room = id
        .as_str()
        .and_then(|i| st.message_index(i))
        .is_some_and(|i| st.messages[i].rid == room_id);
    if !in_room {
        return fail(
            StatusCode::BAD_REQUEST,
            "The room id provided does not match where the message is from.",
            "error-invalid-params",
        );
    }
    let m = json!({"_id": id, "msg": body.get("text").cloned().unwrap_or(Value::Null)});
    match st.update_message(&user.id, &m) {
        Ok(()) => {
            let doc = id
                .as_str()
                .and_then(|i| st.message_index(i))
                .map(|i| rest_doc(st.message_json(&st.messages[i])));
            Json(json!({"message": doc, "success": true})).into_response()
        }
        Err(e) => fail(
            StatusCode::BAD_REQUEST,
            e["reason"].as_str().unwrap_or("error"),
            e["error"].as_str().unwrap_or("error"),
        ),
    }
}

async fn chat_react(AxState(sim): Sim, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let user = match authed(&sim, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = sim.state();
    let emoji = body
        .get("emoji")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim_matches(':')
        .to_string();
    let should = body.get("shouldReact").cloned().unwrap_or(Value::Null);
    let msg_id = body.get("messageId").cloned().unwrap_or(Value::Null);
    match st.set_reaction(&user.id, &json!(format!(":{emoji}:")), &msg_id, &should) {
        Ok(()) => Json(json!({"success": true})).into_response(),
        Err(e) => fail(
            StatusCode::BAD_REQUEST,
            e["reason"].as_str().unwrap_or("error"),
            e["error"].as_str().unwrap_or("error"),
        ),
    }
}

/// An incoming webhook: `{"text", "alias"?, "channel"?}` posted as the integration's user.
async fn incoming_webhook(
    AxState(sim): Sim,
    axum::extract::Path((id, token)): axum::extract::Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let mut st = sim.state();
    if st.webhook_failures > 0 {
        st.webhook_failures -= 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"success": false, "error": "Internal server error (fault injected)"})),
        )
            .into_response();
    }
    let Some((expected, rid, uid)) = st.webhooks.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"success": false, "error": "Invalid integration id or token provided."})),
        )
            .into_response();
    };
    if expected != token {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"success": false, "error": "Invalid integration id or token provided."})),
        )
            .into_response();
    }
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let extra = super::state::NewMessage {
        bot: Some(json!({"i": id})),
        attachments: body.get("attachments").cloned(),
        alias: body
            .get("alias")
            .and_then(Value::as_str)
            .map(str::to_string),
        emoji: body
            .get("emoji")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    st.insert_message(&uid, &rid, &text, extra);
    Json(json!({"success": true})).into_response()
}

fn handle(sim: &Arc<SimInner>) -> RocketChatSim {
    RocketChatSim {
        inner: sim.clone(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

#[derive(Deserialize)]
struct CtlPost {
    user: String,
    room: String,
    text: String,
    tmid: Option<String>,
}

async fn ctl_post(AxState(sim): Sim, Json(b): Json<CtlPost>) -> Response {
    match handle(&sim).post_in(&b.user, &b.room, &b.text, b.tmid.as_deref()) {
        Ok(m) => Json(m).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct CtlEdit {
    user: String,
    id: String,
    text: String,
}

async fn ctl_edit(AxState(sim): Sim, Json(b): Json<CtlEdit>) -> Response {
    match handle(&sim).edit(&b.user, &b.id, &b.text) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct CtlRoom {
    room: String,
}

async fn ctl_messages(AxState(sim): Sim, Query(q): Query<CtlRoom>) -> Response {
    match handle(&sim).messages(&q.room) {
        Ok(m) => Json(m).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn ctl_drop(AxState(sim): Sim) -> StatusCode {
    handle(&sim).drop_connections();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlSeconds {
    seconds: f64,
}

async fn ctl_refuse(AxState(sim): Sim, Json(b): Json<CtlSeconds>) -> StatusCode {
    handle(&sim).refuse_connections_for(Duration::from_secs_f64(b.seconds.clamp(0.0, 86_400.0)));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlDelay {
    ms: u64,
}

async fn ctl_delay(AxState(sim): Sim, Json(b): Json<CtlDelay>) -> StatusCode {
    handle(&sim).set_delay(Duration::from_millis(b.ms));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlSilence {
    on: bool,
}

async fn ctl_silence(AxState(sim): Sim, Json(b): Json<CtlSilence>) -> StatusCode {
    handle(&sim).set_silent(b.on);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlInject {
    frame: String,
}

async fn ctl_inject(AxState(sim): Sim, Json(b): Json<CtlInject>) -> StatusCode {
    handle(&sim).inject_frame(&b.frame);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlRate {
    method: String,
    /// Omit to remove the limit.
    limit: Option<u32>,
    #[serde(default = "one_second")]
    window_ms: u64,
    #[serde(default)]
    exempt_bots: bool,
}

fn one_second() -> u64 {
    1000
}

async fn ctl_rate_limit(AxState(sim): Sim, Json(b): Json<CtlRate>) -> StatusCode {
    let rule = b.limit.map(|limit| RateRule {
        limit,
        window: Duration::from_millis(b.window_ms),
        exempt_bots: b.exempt_bots,
    });
    handle(&sim).set_rate_limit(&b.method, rule);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlToken {
    user: String,
}

#[derive(Deserialize)]
struct CtlWebhook {
    room: String,
    user: String,
}

/// `POST /_sim/webhook {"room","user"}`: an incoming integration posting as `user` in `room`;
/// answers with its URL, as the administration page shows it.
async fn ctl_webhook(AxState(sim): Sim, headers: HeaderMap, Json(b): Json<CtlWebhook>) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    match handle(&sim).create_webhook_path(&b.room, &b.user) {
        Ok(path) => Json(json!({"url": format!("http://{host}{path}")})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn ctl_token(AxState(sim): Sim, Json(b): Json<CtlToken>) -> Response {
    match handle(&sim).create_token(&b.user) {
        Ok((token, id)) => Json(json!({"token": token, "userId": id})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct CtlRestRate {
    /// Omit to lift the limit.
    limit: Option<u32>,
    #[serde(default = "one_minute")]
    window_ms: u64,
}

fn one_minute() -> u64 {
    60_000
}

/// `POST /_sim/rest-rate-limit {"limit"?, "window_ms"?}`: the REST limit per route and address.
async fn ctl_rest_rate_limit(AxState(sim): Sim, Json(b): Json<CtlRestRate>) -> StatusCode {
    let limit = b.limit.map(|n| (n, Duration::from_millis(b.window_ms)));
    handle(&sim).set_rest_rate_limit(limit);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CtlPermission {
    role: String,
    permission: String,
    /// `false` revokes.
    #[serde(default = "yes")]
    grant: bool,
}

fn yes() -> bool {
    true
}

/// `POST /_sim/permission {"role","permission","grant"?}`: grants (or with `"grant": false`
/// revokes) a role's permission.
async fn ctl_permission(AxState(sim): Sim, Json(b): Json<CtlPermission>) -> StatusCode {
    let sim = handle(&sim);
    if b.grant {
        sim.grant_permission(&b.role, &b.permission);
    } else {
        sim.revoke_permission(&b.role, &b.permission);
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_path_names_its_route_when_served_and_nothing_otherwise() {
        let table = [
            ("/api/info", Some("info")),
            ("/api/v1/chat.postMessage", Some("chat.postMessage")),
            ("/api/v1/method.call/sendMessage", Some("method.call")),
            ("/api/v1/rooms.mediaConfirm/R/F", Some("rooms.mediaConfirm")),
            ("/api/v1/rooms.join", Some("rooms.join")),
            ("/api/v1/settings.public", Some("settings.public")),
            ("/api/v1/no.such.route", None),
            ("/api/v1/", None),
            ("/hooks/a/b", None),
            ("/websocket", None),
        ];
        for (path, want) in table {
            assert_eq!(served_route(path), want, "{path}");
        }
    }
}
