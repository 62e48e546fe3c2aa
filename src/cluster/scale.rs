//! Scaling a workload through `/scale`, minding the autoscaler that targets it, and taking that autoscaler away and back for a restore.

use super::*;

impl Cluster {
    /// The HPA whose `scaleTargetRef` is this workload, if any.
    pub async fn hpa_for(
        &self,
        kind: Workload,
        name: &str,
    ) -> Result<Option<HorizontalPodAutoscaler>, ClusterError> {
        let list = self
            .api::<HorizontalPodAutoscaler>()
            .list(&ListParams::default())
            .await
            .map_err(self.err("list horizontalpodautoscalers"))?;
        Ok(list.items.into_iter().find(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == kind.kind() && s.scale_target_ref.name == name
            })
        }))
    }

    /// Why `scale` with [`HpaPolicy::Respect`] would refuse `replicas` for a workload, if it would:
    /// asked before anyone confirms or approves.
    pub async fn scale_refusal(
        &self,
        kind: Workload,
        name: &str,
        replicas: i32,
    ) -> Result<Option<String>, ClusterError> {
        Ok(self
            .hpa_for(kind, name)
            .await?
            .and_then(|h| outside_autoscaler(&h, replicas)))
    }

    /// Scales a workload through its `/scale` subresource, minding an HPA that targets it.
    pub async fn scale(
        &self,
        kind: Workload,
        name: &str,
        replicas: i32,
        policy: HpaPolicy,
    ) -> Result<ScaleOutcome, ClusterError> {
        let hpa = self.hpa_for(kind, name).await?;
        let mut change = None;
        if let Some(h) = &hpa {
            let spec = h.spec.clone().unwrap_or_default();
            let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
            let hname = h.metadata.name.clone().unwrap_or_default();
            if let Some(why) = outside_autoscaler(h, replicas) {
                match policy {
                    HpaPolicy::Respect => {
                        return Err(ClusterError::Invalid {
                            action: format!("scale {name} to {replicas}"),
                            message: why,
                        });
                    }
                    HpaPolicy::Adjust => {
                        let after = (replicas.min(min), replicas.max(max));
                        let patch = json!({"spec": {"minReplicas": after.0.max(1), "maxReplicas": after.1}});
                        self.api::<HorizontalPodAutoscaler>()
                            .patch(&hname, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map_err(self.err(&format!("patch horizontalpodautoscaler {hname}")))?;
                        change = Some(HpaChange {
                            name: hname,
                            before: (min, max),
                            after: (after.0.max(1), after.1),
                        });
                    }
                }
            } else {
                change = Some(HpaChange {
                    name: hname,
                    before: (min, max),
                    after: (min, max),
                });
            }
        }
        let patch = json!({"spec": {"replicas": replicas}});
        let action = format!("scale {} {name}", kind.kind());
        let from = match kind {
            Workload::Deployment => {
                self.patch_scale(self.api::<Deployment>(), name, &patch, &action)
                    .await?
            }
            Workload::StatefulSet => {
                self.patch_scale(self.api::<StatefulSet>(), name, &patch, &action)
                    .await?
            }
        };
        Ok(ScaleOutcome {
            from,
            to: replicas,
            hpa: change,
        })
    }

    /// Reads a workload's `/scale` and patches it; returns the replicas it had.
    async fn patch_scale<K>(
        &self,
        api: Api<K>,
        name: &str,
        patch: &serde_json::Value,
        action: &str,
    ) -> Result<i32, ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let before = api.get_scale(name).await.map_err(self.err(action))?;
        retrying(|| async {
            api.patch_scale(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(self.err(action))
        })
        .await?;
        Ok(before.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Deletes an autoscaler (a restore needs the app at zero); save it first with [`hpa_snapshot`].
    pub async fn delete_hpa(&self, name: &str) -> Result<(), ClusterError> {
        match self
            .api::<HorizontalPodAutoscaler>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(self.err(&format!("delete horizontalpodautoscaler {name}"))(
                e,
            )),
        }
    }

    /// Puts back an autoscaler saved by [`hpa_snapshot`] (nothing to do if it exists).
    pub async fn restore_hpa(&self, saved: &str) -> Result<String, ClusterError> {
        let hpa: HorizontalPodAutoscaler =
            serde_json::from_str(saved).map_err(|e| ClusterError::Invalid {
                action: "restore a horizontalpodautoscaler".into(),
                message: e.to_string(),
            })?;
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let action = format!("create horizontalpodautoscaler {name}");
        match retrying(|| async {
            self.api::<HorizontalPodAutoscaler>()
                .create(&PostParams::default(), &hpa)
                .await
                .map_err(self.err(&action))
        })
        .await
        {
            Ok(_) | Err(ClusterError::AlreadyExists { .. }) => Ok(name),
            Err(e) => Err(e),
        }
    }
}
