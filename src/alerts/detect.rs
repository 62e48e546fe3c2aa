//! Pure failure detection: what a watched object says about an incident (firing or cleared), keyed so that one incident is one alert.

use serde_json::Value;

use crate::cluster::watch::WatchedKind;

/// Identifies one incident: the same key firing again is the same incident.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct IncidentKey {
    pub env: String,
    /// `cronjob/mongodb-backup`, `pod/rocketchat-7d9f-x2x9k`, `deployment/rocketchat`.
    pub object: String,
    pub reason: Reason,
}

/// Why an incident fires. Kept in the store as its name, so incidents written before this type
/// read back the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A Job (or a CronJob's run) failed.
    JobFailed,
    CrashLoopBackOff,
    ImagePullBackOff,
    ErrImagePull,
    OOMKilled,
    /// A rollout passed its progress deadline.
    ProgressDeadlineExceeded,
    /// A StatefulSet has had unready members for longer than its grace.
    NotReady,
    /// A backup CronJob has not succeeded for longer than its schedule allows.
    BackupsStopped,
    /// A Warning event's or a container's own reason (`FailedMount`, `CreateContainerConfigError`).
    Other(String),
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::JobFailed => "JobFailed",
            Reason::CrashLoopBackOff => "CrashLoopBackOff",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ErrImagePull => "ErrImagePull",
            Reason::OOMKilled => "OOMKilled",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            Reason::NotReady => "NotReady",
            Reason::BackupsStopped => "BackupsStopped",
            Reason::Other(s) => s,
        }
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Reason {
        match s {
            "JobFailed" => Reason::JobFailed,
            "CrashLoopBackOff" => Reason::CrashLoopBackOff,
            "ImagePullBackOff" => Reason::ImagePullBackOff,
            "ErrImagePull" => Reason::ErrImagePull,
            "OOMKilled" => Reason::OOMKilled,
            "ProgressDeadlineExceeded" => Reason::ProgressDeadlineExceeded,
            "NotReady" => Reason::NotReady,
            "BackupsStopped" => Reason::BackupsStopped,
            other => Reason::Other(other.to_string()),
        }
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Reason {
        Reason::from(s.as_str())
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.as_str().to_string()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reason, D::Error> {
        Ok(Reason::from(String::deserialize(d)?))
    }
}

impl IncidentKey {
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.env, self.object, self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    Warning,
    Critical,
}

/// What an object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Firing {
        key: IncidentKey,
        severity: Severity,
        /// One line for the alert.
        detail: String,
        /// Distinguishes repeats: a second failed Job of the same CronJob counts, a re-listed one does not.
        occurrence: String,
    },
    /// `object` in `env` is fine now as far as `reason` goes (every reason when `None`).
    Clear {
        env: String,
        object: String,
        reason: Option<Reason>,
    },
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// The signals in one observed object.
pub fn detect(env: &str, kind: WatchedKind, o: &Value) -> Vec<Signal> {
    match kind {
        WatchedKind::Jobs => {
            let owner = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["kind"] == "CronJob"))
                .and_then(|r| r["name"].as_str());
            let object = match owner {
                Some(cj) => format!("cronjob/{cj}"),
                None => format!("job/{}", name(o)),
            };
            let by_operation =
                o["metadata"]["labels"][crate::cluster::jobs::OPERATION_LABEL].is_string();
            if let Some(c) = condition(o, "Failed") {
                if by_operation {
                    // The operation that ran it reports the failure, with its context, itself.
                    return Vec::new();
                }
                let why = c["reason"].as_str().unwrap_or("Failed");
                vec![Signal::Firing {
                    key: IncidentKey {
                        env: env.into(),
                        object,
                        reason: Reason::JobFailed,
                    },
                    severity: Severity::Critical,
                    detail: format!("job {} failed ({why})", name(o)),
                    occurrence: name(o).to_string(),
                }]
            } else if condition(o, "Complete").is_some() {
                vec![Signal::Clear {
                    env: env.into(),
                    object,
                    reason: Some(Reason::JobFailed),
                }]
            } else {
                Vec::new()
            }
        }
        WatchedKind::Pods => {
            let object = format!("pod/{}", name(o));
            let mut out = Vec::new();
            for cs in o["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let waiting = cs["state"]["waiting"]["reason"].as_str();
                let oom = cs["lastState"]["terminated"]["reason"] == "OOMKilled"
                    || cs["state"]["terminated"]["reason"] == "OOMKilled";
                let restarts = cs["restartCount"].as_i64().unwrap_or(0);
                let reason = if oom {
                    Some("OOMKilled")
                } else {
                    match waiting {
                        Some(r @ ("CrashLoopBackOff" | "ImagePullBackOff" | "ErrImagePull")) => {
                            Some(if r == "ErrImagePull" {
                                "ImagePullBackOff"
                            } else {
                                r
                            })
                        }
                        _ => None,
                    }
                };
                if let Some(r) = reason {
                    out.push(Signal::Firing {
                        key: IncidentKey {
                            env: env.into(),
                            object: object.clone(),
                            reason: r.into(),
                        },
                        severity: Severity::Critical,
                        detail: format!(
                            "pod {} container {}: {r} ({restarts} restarts)",
                            name(o),
                            cs["name"].as_str().unwrap_or("?")
                        ),
                        occurrence: String::new(),
                    });
                }
            }
            let ready = o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if out.is_empty()
                && (ready || matches!(o["status"]["phase"].as_str(), Some("Succeeded")))
            {
                out.push(Signal::Clear {
                    env: env.into(),
                    object,
                    reason: None,
                });
            }
            out
        }
        WatchedKind::Deployments => {
            let object = format!("deployment/{}", name(o));
            let stuck = o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                })
            });
            if stuck {
                vec![Signal::Firing {
                    key: IncidentKey {
                        env: env.into(),
                        object,
                        reason: Reason::ProgressDeadlineExceeded,
                    },
                    severity: Severity::Critical,
                    detail: format!("deployment {} passed its progress deadline", name(o)),
                    occurrence: String::new(),
                }]
            } else {
                vec![Signal::Clear {
                    env: env.into(),
                    object,
                    reason: Some(Reason::ProgressDeadlineExceeded),
                }]
            }
        }
        // Time-based: see `stale` and the runner's grace handling.
        WatchedKind::StatefulSets | WatchedKind::CronJobs => Vec::new(),
        WatchedKind::Events => Vec::new(),
    }
}

/// Whether a StatefulSet has fewer ready replicas than desired.
/// Pure: the few fields of a StatefulSet or CronJob the periodic checks read
/// ([`statefulset_short`], [`cronjob_stale`]); the alerter keeps these, not whole objects, so
/// its memory stays small with hundreds of environments.
pub fn kept_fields(o: &Value) -> Value {
    serde_json::json!({
        "metadata": {
            "name": o["metadata"]["name"],
            "uid": o["metadata"]["uid"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {
            "replicas": o["spec"]["replicas"],
            "suspend": o["spec"]["suspend"],
            "schedule": o["spec"]["schedule"],
        },
        "status": {
            "readyReplicas": o["status"]["readyReplicas"],
            "lastSuccessfulTime": o["status"]["lastSuccessfulTime"],
        },
    })
}

pub fn statefulset_short(o: &Value) -> Option<String> {
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
    (ready < want).then(|| format!("statefulset {} has {ready}/{want} ready replicas", name(o)))
}

/// Whether a CronJob has not succeeded for longer than twice its interval (`None` when it is fine).
pub fn cronjob_stale(o: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    use std::str::FromStr;
    if o["spec"]["suspend"] == true && o["status"]["lastSuccessfulTime"].is_null() {
        return None;
    }
    let cron = croner::Cron::from_str(o["spec"]["schedule"].as_str()?).ok()?;
    let last = o["status"]["lastSuccessfulTime"]
        .as_str()
        .or(o["metadata"]["creationTimestamp"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&chrono::Utc);
    let first = cron.find_next_occurrence(&last, false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    let interval = second - first;
    let late = now - last;
    (late > interval * 2).then(|| {
        format!(
            "cronjob {} has not succeeded for {} (schedule `{}`): backups stopped",
            name(o),
            crate::clock::human(std::time::Duration::from_secs(
                late.num_seconds().max(0) as u64
            )),
            o["spec"]["schedule"].as_str().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_cronjob_run_fires_under_its_cronjob_and_a_good_run_clears_it() {
        let failed = json!({"metadata": {"name": "mongodb-backup-1", "ownerReferences": [{"kind": "CronJob", "name": "mongodb-backup"}]},
                            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        let s = detect("prod", WatchedKind::Jobs, &failed);
        assert!(
            matches!(&s[0], Signal::Firing { key, occurrence, .. } if key.object == "cronjob/mongodb-backup" && occurrence == "mongodb-backup-1")
        );
        let ok = json!({"metadata": {"name": "mongodb-backup-2", "ownerReferences": [{"kind": "CronJob", "name": "mongodb-backup"}]},
                        "status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            detect("prod", WatchedKind::Jobs, &ok),
            vec![Signal::Clear {
                env: "prod".into(),
                object: "cronjob/mongodb-backup".into(),
                reason: Some(Reason::JobFailed)
            }]
        );
    }

    #[test]
    fn a_job_an_operation_ran_raises_no_incident_of_its_own_but_its_success_still_clears() {
        let labels = json!({"rocketops.io/operation": "7"});
        let owner = json!([{"kind": "CronJob", "name": "mongodb-backup"}]);
        let failed = json!({"metadata": {"name": "mongodb-backup-manual-7", "labels": labels, "ownerReferences": owner},
                            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(detect("prod", WatchedKind::Jobs, &failed), vec![]);
        let ok = json!({"metadata": {"name": "mongodb-backup-manual-8", "labels": labels, "ownerReferences": owner},
                        "status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert!(matches!(
            &detect("prod", WatchedKind::Jobs, &ok)[..],
            [Signal::Clear { object, .. }] if object == "cronjob/mongodb-backup"
        ));
    }

    #[test]
    fn crash_loops_image_pulls_and_oom_kills_fire_and_a_ready_pod_clears() {
        let pod = |state: Value, last: Value| json!({"metadata": {"name": "rc-1"}, "status": {"containerStatuses": [{"name": "rc", "restartCount": 4, "state": state, "lastState": last}]}});
        let reason = |p: &Value| match &detect("test", WatchedKind::Pods, p)[0] {
            Signal::Firing { key, .. } => key.reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(&pod(
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                json!({})
            )),
            Reason::CrashLoopBackOff
        );
        assert_eq!(
            reason(&pod(
                json!({"waiting": {"reason": "ErrImagePull"}}),
                json!({})
            )),
            Reason::ImagePullBackOff
        );
        assert_eq!(
            reason(&pod(
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                json!({"terminated": {"reason": "OOMKilled"}})
            )),
            Reason::OOMKilled
        );
        let ready = json!({"metadata": {"name": "rc-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "rc", "state": {"running": {}}}]}});
        assert_eq!(
            detect("test", WatchedKind::Pods, &ready),
            vec![Signal::Clear {
                env: "test".into(),
                object: "pod/rc-1".into(),
                reason: None
            }]
        );
    }

    #[test]
    fn the_kept_fields_give_the_periodic_checks_the_same_answers_as_the_whole_object() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let sts = json!({"metadata": {"name": "mongodb", "labels": {"a": "b"}}, "spec": {"replicas": 3, "template": {"spec": {}}},
                         "status": {"readyReplicas": 2, "replicas": 3}});
        assert_eq!(
            statefulset_short(&kept_fields(&sts)),
            statefulset_short(&sts)
        );
        assert!(statefulset_short(&kept_fields(&sts)).is_some());
        let cj = json!({"metadata": {"name": "mongodb-backup", "creationTimestamp": "2026-11-01T00:00:00Z"},
                        "spec": {"schedule": "1 0 * * *", "jobTemplate": {"spec": {}}},
                        "status": {"lastSuccessfulTime": "2026-11-19T00:01:00Z"}});
        assert_eq!(
            cronjob_stale(&kept_fields(&cj), now),
            cronjob_stale(&cj, now)
        );
        assert!(cronjob_stale(&kept_fields(&cj), now).is_some());
    }

    #[test]
    fn a_cronjob_late_by_more_than_two_intervals_has_stopped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cj = |last: &str| json!({"metadata": {"name": "mongodb-backup", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"schedule": "0 * * * *"}, "status": {"lastSuccessfulTime": last}});
        assert!(cronjob_stale(&cj("2026-11-22T11:00:00Z"), now).is_none());
        let msg = cronjob_stale(&cj("2026-11-22T08:30:00Z"), now).unwrap();
        assert!(
            msg.contains("backups stopped") && msg.contains("3 h 30 min"),
            "{msg}"
        );
    }
}

/// A Warning event whose reason is worth an alert (point in time: it repeats, it does not clear).
pub fn warning_event(env: &str, o: &Value, reasons: &[String]) -> Option<Signal> {
    if o["type"] != "Warning" {
        return None;
    }
    let reason = o["reason"].as_str()?;
    if !reasons.iter().any(|r| r == reason) {
        return None;
    }
    let inv = &o["involvedObject"];
    let object = format!(
        "{}/{}",
        inv["kind"].as_str().unwrap_or("object").to_lowercase(),
        inv["name"].as_str().unwrap_or("?")
    );
    Some(Signal::Firing {
        key: IncidentKey {
            env: env.into(),
            object: object.clone(),
            reason: reason.into(),
        },
        severity: Severity::Warning,
        detail: format!(
            "{object}: {}",
            o["message"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>()
        ),
        occurrence: name(o).to_string(),
    })
}

/// Whether `now` (minutes since midnight) falls in a quiet window `start..end` (which may wrap midnight).
pub fn in_quiet_hours(window: Option<(u32, u32)>, now_minutes: u32) -> bool {
    match window {
        None => false,
        Some((start, end)) if start <= end => (start..end).contains(&now_minutes),
        Some((start, end)) => now_minutes >= start || now_minutes < end,
    }
}

pub use crate::config::parse_quiet_hours;

#[cfg(test)]
mod quiet_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_incident_key_reads_and_writes_its_reason_by_name_as_stored_before() {
        let stored = r#"{"env":"prod","object":"cronjob/mongodb-backup","reason":"JobFailed"}"#;
        let key: IncidentKey = serde_json::from_str(stored).unwrap();
        assert_eq!(key.reason, Reason::JobFailed);
        assert_eq!(serde_json::to_string(&key).unwrap(), stored);
        let event: Reason = serde_json::from_str(r#""FailedMount""#).unwrap();
        assert_eq!(event, Reason::Other("FailedMount".into()));
        assert_eq!(event.to_string(), "FailedMount");
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let w = parse_quiet_hours("22:00-07:00");
        assert_eq!(w, Some((1320, 420)));
        assert!(in_quiet_hours(w, 23 * 60));
        assert!(in_quiet_hours(w, 60));
        assert!(!in_quiet_hours(w, 12 * 60));
        assert!(parse_quiet_hours("25:00-07:00").is_none());
        assert!(!in_quiet_hours(None, 0));
    }

    #[test]
    fn only_listed_warning_reasons_alert() {
        let ev = json!({"metadata": {"name": "ev1"}, "type": "Warning", "reason": "FailedMount", "message": "MountVolume.SetUp failed", "involvedObject": {"kind": "Pod", "name": "mongodb-0"}});
        let reasons = vec!["FailedMount".to_string()];
        assert!(
            matches!(warning_event("prod", &ev, &reasons), Some(Signal::Firing { key, severity: Severity::Warning, .. }) if key.object == "pod/mongodb-0")
        );
        assert!(warning_event("prod", &ev, &[]).is_none());
        let normal = json!({"type": "Normal", "reason": "FailedMount"});
        assert!(warning_event("prod", &normal, &reasons).is_none());
    }
}
