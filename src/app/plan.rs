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
        let visible = match (cmd.is_mutating(), cmd.env()) {
            (false, None) => Some(self.visible_envs(origin, &cmd).await),
            _ => None,
        };
        let (mut cmd, mut confirm, mut plan) = (cmd, confirm, None);
        if let Command::Rollback { env, to: None } = &cmd {
            // "rollback" means "back to the last good version": fix the target now, so that the
            // confirmation names it and the journal holds it.
            let env = env.clone();
            let choice = match (
                self.s.clusters.get(&env),
                self.s.config.environments.get(&env),
            ) {
                (Some(c), Some(e)) => ops::rollback::resolve(c, &self.s.store, e)
                    .await
                    .map(|choice| (choice.describe(&env, e), choice)),
                _ => Err(format!("{env} has no cluster configured")),
            };
            match choice {
                Ok((text, choice)) => {
                    confirm |= choice.needs_confirmation();
                    plan = Some(text);
                    cmd = Command::Rollback {
                        env,
                        to: Some(command::RollbackTarget::Revision(choice.target)),
                    };
                }
                Err(why) => {
                    let e = UserError::CannotRollBack {
                        env: env.clone(),
                        why: why.to_string(),
                    };
                    {
                        self.refuse(origin, body, Some(&cmd), e).await;
                        return None;
                    }
                }
            }
        }
        if let Command::Scale {
            env,
            replicas,
            component,
        } = &cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
        {
            // Checked before anyone is asked to confirm or approve: an autoscaler would undo it.
            let (kind, name) = match component.as_deref() {
                Some(n) if n == e.database => (crate::cluster::Workload::StatefulSet, n),
                _ => (crate::cluster::Workload::Deployment, e.deployment.as_str()),
            };
            if let Ok(Some(why)) = c.scale_refusal(kind, name, *replicas as i32).await {
                let e = UserError::WouldBeUndone {
                    env: env.clone(),
                    workload: name.to_string(),
                    replicas: *replicas,
                    why: why.to_string(),
                };
                {
                    self.refuse(origin, body, Some(&cmd), e).await;
                    return None;
                }
            }
        }
        if let Command::Verify {
            env: None, backup, ..
        } = &cmd
            && self.envs_with_backup(backup.as_ref()).is_empty()
        {
            // Checked before anyone is asked to confirm: there is nothing to test.
            let e = UserError::NothingToVerify;
            {
                self.refuse(origin, body, Some(&cmd), e).await;
                return None;
            }
        }
        let offsite_ask = match &cmd {
            Command::Restore {
                env,
                backup,
                offsite: true,
                ..
            } => Some((env.clone(), backup.clone())),
            Command::Verify {
                env: Some(env),
                backup,
                offsite: true,
            } => Some((env.clone(), backup.clone().unwrap_or(BackupRef::Latest))),
            _ => None,
        };
        if let Some((env, which)) = offsite_ask
            && let Some(e) = self.s.config.environments.get(&env)
            && let Err(e) = ops::operation::offsite_backup(&self.s.store, e, &env, &which)
        {
            // Checked before anyone is asked to confirm: there is no copy to fetch.
            {
                self.refuse(origin, body, Some(&cmd), e).await;
                return None;
            }
        }
        // The backup a restore or verify runs is decided now, named in the plan, and carried
        // through confirmation and approval: a newer one appearing meanwhile changes nothing.
        let backup = match self.choose_backup(&cmd) {
            Ok(b) => b,
            // Refused before anyone is asked to confirm: there is nothing to restore.
            Err(e) => {
                self.refuse(origin, body, Some(&cmd), e).await;
                return None;
            }
        };
        let plan_cmd = planned(&cmd, backup.as_ref());
        if let Command::Restore { env, .. } = &cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
        {
            // The plan names the autoscaler only when the app has one.
            if let Ok(hpa) = c
                .hpa_for(crate::cluster::Workload::Deployment, &e.deployment)
                .await
            {
                let name = hpa.map(|h| h.metadata.name.unwrap_or_default());
                plan = Some(ops::plan_with(
                    &plan_cmd,
                    &self.s.config,
                    &self.s.store,
                    self.s.clock.now_ms(),
                    Some(name),
                ));
            }
        }
        if plan.is_none() && backup.is_some() {
            plan = Some(ops::plan_summary(
                &plan_cmd,
                &self.s.config,
                &self.s.store,
                self.s.clock.now_ms(),
            ));
        }
        let image_then = match &cmd {
            Command::Deploy { env, .. } | Command::Rollback { env, .. } => {
                self.current_image(env).await
            }
            _ => None,
        };
        // A number names an operation (it is journaled and shown in `history`) or a request that
        // waits for someone (`cancel #N`, `approve #N`). A lock, an unlock, a mute or a fan-out
        // that starts at once takes none, so the numbers people see in history do not jump.
        let numbered = ops::operation::is_operation(&cmd) || confirm || approvals > 0;
        let op = if cmd.is_mutating() && numbered {
            match self.s.store.next_op_id() {
                Ok(op) => op.get(),
                Err(e) => {
                    // Never a shared number 0: without the journal nothing changing may start.
                    tracing::error!(error = %e, "cannot number an operation");
                    {
                        self.refuse(origin, body, Some(&cmd), UserError::Internal)
                            .await;
                        return None;
                    }
                }
            }
        } else {
            0
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
        Some((held, confirm))
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
        let e = self
            .s
            .config
            .environments
            .get(env)
            .cloned()
            .unwrap_or_else(|| crate::config::EnvironmentConfig::named(env));
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
