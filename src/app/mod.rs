//! The command pipeline and its wiring; a message's path, one stage a file.
//!
//! [`wiring`] builds the parts and starts the loops; then each message addressed to the bot goes:
//!
//! 1. **seen once** ([`seen`]): recorded as seen and as being handled, so it runs at most once;
//!    the room's read mark moves on;
//! 2. **rate gate** ([`rate`]): a flood from one user is refused, answered once per window;
//! 3. **parse** ([`parse`]): the text becomes a command, or an answer to a held request;
//! 4. **authorize** ([`authorize`]): may this user run it here, now (policy, roles, locks);
//!    then [`plan`] fixes what exactly runs and checks it before anyone is asked;
//! 5. **confirmation and approval** ([`confirm`]): held requests wait for `confirm`, `approve`
//!    or `cancel`, and are checked again at each step;
//! 6. **route** ([`route`]): a read-only answer at once, or operations started by the engine.
//!
//! Every decision is answered ([`reply`]) and audited ([`record`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chat::{Chat, ChatError, Incoming, RoomKind};
use crate::clock::Clock;
use crate::cluster::Clusters;
use crate::command::{Command, Grammar, Request};
use crate::config::Config;
use crate::error::UserError;
use crate::ops;
use crate::policy::{Pending, Policy, RateLimiter, RoleCache};
use crate::store::{Store, StoreError};

mod authorize;
mod confirm;
mod parse;
mod plan;
mod rate;
mod record;
mod reply;
mod route;
mod seen;
mod wiring;

pub use rate::{Flood, flood_step};
pub use seen::{MARK_FUTURE_SKEW, mark_to_record, never_a_new_command};
pub use wiring::{RunOptions, load_runbooks, run};

/// Why the bot stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    StoreUnavailable(#[from] StoreError),
    #[error(transparent)]
    ChatUnavailable(#[from] ChatError),
    #[error(transparent)]
    ClusterUnavailable(#[from] crate::cluster::ClusterError),
    #[error("invalid runbook commands or Job templates:\n{0}")]
    RunbooksInvalid(String),
    #[error("refusing to start: {0}")]
    AuditKey(String),
    #[error("high availability: {0}")]
    Ha(String),
}

/// What every stage shares: the parts, and the state of requests in flight.
struct Shared<C: Chat> {
    chat: C,
    store: Store,
    grammar: Grammar,
    policy: Policy,
    limiter: Mutex<RateLimiter>,
    /// Users being rate limited now: their window and what it refused.
    flood: Mutex<HashMap<String, Flood>>,
    pending: Mutex<Pending<confirm::Held>>,
    roles: Mutex<RoleCache>,
    clusters: Clusters,
    config: Arc<Config>,
    engine: ops::engine::Engine<C>,
    clock: Clock,
}

/// The command pipeline, generic over the chat platform. Cheap to clone.
pub struct Bot<C: Chat> {
    s: Arc<Shared<C>>,
}

impl<C: Chat> Clone for Bot<C> {
    fn clone(&self) -> Self {
        Bot { s: self.s.clone() }
    }
}

/// Where a command came from and who sent it.
struct Origin<'a> {
    msg: &'a Incoming,
    room_label: String,
}

impl<'a> Origin<'a> {
    /// A message's origin, its room named as the audit log names it.
    fn of(msg: &'a Incoming) -> Self {
        Origin {
            msg,
            room_label: match (&msg.room_kind, &msg.room_name) {
                (RoomKind::Direct, _) | (_, None) => format!("@{}", msg.username),
                (_, Some(n)) => n.clone(),
            },
        }
    }

    /// The channel it was said in, as the policy knows rooms (`None` in a direct message).
    fn room(&self) -> Option<&'a str> {
        match self.msg.room_kind {
            RoomKind::Direct => None,
            _ => self.msg.room_name.as_deref(),
        }
    }
}

impl<C: Chat> Bot<C> {
    /// The stages after "seen once", for one command text.
    async fn dispatch(&self, msg: &Incoming, body: &str) {
        let origin = Origin::of(msg);
        let age = Duration::from_millis((seen::message_clock_ms() - msg.ts_ms).max(0) as u64);
        if msg.caught_up && age > self.s.config.bot.catch_up_max_age {
            let e = UserError::MissedWhileOffline {
                age: crate::clock::human(Duration::from_secs(age.as_secs())),
            };
            return self.refuse(&origin, body, None, e).await;
        }
        if !self.rate_gate(&origin, body).await {
            return;
        }
        match self.parse(&origin, body).await {
            Some(Request::Command(cmd)) => self.authorize_and_run(&origin, body, cmd).await,
            Some(Request::Answer(answer)) => self.answer(&origin, body, answer).await,
            None => {}
        }
    }
}

/// A command in normal form, for the audit log and messages.
pub fn describe(cmd: &Command) -> String {
    ops::describe(cmd)
}
