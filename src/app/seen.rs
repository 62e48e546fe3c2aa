//! Seen once: a message addressed to the bot runs at most once, is on record while it is handled, and moves its room's read mark.

use std::time::Duration;

use super::Bot;
use crate::chat::{Chat, Incoming};
use crate::clock::Clock;
use crate::command::{self, Addressing};

/// Why a message must not run as a command whatever the seen-set remembers, if it must not.
///
/// The rule: a message runs at most once, when it is first delivered. A live message the server
/// re-sent because something changed about it (reaction, reply, pin, edit) is never a command; a
/// live message older than `max_age` is never run (nothing of that age can be a first delivery);
/// a message fetched while catching up is new to the bot by its room's read mark, and runs when it
/// is younger than `max_age` (older ones get a "send it again" answer in `dispatch`).
pub fn never_a_new_command(msg: &Incoming, now_ms: i64, max_age: Duration) -> Option<&'static str> {
    if msg.caught_up {
        return None;
    }
    if msg.redelivered {
        return Some("re-sent after a reaction, reply, pin or edit");
    }
    if now_ms - msg.ts_ms > max_age.as_millis() as i64 {
        return Some(
            "delivered live but older than catch_up_max_age (or the server's clock is off)",
        );
    }
    None
}

/// How far ahead of this machine's clock a message's timestamp may be and still move a read mark
/// (clocks drift; a year-2100 stamp is a forgery or a broken server).
pub const MARK_FUTURE_SKEW: Duration = Duration::from_secs(120);

/// Pure: the read mark a message may set, or `None` when its timestamp lies further in the future
/// than clocks drift. A mark in the future would hide every command sent before that time from
/// the next catch-up.
pub fn mark_to_record(ts_ms: i64, now_ms: i64) -> Option<i64> {
    (ts_ms <= now_ms.saturating_add(MARK_FUTURE_SKEW.as_millis() as i64)).then_some(ts_ms)
}

tokio::task_local! {
    /// The message whose command is being answered, and how many answers it has had.
    static ANSWERING: (String, std::sync::atomic::AtomicUsize);
}

/// Pure: the seed of answer `n` to message `id` (its first: `n` = 0).
pub(super) fn answer_seed(id: &str, n: usize) -> String {
    format!("{id}/answer-{n}")
}

/// The seed of the next answer to the message being handled, if one is.
pub(super) fn next_answer_seed() -> Option<String> {
    ANSWERING
        .try_with(|(id, n)| answer_seed(id, n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
        .ok()
}

/// A message the bot was handling when it stopped.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Unanswered {
    id: String,
    room_id: String,
    thread: Option<String>,
    /// Its start, to name it.
    text: String,
}

impl<C: Chat> Bot<C> {
    /// Tells the author of every message the bot was handling when it last stopped that it may
    /// not have been run (it is not run again), then forgets them.
    pub async fn tell_unanswered(&self) {
        let left: Vec<Unanswered> = self.s.store.unanswered().unwrap_or_default();
        // A message that started an operation was answered by it (the operation resumes).
        let started: std::collections::HashSet<String> = self
            .s
            .store
            .recent_ops(None, 500)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.origin)
            .collect();
        for m in left {
            // Answered, by an operation or in words, by a process that stopped before recording it.
            let answered = started.contains(&m.id)
                || self
                    .s
                    .chat
                    .has_message(&crate::chat::first_id_of(&answer_seed(&m.id, 0)))
                    .await;
            if answered {
                if let Err(e) = self.s.store.end_handling(&m.id) {
                    tracing::warn!(error = %e, id = %m.id, "cannot forget a message that was answered");
                }
                continue;
            }
            let text = format!(
                "I restarted while handling your message (`{}`), so it may not have run. If you got no answer, send it again.",
                crate::redact::defuse(&m.text).replace('`', "'")
            );
            // Under an id derived from the message: a replica that tells it again (this one
            // stopped before recording it told) posts nothing new.
            let id = crate::chat::rocketchat::derived_message_id(&m.id, "restarted");
            if let Err(e) = self
                .s
                .chat
                .post_as(&m.room_id, m.thread.as_deref(), &id, &text)
                .await
            {
                tracing::error!(error = %e, room = %m.room_id, "could not tell a message's author it may not have run");
            }
            if let Err(e) = self.s.store.end_handling(&m.id) {
                tracing::warn!(error = %e, id = %m.id, "cannot forget a message told about");
            }
        }
        if let Err(e) = self.s.store.sync_replica().await {
            tracing::warn!(error = %e, "cannot record the messages told about");
        }
    }

    /// One message: answer it if it is a command not handled before, then move the room's read mark.
    pub async fn handle(&self, msg: Incoming) {
        let addressing = Addressing {
            prefixes: self.s.config.bot.prefixes.clone(),
            bot_name: self.s.chat.bot_username(),
        };
        if let Some(body) = command::addressed_body(&msg.text, msg.room_kind, &addressing) {
            let refused =
                never_a_new_command(&msg, message_clock_ms(), self.s.config.bot.catch_up_max_age);
            match refused.map_or_else(
                || self.s.store.mark_seen(&msg.id, message_clock_ms()),
                |_| Ok(false),
            ) {
                Ok(true) => {
                    // Until it is answered, the message is on record as being handled: a bot
                    // killed in between tells its author after the restart instead of staying
                    // silent (it never runs it again: at most once).
                    let handling = Unanswered {
                        id: msg.id.clone(),
                        room_id: msg.room_id.clone(),
                        thread: msg.thread.clone(),
                        text: msg.text.chars().take(80).collect(),
                    };
                    if let Err(e) = self.s.store.begin_handling(&msg.id, &handling) {
                        tracing::warn!(error = %e, id = %msg.id, "cannot record the message as being handled");
                    }
                    // With state in Kubernetes, taken means written there: a replica that takes
                    // over never runs it again. Not written, not run (the next leader may).
                    if let Err(e) = self.s.store.sync_replica().await {
                        tracing::error!(error = %e, id = %msg.id, "cannot record the message as taken; not running it");
                        return;
                    }
                    ANSWERING
                        .scope(
                            (msg.id.clone(), std::sync::atomic::AtomicUsize::new(0)),
                            self.dispatch(&msg, body),
                        )
                        .await;
                    if let Err(e) = self.s.store.end_handling(&msg.id) {
                        tracing::warn!(error = %e, id = %msg.id, "cannot record the message as handled");
                    }
                    self.advance_mark(&msg);
                    // Answered means written there too, or a replica that takes over would
                    // tell its author it may not have run.
                    if let Err(e) = self.s.store.sync_replica().await {
                        tracing::warn!(error = %e, id = %msg.id, "cannot record the message as answered");
                    }
                    return;
                }
                Ok(false) if refused.is_some() => {
                    tracing::info!(id = %msg.id, user = %msg.username, why = refused, "not running a message")
                }
                Ok(false) => tracing::debug!(id = %msg.id, "command already handled; skipping"),
                Err(e) => {
                    tracing::error!(error = %e, id = %msg.id, "cannot record message as seen; not running it")
                }
            }
        }
        self.advance_mark(&msg);
    }

    /// Moves the message's room read mark to it.
    fn advance_mark(&self, msg: &Incoming) {
        match mark_to_record(msg.ts_ms, message_clock_ms()) {
            Some(ts) => {
                if let Err(e) = self.s.store.advance_mark(&msg.room_id, ts) {
                    tracing::warn!(error = %e, "cannot move the read mark");
                }
            }
            None => tracing::warn!(
                id = %msg.id,
                ts_ms = msg.ts_ms,
                "a message stamped in the future; the read mark stays where it is"
            ),
        }
    }
}

/// The chat server's time, for judging a message's `ts`: its age is measured on the wall clock
/// the server stamped it with, whatever clock the operations follow.
pub(super) fn message_clock_ms() -> i64 {
    Clock::System.now_ms()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn answers_to_one_message_are_seeded_in_order_and_nothing_outside_a_message_is() {
        assert_eq!(super::next_answer_seed(), None);
        let seeds = super::ANSWERING
            .scope(
                ("m1".into(), std::sync::atomic::AtomicUsize::new(0)),
                async { [super::next_answer_seed(), super::next_answer_seed()] },
            )
            .await;
        assert_eq!(
            seeds,
            [Some("m1/answer-0".into()), Some("m1/answer-1".into())]
        );
    }

    use super::*;
    use crate::chat::RoomKind;

    #[test]
    fn a_timestamp_beyond_the_clock_skew_never_moves_a_read_mark() {
        let now = 1_800_000_000_000;
        assert_eq!(mark_to_record(now, now), Some(now));
        assert_eq!(mark_to_record(now - 5_000, now), Some(now - 5_000));
        assert_eq!(
            mark_to_record(now + 60_000, now),
            Some(now + 60_000),
            "drift"
        );
        assert_eq!(
            mark_to_record(4_102_444_800_000, now),
            None,
            "the year 2100"
        );
        assert_eq!(mark_to_record(i64::MAX, i64::MAX), Some(i64::MAX));
    }

    fn live(ts_ms: i64) -> Incoming {
        Incoming {
            id: "m1".into(),
            room_id: "R".into(),
            room_name: Some("ops".into()),
            room_kind: RoomKind::Channel,
            user_id: "u1".into(),
            username: "alice".into(),
            text: "/scale test 2".into(),
            thread: None,
            ts_ms,
            caught_up: false,
            redelivered: false,
        }
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn a_fresh_live_message_may_run() {
        assert_eq!(never_a_new_command(&live(1_000), 2_000, TEN_MIN), None);
    }

    #[test]
    fn a_re_sent_live_message_never_runs_whatever_its_age() {
        let mut m = live(1_000);
        m.redelivered = true;
        assert!(never_a_new_command(&m, 1_001, TEN_MIN).is_some());
    }

    #[test]
    fn a_live_message_older_than_the_catch_up_horizon_never_runs() {
        let now = 1_000 + TEN_MIN.as_millis() as i64 + 1;
        assert!(never_a_new_command(&live(1_000), now, TEN_MIN).is_some());
    }

    #[test]
    fn a_caught_up_message_is_judged_by_its_read_mark_not_its_marks_of_change() {
        let mut m = live(1_000);
        m.caught_up = true;
        m.redelivered = true;
        assert_eq!(never_a_new_command(&m, 2_000, TEN_MIN), None);
    }
}
