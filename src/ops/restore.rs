//! `restore ENV BACKUP [from ENV]` (from another environment it is the nightly "refresh QA from prod"): a safety backup, record the app's replicas and autoscaler, scale to zero, the restore Job, scale back, the smoke test, and the recovery that always puts the app back after a failure.

use std::time::Duration;

use super::backup::Taken;
use super::engine::{Engine, OpError, RESTORE_LIMIT, ROLLOUT_LIMIT, StepEnd};
use super::operation::{self, Operation, Step, Undo};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{JobEnd, JobReport};
use crate::cluster::{Cluster, HpaPolicy, RolloutOutcome, Workload};
use crate::config::EnvironmentConfig;
use crate::journal::{
    LockKey, OpRecord, OpSpec, Restore, SavedHpa, StepKind, StepRecord, StepState,
};

impl Operation for Restore {
    fn steps(&self, _env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        let mut steps = vec![if self.no_safety_backup {
            operation::skipped(StepKind::SafetyBackup, "skipped with --no-safety-backup")
        } else {
            StepRecord::pending(StepKind::SafetyBackup)
        }];
        if self.offsite {
            // Fetched while the app still runs: the downtime is the restore alone.
            steps.push(StepRecord::pending(StepKind::OffsiteFetch));
        }
        steps.extend([
            StepRecord::pending(StepKind::ScaleDown),
            StepRecord::pending(StepKind::Restore),
            StepRecord::pending(StepKind::ScaleUp),
            operation::smoke_step(e),
        ]);
        if !self.no_safety_backup && e.backup.offsite.is_some() {
            // The safety backup goes off-site once the app is back: recovery comes first.
            steps.push(StepRecord::pending(StepKind::OffsiteCopy));
        }
        steps
    }

    fn locks(&self, env: &str) -> Vec<LockKey> {
        vec![LockKey::env(env), LockKey::backups(env)]
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        let (engine, c, e) = (cx.engine, cx.cluster, cx.e);
        match kind {
            StepKind::SafetyBackup => {
                engine
                    .take_backup(c, e, cx.rec, Taken::Safety, "safety")
                    .await
            }
            StepKind::OffsiteFetch => engine.fetch_offsite(c, e, cx.rec, &self.backup.name).await,
            StepKind::OffsiteCopy => engine.copy_offsite(c, e, cx.rec, Taken::Safety).await,
            StepKind::ScaleDown => engine.scale_down(c, e, cx.rec).await,
            StepKind::Restore => self.restore_job(cx).await,
            StepKind::ScaleUp => match engine.scale_back(c, e, cx.rec).await {
                Ok(detail) => StepEnd::Done(detail),
                Err(err) => StepEnd::Failed(err.into()),
            },
            StepKind::SmokeTest => match &e.smoke {
                Some(smoke) => engine.smoke(smoke, None).await,
                None => StepEnd::Done("none configured".into()),
            },
            other => operation::foreign(other, "a restore"),
        }
    }

    /// Whatever happened, the app goes back to its recorded replicas and autoscaler.
    fn undo(&self, _rec: &OpRecord, _e: &EnvironmentConfig) -> Undo {
        Undo::ScaleBack
    }

    fn summary(&self, rec: &OpRecord) -> String {
        let safety = rec
            .facts
            .safety
            .as_ref()
            .and_then(|s| s.name.as_ref())
            .map(|n| format!(" Safety backup: `{n}`."))
            .unwrap_or_default();
        format!(
            "{} now holds {}; {}.{safety}",
            rec.env,
            operation::detail_of(rec, &StepKind::Restore),
            operation::detail_of(rec, &StepKind::ScaleUp)
        )
    }
}

const PODS_GONE_LIMIT: Duration = Duration::from_secs(10 * 60);

impl<C: Chat> Engine<C> {
    /// A restore failed or was cancelled: whatever happened, the app goes back to its recorded
    /// replicas and autoscaler, and the summary says exactly what state things are in.
    pub(super) async fn recover_after_restore(
        &self,
        rec: &mut OpRecord,
        cluster: &Cluster,
        e: &EnvironmentConfig,
        why: &str,
    ) {
        let env = rec.env.clone();
        let backup = match &rec.spec {
            Some(OpSpec::Restore(r)) => r.backup.name.clone(),
            _ => String::new(),
        };
        let safety = rec
            .facts
            .safety
            .as_ref()
            .and_then(|s| s.name.as_ref())
            .map(|n| {
                format!(" The safety backup `{n}` holds {env}'s data from before the restore.")
            })
            .unwrap_or_default();
        let scaled_up = rec
            .steps
            .iter()
            .any(|s| s.kind == StepKind::ScaleUp && s.state == StepState::Done);
        if rec.facts.replicas.is_none() || scaled_up {
            // Nothing was scaled down (or it is already back): the app was not touched.
            let data = if rec
                .steps
                .iter()
                .any(|s| s.kind == StepKind::Restore && s.state == StepState::Done)
            {
                format!(" {env} holds the restored data of `{backup}`.")
            } else {
                format!(" {env}'s data was not changed.")
            };
            rec.summary = Some(format!("{} failed: {why}.{data}{safety}", rec.command));
            return;
        }
        rec.steps.push(StepRecord {
            state: StepState::Running,
            started_ms: Some(self.now_ms()),
            ..StepRecord::pending(StepKind::Recover)
        });
        if let Err(why) = self.save(rec).await {
            // The app is put back whatever the journal says: leaving it at 0 is worse.
            tracing::error!(op = rec.id.get(), %why, "recovering without a journal");
        }
        let last = rec.steps.len() - 1;
        let result = self.scale_back(cluster, e, rec).await;
        rec.steps[last].finished_ms = Some(self.now_ms());
        let restore_state = rec
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Restore)
            .map(|s| s.state)
            .unwrap_or(StepState::Pending);
        let data = match restore_state {
            StepState::Done => format!("{env} holds the restored data of `{backup}`"),
            StepState::Failed | StepState::Running => format!(
                "the restore of `{backup}` did not finish, so {env}'s database may hold part of it"
            ),
            _ => format!("{env}'s data was not changed"),
        };
        let replicas = rec
            .facts
            .replicas
            .map(|r| r.to_string())
            .unwrap_or_default();
        match result {
            Ok(detail) => {
                rec.steps[last].state = StepState::Done;
                rec.steps[last].detail = detail.clone();
                rec.summary = Some(format!(
                    "{} failed: {why}. {detail}; {data}.{safety}",
                    rec.command
                ));
            }
            Err(err) => {
                rec.steps[last].state = StepState::Failed;
                rec.steps[last].detail = err.clone();
                rec.summary = Some(format!(
                    "{} failed: {why}. Scaling back failed too ({err}): {env} needs attention — `scale {env} {replicas}`{}; {data}.{safety}",
                    rec.command,
                    rec.facts
                        .hpa_name
                        .as_ref()
                        .map(|h| format!(" and re-create autoscaler {h}"))
                        .unwrap_or_default()
                ));
            }
        }
    }

    /// Records the app's replicas and autoscaler, removes the autoscaler, scales to zero and
    /// waits for the pods to go. Idempotent: a resumed restore keeps what it recorded first.
    pub(super) async fn scale_down(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
    ) -> StepEnd {
        if rec.facts.replicas.is_none() {
            let d = match c.deployment(&e.deployment).await {
                Ok(d) => d,
                Err(err) => return StepEnd::Failed(err.into()),
            };
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            match c.hpa_for(Workload::Deployment, &e.deployment).await {
                Ok(Some(h)) => {
                    rec.facts.hpa = Some(SavedHpa::of(&h));
                    rec.facts.hpa_name = Some(h.metadata.name.clone().unwrap_or_default());
                }
                Ok(None) => {}
                Err(err) => return StepEnd::Failed(err.into()),
            }
            rec.facts.replicas = Some(replicas);
            // Journalled before anything changes, so a failure or a crash can always put it back.
            if let Err(why) = self.journal(rec).await {
                return StepEnd::Failed(why);
            }
        }
        let replicas = rec
            .facts
            .replicas
            .map(|r| r.to_string())
            .unwrap_or_default();
        let mut hpa = String::new();
        if let Some(name) = rec.facts.hpa_name.clone() {
            if let Err(err) = c.delete_hpa(&name).await {
                return StepEnd::Failed(err.into());
            }
            hpa = format!(" and autoscaler {name} (removed)");
        }
        if let Err(err) = c
            .scale(Workload::Deployment, &e.deployment, 0, HpaPolicy::Respect)
            .await
        {
            return StepEnd::Failed(err.into());
        }
        if let Err(err) = c.wait_pods_gone(&e.deployment, PODS_GONE_LIMIT).await {
            return StepEnd::Failed(err.into());
        }
        StepEnd::Done(format!(
            "recorded {replicas} replicas{hpa}; {} at 0, all pods gone",
            e.deployment
        ))
    }

    /// Scales the app back to the recorded replicas, puts the autoscaler back and waits for it.
    pub(super) async fn scale_back(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &OpRecord,
    ) -> Result<String, String> {
        let replicas: i32 = rec
            .facts
            .replicas
            .ok_or_else(|| "the replicas before the restore were not recorded".to_string())?;
        c.scale(
            Workload::Deployment,
            &e.deployment,
            replicas,
            HpaPolicy::Respect,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut hpa = String::new();
        if let Some(saved) = &rec.facts.hpa {
            let not_back = |why: String| {
                format!(
                    "{} is back at {replicas} replicas, but its autoscaler is not: {why}",
                    e.deployment
                )
            };
            let json = match saved {
                SavedHpa::Spec(_) => saved.to_json().map_err(|err| not_back(err.to_string()))?,
                SavedHpa::Unreadable(_) => {
                    return Err(not_back(format!(
                        "the journal's copy of autoscaler {} is unreadable; create it again by hand",
                        rec.facts.hpa_name.as_deref().unwrap_or("(unnamed)")
                    )));
                }
            };
            let name = c
                .restore_hpa(&json)
                .await
                .map_err(|err| not_back(err.to_string()))?;
            hpa = format!(", autoscaler {name} restored");
        }
        match c.watch_rollout(&e.deployment, None, ROLLOUT_LIMIT).await {
            Ok(RolloutOutcome::Complete { .. }) => Ok(format!(
                "{} back at {replicas} replicas, all ready{hpa}",
                e.deployment
            )),
            Ok(RolloutOutcome::Failed {
                message,
                pod,
                reason,
            }) => Err(format!(
                "{} is back at {replicas} replicas{hpa}, but they do not become ready: {message}{}",
                e.deployment,
                super::failing(pod, reason)
            )),
            Err(err) => Err(format!(
                "{} is back at {replicas} replicas{hpa}, but {err}",
                e.deployment
            )),
        }
    }
}

impl Restore {
    /// The restore Job, from the backup named when the operation started.
    async fn restore_job<C: Chat>(&self, cx: &mut Step<'_, C>) -> StepEnd {
        let (engine, c, e, rec) = (cx.engine, cx.cluster, cx.e, &*cx.rec);
        let name = self.backup.name.clone();
        if !templates::safe_backup_name(&name) {
            return StepEnd::failed(format!(
                "the backup name `{name}` cannot be used as a file name"
            ));
        }
        let src = if self.backup.env.is_empty() {
            rec.env.clone()
        } else {
            self.backup.env.clone()
        };
        let src_cfg = engine.env_config(&src);
        let claim = src_cfg.backup.claim_or(&src_cfg).to_string();
        let p = templates::params(rec, e, &[("backup", &name), ("claim", &claim)]);
        match engine
            .template_job(c, e, templates::Kind::Restore, &p, RESTORE_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let report = JobReport::read(&r.message);
                let took = report
                    .restore_seconds
                    .map(|s| format!(" in {s} s"))
                    .unwrap_or_default();
                StepEnd::Done(format!(
                    "{name} of {src} restored{took}{}",
                    report.note_suffix()
                ))
            }
            Ok((job, r)) => StepEnd::Failed(OpError::Job(format!(
                "restore job {job} failed ({}){}",
                match &r.end {
                    JobEnd::Failed { reason, .. } => reason.clone(),
                    JobEnd::Complete => String::new(),
                },
                super::tail(&r.log_tail)
            ))),
            Err(err) => StepEnd::Failed(err.into()),
        }
    }
}
