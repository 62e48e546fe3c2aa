//! Operations behind the commands: status, history, lock, scale, rollback, deploy, backup now and runbooks, through the cluster layer.

pub mod backup;
pub mod chart;
pub mod deploy;
pub mod engine;
pub mod offsite;
pub mod operation;
pub mod progress;
pub mod prune;
pub mod report;
pub mod restore;
pub mod rollback;
pub mod runbook;
pub mod scale;
pub mod scheduled;
mod status;
pub mod steps;
pub mod templates;
pub mod verify;

use self::status::{alerted_failures, status};
use crate::catalog;
use crate::chat::Chat;
use crate::clock::Clock;
use crate::cluster::rollout::{self, RolloutState};
use crate::cluster::{Cluster, ClusterError, Clusters};
use crate::command::{self, BackupRef, Command, Grammar, RollbackTarget, ScheduleAction};
use crate::config::{Config, EnvironmentConfig};
use crate::error::UserError;
use crate::policy::Policy;
use crate::store::{EnvLock, OpId, Store};

/// What an operation may use.
pub struct Context<'a, C: Chat> {
    pub chat: &'a C,
    pub store: &'a Store,
    pub clusters: &'a Clusters,
    pub config: &'a Config,
    pub grammar: &'a Grammar,
    pub policy: &'a Policy,
    pub user: &'a str,
    pub room_id: &'a str,
    pub thread: Option<&'a str>,
    pub op: u64,
    /// The clock to read time from.
    pub clock: Clock,
    /// The asker's Rocket.Chat roles as last looked up (empty when the policy needed none).
    pub roles: &'a [String],
    /// Where the asker may run a command (for `help`).
    pub help_for: &'a (dyn Fn(&str, &Command) -> Option<Vec<String>> + Sync),
    /// For a read-only command that names no environment: the ones the asker may see.
    pub visible: Option<&'a [String]>,
}

impl<C: Chat> Context<'_, C> {
    /// The environments a command without one covers: those the asker may see.
    pub fn envs(&self) -> Vec<String> {
        match self.visible {
            Some(v) => v.to_vec(),
            None => self.config.environments.keys().cloned().collect(),
        }
    }

    /// Where the asker may run the command the policy calls `name` (`None`: nowhere, or no such command).
    fn allowed(&self, name: &str) -> Option<Vec<String>> {
        if command::builtin::form(name).is_some_and(|f| f.open) {
            return Some(Vec::new());
        }
        command::sample(name, self.grammar).and_then(|sample| (self.help_for)(name, &sample))
    }

    fn sees(&self, env: &str) -> bool {
        self.visible.is_none_or(|v| v.iter().any(|e| e == env))
    }
}

/// A command in normal form (`deploy prod v3.1`).
pub fn describe(cmd: &Command) -> String {
    cmd.describe()
}

/// What a command will do, for the confirmation question.
pub fn plan_summary(cmd: &Command, config: &Config, store: &Store, now_ms: i64) -> String {
    plan_with(cmd, config, store, now_ms, None)
}

/// As [`plan_summary`], knowing whether the app has an autoscaler (`Some(None)`: it has none;
/// `None`: not looked up), so that a restore's plan mentions one only where it exists.
pub fn plan_with(
    cmd: &Command,
    config: &Config,
    store: &Store,
    now_ms: i64,
    autoscaler: Option<Option<String>>,
) -> String {
    let env_cfg = |e: &str| config.environment(e);
    match cmd {
        Command::Deploy {
            env,
            version,
            no_backup,
            ..
        } => {
            let e = env_cfg(env);
            let backup = e.pre_deploy_backup.unwrap_or_else(|| e.is_production(env)) && !no_backup;
            let image = if keeps_repository(&e, version) {
                format!(
                    "the tag `{version}` on the repository deployment {}/{} runs now (no `image` is configured for {env})",
                    e.namespace_or(env),
                    e.deployment
                )
            } else {
                format!(
                    "`{}` in deployment {}/{}",
                    image_for(&e, version),
                    e.namespace_or(env),
                    e.deployment
                )
            };
            format!(
                "deploy {version} to {env}: {}set {image} and follow the rollout; roll back if it fails.",
                if backup { "back up first, then " } else { "" },
            )
        }
        Command::Rollback { env, to } => {
            let e = env_cfg(env);
            let target = match to {
                None => "the previous revision".to_string(),
                Some(RollbackTarget::Revision(r)) => format!("revision {r}"),
                Some(RollbackTarget::Version(v)) => format!("the revision running {v}"),
            };
            format!(
                "roll back deployment {}/{} to {target}.",
                e.namespace_or(env),
                e.deployment
            )
        }
        Command::Scale {
            env,
            replicas,
            component,
        } => {
            let e = env_cfg(env);
            format!(
                "scale {}/{} to {replicas} replicas.",
                e.namespace_or(env),
                component.as_deref().unwrap_or(&e.deployment)
            )
        }
        Command::Restore {
            env,
            backup,
            from,
            no_safety_backup,
            offsite,
        } => {
            let e = env_cfg(env);
            let src = from.as_deref().unwrap_or(env);
            let which = match catalog::find(store, src, backup) {
                Some(b) => format!(
                    "{}'s backup `{}` ({}, {}, {})",
                    src,
                    b.name,
                    catalog::size(b.bytes),
                    catalog::ago(b.finished_ms, now_ms),
                    match b.verified {
                        Some(true) => "verified ✓",
                        Some(false) => "verify failed ✗",
                        None => "never verified",
                    }
                ),
                None => format!(
                    "{src}'s backup `{}` (not in the catalog)",
                    match backup {
                        BackupRef::Latest => "latest",
                        BackupRef::Named(n) => n,
                    }
                ),
            };
            let (removed, restored) = match &autoscaler {
                Some(Some(name)) => (
                    format!(" (autoscaler {name} removed)"),
                    format!(", restore autoscaler {name}"),
                ),
                Some(None) => (String::new(), String::new()),
                None => (
                    " (its autoscaler, if any, removed)".to_string(),
                    ", restore the autoscaler".to_string(),
                ),
            };
            let fetch = match (offsite, &e.backup.offsite) {
                (true, Some(o)) => format!(
                    "fetch it from {} onto {}; ",
                    o.url(src, ""),
                    e.backup.claim_or(&e)
                ),
                _ => String::new(),
            };
            format!(
                "restore {which} into {env}, replacing its data: {}{fetch}scale {}/{} to 0{removed}, run the restore job, scale back{restored}{}.",
                if *no_safety_backup {
                    "no safety backup; "
                } else {
                    "safety backup of the current data; "
                },
                e.namespace_or(env),
                e.deployment,
                if e.smoke.is_some() {
                    ", smoke test"
                } else {
                    ""
                }
            )
        }
        Command::BackupNow { env } => {
            let envs: Vec<String> = match env {
                Some(e) => vec![e.clone()],
                None => config.environments.keys().cloned().collect(),
            };
            let each: Vec<String> = envs
                .iter()
                .map(|e| {
                    let c = env_cfg(e);
                    format!("{e} (onto {})", c.backup.claim_or(&c))
                })
                .collect();
            format!(
                "back up {}: one operation each, from its backup CronJob; the app keeps running.",
                each.join(", ")
            )
        }
        Command::Verify {
            env,
            backup,
            offsite,
        } => {
            let which = backup.clone().unwrap_or(BackupRef::Latest);
            let envs: Vec<String> = match env {
                Some(e) => vec![e.clone()],
                None => config.environments.keys().cloned().collect(),
            };
            let each: Vec<String> = envs
                .iter()
                .filter_map(|e| {
                    catalog::find(store, e, &which).map(|b| {
                        format!(
                            "{e}'s `{}` ({}, {})",
                            b.name,
                            catalog::size(b.bytes),
                            catalog::ago(b.finished_ms, now_ms)
                        )
                    })
                })
                .collect();
            format!(
                "test-restore {}{} into a throwaway database each; the live data is not touched.",
                each.join(", "),
                if *offsite {
                    ", fetched from the off-site copy"
                } else {
                    ""
                }
            )
        }
        Command::Lock { env, reason } => format!(
            "lock {env}{}: changes to it are refused until `unlock {env}`; still allowed: {}, and every read-only command.",
            reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            env_cfg(env).policy.allow_when_locked.join(", ")
        ),
        other => format!("`{}`.", describe(other)),
    }
}

/// How a requester is named in chat: `@alice`, or `the schedule` for scheduled runs.
pub fn who(user: &str) -> String {
    if user == crate::schedule::SYSTEM_USER {
        "schedule".into()
    } else {
        format!("@{user}")
    }
}

/// The image a deploy of `version` sets: `version` itself when it names a repository, else the
/// configured repository with `version` as its tag. Without a configured repository it is the
/// bare tag, which the deploy puts on the repository the Deployment runs now ([`with_tag`]):
/// a version is never an image by itself.
pub(crate) fn image_for(e: &EnvironmentConfig, version: &str) -> String {
    if version.contains('/') {
        return version.to_string();
    }
    match &e.image {
        Some(repo) => format!("{repo}:{version}"),
        None => version.to_string(),
    }
}

/// Whether a deploy of `version` keeps the Deployment's repository and changes only the tag.
pub(crate) fn keeps_repository(e: &EnvironmentConfig, version: &str) -> bool {
    e.image.is_none() && !version.contains('/')
}

/// Pure: `image` (`registry:5000/team/app:1.2@sha256:…`) with its tag and digest replaced by
/// `tag`; `None` when there is no repository in it.
pub fn with_tag(image: &str, tag: &str) -> Option<String> {
    let no_digest = image.split('@').next().unwrap_or_default();
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match no_digest[last_slash..].rfind(':') {
        Some(colon) => &no_digest[..last_slash + colon],
        None => no_digest,
    };
    (!repo.trim().is_empty()).then(|| format!("{repo}:{tag}"))
}

fn cluster_err(env: &str, e: ClusterError) -> UserError {
    tracing::warn!(%env, error = %e, "cluster action failed");
    UserError::Cluster {
        env: env.to_string(),
        message: e.to_string(),
        retryable: e.is_retryable(),
    }
}

fn cluster<'a, C: Chat>(
    ctx: &'a Context<'a, C>,
    env: &str,
) -> Result<(&'a Cluster, EnvironmentConfig), UserError> {
    let c = ctx.clusters.get(env).ok_or_else(|| UserError::NoCluster {
        env: env.to_string(),
    })?;
    Ok((c, ctx.config.environment(env)))
}

/// Runs an authorized (and confirmed/approved) command; `Ok(None)` when it already answered itself.
pub async fn execute<C: Chat>(
    cmd: &Command,
    ctx: &Context<'_, C>,
) -> Result<Option<String>, UserError> {
    match cmd {
        Command::Query { query, arg } => Ok(Some((query.answer)(
            arg.as_deref(),
            &command::builtin::Asker {
                username: ctx.user,
                roles: ctx.roles,
                bot_name: &ctx.chat.bot_username(),
                grammar: ctx.grammar,
                allowed: &|name| ctx.allowed(name),
            },
        ))),
        Command::Lock { env, reason } => {
            let lock = EnvLock {
                by: ctx.user.to_string(),
                reason: reason.clone(),
                at_ms: ctx.clock.now_ms(),
            };
            match ctx
                .store
                .lock_env(env, &lock)
                .map_err(|_| UserError::Internal)?
            {
                Ok(()) => Ok(Some(format!(
                    "🔒 {env} is locked by @{}{}. Changes are refused until `unlock {env}`.",
                    ctx.user,
                    reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ))),
                Err(held) => Err(UserError::AlreadyLocked {
                    env: env.clone(),
                    by: held.by,
                    reason: held.reason,
                }),
            }
        }
        Command::Unlock { env } => {
            match ctx.store.unlock_env(env).map_err(|_| UserError::Internal)? {
                Some(l) => Ok(Some(format!(
                    "🔓 {env} is unlocked (it was locked by @{}).",
                    l.by
                ))),
                None => Err(UserError::NotLocked { env: env.clone() }),
            }
        }
        Command::Status { env } => Ok(Some(status(ctx, env.as_deref()).await)),
        Command::AlertsList => {
            let mut open = crate::alerts::open_incidents(ctx.store);
            open.retain(|i| ctx.sees(&i.key.env));
            let now = ctx.clock.now_ms();
            let failed = alerted_failures(ctx, now);
            if open.is_empty() {
                return Ok(Some(format!("No open incidents.{failed}")));
            }
            let mut out = format!("*{} open incidents*\n", open.len());
            for i in open {
                let mins = (now - i.first_ms) / 60_000;
                let times = if i.count > 1 {
                    format!(" ×{}", i.count)
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "• *{}* {} {}{times} — {} ({mins} min)\n",
                    i.key.env, i.key.object, i.key.reason, i.detail
                ));
            }
            Ok(Some(format!("{}{failed}", out.trim_end())))
        }
        Command::AlertsMute { env, secs, reason } => {
            let m = crate::alerts::mute(
                ctx.store,
                env,
                std::time::Duration::from_secs(*secs),
                ctx.user,
                reason.clone(),
                ctx.clock.now_ms(),
            )
            .map_err(|_| UserError::Internal)?;
            let until = chrono::DateTime::from_timestamp_millis(m.until_ms).unwrap_or_default();
            Ok(Some(format!(
                "🔕 Alerts for {env} are muted until {} UTC by @{}{}. They are kept and posted when the mute ends.",
                until.format("%Y-%m-%d %H:%M"),
                ctx.user,
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )))
        }
        Command::History { env } => {
            let (c, e) = cluster(ctx, env)?;
            let h = c
                .history(&e.deployment)
                .await
                .map_err(|err| cluster_err(env, err))?;
            let mut out = format!("*{env}* {} revisions (newest last):\n", e.deployment);
            for r in h {
                let version = r
                    .images
                    .first()
                    .map(|i| crate::cluster::split_image(i).1.to_string())
                    .unwrap_or_default();
                let cause = r.change_cause.unwrap_or_else(|| "(no change cause)".into());
                // Revisions the bot made name their operation (`(#12)`): add when and how it ended.
                let op = cause
                    .rsplit_once("(#")
                    .and_then(|(_, rest)| rest.trim_end_matches(')').parse::<OpId>().ok())
                    .and_then(|id| ctx.store.get_op(id).ok().flatten());
                let when = op
                    .map(|o| {
                        let at = chrono::DateTime::from_timestamp_millis(o.started_ms)
                            .unwrap_or_default();
                        format!(
                            " · {} UTC · {}",
                            at.format("%Y-%m-%d %H:%M"),
                            o.state.describe()
                        )
                    })
                    .unwrap_or_default();
                out.push_str(&format!("`{}` {version} — {cause}{when}\n", r.number));
            }
            Ok(Some(out.trim_end().to_string()))
        }
        Command::Scale { .. }
        | Command::Rollback { .. }
        | Command::Deploy { .. }
        | Command::BackupNow { .. }
        | Command::BackupPrune { .. }
        | Command::Restore { .. }
        | Command::Verify { .. }
        | Command::Runbook { .. } => {
            // These run as journaled operations (`engine`).
            Err(UserError::Internal)
        }
        Command::BackupReport { env } => {
            let envs: Vec<String> = match env {
                Some(e) => vec![e.clone()],
                None => ctx.envs(),
            };
            for env in envs {
                let r = report::for_env(ctx.store, &env, ctx.clock.now_ms());
                if ctx
                    .chat
                    .post_attachments(ctx.room_id, &r.text, &r.attachments)
                    .await
                    .is_err()
                {
                    crate::chat::log_failure(
                        "the report as text",
                        ctx.chat
                            .post(ctx.room_id, ctx.thread, &report::plain(&r))
                            .await,
                    );
                }
            }
            Ok(None)
        }
        Command::BackupList { env } => Ok(Some(catalog::render_list(
            &catalog::list(ctx.store, env.as_deref())
                .into_iter()
                .filter(|b| ctx.sees(&b.env))
                .collect::<Vec<_>>(),
            env.as_deref(),
            ctx.clock.now_ms(),
        ))),
        Command::Schedule {
            action: ScheduleAction::List,
        } => Ok(Some(crate::schedule::render_list(
            ctx.store,
            ctx.config,
            ctx.clock.now(),
        ))),
        Command::Schedule {
            action: ScheduleAction::Pause { env, kind } | ScheduleAction::Resume { env, kind },
        } => {
            let pause = matches!(
                cmd,
                Command::Schedule {
                    action: ScheduleAction::Pause { .. }
                }
            );
            let n = crate::schedule::set_paused(
                ctx.store,
                ctx.config,
                env.as_deref(),
                *kind,
                pause.then_some(ctx.user),
            );
            let what = format!(
                "{}schedule{}{}",
                kind.as_ref().map(|k| format!("{k} ")).unwrap_or_default(),
                if n == 1 { "" } else { "s" },
                env.as_ref().map(|e| format!(" of {e}")).unwrap_or_default()
            );
            Ok(Some(match (pause, n) {
                (true, 0) => format!("No running {what} to pause (`schedule list` shows them)."),
                (false, 0) => format!("No paused {what} to resume."),
                (true, n) => {
                    format!("⏸ Paused {n} {what}; their runs are skipped until `schedule resume`.")
                }
                (false, n) => {
                    format!("▶️ Resumed {n} {what}; the next runs are in `schedule list`.")
                }
            }))
        }
    }
}

pub(crate) fn failing(pod: Option<String>, reason: Option<String>) -> String {
    match (pod, reason) {
        (Some(p), Some(r)) => format!(" (pod {p}: {r})"),
        (None, Some(r)) => format!(" ({r})"),
        _ => String::new(),
    }
}

pub(crate) fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let last: Vec<&String> = lines
        .iter()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "\n```\n{}\n```",
        last.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

pub(crate) fn backup_summary(message: &str) -> String {
    let Some(r) = crate::cluster::jobs::JobReport::parse(message) else {
        return if message.is_empty() {
            String::new()
        } else {
            format!("Result: `{message}`")
        };
    };
    let mb = catalog::size(r.bytes);
    let sha = r
        .sha256
        .map(|s| s.chars().take(12).collect::<String>())
        .unwrap_or_default();
    format!(
        "Backup `{}`, {mb}, sha256 {sha}…",
        r.name.as_deref().unwrap_or("?")
    )
}

#[cfg(test)]
mod image_tests {
    use super::with_tag;

    #[test]
    fn a_new_tag_keeps_the_repository_and_drops_the_old_tag_and_digest() {
        let t = |i: &str| with_tag(i, "7.1.0");
        assert_eq!(
            t("rocketchat/rocket.chat:6.5.0").unwrap(),
            "rocketchat/rocket.chat:7.1.0"
        );
        assert_eq!(
            t("registry:5000/team/app:1.2").unwrap(),
            "registry:5000/team/app:7.1.0"
        );
        assert_eq!(
            t("registry:5000/team/app").unwrap(),
            "registry:5000/team/app:7.1.0"
        );
        assert_eq!(t("app@sha256:abcd").unwrap(), "app:7.1.0");
        assert_eq!(
            t("quay.io/org/app:2.0@sha256:ff").unwrap(),
            "quay.io/org/app:7.1.0"
        );
        assert_eq!(t(""), None);
        assert_eq!(t(":1.0"), None);
    }
}
