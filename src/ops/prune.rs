//! `backup prune ENV`: the retention plan (grandfather-father-son, never the newest verified backup) applied by a prune Job, and the catalog told what went.

use super::engine::{JOB_LIMIT, OpError, StepEnd};
use super::operation::{self, Operation, Step};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{JobEnd, JobReport};
use crate::config::EnvironmentConfig;
use crate::journal::{LockKey, OpRecord, Prune, StepKind, StepRecord};

impl Operation for Prune {
    fn steps(&self, _env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        if e.backup.offsite.is_some() {
            // Off-site first: the catalog still names what the plan drops.
            vec![
                StepRecord::pending(StepKind::OffsitePrune),
                StepRecord::pending(StepKind::Prune),
            ]
        } else {
            vec![StepRecord::pending(StepKind::Prune)]
        }
    }

    fn locks(&self, env: &str) -> Vec<LockKey> {
        vec![LockKey::backups(env)]
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        match kind {
            StepKind::Prune => self.apply(cx).await,
            StepKind::OffsitePrune => {
                let (engine, e, rec) = (cx.engine, cx.e, &*cx.rec);
                let records = crate::catalog::list(engine.store(), Some(&rec.env));
                let plan = crate::catalog::retention_plan(&records, e.backup.retention);
                let dropped: Vec<&crate::catalog::BackupRecord> = records
                    .iter()
                    .filter(|b| plan.drop.contains(&b.job))
                    .filter(|b| templates::safe_backup_name(&b.name))
                    .collect();
                if let Err(end) = mark_removing(engine.store(), &rec.env, &dropped, engine.now_ms())
                {
                    return end;
                }
                let names: Vec<String> = dropped
                    .iter()
                    .filter(|b| b.offsite.is_some())
                    .map(|b| b.name.clone())
                    .collect();
                engine.prune_offsite(cx.cluster, e, rec, &names).await
            }
            other => operation::foreign(other, "a prune"),
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
        // Marked before anything is deleted, so that nothing (`latest`, a name, the next plan's
        // keep) can pick a backup whose archive may be gone, whatever happens next: a Job that
        // fails half-way, a catalog that cannot forget, a crash. The other order (forget first,
        // put back if the Job fails) needs a second write to undo the first, and a failure of
        // that write would lose a backup that still exists.
        if let Err(end) = mark_removing(engine.store(), &rec.env, &safe, engine.now_ms()) {
            return end;
        }
        let p = templates::params(rec, e, &[("names", &names.join(":"))]);
        match engine
            .template_job(c, e, templates::Kind::Prune, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v = JobReport::read(&r.message);
                let mut unforgotten = Vec::new();
                for b in &safe {
                    if let Err(err) = crate::catalog::remove(engine.store(), &rec.env, &b.job) {
                        tracing::error!(error = %err, "a pruned backup stays in the catalog, marked as being removed");
                        unforgotten.push((b.name.clone(), err));
                    }
                }
                let p = crate::catalog::Prune {
                    env: rec.env.clone(),
                    at_ms: engine.now_ms(),
                    removed: names.clone(),
                    used_bytes: v.used_bytes,
                    free_bytes: v.free_bytes,
                };
                if let Err(err) = crate::catalog::record_prune(engine.store(), &p) {
                    // Only the daily report's account of prunes misses it.
                    tracing::error!(error = %err, "cannot record the prune for the report");
                }
                if let Some((_, err)) = unforgotten.first() {
                    let which: Vec<&str> = unforgotten.iter().map(|(n, _)| n.as_str()).collect();
                    return StepEnd::Failed(OpError::Step(format!(
                        "the prune job deleted {} ({}), but the catalog could not forget {} ({err}); they stay listed as being removed, so no restore picks them, and the next prune forgets them",
                        names.len(),
                        names.join(", "),
                        which.join(", ")
                    )));
                }
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
            // The marks stay: some archives may be gone; the next prune drops them again.
            Ok((job, r)) => StepEnd::Failed(OpError::Job(format!(
                "prune job {job} failed{}; {} stay listed as being removed until a prune succeeds",
                super::tail(&r.log_tail),
                names.join(", ")
            ))),
            Err(err) => StepEnd::Failed(OpError::Step(format!(
                "{err}; {} stay listed as being removed until a prune succeeds",
                names.join(", ")
            ))),
        }
    }
}

/// Marks the backups a prune is about to delete (see [`crate::catalog::mark_removing`]); the
/// step fails, before anything is deleted, when one cannot be marked.
fn mark_removing(
    store: &crate::store::Store,
    env: &str,
    backups: &[&crate::catalog::BackupRecord],
    now_ms: i64,
) -> Result<(), StepEnd> {
    for b in backups {
        if let Err(err) = crate::catalog::mark_removing(store, env, &b.job, now_ms) {
            tracing::error!(error = %err, "prune stopped before deleting anything");
            return Err(StepEnd::Failed(OpError::Step(format!(
                "{err}; nothing was deleted"
            ))));
        }
    }
    Ok(())
}
