//! Server-side Tables (`as=Table`): the columns a real API server prints for `kubectl get`, per kind.

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether the client asked for a Table (kubectl get's `Accept`).
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let parts: Vec<&str> = t.split(';').map(str::trim).collect();
            parts.first() == Some(&"application/json")
                && parts.contains(&"as=Table")
                && parts.contains(&"g=meta.k8s.io")
        })
}

/// A duration as the API server prints ages (`5s`, `3m20s`, `4h`, `2d3h`, `1y20d`).
pub(crate) fn human(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        match d % 365 {
            0 => format!("{}y", d / 365),
            r => format!("{}y{r}d", d / 365),
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn ts(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
}

fn age(v: &Value, now: i64) -> Value {
    json!(ts(v).map_or("<unknown>".to_string(), |t| human(now - t)))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn text_or(v: &Value, none: &str) -> String {
    match v.as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => none.to_string(),
    }
}

fn containers(o: &Value, path: &str) -> (String, String) {
    let list = o.pointer(path).and_then(Value::as_array);
    let list = list.map(Vec::as_slice).unwrap_or_default();
    let names: Vec<&str> = list.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = list.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn selector(v: &Value) -> String {
    let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One column: name, type, priority (1: only with `-o wide`).
type Col = (&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Col] {
    match kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "StatefulSet" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "Job" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "CronJob" => &[
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "HorizontalPodAutoscaler" => &[
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "Service" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "PersistentVolumeClaim" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "ConfigMap" => &[
            ("Name", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        "Secret" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        "ControllerRevision" => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ],
        "Lease" => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Created At", "date", 0)],
    }
}

fn pod_status(o: &Value) -> String {
    if !o["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let statuses = o["status"]["containerStatuses"].as_array();
    for c in statuses.map(Vec::as_slice).unwrap_or_default() {
        let state = &c["state"];
        if let Some(r) = state["waiting"]["reason"].as_str() {
            return r.to_string();
        }
        if let Some(r) = state["terminated"]["reason"].as_str() {
            return r.to_string();
        }
    }
    match o["status"]["reason"].as_str() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => text_or(&o["status"]["phase"], "Pending"),
    }
}

fn job_status(o: &Value) -> &'static str {
    let conds = o["status"]["conditions"].as_array();
    let has = |t: &str| {
        conds
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn cells(rt: &ResourceType, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or_default());
    let created = age(&o["metadata"]["creationTimestamp"], now);
    let spec = &o["spec"];
    let status = &o["status"];
    match rt.kind {
        "Pod" => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let cs = status["containerStatuses"].as_array();
            let cs = cs.map(Vec::as_slice).unwrap_or_default();
            let ready = cs.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = cs.iter().map(|c| int(&c["restartCount"])).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                created,
                json!(text_or(&status["podIP"], "<none>")),
                json!(text_or(&spec["nodeName"], "<none>")),
                json!(text_or(&status["nominatedNodeName"], "<none>")),
                json!("<none>"),
            ]
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let ready = int(&status["readyReplicas"]);
            match rt.kind {
                "Deployment" => vec![
                    name,
                    json!(format!("{ready}/{want}")),
                    json!(int(&status["updatedReplicas"])),
                    json!(int(&status["availableReplicas"])),
                    created,
                    json!(c),
                    json!(i),
                    json!(selector(&spec["selector"]["matchLabels"])),
                ],
                "ReplicaSet" => vec![
                    name,
                    json!(want),
                    json!(int(&status["replicas"])),
                    json!(ready),
                    created,
                    json!(c),
                    json!(i),
                    json!(selector(&spec["selector"]["matchLabels"])),
                ],
                _ => vec![
                    name,
                    json!(format!("{ready}/{want}")),
                    created,
                    json!(c),
                    json!(i),
                ],
            }
        }
        "Job" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            let completions = spec["completions"].as_i64().unwrap_or(1);
            let duration = match (
                ts(&status["startTime"]),
                ts(&status["completionTime"]).unwrap_or(now),
            ) {
                (Some(start), end) => human(end - start),
                (None, _) => String::new(),
            };
            vec![
                name,
                json!(job_status(o)),
                json!(format!("{}/{completions}", int(&status["succeeded"]))),
                json!(duration),
                created,
                json!(c),
                json!(i),
                json!(selector(&spec["selector"]["matchLabels"])),
            ]
        }
        "CronJob" => {
            let (c, i) = containers(o, "/spec/jobTemplate/spec/template/spec/containers");
            let last = match ts(&status["lastScheduleTime"]) {
                Some(t) => human(now - t),
                None => "<none>".into(),
            };
            vec![
                name,
                json!(spec["schedule"].as_str().unwrap_or_default()),
                json!(text_or(&spec["timeZone"], "<none>")),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(status["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                created,
                json!(c),
                json!(i),
                json!("<none>"),
            ]
        }
        "HorizontalPodAutoscaler" => {
            let target = &spec["scaleTargetRef"];
            let want = spec["targetCPUUtilizationPercentage"].as_i64().or_else(|| {
                spec["metrics"][0]["resource"]["target"]["averageUtilization"].as_i64()
            });
            let have = status["currentCPUUtilizationPercentage"]
                .as_i64()
                .map_or("<unknown>".to_string(), |p| format!("{p}%"));
            let targets = match want {
                Some(w) => format!("cpu: {have}/{w}%"),
                None => "<none>".into(),
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    target["kind"].as_str().unwrap_or_default(),
                    target["name"].as_str().unwrap_or_default()
                )),
                json!(targets),
                json!(spec["minReplicas"].as_i64().unwrap_or(1).to_string()),
                json!(int(&spec["maxReplicas"])),
                json!(int(&status["currentReplicas"])),
                created,
            ]
        }
        "Event" => {
            let last = if o["lastTimestamp"].is_string() {
                &o["lastTimestamp"]
            } else if o["eventTime"].is_string() {
                &o["eventTime"]
            } else {
                &o["metadata"]["creationTimestamp"]
            };
            let involved = &o["involvedObject"];
            vec![
                age(last, now),
                json!(o["type"].as_str().unwrap_or_default()),
                json!(o["reason"].as_str().unwrap_or_default()),
                json!(format!(
                    "{}/{}",
                    involved["kind"].as_str().unwrap_or_default().to_lowercase(),
                    involved["name"].as_str().unwrap_or_default()
                )),
                json!(involved["fieldPath"].as_str().unwrap_or_default()),
                json!(text_or(&o["source"]["component"], "")),
                json!(o["message"].as_str().unwrap_or_default()),
                age(
                    if o["firstTimestamp"].is_string() {
                        &o["firstTimestamp"]
                    } else {
                        last
                    },
                    now,
                ),
                json!(o["count"].as_i64().unwrap_or(1).to_string()),
                name,
            ]
        }
        "Namespace" => vec![name, json!(text_or(&status["phase"], "Active")), created],
        "Service" => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        int(&p["port"]),
                        p["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect();
            vec![
                name,
                json!(text_or(&spec["type"], "ClusterIP")),
                json!(text_or(&spec["clusterIP"], "<none>")),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                created,
                json!(selector(&spec["selector"])),
            ]
        }
        "PersistentVolumeClaim" => {
            let modes: Vec<&str> = spec["accessModes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|m| match m.as_str()? {
                    "ReadWriteOnce" => Some("RWO"),
                    "ReadOnlyMany" => Some("ROX"),
                    "ReadWriteMany" => Some("RWX"),
                    "ReadWriteOncePod" => Some("RWOP"),
                    _ => None,
                })
                .collect();
            vec![
                name,
                json!(text_or(&status["phase"], "Pending")),
                json!(text_or(&spec["volumeName"], "")),
                json!(text_or(&status["capacity"]["storage"], "")),
                json!(modes.join(",")),
                json!(text_or(&spec["storageClassName"], "<unset>")),
                json!("<unset>"),
                created,
                json!(text_or(&spec["volumeMode"], "Filesystem")),
            ]
        }
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n.to_string()), created]
        }
        "Secret" => {
            let n = o["data"].as_object().map_or(0, |m| m.len());
            vec![
                name,
                json!(text_or(&o["type"], "Opaque")),
                json!(n.to_string()),
                created,
            ]
        }
        "ControllerRevision" => {
            let owner = &o["metadata"]["ownerReferences"][0];
            let controller = match owner["kind"].as_str() {
                Some(k) => format!(
                    "{}.{}/{}",
                    k.to_lowercase(),
                    owner["apiVersion"]
                        .as_str()
                        .and_then(|a| a.split_once('/'))
                        .map_or("", |(g, _)| g),
                    owner["name"].as_str().unwrap_or_default()
                ),
                None => "<none>".into(),
            };
            vec![name, json!(controller), json!(int(&o["revision"])), created]
        }
        "Lease" => vec![
            name,
            json!(text_or(&spec["holderIdentity"], "<none>")),
            created,
        ],
        _ => vec![name, o["metadata"]["creationTimestamp"].clone()],
    }
}

/// The Table for `items` of kind `rt`, rows carrying what `includeObject` asks for
/// (`Metadata`, the default; `Object`; or `None`).
pub(crate) fn table(
    rt: &ResourceType,
    items: &[Value],
    resource_version: &str,
    include: Option<&str>,
    now: i64,
) -> Value {
    let defs: Vec<Value> = columns(rt.kind)
        .iter()
        .map(|(name, ty, priority)| {
            let mut d = json!({"name": name, "type": ty, "format": "", "description": format!("{name} of the {}", rt.kind), "priority": priority});
            if *name == "Name" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(rt, o, now)});
            match include {
                Some("None") => {}
                Some("Object") => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
                }
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::by_plural;

    #[test]
    fn ages_read_as_the_api_server_prints_them() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (300, "5m"),
            (3000, "50m"),
            (4 * 3600 + 60 * 7, "4h7m"),
            (30 * 3600, "30h"),
            (2 * 86_400 + 3 * 3600, "2d3h"),
            (40 * 86_400, "40d"),
            (800 * 86_400, "2y70d"),
            (-5, "<invalid>"),
        ];
        for (s, want) in cases {
            assert_eq!(human(s), want, "{s}");
        }
    }

    #[test]
    fn a_pod_row_counts_ready_containers_restarts_and_names_a_waiting_reason() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 2, "state": {"running": {}}},
                {"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let now = ts(&json!("2026-01-01T00:05:00Z")).unwrap();
        let t = table(by_plural("pods"), &[pod], "7", None, now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "p",
                "1/2",
                "CrashLoopBackOff",
                "5",
                "5m",
                "10.0.0.5",
                "node-1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }

    #[test]
    fn only_an_accept_header_naming_a_meta_table_asks_for_one() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap(),
        );
        assert!(wanted(&h));
        h.insert(
            axum::http::header::ACCEPT,
            "application/json".parse().unwrap(),
        );
        assert!(!wanted(&h));
    }
}
