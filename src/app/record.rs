//! The audit record and the command metric of each decision, built by name.

use super::{Bot, Origin};
use crate::chat::Chat;
use crate::command::Asked;
use crate::store::{AuditDecision, AuditEntry, OpId};

/// What one audit record says about a message, besides who sent it where and when.
#[derive(Default)]
pub(super) struct Audited<'a> {
    /// The message's text (its first 500 characters are kept).
    pub text: &'a str,
    /// The command or answer it was, when it parsed.
    pub cmd: Option<&'a (dyn Asked + Sync)>,
    pub decision: AuditDecision,
    pub reason: Option<String>,
    /// The operation or held request it concerns.
    pub op: Option<u64>,
    pub outcome: Option<String>,
}

impl<C: Chat> Bot<C> {
    /// Writes one audit record and counts it in the commands metric.
    pub(super) fn audit(&self, origin: &Origin<'_>, what: Audited<'_>) {
        let Audited {
            text,
            cmd,
            decision,
            reason,
            op,
            outcome,
        } = what;
        let entry = AuditEntry {
            at_ms: self.s.clock.now_ms(),
            user: origin.msg.username.clone(),
            room: origin.room_label.clone(),
            text: text.chars().take(500).collect(),
            command: cmd.map(|c| c.describe()).unwrap_or_default(),
            env: cmd.and_then(|c| c.env().map(str::to_string)),
            decision,
            reason,
            op: op.map(OpId::new),
            outcome,
            ..AuditEntry::default()
        };
        let name = cmd
            .map(|c| c.policy_name().to_string())
            .unwrap_or_else(|| "(unparsed)".into());
        let outcome = entry
            .outcome
            .clone()
            .unwrap_or_else(|| entry.decision.to_string());
        crate::telemetry::metrics()
            .commands
            .get_or_create(&crate::telemetry::labels(&[
                ("command", &name),
                ("outcome", &outcome),
            ]))
            .inc();
        if let Err(e) = self.s.store.audit(&entry) {
            tracing::error!(error = %e, "audit write failed");
        }
    }
}
