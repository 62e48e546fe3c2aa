//! A runbook from `commands/` as an operation (and as a deploy's pre-deploy step): its Job, rendered from the template captured when the operation started, owned by the operation's mark.

use std::collections::BTreeMap;

use super::engine::{JOB_LIMIT, OpError, StepEnd};
use super::operation::{self, Operation, Step};
use crate::chat::Chat;
use crate::cluster::jobs::{self, JobEnd};
use crate::config::EnvironmentConfig;
use crate::journal::{OpRecord, Runbook, StepKind, StepRecord};

impl Operation for Runbook {
    fn steps(&self, _env: &str, _e: &EnvironmentConfig) -> Vec<StepRecord> {
        vec![StepRecord::pending(StepKind::Job)]
    }

    async fn step<C: Chat>(&self, step: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        if *step != StepKind::Job {
            return operation::foreign(step, "a runbook");
        }
        run(cx, &self.name, &self.job, &self.params).await
    }

    fn summary(&self, _rec: &OpRecord) -> String {
        "Done.".into()
    }
}

/// Renders the runbook's Job from `template`, creates it under the operation's mark and waits.
pub(super) async fn run<C: Chat>(
    cx: &mut Step<'_, C>,
    name: &str,
    template: &str,
    params: &BTreeMap<String, String>,
) -> StepEnd {
    if template.is_empty() {
        return StepEnd::failed(format!("runbook `{name}` is not defined in commands/"));
    }
    let (rec, e) = (&*cx.rec, cx.e);
    let mut values = params.clone();
    values.insert("env".into(), rec.env.clone());
    values.insert("namespace".into(), e.namespace_or(&rec.env).to_string());
    values.insert("image".into(), e.image.clone().unwrap_or_default());
    values.insert("op".into(), rec.id.to_string());
    let mut job = match jobs::render_job_template(name, template, &values) {
        Ok(j) => j,
        Err(err) => return StepEnd::Failed(err.into()),
    };
    let base = job
        .metadata
        .name
        .take()
        .or_else(|| {
            job.metadata
                .generate_name
                .take()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| name.to_string());
    let job_name = jobs::job_name(&base, &rec.job_suffix());
    job.metadata.name = Some(job_name.clone());
    if let Err(err) = cx
        .cluster
        .create_owned_job(&mut job, rec.id.get(), &rec.mark)
        .await
    {
        return StepEnd::Failed(err.into());
    }
    match cx.cluster.wait_job(&job_name, JOB_LIMIT).await {
        Ok(r) => match r.end {
            JobEnd::Complete => StepEnd::Done(if r.message.is_empty() {
                format!("job {job_name} finished")
            } else {
                format!("job {job_name}: {}", r.message)
            }),
            JobEnd::Failed { reason, .. } => StepEnd::Failed(OpError::Job(format!(
                "job {job_name} failed ({reason}){}",
                super::tail(&r.log_tail)
            ))),
        },
        Err(err) => StepEnd::Failed(err.into()),
    }
}
