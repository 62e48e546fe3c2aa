//! Pure rollout logic with kubectl's rules: rollout status, revision history and the undo plan.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const HASH: &str = "pod-template-hash";
/// Annotations an undo keeps from the Deployment rather than taking from the ReplicaSet.
const SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// Where a Deployment's rollout stands, by `kubectl rollout status` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// The controller has not yet seen the latest spec.
    WaitingForSpec,
    /// `updated` of `desired` new replicas exist.
    Updating {
        updated: i32,
        desired: i32,
    },
    /// Old replicas still running.
    TerminatingOld {
        old: i32,
    },
    /// New replicas exist but not all are available.
    Becoming {
        available: i32,
        updated: i32,
    },
    Complete,
    /// The progress deadline passed.
    DeadlineExceeded {
        message: String,
    },
}

impl RolloutState {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RolloutState::Complete | RolloutState::DeadlineExceeded { .. }
        )
    }

    /// kubectl's wording.
    pub fn describe(&self, name: &str) -> String {
        match self {
            RolloutState::WaitingForSpec => {
                "waiting for the deployment spec update to be observed".into()
            }
            RolloutState::Updating { updated, desired } => {
                format!("{updated} of {desired} new replicas have been updated")
            }
            RolloutState::TerminatingOld { old } => {
                format!("{old} old replicas are pending termination")
            }
            RolloutState::Becoming { available, updated } => {
                format!("{available} of {updated} updated replicas are available")
            }
            RolloutState::Complete => format!("deployment \"{name}\" successfully rolled out"),
            RolloutState::DeadlineExceeded { .. } => {
                format!("deployment \"{name}\" exceeded its progress deadline")
            }
        }
    }
}

/// Evaluates a Deployment against kubectl's rollout status rules.
pub fn rollout_state(d: &Deployment) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return RolloutState::WaitingForSpec;
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return RolloutState::WaitingForSpec;
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return RolloutState::DeadlineExceeded {
            message: c.message.clone().unwrap_or_default(),
        };
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return RolloutState::Updating { updated, desired };
    }
    if replicas > updated {
        return RolloutState::TerminatingOld {
            old: replicas - updated,
        };
    }
    if available < updated {
        return RolloutState::Becoming { available, updated };
    }
    RolloutState::Complete
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()
}

/// The ReplicaSets a Deployment controls (by controller owner reference).
pub fn owned<'a>(d: &Deployment, sets: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    sets.iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect()
}

/// One line of `kubectl rollout history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub number: i64,
    pub change_cause: Option<String>,
    /// Images of the revision's containers.
    pub images: Vec<String>,
}

/// The revision history, oldest first.
pub fn history(d: &Deployment, sets: &[ReplicaSet]) -> Vec<Revision> {
    let mut out: Vec<Revision> = owned(d, sets)
        .into_iter()
        .filter_map(|rs| {
            Some(Revision {
                number: revision_of(rs)?,
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_CAUSE).cloned()),
                images: template_images(rs.spec.as_ref().and_then(|s| s.template.as_ref())),
            })
        })
        .collect();
    out.sort_by_key(|r| r.number);
    out
}

fn template_images(t: Option<&PodTemplateSpec>) -> Vec<String> {
    t.and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Why an undo cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UndoError {
    #[error("deployment {0} is paused; resume it before rolling back")]
    Paused(String),
    #[error("unable to find specified revision {0} in history")]
    NoSuchRevision(i64),
    #[error("no rollout history found for deployment {0}")]
    NoHistory(String),
    #[error("skipped rollback (current template already matches revision {0})")]
    AlreadyThere(i64),
}

/// What an undo will do: the JSON patch `kubectl rollout undo` sends.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoPlan {
    pub to_revision: i64,
    pub patch: Value,
}

fn without_hash(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(l) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH);
    }
    v
}

/// Plans `kubectl rollout undo [--to-revision=N]`: the second-highest revision by default.
pub fn plan_undo(
    d: &Deployment,
    sets: &[ReplicaSet],
    to: Option<i64>,
) -> Result<UndoPlan, UndoError> {
    let name = d.metadata.name.clone().unwrap_or_default();
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Err(UndoError::Paused(name));
    }
    let mut owned: Vec<(i64, &ReplicaSet)> = owned(d, sets)
        .into_iter()
        .filter_map(|rs| Some((revision_of(rs)?, rs)))
        .collect();
    owned.sort_by_key(|(r, _)| *r);
    let (rev, rs) = match to {
        Some(n) if n > 0 => owned
            .iter()
            .find(|(r, _)| *r == n)
            .copied()
            .ok_or(UndoError::NoSuchRevision(n))?,
        _ => {
            if owned.len() < 2 {
                return Err(UndoError::NoHistory(name));
            }
            owned[owned.len() - 2]
        }
    };
    let target = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let current = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    if without_hash(&target) == without_hash(&current) {
        return Err(UndoError::AlreadyThere(rev));
    }
    let template = without_hash(&target);
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    if let Some(own) = &d.metadata.annotations {
        for k in SKIP {
            if let Some(v) = own.get(*k) {
                annotations.insert((*k).to_string(), v.clone());
            }
        }
    }
    if let Some(rs_ann) = &rs.metadata.annotations {
        for (k, v) in rs_ann {
            if !SKIP.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(UndoPlan {
        to_revision: rev,
        patch: json!([
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]),
    })
}

/// The image tag of `container` (or the first container) in the Deployment's template.
pub fn current_image(d: &Deployment, container: Option<&str>) -> Option<String> {
    let spec = d.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| container.is_none_or(|n| c.name == n))
        .and_then(|c| c.image.clone())
}

/// The strategic merge patch that sets an image and records the change cause, as `kubectl set image` plus `annotate`.
pub fn image_patch(container: &str, image: &str, change_cause: &str) -> Value {
    json!({
        "metadata": {"annotations": {CHANGE_CAUSE: change_cause}},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "rc", "generation": 2, "uid": "d1"},
            "spec": {"replicas": 3, "selector": {}, "template": {"spec": {"containers": [{"name": "rc", "image": "rc:2"}]}}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn rollout_state_follows_kubectls_order() {
        assert_eq!(
            rollout_state(&deployment(json!({"observedGeneration": 1}))),
            RolloutState::WaitingForSpec
        );
        assert_eq!(
            rollout_state(&deployment(
                json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4})
            )),
            RolloutState::Updating {
                updated: 1,
                desired: 3
            }
        );
        assert_eq!(
            rollout_state(&deployment(
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4})
            )),
            RolloutState::TerminatingOld { old: 1 }
        );
        assert_eq!(
            rollout_state(&deployment(
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})
            )),
            RolloutState::Becoming {
                available: 2,
                updated: 3
            }
        );
        assert_eq!(
            rollout_state(&deployment(
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            RolloutState::Complete
        );
        let stuck = deployment(
            json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]}),
        );
        assert!(matches!(
            rollout_state(&stuck),
            RolloutState::DeadlineExceeded { .. }
        ));
    }

    fn rs(rev: i64, image: &str, cause: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("rc-{rev}"), "annotations": {REVISION: rev.to_string(), CHANGE_CAUSE: cause},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "rc", "uid": "d1", "controller": true}]},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"app": "rc", HASH: format!("h{rev}")}}, "spec": {"containers": [{"name": "rc", "image": image}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn undo_defaults_to_the_second_highest_revision_and_brings_back_its_change_cause() {
        let mut d = deployment(json!({}));
        d.spec.as_mut().unwrap().template = serde_json::from_value(json!({"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "rc", "image": "rc:3"}]}})).unwrap();
        let sets = vec![
            rs(1, "rc:1", "one"),
            rs(2, "rc:2", "two"),
            rs(3, "rc:3", "three"),
        ];
        let plan = plan_undo(&d, &sets, None).unwrap();
        assert_eq!(plan.to_revision, 2);
        assert_eq!(
            plan.patch[0]["value"]["spec"]["containers"][0]["image"],
            "rc:2"
        );
        assert!(
            plan.patch[0]["value"]["metadata"]["labels"]
                .get(HASH)
                .is_none()
        );
        assert_eq!(plan.patch[1]["value"][CHANGE_CAUSE], "two");
        assert_eq!(plan_undo(&d, &sets, Some(1)).unwrap().to_revision, 1);
        assert_eq!(
            plan_undo(&d, &sets, Some(9)),
            Err(UndoError::NoSuchRevision(9))
        );
        assert_eq!(
            plan_undo(&d, &sets, Some(3)),
            Err(UndoError::AlreadyThere(3))
        );
        assert_eq!(
            plan_undo(&d, &sets[..1], None),
            Err(UndoError::NoHistory("rc".into()))
        );
    }

    #[test]
    fn history_lists_revisions_in_order_with_causes() {
        let d = deployment(json!({}));
        let h = history(&d, &[rs(2, "rc:2", "two"), rs(1, "rc:1", "one")]);
        assert_eq!(h.iter().map(|r| r.number).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(h[1].change_cause.as_deref(), Some("two"));
        assert_eq!(h[0].images, vec!["rc:1"]);
    }
}
