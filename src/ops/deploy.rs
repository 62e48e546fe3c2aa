//! `deploy ENV VERSION`: an optional backup first, the pre-deploy runbooks, the new image, the rollout and the smoke test; on failure the app goes back to the revision it ran before.

use super::engine::StepEnd;
use super::operation::{self, Operation, Step, Undo};
use crate::chat::Chat;
use crate::cluster::rollout;
use crate::config::EnvironmentConfig;
use crate::journal::{Deploy, OpRecord, StepKind, StepRecord};

impl Operation for Deploy {
    fn steps(&self, env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        let mut steps = Vec::new();
        let wanted = e.pre_deploy_backup.unwrap_or_else(|| e.is_production(env));
        steps.push(match (wanted, self.no_backup) {
            (true, false) => StepRecord::pending(StepKind::Backup),
            (true, true) => operation::skipped(StepKind::Backup, "skipped with --no-backup"),
            (false, _) => operation::skipped(StepKind::Backup, "not production"),
        });
        if wanted && !self.no_backup && e.backup.offsite.is_some() {
            steps.push(StepRecord::pending(StepKind::OffsiteCopy));
        }
        for r in &self.runbooks {
            steps.push(StepRecord::pending(StepKind::Runbook(r.name.clone())));
        }
        steps.push(StepRecord::pending(StepKind::SetImage));
        steps.push(StepRecord::pending(StepKind::Rollout));
        steps.push(operation::smoke_step(e));
        steps
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        match kind {
            StepKind::Backup => {
                cx.engine
                    .take_backup(
                        cx.cluster,
                        cx.e,
                        cx.rec,
                        super::backup::Taken::Backup,
                        "pre",
                    )
                    .await
            }
            StepKind::OffsiteCopy => {
                cx.engine
                    .copy_offsite(cx.cluster, cx.e, cx.rec, super::backup::Taken::Backup)
                    .await
            }
            StepKind::SetImage => self.set_image(cx).await,
            StepKind::Rollout => {
                cx.engine
                    .follow(cx.cluster, &cx.e.deployment, cx.rec, cx.index)
                    .await
            }
            StepKind::SmokeTest => match &cx.e.smoke {
                Some(smoke) => cx.engine.smoke(smoke, Some(&self.version)).await,
                None => StepEnd::Done("none configured".into()),
            },
            StepKind::Runbook(name) => match self.runbooks.iter().find(|j| j.name == *name) {
                Some(r) => {
                    let params = [("version".to_string(), self.version.clone())].into();
                    super::runbook::run(cx, &r.name, &r.job, &params).await
                }
                None => operation::foreign(kind, "this deploy"),
            },
            other => operation::foreign(other, "this deploy"),
        }
    }

    fn undo(&self, rec: &OpRecord, e: &EnvironmentConfig) -> Undo {
        if e.auto_rollback && operation::started(rec, &StepKind::SetImage) {
            Undo::Revision {
                revision: rec.facts.previous_revision,
                version: rec
                    .facts
                    .previous_image
                    .as_deref()
                    .map(|i| crate::cluster::split_image(i).1.to_string()),
                step: StepKind::Rollback,
            }
        } else {
            Undo::Nothing
        }
    }

    fn summary(&self, rec: &OpRecord) -> String {
        let rev = rec
            .facts
            .revision
            .map(|r| format!(" (revision {r})"))
            .unwrap_or_default();
        format!("{} runs {}{rev}.", rec.env, self.version)
    }
}

impl Deploy {
    /// Records the revision and image it replaces (journaled before the change), then sets the
    /// image with the change cause.
    async fn set_image<C: Chat>(&self, cx: &mut Step<'_, C>) -> StepEnd {
        let (c, e) = (cx.cluster, cx.e);
        // The image is recorded with the revision, always: it says whether they were recorded.
        if cx.rec.facts.previous_image.is_none() {
            match c.deployment(&e.deployment).await {
                Ok(d) => {
                    cx.rec.facts.previous_revision = d
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(rollout::REVISION))
                        .and_then(|r| r.parse().ok());
                    cx.rec.facts.previous_image =
                        Some(rollout::current_image(&d, Some(e.container())).unwrap_or_default());
                    if let Err(why) = cx.engine.journal(cx.rec).await {
                        return StepEnd::Failed(why);
                    }
                }
                Err(err) => return StepEnd::Failed(err.into()),
            }
        }
        let cause = format!(
            "deploy {} by {} (#{})",
            self.version, cx.rec.user, cx.rec.id
        );
        // Without a configured repository, only the tag changes: the repository is the one the
        // Deployment ran before this deploy (journaled above, so a resumed step picks the same).
        let image = if super::keeps_repository(e, &self.version) {
            let before = cx.rec.facts.previous_image.clone().unwrap_or_default();
            match super::with_tag(&before, &self.version) {
                Some(i) => i,
                None => {
                    return StepEnd::Failed(super::engine::OpError::Step(format!(
                        "deployment {} runs no image to take the repository from; set `image` in [environments.{}]",
                        e.deployment, cx.rec.env
                    )));
                }
            }
        } else {
            self.image.clone()
        };
        match c
            .set_image(&e.deployment, e.container(), &image, &cause)
            .await
        {
            Ok(_) => StepEnd::Done(image),
            Err(err) => StepEnd::Failed(err.into()),
        }
    }
}
