//! Backup work as steps of the operation engine: taking a backup (from the CronJob or the template), test-restores, applying retention, and the Jobs rendered from the backup templates.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{Engine, JOB_LIMIT, RESTORE_LIMIT, StepEnd};
use super::templates;
use crate::chat::Chat;
use crate::cluster::jobs::{self, JobEnd};
use crate::cluster::{Cluster, ClusterError};
use crate::command::{BackupRef, Command};
use crate::config::EnvironmentConfig;
use crate::error::UserError;
use crate::store::{OpRecord, Store};

impl<C: Chat> Engine<C> {
    /// Takes a backup: a Job from the environment's backup CronJob, or from the backup template
    /// when it has none; records it (or its failure) in the catalog. `key` names it in the journal.
    pub(super) async fn take_backup(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
        key: &str,
        label: &str,
    ) -> StepEnd {
        let op = rec.id;
        let job_key = format!("{key}_job");
        let name_key = format!("{key}_name");
        let job = match rec.data.get(&job_key).cloned() {
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
                        let backup = templates::backup_name(&rec.env, self.now_ms());
                        let p = templates::params(rec, e, &[("backup", &backup)]);
                        let mut job = match templates::render(
                            &self.inner.config.bot.commands_dir,
                            e,
                            templates::Kind::Backup,
                            &p,
                        ) {
                            Ok(j) => j,
                            Err(err) => return StepEnd::Failed(err.to_string()),
                        };
                        let base = job
                            .metadata
                            .name
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches(&format!("-{}", rec.job_suffix()))
                            .to_string();
                        let name = jobs::job_name(&format!("{base}-{label}"), &rec.job_suffix());
                        job.metadata.name = Some(name.clone());
                        if let Err(err) = c.create_owned_job(&mut job, op, &rec.mark).await {
                            return StepEnd::Failed(err.to_string());
                        }
                        rec.data.insert(name_key.clone(), backup);
                        name
                    }
                    Err(err) => return StepEnd::Failed(err.to_string()),
                }
            }
        };
        rec.data.insert(job_key, job.clone());
        let _ = self.journal(rec).await;
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
                        && let Some(n) = rec.data.get(&name_key)
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
                    rec.data.insert(name_key, b.name.clone());
                    StepEnd::Done(super::backup_summary(&r.message))
                }
                JobEnd::Failed { reason, .. } => {
                    let f = crate::catalog::Failure {
                        env: rec.env.clone(),
                        job: job.clone(),
                        at_ms: self.now_ms(),
                        reason: reason.clone(),
                    };
                    let _ = crate::catalog::record_failure(&self.inner.store, &f);
                    StepEnd::Failed(format!(
                        "backup job {job} failed ({reason}){}",
                        super::tail(&r.log_tail)
                    ))
                }
            },
            Err(err) => StepEnd::Failed(err.to_string()),
        }
    }

    /// Runs a Job rendered from a backup template and waits for it.
    pub(super) async fn template_job(
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

    /// A test-restore into a throwaway database; the result goes into the catalog.
    pub(super) async fn verify_job(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
    ) -> StepEnd {
        let name = rec.data.get("backup_name").cloned().unwrap_or_default();
        let backup_job = rec.data.get("backup_job").cloned().unwrap_or_default();
        if !templates::safe_backup_name(&name) {
            return StepEnd::Failed(format!(
                "the backup name `{name}` cannot be used as a file name"
            ));
        }
        let finished: i64 = rec
            .data
            .get("backup_finished_ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| self.now_ms());
        let p = templates::params(rec, e, &[("backup", &name)]);
        let result = self
            .template_job(c, e, templates::Kind::Verify, &p, RESTORE_LIMIT)
            .await;
        let now = self.now_ms();
        let age_secs = ((now - finished).max(0) / 1000) as u64;
        let age = crate::catalog::ago(finished, now)
            .trim_end_matches(" ago")
            .to_string();
        let (ok, restore_secs, detail) = match result {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v: serde_json::Value =
                    serde_json::from_str(&r.message).unwrap_or(serde_json::Value::Null);
                let secs = v["restore_seconds"].as_u64();
                let counts = match (v["collections"].as_u64(), v["documents"].as_u64()) {
                    (Some(c), Some(d)) => format!("{c} collections, {d} documents"),
                    _ => "the data".into(),
                };
                let took = secs.map(|s| format!(" in {s} s")).unwrap_or_default();
                if v["ok"].as_bool() == Some(true) {
                    (
                        true,
                        secs,
                        format!(
                            "{name} restored{took} into a throwaway database; {counts} match its manifest; it was {age} old"
                        ),
                    )
                } else {
                    let mism: Vec<String> = v["mismatches"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| m.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
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
        if let Err(err) = crate::catalog::set_verify(&self.inner.store, &rec.env, &backup_job, v) {
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
            StepEnd::Failed(detail)
        }
    }

    /// Applies the retention policy: a prune Job deletes what the plan drops, the catalog forgets it.
    pub(super) async fn prune(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
    ) -> StepEnd {
        let records = crate::catalog::list(&self.inner.store, Some(&rec.env));
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
        match self
            .template_job(c, e, templates::Kind::Prune, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let v: serde_json::Value =
                    serde_json::from_str(&r.message).unwrap_or(serde_json::Value::Null);
                for b in &safe {
                    let _ = crate::catalog::remove(&self.inner.store, &rec.env, &b.job);
                }
                let p = crate::catalog::Prune {
                    env: rec.env.clone(),
                    at_ms: self.now_ms(),
                    removed: names.clone(),
                    used_bytes: v["used_bytes"].as_u64(),
                    free_bytes: v["free_bytes"].as_u64(),
                };
                let _ = crate::catalog::record_prune(&self.inner.store, &p);
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
            Ok((job, r)) => StepEnd::Failed(format!(
                "prune job {job} failed{}",
                super::tail(&r.log_tail)
            )),
            Err(err) => StepEnd::Failed(err),
        }
    }
}

/// The backup a restore or verify uses, resolved when it starts (so that the safety backup a
/// restore takes first is never mistaken for `latest`).
pub(super) fn resolve_backup(
    store: &Store,
    cmd: &Command,
    env: &str,
) -> Result<BTreeMap<String, String>, UserError> {
    let (src, which) = match cmd {
        Command::Restore { backup, from, .. } => (
            from.clone().unwrap_or_else(|| env.to_string()),
            backup.clone(),
        ),
        Command::Verify { backup, .. } => {
            (env.to_string(), backup.clone().unwrap_or(BackupRef::Latest))
        }
        _ => return Ok(BTreeMap::new()),
    };
    let Some(b) = crate::catalog::find(store, &src, &which) else {
        return Err(UserError::Refused(match which {
            BackupRef::Latest => {
                format!("No backup of {src} is known; `backup now {src}` takes one.")
            }
            BackupRef::Named(n) => {
                format!("No backup of {src} is called `{n}`; `backup list {src}` shows them.")
            }
        }));
    };
    let mut data = BTreeMap::new();
    data.insert("backup_name".into(), b.name);
    data.insert("backup_job".into(), b.job);
    data.insert("backup_env".into(), src);
    data.insert("backup_finished_ms".into(), b.finished_ms.to_string());
    Ok(data)
}
