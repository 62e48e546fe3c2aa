//! Confirmation and approval: requests held for `confirm`, `approve` or `cancel`, re-checked at each step.

use super::record::Audited;
use super::{Bot, Origin, describe};
use crate::chat::{Button, Chat};
use crate::command::{self, Answer, Command};
use crate::error::UserError;
use crate::journal::ChosenBackup;
use crate::ops;
use crate::policy::{Approval, Decision, Requester, lock};
use crate::store::{AuditDecision, OpId};

/// A command held while it waits for confirmation or approval.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) cmd: Command,
    pub(super) text: String,
    pub(super) op: u64,
    pub(super) room_id: String,
    pub(super) room_label: String,
    pub(super) thread: Option<String>,
    pub(super) requester: String,
    /// The channel it was asked in (`None` in a direct message), as the policy knows rooms.
    pub(super) room: Option<String>,
    /// Approvals, each by a different person, needed after confirmation.
    pub(super) approvals: u32,
    /// The plan as decided before confirmation, when it needed the cluster to decide.
    pub(super) plan: Option<String>,
    /// The backup the plan named (restore, verify): what runs, whatever is newer by then.
    pub(super) backup: Option<ChosenBackup>,
    /// The app's image when it was asked (deploy, rollback): the plan was made against it.
    pub(super) image_then: Option<String>,
    /// For a read-only command naming no environment: the ones the asker may see.
    pub(super) visible: Option<Vec<String>>,
}

impl crate::policy::HasOp for Held {
    fn op(&self) -> u64 {
        self.op
    }
}

impl<C: Chat> Bot<C> {
    /// An answer to a held request or a running operation: confirm, approve or cancel.
    pub(super) async fn answer(&self, origin: &Origin<'_>, body: &str, answer: Answer) {
        match &answer {
            Answer::Confirm { code } => self.confirm(origin, body, &answer, code).await,
            Answer::Approve { op } => self.approve(origin, body, &answer, op.get()).await,
            Answer::Cancel { op } => self.cancel(origin, body, &answer, op.get()).await,
        }
    }

    /// `confirm CODE`: the held request goes on to approval or its start, when nothing it rested
    /// on changed since it was asked.
    async fn confirm(&self, origin: &Origin<'_>, body: &str, answer: &Answer, code: &str) {
        let taken = lock(&self.s.pending, "pending").confirm(code, &origin.msg.username);
        match taken {
            Ok(held) => {
                if let Some(e) = self.changed_since_asked(&held).await {
                    return self.refuse(origin, body, Some(&held.cmd), e).await;
                }
                self.audit(
                    origin,
                    Audited {
                        text: body,
                        cmd: Some(&held.cmd),
                        decision: AuditDecision::Confirmed,
                        op: Some(held.op),
                        ..Audited::default()
                    },
                );
                self.after_confirmation(origin, held).await;
            }
            Err(e) => {
                let e = UserError::Refused(e.to_string());
                self.refuse(origin, body, Some(answer), e).await
            }
        }
    }

    /// Asks the requester to confirm `held`, naming its plan and the approvals it will need.
    pub(super) async fn ask_confirmation(&self, origin: &Origin<'_>, body: &str, held: Held) {
        let code = lock(&self.s.pending, "pending").ask_confirm(
            &origin.msg.username,
            held.clone(),
            self.s.config.policy.confirm_ttl,
        );
        let ttl = crate::clock::human(self.s.config.policy.confirm_ttl);
        // The need for other people is said now, not only after confirming.
        let second = match held.approvals {
            0 => String::new(),
            1 => format!(
                "\nIt then needs a second person: another user who may run it types `approve #{}`.",
                held.op
            ),
            n => format!(
                "\nIt then needs {n} more people: {n} different users who may run it each type `approve #{}`.",
                held.op
            ),
        };
        let text = format!(
            "#{op} {plan}\n@{user}, type `confirm {code}` within {ttl} to go ahead, or `cancel #{op}`.{second}",
            op = held.op,
            plan = held.plan.clone().unwrap_or_else(|| ops::plan_summary(
                &held.cmd,
                &self.s.config,
                &self.s.store,
                self.s.clock.now_ms(),
            )),
            user = origin.msg.username,
        );
        let buttons = [
            Button {
                label: "Confirm".into(),
                message: format!("confirm {code}"),
            },
            Button {
                label: "Cancel".into(),
                message: format!("cancel #{}", held.op),
            },
        ];
        if let Err(e) = self
            .s
            .chat
            .post_with_buttons(
                &origin.msg.room_id,
                origin.msg.thread.as_deref(),
                &text,
                &buttons,
            )
            .await
        {
            tracing::error!(error = %e, "could not ask for confirmation");
        }
        self.audit(
            origin,
            Audited {
                text: body,
                cmd: Some(&held.cmd),
                decision: AuditDecision::ConfirmationRequested,
                op: Some(held.op),
                ..Audited::default()
            },
        );
    }

    /// What changed since `held` was asked for that its decision rested on, if anything: the
    /// environment's lock, the requester's right to run it (today's policy and roles), and the
    /// state its plan read (the app's image, the backup it names). Checked at every step from
    /// the question to the start: at `confirm` and at each `approve`.
    pub(super) async fn changed_since_asked(&self, held: &Held) -> Option<UserError> {
        let cmd = &held.cmd;
        let changed = |what: String| UserError::ChangedSinceAsked {
            op: held.op,
            what,
            requester: held.requester.clone(),
            action: doing(cmd),
        };
        for env in self.lockable_envs(cmd) {
            match self.s.store.env_lock(&env) {
                Ok(Some(l)) => {
                    return Some(changed(format!(
                        "{env} was locked by @{} at {}{}",
                        l.by,
                        clock_time(l.at_ms),
                        l.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    )));
                }
                Ok(None) => {}
                Err(e) => {
                    // Unknown is not unlocked: the step fails rather than run into a freeze.
                    tracing::error!(error = %e, %env, "cannot read the environment's lock");
                    return Some(UserError::Internal);
                }
            }
        }
        let roles = match self.roles_for(&held.requester, cmd).await {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        let now = self.s.policy.authorize(
            cmd,
            &Requester {
                username: &held.requester,
                roles: &roles,
                room: held.room.as_deref(),
            },
        );
        match now {
            Decision::Deny { reason } => {
                return Some(changed(format!(
                    "@{} may no longer run it ({})",
                    held.requester,
                    reason.trim_end_matches('.')
                )));
            }
            Decision::Allow { approvals, .. } if approvals > held.approvals => {
                return Some(changed(format!(
                    "the policy now asks for {}",
                    crate::policy::approvals(approvals)
                )));
            }
            Decision::Allow { .. } => {}
        }
        if let Some(b) = &held.backup
            && !crate::catalog::list(&self.s.store, Some(&b.env))
                .iter()
                .any(|r| r.job == b.job)
        {
            return Some(changed(format!(
                "{}'s backup `{}` left the catalog",
                b.env, b.name
            )));
        }
        if let (Some(then), Some(env)) = (&held.image_then, cmd.env())
            && let Some(now) = self.current_image(env).await
            && now != *then
        {
            return Some(changed(format!("{env} changed from `{then}` to `{now}`")));
        }
        None
    }

    /// A confirmed (or unconfirmed but allowed) command: ask for approval if needed, else run it.
    pub(super) async fn after_confirmation(&self, origin: &Origin<'_>, held: Held) {
        if held.approvals > 0 {
            let op = held.op;
            let summary = describe(&held.cmd);
            // Registered whatever a panic elsewhere left behind: the chat is told it waits.
            lock(&self.s.pending, "pending").ask_approval(
                op,
                &held.requester,
                held.clone(),
                held.approvals,
                self.s.config.policy.approval_ttl,
            );
            let text = match held.approvals {
                1 => format!(
                    "#{op} {summary} needs a second person: another user who may run it types `approve #{op}`."
                ),
                n => format!(
                    "#{op} {summary} needs {n} more people: {n} different users who may run it each type `approve #{op}`."
                ),
            };
            self.reply(origin.msg, &text).await;
            self.audit(
                origin,
                Audited {
                    text: &held.text,
                    cmd: Some(&held.cmd),
                    decision: AuditDecision::ApprovalRequested,
                    op: Some(op),
                    ..Audited::default()
                },
            );
            return;
        }
        self.route(origin, held).await;
    }

    /// `approve #N`: counts the approval of someone who may run the request too, and starts it
    /// once enough different people have approved.
    pub(super) async fn approve(&self, origin: &Origin<'_>, body: &str, cmd: &Answer, op: u64) {
        let held = lock(&self.s.pending, "pending")
            .peek_approval(op)
            .map(|h| h.payload.clone());
        let Some(held) = held else {
            let e = UserError::Refused(crate::policy::PendingError::UnknownOp(op).to_string());
            return self.refuse(origin, body, Some(cmd), e).await;
        };
        // The approver must be allowed to run the command there too.
        match self.decide(origin, &held.cmd).await {
            Ok(Decision::Allow { .. }) => {}
            Ok(Decision::Deny { reason }) => {
                let e = UserError::NotAllowed {
                    action: format!("approve #{op} ({})", describe(&held.cmd)),
                    reason,
                };
                return self.refuse(origin, body, Some(cmd), e).await;
            }
            Err(e) => return self.refuse(origin, body, Some(cmd), e).await,
        }
        if let Some(e) = self.changed_since_asked(&held).await {
            // What was asked for no longer holds: the request ends here, whoever approves next.
            lock(&self.s.pending, "pending").drop_approval(op);
            return self.refuse(origin, body, Some(&held.cmd), e).await;
        }
        let taken = lock(&self.s.pending, "pending").approve(op, &origin.msg.username);
        let summary = describe(&held.cmd);
        match taken {
            Ok(Approval::Counted {
                requester,
                approvers,
                missing,
            }) => {
                let needed = held.approvals;
                self.reply(
                    origin.msg,
                    &format!(
                        "#{op} {summary}: approved by {} ({} of {needed}). It still needs {}: another user who may run it types `approve #{op}`.",
                        mentions(&approvers),
                        approvers.len(),
                        crate::policy::approvals(missing),
                    ),
                )
                .await;
                self.audit(
                    origin,
                    Audited {
                        text: body,
                        cmd: Some(&held.cmd),
                        decision: AuditDecision::Approved,
                        reason: Some(format!(
                            "requested by {requester}; {} of {needed} approvals",
                            approvers.len()
                        )),
                        op: Some(op),
                        outcome: Some(format!("waiting for {}", crate::policy::approvals(missing))),
                    },
                );
            }
            Ok(Approval::Complete {
                requester,
                approvers,
                payload,
            }) => {
                if approvers.len() > 1 {
                    self.reply(
                        origin.msg,
                        &format!(
                            "#{op} {summary}: approved by {} ({n} of {n}); starting.",
                            mentions(&approvers),
                            n = approvers.len()
                        ),
                    )
                    .await;
                }
                self.audit(
                    origin,
                    Audited {
                        text: body,
                        cmd: Some(&payload.cmd),
                        decision: AuditDecision::Approved,
                        reason: Some(format!("requested by {requester}")),
                        op: Some(op),
                        ..Audited::default()
                    },
                );
                self.route(origin, payload).await;
            }
            Err(e) => {
                self.refuse(origin, body, Some(cmd), UserError::Refused(e.to_string()))
                    .await
            }
        }
    }

    /// `cancel #N`: withdraws a held request (its requester only), or stops a running operation.
    pub(super) async fn cancel(&self, origin: &Origin<'_>, body: &str, cmd: &Answer, op: u64) {
        let found = lock(&self.s.pending, "pending").withdraw_op(op, &origin.msg.username);
        match found {
            Some(Ok(held)) => {
                self.reply(
                    origin.msg,
                    &format!("#{op} {} is cancelled.", describe(&held.cmd)),
                )
                .await;
                self.audit(
                    origin,
                    Audited {
                        text: body,
                        cmd: Some(cmd),
                        decision: AuditDecision::Allowed,
                        op: Some(op),
                        outcome: Some("cancelled".into()),
                        ..Audited::default()
                    },
                );
            }
            Some(Err(owner)) => {
                let e = UserError::NotAllowed {
                    action: format!("cancel #{op}"),
                    reason: format!("it is @{owner}'s request."),
                };
                self.refuse(origin, body, Some(cmd), e).await;
            }
            None => self.cancel_running(origin, body, cmd, op).await,
        }
    }

    /// `cancel #N` of a running operation: its requester, or anyone who may run the same command
    /// in that environment, stops it; the engine undoes what it changed.
    pub(super) async fn cancel_running(
        &self,
        origin: &Origin<'_>,
        body: &str,
        cmd: &Answer,
        op: u64,
    ) {
        let running =
            self.s.engine.requester(OpId::new(op)).and_then(|owner| {
                Some((owner, self.s.store.get_op(OpId::new(op)).ok().flatten()?))
            });
        let Some((owner, rec)) = running else {
            let e = UserError::NoSuchOperation { op };
            return self.refuse(origin, body, Some(cmd), e).await;
        };
        if owner != origin.msg.username {
            let may = match command::parse(&rec.command, &self.s.grammar) {
                Ok(theirs) => self.decide(origin, &theirs).await,
                Err(e) => Err(e),
            };
            match may {
                Ok(Decision::Allow { .. }) => {}
                Ok(Decision::Deny { reason }) => {
                    let e = UserError::NotAllowed {
                        action: format!("cancel #{op} ({})", rec.command),
                        reason: format!("it is @{owner}'s and {reason}"),
                    };
                    return self.refuse(origin, body, Some(cmd), e).await;
                }
                Err(e) => return self.refuse(origin, body, Some(cmd), e).await,
            }
        }
        if !self.s.engine.cancel(OpId::new(op), &origin.msg.username) {
            let e = UserError::AlreadyFinished { op };
            return self.refuse(origin, body, Some(cmd), e).await;
        }
        self.reply(
            origin.msg,
            &format!(
                "Cancelling #{op} {}: it stops now and puts back what it changed; its progress message says how it ends.",
                rec.command
            ),
        )
        .await;
        self.audit(
            origin,
            Audited {
                text: body,
                cmd: Some(cmd),
                decision: AuditDecision::Allowed,
                op: Some(op),
                outcome: Some("cancel requested".into()),
                ..Audited::default()
            },
        );
    }
}

/// `10:31 UTC`: when something happened today, as a refusal names it.
pub(super) fn clock_time(at_ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at_ms)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_else(|| "an unknown time".into())
}

/// `@bob`, `@bob and @carol`, `@bob, @carol and @dave`.
pub(super) fn mentions(users: &[String]) -> String {
    let at: Vec<String> = users.iter().map(|u| format!("@{u}")).collect();
    match at.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What not starting `cmd` means, as a refusal says it (`not deploying`).
pub(super) fn doing(cmd: &Command) -> String {
    match cmd {
        Command::Deploy { .. } => "deploying".into(),
        Command::Rollback { .. } => "rolling back".into(),
        Command::Scale { .. } => "scaling".into(),
        Command::BackupNow { .. } => "backing up".into(),
        Command::BackupPrune { .. } => "pruning".into(),
        Command::Restore { .. } => "restoring".into(),
        Command::Verify { .. } => "verifying".into(),
        Command::Lock { .. } => "locking".into(),
        Command::Unlock { .. } => "unlocking".into(),
        Command::Runbook { name, .. } => format!("running {name}"),
        other => format!("running `{}`", describe(other)),
    }
}
