//! Pure Job logic: a Job from a CronJob's template (as `kubectl create job --from`), when a Job has ended, and its result.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The label on every Job an operation of the bot creates (its value: the operation's number).
pub const OPERATION_LABEL: &str = "rocketops.io/operation";
/// The label carrying the unique mark of the operation that created a Job.
pub const MARK_LABEL: &str = "rocketops.io/mark";

/// What a backup, restore, verify or prune Job reports in its termination message: a JSON object
/// whose fields are all optional. A field of the wrong type reads as absent, as does a message
/// that is not JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct JobReport {
    #[serde(deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient::u64")]
    pub bytes: Option<u64>,
    #[serde(deserialize_with = "lenient::string")]
    pub sha256: Option<String>,
    /// How long the backup took.
    #[serde(rename = "duration_s", deserialize_with = "lenient::u64")]
    pub duration_secs: Option<u64>,
    #[serde(deserialize_with = "lenient::u64")]
    pub collections: Option<u64>,
    #[serde(deserialize_with = "lenient::u64")]
    pub documents: Option<u64>,
    #[serde(deserialize_with = "lenient::u64")]
    pub restore_seconds: Option<u64>,
    /// A verify's verdict: the restored data matches the backup's manifest.
    #[serde(deserialize_with = "lenient::bool")]
    pub ok: Option<bool>,
    /// A verify's differences from the manifest.
    #[serde(deserialize_with = "lenient::strings")]
    pub mismatches: Vec<String>,
    /// A prune's view of the backup volume afterwards.
    #[serde(deserialize_with = "lenient::u64")]
    pub used_bytes: Option<u64>,
    #[serde(deserialize_with = "lenient::u64")]
    pub free_bytes: Option<u64>,
    /// An off-site copy's place (`s3://bucket/prefix/name`).
    #[serde(deserialize_with = "lenient::string")]
    pub offsite: Option<String>,
    /// How many files an off-site copy or fetch moved.
    #[serde(deserialize_with = "lenient::u64")]
    pub files: Option<u64>,
    /// A remark for people, shown after a restore's or verify's result (the Kubernetes
    /// simulator's Jobs say their figures are made up).
    #[serde(deserialize_with = "lenient::string")]
    pub note: Option<String>,
}

impl JobReport {
    /// The note as it ends a result line: ` (note)`, redacted and at most 200 characters; empty
    /// without one.
    pub fn note_suffix(&self) -> String {
        match self.note.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                let n: String = n.chars().take(200).collect();
                format!(" ({})", crate::redact::outside(&n))
            }
            _ => String::new(),
        }
    }

    /// Reads a termination message; `None` when it is not a JSON object.
    pub fn parse(message: &str) -> Option<JobReport> {
        let v: serde_json::Value = serde_json::from_str(message).ok()?;
        if !v.is_object() {
            return None;
        }
        serde_json::from_value(v).ok()
    }

    /// As [`JobReport::parse`], with every field absent when the message is not JSON.
    pub fn read(message: &str) -> JobReport {
        JobReport::parse(message).unwrap_or_default()
    }
}

/// Field readers that take a value of the wrong type as absent rather than failing the report.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Value::deserialize(d)?.as_u64())
    }
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(Value::deserialize(d)?.as_bool())
    }
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Value::deserialize(d)?.as_str().map(str::to_string))
    }
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Array(a) => a
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
    }
}

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Failed { reason: String, message: String },
}

/// `Some` once the Job has a `Complete` or `Failed` condition that is true.
/// (Checks both: a helper that looks only for `Complete` waits forever on a failed Job.)
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    for c in conds {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Some(JobEnd::Complete),
            "Failed" => {
                return Some(JobEnd::Failed {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    None
}

/// The Job `kubectl create job NAME --from=cronjob/CJ` would create.
pub fn job_from_cronjob(cj: &CronJob, name: &str) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    if let Some(a) = tmeta.annotations {
        annotations.extend(a);
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name.chars().take(63).collect()),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.metadata.name.clone().unwrap_or_default(),
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// A Job name that fits in 63 characters: `prefix-<suffix>`.
pub fn job_name(prefix: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len() + 1);
    let p: String = prefix.chars().take(room).collect();
    format!("{}-{suffix}", p.trim_end_matches('-'))
}

/// The field manager of the CronJob controller (and every other controller of
/// kube-controller-manager): the one that creates a CronJob's scheduled Jobs.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// Whether `owner_references` (an object's `metadata.ownerReferences`, as JSON) name `uid` as
/// the object's controller. Names count for nothing: anyone may write any name into a
/// reference, while a uid is the API server's and belongs to one object only.
pub fn controlled_by(owner_references: &serde_json::Value, kind: &str, uid: &str) -> bool {
    !uid.is_empty()
        && owner_references.as_array().is_some_and(|refs| {
            refs.iter()
                .any(|r| r["kind"] == kind && r["uid"] == uid && r["controller"] == true)
        })
}

/// Whether a pod belongs to the Job with `uid`: its controller reference is that Job's uid
/// (a pod that only carries the Job's name label is someone else's).
pub fn pod_of_job(pod: &Pod, uid: &str) -> bool {
    !uid.is_empty()
        && pod.metadata.owner_references.as_ref().is_some_and(|refs| {
            refs.iter()
                .any(|r| r.kind == "Job" && r.uid == uid && r.controller == Some(true))
        })
}

/// Who created an object, from its `metadata.managedFields` (as JSON): the manager of an entry
/// on the object itself (not a subresource such as `status`) that owns `spec`, which a Job's
/// creator alone sets; when several own it (a server-side apply can share fields), one that is
/// not the controller manager is named, so a shared claim never passes for the controller's.
/// `None` when the entries say nothing.
pub fn creator(managed_fields: &serde_json::Value) -> Option<String> {
    let entries = managed_fields.as_array()?;
    let main = |e: &&serde_json::Value| {
        e["subresource"].as_str().is_none_or(str::is_empty) && e["manager"].is_string()
    };
    let owners: Vec<&str> = entries
        .iter()
        .filter(main)
        .filter(|e| e["fieldsV1"].get("f:spec").is_some())
        .filter_map(|e| e["manager"].as_str())
        .collect();
    let chosen = owners
        .iter()
        .find(|m| **m != CONTROLLER_MANAGER)
        .or(owners.first())
        .copied()
        // Without field details, the first entry on the object is its creation.
        .or_else(|| {
            entries
                .iter()
                .find(main)
                .and_then(|e| e["manager"].as_str())
        })?;
    Some(chosen.chars().take(128).collect())
}

/// The termination message and exit code of a Job pod's first terminated container.
pub fn termination(pod: &Pod) -> Option<(i32, String, String)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let t = s
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .or_else(|| s.last_state.as_ref().and_then(|st| st.terminated.as_ref()))?;
        Some((
            t.exit_code,
            t.reason.clone().unwrap_or_default(),
            t.message.clone().unwrap_or_default(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_report_reads_what_it_can_and_takes_wrong_types_as_absent() {
        let r = JobReport::read(
            r#"{"name":"prod-1","bytes":"12","sha256":"ab","ok":true,"mismatches":["users",3],"free_bytes":7}"#,
        );
        assert_eq!(r.name.as_deref(), Some("prod-1"));
        assert_eq!(r.bytes, None);
        assert_eq!(r.ok, Some(true));
        assert_eq!(r.mismatches, vec!["users"]);
        assert_eq!(r.free_bytes, Some(7));
        assert_eq!(JobReport::parse("done"), None);
        assert_eq!(JobReport::parse("[1]"), None);
        assert_eq!(JobReport::read(""), JobReport::default());
    }

    #[test]
    fn a_job_from_a_cronjob_is_owned_by_it_and_marked_manual() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "mongodb-backup", "uid": "cj-1"},
            "spec": {"schedule": "1 0 * * *", "jobTemplate": {"metadata": {"labels": {"app": "backup"}},
                     "spec": {"backoffLimit": 1, "template": {"spec": {"containers": [{"name": "b", "image": "mongo:7"}]}}}}}
        }))
        .unwrap();
        let job = job_from_cronjob(&cj, "mongodb-backup-manual-1");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", "mongodb-backup", "cj-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "backup");
        assert_eq!(job.spec.unwrap().backoff_limit, Some(1));
    }

    #[test]
    fn a_failed_job_has_ended_not_only_a_complete_one() {
        let failed: Job = serde_json::from_value(json!({"status": {"conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}]}})).unwrap();
        assert_eq!(
            job_end(&failed),
            Some(JobEnd::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "limit".into()
            })
        );
        let running: Job = serde_json::from_value(json!({"status": {"active": 1}})).unwrap();
        assert_eq!(job_end(&running), None);
        let done: Job = serde_json::from_value(
            json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(job_end(&done), Some(JobEnd::Complete));
    }

    #[test]
    fn only_a_controller_reference_with_the_owners_uid_makes_an_owner() {
        let refs = json!([{"kind": "CronJob", "name": "mongodb-backup", "uid": "cj-1", "controller": true}]);
        assert!(controlled_by(&refs, "CronJob", "cj-1"));
        assert!(
            !controlled_by(&refs, "CronJob", "cj-2"),
            "same name, other uid"
        );
        assert!(!controlled_by(&refs, "Job", "cj-1"));
        assert!(!controlled_by(&refs, "CronJob", ""));
        let not_controller = json!([{"kind": "CronJob", "name": "mongodb-backup", "uid": "cj-1"}]);
        assert!(!controlled_by(&not_controller, "CronJob", "cj-1"));
        assert!(!controlled_by(&json!("junk"), "CronJob", "cj-1"));
        assert!(!controlled_by(&serde_json::Value::Null, "CronJob", "cj-1"));
    }

    #[test]
    fn a_pod_belongs_to_a_job_by_its_controller_uid_not_by_its_name_label() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let owned = pod(json!({"metadata": {"name": "v-abcde",
            "labels": {"batch.kubernetes.io/job-name": "v"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "v", "uid": "job-1", "controller": true}]}}));
        let labelled = pod(json!({"metadata": {"name": "evil",
            "labels": {"batch.kubernetes.io/job-name": "v", "job-name": "v"}}}));
        assert!(pod_of_job(&owned, "job-1"));
        assert!(!pod_of_job(&owned, "job-2"));
        assert!(!pod_of_job(&owned, ""));
        assert!(!pod_of_job(&labelled, "job-1"));
    }

    #[test]
    fn the_creator_is_the_manager_that_owns_the_spec_and_a_shared_claim_names_the_other() {
        let cron = json!([
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:metadata": {}, "f:spec": {}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}}
        ]);
        assert_eq!(creator(&cron).as_deref(), Some("kube-controller-manager"));
        let manual = json!([
            {"manager": "kubectl-create", "operation": "Update", "fieldsV1": {"f:spec": {}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}}
        ]);
        assert_eq!(creator(&manual).as_deref(), Some("kubectl-create"));
        let shared = json!([
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:spec": {}}},
            {"manager": "tenant", "operation": "Apply", "fieldsV1": {"f:spec": {}}}
        ]);
        assert_eq!(creator(&shared).as_deref(), Some("tenant"));
        let labels_only = json!([{"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:spec": {}}}]);
        assert_eq!(
            creator(&labels_only).as_deref(),
            Some("kube-controller-manager")
        );
        let bare = json!([{"manager": "helm", "operation": "Update"}]);
        assert_eq!(creator(&bare).as_deref(), Some("helm"));
        assert_eq!(creator(&json!([])), None);
        assert_eq!(creator(&json!({"manager": "x"})), None);
        assert_eq!(creator(&json!([{"manager": 7}])), None);
    }

    #[test]
    fn job_names_fit_in_63_characters() {
        let n = job_name(&"x".repeat(80), "20261122t0001");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-20261122t0001"));
    }
}

/// Why a Job template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template}: placeholder `${{{name}}}` has no value (known: {known})")]
    MissingParameter {
        template: String,
        name: String,
        known: String,
    },
    #[error(
        "template {template}: a parameter value for `{name}` contains characters not allowed in a template value"
    )]
    UnsafeValue { template: String, name: String },
    #[error("template {template}: not a valid Job: {message}")]
    NotAJob { template: String, message: String },
}

/// Renders a Job manifest (YAML) whose `${name}` placeholders are filled from `params`.
/// Values are limited to a safe alphabet so that a parameter cannot change the manifest's structure.
pub fn render_job_template(
    template_name: &str,
    yaml: &str,
    params: &BTreeMap<String, String>,
) -> Result<Job, TemplateError> {
    for (k, v) in params {
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+=".contains(c))
        {
            return Err(TemplateError::UnsafeValue {
                template: template_name.into(),
                name: k.clone(),
            });
        }
    }
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let value = params
            .get(name)
            .ok_or_else(|| TemplateError::MissingParameter {
                template: template_name.into(),
                name: name.into(),
                known: params.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let job: Job = serde_saphyr::from_str(&out).map_err(|e| TemplateError::NotAJob {
        template: template_name.into(),
        message: e.to_string(),
    })?;
    if job.spec.is_none() {
        return Err(TemplateError::NotAJob {
            template: template_name.into(),
            message: "it has no `spec`".into(),
        });
    }
    Ok(job)
}

#[cfg(test)]
mod template_tests {
    use super::*;

    const MIGRATE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate-${version}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: ${image}:${version}\n        args: [\"migrate\", \"--to\", \"${version}\"]\n";

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_the_result_is_a_job() {
        let job = render_job_template(
            "migrate",
            MIGRATE,
            &params(&[("version", "7.0.0"), ("image", "rc")]),
        )
        .unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("migrate-7.0.0"));
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("rc:7.0.0"));
        assert_eq!(c.args.as_ref().unwrap()[2], "7.0.0");
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let e =
            render_job_template("migrate", MIGRATE, &params(&[("version", "7.0.0")])).unwrap_err();
        assert!(e.to_string().contains("`${image}`"), "{e}");
    }

    #[test]
    fn a_value_that_could_inject_yaml_is_refused() {
        let e = render_job_template(
            "migrate",
            MIGRATE,
            &params(&[("version", "1\n  evil: true"), ("image", "rc")]),
        )
        .unwrap_err();
        assert!(matches!(e, TemplateError::UnsafeValue { .. }));
    }

    #[test]
    fn a_manifest_that_is_not_a_job_is_refused() {
        let e =
            render_job_template("x", "kind: Job\nspec: [1, 2]\n", &BTreeMap::new()).unwrap_err();
        assert!(matches!(e, TemplateError::NotAJob { .. }), "{e}");
    }
}
