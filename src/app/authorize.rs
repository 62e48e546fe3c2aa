//! Authorize: whether the asker may run a command there and now (policy, roles with their cache, environment locks).

use super::{Bot, Origin, describe};
use crate::chat::Chat;
use crate::command::Command;
use crate::error::UserError;
use crate::policy::{Decision, Requester, lock};

impl<C: Chat> Bot<C> {
    /// A command, authorized, made ready (see `plan`), then confirmed, approved and run.
    pub(super) async fn authorize_and_run(&self, origin: &Origin<'_>, body: &str, cmd: Command) {
        let (confirm, approvals) = match self.authorize(origin, &cmd).await {
            Ok(asks) => asks,
            Err(e) => return self.refuse(origin, body, Some(&cmd), e).await,
        };
        let Some((held, confirm)) = self.prepare(origin, body, cmd, confirm, approvals).await
        else {
            return;
        };
        if confirm {
            self.ask_confirmation(origin, body, held).await;
        } else {
            self.after_confirmation(origin, held).await;
        }
    }

    /// Whether `cmd` must be confirmed, and how many approvals it needs, when the asker may run it.
    pub(super) async fn authorize(
        &self,
        origin: &Origin<'_>,
        cmd: &Command,
    ) -> Result<(bool, u32), UserError> {
        let (confirm, approvals) = match self.decide(origin, cmd).await? {
            Decision::Deny { reason } => {
                return Err(UserError::NotAllowed {
                    action: describe(cmd),
                    reason,
                });
            }
            Decision::Allow { confirm, approvals } => (confirm, approvals),
        };
        if let Some(refusal) = self.locked(cmd) {
            return Err(refusal);
        }
        Ok((confirm, approvals))
    }

    /// `username`'s roles, from the role cache while they are fresh, else from the chat server.
    pub(super) async fn requester_roles(&self, username: &str) -> Result<Vec<String>, UserError> {
        let ttl = self.s.config.policy.role_cache_ttl;
        if let Some(r) = lock(&self.s.roles, "role cache").get(username, ttl) {
            return Ok(r);
        }
        match self.s.chat.user_roles(username).await {
            Ok(roles) => {
                lock(&self.s.roles, "role cache").put(username, roles.clone());
                Ok(roles)
            }
            Err(e) => {
                tracing::error!(error = %e, user = username, "cannot look up roles");
                Err(UserError::RolesUnavailable { why: e.to_string() })
            }
        }
    }

    /// `username`'s roles when the policy needs them to judge `cmd`, else none.
    pub(super) async fn roles_for(
        &self,
        username: &str,
        cmd: &Command,
    ) -> Result<Vec<String>, UserError> {
        if self.s.policy.needs_roles(cmd) {
            self.requester_roles(username).await
        } else {
            Ok(Vec::new())
        }
    }

    /// What the policy decides about the sender of `origin` running `cmd` where they ask.
    pub(super) async fn decide(
        &self,
        origin: &Origin<'_>,
        cmd: &Command,
    ) -> Result<Decision, UserError> {
        let roles = self.roles_for(&origin.msg.username, cmd).await?;
        let room = origin.room();
        Ok(self.s.policy.authorize(
            cmd,
            &Requester {
                username: &origin.msg.username,
                roles: &roles,
                room,
            },
        ))
    }

    /// The environments the asker may see with `cmd` (roles as `decide` found them).
    pub(super) async fn visible_envs(&self, origin: &Origin<'_>, cmd: &Command) -> Vec<String> {
        let roles = self
            .roles_for(&origin.msg.username, cmd)
            .await
            .unwrap_or_default();
        let room = origin.room();
        self.s.policy.visible_envs(
            cmd,
            &Requester {
                username: &origin.msg.username,
                roles: &roles,
                room,
            },
        )
    }

    /// A refusal if the command's environment is locked against it.
    pub(super) fn locked(&self, cmd: &Command) -> Option<UserError> {
        for env in self.lockable_envs(cmd) {
            if let Ok(Some(l)) = self.s.store.env_lock(&env) {
                return Some(UserError::Locked {
                    env: env.clone(),
                    by: l.by,
                    ago: ago(l.at_ms, self.s.clock.now_ms()),
                    reason: l.reason,
                });
            }
        }
        None
    }

    /// The environments whose lock stops `cmd`: none for a read, a lock or an unlock, nor
    /// where the policy lets it run while locked.
    pub(super) fn lockable_envs(&self, cmd: &Command) -> Vec<String> {
        if !cmd.is_mutating() || matches!(cmd, Command::Lock { .. } | Command::Unlock { .. }) {
            return Vec::new();
        }
        let envs: Vec<String> = match cmd.env() {
            Some(e) => vec![e.to_string()],
            None => self.s.config.environments.keys().cloned().collect(),
        };
        envs.into_iter()
            .filter(|env| !self.s.policy.allowed_when_locked(env, cmd.policy_name()))
            .collect()
    }
}

pub(super) fn ago(at_ms: i64, now_ms: i64) -> String {
    crate::clock::ago(at_ms, now_ms)
}
