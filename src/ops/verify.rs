//! `verify ENV [BACKUP]`: a test-restore of the backup chosen when it started into a throwaway database, checked against the backup's manifest and recorded in the catalog.

use super::engine::{OpError, RESTORE_LIMIT, StepEnd};
use super::operation::{self, Operation, Step};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{JobEnd, JobReport};
use crate::config::EnvironmentConfig;
use crate::journal::{LockKey, OpRecord, StepKind, StepRecord, Verify};

impl Operation for Verify {
    fn steps(&self, _env: &str, _e: &EnvironmentConfig) -> Vec<StepRecord> {
        if self.offsite {
            vec![
                StepRecord::pending(StepKind::OffsiteFetch),
                StepRecord::pending(StepKind::Verify),
            ]
        } else {
            vec![StepRecord::pending(StepKind::Verify)]
        }
    }

    fn locks(&self, env: &str) -> Vec<LockKey> {
        vec![LockKey::backups(env)]
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        match kind {
            StepKind::Verify => self.test_restore(cx).await,
            StepKind::OffsiteFetch => {
                cx.engine
                    .fetch_offsite(cx.cluster, cx.e, cx.rec, &self.backup.name)
                    .await
            }
            other => operation::foreign(other, "a verify"),
        }
    }

    fn summary(&self, rec: &OpRecord) -> String {
        operation::last_detail(rec)
    }
}

impl Verify {
    /// Restores the chosen backup into a throwaway database and checks it against its manifest;
    /// the result goes into the catalog.
    async fn test_restore<C: Chat>(&self, cx: &mut Step<'_, C>) -> StepEnd {
        let (engine, c, e, rec) = (cx.engine, cx.cluster, cx.e, &*cx.rec);
        let name = self.backup.name.clone();
        let backup_job = self.backup.job.clone();
        if !templates::safe_backup_name(&name) {
            return StepEnd::failed(format!(
                "the backup name `{name}` cannot be used as a file name"
            ));
        }
        let finished = if self.backup.finished_ms > 0 {
            self.backup.finished_ms
        } else {
            engine.now_ms()
        };
        let p = templates::params(rec, e, &[("backup", &name)]);
        let result = engine
            .template_job(c, e, templates::Kind::Verify, &p, RESTORE_LIMIT)
            .await;
        let now = engine.now_ms();
        let age_secs = ((now - finished).max(0) / 1000) as u64;
        let age = match crate::clock::ago(finished, now).strip_suffix(" ago") {
            Some(a) => format!("it was {a} old"),
            None => "it was taken just now".to_string(),
        };
        let (ok, restore_secs, detail) = match result {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v = JobReport::read(&r.message);
                let secs = v.restore_seconds;
                let counts = match (v.collections, v.documents) {
                    (Some(c), Some(d)) => {
                        let (cs, ds) = e.backup.engine.units();
                        format!("{c} {cs}, {d} {ds}")
                    }
                    _ => "the data".into(),
                };
                let took = secs.map(|s| format!(" in {s} s")).unwrap_or_default();
                if v.ok == Some(true) {
                    (
                        true,
                        secs,
                        format!(
                            "{name} restored{took} into a throwaway database; {counts} match its manifest; {age}{}",
                            v.note_suffix()
                        ),
                    )
                } else {
                    let mism = v.mismatches;
                    (
                        false,
                        secs,
                        format!(
                            "{name} restored{took}, but does not match its manifest: {}",
                            if mism.is_empty() {
                                "no result from the verify job".to_string()
                            } else {
                                mism.join(", ")
                            }
                        ),
                    )
                }
            }
            Ok((job, r)) => (
                false,
                None,
                format!(
                    "verify job {job} failed ({}){}",
                    match &r.end {
                        JobEnd::Failed { reason, .. } => reason.clone(),
                        JobEnd::Complete => String::new(),
                    },
                    super::tail(&r.log_tail)
                ),
            ),
            Err(err) => (false, None, err),
        };
        let v = crate::catalog::VerifyRecord {
            ok,
            at_ms: now,
            restore_secs,
            age_secs,
            detail: detail.clone(),
            op: rec.id,
        };
        if let Err(err) = crate::catalog::set_verify(engine.store(), &rec.env, &backup_job, v) {
            tracing::error!(error = %err, "cannot record the verify result");
        }
        let m = crate::telemetry::metrics();
        let l = crate::telemetry::labels(&[("env", &rec.env)]);
        m.verify_ok.get_or_create(&l).set(i64::from(ok));
        if let Some(s) = restore_secs {
            m.restore_seconds.get_or_create(&l).set(s as i64);
        }
        if ok {
            StepEnd::Done(detail)
        } else {
            StepEnd::Failed(OpError::Job(detail))
        }
    }
}
