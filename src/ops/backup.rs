//! `backup now ENV` as an operation, and taking a backup as a step of any operation (from the environment's CronJob, or from the backup template when it has none), with the Jobs rendered from the backup templates.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{Engine, JOB_LIMIT, OpError, StepEnd};
use super::operation::{Operation, Step};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{self, JobEnd};
use crate::cluster::{Cluster, ClusterError};
use crate::config::EnvironmentConfig;
use crate::journal::{BackupNow, LockKey, OpRecord, StepKind, StepRecord, TakenBackup};

/// Which backup of an operation a backup step takes (each is journaled on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Asked for, or before a deploy.
    Backup,
    /// Before a restore.
    Safety,
}

impl Taken {
    pub(crate) fn of(self, rec: &mut OpRecord) -> &mut Option<TakenBackup> {
        match self {
            Taken::Backup => &mut rec.facts.backup,
            Taken::Safety => &mut rec.facts.safety,
        }
    }
}

impl Operation for BackupNow {
    fn steps(&self, _env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        let mut steps = vec![StepRecord::pending(StepKind::Backup)];
        if e.backup.offsite.is_some() {
            steps.push(StepRecord::pending(StepKind::OffsiteCopy));
        }
        steps
    }

    fn locks(&self, env: &str) -> Vec<LockKey> {
        vec![LockKey::backups(env)]
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        match kind {
            StepKind::Backup => {
                cx.engine
                    .take_backup(cx.cluster, cx.e, cx.rec, Taken::Backup, "manual")
                    .await
            }
            StepKind::OffsiteCopy => {
                cx.engine
                    .copy_offsite(cx.cluster, cx.e, cx.rec, Taken::Backup)
                    .await
            }
            other => super::operation::foreign(other, "a backup"),
        }
    }

    fn summary(&self, rec: &OpRecord) -> String {
        format!(
            "{} is backed up: `{}`.",
            rec.env,
            rec.facts
                .backup
                .as_ref()
                .and_then(|b| b.name.clone())
                .unwrap_or_else(|| "?".into())
        )
    }
}

impl<C: Chat> Engine<C> {
    /// Takes a backup: a Job from the environment's backup CronJob, or from the backup template
    /// when it has none; records it (or its failure) in the catalog. `which` names it in the journal.
    pub(crate) async fn take_backup(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
        which: Taken,
        label: &str,
    ) -> StepEnd {
        let op = rec.id.get();
        let mut name = which.of(rec).as_ref().and_then(|t| t.name.clone());
        let job = match which.of(rec).as_ref().map(|t| t.job.clone()) {
            Some(job) => job,
            None => {
                let from_cronjob =
                    jobs::job_name(&format!("{}-{label}", e.backup_cronjob), &rec.job_suffix());
                match c
                    .job_from_cronjob_for_op(&e.backup_cronjob, &from_cronjob, op, &rec.mark)
                    .await
                {
                    Ok(()) => from_cronjob,
                    Err(ClusterError::NotFound { .. }) => {
                        let mut backup = templates::backup_name(&rec.env, self.now_ms());
                        // Two backups in one second (a safety backup right after the one it
                        // protects) must not share a name: the second would overwrite the first.
                        let taken = crate::catalog::list(self.store(), Some(&rec.env));
                        if taken.iter().any(|b| b.name == backup) {
                            backup = format!("{backup}-{op}");
                        }
                        let p = templates::params(rec, e, &[("backup", &backup)]);
                        let mut job = match templates::render(
                            &self.inner.config.bot.commands_dir,
                            e,
                            templates::Kind::Backup,
                            &p,
                        ) {
                            Ok(j) => j,
                            Err(err) => return StepEnd::Failed(err.into()),
                        };
                        let base = job
                            .metadata
                            .name
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches(&format!("-{}", rec.job_suffix()))
                            .to_string();
                        let job_name =
                            jobs::job_name(&format!("{base}-{label}"), &rec.job_suffix());
                        job.metadata.name = Some(job_name.clone());
                        if let Err(err) = c.create_owned_job(&mut job, op, &rec.mark).await {
                            return StepEnd::Failed(err.into());
                        }
                        name = Some(backup);
                        job_name
                    }
                    Err(err) => return StepEnd::Failed(err.into()),
                }
            }
        };
        *which.of(rec) = Some(TakenBackup {
            job: job.clone(),
            name: name.clone(),
        });
        // The Job is journaled before it is waited for, so that a resumed operation adopts it.
        if let Err(why) = self.journal(rec).await {
            return StepEnd::Failed(why);
        }
        match c.wait_job(&job, JOB_LIMIT).await {
            Ok(r) => match r.end {
                JobEnd::Complete => {
                    let by = format!("{} (#{op})", super::who(&rec.user));
                    let mut b = crate::catalog::BackupRecord::from_result(
                        &rec.env,
                        &job,
                        &r.message,
                        &by,
                        self.now_ms(),
                    );
                    if b.name == job
                        && let Some(n) = &name
                    {
                        b.name = n.clone();
                    }
                    let m = crate::telemetry::metrics();
                    let l = crate::telemetry::labels(&[("env", &rec.env)]);
                    m.backup_bytes
                        .get_or_create(&l)
                        .set(b.bytes.unwrap_or(0) as i64);
                    m.backup_timestamp
                        .get_or_create(&l)
                        .set(self.now_ms() / 1000);
                    if let Err(e) = crate::catalog::record(&self.inner.store, &b) {
                        tracing::error!(error = %e, "cannot record the backup in the catalog");
                    }
                    if let Some(t) = which.of(rec) {
                        t.name = Some(b.name.clone());
                    }
                    StepEnd::Done(super::backup_summary(&r.message))
                }
                JobEnd::Failed { reason, .. } => {
                    let f = crate::catalog::Failure {
                        env: rec.env.clone(),
                        job: job.clone(),
                        at_ms: self.now_ms(),
                        reason: reason.clone(),
                    };
                    if let Err(e) = crate::catalog::record_failure(&self.inner.store, &f) {
                        // The step fails anyway; only the daily report misses the failure.
                        tracing::error!(error = %e, job, "cannot record the failed backup for the report");
                    }
                    StepEnd::Failed(OpError::Job(format!(
                        "backup job {job} failed ({reason}){}",
                        super::tail(&r.log_tail)
                    )))
                }
            },
            Err(err) => StepEnd::Failed(err.into()),
        }
    }

    /// Runs a Job rendered from a backup template and waits for it.
    pub(crate) async fn template_job(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        kind: templates::Kind,
        params: &BTreeMap<String, String>,
        limit: Duration,
    ) -> Result<(String, crate::cluster::JobResult), String> {
        let job = templates::render(&self.inner.config.bot.commands_dir, e, kind, params)
            .map_err(|e| e.to_string())?;
        let mut job = job;
        let name = job.metadata.name.clone().unwrap_or_default();
        let op = params.get("op").and_then(|o| o.parse().ok()).unwrap_or(0);
        let mark = params.get("mark").cloned().unwrap_or_default();
        if let Err(err) = c.create_owned_job(&mut job, op, &mark).await {
            return Err(err.to_string());
        }
        let r = c.wait_job(&name, limit).await.map_err(|e| e.to_string())?;
        Ok((name, r))
    }
}
