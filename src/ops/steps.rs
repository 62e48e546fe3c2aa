//! Steps several operations share: following a rollout while editing the progress message, and the smoke test against the app.

use super::engine::{Engine, OpError, ROLLOUT_LIMIT, StepEnd};
use crate::chat::Chat;
use crate::cluster::rollout::RolloutState;
use crate::cluster::{Cluster, RolloutOutcome};
use crate::config::SmokeConfig;
use crate::journal::OpRecord;

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
}
