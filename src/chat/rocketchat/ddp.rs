//! DDP frames as Rocket.Chat speaks them: parsing server frames and building client frames.

use serde_json::{Value, json};

/// A DDP error object, as carried by `result`, `nosub` and `error` frames.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpError {
    /// `error` field: a string code (`too-many-requests`) or an HTTP-like number (403, 404).
    pub code: String,
    /// Human-readable reason (`Incorrect password`).
    pub reason: String,
    /// `details` object, if any (carries `timeToReset` for rate limits).
    pub details: Value,
}

impl DdpError {
    fn from_value(v: &Value) -> Self {
        let code = match v.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let reason = v
            .get("reason")
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let details = v.get("details").cloned().unwrap_or(Value::Null);
        DdpError {
            code,
            reason,
            details,
        }
    }

    /// Milliseconds to wait before retrying, when this is a rate-limit error.
    pub fn rate_limit_wait_ms(&self) -> Option<u64> {
        if self.code != "too-many-requests" && self.code != "error-too-many-requests" {
            return None;
        }
        Some(
            self.details
                .get("timeToReset")
                .and_then(Value::as_u64)
                .unwrap_or(1000),
        )
    }
}

impl std::fmt::Display for DdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "[{}]", self.code)
        } else {
            write!(f, "{} [{}]", self.reason, self.code)
        }
    }
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// `{"server_id":"0"}` or `{"msg":"server_id"}`: ignored.
    ServerId,
    Connected {
        session: String,
    },
    Failed {
        version: String,
    },
    Ping {
        id: Option<String>,
    },
    Pong {
        id: Option<String>,
    },
    /// A method reply; both `result` and `error` may be absent.
    Result {
        id: String,
        result: Option<Value>,
        error: Option<DdpError>,
    },
    Updated,
    Ready {
        subs: Vec<String>,
    },
    NoSub {
        id: String,
        error: Option<DdpError>,
    },
    /// A collection change; streams arrive as `changed` with `fields.eventName` and `fields.args`.
    Changed {
        collection: String,
        fields: Value,
    },
    Added {
        collection: String,
    },
    Removed {
        collection: String,
    },
    /// A protocol-level error (`Bad request`, `Must connect first`, ...).
    Error {
        reason: String,
    },
    /// Well-formed JSON with a `msg` this client does not know.
    Unknown {
        msg: String,
    },
}

/// Why a frame could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    #[error("frame is not a JSON object")]
    NotObject,
    #[error("frame has no `msg` field")]
    NoMsg,
    #[error("`{msg}` frame lacks required field `{field}`")]
    MissingField { msg: String, field: &'static str },
}

fn str_field(v: &Value, msg: &str, field: &'static str) -> Result<String, FrameError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| FrameError::MissingField {
            msg: msg.to_string(),
            field,
        })
}

/// Parses one text frame. Never panics, whatever the input.
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, FrameError> {
    let v: Value = serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(FrameError::NotObject)?;
    if obj.contains_key("server_id") && !obj.contains_key("msg") {
        return Ok(ServerFrame::ServerId);
    }
    let msg = obj
        .get("msg")
        .and_then(Value::as_str)
        .ok_or(FrameError::NoMsg)?;
    let id_opt = || v.get("id").and_then(Value::as_str).map(str::to_string);
    Ok(match msg {
        "server_id" => ServerFrame::ServerId,
        "connected" => ServerFrame::Connected {
            session: str_field(&v, msg, "session")?,
        },
        "failed" => ServerFrame::Failed {
            version: v
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        "ping" => ServerFrame::Ping { id: id_opt() },
        "pong" => ServerFrame::Pong { id: id_opt() },
        "result" => ServerFrame::Result {
            id: str_field(&v, msg, "id")?,
            result: v.get("result").cloned(),
            error: v.get("error").map(DdpError::from_value),
        },
        "updated" => ServerFrame::Updated,
        "ready" => ServerFrame::Ready {
            subs: v
                .get("subs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        },
        "nosub" => ServerFrame::NoSub {
            id: str_field(&v, msg, "id")?,
            error: v.get("error").map(DdpError::from_value),
        },
        "changed" => ServerFrame::Changed {
            collection: str_field(&v, msg, "collection")?,
            fields: v.get("fields").cloned().unwrap_or(Value::Null),
        },
        "added" | "addedBefore" => ServerFrame::Added {
            collection: str_field(&v, msg, "collection")?,
        },
        "removed" => ServerFrame::Removed {
            collection: str_field(&v, msg, "collection")?,
        },
        "error" => ServerFrame::Error {
            reason: v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        other => ServerFrame::Unknown {
            msg: other.to_string(),
        },
    })
}

/// The client's handshake frame.
pub fn connect_frame() -> String {
    json!({"msg":"connect","version":"1","support":["1"]}).to_string()
}

pub fn pong_frame(id: Option<&str>) -> String {
    match id {
        Some(id) => json!({"msg":"pong","id":id}).to_string(),
        None => json!({"msg":"pong"}).to_string(),
    }
}

pub fn ping_frame(id: &str) -> String {
    json!({"msg":"ping","id":id}).to_string()
}

pub fn method_frame(id: &str, method: &str, params: &Value) -> String {
    json!({"msg":"method","id":id,"method":method,"params":params}).to_string()
}

pub fn sub_frame(id: &str, name: &str, params: &Value) -> String {
    json!({"msg":"sub","id":id,"name":name,"params":params}).to_string()
}

/// EJSON date: `{"$date": ms}`.
pub fn ejson_date(ms: i64) -> Value {
    json!({ "$date": ms })
}

/// Reads a date as the server writes it: EJSON `{"$date": ms}` over the socket, an ISO 8601
/// string over REST, or a bare number of milliseconds.
pub fn read_ejson_date(v: &Value) -> Option<i64> {
    match v {
        Value::Object(o) => o.get("$date").and_then(Value::as_i64),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

/// A date as REST query parameters take it: ISO 8601 with milliseconds, in UTC.
pub fn iso_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_result_without_result_or_error_is_kept_distinguishable() {
        let f = parse_server_frame(r#"{"msg":"result","id":"7"}"#).unwrap();
        assert_eq!(
            f,
            ServerFrame::Result {
                id: "7".into(),
                result: None,
                error: None
            }
        );
    }

    #[test]
    fn a_rate_limit_error_yields_its_time_to_reset() {
        let f = parse_server_frame(
            r#"{"msg":"result","id":"1","error":{"error":"too-many-requests","reason":"wait","details":{"timeToReset":1234}}}"#,
        )
        .unwrap();
        let ServerFrame::Result { error: Some(e), .. } = f else {
            panic!("expected error result")
        };
        assert_eq!(e.rate_limit_wait_ms(), Some(1234));
    }

    #[test]
    fn a_numeric_error_code_is_read_as_text() {
        let f = parse_server_frame(
            r#"{"msg":"result","id":"1","error":{"error":403,"reason":"Incorrect password"}}"#,
        )
        .unwrap();
        let ServerFrame::Result { error: Some(e), .. } = f else {
            panic!("expected error result")
        };
        assert_eq!(e.code, "403");
        assert_eq!(e.to_string(), "Incorrect password [403]");
    }

    #[test]
    fn the_legacy_server_id_frame_is_recognised() {
        assert_eq!(
            parse_server_frame(r#"{"server_id":"0"}"#),
            Ok(ServerFrame::ServerId)
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(
            parse_server_frame("{nope"),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(parse_server_frame("[1,2]"), Err(FrameError::NotObject));
        assert_eq!(parse_server_frame(r#"{"a":1}"#), Err(FrameError::NoMsg));
        assert!(matches!(
            parse_server_frame(r#"{"msg":"result"}"#),
            Err(FrameError::MissingField { field: "id", .. })
        ));
    }

    #[test]
    fn an_unknown_msg_is_reported_as_unknown() {
        assert_eq!(
            parse_server_frame(r#"{"msg":"teleport"}"#),
            Ok(ServerFrame::Unknown {
                msg: "teleport".into()
            })
        );
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(s in ".{0,200}") {
            let _ = parse_server_frame(&s);
        }

        #[test]
        fn parsing_any_json_object_never_panics(
            msg in prop::option::of("[a-z]{0,10}"),
            id in prop::option::of(any::<i64>()),
            extra in prop::collection::vec(("[a-z_]{1,8}", any::<i32>()), 0..4)
        ) {
            let mut o = serde_json::Map::new();
            if let Some(m) = msg { o.insert("msg".into(), Value::String(m)); }
            if let Some(i) = id { o.insert("id".into(), json!(i)); }
            for (k, v) in extra { o.insert(k, json!(v)); }
            let _ = parse_server_frame(&Value::Object(o).to_string());
        }
    }
}
