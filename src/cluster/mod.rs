//! Everything the bot does to Kubernetes, through the kube client: rollouts, rollbacks, scaling and Jobs, with typed errors.

pub mod jobs;
pub mod rollout;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

use self::jobs::JobEnd;
pub use self::rollout::{RolloutState, UndoError};

/// Every Kubernetes API call the cluster layer makes, as RBAC names it: (API group, resource, verbs).
/// The Role in `manifests/rbac/role.yaml` grants exactly these; a test checks both that and that
/// the cluster layer's real requests stay within them.
pub const API_CALLS: &[(&str, &str, &[&str])] = &[
    ("apps", "deployments", &["get", "list", "watch", "patch"]),
    ("apps", "deployments/scale", &["get", "patch"]),
    ("apps", "statefulsets", &["get", "list", "watch"]),
    ("apps", "statefulsets/scale", &["get", "patch"]),
    ("apps", "replicasets", &["list"]),
    ("batch", "jobs", &["create", "delete", "list", "watch"]),
    ("batch", "cronjobs", &["get", "list", "watch"]),
    ("", "pods", &["list", "watch"]),
    ("", "pods/log", &["get"]),
    ("", "events", &["list", "watch"]),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &["create", "delete", "list", "patch"],
    ),
];

/// The calls made only with `redact_secret_values = true`: reading the Secrets the Job templates
/// use, so their values can be removed from chat. Granted by a Role of their own
/// (`manifests/rbac-secret-values`), limited to those Secrets' names.
pub const SECRET_VALUE_CALLS: &[(&str, &str, &[&str])] = &[("", "secrets", &["get"])];

/// Why a cluster action failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use kubeconfig {path}: {reason}")]
    KubeconfigInvalid { path: String, reason: String },
    #[error("{what} not found in namespace {namespace}")]
    NotFound { what: String, namespace: String },
    #[error("the bot may not {action}: {message} (its Role needs this permission)")]
    Forbidden { action: String, message: String },
    #[error("the cluster rejected {action}: {message}")]
    Invalid { action: String, message: String },
    #[error("{action} kept conflicting with other changes")]
    Conflict { action: String },
    #[error("{action}: it already exists")]
    AlreadyExists { action: String },
    #[error(
        "a Job named {name} already exists in namespace {namespace} and this operation did not create it; the bot will not take its result as its own (delete it, or check who made it)"
    )]
    NotOurs { name: String, namespace: String },
    #[error("the Kubernetes API is unavailable while trying to {action}: {message}")]
    Unavailable { action: String, message: String },
    #[error(transparent)]
    Undo(#[from] UndoError),
    #[error("timed out after {secs}s waiting for {what}")]
    TimedOut { what: String, secs: u64 },
}

impl ClusterError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unavailable { .. }
                | ClusterError::Conflict { .. }
                | ClusterError::TimedOut { .. }
        )
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ClusterError::KubeconfigInvalid { .. } => "kubeconfig",
            ClusterError::NotFound { .. } => "not_found",
            ClusterError::Forbidden { .. } => "forbidden",
            ClusterError::Invalid { .. } => "invalid",
            ClusterError::Conflict { .. } => "conflict",
            ClusterError::AlreadyExists { .. } => "already_exists",
            ClusterError::NotOurs { .. } => "not_ours",
            ClusterError::Unavailable { .. } => "unavailable",
            ClusterError::Undo(_) => "undo",
            ClusterError::TimedOut { .. } => "timeout",
        }
    }
}

/// Maps a kube client error for `action` in `namespace`.
/// `registry/app:tag` → (`registry/app`, `tag`); no tag means `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

fn map_err(action: &str, namespace: &str, e: kube::Error) -> ClusterError {
    use crate::redact::outside;
    match e {
        kube::Error::Api(s) => match s.code {
            404 => ClusterError::NotFound {
                what: s
                    .details
                    .as_ref()
                    .map(|d| format!("{} {}", d.kind, d.name))
                    .unwrap_or_else(|| action.to_string()),
                namespace: namespace.to_string(),
            },
            403 => ClusterError::Forbidden {
                action: action.to_string(),
                message: outside(&s.message),
            },
            409 if s.reason == "AlreadyExists" => ClusterError::AlreadyExists {
                action: action.to_string(),
            },
            409 => ClusterError::Conflict {
                action: action.to_string(),
            },
            400 | 422 => ClusterError::Invalid {
                action: action.to_string(),
                message: outside(&s.message),
            },
            _ => ClusterError::Unavailable {
                action: action.to_string(),
                message: format!("{} ({})", outside(&s.message), s.code),
            },
        },
        other => ClusterError::Unavailable {
            action: action.to_string(),
            message: outside(&other.to_string()),
        },
    }
}

const ATTEMPTS: u32 = 5;

/// Pure: why an autoscaler would undo `replicas` (outside its range; 0 stops the app and is allowed).
pub fn outside_autoscaler(h: &HorizontalPodAutoscaler, replicas: i32) -> Option<String> {
    let spec = h.spec.clone().unwrap_or_default();
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let hname = h.metadata.name.clone().unwrap_or_default();
    let inside = (min..=max).contains(&replicas) || replicas == 0;
    (!inside).then(|| {
        format!(
            "HorizontalPodAutoscaler {hname} keeps it between {min} and {max}; ask to adjust the autoscaler, or pick a count in that range"
        )
    })
}

/// How many refusals in a row (401/403, each after a backoff) end a wait: a missing permission.
const WATCH_REFUSALS: u32 = 3;

/// Runs `f` again on conflicts and unavailability, with capped exponential backoff and jitter.
async fn retrying<T, F, Fut>(f: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    use backon::Retryable;
    let policy = crate::backoff::policy(Duration::from_millis(100), Duration::from_secs(5))
        .with_max_times(ATTEMPTS as usize - 1);
    f.retry(policy)
        .sleep(tokio::time::sleep)
        .when(ClusterError::is_retryable)
        .notify(|e, wait| {
            tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cluster call failed; retrying");
        })
        .await
}

/// A workload kind that can be scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    StatefulSet,
}

impl Workload {
    fn kind(self) -> &'static str {
        match self {
            Workload::Deployment => "Deployment",
            Workload::StatefulSet => "StatefulSet",
        }
    }
}

/// What `scale` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOutcome {
    pub from: i32,
    pub to: i32,
    /// The HPA targeting the workload, with its (min, max) before and after.
    pub hpa: Option<HpaChange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaChange {
    pub name: String,
    pub before: (i32, i32),
    pub after: (i32, i32),
}

/// How to treat an HPA when scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaPolicy {
    /// Scale within the HPA's bounds only; outside them is an error naming the HPA.
    Respect,
    /// Move the HPA's bounds so that the new count holds.
    Adjust,
}

/// A progress report while a rollout runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutProgress {
    pub state: RolloutState,
    pub ready: i32,
    pub desired: i32,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutOutcome {
    Complete {
        revision: Option<i64>,
    },
    /// The progress deadline passed; the failing pod and its reason, when one is found.
    Failed {
        message: String,
        pod: Option<String>,
        reason: Option<String>,
    },
}

/// A finished Job's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub end: JobEnd,
    /// The container's termination message (JSON for backup Jobs), redacted.
    pub message: String,
    pub exit_code: Option<i32>,
    /// The last log lines, redacted (on failure).
    pub log_tail: Vec<String>,
}

/// The managed environments' clusters, by environment name.
#[derive(Clone, Debug, Default)]
pub struct Clusters {
    by_env: BTreeMap<String, Cluster>,
}

impl Clusters {
    /// Builds a client per distinct (kubeconfig, context) and a `Cluster` per environment.
    pub async fn connect(
        envs: &BTreeMap<String, crate::config::EnvironmentConfig>,
    ) -> Result<Clusters, ClusterError> {
        crate::tls::install_crypto_provider();
        let mut clients: BTreeMap<(Option<PathBuf>, Option<String>), Client> = BTreeMap::new();
        let mut by_env = BTreeMap::new();
        for (name, env) in envs {
            let key = (env.kubeconfig.clone(), env.context.clone());
            let server = format!("{:?}/{:?}", key.0, key.1);
            let client = match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = client_for(env.kubeconfig.as_deref(), env.context.as_deref()).await?;
                    clients.insert(key, c.clone());
                    c
                }
            };
            let mut cluster = Cluster::new(client, env.namespace_or(name));
            cluster.server = server;
            by_env.insert(name.clone(), cluster);
        }
        Ok(Clusters { by_env })
    }

    /// A registry from clusters already built (tests).
    pub fn from_map(by_env: BTreeMap<String, Cluster>) -> Clusters {
        Clusters { by_env }
    }

    pub fn get(&self, env: &str) -> Option<&Cluster> {
        self.by_env.get(env)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Cluster)> {
        self.by_env.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn names(&self) -> Vec<String> {
        self.by_env.keys().cloned().collect()
    }
}

/// A client from a kubeconfig file and context, or in-cluster / the default kubeconfig.
async fn client_for(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, ClusterError> {
    let where_ = kubeconfig
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(in-cluster or default kubeconfig)".into());
    let bad = |reason: String| ClusterError::KubeconfigInvalid {
        path: where_.clone(),
        reason,
    };
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| bad(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| bad(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// One environment's namespace in one cluster.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    /// Environments whose clusters share this key share one API server and one client: their
    /// watches are cluster-wide, one per kind.
    server: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(client: Client, namespace: impl Into<String>) -> Cluster {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cluster {
            client,
            namespace: namespace.into(),
            server: format!("own-{n}"),
        }
    }

    /// Which API server (and client) this environment's cluster is, for grouping watches.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client, shared by every environment on the same API server.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A cluster from a kubeconfig file and context (the context's namespace unless one is given).
    pub async fn from_kubeconfig(
        path: &Path,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Cluster, ClusterError> {
        crate::tls::install_crypto_provider();
        let bad = |reason: String| ClusterError::KubeconfigInvalid {
            path: path.display().to_string(),
            reason,
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        let opts = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let ns = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| bad(e.to_string()))?;
        Ok(Cluster::new(client, ns))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn err(&self, action: &str) -> impl Fn(kube::Error) -> ClusterError + '_ {
        let action = action.to_string();
        move |e| map_err(&action, &self.namespace, e)
    }

    pub async fn deployment(&self, name: &str) -> Result<Deployment, ClusterError> {
        retrying(|| async {
            self.api::<Deployment>()
                .get(name)
                .await
                .map_err(self.err(&format!("get deployment {name}")))
        })
        .await
    }

    /// Whether the API server answers, within `limit`.
    pub async fn probe(&self, limit: Duration) -> Result<(), ClusterError> {
        match tokio::time::timeout(limit, self.client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(map_err("reach the API server", &self.namespace, e)),
            Err(_) => Err(ClusterError::TimedOut {
                what: "the API server".into(),
                secs: limit.as_secs(),
            }),
        }
    }

    pub async fn statefulset(&self, name: &str) -> Result<StatefulSet, ClusterError> {
        retrying(|| async {
            self.api::<StatefulSet>()
                .get(name)
                .await
                .map_err(self.err(&format!("get statefulset {name}")))
        })
        .await
    }

    /// A Secret as JSON (`data` in base64), to learn the values that must never reach chat.
    pub async fn secret(&self, name: &str) -> Result<serde_json::Value, ClusterError> {
        let secret = retrying(|| async {
            self.api::<k8s_openapi::api::core::v1::Secret>()
                .get(name)
                .await
                .map_err(self.err(&format!("get secret {name}")))
        })
        .await?;
        serde_json::to_value(&secret).map_err(|e| ClusterError::Invalid {
            action: format!("read secret {name}"),
            message: e.to_string(),
        })
    }

    /// Sets `container`'s image and records the change cause (one strategic merge patch).
    pub async fn set_image(
        &self,
        deployment: &str,
        container: &str,
        image: &str,
        change_cause: &str,
    ) -> Result<Deployment, ClusterError> {
        let patch = rollout::image_patch(container, image, change_cause);
        let action = format!("patch deployment {deployment}");
        retrying(|| async {
            self.api::<Deployment>()
                .patch(
                    deployment,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
                .map_err(self.err(&action))
        })
        .await
    }

    /// A watch error that retrying will not cure: the API server refused the bot (401/403) this
    /// many times in a row. Other errors are `None`: the stream's backoff retries them, so a
    /// broken API server is neither hammered nor waited on for hours in a tight loop.
    fn lasting_watch_error(
        &self,
        e: &watcher::Error,
        action: &str,
        refused: &mut u32,
    ) -> Option<ClusterError> {
        let status = match e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => match k {
                kube::Error::Api(s) => Some((s.code, s.message.clone())),
                _ => None,
            },
            watcher::Error::WatchError(s) => Some((s.code, s.message.clone())),
            _ => None,
        };
        match status {
            Some((401 | 403, message)) => {
                *refused += 1;
                (*refused >= WATCH_REFUSALS).then(|| ClusterError::Forbidden {
                    action: action.to_string(),
                    message: crate::redact::outside(&message),
                })
            }
            _ => {
                *refused = 0;
                None
            }
        }
    }

    /// Watches a rollout to its end by kubectl's rules, sending progress as it changes.
    pub async fn watch_rollout(
        &self,
        deployment: &str,
        progress: Option<mpsc::UnboundedSender<RolloutProgress>>,
        limit: Duration,
    ) -> Result<RolloutOutcome, ClusterError> {
        let api = self.api::<Deployment>();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={deployment}"));
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let mut refused = 0;
        let mut last: Option<RolloutProgress> = None;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ClusterError::TimedOut { what: format!("the rollout of {deployment}"), secs: limit.as_secs() });
                }
            };
            let d = match event {
                Some(Ok(watcher::Event::Apply(d))) | Some(Ok(watcher::Event::InitApply(d))) => d,
                Some(Ok(watcher::Event::Delete(_))) => {
                    return Err(ClusterError::NotFound {
                        what: format!("deployment {deployment} (deleted during the rollout)"),
                        namespace: self.namespace.clone(),
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    let action = format!("watch deployment {deployment}");
                    if let Some(lasting) = self.lasting_watch_error(&e, &action, &mut refused) {
                        return Err(lasting);
                    }
                    tracing::warn!(error = %e, "rollout watch interrupted; resuming after a backoff");
                    continue;
                }
                None => {
                    return Err(ClusterError::Unavailable {
                        action: format!("watch deployment {deployment}"),
                        message: "watch ended".into(),
                    });
                }
            };
            let state = rollout::rollout_state(&d);
            let status = d.status.clone().unwrap_or_default();
            let p = RolloutProgress {
                state: state.clone(),
                ready: status
                    .updated_replicas
                    .unwrap_or(0)
                    .min(status.available_replicas.unwrap_or(0)),
                desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            };
            if last.as_ref() != Some(&p) {
                if let Some(tx) = &progress {
                    let _ = tx.send(p.clone());
                }
                last = Some(p);
            }
            match state {
                RolloutState::Complete => {
                    let revision = d
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(rollout::REVISION))
                        .and_then(|r| r.parse().ok());
                    return Ok(RolloutOutcome::Complete { revision });
                }
                RolloutState::DeadlineExceeded { message } => {
                    let (pod, reason) = self.failing_pod(&d).await.unwrap_or((None, None));
                    return Ok(RolloutOutcome::Failed {
                        message,
                        pod,
                        reason,
                    });
                }
                _ => {}
            }
        }
    }

    /// A pod of the Deployment's newest ReplicaSet that is not ready, and why.
    async fn failing_pod(
        &self,
        d: &Deployment,
    ) -> Result<(Option<String>, Option<String>), ClusterError> {
        let revision = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(rollout::REVISION))
            .cloned();
        let sets = self.replicasets_of(d).await?;
        let newest = sets.iter().find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(rollout::REVISION))
                == revision.as_ref()
        });
        let Some(rs) = newest else {
            return Ok((None, None));
        };
        let hash = rs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned()
            .unwrap_or_default();
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
            .await
            .map_err(self.err("list pods"))?;
        for p in pods.items {
            let reason = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| {
                    cs.iter().find_map(|c| {
                        let st = c.state.as_ref()?;
                        st.waiting
                            .as_ref()
                            .and_then(|w| w.reason.clone())
                            .or_else(|| st.terminated.as_ref().and_then(|t| t.reason.clone()))
                    })
                });
            if let Some(r) = reason {
                return Ok((p.metadata.name, Some(r)));
            }
        }
        Ok((None, None))
    }

    async fn replicasets_of(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, ClusterError> {
        let selector = pod_selector(d);
        let list = self
            .api::<ReplicaSet>()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(self.err("list replicasets"))?;
        Ok(rollout::owned(d, &list.items)
            .into_iter()
            .cloned()
            .collect())
    }

    /// The Deployment's revision history, oldest first.
    pub async fn history(&self, deployment: &str) -> Result<Vec<rollout::Revision>, ClusterError> {
        let d = self.deployment(deployment).await?;
        let sets = self.replicasets_of(&d).await?;
        Ok(rollout::history(&d, &sets))
    }

    /// `kubectl rollout undo [--to-revision]`: patches the template back; returns the revision rolled back to.
    pub async fn undo(
        &self,
        deployment: &str,
        to_revision: Option<i64>,
    ) -> Result<i64, ClusterError> {
        let d = self.deployment(deployment).await?;
        let sets = self.replicasets_of(&d).await?;
        let plan = rollout::plan_undo(&d, &sets, to_revision)?;
        let ops: json_patch::Patch =
            serde_json::from_value(plan.patch.clone()).map_err(|e| ClusterError::Invalid {
                action: "plan rollback".into(),
                message: e.to_string(),
            })?;
        let action = format!("roll back deployment {deployment}");
        retrying(|| async {
            self.api::<Deployment>()
                .patch(
                    deployment,
                    &PatchParams::default(),
                    &Patch::<()>::Json(ops.clone()),
                )
                .await
                .map_err(self.err(&action))
        })
        .await?;
        Ok(plan.to_revision)
    }

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

    /// Creates a Job from a CronJob's template, as `kubectl create job NAME --from=cronjob/CJ`.
    pub async fn job_from_cronjob(
        &self,
        cronjob: &str,
        job_name: &str,
    ) -> Result<Job, ClusterError> {
        let job = self.cronjob_template(cronjob, job_name).await?;
        self.create_job(&job).await
    }

    /// As [`Cluster::job_from_cronjob`], for an operation: labelled with its number and mark
    /// (the operation then records its result; the watch that catalogues the CronJob's own runs
    /// leaves it alone), and adopted on a retry only when the mark matches.
    pub async fn job_from_cronjob_for_op(
        &self,
        cronjob: &str,
        job_name: &str,
        op: u64,
        mark: &str,
    ) -> Result<(), ClusterError> {
        let mut job = self.cronjob_template(cronjob, job_name).await?;
        self.create_owned_job(&mut job, op, mark).await
    }

    async fn cronjob_template(&self, cronjob: &str, job_name: &str) -> Result<Job, ClusterError> {
        let cj = self
            .api::<CronJob>()
            .get(cronjob)
            .await
            .map_err(self.err(&format!("get cronjob {cronjob}")))?;
        Ok(jobs::job_from_cronjob(&cj, job_name))
    }

    /// Creates an operation's Job, labelled with its number and mark. A Job of that name that
    /// already exists is this operation's own (a resumed step) only when it carries the same mark;
    /// anything else is [`ClusterError::NotOurs`], never a result.
    pub async fn create_owned_job(
        &self,
        job: &mut Job,
        op: u64,
        mark: &str,
    ) -> Result<(), ClusterError> {
        let labels = job.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(jobs::OPERATION_LABEL.into(), op.to_string());
        labels.insert(jobs::MARK_LABEL.into(), mark.to_string());
        let name = job.metadata.name.clone().unwrap_or_default();
        match self.create_job(job).await {
            Ok(_) => Ok(()),
            Err(ClusterError::AlreadyExists { .. }) => {
                let existing = self
                    .api::<Job>()
                    .get(&name)
                    .await
                    .map_err(self.err(&format!("get job {name}")))?;
                let theirs = existing
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(jobs::MARK_LABEL));
                if !mark.is_empty() && theirs.map(String::as_str) == Some(mark) {
                    Ok(())
                } else {
                    Err(ClusterError::NotOurs {
                        name,
                        namespace: self.namespace.clone(),
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn create_job(&self, job: &Job) -> Result<Job, ClusterError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let action = format!("create job {name}");
        retrying(|| async {
            self.api::<Job>()
                .create(&PostParams::default(), job)
                .await
                .map_err(self.err(&action))
        })
        .await
    }

    /// Follows a Job to `Complete` or `Failed` and reads its result.
    pub async fn wait_job(&self, name: &str, limit: Duration) -> Result<JobResult, ClusterError> {
        let api = self.api::<Job>();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let mut refused = 0;
        let deadline = tokio::time::Instant::now() + limit;
        // With the uid of the Job that ended: only pods it controls carry its result.
        let (end, uid) = loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tokio::time::sleep_until(deadline) => return Err(ClusterError::TimedOut { what: format!("job {name}"), secs: limit.as_secs() }),
            };
            match event {
                Some(Ok(watcher::Event::Apply(j))) | Some(Ok(watcher::Event::InitApply(j))) => {
                    if let Some(end) = jobs::job_end(&j) {
                        break (end, j.metadata.uid.clone().unwrap_or_default());
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    return Err(ClusterError::NotFound {
                        what: format!("job {name} (deleted while running)"),
                        namespace: self.namespace.clone(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let action = format!("watch job {name}");
                    if let Some(lasting) = self.lasting_watch_error(&e, &action, &mut refused) {
                        return Err(lasting);
                    }
                    tracing::warn!(error = %e, "job watch interrupted; resuming after a backoff")
                }
                None => {
                    return Err(ClusterError::Unavailable {
                        action: format!("watch job {name}"),
                        message: "watch ended".into(),
                    });
                }
            }
        };
        let last = self.newest_job_pod(name, &uid).await?;
        let (exit_code, message) = last
            .as_ref()
            .and_then(jobs::termination)
            .map(|(c, _, m)| (Some(c), m))
            .unwrap_or((None, String::new()));
        let mut log_tail = Vec::new();
        if matches!(end, JobEnd::Failed { .. })
            && let Some(pod) = last.and_then(|p| p.metadata.name)
        {
            log_tail = self.pod_log_tail(&pod, 20).await.unwrap_or_default();
        }
        Ok(JobResult {
            end,
            message: crate::redact::redact(&message),
            exit_code,
            log_tail,
        })
    }

    /// The newest pod of a Job (the one whose result counts): found by the Job's name label,
    /// kept only when the Job with `uid` controls it. Anyone who may create pods can put a
    /// Job's name label on one; only the Job controller makes pods whose owner is the Job's uid.
    async fn newest_job_pod(&self, job: &str, uid: &str) -> Result<Option<Pod>, ClusterError> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await
            .map_err(self.err("list pods"))?;
        let (owned, strangers): (Vec<Pod>, Vec<Pod>) = pods
            .items
            .into_iter()
            .partition(|p| jobs::pod_of_job(p, uid));
        if !strangers.is_empty() {
            tracing::warn!(
                job,
                pods = ?strangers.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(),
                "pods carry this Job's name label but the Job does not own them; their results are ignored"
            );
        }
        Ok(owned
            .into_iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)))
    }

    /// The uid of the Job `name` (listed by name: the bot's Role has no `get` on Jobs);
    /// `None` when there is no such Job.
    async fn job_uid(&self, name: &str) -> Result<Option<String>, ClusterError> {
        let found = self
            .api::<Job>()
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .map_err(self.err("list jobs"))?;
        Ok(found.items.into_iter().find_map(|j| j.metadata.uid))
    }

    /// The uid of the CronJob `name`; `None` when there is none.
    pub async fn cronjob_uid(&self, name: &str) -> Result<Option<String>, ClusterError> {
        match self.api::<CronJob>().get(name).await {
            Ok(cj) => Ok(cj.metadata.uid),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(self.err(&format!("get cronjob {name}"))(e)),
        }
    }

    /// The last `lines` of a pod's log, redacted.
    async fn pod_log_tail(&self, pod: &str, lines: i64) -> Result<Vec<String>, ClusterError> {
        let params = LogParams {
            tail_lines: Some(lines),
            ..LogParams::default()
        };
        let text = self
            .api::<Pod>()
            .logs(pod, &params)
            .await
            .map_err(self.err("get pods/log"))?;
        Ok(crate::redact::outside(&text)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The termination message of the newest pod of the Job `job` with `uid` (its result),
    /// redacted.
    pub async fn job_message(&self, job: &str, uid: &str) -> Result<String, ClusterError> {
        Ok(self
            .newest_job_pod(job, uid)
            .await?
            .as_ref()
            .and_then(jobs::termination)
            .map(|(_, _, m)| crate::redact::redact(&m))
            .unwrap_or_default())
    }

    /// The last log lines of a Job's newest pod, redacted.
    pub async fn job_log_tail(&self, job: &str, lines: i64) -> Result<Vec<String>, ClusterError> {
        let Some(uid) = self.job_uid(job).await? else {
            return Ok(Vec::new());
        };
        match self
            .newest_job_pod(job, &uid)
            .await?
            .and_then(|p| p.metadata.name)
        {
            Some(pod) => self.pod_log_tail(&pod, lines).await,
            None => Ok(Vec::new()),
        }
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

    /// Waits until no pod of a Deployment is left (after scaling it to zero).
    pub async fn wait_pods_gone(
        &self,
        deployment: &str,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let d = self.deployment(deployment).await?;
        let selector = pod_selector(&d);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pods = self
                .api::<Pod>()
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(self.err("list pods"))?;
            let left = pods.items.len();
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::TimedOut {
                    what: format!("{left} pod(s) of {deployment} to go"),
                    secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes a Job and (in the background) its pods.
    pub async fn delete_job(&self, name: &str) -> Result<(), ClusterError> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        self.api::<Job>()
            .delete(name, &dp)
            .await
            .map_err(self.err(&format!("delete job {name}")))?;
        Ok(())
    }
}

/// Pure: a Deployment's `matchLabels` as a label selector (`a=b,c=d`).
fn pod_selector(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Pure: what is needed to create an autoscaler again (its spec, name, labels and annotations), as JSON.
pub fn hpa_snapshot(hpa: &HorizontalPodAutoscaler) -> String {
    let saved = HorizontalPodAutoscaler {
        metadata: kube::api::ObjectMeta {
            name: hpa.metadata.name.clone(),
            labels: hpa.metadata.labels.clone(),
            annotations: hpa.metadata.annotations.clone(),
            ..kube::api::ObjectMeta::default()
        },
        spec: hpa.spec.clone(),
        status: None,
    };
    serde_json::to_string(&saved).unwrap_or_default()
}
