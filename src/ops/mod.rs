//! Operations behind the commands: status, history, lock, scale, rollback, deploy, backup now and runbooks, through the cluster layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::chat::{Chat, MessageRef};
use crate::cluster::jobs::JobEnd;
use crate::cluster::rollout::{self, RolloutState};
use crate::cluster::{Cluster, ClusterError, Clusters, HpaPolicy, RolloutOutcome, Workload};
use crate::command::{self, BackupRef, Command, Grammar, RollbackTarget, ScheduleAction};
use crate::config::{Config, EnvironmentConfig};
use crate::error::UserError;
use crate::policy::Policy;
use crate::store::{EnvLock, Store};

/// How long a rollout may take before the bot stops waiting (the Deployment's own deadline usually ends it first).
const ROLLOUT_LIMIT: Duration = Duration::from_secs(20 * 60);
const JOB_LIMIT: Duration = Duration::from_secs(60 * 60);

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
    /// Operations in progress (one per environment).
    pub running: &'a Running,
    /// Where the asker may run a command (for `help`).
    pub help_for: &'a (dyn Fn(&str, &Command) -> Option<Vec<String>> + Sync),
}

/// Operations in progress, one per environment: (op, user, command, started ms).
#[derive(Debug, Default)]
pub struct Running {
    by_env: Mutex<HashMap<String, (u64, String, String, i64)>>,
}

impl Running {
    /// Claims `env` for operation `op`; the refusal names who holds it.
    fn claim<'a>(
        &'a self,
        env: &str,
        op: u64,
        user: &str,
        what: &str,
    ) -> Result<Busy<'a>, UserError> {
        let mut map = self.by_env.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((other, by, cmd, at)) = map.get(env) {
            let mins = ((crate::app::now_ms() - at) / 60_000).max(0);
            return Err(UserError::Refused(format!(
                "{env} is busy with {cmd} #{other} (started by @{by} {mins} min ago)."
            )));
        }
        map.insert(
            env.to_string(),
            (op, user.to_string(), what.to_string(), crate::app::now_ms()),
        );
        Ok(Busy {
            running: self,
            env: env.to_string(),
        })
    }

    fn get(&self, env: &str) -> Option<(u64, String, String, i64)> {
        self.by_env.lock().ok().and_then(|m| m.get(env).cloned())
    }
}

struct Busy<'a> {
    running: &'a Running,
    env: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.running
            .by_env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.env);
    }
}

/// A command in normal form (`deploy prod v3.1`).
pub fn describe(cmd: &Command) -> String {
    match cmd {
        Command::Deploy {
            env,
            version,
            no_backup,
        } => format!(
            "deploy {env} {version}{}",
            if *no_backup { " --no-backup" } else { "" }
        ),
        Command::Rollback { env, to: None } => format!("rollback {env}"),
        Command::Rollback {
            env,
            to: Some(RollbackTarget::Revision(r)),
        } => format!("rollback {env} {r}"),
        Command::Rollback {
            env,
            to: Some(RollbackTarget::Version(v)),
        } => format!("rollback {env} {v}"),
        Command::Scale {
            env,
            replicas,
            component,
        } => format!(
            "scale {env} {replicas}{}",
            component
                .as_ref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default()
        ),
        Command::BackupNow { env } => format!(
            "backup now{}",
            env.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
        ),
        Command::BackupList { env } => format!(
            "backup list{}",
            env.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
        ),
        Command::Restore {
            env,
            backup,
            from,
            no_safety_backup,
        } => format!(
            "restore {env} {}{}{}",
            match backup {
                BackupRef::Latest => "latest".to_string(),
                BackupRef::Named(n) => n.clone(),
            },
            from.as_ref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default(),
            if *no_safety_backup {
                " --no-safety-backup"
            } else {
                ""
            }
        ),
        Command::Verify { env, backup } => format!(
            "verify{}{}",
            env.as_ref().map(|e| format!(" {e}")).unwrap_or_default(),
            match backup {
                Some(BackupRef::Latest) => " latest".to_string(),
                Some(BackupRef::Named(n)) => format!(" {n}"),
                None => String::new(),
            }
        ),
        Command::Status { env } => format!(
            "status{}",
            env.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
        ),
        Command::History { env } => format!("history {env}"),
        Command::Lock { env, reason } => format!(
            "lock {env}{}",
            reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
        ),
        Command::Unlock { env } => format!("unlock {env}"),
        Command::Cancel { op } => format!("cancel #{op}"),
        Command::Approve { op } => format!("approve #{op}"),
        Command::Confirm { .. } => "confirm".into(),
        Command::Schedule { action } => match action {
            ScheduleAction::List => "schedule list".into(),
            ScheduleAction::Pause { env } => format!(
                "schedule pause{}",
                env.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
            ),
            ScheduleAction::Resume { env } => format!(
                "schedule resume{}",
                env.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
            ),
        },
        Command::Help { topic } => format!(
            "help{}",
            topic.as_ref().map(|t| format!(" {t}")).unwrap_or_default()
        ),
        Command::Ping { .. } => "ping".into(),
        Command::Runbook { name, env, params } => {
            format!(
                "{name} {env}{}",
                params
                    .iter()
                    .map(|(k, v)| format!(" {k}={v}"))
                    .collect::<String>()
            )
        }
    }
}

/// What a command will do, for the confirmation question.
pub fn plan_summary(cmd: &Command, config: &Config) -> String {
    let env_cfg = |e: &str| {
        config
            .environments
            .get(e)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(e))
    };
    match cmd {
        Command::Deploy { env, version, .. } => {
            let e = env_cfg(env);
            format!(
                "deploy {version} to {env}: set `{}` in deployment {}/{} and follow the rollout; roll back if it fails.",
                image_for(&e, version),
                e.namespace_or(env),
                e.deployment
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
        other => format!("`{}`.", describe(other)),
    }
}

fn image_for(e: &EnvironmentConfig, version: &str) -> String {
    if version.contains('/') {
        return version.to_string();
    }
    match &e.image {
        Some(repo) => format!("{repo}:{version}"),
        None => version.to_string(),
    }
}

fn cluster_err(env: &str, e: ClusterError) -> UserError {
    tracing::warn!(%env, error = %e, "cluster action failed");
    UserError::Refused(format!("{env}: {e}"))
}

fn cluster<'a, C: Chat>(
    ctx: &'a Context<'a, C>,
    env: &str,
) -> Result<(&'a Cluster, EnvironmentConfig), UserError> {
    let c = ctx.clusters.get(env).ok_or_else(|| {
        UserError::Refused(format!("{env} has no cluster connection configured."))
    })?;
    Ok((
        c,
        ctx.config
            .environments
            .get(env)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(env)),
    ))
}

/// Runs an authorized (and confirmed/approved) command; `Ok(None)` when it already answered itself.
pub async fn execute<C: Chat>(
    cmd: &Command,
    ctx: &Context<'_, C>,
) -> Result<Option<String>, UserError> {
    match cmd {
        Command::Ping { echo: None } => Ok(Some("pong".into())),
        Command::Ping { echo: Some(t) } => Ok(Some(format!("pong {t}"))),
        Command::Help { topic } => Ok(Some(command::help_text(
            topic.as_deref(),
            ctx.grammar,
            &ctx.chat.bot_username(),
            &|name| {
                let sample = sample_command(name, ctx.grammar);
                (ctx.help_for)(name, &sample)
            },
        ))),
        Command::Lock { env, reason } => {
            let lock = EnvLock {
                by: ctx.user.to_string(),
                reason: reason.clone(),
                at_ms: crate::app::now_ms(),
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
                Err(held) => Err(UserError::Refused(format!(
                    "{env} is already locked by @{}{}.",
                    held.by,
                    held.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ))),
            }
        }
        Command::Unlock { env } => {
            match ctx.store.unlock_env(env).map_err(|_| UserError::Internal)? {
                Some(l) => Ok(Some(format!(
                    "🔓 {env} is unlocked (it was locked by @{}).",
                    l.by
                ))),
                None => Err(UserError::Refused(format!("{env} is not locked."))),
            }
        }
        Command::Status { env } => Ok(Some(status(ctx, env.as_deref()).await)),
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
                    .map(|i| crate::sandbox::kube::split_image(i).1.to_string())
                    .unwrap_or_default();
                out.push_str(&format!(
                    "`{}` {version} — {}\n",
                    r.number,
                    r.change_cause.unwrap_or_else(|| "(no change cause)".into())
                ));
            }
            Ok(Some(out.trim_end().to_string()))
        }
        Command::Scale {
            env,
            replicas,
            component,
        } => {
            let (c, e) = cluster(ctx, env)?;
            let _busy = ctx.running.claim(env, ctx.op, ctx.user, "scale")?;
            let (kind, name) = match component.as_deref() {
                Some(n) if n == e.database => (Workload::StatefulSet, n.to_string()),
                _ => (Workload::Deployment, e.deployment.clone()),
            };
            let out = c
                .scale(kind, &name, *replicas as i32, HpaPolicy::Respect)
                .await
                .map_err(|err| cluster_err(env, err))?;
            let hpa = out
                .hpa
                .map(|h| {
                    format!(
                        " (autoscaler {} keeps it between {} and {})",
                        h.name, h.after.0, h.after.1
                    )
                })
                .unwrap_or_default();
            Ok(Some(format!(
                "#{} {env}: {name} scaled from {} to {} replicas{hpa}.",
                ctx.op, out.from, out.to
            )))
        }
        Command::Rollback { env, to } => {
            let (c, e) = cluster(ctx, env)?;
            let _busy = ctx.running.claim(env, ctx.op, ctx.user, "rollback")?;
            let revision = match to {
                None => None,
                Some(RollbackTarget::Revision(r)) => Some(*r),
                Some(RollbackTarget::Version(v)) => {
                    let h = c
                        .history(&e.deployment)
                        .await
                        .map_err(|err| cluster_err(env, err))?;
                    let wanted = image_for(&e, v);
                    let found = h.iter().rev().find(|r| {
                        r.images
                            .iter()
                            .any(|i| *i == wanted || i.ends_with(&format!(":{v}")))
                    });
                    Some(found.map(|r| r.number).ok_or_else(|| {
                        UserError::Refused(format!(
                            "No revision of {env} ran {v}; see `history {env}`."
                        ))
                    })?)
                }
            };
            let progress = ctx
                .chat
                .post(
                    ctx.room_id,
                    ctx.thread,
                    &format!("#{} rollback {env}: starting…", ctx.op),
                )
                .await
                .ok();
            let rev = c
                .undo(&e.deployment, revision)
                .await
                .map_err(|err| cluster_err(env, err))?;
            let outcome = follow(
                ctx,
                c,
                &e.deployment,
                progress.as_ref(),
                &format!("#{} rollback {env} to revision {rev}", ctx.op),
            )
            .await?;
            finish(
                ctx,
                progress,
                match outcome {
                    RolloutOutcome::Complete { .. } => {
                        format!("✅ #{} {env} rolled back to revision {rev}.", ctx.op)
                    }
                    RolloutOutcome::Failed {
                        message,
                        pod,
                        reason,
                    } => format!(
                        "❌ #{} rollback of {env} did not complete: {message}{}",
                        ctx.op,
                        failing(pod, reason)
                    ),
                },
            )
            .await
        }
        Command::Deploy { env, version, .. } => deploy(ctx, env, version).await,
        Command::BackupNow { env } => {
            let envs: Vec<String> = match env {
                Some(e) => vec![e.clone()],
                None => ctx.config.environments.keys().cloned().collect(),
            };
            let mut lines = Vec::new();
            for env in envs {
                let (c, e) = cluster(ctx, &env)?;
                let _busy = ctx.running.claim(&env, ctx.op, ctx.user, "backup")?;
                let name = crate::cluster::jobs::job_name(
                    &format!("{}-manual", e.backup_cronjob),
                    &format!("{}-{}", ctx.op, chrono::Utc::now().format("%H%M%S")),
                );
                c.job_from_cronjob(&e.backup_cronjob, &name)
                    .await
                    .map_err(|err| cluster_err(&env, err))?;
                let r = c
                    .wait_job(&name, JOB_LIMIT)
                    .await
                    .map_err(|err| cluster_err(&env, err))?;
                lines.push(match r.end {
                    JobEnd::Complete => format!(
                        "✅ {env}: backup job {name} finished. {}",
                        backup_summary(&r.message)
                    ),
                    JobEnd::Failed { reason, .. } => format!(
                        "❌ {env}: backup job {name} failed ({reason}).{}",
                        tail(&r.log_tail)
                    ),
                });
            }
            Ok(Some(format!("#{} {}", ctx.op, lines.join("\n"))))
        }
        Command::Runbook { name, env, params } => {
            let (c, e) = cluster(ctx, env)?;
            let spec = ctx
                .grammar
                .runbooks
                .iter()
                .find(|r| &r.name == name)
                .ok_or(UserError::Internal)?;
            let _busy = ctx.running.claim(env, ctx.op, ctx.user, name)?;
            let mut values: BTreeMap<String, String> = params.clone();
            values.insert("env".into(), env.clone());
            values.insert("namespace".into(), e.namespace_or(env).to_string());
            values.insert("image".into(), e.image.clone().unwrap_or_default());
            values.insert("op".into(), ctx.op.to_string());
            let mut job = crate::cluster::jobs::render_job_template(name, &spec.job, &values)
                .map_err(|err| UserError::Refused(err.to_string()))?;
            if let Some(n) = job.metadata.name.take() {
                job.metadata.name = Some(crate::cluster::jobs::job_name(&n, &ctx.op.to_string()));
            } else if job.metadata.generate_name.is_none() {
                job.metadata.name = Some(crate::cluster::jobs::job_name(name, &ctx.op.to_string()));
            }
            let created = c
                .create_job(&job)
                .await
                .map_err(|err| cluster_err(env, err))?;
            let job_name = created.metadata.name.unwrap_or_default();
            let r = c
                .wait_job(&job_name, JOB_LIMIT)
                .await
                .map_err(|err| cluster_err(env, err))?;
            Ok(Some(match r.end {
                JobEnd::Complete => format!(
                    "✅ #{} {name} {env}: job {job_name} finished.{}",
                    ctx.op,
                    if r.message.is_empty() {
                        String::new()
                    } else {
                        format!(" Result: `{}`", r.message)
                    }
                ),
                JobEnd::Failed { reason, .. } => format!(
                    "❌ #{} {name} {env}: job {job_name} failed ({reason}).{}",
                    ctx.op,
                    tail(&r.log_tail)
                ),
            }))
        }
        Command::BackupList { .. }
        | Command::Restore { .. }
        | Command::Verify { .. }
        | Command::Schedule { .. } => Err(UserError::Refused(format!(
            "`{}` is understood and allowed, but this version of rocketops cannot run it yet (backup catalog, restore, verify and schedules are in progress).",
            cmd.name()
        ))),
        Command::Confirm { .. } | Command::Approve { .. } | Command::Cancel { .. } => {
            Err(UserError::Internal)
        }
    }
}

fn sample_command(name: &str, grammar: &Grammar) -> Command {
    let env = grammar
        .environments
        .first()
        .map(|e| e.name.clone())
        .unwrap_or_default();
    match name {
        "deploy" => Command::Deploy {
            env,
            version: "v1".into(),
            no_backup: false,
        },
        "rollback" => Command::Rollback { env, to: None },
        "scale" => Command::Scale {
            env,
            replicas: 1,
            component: None,
        },
        "backup now" => Command::BackupNow { env: Some(env) },
        "backup list" => Command::BackupList { env: Some(env) },
        "restore" => Command::Restore {
            env,
            backup: BackupRef::Latest,
            from: None,
            no_safety_backup: false,
        },
        "verify" => Command::Verify {
            env: Some(env),
            backup: None,
        },
        "status" => Command::Status { env: Some(env) },
        "history" => Command::History { env },
        "lock" => Command::Lock { env, reason: None },
        "unlock" => Command::Unlock { env },
        "cancel" => Command::Cancel { op: 0 },
        "approve" => Command::Approve { op: 0 },
        "confirm" => Command::Confirm {
            code: String::new(),
        },
        "schedule list" => Command::Schedule {
            action: ScheduleAction::List,
        },
        "schedule" => Command::Schedule {
            action: ScheduleAction::Pause { env: Some(env) },
        },
        "help" => Command::Help { topic: None },
        "ping" => Command::Ping { echo: None },
        runbook => Command::Runbook {
            name: runbook.into(),
            env,
            params: BTreeMap::new(),
        },
    }
}

fn failing(pod: Option<String>, reason: Option<String>) -> String {
    match (pod, reason) {
        (Some(p), Some(r)) => format!(" (pod {p}: {r})"),
        (None, Some(r)) => format!(" ({r})"),
        _ => String::new(),
    }
}

fn tail(lines: &[String]) -> String {
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

fn backup_summary(message: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(message) else {
        return if message.is_empty() {
            String::new()
        } else {
            format!("Result: `{message}`")
        };
    };
    let mb = v["bytes"]
        .as_u64()
        .map(|b| format!("{:.1} MB", b as f64 / 1_000_000.0))
        .unwrap_or_else(|| "size unknown".into());
    let sha = v["sha256"]
        .as_str()
        .map(|s| s.chars().take(12).collect::<String>())
        .unwrap_or_default();
    format!(
        "Backup `{}`, {mb}, sha256 {sha}…",
        v["name"].as_str().unwrap_or("?")
    )
}

/// Edits the progress message as the rollout advances; returns how it ended.
async fn follow<C: Chat>(
    ctx: &Context<'_, C>,
    c: &Cluster,
    deployment: &str,
    progress: Option<&MessageRef>,
    title: &str,
) -> Result<RolloutOutcome, UserError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = c.watch_rollout(deployment, Some(tx), ROLLOUT_LIMIT);
    tokio::pin!(watch);
    loop {
        tokio::select! {
            r = &mut watch => {
                return r.map_err(|e| cluster_err(c.namespace(), e));
            }
            Some(p) = rx.recv() => {
                if let (Some(m), false) = (progress, p.state.is_final()) {
                    let text = format!("{title}: {} ({}/{} ready)", p.state.describe(deployment), p.ready, p.desired);
                    let _ = ctx.chat.edit(m, &text).await;
                }
            }
        }
    }
}

/// The final edit of the progress message (or a new message if there is none).
async fn finish<C: Chat>(
    ctx: &Context<'_, C>,
    progress: Option<MessageRef>,
    text: String,
) -> Result<Option<String>, UserError> {
    match progress {
        Some(m) if ctx.chat.edit(&m, &text).await.is_ok() => Ok(None),
        _ => Ok(Some(text)),
    }
}

async fn deploy<C: Chat>(
    ctx: &Context<'_, C>,
    env: &str,
    version: &str,
) -> Result<Option<String>, UserError> {
    let (c, e) = cluster(ctx, env)?;
    let _busy = ctx.running.claim(env, ctx.op, ctx.user, "deploy")?;
    let container = e.container().to_string();
    let image = image_for(&e, version);
    let current = c
        .deployment(&e.deployment)
        .await
        .map_err(|err| cluster_err(env, err))?;
    if rollout::current_image(&current, Some(&container)).as_deref() == Some(image.as_str()) {
        return Ok(Some(format!(
            "{env} is already running {version}; nothing to do."
        )));
    }
    let title = format!("#{} deploy {version} to {env}", ctx.op);
    let progress = ctx
        .chat
        .post(
            ctx.room_id,
            ctx.thread,
            &format!("{title}: setting the image…"),
        )
        .await
        .ok();
    c.set_image(
        &e.deployment,
        &container,
        &image,
        &format!("deploy {version} by {} (#{})", ctx.user, ctx.op),
    )
    .await
    .map_err(|err| cluster_err(env, err))?;
    match follow(ctx, c, &e.deployment, progress.as_ref(), &title).await? {
        RolloutOutcome::Complete { revision } => {
            finish(
                ctx,
                progress,
                format!(
                    "✅ {title}: rolled out{}.",
                    revision
                        .map(|r| format!(" as revision {r}"))
                        .unwrap_or_default()
                ),
            )
            .await
        }
        RolloutOutcome::Failed {
            message,
            pod,
            reason,
        } => {
            let why = format!("{message}{}", failing(pod, reason));
            if let Some(m) = &progress {
                let _ = ctx
                    .chat
                    .edit(m, &format!("{title}: failed ({why}); rolling back…"))
                    .await;
            }
            let rolled = c.undo(&e.deployment, None).await;
            let after = match rolled {
                Ok(rev) => match follow(ctx, c, &e.deployment, None, &title).await {
                    Ok(RolloutOutcome::Complete { .. }) => format!("rolled back to revision {rev}"),
                    Ok(RolloutOutcome::Failed { message, .. }) => {
                        format!("the rollback to revision {rev} did not complete either: {message}")
                    }
                    Err(e) => format!("the rollback could not be followed: {e}"),
                },
                Err(err) => format!("the rollback failed: {err}"),
            };
            let text = format!("❌ {title} failed: {why}; {after}.");
            let alerts = ctx.config.rocketchat.alerts_channel.clone();
            if let Ok(room) = ctx.chat.room_id(&alerts).await {
                let _ = ctx
                    .chat
                    .post(&room, None, &format!("🚨 {text} (asked by @{})", ctx.user))
                    .await;
            }
            finish(ctx, progress, text).await
        }
    }
}

async fn status<C: Chat>(ctx: &Context<'_, C>, env: Option<&str>) -> String {
    let envs: Vec<String> = match env {
        Some(e) => vec![e.to_string()],
        None => ctx.config.environments.keys().cloned().collect(),
    };
    if envs.is_empty() {
        return "No environments are configured.".into();
    }
    let mut out = Vec::new();
    for env in envs {
        let e = ctx
            .config
            .environments
            .get(&env)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(&env));
        let mut line = format!("*{env}*");
        match ctx.clusters.get(&env) {
            Some(c) => {
                match c.deployment(&e.deployment).await {
                    Ok(d) => {
                        let version = rollout::current_image(&d, Some(e.container()))
                            .map(|i| crate::sandbox::kube::split_image(&i).1.to_string())
                            .unwrap_or_else(|| "?".into());
                        let st = d.status.clone().unwrap_or_default();
                        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let state = match rollout::rollout_state(&d) {
                            RolloutState::Complete => String::new(),
                            other => format!(", {}", other.describe(&e.deployment)),
                        };
                        line.push_str(&format!(
                            ": {} {version}, {}/{want} ready{state}",
                            e.deployment,
                            st.ready_replicas.unwrap_or(0)
                        ));
                    }
                    Err(err) => line.push_str(&format!(": {} unavailable ({err})", e.deployment)),
                }
                if let Ok(s) = c.statefulset(&e.database).await {
                    let st = s.status.clone().unwrap_or_default();
                    line.push_str(&format!(
                        " · {} {}/{} ready",
                        e.database,
                        st.ready_replicas.unwrap_or(0),
                        s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0)
                    ));
                }
            }
            None => line.push_str(": no cluster connection configured"),
        }
        if let Ok(Some(l)) = ctx.store.env_lock(&env) {
            line.push_str(&format!(
                " · 🔒 locked by @{}{}",
                l.by,
                l.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ));
        }
        if let Some((op, by, cmd, _)) = ctx.running.get(&env) {
            line.push_str(&format!(" · running {cmd} #{op} by @{by}"));
        }
        out.push(line);
    }
    out.join("\n")
}
