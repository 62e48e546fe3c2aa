//! The Rocket.Chat simulator held to the protocol with a plain WebSocket client and plain HTTP, not the bot's own client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rocketops::chat::rocketchat::password_digest;
use rocketops::sandbox::rocketchat::{Release, RocketChatSim, SimConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn sim_with(ping: Duration) -> RocketChatSim {
    RocketChatSim::start(SimConfig {
        ping_interval: ping,
        ping_timeout: ping,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// A simulator playing `release`.
async fn sim_of(release: Release) -> RocketChatSim {
    RocketChatSim::start(SimConfig {
        release,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn open(sim: &RocketChatSim) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/websocket", sim.addr()))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text frame as JSON (None when the socket closes).
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads frames until one with `msg` == `kind` (and `id` when given).
async fn until(ws: &mut Ws, kind: &str, id: Option<&str>) -> Value {
    loop {
        let f = next(ws)
            .await
            .unwrap_or_else(|| panic!("closed while waiting for {kind}"));
        if f["msg"] == kind && id.is_none_or(|i| f["id"] == i) {
            return f;
        }
    }
}

async fn connect_and_login(sim: &RocketChatSim, user: &str) -> Ws {
    let mut ws = open(sim).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({"server_id": "0"}));
    send(
        &mut ws,
        json!({"msg":"connect","version":"1","support":["1","pre2","pre1"]}),
    )
    .await;
    let c = until(&mut ws, "connected", None).await;
    assert!(c["session"].is_string());
    send(
        &mut ws,
        json!({"msg":"method","method":"login","id":"1","params":[{"user":{"username":user},"password":{"digest":password_digest(user),"algorithm":"sha-256"}}]}),
    )
    .await;
    let r = until(&mut ws, "result", Some("1")).await;
    assert_eq!(r["result"]["type"], "password");
    until(&mut ws, "updated", None).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_connect_are_refused_and_a_wrong_version_fails() {
    let sim = sim_with(Duration::from_secs(15)).await;
    let mut ws = open(&sim).await;
    next(&mut ws).await;
    send(
        &mut ws,
        json!({"msg":"method","method":"login","id":"1","params":[]}),
    )
    .await;
    assert_eq!(
        until(&mut ws, "error", None).await["reason"],
        "Must connect first"
    );
    send(
        &mut ws,
        json!({"msg":"connect","version":"2","support":["2"]}),
    )
    .await;
    assert_eq!(until(&mut ws, "failed", None).await["version"], "1");
    assert!(
        next(&mut ws).await.is_none(),
        "the server closes after `failed`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_pinged_and_then_dropped() {
    let sim = sim_with(Duration::from_millis(100)).await;
    let mut ws = open(&sim).await;
    next(&mut ws).await;
    send(
        &mut ws,
        json!({"msg":"connect","version":"1","support":["1"]}),
    )
    .await;
    until(&mut ws, "connected", None).await;
    assert_eq!(until(&mut ws, "ping", None).await, json!({"msg":"ping"}));
    assert!(
        next(&mut ws).await.is_none(),
        "closed after the unanswered ping"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_method_get_the_servers_errors() {
    let sim = sim_with(Duration::from_secs(15)).await;
    let mut ws = open(&sim).await;
    next(&mut ws).await;
    send(
        &mut ws,
        json!({"msg":"connect","version":"1","support":["1"]}),
    )
    .await;
    until(&mut ws, "connected", None).await;
    send(&mut ws, json!({"msg":"method","method":"login","id":"a","params":[{"user":{"username":"alice"},"password":{"digest":"00","algorithm":"sha-256"}}]})).await;
    let r = until(&mut ws, "result", Some("a")).await;
    assert_eq!(r["error"]["error"], 403);
    assert_eq!(r["error"]["reason"], "Incorrect password");
    send(
        &mut ws,
        json!({"msg":"method","method":"getUserRoles","id":"b","params":[]}),
    )
    .await;
    let r = until(&mut ws, "result", Some("b")).await;
    assert!(r["error"].is_object(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_subscribers_as_a_changed_frame_with_meta() {
    let sim = sim_with(Duration::from_secs(15)).await;
    let mut ws = connect_and_login(&sim, "bob").await;
    send(&mut ws, json!({"msg":"sub","id":"s1","name":"stream-room-messages","params":["__my_messages__",{"useCollection":false,"args":[]}]})).await;
    assert_eq!(until(&mut ws, "ready", None).await["subs"], json!(["s1"]));
    sim.post("alice", "#ops", "hello bob").unwrap();
    let f = until(&mut ws, "changed", None).await;
    assert_eq!(f["collection"], "stream-room-messages");
    assert_eq!(f["fields"]["eventName"], "__my_messages__");
    let [msg, meta] = f["fields"]["args"].as_array().unwrap().as_slice() else {
        panic!("{f}")
    };
    assert_eq!(msg["msg"], "hello bob");
    assert!(msg["ts"]["$date"].is_i64());
    assert_eq!(msg["u"]["username"], "alice");
    assert_eq!(
        meta,
        &json!({"roomParticipant": true, "roomType": "c", "roomName": "ops"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_dedupes_by_id_and_swallows_an_oversized_message() {
    let sim = sim_of(Release::V8_9).await;
    sim.set_max_message_len(10);
    let mut ws = connect_and_login(&sim, "alice").await;
    send(
        &mut ws,
        json!({"msg":"method","method":"getRoomIdByNameOrId","id":"r","params":["ops"]}),
    )
    .await;
    let rid = until(&mut ws, "result", Some("r")).await["result"]
        .as_str()
        .unwrap()
        .to_string();
    let m = json!({"_id":"abcdefghijklmnopq","rid":rid,"msg":"short"});
    send(
        &mut ws,
        json!({"msg":"method","method":"sendMessage","id":"1","params":[m]}),
    )
    .await;
    assert_eq!(
        until(&mut ws, "result", Some("1")).await["result"]["_id"],
        "abcdefghijklmnopq"
    );
    send(
        &mut ws,
        json!({"msg":"method","method":"sendMessage","id":"2","params":[m]}),
    )
    .await;
    let dup = until(&mut ws, "result", Some("2")).await;
    assert!(
        dup.get("result").is_none() && dup.get("error").is_none(),
        "{dup}"
    );
    let long = json!({"rid":rid,"msg":"far too long for the limit"});
    send(
        &mut ws,
        json!({"msg":"method","method":"sendMessage","id":"3","params":[long]}),
    )
    .await;
    let swallowed = until(&mut ws, "result", Some("3")).await;
    assert!(
        swallowed.get("result").is_none() && swallowed.get("error").is_none(),
        "{swallowed}"
    );
    assert_eq!(sim.messages("#ops").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_is_rate_limited_per_user_with_time_to_reset() {
    let sim = sim_of(Release::V8_9).await;
    let mut ws = connect_and_login(&sim, "bob").await;
    send(
        &mut ws,
        json!({"msg":"method","method":"getRoomIdByNameOrId","id":"r","params":["ops"]}),
    )
    .await;
    let rid = until(&mut ws, "result", Some("r")).await["result"]
        .as_str()
        .unwrap()
        .to_string();
    let mut limited = None;
    for i in 0..6 {
        let id = format!("m{i}");
        send(&mut ws, json!({"msg":"method","method":"sendMessage","id":id,"params":[{"rid":rid,"msg":format!("n{i}")}]})).await;
        let r = until(&mut ws, "result", Some(&id)).await;
        if r.get("error").is_some() {
            limited = Some(r);
        }
    }
    let r = limited.expect("the sixth message in a second is refused");
    assert_eq!(r["error"]["error"], "too-many-requests");
    assert!(r["error"]["details"]["timeToReset"].as_u64().unwrap() <= 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_routes_answer_like_the_server() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_with(Duration::from_secs(15)).await;
    let http = reqwest::Client::new();
    let info: Value = http
        .get(format!("{}/api/info", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["success"], true);
    assert!(info["version"].is_string());
    let login: Value = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"user":"bob","password":"bob"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["status"], "success");
    let (uid, token) = (
        login["data"]["userId"].as_str().unwrap(),
        login["data"]["authToken"].as_str().unwrap(),
    );
    let me: Value = http
        .get(format!("{}/api/v1/me", sim.url()))
        .header("X-User-Id", uid)
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "bob");
    assert_eq!(me["roles"], json!(["user"]));
    // bob has no bot or admin role: the REST limiter (10 per route per minute) applies.
    let mut last = 0;
    for _ in 0..11 {
        let r = http
            .post(format!("{}/api/v1/chat.postMessage", sim.url()))
            .header("X-User-Id", uid)
            .header("X-Auth-Token", token)
            .json(&json!({"channel":"#ops","text":"hi"}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        if last == 429 {
            assert!(r.headers().contains_key("X-RateLimit-Reset"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["errorType"], "error-too-many-requests");
            break;
        }
    }
    assert_eq!(last, 429);
    let unauth = http
        .get(format!("{}/api/v1/me", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_client_connects_with_pre1_and_the_standard_publications_are_ready() {
    let sim = sim_with(Duration::from_secs(30)).await;
    let mut ws = open(&sim).await;
    next(&mut ws).await;
    send(
        &mut ws,
        json!({"msg":"connect","version":"pre1","support":["pre1"]}),
    )
    .await;
    assert!(until(&mut ws, "connected", None).await["session"].is_string());
    let mut ws = connect_and_login(&sim, "alice").await;
    for (i, name) in [
        "meteor.loginServiceConfiguration",
        "meteor_autoupdate_clientVersions",
        "roles",
        "activeUsers",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("s{i}");
        send(
            &mut ws,
            json!({"msg":"sub","id":id,"name":name,"params":[]}),
        )
        .await;
        let ready = until(&mut ws, "ready", None).await;
        assert_eq!(ready["subs"], json!([id]), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscribed_with_use_collection_is_added_before_it_is_ready_and_others_are_not() {
    let sim = sim_with(Duration::from_secs(30)).await;
    let uid = sim.add_user("carol", &["user"]);
    let mut ws = connect_and_login(&sim, "carol").await;
    // As a boolean …
    send(
        &mut ws,
        json!({"msg":"sub","id":"a","name":"stream-room-messages","params":["__my_messages__", true]}),
    )
    .await;
    let added = next(&mut ws).await.unwrap();
    assert_eq!(
        added,
        json!({"msg": "added", "collection": "stream-room-messages", "id": "id", "fields": {"eventName": "__my_messages__"}})
    );
    assert_eq!(until(&mut ws, "ready", None).await["subs"], json!(["a"]));
    // … or inside an object; and without it, straight to ready.
    send(
        &mut ws,
        json!({"msg":"sub","id":"b","name":"stream-notify-user","params":[format!("{uid}/message"), {"useCollection": true, "args": []}]}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["msg"], "added");
    assert_eq!(until(&mut ws, "ready", None).await["subs"], json!(["b"]));
    send(
        &mut ws,
        json!({"msg":"sub","id":"c","name":"stream-notify-user","params":[format!("{uid}/rooms-changed"), false]}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["msg"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_called_over_rest_as_the_web_client_calls_them() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_of(Release::V8_9).await;
    let http = reqwest::Client::new();
    let call = |path: &str, frame: Value, auth: Option<(&str, &str)>| {
        let mut r = http
            .post(format!("{}/api/v1/{path}", sim.url()))
            .json(&json!({"message": frame.to_string()}));
        if let Some((uid, token)) = auth {
            r = r.header("X-User-Id", uid).header("X-Auth-Token", token);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            let message: Value = serde_json::from_str(body["message"].as_str().unwrap()).unwrap();
            (status, body["success"].clone(), message)
        }
    };
    // Logging in needs no login: method.callAnon.
    let (status, ok, login) = call(
        "method.callAnon/login",
        json!({"msg":"method","method":"login","id":"7","params":[{"user":{"username":"alice"},"password":{"digest":password_digest("alice"),"algorithm":"sha-256"}}]}),
        None,
    )
    .await;
    assert_eq!((status, ok.clone()), (200, json!(true)));
    assert_eq!(login["msg"], "result");
    assert_eq!(login["id"], "7");
    let (uid, token) = (
        login["result"]["id"].as_str().unwrap().to_string(),
        login["result"]["token"].as_str().unwrap().to_string(),
    );
    // Then any method, as that user.
    let (status, ok, room) = call(
        "method.call/getRoomIdByNameOrId",
        json!({"msg":"method","method":"getRoomIdByNameOrId","id":"8","params":["ops"]}),
        Some((&uid, &token)),
    )
    .await;
    assert_eq!((status, ok), (200, json!(true)));
    assert_eq!(room["result"], json!(sim.room_id("ops").unwrap()));
    // Without a login, method.call is refused; a method's own error is a 400 with the DDP error.
    let resp = http
        .post(format!(
            "{}/api/v1/method.call/getRoomIdByNameOrId",
            sim.url()
        ))
        .json(&json!({"message": "{}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, ok, err) = call(
        "method.call/noSuchMethod",
        json!({"msg":"method","method":"noSuchMethod","id":"9","params":[]}),
        Some((&uid, &token)),
    )
    .await;
    assert_eq!((status, ok), (400, json!(false)));
    assert_eq!(err["error"]["error"], 404, "{err}");
    assert_eq!(err["id"], "9");
}

/// Calls a DDP method and returns its `result` frame.
async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    send(
        ws,
        json!({"msg": "method", "method": method, "id": id, "params": params}),
    )
    .await;
    until(ws, "result", Some(id)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_stream_and_its_delete_events_reach_members_and_the_sdk_methods_answer() {
    let sim = sim_of(Release::V8_9).await;
    let mut ws = connect_and_login(&sim, "alice").await;
    let rid = call(&mut ws, "r", "getRoomIdByNameOrId", json!(["ops"])).await["result"]
        .as_str()
        .unwrap()
        .to_string();
    send(
        &mut ws,
        json!({"msg": "sub", "id": "s1", "name": "stream-room-messages", "params": [rid, false]}),
    )
    .await;
    until(&mut ws, "ready", None).await;
    send(&mut ws, json!({"msg": "sub", "id": "s2", "name": "stream-notify-room", "params": [format!("{rid}/deleteMessage"), false]})).await;
    until(&mut ws, "ready", None).await;
    // A direct message between two others is not alice's to follow.
    let mut bob = connect_and_login(&sim, "bob").await;
    let dm =
        call(&mut bob, "d", "createDirectMessage", json!(["rocketops"])).await["result"]["rid"]
            .as_str()
            .unwrap()
            .to_string();
    send(
        &mut ws,
        json!({"msg": "sub", "id": "s3", "name": "stream-room-messages", "params": [dm, false]}),
    )
    .await;
    let refused = until(&mut ws, "nosub", Some("s3")).await;
    assert_eq!(refused["error"]["error"], "error-not-allowed");

    let alice_id =
        call(&mut ws, "me", "getUsersOfRoom", json!([rid, true])).await["result"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "alice")
            .unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_string();
    send(&mut ws, json!({"msg": "sub", "id": "s4", "name": "stream-notify-user", "params": [format!("{alice_id}/rooms-changed"), false]})).await;
    until(&mut ws, "ready", None).await;
    let posted = sim.post("bob", "#ops", "hello @alice").unwrap();
    let id = posted["_id"].as_str().unwrap().to_string();
    // The room's own stream and the member's rooms-changed, in either order.
    let (mut frame, mut changed) = (Value::Null, Value::Null);
    while frame.is_null() || changed.is_null() {
        let f = until(&mut ws, "changed", None).await;
        if f["collection"] == "stream-room-messages" && f["fields"]["eventName"] == rid.as_str() {
            frame = f;
        } else if f["collection"] == "stream-notify-user" {
            changed = f;
        }
    }
    assert_eq!(frame["fields"]["args"][0]["msg"], "hello @alice");
    assert_eq!(
        changed["fields"]["eventName"],
        format!("{alice_id}/rooms-changed")
    );
    assert_eq!(changed["fields"]["args"][0], "updated");
    assert_eq!(
        changed["fields"]["args"][1]["lastMessage"]["_id"],
        id.as_str()
    );
    assert_eq!(
        frame["fields"]["args"][0]["mentions"][0]["username"],
        "alice"
    );

    assert_eq!(
        call(&mut ws, "n", "getRoomNameById", json!([rid])).await["result"],
        "ops"
    );
    let rooms = call(&mut ws, "g", "rooms/get", json!([])).await;
    assert!(
        rooms["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "ops" && r["t"] == "c")
    );
    let users = call(&mut ws, "u", "getUsersOfRoom", json!([rid, true])).await;
    assert!(
        users["result"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "alice")
    );
    let single = call(&mut ws, "m", "getSingleMessage", json!([id])).await;
    assert_eq!(single["result"]["_id"], id.as_str());
    let next_msgs = call(
        &mut ws,
        "x",
        "loadNextMessages",
        json!([rid, {"$date": 0}, 50]),
    )
    .await;
    assert!(
        next_msgs["result"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["_id"] == id.as_str())
    );
    assert!(
        call(&mut ws, "rm", "readMessages", json!([rid]))
            .await
            .get("error")
            .is_none()
    );
    // Only its author (or a user allowed to force it) deletes a message.
    let denied = call(&mut ws, "del", "deleteMessage", json!([{"_id": id}])).await;
    assert_eq!(denied["error"]["error"], "error-action-not-allowed");
    let gone = call(&mut bob, "del2", "deleteMessage", json!([{"_id": id}])).await;
    assert!(gone.get("error").is_none(), "{gone}");
    let told = loop {
        let f = until(&mut ws, "changed", None).await;
        if f["collection"] == "stream-notify-room" {
            break f;
        }
    };
    assert_eq!(told["fields"]["eventName"], format!("{rid}/deleteMessage"));
    assert_eq!(told["fields"]["args"][0]["_id"], id.as_str());
    let after = call(&mut ws, "m2", "getSingleMessage", json!([id])).await;
    assert!(after["error"].is_object());

    assert!(
        call(&mut ws, "st", "setUserStatus", json!(["away", "lunch"]))
            .await
            .get("error")
            .is_none()
    );
    assert_eq!(
        call(&mut ws, "st2", "setUserStatus", json!(["sleepy"])).await["error"]["error"],
        "error-invalid-status"
    );
    assert_eq!(
        call(
            &mut ws,
            "p",
            "UserPresence:setDefaultStatus",
            json!(["busy"])
        )
        .await["result"],
        true
    );
    assert_eq!(
        call(&mut ws, "p2", "UserPresence:online", json!([])).await["result"],
        true
    );
    assert!(
        call(&mut ws, "lo", "logout", json!([]))
            .await
            .get("error")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_routes_bots_use_for_rooms_history_messages_and_users_answer_like_the_server() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_with(Duration::from_secs(15)).await;
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"user": "bob", "password": "bob"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (uid, token) = (
        login["data"]["userId"].as_str().unwrap().to_string(),
        login["data"]["authToken"].as_str().unwrap().to_string(),
    );
    let req = |m: reqwest::Method, route: &str| {
        http.request(m, format!("{}/api/v1/{route}", sim.url()))
            .header("X-User-Id", &uid)
            .header("X-Auth-Token", &token)
    };
    let get = |route: &str| req(reqwest::Method::GET, route);
    let post = |route: &str| req(reqwest::Method::POST, route);
    let mine = sim
        .post("bob", "#ops", "see https://example.invalid/x in #alerts")
        .unwrap();
    let theirs = sim.post("alice", "#ops", "mine").unwrap();

    let r: Value = get("channels.info?roomName=ops")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            r["success"].clone(),
            r["channel"]["name"].clone(),
            r["channel"]["t"].clone()
        ),
        (json!(true), json!("ops"), json!("c"))
    );
    let rid = r["channel"]["_id"].as_str().unwrap().to_string();
    let r: Value = get(&format!("rooms.info?roomId={rid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["room"]["_id"], rid.as_str());
    let r = get("groups.info?roomName=ops").send().await.unwrap();
    assert_eq!(r.status(), 400, "ops is a channel, not a group");
    let r: Value = get("channels.history?roomName=ops&count=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["_id"], theirs["_id"], "newest first");
    assert!(
        msgs[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "REST dates are ISO strings: {}",
        msgs[0]["ts"]
    );
    let r: Value = get(&format!(
        "chat.getMessage?msgId={}",
        mine["_id"].as_str().unwrap()
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(r["message"]["msg"], mine["msg"]);
    let r: Value = post("im.create")
        .json(&json!({"username": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dm = r["room"]["rid"].as_str().unwrap().to_string();
    sim.post("alice", "@bob", "psst").unwrap();
    let r: Value = get(&format!("im.history?roomId={dm}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["messages"][0]["msg"], "psst");
    let r: Value = post("channels.join")
        .json(&json!({"roomName": "alerts"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["channel"]["name"], "alerts");
    let r: Value = get("subscriptions.get")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["update"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "alerts")
    );
    let r: Value = get("users.list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["total"].as_u64().unwrap() >= 3
            && r["users"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["username"] == "rocketops")
    );
    let r = post("chat.delete")
        .json(&json!({"roomId": rid, "msgId": theirs["_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not bob's message");
    let r: Value = post("chat.delete")
        .json(&json!({"roomId": rid, "msgId": mine["_id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["success"].clone(), r["_id"].clone()),
        (json!(true), mine["_id"].clone())
    );
    assert_eq!(get("no.such.route").send().await.unwrap().status(), 404);
    let r = http
        .get(format!("{}/api/v1/channels.info?roomName=ops", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Logs in over REST; answers (user id, token).
async fn rest_login(http: &reqwest::Client, sim: &RocketChatSim, user: &str) -> (String, String) {
    let login: Value = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"user": user, "password": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        login["data"]["userId"].as_str().unwrap().to_string(),
        login["data"]["authToken"].as_str().unwrap().to_string(),
    )
}

/// A REST call as (user id, token): status, headers and JSON body.
async fn rest(
    http: &reqwest::Client,
    sim: &RocketChatSim,
    method: reqwest::Method,
    route: &str,
    auth: &(String, String),
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = http
        .request(method, format!("{}/api/v1/{route}", sim.url()))
        .header("X-User-Id", &auth.0)
        .header("X-Auth-Token", &auth.1);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn missing_method(name: &str) -> Value {
    json!({"isClientSafe": true, "error": 404, "reason": format!("Method '{name}' not found"),
           "message": format!("Method '{name}' not found [404]"), "errorType": "Meteor.Error"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_9_0_server_answers_send_message_as_a_missing_method_while_8_9_serves_it() {
    rocketops::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    for release in [Release::V9_0, Release::V8_9] {
        let sim = sim_of(release).await;
        let rid = sim.room_id("ops").unwrap();
        let mut ws = connect_and_login(&sim, "alice").await;
        let m = json!([{"rid": rid, "msg": "over the socket"}]);
        let r = call(&mut ws, "s", "sendMessage", m).await;
        let updated = until(&mut ws, "updated", None).await;
        assert_eq!(updated["methods"], json!(["s"]));
        // The same through method.call, as the web client would.
        let auth = rest_login(&http, &sim, "alice").await;
        let frame = json!({"msg": "method", "method": "sendMessage", "id": "9",
                           "params": [{"rid": rid, "msg": "over method.call"}]});
        let (status, _, body) = rest(
            &http,
            &sim,
            reqwest::Method::POST,
            "method.call/sendMessage",
            &auth,
            Some(json!({"message": frame.to_string()})),
        )
        .await;
        let reply: Value = serde_json::from_str(body["message"].as_str().unwrap()).unwrap();
        if release == Release::V9_0 {
            assert_eq!(
                r,
                json!({"msg": "result", "id": "s", "error": missing_method("sendMessage")})
            );
            assert_eq!((status, body["success"].clone()), (400, json!(false)));
            assert_eq!(reply["error"], missing_method("sendMessage"));
            assert!(sim.messages("ops").unwrap().is_empty());
        } else {
            assert_eq!(r["result"]["msg"], "over the socket", "{r}");
            assert_eq!((status, body["success"].clone()), (200, json!(true)));
            assert_eq!(reply["result"]["msg"], "over method.call");
            assert_eq!(sim.messages("ops").unwrap().len(), 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_join_is_missing_on_8_5_and_on_8_9_joins_a_public_channel_but_not_a_private_group() {
    rocketops::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    for release in [Release::V8_5, Release::V8_9] {
        let sim = sim_of(release).await;
        let lounge = sim.add_channel("lounge", false, &["alice"]);
        let secret = sim.add_channel("secret", true, &["alice"]);
        let bob = rest_login(&http, &sim, "bob").await;
        let post = reqwest::Method::POST;
        let (status, _, body) = rest(
            &http,
            &sim,
            post.clone(),
            "rooms.join",
            &bob,
            Some(json!({"roomId": lounge})),
        )
        .await;
        if release == Release::V8_5 {
            assert_eq!(status, 404, "{body}");
            // Before 8.6 a bot joins with channels.join, public channels only.
            let (status, _, body) = rest(
                &http,
                &sim,
                post.clone(),
                "channels.join",
                &bob,
                Some(json!({"roomId": lounge})),
            )
            .await;
            assert_eq!(
                (status, body["channel"]["name"].clone()),
                (200, json!("lounge"))
            );
            let (status, _, body) = rest(
                &http,
                &sim,
                post.clone(),
                "channels.join",
                &bob,
                Some(json!({"roomName": "secret"})),
            )
            .await;
            assert_eq!(
                (status, body["errorType"].clone()),
                (400, json!("error-room-not-found"))
            );
            continue;
        }
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["room"]["_id"], lounge.as_str());
        assert_eq!(body["room"]["usersCount"], 2);
        let (status, _, body) = rest(
            &http,
            &sim,
            post.clone(),
            "rooms.join",
            &bob,
            Some(json!({"roomId": secret})),
        )
        .await;
        assert_eq!(
            (status, body["errorType"].clone(), body["error"].clone()),
            (400, json!("error-not-allowed"), json!("Not allowed"))
        );
        // A private group bob is not in is not found, as a missing room is.
        let get = reqwest::Method::GET;
        let (status, _, hidden) = rest(
            &http,
            &sim,
            get.clone(),
            &format!("rooms.info?roomId={secret}"),
            &bob,
            None,
        )
        .await;
        let (_, _, missing) =
            rest(&http, &sim, get, "rooms.info?roomId=nosuchroom", &bob, None).await;
        assert_eq!(status, 400);
        assert_eq!(hidden, missing);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_info_reports_each_releases_version_without_its_patch() {
    rocketops::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    for (release, version) in [
        (Release::V7_10, "7.10"),
        (Release::V8_5, "8.5"),
        (Release::V8_9, "8.9"),
        (Release::V9_0, "9.0"),
    ] {
        let sim = sim_of(release).await;
        let info: Value = http
            .get(format!("{}/api/info", sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["version"], version);
        assert_eq!(info["success"], true);
        assert!(info["minimumClientVersions"].is_object());
        assert!(info.get("info").is_none());
        // A caller allowed to view statistics (the admin) gets the full version.
        let admin = rest_login(&http, &sim, "admin").await;
        let full: Value = http
            .get(format!("{}/api/info", sim.url()))
            .header("X-User-Id", &admin.0)
            .header("X-Auth-Token", &admin.1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(full["version"], release.version());
        assert_eq!(full["info"]["version"], release.version());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_limiter_counts_per_route_and_address_and_spares_a_user_allowed_to_bypass_it() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_of(Release::NEWEST).await;
    let http = reqwest::Client::new();
    let get = reqwest::Method::GET;
    let bob = rest_login(&http, &sim, "bob").await;
    let header = |h: &reqwest::header::HeaderMap, k: &str| -> i64 {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {h:?}"))
    };
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..10 {
        let (status, h, _) = rest(&http, &sim, get.clone(), "me", &bob, None).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "X-RateLimit-Limit"), 10);
        assert_eq!(header(&h, "X-RateLimit-Remaining"), 9 - i);
        let reset = header(&h, "X-RateLimit-Reset");
        assert!(reset > now && reset <= now + 61_000, "epoch ms: {reset}");
    }
    let (status, h, body) = rest(&http, &sim, get.clone(), "me", &bob, None).await;
    assert_eq!(status, 429);
    assert_eq!(header(&h, "X-RateLimit-Remaining"), 0);
    let wait = body["error"].as_str().unwrap().to_string();
    assert!(
        wait.starts_with("Error, too many requests. Please slow down. You must wait ")
            && wait.ends_with(" seconds before trying this endpoint again."),
        "{wait}"
    );
    assert_eq!(
        body,
        json!({"success": false, "error": wait, "errorType": "error-too-many-requests"})
    );
    // Another route from the same address, and the same route from another address, are fresh.
    let (status, h, _) = rest(
        &http,
        &sim,
        get.clone(),
        "users.info?username=bob",
        &bob,
        None,
    )
    .await;
    assert_eq!((status, header(&h, "X-RateLimit-Remaining")), (200, 9));
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (status, h, _) = rest(&elsewhere, &sim, get.clone(), "me", &bob, None).await;
    assert_eq!((status, header(&h, "X-RateLimit-Remaining")), (200, 9));
    // The admin holds api-bypass-rate-limit: not counted, so no limiter headers.
    let admin = rest_login(&http, &sim, "admin").await;
    for _ in 0..12 {
        let (status, h, _) = rest(&http, &sim, get.clone(), "me", &admin, None).await;
        assert_eq!(status, 200);
        assert!(!h.contains_key("X-RateLimit-Remaining"));
    }
    // Without it, the admin shares this address's spent count.
    sim.revoke_permission("admin", "api-bypass-rate-limit");
    let (status, _, _) = rest(&http, &sim, get.clone(), "me", &admin, None).await;
    assert_eq!(status, 429);
    // The control API lifts the limit.
    let r = http
        .post(format!("{}/_sim/rest-rate-limit", sim.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, h, _) = rest(&http, &sim, get.clone(), "me", &bob, None).await;
    assert_eq!(status, 200);
    assert!(!h.contains_key("X-RateLimit-Limit"));
    // The control API grants and revokes permissions: with the limit back, a granted bypass
    // drops the headers, and a revoked one brings them back.
    let limit = |n: u32| json!({"limit": n, "window_ms": 60_000});
    let r = http
        .post(format!("{}/_sim/rest-rate-limit", sim.url()))
        .json(&limit(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let permission = |grant: bool| json!({"role": "user", "permission": "api-bypass-rate-limit", "grant": grant});
    for (grant, limited) in [(true, false), (false, true)] {
        let r = http
            .post(format!("{}/_sim/permission", sim.url()))
            .json(&permission(grant))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "grant {grant}");
        let (status, h, _) = rest(&http, &sim, get.clone(), "me", &bob, None).await;
        assert_eq!(status, 200);
        assert_eq!(
            h.contains_key("X-RateLimit-Limit"),
            limited,
            "grant {grant}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_called_records_socket_and_method_call_calls_and_not_the_simulators_own() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_of(Release::V8_9).await;
    let http = reqwest::Client::new();
    let mut ws = connect_and_login(&sim, "alice").await;
    call(&mut ws, "r", "getRoomIdByNameOrId", json!(["ops"])).await;
    let auth = rest_login(&http, &sim, "bob").await;
    let frame = json!({"msg": "method", "method": "subscriptions/get", "id": "1", "params": []});
    rest(
        &http,
        &sim,
        reqwest::Method::POST,
        "method.call/subscriptions%2Fget",
        &auth,
        Some(json!({"message": frame.to_string()})),
    )
    .await;
    let anon = json!({"msg": "method", "method": "noSuchMethod", "id": "2", "params": []});
    http.post(format!("{}/api/v1/method.callAnon/noSuchMethod", sim.url()))
        .json(&json!({"message": anon.to_string()}))
        .send()
        .await
        .unwrap();
    // The simulator's own uses of method code: a DM opened by a post, and REST routes.
    sim.post("alice", "@bob", "psst").unwrap();
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    rest(
        &http,
        &sim,
        post.clone(),
        "im.create",
        &auth,
        Some(json!({"username": "rocketops"})),
    )
    .await;
    rest(
        &http,
        &sim,
        post,
        "channels.join",
        &auth,
        Some(json!({"roomName": "alerts"})),
    )
    .await;
    rest(&http, &sim, get.clone(), "subscriptions.get", &auth, None).await;
    rest(&http, &sim, get, "chat.getMessage?msgId=x", &auth, None).await;
    let s = |u: &str, m: &str| (u.to_string(), m.to_string());
    assert_eq!(
        sim.methods_called(),
        vec![
            s("", "login"),
            s("alice", "getRoomIdByNameOrId"),
            s("bob", "subscriptions/get"),
            s("", "noSuchMethod"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_public_and_permissions_list_all_answer_from_the_servers_state() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_of(Release::NEWEST).await;
    let http = reqwest::Client::new();
    let settings = || async {
        http.get(format!(
            "{}/api/v1/settings.public?_id=Message_AllowUnrecognizedSlashCommand,Message_MaxAllowedSize",
            sim.url()
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
    };
    assert_eq!(
        settings().await,
        json!({"settings": [{"_id": "Message_AllowUnrecognizedSlashCommand", "value": true},
                            {"_id": "Message_MaxAllowedSize", "value": 5000}],
               "count": 2, "offset": 0, "total": 2, "success": true})
    );
    sim.set_setting("Message_AllowUnrecognizedSlashCommand", json!(false));
    sim.set_max_message_len(100);
    let s = settings().await;
    assert_eq!(s["settings"][0]["value"], false);
    assert_eq!(s["settings"][1]["value"], 100);

    let bob = rest_login(&http, &sim, "bob").await;
    let list = || async {
        let (status, _, body) = rest(
            &http,
            &sim,
            reqwest::Method::GET,
            "permissions.listAll",
            &bob,
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["remove"].clone(), body["success"].clone()),
            (json!([]), json!(true))
        );
        body["update"].as_array().unwrap().clone()
    };
    let entry = |all: &[Value], id: &str| all.iter().find(|p| p["_id"] == id).cloned();
    let all = list().await;
    assert_eq!(
        entry(&all, "api-bypass-rate-limit"),
        Some(json!({"_id": "api-bypass-rate-limit", "roles": ["admin", "bot"]}))
    );
    assert_eq!(
        entry(&all, "view-full-other-user-info"),
        Some(json!({"_id": "view-full-other-user-info", "roles": ["admin", "bot"]}))
    );
    sim.revoke_permission("admin", "api-bypass-rate-limit");
    sim.grant_permission("ops", "view-full-other-user-info");
    let all = list().await;
    assert_eq!(
        entry(&all, "api-bypass-rate-limit").unwrap()["roles"],
        json!(["bot"])
    );
    assert_eq!(
        entry(&all, "view-full-other-user-info").unwrap()["roles"],
        json!(["admin", "bot", "ops"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_of_today_sends_edits_reads_and_opens_rooms_over_rest() {
    rocketops::tls::install_crypto_provider();
    let sim = sim_of(Release::NEWEST).await;
    let http = reqwest::Client::new();
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    // Every password login mints a token; a resume does not.
    let bot = rest_login(&http, &sim, "rocketops").await;
    rest_login(&http, &sim, "rocketops").await;
    let resumed: Value = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"resume": bot.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["data"]["userId"], bot.0.as_str());
    assert_eq!(sim.tokens_of("rocketops"), 2);
    let wrong = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"user": "rocketops", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"status": "error", "error": "Unauthorized", "message": "Unauthorized"})
    );

    let rid = sim.room_id("ops").unwrap();
    let buttons = json!([{"text": "pick", "actions": [{"type": "button", "text": "Yes"}]}]);
    let message = json!({"message": {"_id": "clientchosenid0001", "rid": rid, "msg": "deploy?",
                                     "attachments": buttons, "alias": "Deployer"}});
    let (status, _, sent) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.sendMessage",
        &bot,
        Some(message.clone()),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["message"]["_id"], "clientchosenid0001");
    assert_eq!(sent["message"]["attachments"], buttons);
    assert_eq!(sent["message"]["alias"], "Deployer");
    assert!(
        sent["message"]["bot"].is_object(),
        "a bot's message is marked"
    );
    assert!(
        sent["message"]["ts"].is_string(),
        "REST dates are ISO strings"
    );
    let (status, _, dup) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.sendMessage",
        &bot,
        Some(message),
    )
    .await;
    assert_eq!((status, dup["success"].clone()), (400, json!(false)));
    assert!(
        dup["error"].as_str().unwrap().contains("already exists"),
        "{dup}"
    );
    assert_eq!(sim.messages("ops").unwrap().len(), 1);
    sim.set_max_message_len(10);
    let (status, _, big) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.sendMessage",
        &bot,
        Some(json!({"message": {"rid": rid, "msg": "far too long for the limit"}})),
    )
    .await;
    assert_eq!(
        (status, big["errorType"].clone()),
        (400, json!("error-message-size-exceeded"))
    );
    sim.set_max_message_len(5000);

    let (status, _, edited) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.update",
        &bot,
        Some(json!({"roomId": rid, "msgId": "clientchosenid0001", "text": "deploy now?"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["message"]["msg"], "deploy now?");
    assert_eq!(
        edited["message"]["attachments"], buttons,
        "an edit keeps the rest"
    );
    let (status, _, _) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.update",
        &bot,
        Some(json!({"roomId": "elsewhere", "msgId": "clientchosenid0001", "text": "x"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = rest(
        &http,
        &sim,
        post.clone(),
        "chat.react",
        &bot,
        Some(json!({"messageId": "clientchosenid0001", "emoji": "rocket", "shouldReact": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.messages("ops").unwrap()[0]["reactions"][":rocket:"]["usernames"],
        json!(["rocketops"])
    );

    // History bounds are exclusive unless `inclusive=true`.
    let ts = edited["message"]["ts"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let (_, _, without) = rest(
        &http,
        &sim,
        get.clone(),
        &format!("channels.history?roomId={rid}&latest={ts}"),
        &bot,
        None,
    )
    .await;
    let (_, _, with) = rest(
        &http,
        &sim,
        get.clone(),
        &format!("channels.history?roomId={rid}&latest={ts}&oldest={ts}&inclusive=true"),
        &bot,
        None,
    )
    .await;
    assert_eq!(without["messages"], json!([]));
    assert_eq!(with["messages"][0]["_id"], "clientchosenid0001");

    let (_, _, roles) = rest(
        &http,
        &sim,
        get.clone(),
        &format!("rooms.roles?rid={rid}"),
        &bot,
        None,
    )
    .await;
    assert_eq!(roles["success"], true);
    assert_eq!(roles["roles"][0]["u"]["username"], "admin");
    assert_eq!(roles["roles"][0]["roles"], json!(["owner"]));
    assert_eq!(roles["roles"][0]["rid"], rid.as_str());

    let (status, _, dm) = rest(
        &http,
        &sim,
        post,
        "im.create",
        &bot,
        Some(json!({"username": "alice"})),
    )
    .await;
    assert_eq!(status, 200);
    let room = &dm["room"];
    assert_eq!(
        (room["t"].clone(), room["_id"].clone()),
        (json!("d"), room["rid"].clone())
    );
    assert_eq!(room["usernames"].as_array().unwrap().len(), 2);
    let (_, _, subs) = rest(&http, &sim, get, "subscriptions.get", &bot, None).await;
    assert!(
        subs["update"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["rid"] == room["rid"])
    );
}
