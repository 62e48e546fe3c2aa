//! The sandbox cluster's starting state: one namespace per environment with Rocket.Chat, a MongoDB replica set and its backup CronJob.

use serde_json::json;

use super::store::ApiError;
use super::{JobScript, KubeSim};

/// The Rocket.Chat image repository the simulated registry checks.
pub const ROCKETCHAT_REPO: &str = "rocketchat/rocket.chat";
/// Tags that exist in the simulated registry; any other tag of the repository fails to pull
/// (a tag containing `crash` pulls but crash-loops).
pub const KNOWN_TAGS: &[&str] = &["6.5.0", "6.5.1", "7.0.0", "v3.0", "v3.1"];
/// The tag every environment starts on.
pub const START_TAG: &str = "6.5.0";

/// Creates each environment's namespace and workloads; production (`prod`) also gets an HPA.
pub fn environments(sim: &KubeSim, names: &[&str]) -> Result<(), ApiError> {
    sim.set_known_tags(ROCKETCHAT_REPO, KNOWN_TAGS);
    sim.script_job(
        "mongodb-backup",
        JobScript {
            termination_message: r#"{"name":"{job}","bytes":48213377,"sha256":"9f2c5d0e8b7a61f4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0","collections":{"rocketchat_message":120431,"users":312}}"#.into(),
            log: vec![
                "writing rocketchat.rocketchat_message to archive".into(),
                "done dumping rocketchat.rocketchat_message (120431 documents)".into(),
                "backup {job} complete".into(),
            ],
            ..JobScript::default()
        },
    );
    // The built-in restore, verify and prune templates (commands/backup/) name their Jobs so.
    sim.script_job(
        "mongodb-restore",
        JobScript {
            termination_message: r#"{"name":"restored","restore_seconds":38,"note":"simulated: no data moved, the figures are made up"}"#.into(),
            log: vec![
                "restoring users from archive".into(),
                "120743 document(s) restored successfully.".into(),
            ],
            ..JobScript::default()
        },
    );
    sim.script_job(
        "mongodb-verify",
        JobScript {
            termination_message: r#"{"name":"verified","ok":true,"restore_seconds":41,"collections":57,"documents":120743,"mismatches":[],"note":"simulated: no data moved, the figures are made up"}"#.into(),
            log: vec!["restoring into a throwaway mongod".into(), "all 57 collections match the manifest".into()],
            ..JobScript::default()
        },
    );
    sim.script_job(
        "backup-prune",
        JobScript {
            termination_message: r#"{"removed":1,"used_bytes":385706016,"free_bytes":10351382528}"#
                .into(),
            log: vec!["pruned".into()],
            ..JobScript::default()
        },
    );
    if sim.get("namespaces", "", "default").is_err() {
        sim.create("namespaces", "", json!({"metadata": {"name": "default"}}))?;
    }
    for env in names {
        sim.create(
            "namespaces",
            "",
            json!({"metadata": {"name": env, "labels": {"rocketops.io/environment": env}}}),
        )?;
        let labels = json!({"app.kubernetes.io/name": "rocketchat", "app.kubernetes.io/part-of": "rocketchat"});
        sim.create(
            "deployments",
            env,
            json!({
                "metadata": {"name": "rocketchat", "labels": labels, "annotations": {"kubernetes.io/change-cause": format!("initial install {START_TAG}")}},
                "spec": {
                    "replicas": 3,
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 20,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "rocketchat"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "rocketchat"}}}}]}},
                            "containers": [{
                                "name": "rocketchat",
                                "image": format!("{ROCKETCHAT_REPO}:{START_TAG}"),
                                "ports": [{"containerPort": 3000, "name": "http"}],
                                "envFrom": [{"configMapRef": {"name": "rocketchat-settings"}}],
                                "readinessProbe": {"httpGet": {"path": "/api/info", "port": 3000}},
                                "livenessProbe": {"httpGet": {"path": "/api/info", "port": 3000}}
                            }]
                        }
                    }
                }
            }),
        )?;
        sim.create("configmaps", env, json!({"metadata": {"name": "rocketchat-settings"}, "data": {"OVERWRITE_SETTING_Site_Url": format!("https://chat-{env}.example.org")}}))?;
        let db_labels = json!({"app.kubernetes.io/name": "mongodb"});
        sim.create(
            "statefulsets",
            env,
            json!({
                "metadata": {"name": "mongodb", "labels": db_labels},
                "spec": {
                    "replicas": 3,
                    "serviceName": "mongodb-headless",
                    "selector": {"matchLabels": db_labels},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                    "template": {"metadata": {"labels": db_labels}, "spec": {"containers": [{"name": "mongodb", "image": "mongo:7.0", "args": ["--replSet", "rs0"], "ports": [{"containerPort": 27017}]}]}}
                }
            }),
        )?;
        sim.create(
            "cronjobs",
            env,
            json!({
                "metadata": {"name": "mongodb-backup", "labels": {"app.kubernetes.io/name": "mongodb-backup"}},
                "spec": {
                    "schedule": "1 0 * * *",
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "mongodb-backup"}},
                        "spec": {
                            "backoffLimit": 1,
                            "template": {"spec": {"restartPolicy": "Never", "containers": [{
                                "name": "backup",
                                "image": "mongo:7.0",
                                "command": ["sh", "-c", "mongodump --uri \"$MONGO_URI\" --gzip --archive=/backup/$(date +%Y-%m-%dT%H%M%S).gz"],
                                "env": [{"name": "MONGO_URI", "valueFrom": {"secretKeyRef": {"name": "mongodb", "key": "uri"}}}],
                                "volumeMounts": [{"name": "backup", "mountPath": "/backup"}]
                            }], "volumes": [{"name": "backup", "persistentVolumeClaim": {"claimName": "mongodb-backup"}}]}}
                        }
                    }
                }
            }),
        )?;
        if *env == "prod" {
            sim.create(
                "horizontalpodautoscalers",
                env,
                json!({
                    "metadata": {"name": "rocketchat"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rocketchat"},
                             "minReplicas": 3, "maxReplicas": 10,
                             "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
                }),
            )?;
        }
    }
    Ok(())
}
