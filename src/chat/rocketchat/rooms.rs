//! The rooms a deployment needs (the configured rooms and the alerts channel): finding them over REST, joining public ones, and saying plainly which could not be reached and how to fix it.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::rest::{Rest, RestAuth, RestError};
use super::server::{Endpoints, JoinRoute};
use crate::config::RocketChatConfig;

/// Why a needed room could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomProblem {
    /// No room of that name that the bot can see: missing, or a private group it is not in.
    NotFound,
    /// The server refused to let the bot join a public channel.
    JoinRefused(String),
    /// The server did not answer (retried later).
    Unreachable(String),
}

/// A needed room the bot has not reached, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRoom {
    pub name: String,
    pub problem: RoomProblem,
}

impl MissingRoom {
    /// What is wrong and what fixes it, for the log and for chat.
    pub fn explain(&self, bot: &str) -> String {
        let name = &self.name;
        match &self.problem {
            RoomProblem::NotFound => format!(
                "#{name} was not found: create it, or if it is a private group, invite @{bot} to it (`/invite @{bot}` in #{name})"
            ),
            RoomProblem::JoinRefused(why) => format!(
                "#{name} refused to let @{bot} join ({why}): invite @{bot} to it (`/invite @{bot}` in #{name})"
            ),
            RoomProblem::Unreachable(why) => {
                format!("#{name} could not be looked up ({why}); retrying")
            }
        }
    }
}

/// Pure: the rooms a deployment needs, without `#`, each once, in configuration order.
pub fn needed_rooms(cfg: &RocketChatConfig) -> Vec<String> {
    let mut seen = BTreeSet::new();
    cfg.rooms
        .iter()
        .chain(std::iter::once(&cfg.alerts_channel))
        .map(|r| r.trim().trim_start_matches('#').to_string())
        .filter(|r| !r.is_empty() && seen.insert(r.clone()))
        .collect()
}

/// Pure: the message posted in the rooms the bot did reach, naming the ones it did not.
pub fn announcement(missing: &[MissingRoom], bot: &str) -> String {
    let mut out = String::from(
        "⚠️ I cannot reach every room I am configured for; commands typed there go unanswered until this is fixed:",
    );
    for m in missing {
        out.push_str("\n• ");
        out.push_str(&m.explain(bot));
    }
    out
}

/// Finds `name` (a room name or id) and makes sure the bot is in it: returns its id.
pub async fn reach(
    rest: &Rest,
    auth: &RestAuth,
    endpoints: &Endpoints,
    name: &str,
    member_of: &BTreeSet<String>,
    patience: std::time::Duration,
) -> Result<String, RoomProblem> {
    let room = match rest
        .get(auth, endpoints.room_info, &[("roomName", name)], patience)
        .await
    {
        Ok(v) => v,
        Err(RestError::Refused { .. }) => rest
            .get(auth, endpoints.room_info, &[("roomId", name)], patience)
            .await
            .map_err(|e| match e {
                RestError::Refused { .. } => RoomProblem::NotFound,
                other => RoomProblem::Unreachable(other.to_string()),
            })?,
        Err(e) => return Err(RoomProblem::Unreachable(e.to_string())),
    };
    let room = room.get("room").cloned().unwrap_or(Value::Null);
    let Some(rid) = room.get("_id").and_then(Value::as_str).map(str::to_string) else {
        return Err(RoomProblem::NotFound);
    };
    if member_of.contains(&rid) {
        return Ok(rid);
    }
    match room.get("t").and_then(Value::as_str) {
        Some("c") => {
            let route = match endpoints.join {
                JoinRoute::RoomsJoin => "rooms.join",
                JoinRoute::ChannelsJoin => "channels.join",
            };
            match rest
                .post(auth, route, &json!({ "roomId": rid }), patience)
                .await
            {
                Ok(_) => {
                    tracing::info!(room = name, route, "joined the configured room");
                    Ok(rid)
                }
                Err(RestError::Refused { error, .. }) => Err(RoomProblem::JoinRefused(error)),
                Err(e) => Err(RoomProblem::Unreachable(e.to_string())),
            }
        }
        // A private group the server showed us is one the bot is in (its list may lag).
        _ => Ok(rid),
    }
}

/// The ids of the rooms the bot is a member of (`subscriptions.get`).
pub async fn memberships(
    rest: &Rest,
    auth: &RestAuth,
    endpoints: &Endpoints,
    patience: std::time::Duration,
) -> Result<Vec<Value>, RestError> {
    let v = rest
        .get(auth, endpoints.subscriptions, &[], patience)
        .await?;
    Ok(v.get("update")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needed_rooms_are_the_configured_ones_and_the_alerts_channel_once_each() {
        let mut cfg = RocketChatConfig::new("http://x");
        cfg.rooms = vec!["#ops".into(), "ops".into(), " deploys ".into(), "".into()];
        cfg.alerts_channel = "#alerts".into();
        assert_eq!(needed_rooms(&cfg), ["ops", "deploys", "alerts"]);
        cfg.alerts_channel = "ops".into();
        assert_eq!(needed_rooms(&cfg), ["ops", "deploys"]);
    }

    #[test]
    fn the_announcement_names_each_unreached_room_with_its_fix() {
        let text = announcement(
            &[
                MissingRoom {
                    name: "secret-ops".into(),
                    problem: RoomProblem::NotFound,
                },
                MissingRoom {
                    name: "alerts".into(),
                    problem: RoomProblem::JoinRefused("error-not-allowed".into()),
                },
            ],
            "rocketops",
        );
        assert!(text.contains("#secret-ops was not found"), "{text}");
        assert!(text.contains("invite @rocketops"), "{text}");
        assert!(text.contains("`/invite @rocketops` in #alerts"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
