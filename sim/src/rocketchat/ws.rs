//! The simulator's DDP endpoint: handshake, heartbeat, methods and subscriptions on one WebSocket.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

use super::SimInner;
use super::state::{Conn, Out, error_value};

/// Serves one client until it leaves, is dropped, or stops answering pings.
pub(crate) async fn serve_socket(sim: Arc<SimInner>, socket: WebSocket) {
    let conn_id = sim.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    sim.state().conns.insert(
        conn_id,
        Conn {
            user_id: None,
            tx: tx.clone(),
            my_messages: false,
            notify: Default::default(),
            rooms: Default::default(),
            room_events: Default::default(),
        },
    );
    let writer_sim = sim.clone();
    let mut writer = tokio::spawn(async move {
        if sink
            .send(Message::text(r#"{"server_id":"0"}"#))
            .await
            .is_err()
        {
            return;
        }
        while let Some(out) = rx.recv().await {
            let delay = writer_sim.faults().delay;
            if !delay.is_zero() {
                sleep(delay).await;
            }
            if writer_sim.faults().silent {
                continue;
            }
            match out {
                Out::Frame(text) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Out::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    });

    let send = |v: Value| {
        let _ = tx.send(Out::Frame(v.to_string()));
    };
    let cfg = sim.cfg.clone();
    let mut connected = false;
    let mut user_id: Option<String> = None;
    let mut last_inbound = Instant::now();
    let mut pinged: Option<Instant> = None;
    // A finished JoinHandle must not be awaited again.
    let mut writer_done = false;
    loop {
        let deadline = match pinged {
            Some(t) => t + cfg.ping_timeout,
            None => last_inbound + cfg.ping_interval,
        };
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => { last_inbound = Instant::now(); pinged = None; continue }
                };
                last_inbound = Instant::now();
                pinged = None;
                if sim.faults().silent {
                    continue;
                }
                if !handle_frame(&sim, conn_id, &text, &mut connected, &mut user_id, &send) {
                    let _ = tx.send(Out::Close);
                    break;
                }
            }
            _ = sleep_until(deadline) => {
                if sim.faults().silent {
                    last_inbound = Instant::now();
                    pinged = None;
                    continue;
                }
                if pinged.is_some() {
                    let _ = tx.send(Out::Close);
                    break;
                }
                send(json!({"msg": "ping"}));
                pinged = Some(Instant::now());
            }
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = sim.shutdown.cancelled() => { let _ = tx.send(Out::Close); break }
        }
    }
    sim.state().conns.remove(&conn_id);
    drop(tx);
    if !writer_done {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
    }
}

/// Handles one text frame; `false` closes the connection.
fn handle_frame(
    sim: &SimInner,
    conn_id: u64,
    text: &str,
    connected: &mut bool,
    user_id: &mut Option<String>,
    send: &impl Fn(Value),
) -> bool {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            send(json!({"msg": "error", "reason": "Parse error"}));
            return true;
        }
    };
    let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
    if !*connected {
        if msg != "connect" {
            send(json!({"msg": "error", "reason": "Must connect first", "offendingMessage": v}));
            return true;
        }
        if let Err(version) = negotiate(&v) {
            send(json!({"msg": "failed", "version": version}));
            return false;
        }
        *connected = true;
        send(json!({"msg": "connected", "session": crate::ids::new_message_id()}));
        return true;
    }
    match msg {
        "ping" => match v.get("id") {
            Some(id) => send(json!({"msg": "pong", "id": id})),
            None => send(json!({"msg": "pong"})),
        },
        "pong" => {}
        "connect" => {
            send(json!({"msg": "error", "reason": "Already connected", "offendingMessage": v}))
        }
        "method" => {
            let (Some(id), Some(method)) = (
                v.get("id").and_then(Value::as_str),
                v.get("method").and_then(Value::as_str),
            ) else {
                send(
                    json!({"msg": "error", "reason": "Malformed method invocation", "offendingMessage": v}),
                );
                return true;
            };
            let params = v.get("params").cloned().unwrap_or_else(|| json!([]));
            let reply = {
                let mut st = sim.state();
                let (reply, logged_in) = st.client_call(user_id.as_deref(), method, &params);
                if let Some(uid) = logged_in {
                    if let Some(c) = st.conns.get_mut(&conn_id) {
                        c.user_id = Some(uid.clone());
                    }
                    *user_id = Some(uid);
                }
                reply
            };
            match reply {
                Ok(Some(r)) => send(json!({"msg": "result", "id": id, "result": r})),
                Ok(None) => send(json!({"msg": "result", "id": id})),
                Err(e) => send(json!({"msg": "result", "id": id, "error": e})),
            }
            send(json!({"msg": "updated", "methods": [id]}));
        }
        "sub" => {
            let (Some(id), Some(name)) = (
                v.get("id").and_then(Value::as_str),
                v.get("name").and_then(Value::as_str),
            ) else {
                send(
                    json!({"msg": "error", "reason": "Malformed subscription", "offendingMessage": v}),
                );
                return true;
            };
            let first = v
                .get("params")
                .and_then(|p| p.get(0))
                .and_then(Value::as_str)
                .unwrap_or_default();
            // `useCollection` (the second param, a boolean or inside an object): the server first
            // adds a document for the stream, which such clients need before any `changed`.
            let second = v.get("params").and_then(|p| p.get(1));
            let use_collection = second.and_then(Value::as_bool).unwrap_or(false)
                || second
                    .and_then(|o| o.get("useCollection"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let added = |stream: &str| {
                if use_collection {
                    send(
                        json!({"msg": "added", "collection": stream, "id": "id", "fields": {"eventName": first}}),
                    );
                }
            };
            let mut st = sim.state();
            let nosub = |e: Value| json!({"msg": "nosub", "id": id, "error": e});
            let Some(uid) = user_id.clone() else {
                send(nosub(error_value("not-allowed", "Not allowed")));
                return true;
            };
            match name {
                "stream-room-messages" if first == "__my_messages__" => {
                    if let Some(c) = st.conns.get_mut(&conn_id) {
                        c.my_messages = true;
                    }
                    added(name);
                    send(json!({"msg": "ready", "subs": [id]}));
                }
                // One room's messages, for its members (or anyone, for a public channel).
                "stream-room-messages" => match st.rooms.get(first) {
                    Some(r) if r.kind == 'c' || r.members.contains(&uid) => {
                        if let Some(c) = st.conns.get_mut(&conn_id) {
                            c.rooms.insert(first.to_string());
                        }
                        added(name);
                        send(json!({"msg": "ready", "subs": [id]}));
                    }
                    _ => send(nosub(error_value("error-not-allowed", "Not allowed"))),
                },
                "stream-notify-room" => {
                    let (rid, event) = first.split_once('/').unwrap_or((first, ""));
                    let readable = st
                        .rooms
                        .get(rid)
                        .is_some_and(|r| r.kind == 'c' || r.members.contains(&uid));
                    if readable && ["deleteMessage", "typing", "user-activity"].contains(&event) {
                        if let Some(c) = st.conns.get_mut(&conn_id) {
                            c.room_events.insert(first.to_string());
                        }
                        added(name);
                        send(json!({"msg": "ready", "subs": [id]}));
                    } else {
                        send(nosub(error_value("error-not-allowed", "Not allowed")));
                    }
                }
                "stream-notify-user" if first.starts_with(&format!("{uid}/")) => {
                    if let Some(c) = st.conns.get_mut(&conn_id) {
                        c.notify.insert(first.to_string());
                    }
                    added(name);
                    send(json!({"msg": "ready", "subs": [id]}));
                }
                "stream-notify-user" => send(nosub(error_value("not-allowed", "Not allowed"))),
                // The publications every Meteor client subscribes to on start: ready, and (as
                // far as the simulator goes) empty.
                "meteor.loginServiceConfiguration"
                | "meteor_autoupdate_clientVersions"
                | "roles"
                | "activeUsers" => send(json!({"msg": "ready", "subs": [id]})),
                other => send(nosub(error_value(
                    404,
                    &format!("Subscription '{other}' not found"),
                ))),
            }
        }
        "unsub" => {
            if let Some(id) = v.get("id") {
                send(json!({"msg": "nosub", "id": id}));
            }
        }
        _ => send(json!({"msg": "error", "reason": "Bad request", "offendingMessage": v})),
    }
    true
}

/// The DDP versions the server speaks, preferred first, as Meteor's server lists them.
pub const DDP_VERSIONS: [&str; 3] = ["1", "pre2", "pre1"];

/// Pure: Meteor's version negotiation for a `connect` frame. The server picks the first version
/// in the client's `support` list that it speaks; the client connects when that is the `version`
/// it asked for. Otherwise the answer is `failed` with the version to use (the server's first
/// when the frame names none it speaks, or its `version` is missing from its own `support`).
pub fn negotiate(connect: &Value) -> Result<(), &'static str> {
    let version = connect.get("version").and_then(Value::as_str);
    let support: Option<Vec<&str>> = connect
        .get("support")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_str).collect());
    let (Some(version), Some(support)) = (version, support) else {
        return Err(DDP_VERSIONS[0]);
    };
    if !support.contains(&version) {
        return Err(DDP_VERSIONS[0]);
    }
    let chosen = support
        .iter()
        .find_map(|v| DDP_VERSIONS.iter().find(|s| *s == v))
        .copied()
        .unwrap_or(DDP_VERSIONS[0]);
    if chosen == version {
        Ok(())
    } else {
        Err(chosen)
    }
}

#[cfg(test)]
mod negotiation_tests {
    use super::*;

    #[test]
    fn the_version_is_negotiated_as_meteor_does() {
        let c = |version: &str, support: &[&str]| {
            negotiate(&json!({"msg": "connect", "version": version, "support": support}))
        };
        assert_eq!(c("1", &["1", "pre2", "pre1"]), Ok(()));
        assert_eq!(c("pre1", &["pre1"]), Ok(()), "older SDKs connect");
        assert_eq!(c("pre2", &["pre2", "pre1"]), Ok(()));
        // The client prefers 1 but asked for pre1: use 1.
        assert_eq!(c("pre1", &["1", "pre1"]), Err("1"));
        assert_eq!(c("2", &["2"]), Err("1"), "nothing in common");
        assert_eq!(
            c("1", &["pre1"]),
            Err("1"),
            "its version is not in its own list"
        );
        assert_eq!(
            negotiate(&json!({"msg": "connect", "version": "1"})),
            Err("1")
        );
    }
}
