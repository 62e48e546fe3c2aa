//! `scale ENV REPLICAS [COMPONENT]`: the app's Deployment or the database's StatefulSet, within the autoscaler's bounds (checked before confirmation).

use super::engine::StepEnd;
use super::operation::{self, Operation, Step};
use crate::chat::Chat;
use crate::cluster::{HpaPolicy, Workload};
use crate::config::EnvironmentConfig;
use crate::journal::{OpRecord, Scale, StepKind, StepRecord};

impl Operation for Scale {
    fn steps(&self, _env: &str, _e: &EnvironmentConfig) -> Vec<StepRecord> {
        vec![StepRecord::pending(StepKind::Scale)]
    }

    async fn step<C: Chat>(&self, step: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        if *step != StepKind::Scale {
            return operation::foreign(step, "a scale");
        }
        let e = cx.e;
        let (kind, wname) = match self.component.as_deref() {
            Some(n) if n == e.database => (Workload::StatefulSet, n.to_string()),
            _ => (Workload::Deployment, e.deployment.clone()),
        };
        match cx
            .cluster
            .scale(kind, &wname, self.replicas as i32, HpaPolicy::Respect)
            .await
        {
            Ok(out) => {
                let hpa = out
                    .hpa
                    .map(|h| {
                        format!(
                            " (autoscaler {} keeps it between {} and {})",
                            h.name, h.after.0, h.after.1
                        )
                    })
                    .unwrap_or_default();
                StepEnd::Done(format!(
                    "{wname} from {} to {} replicas{hpa}",
                    out.from, out.to
                ))
            }
            Err(err) => StepEnd::Failed(err.into()),
        }
    }

    fn summary(&self, _rec: &OpRecord) -> String {
        "Done.".into()
    }
}
