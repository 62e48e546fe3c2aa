//! Plan: what exactly an authorized command will run (rollback target, backup, plan text, image, number), checked before anyone is asked.

use super::confirm::Held;
use super::{Bot, Origin};
use crate::chat::Chat;
use crate::command::{self, BackupRef, Command};
use crate::error::UserError;
use crate::journal::ChosenBackup;
use crate::ops;

impl<C: Chat> Bot<C> {
    /// The request to hold for `cmd`, and whether it must be confirmed; `None` once it is refused.
    pub(super) async fn prepare(
        &self,
        origin: &Origin<'_>,
        body: &str,
        cmd: Command,
        confirm: bool,
        approvals: u32,
    ) -> Option<(Held, bool)> {
        match self.hold(origin, body, cmd, confirm, approvals).await {
            Ok(held) => Some(held),
            Err((cmd, e)) => {
                self.refuse(origin, body, Some(&cmd), e).await;
                None
            }
        }
    }

    /// `cmd` made exact and checked, as it is held; or the command refused and why.
    async fn hold(
        &self,
        origin: &Origin<'_>,
        body: &str,
        cmd: Command,
        confirm: bool,
        approvals: u32,
    ) -> Result<(Held, bool), (Command, UserError)> {
        let visible = match (cmd.is_mutating(), cmd.env()) {
            (false, None) => Some(self.visible_envs(origin, &cmd).await),
            _ => None,
        };
        let (cmd, confirm, plan) = match self.rollback_target(&cmd).await {
            Ok(Some((fixed, needs_confirmation, plan))) => {
                (fixed, confirm || needs_confirmation, Some(plan))
            }
            Ok(None) => (cmd, confirm, None),
            Err(e) => return Err((cmd, e)),
        };
        if let Err(e) = self.checked_before_asking(&cmd).await {
            return Err((cmd, e));
        }
        // The backup a restore or verify runs is decided now, named in the plan, and carried
        // through confirmation and approval: a newer one appearing meanwhile changes nothing.
        let backup = match self.choose_backup(&cmd) {
            Ok(b) => b,
            // Refused before anyone is asked to confirm: there is nothing to restore.
            Err(e) => return Err((cmd, e)),
        };
        let plan = match plan {
            Some(plan) => Some(plan),
            None => self.plan_text(&cmd, backup.as_ref()).await,
        };
        let image_then = match &cmd {
            Command::Deploy { env, .. } | Command::Rollback { env, .. } => {
                self.current_image(env).await
            }
            _ => None,
        };
        let op = match self.number(&cmd, confirm || approvals > 0) {
            Ok(op) => op,
            Err(e) => return Err((cmd, e)),
        };
        let held = Held {
            cmd,
            text: body.to_string(),
            op,
            room_id: origin.msg.room_id.clone(),
            room_label: origin.room_label.clone(),
            thread: origin.msg.thread.clone(),
            requester: origin.msg.username.clone(),
            room: origin.room().map(str::to_string),
            approvals,
            plan,
            backup,
            image_then,
            visible,
        };
        Ok((held, confirm))
    }

    /// A bare `rollback` made exact: back to the last good version, fixed now so that the
    /// confirmation names it and the journal holds it. With the target, whether it must be
    /// confirmed and the plan that says so.
    async fn rollback_target(
        &self,
        cmd: &Command,
    ) -> Result<Option<(Command, bool, String)>, UserError> {
        let Command::Rollback { env, to: None } = cmd else {
            return Ok(None);
        };
        let choice = match (
            self.s.clusters.get(env),
            self.s.config.environments.get(env),
        ) {
            (Some(c), Some(e)) => ops::rollback::resolve(c, &self.s.store, e)
                .await
                .map(|choice| (choice.describe(env, e), choice)),
            _ => Err(format!("{env} has no cluster configured")),
        };
        match choice {
            Ok((text, choice)) => Ok(Some((
                Command::Rollback {
                    env: env.clone(),
                    to: Some(command::RollbackTarget::Revision(choice.target)),
                },
                choice.needs_confirmation(),
                text,
            ))),
            Err(why) => Err(UserError::CannotRollBack {
                env: env.clone(),
                why: why.to_string(),
            }),
        }
    }

    /// What would make `cmd` fail whatever anyone confirms or approves: an autoscaler that would
    /// undo a scale, no backup to verify, no off-site copy to fetch.
    async fn checked_before_asking(&self, cmd: &Command) -> Result<(), UserError> {
        if let Command::Scale {
            env,
            replicas,
            component,
        } = cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
        {
            let (kind, name) = match component.as_deref() {
                Some(n) if n == e.database => (crate::cluster::Workload::StatefulSet, n),
                _ => (crate::cluster::Workload::Deployment, e.deployment.as_str()),
            };
            if let Ok(Some(why)) = c.scale_refusal(kind, name, *replicas as i32).await {
                return Err(UserError::WouldBeUndone {
                    env: env.clone(),
                    workload: name.to_string(),
                    replicas: *replicas,
                    why: why.to_string(),
                });
            }
        }
        if let Command::Verify {
            env: None, backup, ..
        } = cmd
            && self.envs_with_backup(backup.as_ref()).is_empty()
        {
            return Err(UserError::NothingToVerify);
        }
        let offsite_ask = match cmd {
            Command::Restore {
                env,
                backup,
                offsite: true,
                ..
            } => Some((env, backup.clone())),
            Command::Verify {
                env: Some(env),
                backup,
                offsite: true,
            } => Some((env, backup.clone().unwrap_or(BackupRef::Latest))),
            _ => None,
        };
        if let Some((env, which)) = offsite_ask
            && let Some(e) = self.s.config.environments.get(env)
        {
            ops::operation::offsite_backup(&self.s.store, e, env, &which)?;
        }
        Ok(())
    }

    /// The plan said before confirmation, when it needs more than the command: a restore's names
    /// the autoscaler only when the app has one; a restore's or verify's names the chosen backup.
    async fn plan_text(&self, cmd: &Command, backup: Option<&ChosenBackup>) -> Option<String> {
        let plan_cmd = planned(cmd, backup);
        if let Command::Restore { env, .. } = cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
            && let Ok(hpa) = c
                .hpa_for(crate::cluster::Workload::Deployment, &e.deployment)
                .await
        {
            let name = hpa.map(|h| h.metadata.name.unwrap_or_default());
            return Some(ops::plan_with(
                &plan_cmd,
                &self.s.config,
                &self.s.store,
                self.s.clock.now_ms(),
                Some(name),
            ));
        }
        backup.is_some().then(|| {
            ops::plan_summary(
                &plan_cmd,
                &self.s.config,
                &self.s.store,
                self.s.clock.now_ms(),
            )
        })
    }

    /// The number `cmd` is known by, 0 for none. A number names an operation (it is journaled and
    /// shown in `history`) or a request that waits for someone (`cancel #N`, `approve #N`). A
    /// lock, an unlock, a mute or a fan-out that starts at once takes none, so the numbers people
    /// see in history do not jump.
    fn number(&self, cmd: &Command, waits: bool) -> Result<u64, UserError> {
        if !cmd.is_mutating() || !(ops::operation::is_operation(cmd) || waits) {
            return Ok(0);
        }
        self.s.store.next_op_id().map(|op| op.get()).map_err(|e| {
            // Never a shared number 0: without the journal nothing changing may start.
            tracing::error!(error = %e, "cannot number an operation");
            UserError::Internal
        })
    }

    /// The backup a restore or verify of one environment will run, decided when it is asked.
    pub(super) fn choose_backup(&self, cmd: &Command) -> Result<Option<ChosenBackup>, UserError> {
        let (env, src, which, offsite) = match cmd {
            Command::Restore {
                env,
                backup,
                from,
                offsite,
                ..
            } => (env, from.as_ref().unwrap_or(env), backup.clone(), *offsite),
            Command::Verify {
                env: Some(env),
                backup,
                offsite,
            } => (
                env,
                env,
                backup.clone().unwrap_or(BackupRef::Latest),
                *offsite,
            ),
            _ => return Ok(None),
        };
        let e = self.s.config.environment(env);
        ops::operation::choose_backup(&self.s.store, &e, src, &which, offsite).map(Some)
    }

    /// The image `env`'s app runs now, when the cluster says.
    pub(super) async fn current_image(&self, env: &str) -> Option<String> {
        let (c, e) = (
            self.s.clusters.get(env)?,
            self.s.config.environments.get(env)?,
        );
        let d = c.deployment(&e.deployment).await.ok()?;
        crate::cluster::rollout::current_image(&d, Some(e.container()))
    }

    /// The environments whose catalog holds `backup` (their newest when `None`).
    pub(super) fn envs_with_backup(
        &self,
        backup: Option<&crate::command::BackupRef>,
    ) -> Vec<String> {
        let which = backup.unwrap_or(&crate::command::BackupRef::Latest);
        self.s
            .config
            .environments
            .keys()
            .filter(|e| crate::catalog::find(&self.s.store, e, which).is_some())
            .cloned()
            .collect()
    }
}

/// `cmd` as its plan names it: a restore or verify of the backup chosen when it was asked.
pub(super) fn planned(cmd: &Command, chosen: Option<&ChosenBackup>) -> Command {
    let Some(b) = chosen else {
        return cmd.clone();
    };
    let mut cmd = cmd.clone();
    match &mut cmd {
        Command::Restore { backup, .. } => *backup = BackupRef::Named(b.job.clone()),
        Command::Verify { backup, .. } => *backup = Some(BackupRef::Named(b.job.clone())),
        _ => {}
    }
    cmd
}
