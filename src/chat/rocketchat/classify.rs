//! Turns a Rocket.Chat message document into the neutral `Incoming`, or drops it (own, system, edited, bot, livechat).

use serde_json::Value;

use super::ddp::read_ejson_date;
use crate::chat::{Incoming, RoomKind};

/// Who is listening, and whether other bots are heard.
#[derive(Debug, Clone)]
pub struct Listener<'a> {
    pub my_user_id: &'a str,
    pub respond_to_bots: bool,
}

/// Why a message was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Malformed,
    Own,
    System,
    Edited,
    FromBot,
    NotParticipant,
    UnsupportedRoom,
    Empty,
}

/// Classifies one message; `meta` is the `__my_messages__` meta (`roomType`, `roomName`, `roomParticipant`).
pub fn classify(
    message: &Value,
    meta: Option<&Value>,
    who: &Listener<'_>,
) -> Result<Incoming, Dropped> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let id = s(message, "_id").ok_or(Dropped::Malformed)?;
    let room_id = s(message, "rid").ok_or(Dropped::Malformed)?;
    let user = message.get("u").ok_or(Dropped::Malformed)?;
    let user_id = s(user, "_id").ok_or(Dropped::Malformed)?;
    let username = s(user, "username").ok_or(Dropped::Malformed)?;
    let ts_ms = message
        .get("ts")
        .and_then(read_ejson_date)
        .ok_or(Dropped::Malformed)?;
    if user_id == who.my_user_id {
        return Err(Dropped::Own);
    }
    if message.get("t").is_some_and(|t| !t.is_null()) {
        return Err(Dropped::System);
    }
    if message.get("editedAt").is_some_and(|t| !t.is_null()) {
        return Err(Dropped::Edited);
    }
    if !who.respond_to_bots && message.get("bot").is_some_and(|b| !b.is_null()) {
        return Err(Dropped::FromBot);
    }
    if meta
        .and_then(|m| m.get("roomParticipant"))
        .and_then(Value::as_bool)
        == Some(false)
    {
        return Err(Dropped::NotParticipant);
    }
    let room_kind = match meta.and_then(|m| m.get("roomType")).and_then(Value::as_str) {
        Some("c") | None => RoomKind::Channel,
        Some("p") => RoomKind::Private,
        Some("d") => RoomKind::Direct,
        Some(_) => return Err(Dropped::UnsupportedRoom),
    };
    let text = s(message, "msg").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Dropped::Empty);
    }
    let redelivered = shows_later_change(message, ts_ms);
    Ok(Incoming {
        id,
        room_id,
        room_name: meta.and_then(|m| s(m, "roomName")),
        room_kind,
        user_id,
        username,
        text,
        thread: s(message, "tmid"),
        ts_ms,
        caught_up: false,
        redelivered,
    })
}

/// How much later than `ts` the server may stamp `_updatedAt` when it first stores a message.
pub const FIRST_WRITE_SLACK_MS: i64 = 2_000;

/// Whether a message document carries the marks of something done to it after it was posted:
/// reactions, thread replies, a pin or star, a link preview, or an `_updatedAt` clearly later than
/// its `ts`. Rocket.Chat re-sends the whole message on each of these.
pub fn shows_later_change(message: &Value, ts_ms: i64) -> bool {
    let present = |k: &str| match message.get(k) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(_) => true,
    };
    let marked = [
        "reactions",
        "tcount",
        "replies",
        "tlm",
        "pinned",
        "starred",
        "drid",
        "dcount",
    ]
    .iter()
    .any(|k| present(k));
    let updated_late = message
        .get("_updatedAt")
        .and_then(read_ejson_date)
        .is_some_and(|u| u > ts_ms + FIRST_WRITE_SLACK_MS);
    marked || updated_late
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: Listener<'static> = Listener {
        my_user_id: "bot1",
        respond_to_bots: false,
    };

    fn msg() -> Value {
        json!({"_id":"m1","rid":"R","msg":"!ping","ts":{"$date":1000},
               "u":{"_id":"u1","username":"alice"}})
    }

    fn meta(t: &str) -> Value {
        json!({"roomParticipant":true,"roomType":t,"roomName":"ops"})
    }

    #[test]
    fn a_plain_message_in_a_channel_is_passed_on() {
        let m = classify(&msg(), Some(&meta("c")), &ME).unwrap();
        assert_eq!(m.username, "alice");
        assert_eq!(m.room_kind, RoomKind::Channel);
        assert_eq!(m.room_name.as_deref(), Some("ops"));
        assert_eq!(m.ts_ms, 1000);
    }

    #[test]
    fn a_thread_reply_keeps_its_thread() {
        let mut m = msg();
        m["tmid"] = json!("parent");
        let got = classify(&m, Some(&meta("d")), &ME).unwrap();
        assert_eq!(got.thread.as_deref(), Some("parent"));
        assert_eq!(got.room_kind, RoomKind::Direct);
    }

    #[test]
    fn the_bots_own_messages_are_dropped() {
        let mut m = msg();
        m["u"]["_id"] = json!("bot1");
        assert_eq!(classify(&m, None, &ME), Err(Dropped::Own));
    }

    #[test]
    fn system_messages_are_dropped() {
        let mut m = msg();
        m["t"] = json!("uj");
        assert_eq!(classify(&m, None, &ME), Err(Dropped::System));
    }

    #[test]
    fn edited_messages_are_dropped() {
        let mut m = msg();
        m["editedAt"] = json!({"$date": 2000});
        assert_eq!(classify(&m, None, &ME), Err(Dropped::Edited));
    }

    #[test]
    fn a_fresh_message_is_not_marked_redelivered() {
        let mut m = msg();
        m["_updatedAt"] = json!({"$date": 1005});
        assert!(!classify(&m, None, &ME).unwrap().redelivered);
    }

    #[test]
    fn reactions_replies_pins_stars_and_late_updates_mark_a_redelivery() {
        let changes = [
            ("reactions", json!({":+1:": {"usernames": ["bob"]}})),
            ("tcount", json!(1)),
            ("replies", json!(["u2"])),
            ("tlm", json!({"$date": 5000})),
            ("pinned", json!(true)),
            ("starred", json!([{"_id": "u2"}])),
            (
                "_updatedAt",
                json!({"$date": 1000 + FIRST_WRITE_SLACK_MS + 1}),
            ),
        ];
        for (k, v) in changes {
            let mut m = msg();
            m[k] = v;
            assert!(classify(&m, None, &ME).unwrap().redelivered, "{k}");
        }
    }

    #[test]
    fn other_bots_are_heard_only_when_configured() {
        let mut m = msg();
        m["bot"] = json!({"i":"js.SDK"});
        assert_eq!(classify(&m, None, &ME), Err(Dropped::FromBot));
        let open = Listener {
            respond_to_bots: true,
            ..ME
        };
        assert!(classify(&m, None, &open).is_ok());
    }

    #[test]
    fn livechat_and_unjoined_rooms_are_dropped() {
        assert_eq!(
            classify(&msg(), Some(&meta("l")), &ME),
            Err(Dropped::UnsupportedRoom)
        );
        let m = json!({"roomParticipant":false,"roomType":"c"});
        assert_eq!(
            classify(&msg(), Some(&m), &ME),
            Err(Dropped::NotParticipant)
        );
    }

    #[test]
    fn a_message_without_required_fields_is_malformed() {
        assert_eq!(
            classify(&json!({"_id":"x"}), None, &ME),
            Err(Dropped::Malformed)
        );
        assert_eq!(classify(&json!("text"), None, &ME), Err(Dropped::Malformed));
    }
}
