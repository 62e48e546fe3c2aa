//! `backup prune ENV`: the retention plan (grandfather-father-son, never the newest verified backup) applied by a prune Job, and the catalog told what went.

use super::engine::{JOB_LIMIT, OpError, StepEnd};
use super::operation::{self, Operation, Step};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{JobEnd, JobReport};
use crate::config::EnvironmentConfig;
use crate::journal::{OpRecord, Prune, StepRecord};

impl Operation for Prune {
    fn steps(&self, _env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        if e.backup.offsite.is_some() {
            // Off-site first: the catalog still names what the plan drops.
            vec![
                StepRecord::pending(super::offsite::PRUNE),
                StepRecord::pending("prune"),
            ]
        } else {
            vec![StepRecord::pending("prune")]
        }
    }

    fn locks(&self, env: &str) -> Vec<String> {
        vec![format!("{env}#backups")]
    }

    async fn step<C: Chat>(&self, name: &str, cx: &mut Step<'_, C>) -> StepEnd {
        match name {
            "prune" => self.apply(cx).await,
            super::offsite::PRUNE => {
                let (engine, e, rec) = (cx.engine, cx.e, &*cx.rec);
                let records = crate::catalog::list(engine.store(), Some(&rec.env));
                let plan = crate::catalog::retention_plan(&records, e.backup.retention);
                let names: Vec<String> = records
                    .iter()
                    .filter(|b| plan.drop.contains(&b.job) && b.offsite.is_some())
                    .filter(|b| templates::safe_backup_name(&b.name))
                    .map(|b| b.name.clone())
                    .collect();
                engine.prune_offsite(cx.cluster, e, rec, &names).await
            }
            _ => StepEnd::failed(format!("step `{name}` is not part of a prune")),
        }
    }

    fn summary(&self, rec: &OpRecord) -> String {
        operation::last_detail(rec)
    }
}

impl Prune {
    /// Applies the retention policy: a prune Job deletes what the plan drops, the catalog forgets it.
    async fn apply<C: Chat>(&self, cx: &mut Step<'_, C>) -> StepEnd {
        let (engine, c, e, rec) = (cx.engine, cx.cluster, cx.e, &*cx.rec);
        let records = crate::catalog::list(engine.store(), Some(&rec.env));
        let plan = crate::catalog::retention_plan(&records, e.backup.retention);
        let dropped: Vec<&crate::catalog::BackupRecord> = records
            .iter()
            .filter(|b| plan.drop.contains(&b.job))
            .collect();
        if dropped.is_empty() {
            return StepEnd::Done(format!(
                "nothing to prune; the policy keeps all {} backups",
                records.len()
            ));
        }
        let (safe, unsafe_): (Vec<_>, Vec<_>) = dropped
            .into_iter()
            .partition(|b| templates::safe_backup_name(&b.name));
        let names: Vec<String> = safe.iter().map(|b| b.name.clone()).collect();
        let p = templates::params(rec, e, &[("names", &names.join(":"))]);
        match engine
            .template_job(c, e, templates::Kind::Prune, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v = JobReport::read(&r.message);
                for b in &safe {
                    let _ = crate::catalog::remove(engine.store(), &rec.env, &b.job);
                }
                let p = crate::catalog::Prune {
                    env: rec.env.clone(),
                    at_ms: engine.now_ms(),
                    removed: names.clone(),
                    used_bytes: v.used_bytes,
                    free_bytes: v.free_bytes,
                };
                let _ = crate::catalog::record_prune(engine.store(), &p);
                let volume = match (p.used_bytes, p.free_bytes) {
                    (Some(u), Some(f)) => format!(
                        "; volume {} used, {} free",
                        crate::catalog::size(Some(u)),
                        crate::catalog::size(Some(f))
                    ),
                    _ => String::new(),
                };
                let skipped = if unsafe_.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; left {} whose names are not safe file names",
                        unsafe_.len()
                    )
                };
                StepEnd::Done(format!(
                    "removed {}: {}; kept {}{volume}{skipped}",
                    names.len(),
                    names.join(", "),
                    plan.keep.len()
                ))
            }
            Ok((job, r)) => StepEnd::Failed(OpError::Job(format!(
                "prune job {job} failed{}",
                super::tail(&r.log_tail)
            ))),
            Err(err) => StepEnd::Failed(err.into()),
        }
    }
}
