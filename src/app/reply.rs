//! Answers: a reply where the message was said (or where a held request was asked), and a refusal, answered and audited.

use super::confirm::Held;
use super::record::Audited;
use super::{Bot, Origin};
use crate::chat::{Chat, Incoming, RoomKind};
use crate::command::Asked;
use crate::error::UserError;
use crate::store::AuditDecision;

impl<C: Chat> Bot<C> {
    /// Refuses a message: logs why, tells its sender, and audits the refusal.
    pub(super) async fn refuse(
        &self,
        origin: &Origin<'_>,
        body: &str,
        cmd: Option<&(dyn Asked + Sync)>,
        e: UserError,
    ) {
        tracing::info!(user = %origin.msg.username, command = %crate::telemetry::short(body), reason = e.label(), "refused");
        self.reply(origin.msg, &e.to_string()).await;
        self.audit(
            origin,
            Audited {
                text: body,
                cmd,
                decision: AuditDecision::Refused,
                reason: Some(e.to_string()),
                ..Audited::default()
            },
        );
    }

    /// Answers a message where it was said, with every suggested command in a form that works there.
    pub(super) async fn reply(&self, msg: &Incoming, text: &str) {
        let text = self.typable(text, msg.room_kind);
        self.reply_to(&msg.room_id, msg.thread.as_deref(), &text)
            .await;
    }

    /// `text` with the commands it suggests written as they work in a room of `kind`.
    pub(super) fn typable(&self, text: &str, kind: RoomKind) -> String {
        let prefix = self
            .s
            .config
            .bot
            .prefixes
            .first()
            .map(String::as_str)
            .unwrap_or("");
        crate::command::typable_hints(text, prefix, kind)
    }

    /// Answers a held command in the room it was asked in (a direct message when its label is a
    /// user's), with its suggestions written as they work there.
    pub(super) async fn reply_held(&self, held: &Held, text: &str) {
        let kind = if held.room_label.starts_with('@') {
            RoomKind::Direct
        } else {
            RoomKind::Channel
        };
        let text = self.typable(text, kind);
        self.reply_to(&held.room_id, held.thread.as_deref(), &text)
            .await;
    }

    pub(super) async fn reply_to(&self, room: &str, thread: Option<&str>, text: &str) {
        // An answer to the message being handled has ids derived from it: a replica that takes
        // over can tell that it was answered, and a repeated answer adds nothing.
        let posted = match super::seen::next_answer_seed() {
            Some(seed) => self.s.chat.post_derived(room, thread, &seed, text).await,
            None => self.s.chat.post(room, thread, text).await,
        };
        if let Err(e) = posted {
            tracing::error!(error = %e, room, "could not answer a command");
        }
    }
}
