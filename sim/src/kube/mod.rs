//! The Kubernetes API simulator: a loopback HTTP server speaking the real REST API, with controllers, a scripted kubelet and fault injection.

mod api;
mod controllers;
mod openapi;
mod paging;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod runtime;
pub mod seed;
pub mod store;
mod table;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use store::ObjectStore;

/// What a Job's container "does" in the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct JobScript {
    /// How long the container runs.
    pub runtime: Duration,
    pub exit_code: i32,
    /// Written to the termination message; `{job}` and `{namespace}` are replaced.
    pub termination_message: String,
    /// Log lines the container prints; `{job}` and `{namespace}` are replaced.
    pub log: Vec<String>,
}

impl Default for JobScript {
    fn default() -> Self {
        JobScript {
            runtime: Duration::from_millis(200),
            exit_code: 0,
            termination_message: String::new(),
            log: vec!["done".into()],
        }
    }
}

/// How the simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct KubeSimConfig {
    pub listen: SocketAddr,
    /// Time from a pod's creation to Running and Ready.
    pub pod_ready_after: Duration,
    /// How often controllers run when nothing wakes them.
    pub tick: Duration,
    /// Watch history kept; older positions get 410 Expired.
    pub history: usize,
    /// Jobs whose images are listed run for real as local processes; every other Job is scripted.
    pub local_jobs: Option<runtime::LocalJobs>,
}

impl Default for KubeSimConfig {
    fn default() -> Self {
        KubeSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pod_ready_after: Duration::from_millis(300),
            tick: Duration::from_millis(100),
            history: 20_000,
            local_jobs: None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct KubeFaults {
    pub delay: Duration,
    /// Fail the next N writes with this HTTP code.
    pub fail_writes: Option<(u32, u16)>,
    /// The message those failures carry (422 and 500), instead of the default.
    pub fail_message: Option<String>,
    /// (resource, verb) pairs refused with 403, as if the bot's Role had lost them.
    pub revoked: HashSet<(String, String)>,
    /// Fail the next N lists of a resource with this HTTP code.
    pub fail_lists: HashMap<String, (u32, u16)>,
    /// Clients cut off from the API, by a part of their User-Agent.
    pub partitions: HashMap<String, Partition>,
    /// Delays for one client's requests, by a part of its User-Agent.
    pub agent_delays: HashMap<String, Duration>,
}

/// How a client is cut off from the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Its requests are never answered (the connection hangs until the client gives up) and never
    /// applied, as when packets are lost.
    Drop,
    /// Its requests are answered 503 at once, as a load balancer without a backend answers.
    Reject,
}

/// One write the API server accepted or refused, with who sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteRecord {
    pub seq: u64,
    /// The client's User-Agent.
    pub agent: String,
    /// `create`, `update`, `patch` or `delete`.
    pub verb: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The HTTP status the write got: 2xx accepted, anything else refused.
    pub status: u16,
    /// The `rocketops.io/epoch` annotation the written object carried, if any: the writer's
    /// claim to lead.
    pub epoch: Option<String>,
}

impl WriteRecord {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Image repositories whose tags are checked; a repository not listed pulls any tag.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub repos: HashMap<String, HashSet<String>>,
}

impl Registry {
    /// Whether `image` (`repo:tag`) can be pulled.
    pub fn pullable(&self, image: &str) -> bool {
        let (repo, tag) = split_image(image);
        match self.repos.get(repo) {
            Some(tags) => tags.contains(tag) || tag.contains("crash") || tag.contains("oom"),
            None => true,
        }
    }
}

pub use crate::ids::split_image;

/// Watches being served: (resource, namespace or `None` for cluster-wide) → how many.
pub type WatchCounts = HashMap<(String, Option<String>), usize>;

/// A watch being served, counted while it lasts.
pub(crate) struct OpenWatch {
    watches: Arc<Mutex<WatchCounts>>,
    key: (String, Option<String>),
}

impl OpenWatch {
    pub(crate) fn new(sim: &KubeInner, plural: &str, namespace: Option<String>) -> OpenWatch {
        let key = (plural.to_string(), namespace);
        if let Ok(mut w) = sim.watches.lock() {
            *w.entry(key.clone()).or_default() += 1;
        }
        OpenWatch {
            watches: sim.watches.clone(),
            key,
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watches.lock()
            && let Some(n) = w.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.key);
            }
        }
    }
}

pub(crate) struct KubeInner {
    pub store: Mutex<ObjectStore>,
    pub faults: Mutex<KubeFaults>,
    /// Every write, accepted or refused, with its client (for fencing tests).
    pub writes: Mutex<Vec<WriteRecord>>,
    pub cfg: KubeSimConfig,
    pub addr: SocketAddr,
    pub registry: Mutex<Registry>,
    pub scripts: Mutex<Vec<(String, JobScript)>>,
    /// Pods the local Job runtime runs or has run.
    pub runs: Arc<runtime::Runs>,
    /// Watches being served: (resource, namespace or `None` for cluster-wide) → how many.
    pub watches: Arc<Mutex<WatchCounts>>,
    pub logs: Mutex<HashMap<(String, String), Vec<String>>>,
    pub kick: Notify,
    pub watch_drop: Mutex<CancellationToken>,
    pub shutdown: CancellationToken,
    /// Every (group, resource, verb) requested, for checking RBAC against real use.
    pub api_calls: Mutex<std::collections::BTreeSet<(String, String, String)>>,
    /// Apps whose `/_app/.../api/info` answers 500: (namespace, deployment) → only when running this tag (None: always).
    pub app_failing: Mutex<HashMap<(String, String), Option<String>>>,
}

impl KubeInner {
    pub fn store(&self) -> MutexGuard<'_, ObjectStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn faults(&self) -> MutexGuard<'_, KubeFaults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Wakes the controllers now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }
    /// An injected failure of this list of `resource`, if one is due: the status code.
    pub fn take_list_fault(&self, resource: &str) -> Option<u16> {
        let mut f = self.faults();
        let (n, code) = f.fail_lists.get(resource).copied()?;
        if n > 1 {
            f.fail_lists.insert(resource.to_string(), (n - 1, code));
        } else {
            f.fail_lists.remove(resource);
        }
        Some(code)
    }
    pub fn take_write_fault(&self) -> Option<(u16, Option<String>)> {
        let mut f = self.faults();
        let (n, code) = f.fail_writes?;
        f.fail_writes = if n > 1 { Some((n - 1, code)) } else { None };
        Some((code, f.fail_message.clone()))
    }
    pub fn pod_log(&self, ns: &str, pod: &str) -> Vec<String> {
        self.logs
            .lock()
            .map(|l| {
                l.get(&(ns.to_string(), pod.to_string()))
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
    /// Deletes every object in namespace `ns`, as the namespace controller does once a namespace
    /// is deleted, and forgets its pods' logs.
    pub fn empty_namespace(&self, ns: &str) {
        let mut store = self.store();
        for rt in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            for obj in store.all_in(rt.plural, ns) {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let _ = store.delete(rt, ns, &name);
            }
        }
        drop(store);
        if let Ok(mut logs) = self.logs.lock() {
            logs.retain(|(n, _), _| n != ns);
        }
    }
    /// Deletes (or orphans) everything `deleted` owned, transitively.
    pub fn collect_garbage(&self, deleted: &Value, orphan: bool) {
        let mut store = self.store();
        controllers::collect_dependents(&mut store, deleted, orphan);
    }
}

/// A running simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct KubeSim {
    pub(crate) inner: Arc<KubeInner>,
}

impl KubeSim {
    /// Binds, starts the API server and the controllers.
    pub async fn start(cfg: KubeSimConfig) -> std::io::Result<KubeSim> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        if let Some(l) = &cfg.local_jobs {
            std::fs::create_dir_all(&l.root)?;
            // Containers of a root simulator run as nobody, who must reach the volumes.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&l.root, std::fs::Permissions::from_mode(0o755))?;
        }
        let inner = Arc::new(KubeInner {
            store: Mutex::new(ObjectStore::new(cfg.history)),
            faults: Mutex::new(KubeFaults::default()),
            writes: Mutex::new(Vec::new()),
            addr,
            registry: Mutex::new(Registry::default()),
            scripts: Mutex::new(Vec::new()),
            runs: Arc::default(),
            watches: Arc::default(),
            logs: Mutex::new(HashMap::new()),
            kick: Notify::new(),
            watch_drop: Mutex::new(CancellationToken::new()),
            shutdown: CancellationToken::new(),
            app_failing: Mutex::new(HashMap::new()),
            api_calls: Mutex::new(Default::default()),
            cfg,
        });
        let app = api::router(inner.clone());
        let stop = inner.shutdown.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        tokio::spawn(controllers::run(inner.clone()));
        Ok(KubeSim { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn stop(&self) {
        self.drop_watches();
        self.inner.shutdown.cancel();
    }

    /// A kubeconfig for this cluster with one context per namespace name given (plus `sim`).
    pub fn kubeconfig_yaml(&self, contexts: &[&str]) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rocketops-sim\n  cluster:\n    server: {}\nusers:\n- name: rocketops-sim\n  user:\n    token: sandbox\ncontexts:\n- name: sim\n  context:\n    cluster: rocketops-sim\n    user: rocketops-sim\n    namespace: default\n",
            self.url()
        );
        for c in contexts {
            out.push_str(&format!(
                "- name: {c}\n  context:\n    cluster: rocketops-sim\n    user: rocketops-sim\n    namespace: {c}\n"
            ));
        }
        out.push_str("current-context: sim\npreferences: {}\n");
        out
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path, contexts: &[&str]) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(contexts))
    }

    /// Creates an object as `kubectl create` would (server-set fields filled in; field manager
    /// `kubectl-create`).
    pub fn create(
        &self,
        plural: &str,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, store::ApiError> {
        self.create_as(plural, namespace, obj, "kubectl-create")
    }

    /// Creates an object for the field manager `manager` (`kube-controller-manager` to stand in
    /// for a controller of the cluster).
    pub fn create_as(
        &self,
        plural: &str,
        namespace: &str,
        obj: Value,
        manager: &str,
    ) -> Result<Value, store::ApiError> {
        let rt = resources::by_plural(plural);
        let r = self.inner.store().create_by(rt, namespace, obj, manager);
        self.inner.kick();
        r
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, store::ApiError> {
        self.inner
            .store()
            .get(resources::by_plural(plural), namespace, name)
    }

    /// Sets a Deployment's `spec.replicas`, as `kubectl scale` would.
    pub fn set_replicas(
        &self,
        namespace: &str,
        name: &str,
        n: i64,
    ) -> Result<Value, store::ApiError> {
        let rt = resources::by_plural("deployments");
        let mut store = self.inner.store();
        let mut obj = store.get(rt, namespace, name)?;
        obj["spec"]["replicas"] = serde_json::json!(n);
        let r = store.update(rt, namespace, name, obj, store::WriteMode::Main);
        drop(store);
        self.inner.kick();
        r
    }

    /// Objects of a type in a namespace (all namespaces with `None`).
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        self.inner
            .store()
            .list(
                resources::by_plural(plural),
                namespace,
                &store::Selectors::default(),
            )
            .0
    }

    /// Declares the tags a repository has; other tags of it fail to pull.
    pub fn set_known_tags(&self, repo: &str, tags: &[&str]) {
        if let Ok(mut r) = self.inner.registry.lock() {
            r.repos.insert(
                repo.to_string(),
                tags.iter().map(|t| t.to_string()).collect(),
            );
        }
    }

    /// Scripts Jobs whose name starts with `prefix`.
    pub fn script_job(&self, prefix: &str, script: JobScript) {
        if let Ok(mut s) = self.inner.scripts.lock() {
            s.retain(|(p, _)| p != prefix);
            s.push((prefix.to_string(), script));
            s.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// Forgets the script for `prefix`: such Jobs behave as unscripted ones again.
    pub fn unscript_job(&self, prefix: &str) {
        if let Ok(mut s) = self.inner.scripts.lock() {
            s.retain(|(p, _)| p != prefix);
        }
    }

    /// Every change to any object, as watches see them.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<store::Change> {
        self.inner.store().changes.subscribe()
    }

    /// The (group, resource, verb) triples clients have requested, as RBAC names them.
    pub fn api_calls(&self) -> std::collections::BTreeSet<(String, String, String)> {
        self.inner
            .api_calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear_api_calls(&self) {
        if let Ok(mut c) = self.inner.api_calls.lock() {
            c.clear();
        }
    }

    /// The URL of an app's `/api/info` as its route would serve it (for smoke tests).
    pub fn app_info_url(&self, namespace: &str, deployment: &str) -> String {
        format!("{}/_app/{namespace}/{deployment}/api/info", self.url())
    }

    /// Makes an app's `/api/info` answer 500 — only while it runs `version` when one is given
    /// (a broken release that still rolls out) — or, with `fail = false`, healthy again.
    pub fn set_app_failing(
        &self,
        namespace: &str,
        deployment: &str,
        fail: bool,
        version: Option<&str>,
    ) {
        if let Ok(mut f) = self.inner.app_failing.lock() {
            let key = (namespace.to_string(), deployment.to_string());
            if fail {
                f.insert(key, version.map(str::to_string));
            } else {
                f.remove(&key);
            }
        }
    }

    /// Delays every API request.
    pub fn set_delay(&self, d: Duration) {
        self.inner.faults().delay = d;
    }

    /// Fails the next `n` writes with HTTP `code` (403, 409, 422, 429 or 500).
    pub fn fail_next_writes(&self, n: u32, code: u16) {
        let mut f = self.inner.faults();
        f.fail_writes = (n > 0).then_some((n, code));
        f.fail_message = None;
    }

    /// Cuts the clients whose User-Agent contains `agent` off from the API (`None` heals it).
    /// Their open watches end at once.
    pub fn partition(&self, agent: &str, mode: Option<Partition>) {
        {
            let mut f = self.inner.faults();
            match mode {
                Some(m) => f.partitions.insert(agent.to_string(), m),
                None => f.partitions.remove(agent),
            };
        }
        if mode.is_some() {
            self.drop_watches();
        }
    }

    /// Delays the requests of the clients whose User-Agent contains `agent` (zero removes it).
    pub fn set_agent_delay(&self, agent: &str, d: Duration) {
        let mut f = self.inner.faults();
        if d.is_zero() {
            f.agent_delays.remove(agent);
        } else {
            f.agent_delays.insert(agent.to_string(), d);
        }
    }

    /// Every write so far, in order, with the client that sent it and what it got.
    pub fn write_log(&self) -> Vec<WriteRecord> {
        self.inner
            .writes
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Fails the next `n` lists (not watches) of `resource` (`pods`, `jobs`) with HTTP `code`
    /// (500 or 503), as an API server does while it restarts or its storage is slow.
    pub fn fail_next_lists(&self, resource: &str, n: u32, code: u16) {
        let mut f = self.inner.faults();
        if n == 0 {
            f.fail_lists.remove(resource);
        } else {
            f.fail_lists.insert(resource.to_string(), (n, code));
        }
    }

    /// As `fail_next_writes`, the 422 or 500 saying `message` (as an API server quoting what it rejected).
    pub fn fail_next_writes_saying(&self, n: u32, code: u16, message: &str) {
        let mut f = self.inner.faults();
        f.fail_writes = (n > 0).then_some((n, code));
        f.fail_message = Some(message.to_string());
    }

    /// Refuses `verb` on `resource` (`deployments`, `jobs`, `pods/log`) with 403 from now on, as
    /// if the bot's Role had lost that rule; `restore_permission` gives it back.
    pub fn revoke_permission(&self, resource: &str, verb: &str) {
        self.inner
            .faults()
            .revoked
            .insert((resource.to_string(), verb.to_string()));
        self.drop_watches();
    }

    /// Watches being served now: (resource, namespace or `None` for cluster-wide) → how many.
    pub fn open_watches(&self) -> WatchCounts {
        self.inner
            .watches
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// As a namespaced Role instead of a ClusterRole: `resource` may still be listed and watched
    /// in each namespace, but not across the cluster.
    pub fn revoke_cluster_wide(&self, resource: &str) {
        let mut f = self.inner.faults();
        for verb in ["list@cluster", "watch@cluster"] {
            f.revoked.insert((resource.to_string(), verb.to_string()));
        }
        drop(f);
        self.drop_watches();
    }

    pub fn restore_permission(&self, resource: &str, verb: &str) {
        self.inner
            .faults()
            .revoked
            .remove(&(resource.to_string(), verb.to_string()));
    }

    /// Ends every open watch stream (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        if let Ok(mut t) = self.inner.watch_drop.lock() {
            t.cancel();
            *t = CancellationToken::new();
        }
    }

    /// Forgets watch history: resuming from any earlier position gets 410 Expired.
    pub fn compact(&self) {
        self.inner.store().compact();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store().current_rv()
    }

    /// Log lines of a pod.
    pub fn pod_log(&self, namespace: &str, pod: &str) -> Vec<String> {
        self.inner.pod_log(namespace, pod)
    }

    /// Seeds the sandbox's environments (see `seed`).
    pub fn seed_environments(&self, names: &[&str]) -> Result<(), store::ApiError> {
        seed::environments(self, names)
    }
}
