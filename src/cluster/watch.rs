//! Watches of the managed namespaces: one per kind and API server across the cluster (per namespace where RBAC is namespaced), resumed after a drop and re-listed after 410, feeding alerts and the backup catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
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
    let (tx, rx) = mpsc::channel(1024);
    for group in groups(clusters) {
        for kind in kinds {
            let mut cfg = watcher::Config::default();
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
    macro_rules! typed {
        ($t:ty) => {{
            let api = match &scope {
                Scope::Namespace { ns, .. } => Api::<$t>::namespaced(client.clone(), ns),
                Scope::Cluster(_) => Api::<$t>::all(client.clone()),
            };
            spawn_watch(api, client, scope, w)
        }};
    }
    match w.kind {
        WatchedKind::Jobs => typed!(Job),
        WatchedKind::Pods => typed!(Pod),
        WatchedKind::Deployments => typed!(Deployment),
        WatchedKind::StatefulSets => typed!(StatefulSet),
        WatchedKind::CronJobs => typed!(CronJob),
        WatchedKind::Events => typed!(Event),
    }
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

fn spawn_watch<K>(api: Api<K>, client: kube::Client, scope: Scope, w: Watch)
where
    K: Resource
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
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
            let object = serde_json::to_value(&object).unwrap_or(Value::Null);
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
