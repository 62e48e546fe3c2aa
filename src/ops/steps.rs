//! Steps several operations share: following a rollout while editing the progress message, the smoke test against the app, and putting the app back on a revision after a failure.

use super::engine::{Engine, OpError, ROLLOUT_LIMIT, StepEnd};
use crate::chat::Chat;
use crate::cluster::rollout::RolloutState;
use crate::cluster::{Cluster, ClusterError, RolloutOutcome};
use crate::config::{EnvironmentConfig, SmokeConfig};
use crate::journal::{OpRecord, OpState, StepKind, StepRecord, StepState};

impl<C: Chat> Engine<C> {
    /// Follows a rollout, editing the step's detail as it moves.
    pub(crate) async fn follow(
        &self,
        c: &Cluster,
        deployment: &str,
        rec: &mut OpRecord,
        index: usize,
    ) -> StepEnd {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = c.watch_rollout(deployment, Some(tx), ROLLOUT_LIMIT);
        tokio::pin!(watch);
        loop {
            tokio::select! {
                r = &mut watch => {
                    return match r {
                        Ok(RolloutOutcome::Complete { revision }) => {
                            if let Some(r) = revision {
                                rec.facts.revision = Some(r);
                            }
                            StepEnd::Done(format!("complete{}", revision.map(|r| format!(", revision {r}")).unwrap_or_default()))
                        }
                        Ok(RolloutOutcome::Failed { message, pod, reason }) => StepEnd::failed(format!("{message}{}", super::failing(pod, reason))),
                        Err(err) => StepEnd::Failed(err.into()),
                    };
                }
                Some(p) = rx.recv() => {
                    if !matches!(p.state, RolloutState::Complete) {
                        rec.steps[index].detail = format!("{} ({}/{} ready)", p.state.describe(deployment), p.ready, p.desired);
                        self.tick(rec).await;
                    }
                }
            }
        }
    }

    pub(crate) async fn smoke(&self, smoke: &SmokeConfig, version: Option<&str>) -> StepEnd {
        let deadline = tokio::time::Instant::now() + smoke.timeout;
        loop {
            let last;
            match self.inner.http.get(&smoke.url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value =
                        resp.json().await.unwrap_or(serde_json::Value::Null);
                    if status != smoke.status {
                        last = format!("GET {} → {status}, expected {}", smoke.url, smoke.status);
                    } else {
                        match (&smoke.version_field, version) {
                            (Some(field), Some(v)) => {
                                let got = crate::redact::outside(
                                    body.get(field).and_then(|x| x.as_str()).unwrap_or_default(),
                                );
                                let want = v.trim_start_matches('v');
                                if !got.is_empty()
                                    && (got == v || want.starts_with(got.trim_start_matches('v')))
                                {
                                    return StepEnd::Done(format!("{status}, {field} {got}"));
                                }
                                last =
                                    format!("GET {} → {field} is `{got}`, expected {v}", smoke.url);
                            }
                            _ => return StepEnd::Done(format!("{status}")),
                        }
                    }
                }
                Err(e) => {
                    last = format!(
                        "GET {} failed: {}",
                        smoke.url,
                        crate::redact::outside(&e.to_string())
                    )
                }
            }
            if tokio::time::Instant::now() + smoke.interval > deadline {
                return StepEnd::Failed(OpError::Smoke(format!("smoke test failed: {last}")));
            }
            tokio::time::sleep(smoke.interval).await;
        }
    }

    /// After a failure: puts the app back on `revision` (the previous one when `None`), which
    /// ran `version`, as the step `step` added to the operation, watched and smoke-tested; the
    /// summary says how it went.
    pub(super) async fn put_back(
        &self,
        rec: &mut OpRecord,
        cluster: &Cluster,
        e: &EnvironmentConfig,
        (revision, version, step): (Option<i64>, Option<String>, StepKind),
        why: &str,
    ) {
        rec.steps.push(StepRecord {
            state: StepState::Running,
            started_ms: Some(self.now_ms()),
            ..StepRecord::pending(step)
        });
        // Putting the app back goes ahead even when the journal cannot be written (logged).
        let _ = self.save(rec).await;
        let last = rec.steps.len() - 1;
        let result = async {
            match cluster.undo(&e.deployment, revision).await {
                Ok(_) | Err(ClusterError::Undo(crate::cluster::UndoError::AlreadyThere(_))) => {}
                Err(err) => return Err(err.to_string()),
            }
            match cluster
                .watch_rollout(&e.deployment, None, ROLLOUT_LIMIT)
                .await
            {
                Ok(RolloutOutcome::Complete { .. }) => {}
                Ok(RolloutOutcome::Failed { message, .. }) => return Err(message),
                Err(err) => return Err(err.to_string()),
            }
            // The old version must answer too.
            if let Some(smoke) = &e.smoke
                && let StepEnd::Failed(why) = self.smoke(smoke, version.as_deref()).await
            {
                return Err(format!("put back, but {why}"));
            }
            Ok(())
        }
        .await;
        rec.steps[last].finished_ms = Some(self.now_ms());
        let old = version.unwrap_or_else(|| "the previous version".into());
        match result {
            Ok(()) => {
                rec.steps[last].state = StepState::Done;
                rec.steps[last].detail = format!("back on {old}");
                if rec.state != OpState::Cancelled {
                    rec.state = OpState::RolledBack;
                }
                rec.summary = Some(format!(
                    "{} failed ({why}); {} is back on {old}.",
                    rec.command, rec.env
                ));
            }
            Err(err) => {
                rec.steps[last].state = StepState::Failed;
                rec.steps[last].detail = err.clone();
                rec.state = OpState::Failed;
                rec.summary = Some(format!(
                    "{} failed ({why}) and the rollback failed too ({err}): {} needs attention.",
                    rec.command, rec.env
                ));
            }
        }
    }
}
