//! Watches of the managed namespaces, one per resource kind and environment, resumed after a drop and re-listed after 410, feeding alerts and the backup catalog.

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
}

/// Starts one watch per environment and kind; events arrive on the returned channel until `cancel`.
pub fn watch_environments(
    clusters: &Clusters,
    kinds: &[WatchedKind],
    labels: Option<&str>,
    cancel: CancellationToken,
) -> mpsc::Receiver<ClusterEvent> {
    let (tx, rx) = mpsc::channel(1024);
    for (env, cluster) in clusters.iter() {
        for kind in kinds {
            let client = cluster.client.clone();
            let ns = cluster.namespace.clone();
            let (env, kind, tx, cancel) = (env.to_string(), *kind, tx.clone(), cancel.clone());
            let mut cfg = watcher::Config::default();
            if let Some(l) = labels {
                cfg = cfg.labels(l);
            }
            match kind {
                WatchedKind::Jobs => spawn_watch(
                    Api::<Job>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
                WatchedKind::Pods => spawn_watch(
                    Api::<Pod>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
                WatchedKind::Deployments => spawn_watch(
                    Api::<Deployment>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
                WatchedKind::StatefulSets => spawn_watch(
                    Api::<StatefulSet>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
                WatchedKind::CronJobs => spawn_watch(
                    Api::<CronJob>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
                WatchedKind::Events => spawn_watch(
                    Api::<Event>::namespaced(client, &ns),
                    cfg,
                    env,
                    kind,
                    tx,
                    cancel,
                ),
            }
        }
    }
    rx
}

fn spawn_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    env: String,
    kind: WatchedKind,
    tx: mpsc::Sender<ClusterEvent>,
    cancel: CancellationToken,
) where
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
        // The watcher resumes from its last resourceVersion after a drop and re-lists after 410;
        // the backoff keeps a broken API server from being hammered.
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = cancel.cancelled() => return,
            };
            let event = match next {
                Some(Ok(watcher::Event::Apply(o))) | Some(Ok(watcher::Event::InitApply(o))) => {
                    ClusterEvent::Applied {
                        env: env.clone(),
                        kind,
                        object: serde_json::to_value(&o).unwrap_or(Value::Null),
                    }
                }
                Some(Ok(watcher::Event::Delete(o))) => ClusterEvent::Deleted {
                    env: env.clone(),
                    kind,
                    object: serde_json::to_value(&o).unwrap_or(Value::Null),
                },
                Some(Ok(watcher::Event::Init)) => ClusterEvent::Relisted {
                    env: env.clone(),
                    kind,
                },
                Some(Ok(watcher::Event::InitDone)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(%env, ?kind, error = %e, "watch error; the watcher retries");
                    continue;
                }
                None => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
}
