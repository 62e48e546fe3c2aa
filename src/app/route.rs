//! Route: a read-only command answered at once, a changing one started as an operation (one per environment for a fan-out).

use std::time::Duration;

use super::confirm::Held;
use super::record::Audited;
use super::{Bot, Origin};
use crate::chat::Chat;
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
        match &held.cmd {
            Command::BackupNow { env: None } => {
                let envs = self.s.config.environments.keys().cloned().collect();
                self.fan_out(origin, &held, envs, |env| Command::BackupNow {
                    env: Some(env),
                })
                .await;
            }
            Command::Verify {
                env: None,
                backup,
                offsite,
            } => {
                // The newest (or named) backup of each environment that has one.
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
                self.fan_out(origin, &held, envs, |env| Command::Verify {
                    env: Some(env),
                    backup: backup.clone(),
                    offsite: *offsite,
                })
                .await;
            }
            _ => self.answer_now(origin, held).await,
        }
    }

    /// `held` as one operation per environment of `envs`, each with its own number.
    async fn fan_out(
        &self,
        origin: &Origin<'_>,
        held: &Held,
        envs: Vec<String>,
        one_for: impl Fn(String) -> Command,
    ) {
        for env in envs {
            let Ok(op) = self.s.store.next_op_id() else {
                tracing::error!(%env, "cannot number an operation; not starting it");
                continue;
            };
            let mut one = held.clone();
            one.cmd = one_for(env);
            one.op = op.get();
            Box::pin(self.start_operation(origin, one)).await;
        }
    }

    /// A read-only command (or one that changes nothing a journal must hold), run and answered now.
    async fn answer_now(&self, origin: &Origin<'_>, held: Held) {
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
                    let room = origin.room();
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
                crate::ops::engine::Asked {
                    user: &held.requester,
                    room_id: &held.room_id,
                    room: &held.room_label,
                    thread: held.thread.as_deref(),
                    origin: Some(&origin.msg.id),
                },
                // Audited with the journal, in the same write: an operation that acts is on
                // record even if the process dies (or a replica takes over) the moment after.
                || {
                    self.audit(
                        &label,
                        Audited {
                            text: &held.text,
                            cmd: Some(&held.cmd),
                            decision: AuditDecision::Allowed,
                            op: Some(held.op),
                            outcome: Some("started".into()),
                            ..Audited::default()
                        },
                    )
                },
            )
            .await
        {
            Ok(()) => {}
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
