//! Route: a read-only command answered at once, a changing one started as an operation (one per environment for a fan-out).

use std::time::Duration;

use super::confirm::Held;
use super::record::Audited;
use super::{Bot, Origin};
use crate::chat::{Chat, RoomKind};
use crate::command::Command;
use crate::ops;
use crate::policy::{Requester, lock};
use crate::store::{AuditDecision, OpId};

impl<C: Chat> Bot<C> {
    /// Runs a confirmed and approved request: answers it, or starts its operations.
    pub(super) async fn route(&self, origin: &Origin<'_>, held: Held) {
        if ops::operation::is_operation(&held.cmd) {
            return self.start_operation(origin, held).await;
        }
        if let Command::BackupNow { env: None } = &held.cmd {
            // One operation per environment, each with its own number.
            for env in self.s.config.environments.keys() {
                let mut one = held.clone();
                one.cmd = Command::BackupNow {
                    env: Some(env.clone()),
                };
                let Ok(op) = self.s.store.next_op_id() else {
                    tracing::error!(%env, "cannot number an operation; not starting it");
                    continue;
                };
                one.op = op.get();
                Box::pin(self.start_operation(origin, one)).await;
            }
            return;
        }
        if let Command::Verify {
            env: None,
            backup,
            offsite,
        } = &held.cmd
        {
            // The newest (or named) backup of each environment that has one, each its own operation.
            let envs = self.envs_with_backup(backup.as_ref());
            if envs.is_empty() {
                let _ = self
                    .s
                    .chat
                    .post(
                        &held.room_id,
                        held.thread.as_deref(),
                        "No backups are known yet, so there is nothing to verify; `backup now ENV` takes one.",
                    )
                    .await;
                return;
            }
            for env in envs {
                let mut one = held.clone();
                let Ok(op) = self.s.store.next_op_id() else {
                    tracing::error!(%env, "cannot number an operation; not starting it");
                    continue;
                };
                one.cmd = Command::Verify {
                    env: Some(env),
                    backup: backup.clone(),
                    offsite: *offsite,
                };
                one.op = op.get();
                Box::pin(self.start_operation(origin, one)).await;
            }
            return;
        }
        let roles = lock(&self.s.roles, "role cache")
            .get(&origin.msg.username, Duration::MAX)
            .unwrap_or_default();
        let result = ops::execute(
            &held.cmd,
            &ops::Context {
                chat: &self.s.chat,
                store: &self.s.store,
                clusters: &self.s.clusters,
                config: &self.s.config,
                grammar: &self.s.grammar,
                policy: &self.s.policy,
                user: &held.requester,
                room_id: &held.room_id,
                thread: held.thread.as_deref(),
                op: held.op,
                clock: self.s.clock,
                visible: held.visible.as_deref(),
                roles: &roles,
                help_for: &|name, sample| {
                    let room = match origin.msg.room_kind {
                        RoomKind::Direct => None,
                        _ => origin.msg.room_name.as_deref(),
                    };
                    self.s.policy.where_allowed(
                        name,
                        sample,
                        &Requester {
                            username: &origin.msg.username,
                            roles: &roles,
                            room,
                        },
                    )
                },
            },
        )
        .await;
        let (outcome, text) = match result {
            Ok(Some(text)) => ("done".to_string(), Some(text)),
            Ok(None) => ("done".to_string(), None),
            Err(e) => (format!("failed: {}", e.label()), Some(e.to_string())),
        };
        if let Some(t) = text {
            self.reply_held(&held, &t).await;
        }
        let origin_label = Origin {
            msg: origin.msg,
            room_label: held.room_label.clone(),
        };
        let decision = if held.cmd.is_mutating() {
            AuditDecision::Allowed
        } else {
            AuditDecision::AllowedReadOnly
        };
        self.audit(
            &origin_label,
            Audited {
                text: &held.text,
                cmd: Some(&held.cmd),
                decision,
                op: (held.op > 0).then_some(held.op),
                outcome: Some(outcome),
                ..Audited::default()
            },
        );
    }

    pub(super) async fn start_operation(&self, origin: &Origin<'_>, held: Held) {
        let label = Origin {
            msg: origin.msg,
            room_label: held.room_label.clone(),
        };
        match self
            .s
            .engine
            .start_planned(
                &held.cmd,
                held.backup.clone(),
                OpId::new(held.op),
                &held.requester,
                (&held.room_id, &held.room_label),
                held.thread.as_deref(),
            )
            .await
        {
            Ok(()) => self.audit(
                &label,
                Audited {
                    text: &held.text,
                    cmd: Some(&held.cmd),
                    decision: AuditDecision::Allowed,
                    op: Some(held.op),
                    outcome: Some("started".into()),
                    ..Audited::default()
                },
            ),
            Err(e) => {
                self.reply_held(&held, &e.to_string()).await;
                self.audit(
                    &label,
                    Audited {
                        text: &held.text,
                        cmd: Some(&held.cmd),
                        decision: AuditDecision::Refused,
                        reason: Some(e.to_string()),
                        op: Some(held.op),
                        ..Audited::default()
                    },
                );
            }
        }
    }
}
