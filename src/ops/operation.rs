//! The one small trait every operation implements (its steps, running a step, what to undo, its result line), the typed journal spec each command resolves to when it starts, and the dispatch from a spec to its operation.

use std::future::Future;

use super::engine::{Engine, StepEnd};
use crate::chat::Chat;
use crate::cluster::Cluster;
use crate::command::{BackupRef, Command, Grammar, RollbackTarget};
use crate::config::EnvironmentConfig;
use crate::error::UserError;
use crate::journal::{
    BackupNow, ChosenBackup, Deploy, LockKey, OpRecord, OpSpec, Prune, Restore, Rollback,
    RollbackTo, Runbook, RunbookJob, Scale, StepKind, StepRecord, StepState, Verify,
};
use crate::store::Store;

/// What a step may use: the engine (journal, progress, helpers), the environment's cluster and
/// configuration, and the operation's record, which it may add facts to.
pub(crate) struct Step<'a, C: Chat> {
    pub engine: &'a Engine<C>,
    pub cluster: &'a Cluster,
    pub e: &'a EnvironmentConfig,
    pub rec: &'a mut OpRecord,
    /// The step's index in `rec.steps`.
    pub index: usize,
}

/// What to put back after a failed or cancelled step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Nothing was changed that can be put back.
    Nothing,
    /// Undo the Deployment to `revision` (the previous one when `None`), which ran `version`,
    /// as the step `step` ([`StepKind::Rollback`], [`StepKind::RollForward`]).
    Revision {
        revision: Option<i64>,
        version: Option<String>,
        step: StepKind,
    },
    /// Scale the app back to its recorded replicas and autoscaler, whatever happened.
    ScaleBack,
}

/// One kind of operation. The engine owns locks, the journal, progress, cancel and resume; an
/// operation owns only what it does.
pub(crate) trait Operation {
    /// Pure: the steps, in order, as they are journaled when the operation starts.
    fn steps(&self, env: &str, e: &EnvironmentConfig) -> Vec<StepRecord>;

    /// Pure: the locks it takes. Changes to the app hold the environment; backup work holds its
    /// backup volume, so that a long nightly verify never blocks an urgent rollback.
    fn locks(&self, env: &str) -> Vec<LockKey> {
        vec![LockKey::env(env)]
    }

    /// Runs the step `kind`; idempotent, so that a resumed operation can run it again.
    fn step<C: Chat>(
        &self,
        kind: &StepKind,
        cx: &mut Step<'_, C>,
    ) -> impl Future<Output = StepEnd> + Send;

    /// What to put back after a failure, from what the journal says was done.
    fn undo(&self, _rec: &OpRecord, _e: &EnvironmentConfig) -> Undo {
        Undo::Nothing
    }

    /// The one-line result after every step succeeded.
    fn summary(&self, rec: &OpRecord) -> String;
}

/// Runs `$body` with `$op` bound to the operation inside `$spec`.
macro_rules! dispatch {
    ($spec:expr, $op:ident => $body:expr) => {
        match $spec {
            OpSpec::Deploy($op) => $body,
            OpSpec::Rollback($op) => $body,
            OpSpec::Scale($op) => $body,
            OpSpec::Backup($op) => $body,
            OpSpec::Restore($op) => $body,
            OpSpec::Verify($op) => $body,
            OpSpec::Prune($op) => $body,
            OpSpec::Runbook($op) => $body,
        }
    };
}

pub(crate) fn steps(spec: &OpSpec, env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
    dispatch!(spec, op => op.steps(env, e))
}

pub(crate) fn locks(spec: &OpSpec, env: &str) -> Vec<LockKey> {
    dispatch!(spec, op => op.locks(env))
}

pub(crate) async fn step<C: Chat>(spec: &OpSpec, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
    dispatch!(spec, op => op.step(kind, cx).await)
}

/// A step that is not part of the operation (a journal edited by hand, or written by another
/// version): it fails, naming it.
pub(crate) fn foreign(kind: &StepKind, what: &str) -> StepEnd {
    StepEnd::failed(format!("step `{}` is not part of {what}", kind.name()))
}

pub(crate) fn undo(spec: &OpSpec, rec: &OpRecord, e: &EnvironmentConfig) -> Undo {
    dispatch!(spec, op => op.undo(rec, e))
}

pub(crate) fn summary(spec: &OpSpec, rec: &OpRecord) -> String {
    dispatch!(spec, op => op.summary(rec))
}

/// A step that is skipped from the start, saying why.
pub(crate) fn skipped(kind: StepKind, why: &str) -> StepRecord {
    StepRecord {
        state: StepState::Skipped,
        detail: why.into(),
        ..StepRecord::pending(kind)
    }
}

/// The smoke-test step: pending where one is configured.
pub(crate) fn smoke_step(e: &EnvironmentConfig) -> StepRecord {
    if e.smoke.is_some() {
        StepRecord::pending(StepKind::SmokeTest)
    } else {
        skipped(StepKind::SmokeTest, "none configured")
    }
}

/// Whether a step was started (so what it changes may have changed).
pub(crate) fn started(rec: &OpRecord, kind: &StepKind) -> bool {
    rec.steps.iter().any(|s| {
        s.kind == *kind
            && matches!(
                s.state,
                StepState::Done | StepState::Running | StepState::Failed
            )
            && s.started_ms.is_some()
    })
}

/// The detail of the step `kind`.
pub(crate) fn detail_of(rec: &OpRecord, kind: &StepKind) -> String {
    rec.steps
        .iter()
        .find(|s| s.kind == *kind)
        .map(|s| s.detail.clone())
        .unwrap_or_default()
}

/// The last step's detail as a sentence (for operations of one step).
pub(crate) fn last_detail(rec: &OpRecord) -> String {
    rec.steps
        .last()
        .map(|s| format!("{}.", s.detail))
        .unwrap_or_else(|| "Done.".into())
}

/// Whether a command runs as a journaled operation.
pub fn is_operation(cmd: &Command) -> bool {
    cmd.is_operation()
}

/// Where the typed spec's parts come from: today's configuration and catalog when an operation
/// starts; the backup already chosen when its plan named one, or, for an operation journaled
/// before specs existed, the one it had chosen.
pub(crate) struct Sources<'a> {
    pub store: &'a Store,
    pub grammar: &'a Grammar,
    /// The backup the plan named (or a first-format record's, on resume).
    pub chosen: Option<ChosenBackup>,
}

/// The backup `which` of `src` a restore or verify would use now (with `offsite`, the newest
/// with an off-site copy): decided when the question is asked, and carried to the start.
pub fn choose_backup(
    store: &Store,
    e: &EnvironmentConfig,
    src: &str,
    which: &BackupRef,
    offsite: bool,
) -> Result<ChosenBackup, UserError> {
    let found = if offsite {
        Some(offsite_backup(store, e, src, which)?)
    } else {
        crate::catalog::find(store, src, which)
    };
    match found {
        Some(b) => Ok(ChosenBackup {
            name: b.name,
            job: b.job,
            env: src.to_string(),
            finished_ms: b.finished_ms,
        }),
        None => Err(UserError::NoSuchBackup {
            env: src.to_string(),
            name: match which {
                BackupRef::Latest => None,
                BackupRef::Named(n) => Some(n.clone()),
            },
        }),
    }
}

/// Resolves a command into what the operation is: the image, the backup, the runbooks' Jobs.
/// The backup `which` of `env` that has an off-site copy (the newest such for `latest`); checked
/// before anyone is asked to confirm a restore or verify `from offsite`, and when it starts.
pub(crate) fn offsite_backup(
    store: &crate::store::Store,
    e: &EnvironmentConfig,
    env: &str,
    which: &BackupRef,
) -> Result<crate::catalog::BackupRecord, UserError> {
    let named = match which {
        BackupRef::Latest => None,
        BackupRef::Named(n) => Some(n.clone()),
    };
    let copied = crate::catalog::list(store, Some(env))
        .into_iter()
        .filter(crate::catalog::BackupRecord::available)
        .filter(|b| match &named {
            Some(n) => b.name == *n || b.job == *n,
            None => b.trusted(),
        })
        .find(|b| b.offsite.is_some());
    match copied {
        Some(b) if e.backup.offsite.is_some() => Ok(b),
        _ => Err(UserError::NoOffsiteCopy {
            env: env.to_string(),
            name: named,
            configured: e.backup.offsite.is_some(),
        }),
    }
}

/// Called once, when it starts; the result is journaled and resume reads only that.
pub(crate) fn resolve(
    cmd: &Command,
    env: &str,
    e: &EnvironmentConfig,
    from: Sources<'_>,
) -> Result<OpSpec, UserError> {
    let job_of = |name: &str| {
        from.grammar
            .runbooks
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.job.clone())
            .unwrap_or_default()
    };
    let chosen =
        |src: String, which: BackupRef, offsite: bool| -> Result<ChosenBackup, UserError> {
            match from.chosen.clone() {
                Some(c) => Ok(c),
                None => choose_backup(from.store, e, &src, &which, offsite),
            }
        };
    Ok(match cmd {
        Command::Deploy {
            version, no_backup, ..
        } => OpSpec::Deploy(Deploy {
            version: version.clone(),
            image: super::image_for(e, version),
            no_backup: *no_backup,
            runbooks: e
                .pre_deploy
                .iter()
                .map(|r| RunbookJob {
                    name: r.clone(),
                    job: job_of(r),
                })
                .collect(),
        }),
        Command::Rollback { to, .. } => OpSpec::Rollback(Rollback {
            to: to.as_ref().map(|t| match t {
                RollbackTarget::Revision(r) => RollbackTo::Revision(*r),
                RollbackTarget::Version(v) => RollbackTo::Version(v.clone()),
            }),
        }),
        Command::Scale {
            replicas,
            component,
            ..
        } => OpSpec::Scale(Scale {
            replicas: *replicas,
            component: component.clone(),
        }),
        Command::BackupNow { .. } => OpSpec::Backup(BackupNow {}),
        Command::BackupPrune { .. } => OpSpec::Prune(Prune {}),
        Command::Restore {
            backup,
            from: src,
            no_safety_backup,
            offsite,
            ..
        } => OpSpec::Restore(Restore {
            backup: chosen(
                src.clone().unwrap_or_else(|| env.to_string()),
                backup.clone(),
                *offsite,
            )?,
            no_safety_backup: *no_safety_backup,
            offsite: *offsite,
        }),
        Command::Verify {
            backup, offsite, ..
        } => OpSpec::Verify(Verify {
            backup: chosen(
                env.to_string(),
                backup.clone().unwrap_or(BackupRef::Latest),
                *offsite,
            )?,
            offsite: *offsite,
        }),
        Command::Runbook { name, params, .. } => OpSpec::Runbook(Runbook {
            name: name.clone(),
            params: params.clone(),
            job: job_of(name),
        }),
        _ => return Err(UserError::Internal),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen() -> ChosenBackup {
        ChosenBackup {
            name: "prod-1".into(),
            job: "backup-1".into(),
            env: "prod".into(),
            finished_ms: 1,
        }
    }

    #[test]
    fn app_changes_backup_work_and_restores_take_the_locks_they_conflict_on() {
        let cases: Vec<(OpSpec, Vec<LockKey>)> = vec![
            (
                OpSpec::Rollback(Rollback { to: None }),
                vec![LockKey::env("prod")],
            ),
            (
                OpSpec::Scale(Scale {
                    replicas: 2,
                    component: None,
                }),
                vec![LockKey::env("prod")],
            ),
            (
                OpSpec::Verify(Verify {
                    backup: chosen(),
                    offsite: false,
                }),
                vec![LockKey::backups("prod")],
            ),
            (OpSpec::Backup(BackupNow {}), vec![LockKey::backups("prod")]),
            (OpSpec::Prune(Prune {}), vec![LockKey::backups("prod")]),
            (
                OpSpec::Restore(Restore {
                    backup: chosen(),
                    no_safety_backup: false,
                    offsite: false,
                }),
                vec![LockKey::env("prod"), LockKey::backups("prod")],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(locks(&spec, "prod"), want, "{spec:?}");
        }
    }

    #[test]
    fn a_deploy_backs_up_first_only_in_production_unless_told_otherwise() {
        let deploy = |no_backup| {
            OpSpec::Deploy(Deploy {
                version: "v1".into(),
                image: "app:v1".into(),
                no_backup,
                runbooks: vec![RunbookJob {
                    name: "migrate".into(),
                    job: String::new(),
                }],
            })
        };
        let names = |spec: &OpSpec, env: &str| {
            steps(spec, env, &EnvironmentConfig::named(env))
                .into_iter()
                .map(|s| (s.kind.name(), s.state))
                .collect::<Vec<_>>()
        };
        let prod = names(&deploy(false), "prod");
        assert_eq!(prod[0], ("backup".to_string(), StepState::Pending));
        assert_eq!(prod[1].0, "runbook migrate");
        assert_eq!(
            names(&deploy(true), "prod")[0],
            ("backup".to_string(), StepState::Skipped)
        );
        assert_eq!(
            names(&deploy(false), "test")[0],
            ("backup".to_string(), StepState::Skipped)
        );
    }

    #[test]
    fn with_offsite_configured_every_backup_an_operation_takes_is_copied_and_prune_covers_the_bucket()
     {
        let mut e = EnvironmentConfig::named("prod");
        e.backup.offsite = Some(crate::config::OffsiteConfig {
            endpoint: "https://s3.example.org".into(),
            bucket: "acme".into(),
            prefix: None,
            region: "us-east-1".into(),
            secret: "s3".into(),
            encryption_secret: "key".into(),
            image: None,
            verify: Default::default(),
        });
        let names = |spec: OpSpec| -> Vec<String> {
            steps(&spec, "prod", &e)
                .into_iter()
                .map(|s| s.kind.name())
                .collect()
        };
        let deploy = names(OpSpec::Deploy(Deploy {
            version: "v1".into(),
            image: "app:v1".into(),
            no_backup: false,
            runbooks: vec![],
        }));
        assert_eq!(deploy[..2], ["backup", "off-site copy"]);
        assert_eq!(
            names(OpSpec::Backup(BackupNow {})),
            ["backup", "off-site copy"]
        );
        let restore = |offsite, no_safety_backup| {
            names(OpSpec::Restore(Restore {
                backup: chosen(),
                no_safety_backup,
                offsite,
            }))
        };
        // The fetch runs while the app is up; the safety backup is copied once it is back.
        assert_eq!(
            restore(true, false),
            [
                "safety backup",
                "fetch off-site",
                "scale down",
                "restore",
                "scale up",
                "smoke test",
                "off-site copy"
            ]
        );
        assert!(!restore(false, true).contains(&"off-site copy".to_string()));
        assert_eq!(
            names(OpSpec::Verify(Verify {
                backup: chosen(),
                offsite: true
            })),
            ["fetch off-site", "verify"]
        );
        assert_eq!(names(OpSpec::Prune(Prune {})), ["prune off-site", "prune"]);
    }
}
