//! Off-site copies as steps of operations: copying a backup into the encrypted bucket after it is taken, fetching one back onto the volume before a restore or verify `from offsite`, and removing the copies retention drops.

use super::backup::Taken;
use super::engine::{Engine, JOB_LIMIT, OpError, StepEnd};
use super::templates::{self, Kind};
use crate::catalog::{self, OffsiteCopy};
use crate::chat::Chat;
use crate::cluster::Cluster;
use crate::cluster::jobs::{JobEnd, JobReport};
use crate::config::EnvironmentConfig;
use crate::journal::OpRecord;

impl<C: Chat> Engine<C> {
    /// Copies the backup `which` of `rec` off-site and reads it back. A failed copy does not
    /// fail the operation that took the backup (that is on the volume): the step ends with a
    /// warning, the catalog marks the backup as on the cluster only, and the alerts channel is told.
    pub(crate) async fn copy_offsite(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
        which: Taken,
    ) -> StepEnd {
        let Some(o) = &e.backup.offsite else {
            return StepEnd::Done("no off-site store is configured".into());
        };
        let Some(taken) = which.of(rec).clone() else {
            return StepEnd::failed("no backup was taken to copy off-site".into());
        };
        let name = taken.name.clone().unwrap_or_else(|| taken.job.clone());
        let p = templates::params(rec, e, &[("backup", &name)]);
        let why = match self
            .template_job(c, e, Kind::OffsiteCopy, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let report = JobReport::read(&r.message);
                let copy = OffsiteCopy {
                    url: report.offsite.unwrap_or_else(|| o.url(&rec.env, &name)),
                    sha256: report.sha256,
                    bytes: report.bytes,
                    at_ms: self.now_ms(),
                };
                let said = format!(
                    "`{name}` copied to {}: {} encrypted, read back and checked",
                    copy.url,
                    catalog::size(copy.bytes)
                );
                if let Err(err) = catalog::set_offsite(self.store(), &rec.env, &taken.job, Ok(copy))
                {
                    tracing::error!(error = %err, "cannot record the off-site copy in the catalog");
                }
                return StepEnd::Done(said);
            }
            Ok((job, r)) => {
                let reason = match &r.end {
                    JobEnd::Failed { reason, .. } => reason.clone(),
                    JobEnd::Complete => String::new(),
                };
                let detail = if r.message.is_empty() {
                    super::tail(&r.log_tail)
                } else {
                    format!(": {}", r.message.lines().last().unwrap_or_default())
                };
                format!("job {job} failed ({reason}){detail}")
            }
            Err(err) => err,
        };
        if let Err(err) = catalog::set_offsite(self.store(), &rec.env, &taken.job, Err(why.clone()))
        {
            tracing::error!(error = %err, "cannot record the failed off-site copy in the catalog");
        }
        crate::telemetry::metrics()
            .step_failures
            .get_or_create(&crate::telemetry::labels(&[
                ("command", "off-site copy"),
                ("kind", "job"),
            ]))
            .inc();
        let text = format!(
            "🚨 #{} backup `{name}` of {} was not copied off-site: {}. It is on the cluster only.",
            rec.id,
            rec.env,
            crate::redact::outside(&why)
        );
        self.alert(&rec.env, &text).await;
        StepEnd::Done(format!(
            "⚠ not copied off-site ({why}); the backup is on the cluster only"
        ))
    }

    /// Fetches backup `name` from off-site onto the volume, checked against its checksum.
    pub(crate) async fn fetch_offsite(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &OpRecord,
        name: &str,
    ) -> StepEnd {
        if e.backup.offsite.is_none() {
            return StepEnd::failed(format!("{} copies no backups off-site", rec.env));
        }
        let p = templates::params(rec, e, &[("backup", name)]);
        match self
            .template_job(c, e, Kind::OffsiteFetch, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => {
                let report = JobReport::read(&r.message);
                StepEnd::Done(format!(
                    "`{name}` fetched onto {}: {} files, {}, checksum matches",
                    e.backup.claim_or(e),
                    report.files.unwrap_or(0),
                    catalog::size(report.bytes)
                ))
            }
            Ok((job, r)) => StepEnd::Failed(OpError::Job(format!(
                "fetch job {job} failed: {}{}",
                r.message.lines().last().unwrap_or_default(),
                super::tail(&r.log_tail)
            ))),
            Err(why) => StepEnd::Failed(OpError::Job(why)),
        }
    }

    /// Removes the off-site copies of `names` (the backups retention dropped).
    pub(crate) async fn prune_offsite(
        &self,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &OpRecord,
        names: &[String],
    ) -> StepEnd {
        if names.is_empty() {
            return StepEnd::Done("nothing to remove".into());
        }
        let joined = names.join(":");
        let p = templates::params(rec, e, &[("names", &joined)]);
        match self
            .template_job(c, e, Kind::OffsitePrune, &p, JOB_LIMIT)
            .await
        {
            Ok((_, r)) if r.end == JobEnd::Complete => StepEnd::Done(format!(
                "removed the off-site copies of {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Ok((job, r)) => StepEnd::Failed(OpError::Job(format!(
                "off-site prune job {job} failed: {}{}",
                r.message.lines().last().unwrap_or_default(),
                super::tail(&r.log_tail)
            ))),
            Err(why) => StepEnd::Failed(OpError::Job(why)),
        }
    }
}
