//! The Rocket.Chat simulator held to the protocol with a plain WebSocket client and plain HTTP, not the bot's own client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rocketops::chat::rocketchat::password_digest;
use rocketops::sandbox::rocketchat::{RocketChatSim, SimConfig};
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
    let sim = sim_with(Duration::from_secs(15)).await;
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
    let sim = sim_with(Duration::from_secs(15)).await;
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
    let sim = sim_with(Duration::from_secs(15)).await;
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
