//! Rate gate: each user's messages through the rate limiter, a flood answered once per window and audited once with its count.

use std::collections::HashMap;

use super::{Bot, Origin};
use crate::chat::Chat;
use crate::error::UserError;
use crate::policy::lock;
use crate::store::{AuditDecision, AuditEntry};

/// A user's flood window: refused messages are counted here and audited once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flood {
    pub since_ms: i64,
    pub last_ms: i64,
    /// When the window ends: the next refusal after it is answered again.
    pub until_ms: i64,
    pub count: u64,
    pub room: String,
    /// The first refused message's text.
    pub first: String,
}

/// Pure: one message of `user` through the flood window. `limited` is the rate limiter's wait
/// (seconds) when it refused. Returns whether to answer, and a window that ended (to audit).
pub fn flood_step(
    floods: &mut HashMap<String, Flood>,
    (user, room, text): (&str, &str, &str),
    now_ms: i64,
    limited: Option<u64>,
) -> (bool, Option<Flood>) {
    let open = floods.get(user).is_some_and(|f| now_ms < f.until_ms);
    match limited {
        None => (false, floods.remove(user)),
        Some(_) if open => {
            if let Some(f) = floods.get_mut(user) {
                f.count += 1;
                f.last_ms = now_ms;
            }
            (false, None)
        }
        Some(secs) => {
            let ended = floods.remove(user);
            floods.insert(
                user.to_string(),
                Flood {
                    since_ms: now_ms,
                    last_ms: now_ms,
                    until_ms: now_ms + (secs.max(1) * 1000) as i64,
                    count: 1,
                    room: room.to_string(),
                    first: text.chars().take(500).collect(),
                },
            );
            (true, ended)
        }
    }
}

impl<C: Chat> Bot<C> {
    /// Whether `body` may go on past the rate limiter; when it may not, the sender is told once
    /// per flood window.
    pub(super) async fn rate_gate(&self, origin: &Origin<'_>, body: &str) -> bool {
        let msg = origin.msg;
        // Poisoned locks are taken back, never read as "no limit" (see `policy::poison`).
        let limited: Result<(), u64> = lock(&self.s.limiter, "rate limiter").check(&msg.username);
        let now = self.s.clock.now_ms();
        let (answer, ended) = flood_step(
            &mut lock(&self.s.flood, "flood windows"),
            (&msg.username, &origin.room_label, body),
            now,
            limited.err(),
        );
        if let Some(ended) = ended {
            self.audit_flood(&msg.username, &ended);
        }
        if let Err(secs) = limited {
            // One "slow down" per window; the rest of the flood is counted, not answered.
            if answer {
                let e = UserError::RateLimited {
                    retry_after_secs: secs,
                };
                tracing::info!(user = %msg.username, reason = e.label(), "refused");
                self.reply(msg, &e.to_string()).await;
            }
            return false;
        }
        true
    }

    /// One audit record for a whole flood window: how many messages were refused, and the first.
    pub(super) fn audit_flood(&self, user: &str, f: &Flood) {
        let entry = AuditEntry {
            at_ms: f.since_ms,
            user: user.to_string(),
            room: f.room.clone(),
            text: f.first.chars().take(500).collect(),
            decision: AuditDecision::Refused,
            reason: Some(format!(
                "rate limited: {} message{} in {} s refused, one answer given",
                f.count,
                if f.count == 1 { "" } else { "s" },
                ((f.last_ms - f.since_ms) / 1000).max(0)
            )),
            outcome: Some(format!("rate_limited ×{}", f.count)),
            ..AuditEntry::default()
        };
        crate::telemetry::metrics()
            .commands
            .get_or_create(&crate::telemetry::labels(&[
                ("command", "(unparsed)"),
                ("outcome", "rate_limited"),
            ]))
            .inc_by(f.count);
        if let Err(e) = self.s.store.audit(&entry) {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Writes the audit records of flood windows that have ended (all of them with `all`).
    pub(super) fn flush_floods(&self, all: bool) {
        let now = self.s.clock.now_ms();
        let ended: Vec<(String, Flood)> = {
            let mut f = lock(&self.s.flood, "flood windows");
            let done: Vec<String> = f
                .iter()
                .filter(|(_, v)| all || v.until_ms <= now)
                .map(|(k, _)| k.clone())
                .collect();
            done.into_iter()
                .filter_map(|k| f.remove(&k).map(|v| (k, v)))
                .collect()
        };
        for (user, f) in ended {
            self.audit_flood(&user, &f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_answered_once_per_window_and_audited_once_with_its_count() {
        let mut f = HashMap::new();
        let who = ("bob", "ops", "/ping 1");
        assert_eq!(flood_step(&mut f, who, 0, Some(2)), (true, None));
        for t in 1..50 {
            assert_eq!(flood_step(&mut f, who, t * 10, Some(2)), (false, None));
        }
        // The window is over: the next refusal is answered, and the last window is handed back.
        let (answer, ended) = flood_step(&mut f, who, 2_500, Some(2));
        assert!(answer);
        let ended = ended.unwrap();
        assert_eq!((ended.count, ended.first.as_str()), (50, "/ping 1"));
        // An accepted message closes the window too.
        let (answer, ended) = flood_step(&mut f, who, 2_600, None);
        assert!(!answer && ended.unwrap().count == 1);
        assert!(f.is_empty());
    }
}
