//! Cataloguing the backups the cluster's own CronJob takes, as the alerter sees their Jobs end: only runs the CronJob (by uid) created decide anything.

use super::*;

impl<C: Chat> Alerter<C> {
    /// Backups the cluster's own CronJob took (and other runs of it) go into the catalog too.
    /// A Job is a run of the backup CronJob only when its controller reference carries the
    /// CronJob's uid (a name anyone can write); a run the CronJob's schedule did not create is
    /// recorded with its creator and decides nothing until a verify proves it.
    pub(super) async fn catalogue(&self, env: &str, job: &Value) {
        use crate::cluster::jobs;
        let cronjob = self
            .config
            .environments
            .get(env)
            .map(|e| e.backup_cronjob.clone())
            .unwrap_or_else(|| "mongodb-backup".into());
        if job["metadata"]["labels"][jobs::OPERATION_LABEL].is_string() {
            // An operation of the bot ran it and records the result itself.
            return;
        }
        let refs = &job["metadata"]["ownerReferences"];
        let names_it = refs.as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["kind"] == "CronJob" && r["name"] == cronjob.as_str())
        });
        let condition = |kind: &str| {
            job["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
        };
        let (complete, failed) = (condition("Complete"), condition("Failed"));
        if !names_it || !(complete || failed) {
            return;
        }
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match crate::catalog::get(&self.store, env, &name) {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, env, job = name, "cannot read the backup catalog");
                return;
            }
        }
        let Some(c) = self.clusters.get(env) else {
            return;
        };
        let uid = match self
            .watched
            .get(&(env.to_string(), WatchedKind::CronJobs, cronjob.clone()))
            .and_then(|cj| cj["metadata"]["uid"].as_str())
        {
            Some(uid) => Some(uid.to_string()),
            None => match c.cronjob_uid(&cronjob).await {
                Ok(uid) => uid,
                Err(e) => {
                    tracing::warn!(error = %e, env, job = name, "cannot read the backup CronJob to check a Job's owner; not catalogued now");
                    return;
                }
            },
        };
        if !uid.is_some_and(|uid| jobs::controlled_by(refs, "CronJob", &uid)) {
            tracing::warn!(
                env,
                job = name,
                cronjob,
                "a Job names the backup CronJob as its owner without its uid; it is not a run of the CronJob and stays out of the catalog"
            );
            return;
        }
        if failed {
            // Kept for the daily report (the alert itself is raised elsewhere); once per Job.
            let f = crate::catalog::Failure {
                env: env.to_string(),
                job: name,
                at_ms: self.clock.now_ms(),
                reason: job["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
                    .and_then(|c| c["reason"].as_str())
                    .unwrap_or("Failed")
                    .to_string(),
            };
            if let Err(e) = crate::catalog::record_failure_if_new(&self.store, &f) {
                tracing::error!(error = %e, env, job = f.job, "cannot record a failed backup for the report");
            }
            return;
        }
        let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
        let message = match c.job_message(&name, job_uid).await {
            Ok(m) => m,
            Err(e) => {
                // Not recorded without its figures: the next event or relist tries again.
                tracing::warn!(error = %e, env, job = name, "cannot read a backup Job's result; not catalogued now");
                return;
            }
        };
        let creator = jobs::creator(&job["metadata"]["managedFields"]);
        let scheduled = creator.as_deref() == Some(jobs::CONTROLLER_MANAGER);
        let manual =
            job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual";
        let made_by = creator.as_deref().unwrap_or("an unknown manager");
        let by = if scheduled {
            format!("schedule (cronjob {cronjob})")
        } else if manual {
            format!("manual run of cronjob {cronjob} by {made_by}")
        } else {
            format!("run of cronjob {cronjob} created by {made_by}")
        };
        // When the Job finished, not when the bot saw it (a restarted bot lists old runs too).
        let finished_ms = job["status"]["completionTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|| self.clock.now_ms());
        let mut b =
            crate::catalog::BackupRecord::from_result(env, &name, &message, &by, finished_ms);
        b.created_by = creator;
        b.outside = !scheduled;
        let newest = b.trusted()
            && crate::catalog::list(&self.store, Some(env))
                .iter()
                .find(|n| n.trusted())
                .is_none_or(|n| n.finished_ms <= b.finished_ms);
        match crate::catalog::record_if_new(&self.store, &b) {
            Ok(true) if newest => {
                // The newest backup's figures, whoever took it (the age alert a team sets on them).
                let m = crate::telemetry::metrics();
                let l = crate::telemetry::labels(&[("env", env)]);
                m.backup_bytes
                    .get_or_create(&l)
                    .set(b.bytes.unwrap_or(0) as i64);
                m.backup_timestamp
                    .get_or_create(&l)
                    .set(b.finished_ms / 1000);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, env, job = name, "cannot catalogue a backup"),
        }
    }
}
