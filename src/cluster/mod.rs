//! Everything the bot does to Kubernetes, through the kube client: rollouts, rollbacks, scaling and Jobs, with typed errors.

mod job_calls;
pub mod jobs;
pub mod rollout;
mod scale;
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

/// The User-Agent of this process's requests to the clusters, once set: with replicas, each names
/// its replica, so that the API server's audit log tells them apart.
static USER_AGENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process in every cluster client built from now on (set once, before connecting).
pub fn set_user_agent(agent: &str) {
    let _ = USER_AGENT.set(agent.to_string());
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
    let mut config = config;
    if let Some(v) = USER_AGENT
        .get()
        .and_then(|a| axum::http::HeaderValue::from_str(a).ok())
    {
        config.headers.push((axum::http::header::USER_AGENT, v));
    }
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
                    // A reader that went away no longer wants progress; the watch goes on.
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

    /// Waits until no pod of a Deployment is left (after scaling it to zero).
    pub async fn wait_pods_gone(
        &self,
        deployment: &str,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let d = self.deployment(deployment).await?;
        let selector = pod_selector(&d);
        let deadline = tokio::time::Instant::now() + limit;
        let lp = ListParams::default().labels(&selector);
        loop {
            // A passing 500 is retried here, not taken as the step failing (the client itself
            // retries 429, 503 and 504).
            let pods = retrying(|| async {
                self.api::<Pod>()
                    .list(&lp)
                    .await
                    .map_err(self.err("list pods"))
            })
            .await?;
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
