//! Catching up after a gap: the messages newer than each room's read mark, fetched over REST history, oldest first.

use serde_json::{Value, json};

use super::classify::{Listener, classify};
use super::ddp::{iso_date, read_ejson_date};
use super::rest::{Rest, RestAuth};
use super::server::Endpoints;
use crate::chat::Incoming;
use crate::store::Store;

const PAGE: usize = 50;
const MAX_PAGES: usize = 20;

/// Fetches, for every room the bot is in, the messages newer than its read mark, oldest first.
/// A room with no mark yet (joined after the last start) has nothing to catch up on.
pub async fn catch_up(
    rest: &Rest,
    auth: &RestAuth,
    endpoints: &Endpoints,
    store: &Store,
    who: &Listener<'_>,
    patience: std::time::Duration,
) -> Result<Vec<Incoming>, String> {
    let subs = super::rooms::memberships(rest, auth, endpoints, patience)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for sub in subs {
        let Some(rid) = sub.get("rid").and_then(Value::as_str) else {
            continue;
        };
        let kind = sub.get("t").and_then(Value::as_str).unwrap_or_default();
        let Some(route) = endpoints.history(kind) else {
            continue;
        };
        let Some(mark) = store.read_mark(rid).map_err(|e| e.to_string())? else {
            continue;
        };
        let meta = json!({
            "roomParticipant": true,
            "roomType": kind,
            "roomName": sub.get("name").cloned().unwrap_or(Value::Null),
        });
        let oldest = iso_date(mark);
        let count = PAGE.to_string();
        let mut latest: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("roomId", rid),
                ("oldest", oldest.as_str()),
                ("count", count.as_str()),
            ];
            if let Some(l) = &latest {
                query.push(("latest", l.as_str()));
            }
            let page = rest
                .get(auth, route, &query, patience)
                .await
                .map_err(|e| e.to_string())?;
            let messages = page
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut reached = false;
            let mut oldest_seen = None;
            for m in &messages {
                let Some(ts) = m.get("ts").and_then(read_ejson_date) else {
                    continue;
                };
                oldest_seen = Some(ts);
                if ts <= mark {
                    reached = true;
                    break;
                }
                if let Ok(mut inc) = classify(m, Some(&meta), who) {
                    inc.caught_up = true;
                    out.push(inc);
                }
            }
            match oldest_seen {
                Some(ts) if !reached && messages.len() == PAGE => latest = Some(iso_date(ts)),
                _ => break,
            }
        }
    }
    out.sort_by_key(|m| m.ts_ms);
    Ok(out)
}
