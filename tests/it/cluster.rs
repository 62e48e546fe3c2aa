//! The cluster layer through the real kube client against the Kubernetes simulator over HTTP, and kubectl against the same simulator.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use rocketops::cluster::jobs::JobEnd;
use rocketops::cluster::{
    Cluster, ClusterError, HpaPolicy, RolloutOutcome, RolloutState, Workload,
};
use rocketops::sandbox::kube::seed::ROCKETCHAT_REPO;
use rocketops::sandbox::kube::{JobScript, KubeSim, KubeSimConfig};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

struct Env {
    sim: KubeSim,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn env() -> Env {
    rocketops::tls::install_crypto_provider();
    let sim = KubeSim::start(KubeSimConfig {
        pod_ready_after: Duration::from_millis(40),
        tick: Duration::from_millis(20),
        ..KubeSimConfig::default()
    })
    .await
    .unwrap();
    sim.seed_environments(&["test", "prod", "kubectl"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, &["test", "prod", "kubectl"])
        .unwrap();
    Env {
        sim,
        _dir: dir,
        kubeconfig,
    }
}

impl Env {
    async fn cluster(&self, ns: &str) -> Cluster {
        Cluster::from_kubeconfig(&self.kubeconfig, Some(ns), None)
            .await
            .unwrap()
    }
    async fn client(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    }
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
    /// kubectl's output, failing the test when kubectl fails.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "{args:?}: {out}");
        out
    }
}

fn semantic(mut v: Value) -> Value {
    fn prune(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.values_mut().for_each(prune);
                m.retain(|_, x| !(x.is_null() || x.as_object().is_some_and(|o| o.is_empty())));
            }
            Value::Array(a) => a.iter_mut().for_each(prune),
            _ => {}
        }
    }
    prune(&mut v);
    v
}

fn image(tag: &str) -> String {
    format!("{ROCKETCHAT_REPO}:{tag}")
}

async fn deploy(c: &Cluster, tag: &str) -> RolloutOutcome {
    c.set_image(
        "rocketchat",
        "rocketchat",
        &image(tag),
        &format!("deploy {tag} by alice"),
    )
    .await
    .unwrap();
    c.watch_rollout("rocketchat", None, LIMIT).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_a_known_tag_makes_revision_two_and_reports_progress_to_completion() {
    let e = env().await;
    let c = e.cluster("test").await;
    assert!(matches!(
        c.watch_rollout("rocketchat", None, LIMIT).await.unwrap(),
        RolloutOutcome::Complete { revision: Some(1) }
    ));
    c.set_image(
        "rocketchat",
        "rocketchat",
        &image("7.0.0"),
        "deploy 7.0.0 by alice",
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = c
        .watch_rollout("rocketchat", Some(tx), LIMIT)
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::Complete { revision: Some(2) });
    let mut seen = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p);
    }
    assert!(
        seen.iter().any(|p| matches!(
            p.state,
            RolloutState::Updating { .. }
                | RolloutState::TerminatingOld { .. }
                | RolloutState::Becoming { .. }
                | RolloutState::WaitingForSpec
        )),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(
        (last.ready, last.desired, &last.state),
        (3, 3, &RolloutState::Complete)
    );
    let history = c.history("rocketchat").await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        history[1].change_cause.as_deref(),
        Some("deploy 7.0.0 by alice")
    );
    assert_eq!(history[1].images, vec![image("7.0.0")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_fails_the_rollout_naming_the_pod_and_its_reason_while_old_pods_serve() {
    let e = env().await;
    let c = e.cluster("test").await;
    c.watch_rollout("rocketchat", None, LIMIT).await.unwrap();
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(e.client().await, "test");
    api.patch(
        "rocketchat",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"progressDeadlineSeconds": 1}})),
    )
    .await
    .unwrap();
    c.set_image("rocketchat", "rocketchat", &image("9.9.9"), "deploy 9.9.9")
        .await
        .unwrap();
    match c.watch_rollout("rocketchat", None, LIMIT).await.unwrap() {
        RolloutOutcome::Failed {
            pod,
            reason,
            message,
        } => {
            assert!(pod.unwrap().starts_with("rocketchat-"));
            assert!(
                matches!(
                    reason.as_deref(),
                    Some("ImagePullBackOff") | Some("ErrImagePull")
                ),
                "{reason:?}"
            );
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let d = c.deployment("rocketchat").await.unwrap();
    assert_eq!(
        d.status.unwrap().available_replicas,
        Some(3),
        "the old pods keep serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_the_previous_and_to_a_named_revision_matches_kubectl_rollout_undo() {
    if !crate::support::kubectl_or_skip(
        "rollback_to_the_previous_and_to_a_named_revision_matches_kubectl_rollout_undo",
    ) {
        return;
    }
    let e = env().await;
    let bot = e.cluster("test").await;
    bot.watch_rollout("rocketchat", None, LIMIT).await.unwrap();
    deploy(&bot, "7.0.0").await;
    deploy(&bot, "v3.1").await;
    assert_eq!(bot.undo("rocketchat", None).await.unwrap(), 2);
    bot.watch_rollout("rocketchat", None, LIMIT).await.unwrap();
    let d = bot.deployment("rocketchat").await.unwrap();
    assert_eq!(
        rocketops::cluster::rollout::current_image(&d, None),
        Some(image("7.0.0"))
    );
    let history = bot.history("rocketchat").await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![1, 3, 4],
        "revision 2 became 4"
    );
    assert_eq!(
        history[2].change_cause.as_deref(),
        Some("deploy 7.0.0 by alice")
    );
    assert_eq!(bot.undo("rocketchat", Some(1)).await.unwrap(), 1);
    bot.watch_rollout("rocketchat", None, LIMIT).await.unwrap();
    assert!(matches!(
        bot.undo("rocketchat", Some(42)).await,
        Err(ClusterError::Undo(_))
    ));

    // The same steps by kubectl in another namespace leave the same template.
    let k = e.cluster("kubectl").await;
    k.watch_rollout("rocketchat", None, LIMIT).await.unwrap();
    for tag in ["7.0.0", "v3.1"] {
        let (ok, out) = e.kubectl(&[
            "-n",
            "kubectl",
            "set",
            "image",
            "deploy/rocketchat",
            &format!("rocketchat={}", image(tag)),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = e.kubectl(&[
            "-n",
            "kubectl",
            "rollout",
            "status",
            "deploy/rocketchat",
            "--timeout=20s",
        ]);
        assert!(ok, "{out}");
    }
    let (ok, out) = e.kubectl(&["-n", "kubectl", "rollout", "undo", "deploy/rocketchat"]);
    assert!(ok, "{out}");
    e.kubectl(&[
        "-n",
        "kubectl",
        "rollout",
        "status",
        "deploy/rocketchat",
        "--timeout=20s",
    ]);
    let (ok, out) = e.kubectl(&[
        "-n",
        "kubectl",
        "rollout",
        "undo",
        "deploy/rocketchat",
        "--to-revision=1",
    ]);
    assert!(ok, "{out}");
    // Compared as the API server stores them: kubectl's typed client adds `creationTimestamp: null`
    // and `resources: {}`, which defaulting turns into the same object.
    let template = |ns: &str| {
        semantic(e.sim.get("deployments", ns, "rocketchat").unwrap()["spec"]["template"].clone())
    };
    assert_eq!(template("test"), template("kubectl"));
    let (_, hist) = e.kubectl(&["-n", "test", "rollout", "history", "deploy/rocketchat"]);
    let numbers: Vec<&str> = hist
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        numbers,
        vec!["3", "4", "5"],
        "kubectl reads the bot's history the same way: {hist}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_respects_an_hpa_unless_told_to_adjust_it_and_works_for_statefulsets() {
    let e = env().await;
    let prod = e.cluster("prod").await;
    let err = prod
        .scale(Workload::Deployment, "rocketchat", 2, HpaPolicy::Respect)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("HorizontalPodAutoscaler rocketchat keeps it between 3 and 10"),
        "{err}"
    );
    let ok = prod
        .scale(Workload::Deployment, "rocketchat", 5, HpaPolicy::Respect)
        .await
        .unwrap();
    assert_eq!((ok.from, ok.to), (3, 5));
    let adjusted = prod
        .scale(Workload::Deployment, "rocketchat", 12, HpaPolicy::Adjust)
        .await
        .unwrap();
    assert_eq!(adjusted.hpa.unwrap().after, (3, 12));
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(
        e.sim
            .get("horizontalpodautoscalers", "prod", "rocketchat")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(hpa.spec.unwrap().max_replicas, 12);
    assert_eq!(
        e.sim.get("deployments", "prod", "rocketchat").unwrap()["spec"]["replicas"],
        12
    );

    let test = e.cluster("test").await;
    let plain = test
        .scale(Workload::Deployment, "rocketchat", 1, HpaPolicy::Respect)
        .await
        .unwrap();
    assert_eq!((plain.from, plain.to, plain.hpa), (3, 1, None));
    test.scale(Workload::StatefulSet, "mongodb", 1, HpaPolicy::Respect)
        .await
        .unwrap();
    crate::support::eventually(
        "the StatefulSet to scale down to one pod",
        Duration::from_millis(20),
        || async {
            let pods = e.sim.list("pods", Some("test"));
            let db = pods
                .iter()
                .filter(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("mongodb-"))
                })
                .count();
            (db == 1).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_a_cronjob_is_owned_and_marked_and_its_result_parsed() {
    let e = env().await;
    let c = e.cluster("test").await;
    let job = c
        .job_from_cronjob("mongodb-backup", "mongodb-backup-manual-1")
        .await
        .unwrap();
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "mongodb-backup")
    );
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    let result = c.wait_job("mongodb-backup-manual-1", LIMIT).await.unwrap();
    assert_eq!(result.end, JobEnd::Complete);
    let parsed: Value = serde_json::from_str(&result.message).unwrap();
    assert_eq!(parsed["name"], "mongodb-backup-manual-1");
    assert!(parsed["bytes"].as_u64().unwrap() > 0);
    c.delete_job("mongodb-backup-manual-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_ends_as_failed_with_a_redacted_log_tail() {
    let e = env().await;
    e.sim.script_job(
        "broken-backup",
        JobScript {
            exit_code: 1,
            log: vec![
                "connecting to mongodb://admin:s3cr3tpw@mongodb-0:27017".into(),
                "error: authentication failed, password=s3cr3tpw".into(),
            ],
            ..JobScript::default()
        },
    );
    let c = e.cluster("test").await;
    c.job_from_cronjob("mongodb-backup", "broken-backup-1")
        .await
        .unwrap();
    let result = c.wait_job("broken-backup-1", LIMIT).await.unwrap();
    assert!(
        matches!(&result.end, JobEnd::Failed { reason, .. } if reason == "BackoffLimitExceeded"),
        "{result:?}"
    );
    assert_eq!(result.exit_code, Some(1));
    let tail = result.log_tail.join("\n");
    assert!(tail.contains("authentication failed"), "{tail}");
    assert!(!tail.contains("s3cr3tpw"), "secret leaked: {tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_without_loss_or_duplicates_and_an_expired_one_relists() {
    let e = env().await;
    let api: Api<ConfigMap> = Api::namespaced(e.client().await, "test");
    let mut stream = watcher(api.clone(), watcher::Config::default().labels("watch=me")).boxed();
    let cm = |n: &str| {
        serde_json::from_value::<ConfigMap>(
            json!({"metadata": {"name": n, "labels": {"watch": "me"}}}),
        )
        .unwrap()
    };
    let mut applied: Vec<String> = Vec::new();
    let mut inits = 0;
    let next = async |stream: &mut futures_util::stream::BoxStream<
        '_,
        Result<watcher::Event<ConfigMap>, watcher::Error>,
    >,
                      applied: &mut Vec<String>,
                      inits: &mut i32| {
        loop {
            match tokio::time::timeout(LIMIT, stream.next())
                .await
                .expect("watch event")
                .unwrap()
            {
                Ok(watcher::Event::Apply(c)) => {
                    applied.push(c.metadata.name.unwrap());
                    return;
                }
                Ok(watcher::Event::Init) => *inits += 1,
                Ok(watcher::Event::InitDone) => return,
                Ok(_) => {}
                Err(_) => {}
            }
        }
    };
    next(&mut stream, &mut applied, &mut inits).await; // initial list done
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    next(&mut stream, &mut applied, &mut inits).await;
    e.sim.drop_watches();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    next(&mut stream, &mut applied, &mut inits).await;
    next(&mut stream, &mut applied, &mut inits).await;
    assert_eq!(
        applied,
        vec!["a", "b", "c"],
        "resumed from its resourceVersion: nothing lost, nothing twice"
    );
    assert_eq!(inits, 1);
    // Forget history and cut the watch: resuming gets 410 Expired, so the watcher lists again.
    e.sim.compact();
    e.sim.drop_watches();
    api.create(&PostParams::default(), &cm("d")).await.unwrap();
    let started = tokio::time::Instant::now();
    while inits < 2 || !applied.contains(&"d".to_string()) {
        assert!(started.elapsed() < LIMIT, "no relist after 410");
        match tokio::time::timeout(LIMIT, stream.next())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitApply(c)) | Ok(watcher::Event::Apply(c)) => {
                applied.push(c.metadata.name.unwrap())
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_scales_follows_and_creates_jobs_and_agrees_with_the_bot() {
    if !crate::support::kubectl_or_skip(
        "kubectl_gets_scales_follows_and_creates_jobs_and_agrees_with_the_bot",
    ) {
        return;
    }
    let e = env().await;
    let c = e.cluster("test").await;
    let (ok, out) = e.kubectl(&["get", "deploy,sts,cronjob,jobs", "-A"]);
    assert!(ok, "{out}");
    for ns in ["test", "prod", "kubectl"] {
        assert!(out.contains(ns), "{out}");
    }
    let (ok, out) = e.kubectl(&[
        "-n",
        "test",
        "rollout",
        "status",
        "deploy/rocketchat",
        "--timeout=20s",
    ]);
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (ok, out) = e.kubectl(&["-n", "test", "scale", "deploy/rocketchat", "--replicas=2"]);
    assert!(ok, "{out}");
    assert_eq!(
        c.deployment("rocketchat")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
    let (ok, out) = e.kubectl(&[
        "-n",
        "test",
        "create",
        "job",
        "from-kubectl",
        "--from=cronjob/mongodb-backup",
    ]);
    assert!(ok, "{out}");
    let result = c.wait_job("from-kubectl", LIMIT).await.unwrap();
    assert_eq!(result.end, JobEnd::Complete);
    let parsed: Value = serde_json::from_str(&result.message).unwrap();
    assert_eq!(
        parsed["name"], "from-kubectl",
        "the CronJob's scripted backup ran"
    );
    let (ok, out) = e.kubectl(&["-n", "test", "get", "job", "from-kubectl", "-o", "jsonpath={.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.metadata.ownerReferences[0].name}"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "manual mongodb-backup");
    deploy(&c, "7.0.0").await;
    let (ok, out) = e.kubectl(&["-n", "test", "rollout", "history", "deploy/rocketchat"]);
    assert!(ok && out.contains("deploy 7.0.0 by alice"), "{out}");
    let (ok, out) = e.kubectl(&["-n", "test", "scale", "sts/mongodb", "--replicas=2"]);
    assert!(ok, "{out}");
    let (ok, out) = e.kubectl(&[
        "-n",
        "test",
        "rollout",
        "status",
        "sts/mongodb",
        "--timeout=20s",
    ]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_conflicts_are_retried_and_a_forbidden_write_names_the_permission() {
    let e = env().await;
    let c = e.cluster("test").await;
    e.sim.fail_next_writes(2, 500);
    c.set_image(
        "rocketchat",
        "rocketchat",
        &image("7.0.0"),
        "after two 500s",
    )
    .await
    .unwrap();
    e.sim.fail_next_writes(1, 409);
    c.set_image(
        "rocketchat",
        "rocketchat",
        &image("v3.1"),
        "after a conflict",
    )
    .await
    .unwrap();
    assert_eq!(
        e.sim.get("deployments", "test", "rocketchat").unwrap()["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "after a conflict"
    );
    e.sim.fail_next_writes(1, 403);
    let err = c
        .set_image("rocketchat", "rocketchat", &image("6.5.1"), "forbidden")
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Forbidden { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("cannot patch resource \"deployments\" in API group \"apps\""),
        "{err}"
    );
    let missing = c
        .set_image("no-such-app", "rocketchat", &image("6.5.1"), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ClusterError::NotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_from_config_watch_their_namespaces_through_drops_and_expiry() {
    use rocketops::cluster::Clusters;
    use rocketops::cluster::watch::{ClusterEvent, WatchedKind, watch_environments};
    let e = env().await;
    let mut envs = std::collections::BTreeMap::new();
    for name in ["test", "prod"] {
        let mut c = rocketops::config::EnvironmentConfig::named(name);
        c.kubeconfig = Some(e.kubeconfig.clone());
        c.context = Some(name.to_string());
        envs.insert(name.to_string(), c);
    }
    let clusters = Clusters::connect(&envs).await.unwrap();
    assert_eq!(clusters.names(), vec!["prod", "test"]);
    assert_eq!(clusters.get("prod").unwrap().namespace(), "prod");
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut rx = watch_environments(&clusters, &[WatchedKind::Jobs], None, cancel.clone());
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut relists = 0;
    let wait_for = async |rx: &mut tokio::sync::mpsc::Receiver<ClusterEvent>,
                          env: &str,
                          name: &str,
                          seen: &mut Vec<(String, String)>,
                          relists: &mut i32| {
        let started = tokio::time::Instant::now();
        while !seen.iter().any(|(e, n)| e == env && n == name) {
            assert!(started.elapsed() < LIMIT, "never saw job {name} in {env}");
            match tokio::time::timeout(LIMIT, rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                ClusterEvent::Applied { env, object, .. } => {
                    let n = object["metadata"]["name"].as_str().unwrap().to_string();
                    if !seen.iter().any(|(e2, n2)| *e2 == env && *n2 == n) {
                        seen.push((env, n));
                    }
                }
                ClusterEvent::Relisted { .. } => *relists += 1,
                ClusterEvent::Deleted { .. }
                | ClusterEvent::Refused { .. }
                | ClusterEvent::Restored { .. } => {}
            }
        }
    };
    clusters
        .get("test")
        .unwrap()
        .job_from_cronjob("mongodb-backup", "w1")
        .await
        .unwrap();
    clusters
        .get("prod")
        .unwrap()
        .job_from_cronjob("mongodb-backup", "w2")
        .await
        .unwrap();
    wait_for(&mut rx, "test", "w1", &mut seen, &mut relists).await;
    wait_for(&mut rx, "prod", "w2", &mut seen, &mut relists).await;
    e.sim.drop_watches();
    clusters
        .get("test")
        .unwrap()
        .job_from_cronjob("mongodb-backup", "w3")
        .await
        .unwrap();
    wait_for(&mut rx, "test", "w3", &mut seen, &mut relists).await;
    let before = relists;
    e.sim.compact();
    e.sim.drop_watches();
    clusters
        .get("prod")
        .unwrap()
        .job_from_cronjob("mongodb-backup", "w4")
        .await
        .unwrap();
    wait_for(&mut rx, "prod", "w4", &mut seen, &mut relists).await;
    assert!(
        relists > before,
        "an expired watch position forces a re-list"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rendered_from_a_template_with_parameters_runs_to_completion() {
    let e = env().await;
    e.sim.script_job(
        "migrate-",
        JobScript {
            termination_message: r#"{"migrated_to":"7.0.0"}"#.into(),
            ..JobScript::default()
        },
    );
    let c = e.cluster("test").await;
    let yaml = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate-${version}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: ${image}:${version}\n";
    let params = [("version", "7.0.0"), ("image", ROCKETCHAT_REPO)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let job = rocketops::cluster::jobs::render_job_template("migrate", yaml, &params).unwrap();
    c.create_job(&job).await.unwrap();
    let result = c.wait_job("migrate-7.0.0", LIMIT).await.unwrap();
    assert_eq!(result.end, JobEnd::Complete);
    assert_eq!(result.message, r#"{"migrated_to":"7.0.0"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_the_columns_a_real_api_server_sends_for_each_kind() {
    if !crate::support::kubectl_or_skip(
        "kubectl_get_prints_the_columns_a_real_api_server_sends_for_each_kind",
    ) {
        return;
    }
    let e = env().await;
    for what in ["deploy/rocketchat", "sts/mongodb"] {
        let (ok, out) = e.kubectl(&["-n", "test", "rollout", "status", what, "--timeout=20s"]);
        assert!(ok, "{out}");
    }
    let header = |out: &str| {
        out.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cases: [(&[&str], &str); 8] = [
        (&["get", "pods"], "NAME READY STATUS RESTARTS AGE"),
        (
            &["get", "pods", "-o", "wide"],
            "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
        ),
        (&["get", "deploy"], "NAME READY UP-TO-DATE AVAILABLE AGE"),
        (
            &["get", "deploy", "-o", "wide"],
            "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
        ),
        (&["get", "rs"], "NAME DESIRED CURRENT READY AGE"),
        (&["get", "sts"], "NAME READY AGE"),
        (
            &["get", "cronjobs"],
            "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE",
        ),
        (&["get", "ns", "test"], "NAME STATUS AGE"),
    ];
    for (args, want) in cases {
        let mut all = vec!["-n", "test"];
        all.extend_from_slice(args);
        let (ok, out) = e.kubectl(&all);
        assert!(ok, "{args:?}: {out}");
        assert_eq!(header(&out), want, "{args:?}:\n{out}");
    }
    let (ok, out) = e.kubectl(&["-n", "test", "get", "deploy", "rocketchat"]);
    assert!(ok, "{out}");
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["rocketchat", "3/3", "3", "3"], "{out}");
    let (ok, out) = e.kubectl(&["-n", "test", "get", "sts", "mongodb"]);
    assert!(
        ok && out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("mongodb   3/3"),
        "{out}"
    );
    // A watch sends Tables too: `get -w` prints rows under the same header until the server ends it.
    let (ok, out) = e.kubectl(&["-n", "test", "get", "deploy", "-w", "--request-timeout=2s"]);
    assert!(
        header(&out) == "NAME READY UP-TO-DATE AVAILABLE AGE" && out.contains("rocketchat"),
        "{ok} {out}"
    );
    let (ok, out) = e.kubectl(&["get", "pods", "-A"]);
    assert!(ok, "{out}");
    assert_eq!(
        header(&out).split(' ').take(3).collect::<Vec<_>>(),
        ["NAMESPACE", "NAME", "READY"],
        "{out}"
    );
    assert!(
        out.lines()
            .skip(1)
            .any(|l| l.starts_with("prod ") && l.contains("Running")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_carry_the_status_fields_a_kubelet_sets_and_version_answers_with_a_slash() {
    if !crate::support::kubectl_or_skip(
        "running_pods_carry_the_status_fields_a_kubelet_sets_and_version_answers_with_a_slash",
    ) {
        return;
    }
    let e = env().await;
    let (ok, out) = e.kubectl(&[
        "-n",
        "test",
        "rollout",
        "status",
        "deploy/rocketchat",
        "--timeout=20s",
    ]);
    assert!(ok, "{out}");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(e.client().await, "test");
    let list = pods.list(&Default::default()).await.unwrap();
    let running: Vec<_> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    assert!(running.len() >= 3, "{}", running.len());
    for p in running {
        let s = p.status.as_ref().unwrap();
        assert!(
            s.host_ip.is_some() && s.host_ips.is_some() && s.qos_class.is_some(),
            "{s:?}"
        );
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, s.pod_ip.clone().unwrap());
        assert!(p.spec.as_ref().unwrap().node_name.is_some());
        for c in s.container_statuses.as_ref().unwrap() {
            assert!(
                c.image_id.contains("@sha256:")
                    && c.container_id
                        .as_deref()
                        .is_some_and(|id| id.starts_with("containerd://")),
                "{c:?}"
            );
            assert_eq!(c.started, Some(true));
        }
    }
    let swagger: Value = reqwest::get(format!("{}/openapi/v2", e.sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(swagger["swagger"], "2.0");
    assert!(
        swagger["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
            .is_object()
    );
    for path in ["/version", "/version/"] {
        let v: Value = reqwest::get(format!("{}{path}", e.sim.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["major"], "1", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectls_typed_create_commands_send_protobuf_and_the_objects_come_out_whole() {
    if !crate::support::kubectl_or_skip(
        "kubectls_typed_create_commands_send_protobuf_and_the_objects_come_out_whole",
    ) {
        return;
    }
    let e = env().await;
    let run = |args: &[&str]| e.kubectl_ok(args);
    run(&["create", "namespace", "demo"]);
    run(&[
        "-n",
        "demo",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    run(&[
        "-n",
        "demo",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=password=hunter2",
    ]);
    run(&[
        "-n",
        "demo",
        "create",
        "deployment",
        "web",
        "--image=rocketchat/rocket.chat:6.5.0",
        "--replicas=2",
        "--port=3000",
    ]);
    run(&[
        "-n",
        "demo",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=20s",
    ]);
    let cm = run(&[
        "-n",
        "demo",
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.data.a} {.data.b}",
    ]);
    assert_eq!(cm, "1 two");
    let secret = run(&[
        "-n",
        "demo",
        "get",
        "secret",
        "s1",
        "-o",
        "jsonpath={.type} {.data.password}",
    ]);
    assert_eq!(secret, "Opaque aHVudGVyMg==");
    let spec: Value = serde_json::from_str(&run(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec}",
    ]))
    .unwrap();
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["selector"]["matchLabels"]["app"], "web");
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["image"].as_str(), &c["ports"][0]["containerPort"]),
        (Some("rocketchat/rocket.chat:6.5.0"), &json!(3000))
    );
    run(&[
        "-n",
        "demo",
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    run(&[
        "-n",
        "demo",
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 1 * * *",
        "--",
        "echo",
        "night",
    ]);
    run(&[
        "-n",
        "demo",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:3000",
    ]);
    run(&[
        "-n",
        "demo",
        "run",
        "one-off",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "1",
    ]);
    run(&[
        "-n",
        "demo",
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=20s",
    ]);
    let job = run(&[
        "-n",
        "demo",
        "get",
        "job",
        "hello",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].command} {.spec.template.spec.restartPolicy}",
    ]);
    assert_eq!(job, r#"["echo","hi"] Never"#);
    let cron = run(&[
        "-n",
        "demo",
        "get",
        "cronjob",
        "nightly",
        "-o",
        "jsonpath={.spec.schedule} {.spec.jobTemplate.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(cron, "0 1 * * * busybox");
    let svc = run(&[
        "-n",
        "demo",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.clusterIP}",
    ]);
    assert!(svc.starts_with("80 3000 10.96."), "{svc}");
    let pod = run(&[
        "-n",
        "demo",
        "get",
        "pod",
        "one-off",
        "-o",
        "jsonpath={.spec.containers[0].args}",
    ]);
    assert_eq!(pod, r#"["sleep","1"]"#);
    let all = run(&["-n", "demo", "get", "all"]);
    assert!(
        all.contains("deployment.apps/web")
            && all.contains("2/2")
            && all.contains("replicaset.apps/web-"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_describe_wait_cascade_and_namespace_deletion_work_as_on_a_cluster() {
    if !crate::support::kubectl_or_skip(
        "kubectl_logs_describe_wait_cascade_and_namespace_deletion_work_as_on_a_cluster",
    ) {
        return;
    }
    let e = env().await;
    let run = |args: &[&str]| e.kubectl_ok(args);
    run(&[
        "-n",
        "test",
        "wait",
        "--for=condition=available",
        "deploy/rocketchat",
        "--timeout=20s",
    ]);
    let pods = run(&["-n", "test", "get", "pods", "-o", "name"]);
    let pod = pods
        .lines()
        .find(|p| p.starts_with("pod/rocketchat-"))
        .expect("a Rocket.Chat pod")
        .to_string();
    let logs = run(&["-n", "test", "logs", &pod]);
    assert!(
        logs.contains("SERVER RUNNING") && logs.contains("Rocket.Chat Version: 6.5.0"),
        "{logs}"
    );
    let described = run(&["-n", "test", "describe", "deploy", "rocketchat"]);
    assert!(
        described.contains("NewReplicaSet:") && described.contains("MinimumReplicasAvailable"),
        "{described}"
    );
    // `kubectl edit` with an editor that changes the replica count.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&e.kubeconfig)
        .args(["-n", "test", "edit", "deploy/rocketchat"])
        .env("KUBE_EDITOR", "sed -i 's/replicas: 3/replicas: 2/'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replicas = run(&[
        "-n",
        "test",
        "get",
        "deploy",
        "rocketchat",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");
    // Orphaning keeps the pods when their ReplicaSet goes; a plain delete takes them along.
    run(&["create", "namespace", "scratch"]);
    run(&[
        "-n",
        "scratch",
        "create",
        "deployment",
        "web",
        "--image=rocketchat/rocket.chat:6.5.0",
        "--replicas=2",
    ]);
    run(&[
        "-n",
        "scratch",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=20s",
    ]);
    run(&[
        "-n",
        "scratch",
        "delete",
        "deploy",
        "web",
        "--cascade=orphan",
    ]);
    let rs = run(&["-n", "scratch", "get", "rs", "-o", "name"]);
    assert!(rs.contains("replicaset.apps/web-"), "orphaned: {rs}");
    run(&[
        "-n",
        "scratch",
        "create",
        "configmap",
        "c",
        "--from-literal=a=b",
    ]);
    run(&["delete", "namespace", "scratch"]);
    for kind in ["rs", "pods", "cm"] {
        let left = run(&["-n", "scratch", "get", kind, "-o", "name"]);
        assert!(
            left.trim().is_empty(),
            "{kind} left in a deleted namespace: {left}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages_that_kubectl_and_the_kube_client_follow_to_the_end() {
    if !crate::support::kubectl_or_skip(
        "lists_come_in_pages_that_kubectl_and_the_kube_client_follow_to_the_end",
    ) {
        return;
    }
    let e = env().await;
    e.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "prod",
        "sts/mongodb",
        "--timeout=20s",
    ]);
    // kubectl asks for `limit` pages and follows `continue`; one object a page still lists all.
    let whole = e.kubectl_ok(&["get", "pods", "-A", "-o", "name"]);
    let paged = e.kubectl_ok(&["get", "pods", "-A", "-o", "name", "--chunk-size=1"]);
    assert!(whole.lines().count() >= 6, "{whole}");
    assert_eq!(paged, whole);
    let table = e.kubectl_ok(&["get", "pods", "-A", "--chunk-size=2", "--no-headers"]);
    assert_eq!(table.lines().count(), whole.lines().count(), "{table}");
    // The list's metadata says how to go on and how many are left, as the API server's does.
    let client = e.client().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client);
    let first = pods
        .list(&kube::api::ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(
        first.metadata.remaining_item_count,
        Some(whole.lines().count() as i64 - 2)
    );
    let next = pods
        .list(
            &kube::api::ListParams::default()
                .limit(2)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_ne!(next.items[0].metadata.name, first.items[0].metadata.name);
    assert_eq!(
        next.metadata.resource_version,
        first.metadata.resource_version
    );
    // A token that is not one is refused, not taken for the start.
    let bad = pods
        .list(
            &kube::api::ListParams::default()
                .limit(2)
                .continue_token("nonsense"),
        )
        .await;
    assert!(
        matches!(&bad, Err(kube::Error::Api(s)) if s.code == 400),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_pages_through_a_long_first_list_and_passes_on_slim_objects() {
    use k8s_openapi::api::core::v1::Event;
    use rocketops::cluster::Clusters;
    use rocketops::cluster::watch::{ClusterEvent, WatchedKind, watch_environments};
    let e = env().await;
    // More Warning events than one page of the watch's first list holds.
    let events: Api<Event> = Api::namespaced(e.client().await, "test");
    for i in 0..250 {
        let ev: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("warning-{i:03}"), "namespace": "test"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
            "involvedObject": {"kind": "Pod", "name": "rocketchat-x", "namespace": "test"}
        }))
        .unwrap();
        events.create(&PostParams::default(), &ev).await.unwrap();
    }
    let mut envs = std::collections::BTreeMap::new();
    let mut c = rocketops::config::EnvironmentConfig::named("test");
    c.kubeconfig = Some(e.kubeconfig.clone());
    c.context = Some("test".to_string());
    envs.insert("test".to_string(), c);
    let clusters = Clusters::connect(&envs).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut rx = watch_environments(
        &clusters,
        &[WatchedKind::Events, WatchedKind::Pods],
        None,
        cancel.clone(),
    );
    let mut warnings = std::collections::BTreeSet::new();
    let mut pods = Vec::new();
    let started = tokio::time::Instant::now();
    while warnings.len() < 250 || pods.is_empty() {
        assert!(
            started.elapsed() < LIMIT,
            "saw {} of 250 warnings and {} pods",
            warnings.len(),
            pods.len()
        );
        match tokio::time::timeout(LIMIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClusterEvent::Applied {
                kind: WatchedKind::Events,
                object,
                ..
            } => {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                if name.starts_with("warning-") {
                    warnings.insert(name.to_string());
                }
            }
            ClusterEvent::Applied {
                kind: WatchedKind::Pods,
                object,
                ..
            } => pods.push(object),
            _ => {}
        }
    }
    cancel.cancel();
    // Alerts read a pod's status and labels; its spec and managed fields are not kept.
    for p in &pods {
        assert!(
            p["status"].is_object() && p["metadata"]["name"].is_string(),
            "{p}"
        );
        assert!(
            p.get("spec").is_none() && p["metadata"].get("managedFields").is_none(),
            "{p}"
        );
        assert_eq!(p["kind"], "Pod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_server_error_while_waiting_for_the_apps_pods_to_go_is_retried_not_a_failed_step()
{
    let e = env().await;
    let c = e.cluster("test").await;
    c.scale(
        rocketops::cluster::Workload::Deployment,
        "rocketchat",
        0,
        rocketops::cluster::HpaPolicy::Respect,
    )
    .await
    .unwrap();
    // The API server answers the next two pod lists with 500, as while its storage stumbles.
    e.sim.fail_next_lists("pods", 2, 500);
    c.wait_pods_gone("rocketchat", Duration::from_secs(20))
        .await
        .unwrap();
    // A lasting failure still fails the wait, and says the API server's answer.
    e.sim.fail_next_lists("pods", 50, 500);
    let err = c
        .wait_pods_gone("rocketchat", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
}
