//! Watches of the managed namespaces: one per kind and API server across the cluster (per namespace where RBAC is namespaced), resumed after a drop and re-listed after 410, feeding alerts and the backup catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Clusters;

/// The kinds the bot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchedKind {
    Jobs,
    Pods,
    Deployments,
    StatefulSets,
    CronJobs,
    /// Core Events (for Warning events worth surfacing).
    Events,
}

/// What a watch saw, in a neutral form.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// An object was added or changed (or listed after a (re)start).
    Applied {
        env: String,
        kind: WatchedKind,
        object: Value,
    },
    Deleted {
        env: String,
        kind: WatchedKind,
        object: Value,
    },
    /// The watch (re)started with a full list: state derived from earlier events should be re-checked.
    Relisted { env: String, kind: WatchedKind },
    /// The API server refuses the watch (401/403): the bot lost its permission to read `kind`.
    /// Sent once per refusal; `environments` is how many environments the watch served.
    Refused {
        env: String,
        kind: WatchedKind,
        environments: usize,
        message: String,
    },
    /// A refused watch works again.
    Restored { env: String, kind: WatchedKind },
}

impl WatchedKind {
    /// The resource's plural, as RBAC rules name it.
    pub fn plural(self) -> &'static str {
        match self {
            WatchedKind::Jobs => "jobs",
            WatchedKind::Pods => "pods",
            WatchedKind::Deployments => "deployments",
            WatchedKind::StatefulSets => "statefulsets",
            WatchedKind::CronJobs => "cronjobs",
            WatchedKind::Events => "events",
        }
    }
}

/// An untyped object as the JSON the API server sent: its fields, `metadata`, `apiVersion`, `kind`.
fn into_value(o: DynamicObject) -> Value {
    let mut v = match o.data {
        Value::Object(m) => Value::Object(m),
        _ => Value::Object(Default::default()),
    };
    v["metadata"] = serde_json::to_value(&o.metadata).unwrap_or(Value::Null);
    if let Some(t) = o.types {
        v["apiVersion"] = Value::String(t.api_version);
        v["kind"] = Value::String(t.kind);
    }
    v
}

/// Objects per page of a watch's list: a bound on what one list holds in memory at once.
const LIST_PAGE: u32 = 100;

/// Drops what no reader of the events uses and what makes objects big: managed fields (a Job
/// keeps who manages which top-level field: the catalog records who created it), the
/// last-applied copy of the object, pod templates, and a pod's spec. Alerts and the backup
/// catalog read names, labels, owners, `spec` counts and schedules, and `status`.
pub fn slim(kind: WatchedKind, object: &mut Value) {
    let Some(o) = object.as_object_mut() else {
        return;
    };
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        let managed = meta.remove("managedFields");
        if kind == WatchedKind::Jobs
            && let Some(Value::Array(entries)) = managed
        {
            let kept: Vec<Value> = entries.iter().map(managers_only).collect();
            meta.insert("managedFields".into(), Value::Array(kept));
        }
        if let Some(notes) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            notes.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    match kind {
        WatchedKind::Pods => {
            o.remove("spec");
        }
        WatchedKind::Events => {}
        _ => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("template");
                spec.remove("jobTemplate");
            }
        }
    }
}

/// A managed-fields entry cut to its manager, operation, subresource and the top-level fields
/// it owns.
fn managers_only(entry: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for k in ["manager", "operation", "subresource", "time"] {
        if let Some(v) = entry.get(k) {
            kept.insert(k.into(), v.clone());
        }
    }
    if let Some(fields) = entry.get("fieldsV1").and_then(Value::as_object) {
        let top = fields
            .keys()
            .map(|k| (k.clone(), Value::Object(Default::default())))
            .collect();
        kept.insert("fieldsV1".into(), Value::Object(top));
    }
    Value::Object(kept)
}

/// Environments on one API server: its client and which namespace is which environment.
struct Group {
    client: kube::Client,
    envs: Arc<BTreeMap<String, String>>,
}

/// Groups environments by API server.
fn groups(clusters: &Clusters) -> Vec<Group> {
    let mut by_server: BTreeMap<String, (kube::Client, BTreeMap<String, String>)> = BTreeMap::new();
    for (env, c) in clusters.iter() {
        by_server
            .entry(c.server().to_string())
            .or_insert_with(|| (c.client().clone(), BTreeMap::new()))
            .1
            .insert(c.namespace().to_string(), env.to_string());
    }
    by_server
        .into_values()
        .map(|(client, envs)| Group {
            client,
            envs: Arc::new(envs),
        })
        .collect()
}

/// What a watch of one kind needs to know.
#[derive(Clone)]
struct Watch {
    kind: WatchedKind,
    cfg: watcher::Config,
    tx: mpsc::Sender<ClusterEvent>,
    cancel: CancellationToken,
}

/// Starts the watches; events arrive on the returned channel until `cancel`.
///
/// Environments that share an API server share one watch per kind across the cluster
/// (`/apis/…/jobs` with no namespace), each event mapped to its environment by namespace: the
/// connections to a server are bounded by the number of kinds, not by environments × kinds. Where
/// the bot may not list a kind cluster-wide (namespaced RBAC: 403), that kind falls back to one
/// watch per namespace, and the log says so. Events are watched as `type=Warning` only.
pub fn watch_environments(
    clusters: &Clusters,
    kinds: &[WatchedKind],
    labels: Option<&str>,
    cancel: CancellationToken,
) -> mpsc::Receiver<ClusterEvent> {
    // Small: a watch waits for the alerter rather than queueing a whole first list of objects.
    let (tx, rx) = mpsc::channel(64);
    for group in groups(clusters) {
        for kind in kinds {
            // The first list comes in pages, so only one page of typed objects is held at a time.
            let mut cfg = watcher::Config::default().page_size(LIST_PAGE);
            if let Some(l) = labels {
                cfg = cfg.labels(l);
            }
            if *kind == WatchedKind::Events {
                cfg = cfg.fields("type=Warning");
            }
            let w = Watch {
                kind: *kind,
                cfg,
                tx: tx.clone(),
                cancel: cancel.clone(),
            };
            let scope = if group.envs.len() == 1 {
                let (ns, env) = group
                    .envs
                    .iter()
                    .next()
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .unwrap_or_default();
                Scope::Namespace { ns, env }
            } else {
                Scope::Cluster(group.envs.clone())
            };
            start(group.client.clone(), scope, w);
        }
    }
    rx
}

/// Where one watch looks.
#[derive(Clone)]
enum Scope {
    /// One namespace, one environment.
    Namespace { ns: String, env: String },
    /// Every namespace; events of the listed ones (namespace → environment) pass.
    Cluster(Arc<BTreeMap<String, String>>),
}

fn start(client: kube::Client, scope: Scope, w: Watch) {
    let resource = match w.kind {
        WatchedKind::Jobs => ApiResource::erase::<Job>(&()),
        WatchedKind::Pods => ApiResource::erase::<Pod>(&()),
        WatchedKind::Deployments => ApiResource::erase::<Deployment>(&()),
        WatchedKind::StatefulSets => ApiResource::erase::<StatefulSet>(&()),
        WatchedKind::CronJobs => ApiResource::erase::<CronJob>(&()),
        WatchedKind::Events => ApiResource::erase::<Event>(&()),
    };
    // Untyped: each object is read once into JSON and slimmed, not decoded into a typed struct
    // and encoded again; and one watch loop serves every kind.
    let api = match &scope {
        Scope::Namespace { ns, .. } => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster(_) => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    spawn_watch(api, client, scope, w)
}

/// Whether a watch error is the API server refusing the bot (401/403).
fn refused(e: &watcher::Error) -> bool {
    let k = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => k,
        watcher::Error::WatchError(s) => return matches!(s.code, 401 | 403),
        _ => return false,
    };
    matches!(k, kube::Error::Api(s) if matches!(s.code, 401 | 403))
}

fn spawn_watch(api: Api<DynamicObject>, client: kube::Client, scope: Scope, w: Watch) {
    tokio::spawn(async move {
        let kind = w.kind;
        // The watcher resumes from its last resourceVersion after a drop and re-lists after 410;
        // the backoff keeps a broken API server from being hammered.
        let probe = api.clone();
        let mut stream = watcher(api, w.cfg.clone()).default_backoff().boxed();
        // While refused, a small list now and then tells when the permission is back (a quiet
        // namespace sends nothing to notice it by).
        let mut recheck = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut listed = false;
        let mut refusing = false;
        let first_env = match &scope {
            Scope::Namespace { env, .. } => env.clone(),
            Scope::Cluster(envs) => envs.values().next().cloned().unwrap_or_default(),
        };
        let served = match &scope {
            Scope::Namespace { .. } => 1,
            Scope::Cluster(envs) => envs.len(),
        };
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = recheck.tick(), if refusing => {
                    let lp = kube::api::ListParams::default().limit(1);
                    if probe.list_metadata(&lp).await.is_ok() {
                        refusing = false;
                        let restored = ClusterEvent::Restored { env: first_env.clone(), kind };
                        if w.tx.send(restored).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                _ = w.cancel.cancelled() => return,
            };
            let (object, deleted) = match next {
                Some(Ok(watcher::Event::Apply(o))) | Some(Ok(watcher::Event::InitApply(o))) => {
                    (o, false)
                }
                Some(Ok(watcher::Event::Delete(o))) => (o, true),
                Some(Ok(watcher::Event::Init)) => {
                    let envs: Vec<String> = match &scope {
                        Scope::Namespace { env, .. } => vec![env.clone()],
                        Scope::Cluster(envs) => envs.values().cloned().collect(),
                    };
                    for env in envs {
                        if w.tx
                            .send(ClusterEvent::Relisted { env, kind })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // Listed once: a later refusal is a lost permission, not namespaced RBAC.
                    listed = true;
                    if refusing {
                        refusing = false;
                        let restored = ClusterEvent::Restored {
                            env: first_env.clone(),
                            kind,
                        };
                        if w.tx.send(restored).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Some(Err(e)) => {
                    if let Scope::Cluster(envs) = &scope
                        && !listed
                        && refused(&e)
                    {
                        tracing::warn!(?kind, namespaces = envs.len(), error = %e,
                            "no cluster-wide read of this kind; watching each namespace instead");
                        for (ns, env) in envs.iter() {
                            let one = Scope::Namespace {
                                ns: ns.clone(),
                                env: env.clone(),
                            };
                            start(client.clone(), one, w.clone());
                        }
                        return;
                    }
                    tracing::warn!(?kind, error = %e, "watch error; the watcher retries");
                    if refused(&e) && !refusing {
                        // Once per streak: the watcher backs off and retries; one incident says why.
                        refusing = true;
                        let refused = ClusterEvent::Refused {
                            env: first_env.clone(),
                            kind,
                            environments: served,
                            // The server's words, without the debug dump of its Status.
                            message: e
                                .to_string()
                                .split(" (Status {")
                                .next()
                                .unwrap_or_default()
                                .to_string(),
                        };
                        if w.tx.send(refused).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                None => return,
            };
            let ns = object.meta().namespace.as_deref().unwrap_or_default();
            let env = match &scope {
                Scope::Namespace { env, .. } => env.clone(),
                Scope::Cluster(envs) => match envs.get(ns) {
                    Some(env) => env.clone(),
                    // A namespace the bot does not manage.
                    None => continue,
                },
            };
            let mut object = into_value(object);
            slim(kind, &mut object);
            let event = if deleted {
                ClusterEvent::Deleted { env, kind, object }
            } else {
                ClusterEvent::Applied { env, kind, object }
            };
            if w.tx.send(event).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_watched_object_keeps_what_alerts_read_and_loses_its_templates_and_managed_fields() {
        let mut sts = json!({
            "metadata": {"name": "mongodb", "labels": {"app": "db"}, "ownerReferences": [],
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}", "note": "kept"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": []}}},
            "status": {"readyReplicas": 2}
        });
        slim(WatchedKind::StatefulSets, &mut sts);
        assert_eq!(
            sts,
            json!({
                "metadata": {"name": "mongodb", "labels": {"app": "db"}, "ownerReferences": [],
                    "annotations": {"note": "kept"}},
                "spec": {"replicas": 3},
                "status": {"readyReplicas": 2}
            })
        );
        let mut cron =
            json!({"spec": {"schedule": "0 * * * *", "suspend": false, "jobTemplate": {}}});
        slim(WatchedKind::CronJobs, &mut cron);
        assert_eq!(
            cron,
            json!({"spec": {"schedule": "0 * * * *", "suspend": false}})
        );
    }

    #[test]
    fn a_watched_job_keeps_who_manages_its_top_level_fields() {
        let mut job = json!({
            "metadata": {"name": "b", "managedFields": [
                {"manager": "kubectl-create", "operation": "Update", "apiVersion": "batch/v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:active": {}}}}]},
            "spec": {"template": {}}
        });
        slim(WatchedKind::Jobs, &mut job);
        assert_eq!(
            job["metadata"]["managedFields"],
            json!([
                {"manager": "kubectl-create", "operation": "Update", "fieldsV1": {"f:spec": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:status": {}}}
            ])
        );
        assert_eq!(
            crate::cluster::jobs::creator(&job["metadata"]["managedFields"]).as_deref(),
            Some("kubectl-create")
        );
    }

    #[test]
    fn a_pod_keeps_its_status_not_its_spec_and_an_event_is_left_whole() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"containerStatuses": [{"restartCount": 4}]}});
        slim(WatchedKind::Pods, &mut pod);
        assert_eq!(
            pod,
            json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"restartCount": 4}]}})
        );
        let event =
            json!({"type": "Warning", "reason": "BackOff", "involvedObject": {"kind": "Pod"}});
        let mut same = event.clone();
        slim(WatchedKind::Events, &mut same);
        assert_eq!(same, event);
        let mut odd = json!("not an object");
        slim(WatchedKind::Jobs, &mut odd);
        assert_eq!(odd, json!("not an object"));
    }
}
