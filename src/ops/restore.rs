//! Restore as steps of the operation engine: record the app's replicas and autoscaler, scale to zero, the restore Job, scale back, and the recovery that always puts the app back after a failure.

use std::time::Duration;

use super::engine::{Engine, RESTORE_LIMIT, ROLLOUT_LIMIT, StepEnd};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::JobEnd;
use crate::cluster::{Cluster, HpaPolicy, RolloutOutcome, Workload};
use crate::config::EnvironmentConfig;
use crate::store::{OpRecord, StepRecord, StepState};

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
        let backup = rec.data.get("backup_name").cloned().unwrap_or_default();
        let safety = rec
            .data
            .get("safety_name")
            .map(|n| {
                format!(" The safety backup `{n}` holds {env}'s data from before the restore.")
            })
            .unwrap_or_default();
        let scaled_up = rec
            .steps
            .iter()
            .any(|s| s.name == "scale up" && s.state == StepState::Done);
        if !rec.data.contains_key("replicas") || scaled_up {
            // Nothing was scaled down (or it is already back): the app was not touched.
            let data = if rec
                .steps
                .iter()
                .any(|s| s.name == "restore" && s.state == StepState::Done)
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
            ..StepRecord::pending("recover")
        });
        let _ = self.save(rec).await; // recovery goes ahead whatever the journal says
        let last = rec.steps.len() - 1;
        let result = self.scale_back(cluster, e, rec).await;
        rec.steps[last].finished_ms = Some(self.now_ms());
        let restore_state = rec
            .steps
            .iter()
            .find(|s| s.name == "restore")
            .map(|s| s.state)
            .unwrap_or(StepState::Pending);
        let data = match restore_state {
            StepState::Done => format!("{env} holds the restored data of `{backup}`"),
            StepState::Failed | StepState::Running => format!(
                "the restore of `{backup}` did not finish, so {env}'s database may hold part of it"
            ),
            _ => format!("{env}'s data was not changed"),
        };
        let replicas = rec.data.get("replicas").cloned().unwrap_or_default();
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
                    rec.data
                        .get("hpa_name")
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
        if !rec.data.contains_key("replicas") {
            let d = match c.deployment(&e.deployment).await {
                Ok(d) => d,
                Err(err) => return StepEnd::Failed(err.to_string()),
            };
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            match c.hpa_for(Workload::Deployment, &e.deployment).await {
                Ok(Some(h)) => {
                    rec.data
                        .insert("hpa".into(), crate::cluster::hpa_snapshot(&h));
                    rec.data.insert(
                        "hpa_name".into(),
                        h.metadata.name.clone().unwrap_or_default(),
                    );
                }
                Ok(None) => {}
                Err(err) => return StepEnd::Failed(err.to_string()),
            }
            rec.data.insert("replicas".into(), replicas.to_string());
            // Journalled before anything changes, so a failure or a crash can always put it back.
            if let Err(err) = self.inner.store.put_op(rec) {
                return StepEnd::Failed(format!("cannot journal the app's state: {err}"));
            }
        }
        let replicas = rec.data.get("replicas").cloned().unwrap_or_default();
        let mut hpa = String::new();
        if let Some(name) = rec.data.get("hpa_name").cloned() {
            if let Err(err) = c.delete_hpa(&name).await {
                return StepEnd::Failed(err.to_string());
            }
            hpa = format!(" and autoscaler {name} (removed)");
        }
        if let Err(err) = c
            .scale(Workload::Deployment, &e.deployment, 0, HpaPolicy::Respect)
            .await
        {
            return StepEnd::Failed(err.to_string());
        }
        if let Err(err) = c.wait_pods_gone(&e.deployment, PODS_GONE_LIMIT).await {
            return StepEnd::Failed(err.to_string());
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
            .data
            .get("replicas")
            .and_then(|r| r.parse().ok())
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
        if let Some(saved) = rec.data.get("hpa") {
            let name = c.restore_hpa(saved).await.map_err(|err| {
                format!(
                    "{} is back at {replicas} replicas, but its autoscaler is not: {err}",
                    e.deployment
                )
            })?;
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

    /// The restore Job, from the backup named when the operation started.
    pub(super) async fn restore_job(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
    ) -> StepEnd {
        let name = rec.data.get("backup_name").cloned().unwrap_or_default();
        if !templates::safe_backup_name(&name) {
            return StepEnd::Failed(format!(
                "the backup name `{name}` cannot be used as a file name"
            ));
        }
        let src = rec
            .data
            .get("backup_env")
            .cloned()
            .unwrap_or_else(|| rec.env.clone());
        let src_cfg = self
            .inner
            .config
            .environments
            .get(&src)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(&src));
        let claim = src_cfg.backup.claim_or(&src_cfg).to_string();
        let p = templates::params(rec, e, &[("backup", &name), ("claim", &claim)]);
        match self
            .template_job(c, e, templates::Kind::Restore, &p, RESTORE_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v: serde_json::Value =
                    serde_json::from_str(&r.message).unwrap_or(serde_json::Value::Null);
                let took = v["restore_seconds"]
                    .as_u64()
                    .map(|s| format!(" in {s} s"))
                    .unwrap_or_default();
                StepEnd::Done(format!("{name} of {src} restored{took}"))
            }
            Ok((job, r)) => StepEnd::Failed(format!(
                "restore job {job} failed ({}){}",
                match &r.end {
                    JobEnd::Failed { reason, .. } => reason.clone(),
                    JobEnd::Complete => String::new(),
                },
                super::tail(&r.log_tail)
            )),
            Err(err) => StepEnd::Failed(err),
        }
    }
}
