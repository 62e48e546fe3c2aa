//! The simulated control plane: Deployment, ReplicaSet, StatefulSet, Job, CronJob and HPA controllers, a kubelet, and garbage collection.
//!
//! Long by design: the controllers run as one reconcile pass under one store lock, because they
//! feed each other in order (Deployment → ReplicaSet → Pod, CronJob → Job → Pod, HPA → scale), as
//! the real control plane's do through the API server.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::resources::by_plural;
use super::runtime::{self, LocalJobs, Runs};
use super::store::{ObjectStore, WriteMode, now_rfc3339, ns_name, random_suffix};
use super::{JobScript, KubeInner};

const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const HASH: &str = "pod-template-hash";
const SKIP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Controller memory that is not in the API objects (timers).
#[derive(Default)]
struct Memory {
    /// When each pod was first seen (by uid).
    pod_born: HashMap<String, Instant>,
    /// Per Deployment uid: the last progress snapshot and when it changed.
    progress: HashMap<String, (Value, Instant)>,
    /// Per ReplicaSet or StatefulSet uid: its namespace's version when a pass over it changed
    /// nothing. Their work depends only on objects in their namespace, not on time, so until the
    /// namespace changes again the next pass would change nothing either and is skipped.
    settled: HashMap<String, u64>,
}

/// Runs `controller` over the objects of `plural` that are not settled, and records which are.
fn unless_settled(
    store: &mut ObjectStore,
    mem: &mut Memory,
    plural: &'static str,
    controller: fn(&mut ObjectStore, &Value),
) {
    let due = store.all_where(plural, |o| {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        mem.settled.get(uid(o)) != Some(&store.namespace_rv(ns))
    });
    for o in due {
        let before = store.current_rv();
        controller(store, &o);
        let (ns, _) = ns_name(&o);
        if store.current_rv() == before {
            mem.settled
                .insert(uid(&o).to_string(), store.namespace_rv(&ns));
        } else {
            mem.settled.remove(uid(&o));
        }
    }
}

/// Runs the controllers until shutdown: on every tick and whenever a write kicks them.
pub(crate) async fn run(sim: Arc<KubeInner>) {
    let mut memory = Memory::default();
    loop {
        tokio::select! {
            _ = sim.kick.notified() => {}
            _ = tokio::time::sleep(sim.cfg.tick) => {}
            _ = sim.shutdown.cancelled() => return,
        }
        // Several passes let a change ripple through (Deployment → ReplicaSet → Pod → status);
        // a pass that changes nothing ends it, so a large idle cluster costs one pass a tick.
        for _ in 0..3 {
            let before = sim.store().current_rv();
            reconcile(&sim, &mut memory);
            if sim.store().current_rv() == before {
                break;
            }
        }
    }
}

fn reconcile(sim: &KubeInner, mem: &mut Memory) {
    let registry = sim.registry.lock().map(|r| r.clone()).unwrap_or_default();
    let scripts = sim.scripts.lock().map(|s| s.clone()).unwrap_or_default();
    let mut store = sim.store();
    let now = Instant::now();
    for d in store.all("deployments") {
        deployment(&mut store, mem, &d, now);
    }
    unless_settled(&mut store, mem, "replicasets", replicaset);
    unless_settled(&mut store, mem, "statefulsets", statefulset);
    for cj in store.all("cronjobs") {
        cronjob(&mut store, &cj);
    }
    for j in store.all("jobs") {
        job(&mut store, &j);
    }
    for h in store.all("horizontalpodautoscalers") {
        hpa(&mut store, &h);
    }
    let mut new_logs = Vec::new();
    for p in store.all("pods") {
        kubelet(
            &mut store,
            mem,
            &p,
            now,
            sim.cfg.pod_ready_after,
            &registry,
            &scripts,
            &mut new_logs,
            sim.cfg.local_jobs.as_ref().map(|l| (l, &sim.runs)),
        );
    }
    orphan_sweep(&mut store);
    drop(store);
    if !new_logs.is_empty()
        && let Ok(mut logs) = sim.logs.lock()
    {
        for (k, lines) in new_logs {
            logs.entry(k).or_default().extend(lines);
        }
    }
    mem.pod_born
        .retain(|_, t| now.duration_since(*t).as_secs() < 24 * 3600);
    if mem.settled.len() > 4 * 1024 {
        // Entries of deleted objects: start over (everything is looked at once more).
        mem.settled.clear();
    }
}

fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or_default()
}

fn controller_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

fn owned_by(store: &ObjectStore, plural: &'static str, owner: &Value) -> Vec<Value> {
    let (ns, _) = ns_name(owner);
    let id = uid(owner).to_string();
    store.all_in_where(plural, &ns, |o| controller_uid(o) == Some(id.as_str()))
}

fn owner_ref(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true
    }])
}

fn write(store: &mut ObjectStore, plural: &'static str, obj: Value) -> Option<Value> {
    let (ns, name) = ns_name(&obj);
    let mut obj = obj;
    if plural == "pods" {
        complete_pod(&mut obj);
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    store
        .update(by_plural(plural), &ns, &name, obj, WriteMode::Controller)
        .ok()
}

/// Fills the status fields a real kubelet sets and strictly typed clients expect: the node and
/// host addresses, `podIPs`, `qosClass`, and per container `imageID`, `containerID`, `started`.
fn complete_pod(p: &mut Value) {
    let uid = p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if p["spec"]["nodeName"].is_null() && !p["status"]["phase"].is_null() {
        p["spec"]["nodeName"] = json!("sim-node-1");
    }
    let requests_limits = |c: &Value| {
        let r = &c["resources"];
        (
            r["requests"].as_object().is_some_and(|m| !m.is_empty()),
            r["limits"].clone(),
        )
    };
    let containers = p["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let qos = if containers
        .iter()
        .all(|c| requests_limits(c) == (false, Value::Null))
    {
        "BestEffort"
    } else if containers.iter().all(|c| {
        let l = &c["resources"]["limits"];
        !l["cpu"].is_null()
            && !l["memory"].is_null()
            && (c["resources"]["requests"].is_null() || c["resources"]["requests"] == *l)
    }) {
        "Guaranteed"
    } else {
        "Burstable"
    };
    let Some(status) = p["status"].as_object_mut() else {
        return;
    };
    status.entry("qosClass").or_insert(json!(qos));
    if status.get("phase").is_some() {
        status.entry("hostIP").or_insert(json!("10.1.0.1"));
        status
            .entry("hostIPs")
            .or_insert(json!([{"ip": "10.1.0.1"}]));
    }
    if let Some(ip) = status
        .get("podIP")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        status.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    for key in ["initContainerStatuses", "containerStatuses"] {
        let Some(list) = status.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in list {
            let image = c["image"].as_str().unwrap_or_default().to_string();
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let Some(m) = c.as_object_mut() else { continue };
            m.entry("restartCount").or_insert(json!(0));
            m.entry("ready").or_insert(json!(false));
            m.entry("imageID")
                .or_insert(json!(format!("{image}@sha256:{:064x}", fnv(&image))));
            let ran = m.get("state").is_some_and(|s| s.get("waiting").is_none());
            let running = m.get("state").is_some_and(|s| s.get("running").is_some());
            m.entry("started").or_insert(json!(ran && running));
            if ran {
                m.entry("containerID").or_insert(json!(format!(
                    "containerd://{:016x}{:016x}",
                    fnv(&uid),
                    fnv(&name)
                )));
            }
        }
    }
}

/// What an app's containers write on start, for `kubectl logs` of a pod that is not a Job's.
fn app_log(containers: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for c in containers {
        let image = c["image"].as_str().unwrap_or_default();
        let (repo, tag) = super::split_image(image);
        let at = now_rfc3339();
        if repo.ends_with("rocket.chat") {
            lines.push(format!("{{\"level\":30,\"time\":\"{at}\",\"msg\":\"Starting Rocket.Chat\",\"version\":\"{tag}\"}}"));
            lines.push("+------------------------------------------+".into());
            lines.push("|              SERVER RUNNING              |".into());
            lines.push(format!("|  Rocket.Chat Version: {tag:<19}|"));
            lines.push("|         Process Port: 3000               |".into());
            lines.push("|     ReplicaSet OpLog: Enabled            |".into());
            lines.push("+------------------------------------------+".into());
        } else if repo.ends_with("mongo") {
            lines.push(format!("{{\"t\":{{\"$date\":\"{at}\"}},\"s\":\"I\",\"c\":\"CONTROL\",\"msg\":\"MongoDB starting\",\"attr\":{{\"version\":\"{tag}\"}}}}"));
            lines.push(format!("{{\"t\":{{\"$date\":\"{at}\"}},\"s\":\"I\",\"c\":\"NETWORK\",\"msg\":\"Waiting for connections\",\"attr\":{{\"port\":27017}}}}"));
        } else {
            lines.push(format!(
                "{at} {} started ({image})",
                c["name"].as_str().unwrap_or("app")
            ));
        }
    }
    lines
}

/// FNV-1a, stable across runs (unlike the std hasher).
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A template without its `pod-template-hash` label, and without the empty values a typed
/// client adds (`creationTimestamp: null`, `resources: {}`), which the real API server defaults away.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH);
    }
    prune_empty(&mut t);
    t
}

fn prune_empty(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                prune_empty(x);
            }
            m.retain(|_, x| {
                !(x.is_null()
                    || x.as_object().is_some_and(|o| o.is_empty())
                    || x.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        Value::Array(a) => a.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// The short hash Kubernetes puts in `pod-template-hash`.
pub fn template_hash(template: &Value, collisions: i64) -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = fnv(&format!("{}{collisions}", without_hash(template)));
    (0..10)
        .map(|_| {
            let c = A[(h % A.len() as u64) as usize] as char;
            h /= A.len() as u64;
            c
        })
        .collect()
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn int_or_percent(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let raw = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(s) => s.clone(),
        _ => default.to_string(),
    };
    match raw.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) if round_up => (total * p + 99) / 100,
        Some(p) => total * p / 100,
        None => raw.parse().unwrap_or(0),
    }
}

fn set_condition(
    conds: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    progressed: bool,
) -> bool {
    let now = now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => {
            let changed = c["status"] != status || c["reason"] != reason;
            if changed {
                c["lastTransitionTime"] = json!(now);
            }
            if changed || progressed {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            changed
        }
        None => {
            conds.push(
                json!({"type": kind, "status": status, "reason": reason, "message": message,
                              "lastUpdateTime": now, "lastTransitionTime": now}),
            );
            true
        }
    }
}

fn deployment(store: &mut ObjectStore, mem: &mut Memory, d: &Value, now: Instant) {
    let (ns, name) = ns_name(d);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = d["spec"]["template"].clone();
    let mut owned = owned_by(store, "replicasets", d);
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let paused = d["spec"]["paused"] == true;
    let new_pos = owned
        .iter()
        .position(|rs| without_hash(&rs["spec"]["template"]) == without_hash(&template));
    let mut d = d.clone();
    let own_annotations: serde_json::Map<String, Value> = d["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !SKIP_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let strategy = d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        .to_string();
    let mut surge = int_or_percent(
        &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        replicas,
        true,
        "25%",
    );
    let mut unavailable = int_or_percent(
        &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        replicas,
        false,
        "25%",
    );
    if strategy == "Recreate" {
        surge = 0;
        unavailable = replicas;
    }
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let new_rs = match new_pos {
        Some(i) => {
            let mut rs = owned.remove(i);
            if revision(&rs) < max_rev || rs["metadata"]["annotations"][REVISION].is_null() {
                // An old template came back (rollback): it becomes the newest revision.
                let old = revision(&rs);
                let anns = rs["metadata"]["annotations"]
                    .as_object_mut()
                    .cloned()
                    .unwrap_or_default();
                let mut anns = anns;
                if old > 0 {
                    let hist = anns
                        .get(REVISION_HISTORY)
                        .and_then(Value::as_str)
                        .map(|h| format!("{h},{old}"))
                        .unwrap_or_else(|| old.to_string());
                    anns.insert(REVISION_HISTORY.into(), json!(hist));
                }
                anns.insert(REVISION.into(), json!((max_rev + 1).to_string()));
                for (k, v) in &own_annotations {
                    anns.insert(k.clone(), v.clone());
                }
                rs["metadata"]["annotations"] = Value::Object(anns);
                rs = write(store, "replicasets", rs.clone()).unwrap_or(rs);
            }
            rs
        }
        None if paused => return,
        None => {
            let collisions = d["status"]["collisionCount"].as_i64().unwrap_or(0);
            let hash = template_hash(&template, collisions);
            let mut t = template.clone();
            t["metadata"]["labels"][HASH] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH] = json!(hash);
            let mut anns = own_annotations.clone();
            anns.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            anns.insert(DESIRED.into(), json!(replicas.to_string()));
            anns.insert(MAX_REPLICAS.into(), json!((replicas + surge).to_string()));
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": t["metadata"]["labels"],
                             "annotations": anns, "ownerReferences": owner_ref(&d)},
                "spec": {"replicas": 0, "selector": selector, "template": t, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0)},
            });
            match store.create(by_plural("replicasets"), &ns, rs) {
                Ok(rs) => rs,
                Err(_) => return,
            }
        }
    };
    // The new ReplicaSet carries the Deployment's own annotations (a change-cause set after the image).
    let mut new_rs = new_rs;
    let stale = own_annotations
        .iter()
        .any(|(k, v)| new_rs["metadata"]["annotations"].get(k) != Some(v));
    if stale {
        let mut rs = new_rs.clone();
        for (k, v) in &own_annotations {
            rs["metadata"]["annotations"][k] = v.clone();
        }
        new_rs = write(store, "replicasets", rs).unwrap_or(new_rs);
    }
    // Keep the Deployment's revision annotation in step with its new ReplicaSet.
    let rev = new_rs["metadata"]["annotations"][REVISION].clone();
    if d["metadata"]["annotations"][REVISION] != rev {
        d["metadata"]["annotations"][REVISION] = rev;
        if let Some(updated) = write(store, "deployments", d.clone()) {
            d = updated;
        }
    }
    if paused {
        return;
    }
    // Rolling update arithmetic.
    let spec_of = |rs: &Value| rs["spec"]["replicas"].as_i64().unwrap_or(0);
    let avail_of = |rs: &Value| rs["status"]["availableReplicas"].as_i64().unwrap_or(0);
    let mut new_spec = spec_of(&new_rs);
    let old_total: i64 = owned.iter().map(spec_of).sum();
    if old_total == 0 {
        new_spec = replicas;
    } else if new_spec < replicas {
        let room = replicas + surge - (new_spec + old_total);
        new_spec += room.min(replicas - new_spec).max(0);
    } else if new_spec > replicas {
        new_spec = replicas;
    }
    if new_spec != spec_of(&new_rs) {
        let mut rs = new_rs.clone();
        rs["spec"]["replicas"] = json!(new_spec);
        rs["metadata"]["annotations"][DESIRED] = json!(replicas.to_string());
        write(store, "replicasets", rs);
    }
    if old_total > 0 {
        let min_available = replicas - unavailable;
        let new_unavailable = new_spec - avail_of(&new_rs);
        let mut budget = new_spec + old_total - min_available - new_unavailable;
        owned.sort_by_key(revision);
        for rs in owned.iter() {
            if budget <= 0 {
                break;
            }
            let s = spec_of(rs);
            if s == 0 {
                continue;
            }
            let cut = s.min(budget);
            budget -= cut;
            let mut rs = rs.clone();
            rs["spec"]["replicas"] = json!(s - cut);
            write(store, "replicasets", rs);
        }
    }
    // Re-read for status.
    let all = owned_by(store, "replicasets", &d);
    let new_rs = all
        .iter()
        .find(|rs| without_hash(&rs["spec"]["template"]) == without_hash(&template))
        .cloned()
        .unwrap_or(new_rs);
    let olds: Vec<&Value> = all.iter().filter(|rs| uid(rs) != uid(&new_rs)).collect();
    let st = |rs: &Value, k: &str| rs["status"][k].as_i64().unwrap_or(0);
    let total_replicas: i64 = all.iter().map(|r| st(r, "replicas")).sum();
    let updated = st(&new_rs, "replicas");
    let ready: i64 = all.iter().map(|r| st(r, "readyReplicas")).sum();
    let available: i64 = all.iter().map(|r| st(r, "availableReplicas")).sum();
    let spec_total: i64 = all.iter().map(spec_of).sum();
    let complete = updated == replicas
        && total_replicas == replicas
        && available == replicas
        && olds.iter().all(|r| st(r, "replicas") == 0);
    // Garbage-collect old, empty ReplicaSets beyond the history limit.
    if complete {
        let limit = d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&Value> = olds
            .iter()
            .copied()
            .filter(|r| spec_of(r) == 0 && st(r, "replicas") == 0)
            .collect();
        empty.sort_by_key(|r| revision(r));
        let excess = empty.len().saturating_sub(limit);
        for r in empty.into_iter().take(excess) {
            let (rns, rname) = ns_name(r);
            if let Ok(gone) = store.delete(by_plural("replicasets"), &rns, &rname) {
                collect_dependents(store, &gone, false);
            }
        }
    }
    let snapshot = json!([
        updated,
        ready,
        available,
        olds.iter().map(|r| st(r, "replicas")).sum::<i64>(),
        uid(&new_rs)
    ]);
    let entry = mem
        .progress
        .entry(uid(&d).to_string())
        .or_insert((snapshot.clone(), now));
    let progressed = entry.0 != snapshot;
    if progressed {
        *entry = (snapshot, now);
    }
    let deadline = d["spec"]["progressDeadlineSeconds"]
        .as_i64()
        .unwrap_or(600)
        .max(0) as u64;
    let stalled = !complete && now.duration_since(entry.1).as_secs_f64() >= deadline as f64;
    let mut status = d["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let rs_name = new_rs["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if available >= replicas - unavailable {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            false,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            false,
        );
    }
    let already_exceeded = conds
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if complete {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            progressed,
        );
    } else if stalled || (already_exceeded && !progressed) {
        set_condition(
            &mut conds,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            false,
        );
    } else {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            progressed,
        );
    }
    status["observedGeneration"] = d["metadata"]["generation"].clone();
    status["replicas"] = json!(total_replicas);
    status["updatedReplicas"] = json!(updated);
    status["readyReplicas"] = json!(ready);
    status["availableReplicas"] = json!(available);
    status["unavailableReplicas"] = json!((spec_total.max(replicas) - available).max(0));
    status["conditions"] = Value::Object(Default::default());
    status["conditions"] = Value::Array(conds);
    if d["status"] != status {
        d["status"] = status;
        write(store, "deployments", d);
    }
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn pod_terminal(p: &Value) -> bool {
    matches!(
        p["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

fn new_pod(owner: &Value, name: String, template: &Value, extra_labels: Value) -> Value {
    let (ns, _) = ns_name(owner);
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    if let Some(extra) = extra_labels.as_object() {
        for (k, v) in extra {
            labels[k] = v.clone();
        }
    }
    let mut spec = template["spec"].clone();
    if spec["restartPolicy"].is_null() {
        spec["restartPolicy"] = json!("Always");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": template["metadata"]["annotations"], "ownerReferences": owner_ref(owner)},
        "spec": spec,
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
    })
}

fn replicaset(store: &mut ObjectStore, rs: &Value) {
    let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
    let mut pods: Vec<Value> = owned_by(store, "pods", rs)
        .into_iter()
        .filter(|p| !pod_terminal(p))
        .collect();
    let (ns, name) = ns_name(rs);
    while pods.len() < want {
        let p = new_pod(
            rs,
            format!("{name}-{}", random_suffix()),
            &rs["spec"]["template"],
            json!({}),
        );
        match store.create(by_plural("pods"), &ns, p) {
            Ok(p) => pods.push(p),
            Err(_) => break,
        }
    }
    if pods.len() > want {
        // Not-ready pods go first, then the newest.
        pods.sort_by_key(|p| {
            (
                pod_ready(p),
                std::cmp::Reverse(
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        });
        for p in pods.drain(..pods.len() - want).collect::<Vec<_>>() {
            let (pns, pname) = ns_name(&p);
            let _ = store.delete(by_plural("pods"), &pns, &pname);
        }
    }
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let status = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "readyReplicas": ready,
                        "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]});
    if rs["status"] != status {
        let mut rs = rs.clone();
        rs["status"] = status;
        write(store, "replicasets", rs);
    }
}

fn statefulset(store: &mut ObjectStore, s: &Value) {
    let (ns, name) = ns_name(s);
    let want = s["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let template = &s["spec"]["template"];
    let rev_hash = template_hash(template, 0);
    let update_revision = format!("{name}-{rev_hash}");
    // One ControllerRevision per template.
    let revisions = owned_by(store, "controllerrevisions", s);
    if !revisions
        .iter()
        .any(|r| r["metadata"]["name"] == update_revision.as_str())
    {
        let next = revisions
            .iter()
            .map(|r| r["revision"].as_i64().unwrap_or(0))
            .max()
            .unwrap_or(0)
            + 1;
        let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                        "metadata": {"name": update_revision, "namespace": ns, "labels": template["metadata"]["labels"], "ownerReferences": owner_ref(s)},
                        "data": {"spec": {"template": template}}, "revision": next});
        let _ = store.create(by_plural("controllerrevisions"), &ns, cr);
    }
    let pods = owned_by(store, "pods", s);
    let by_ordinal = |i: i64| {
        pods.iter()
            .find(|p| p["metadata"]["name"] == format!("{name}-{i}").as_str())
    };
    // Scale up in order, each after the previous is ready.
    for i in 0..want {
        match by_ordinal(i) {
            Some(p) if pod_ready(p) => continue,
            Some(_) => break,
            None => {
                let labels = json!({"statefulset.kubernetes.io/pod-name": format!("{name}-{i}"), "controller-revision-hash": update_revision, "apps.kubernetes.io/pod-index": i.to_string()});
                let p = new_pod(s, format!("{name}-{i}"), template, labels);
                let _ = store.create(by_plural("pods"), &ns, p);
                break;
            }
        }
    }
    // Scale down from the highest ordinal.
    for p in &pods {
        let ord: i64 = p["metadata"]["name"]
            .as_str()
            .and_then(|n| n.rsplit('-').next())
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        if ord >= want {
            let _ = store.delete(
                by_plural("pods"),
                &ns,
                p["metadata"]["name"].as_str().unwrap_or_default(),
            );
        }
    }
    // Rolling update: replace one outdated pod at a time, highest ordinal first, when all are ready.
    let pods = owned_by(store, "pods", s);
    let all_ready = pods.len() as i64 == want && pods.iter().all(pod_ready);
    if all_ready {
        let mut outdated: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["labels"]["controller-revision-hash"] != update_revision.as_str()
            })
            .collect();
        outdated.sort_by_key(|p| {
            std::cmp::Reverse(
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        if let Some(p) = outdated.first() {
            let _ = store.delete(
                by_plural("pods"),
                &ns,
                p["metadata"]["name"].as_str().unwrap_or_default(),
            );
        }
    }
    let pods = owned_by(store, "pods", s);
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == update_revision.as_str())
        .count();
    let current_revision = if updated == pods.len() && pods.len() as i64 == want {
        update_revision.clone()
    } else {
        s["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&update_revision)
            .to_string()
    };
    let status = json!({"observedGeneration": s["metadata"]["generation"], "replicas": pods.len(), "readyReplicas": ready,
                        "currentReplicas": pods.len() - updated + if current_revision == update_revision { updated } else { 0 },
                        "updatedReplicas": updated, "availableReplicas": ready, "currentRevision": current_revision,
                        "updateRevision": update_revision, "collisionCount": 0});
    if s["status"] != status {
        let mut s = s.clone();
        s["status"] = status;
        write(store, "statefulsets", s);
    }
}

fn job_condition(j: &Value, kind: &str) -> bool {
    j["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn job(store: &mut ObjectStore, j: &Value) {
    let (ns, name) = ns_name(j);
    let mut j = j.clone();
    // What the API server adds on create: selector and template labels keyed by the Job's uid.
    if j["spec"]["selector"].is_null() {
        let id = uid(&j).to_string();
        j["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": id}});
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", id.as_str()),
            ("controller-uid", id.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("job-name", name.as_str()),
        ] {
            j["spec"]["template"]["metadata"]["labels"][k] = json!(v);
        }
        for (k, v) in [
            ("backoffLimit", json!(6)),
            ("completions", json!(1)),
            ("parallelism", json!(1)),
        ] {
            if j["spec"][k].is_null() {
                j["spec"][k] = v;
            }
        }
        if j["spec"]["template"]["spec"]["restartPolicy"].is_null() {
            j["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        }
        j = match write(store, "jobs", j) {
            Some(j) => j,
            None => return,
        };
    }
    if job_condition(&j, "Complete") || job_condition(&j, "Failed") {
        return;
    }
    let pods = owned_by(store, "pods", &j);
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count() as i64;
    let failed = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Failed")
        .count() as i64;
    let active = pods.iter().filter(|p| !pod_terminal(p)).count() as i64;
    let completions = j["spec"]["completions"].as_i64().unwrap_or(1);
    let backoff = j["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let suspended = j["spec"]["suspend"] == true;
    let mut status = j["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    if status["startTime"].is_null() && !suspended {
        status["startTime"] = json!(now_rfc3339());
    }
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut active_now = active;
    if succeeded >= completions {
        set_condition(
            &mut conds,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            false,
        );
        set_condition(
            &mut conds,
            "Complete",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            false,
        );
        status["completionTime"] = json!(now_rfc3339());
    } else if failed > backoff {
        set_condition(
            &mut conds,
            "FailureTarget",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            false,
        );
        set_condition(
            &mut conds,
            "Failed",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            false,
        );
    } else if active == 0 && !suspended {
        let p = new_pod(
            &j,
            format!("{name}-{}", random_suffix()),
            &j["spec"]["template"],
            json!({}),
        );
        if store.create(by_plural("pods"), &ns, p).is_ok() {
            active_now += 1;
        }
    }
    status["active"] = json!(active_now);
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["ready"] = json!(pods.iter().filter(|p| pod_ready(p)).count());
    status["terminating"] = json!(0);
    status["conditions"] = Value::Array(conds);
    if j["status"] != status {
        j["status"] = status;
        write(store, "jobs", j);
    }
}

fn cronjob(store: &mut ObjectStore, cj: &Value) {
    let (ns, name) = ns_name(cj);
    let jobs = owned_by(store, "jobs", cj);
    let now = chrono::Utc::now();
    let mut cj = cj.clone();
    let mut status = cj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let active: Vec<Value> = jobs
        .iter()
        .filter(|j| !job_condition(j, "Complete") && !job_condition(j, "Failed"))
        .map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"], "namespace": ns, "uid": j["metadata"]["uid"]}))
        .collect();
    let last_success = jobs
        .iter()
        .filter(|j| job_condition(j, "Complete"))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max()
        .map(str::to_string);
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(t);
    }
    status["active"] = if active.is_empty() {
        Value::Null
    } else {
        Value::Array(active.clone())
    };
    if let Some(o) = status.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let suspended = cj["spec"]["suspend"] == true;
    let schedule = cj["spec"]["schedule"].as_str().unwrap_or_default();
    if !suspended && let Ok(cron) = croner::Cron::from_str(schedule) {
        let since = status["lastScheduleTime"]
            .as_str()
            .or(cj["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now);
        if let Ok(next) = cron.find_next_occurrence(&since, false) {
            let forbid = cj["spec"]["concurrencyPolicy"] == "Forbid" && !active.is_empty();
            if next <= now && !forbid {
                let job = json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": format!("{name}-{}", next.timestamp() / 60), "namespace": ns,
                                 "labels": cj["spec"]["jobTemplate"]["metadata"]["labels"],
                                 "annotations": {"cronjob.kubernetes.io/scheduled-timestamp": next.to_rfc3339()},
                                 "ownerReferences": owner_ref(&cj)},
                    "spec": cj["spec"]["jobTemplate"]["spec"],
                });
                let _ = store.create(by_plural("jobs"), &ns, job);
                status["lastScheduleTime"] = json!(next.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        }
    }
    if cj["status"] != status {
        cj["status"] = status;
        write(store, "cronjobs", cj);
    }
}

fn hpa(store: &mut ObjectStore, h: &Value) {
    let (ns, _) = ns_name(h);
    let target = &h["spec"]["scaleTargetRef"];
    let plural = match target["kind"].as_str() {
        Some("Deployment") => "deployments",
        Some("StatefulSet") => "statefulsets",
        _ => return,
    };
    let Ok(mut obj) = store.get(
        by_plural(plural),
        &ns,
        target["name"].as_str().unwrap_or_default(),
    ) else {
        return;
    };
    let min = h["spec"]["minReplicas"].as_i64().unwrap_or(1);
    let max = h["spec"]["maxReplicas"].as_i64().unwrap_or(min);
    let current = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let mut h = h.clone();
    let mut conds = Vec::new();
    let desired = if current == 0 && min != 0 {
        set_condition(
            &mut conds,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            false,
        );
        0
    } else {
        set_condition(
            &mut conds,
            "ScalingActive",
            "True",
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count",
            false,
        );
        current.clamp(min, max.max(min))
    };
    if desired != current {
        obj["spec"]["replicas"] = json!(desired);
        write(store, plural, obj);
    }
    let status =
        json!({"currentReplicas": current, "desiredReplicas": desired, "conditions": conds});
    let same = h["status"]["currentReplicas"] == status["currentReplicas"]
        && h["status"]["desiredReplicas"] == status["desiredReplicas"];
    if !same {
        h["status"] = status;
        write(store, "horizontalpodautoscalers", h);
    }
}

fn script_for<'a>(scripts: &'a [(String, JobScript)], job: &str) -> Option<&'a JobScript> {
    scripts
        .iter()
        .find(|(prefix, _)| job.starts_with(prefix.as_str()))
        .map(|(_, s)| s)
}

#[allow(clippy::too_many_arguments)]
fn kubelet(
    store: &mut ObjectStore,
    mem: &mut Memory,
    p: &Value,
    now: Instant,
    ready_after: std::time::Duration,
    registry: &super::Registry,
    scripts: &[(String, JobScript)],
    logs: &mut Vec<((String, String), Vec<String>)>,
    local: Option<(&LocalJobs, &Arc<Runs>)>,
) {
    if pod_terminal(p) {
        return;
    }
    let (ns, name) = ns_name(p);
    let born = *mem.pod_born.entry(uid(p).to_string()).or_insert(now);
    let age = now.duration_since(born);
    let containers = p["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let job_name = p["metadata"]["labels"]["batch.kubernetes.io/job-name"]
        .as_str()
        .map(str::to_string);
    let mut status = p["status"].clone();
    let started = json!(now_rfc3339());
    let unpullable = containers
        .iter()
        .find(|c| !registry.pullable(c["image"].as_str().unwrap_or_default()));
    let phase_before = status["phase"].clone();
    if let Some(c) = unpullable {
        let image = c["image"].as_str().unwrap_or_default();
        let reason = if age >= ready_after {
            "ImagePullBackOff"
        } else {
            "ErrImagePull"
        };
        status["phase"] = json!("Pending");
        status["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
        status["containerStatuses"] = json!(containers.iter().map(|c| json!({
            "name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false,
            "state": {"waiting": {"reason": reason, "message": format!("Back-off pulling image \"{image}\"")}}
        })).collect::<Vec<_>>());
    } else if let Some(job) = job_name.as_ref()
        && let Some((rt, runs)) = local.filter(|(rt, _)| rt.runs_pod(p))
    {
        local_job(store, rt, runs, p, job, &mut status, logs);
    } else if let Some(job) = job_name {
        // A Job's script is found by its name, else by the CronJob it came from.
        let owner_cronjob = store.get(by_plural("jobs"), &ns, &job).ok().and_then(|j| {
            j["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|o| o.iter().find(|r| r["kind"] == "CronJob"))
                .and_then(|r| r["name"].as_str().map(str::to_string))
        });
        // A pod no Job controls (one that only carries a Job's name label) runs a program of
        // its own: the script for its own name, when there is one.
        let a_jobs_pod = p["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| {
                o.iter()
                    .any(|r| r["kind"] == "Job" && r["controller"] == true)
            });
        let own = (!a_jobs_pod).then(|| script_for(scripts, &name)).flatten();
        let script = own
            .or_else(|| script_for(scripts, &job))
            .or_else(|| {
                owner_cronjob
                    .as_deref()
                    .and_then(|cj| script_for(scripts, cj))
            })
            .cloned()
            .unwrap_or_default();
        let subst = |s: &str| s.replace("{job}", &job).replace("{namespace}", &ns);
        if age >= script.runtime {
            let ok = script.exit_code == 0;
            let reason = if ok {
                "Completed"
            } else if script.exit_code == 137 {
                "OOMKilled"
            } else {
                "Error"
            };
            status["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
            status["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
            status["containerStatuses"] = json!(containers.iter().map(|c| json!({
                "name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": script.exit_code, "reason": reason, "message": subst(&script.termination_message),
                                          "startedAt": status["startTime"], "finishedAt": now_rfc3339()}}
            })).collect::<Vec<_>>());
            logs.push((
                (ns.clone(), name.clone()),
                script.log.iter().map(|l| subst(l)).collect(),
            ));
        } else if status["phase"] != "Running" {
            status["phase"] = json!("Running");
            status["startTime"] = started;
            status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
            status["containerStatuses"] = json!(containers.iter().map(|c| json!({
                "name": c["name"], "image": c["image"], "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": now_rfc3339()}}
            })).collect::<Vec<_>>());
        }
    } else {
        let bad = containers.iter().find(|c| {
            let (_, tag) = super::split_image(c["image"].as_str().unwrap_or_default());
            tag.contains("crash") || tag.contains("oom")
        });
        if let Some(c) = bad {
            if age >= ready_after {
                let (_, tag) = super::split_image(c["image"].as_str().unwrap_or_default());
                let (reason, code) = if tag.contains("oom") {
                    ("OOMKilled", 137)
                } else {
                    ("Error", 1)
                };
                let restarts = (age.as_millis() / ready_after.as_millis().max(1)) as i64;
                status["phase"] = json!("Running");
                status["conditions"] =
                    json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
                status["containerStatuses"] = json!(containers.iter().map(|c| json!({
                    "name": c["name"], "image": c["image"], "ready": false, "restartCount": restarts, "started": false,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}},
                    "lastState": {"terminated": {"exitCode": code, "reason": reason}}
                })).collect::<Vec<_>>());
            }
        } else if age >= ready_after && !pod_ready(p) {
            status["phase"] = json!("Running");
            status["startTime"] = started;
            status["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                                          {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}]);
            status["containerStatuses"] = json!(containers.iter().map(|c| json!({
                "name": c["name"], "image": c["image"], "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": now_rfc3339()}}
            })).collect::<Vec<_>>());
            status["podIP"] = json!(format!("10.0.{}.{}", fastrand::u8(..), fastrand::u8(1..)));
            logs.push((ns_name(p), app_log(&containers)));
        }
    }
    let _ = phase_before;
    if p["status"] != status {
        let mut p = p.clone();
        p["status"] = status;
        write(store, "pods", p);
    }
}

/// A Job pod of the local runtime: started on a thread on first sight, its status written from
/// the real run when it ends.
fn local_job(
    store: &ObjectStore,
    rt: &LocalJobs,
    runs: &Arc<Runs>,
    p: &Value,
    job: &str,
    status: &mut Value,
    logs: &mut Vec<((String, String), Vec<String>)>,
) {
    let (ns, name) = ns_name(p);
    let id = uid(p).to_string();
    let mut by_pod = runs.by_pod.lock().unwrap_or_else(|e| e.into_inner());
    let started_at = status["startTime"].clone();
    let statuses = |cs: &[&runtime::Finished]| {
        json!(cs.iter().map(|c| json!({
            "name": c.name, "image": c.image, "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {"exitCode": c.exit_code, "reason": c.reason, "message": c.message,
                                      "startedAt": started_at, "finishedAt": now_rfc3339()}}
        })).collect::<Vec<_>>())
    };
    match by_pod.get(&id) {
        None => {
            let lookup =
                |plural: &str, ns: &str, name: &str| store.get(by_plural(plural), ns, name).ok();
            let job_obj = store.get(by_plural("jobs"), &ns, job).ok();
            let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
            match runtime::plan(p, job_obj.as_ref(), &lookup, rt, &host_path) {
                Ok(plan) => {
                    by_pod.insert(id.clone(), None);
                    let runs = runs.clone();
                    std::thread::spawn(move || {
                        let outcome = runtime::execute(&plan);
                        // As when a pod goes: its own volumes (emptyDir, Secret files) are removed.
                        let _ = std::fs::remove_dir_all(plan.dir.join("home"));
                        let _ = std::fs::remove_dir_all(plan.dir.join("volumes"));
                        runs.by_pod
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, Some(outcome));
                    });
                    status["phase"] = json!("Running");
                    status["startTime"] = json!(now_rfc3339());
                    status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                }
                Err(why) => {
                    // As the kubelet's CreateContainerConfigError, but final: nothing will fix it.
                    status["phase"] = json!("Failed");
                    status["containerStatuses"] = json!(p["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                        "name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false,
                        "state": {"terminated": {"exitCode": 1, "reason": "CreateContainerConfigError", "message": why}}
                    })).collect::<Vec<_>>());
                    logs.push(((ns, name), vec![why]));
                }
            }
        }
        Some(None) => {}
        Some(Some(outcome)) => {
            let init: Vec<&runtime::Finished> =
                outcome.containers.iter().filter(|c| c.init).collect();
            let main: Vec<&runtime::Finished> =
                outcome.containers.iter().filter(|c| !c.init).collect();
            status["phase"] = json!(if outcome.succeeded() {
                "Succeeded"
            } else {
                "Failed"
            });
            status["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
            if !init.is_empty() {
                status["initContainerStatuses"] = statuses(&init);
            }
            status["containerStatuses"] = if main.is_empty() {
                // An init container failed: the containers never started.
                json!(p["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                    "name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "PodInitializing"}}
                })).collect::<Vec<_>>())
            } else {
                statuses(&main)
            };
            logs.push(((ns, name), outcome.logs.clone()));
            by_pod.remove(&id);
        }
    }
}

/// Deletes (or orphans) the dependents of a deleted object, transitively.
pub(crate) fn collect_dependents(store: &mut ObjectStore, deleted: &Value, orphan: bool) {
    let id = uid(deleted).to_string();
    if id.is_empty() {
        return;
    }
    for plural in ["replicasets", "pods", "jobs", "controllerrevisions"] {
        for o in store.all(plural) {
            let refs = o["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !refs.iter().any(|r| r["uid"] == id.as_str()) {
                continue;
            }
            let (ns, name) = ns_name(&o);
            if orphan {
                let mut o = o.clone();
                o["metadata"]["ownerReferences"] = Value::Array(
                    refs.into_iter()
                        .filter(|r| r["uid"] != id.as_str())
                        .collect(),
                );
                write(store, plural, o);
            } else if let Ok(gone) = store.delete(by_plural(plural), &ns, &name) {
                collect_dependents(store, &gone, false);
            }
        }
    }
}

/// Background garbage collection: dependents whose controller is gone are deleted.
fn orphan_sweep(store: &mut ObjectStore) {
    let uids = store.uids();
    for plural in ["replicasets", "pods", "controllerrevisions"] {
        let orphans = store.all_where(plural, |o| {
            controller_uid(o).is_some_and(|owner| !uids.contains(owner))
        });
        for o in orphans {
            let (ns, name) = ns_name(&o);
            if let Ok(gone) = store.delete(by_plural(plural), &ns, &name) {
                collect_dependents(store, &gone, false);
            }
        }
    }
}
