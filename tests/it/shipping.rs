//! What ships: the manifests parse as the Kubernetes types they declare, the Role grants exactly the
//! calls the cluster layer makes (checked against its real requests), and the Dockerfile fits them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use rocketops::cluster::watch::{WatchedKind, watch_environments};
use rocketops::cluster::{API_CALLS, Cluster, Clusters, HpaPolicy, Workload};
use rocketops::sandbox::kube::{JobScript, KubeSim, KubeSimConfig};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// The documents of a multi-document YAML text (`origin` names it in errors).
fn yaml_documents(text: &str, origin: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut doc = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if doc
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                let v: Value = serde_saphyr::from_str(&doc)
                    .unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
                out.push(v);
            }
            doc.clear();
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    out
}

/// Every YAML document under `manifests/`, with its file.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for v in yaml_documents(&text, &f) {
            out.push((f.clone(), v));
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(f: &Path, v: &Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not parse as its kind: {e}", f.display()))
}

#[test]
fn every_manifest_parses_as_the_kubernetes_type_it_declares() {
    let docs = documents();
    assert!(docs.len() >= 20, "{} documents", docs.len());
    for (f, v) in &docs {
        match v["kind"].as_str().unwrap_or_default() {
            "Kustomization" => {
                for r in v["resources"].as_array().unwrap() {
                    let target = f.parent().unwrap().join(r.as_str().unwrap());
                    assert!(
                        target.exists(),
                        "{} lists missing {}",
                        f.display(),
                        target.display()
                    );
                }
            }
            "Namespace" => drop(typed::<Namespace>(f, v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(f, v)),
            "ConfigMap" => {
                let cm: ConfigMap = typed(f, v);
                if let Some(toml) = cm.data.as_ref().and_then(|d| d.get("rocketops.toml")) {
                    rocketops::config::Config::from_toml(toml, f, &|k| {
                        (k == "ROCKETOPS_RC_TOKEN").then(|| "t".to_string())
                    })
                    .unwrap_or_else(|e| panic!("the shipped configuration is invalid: {e}"));
                }
            }
            "Secret" => drop(typed::<Secret>(f, v)),
            "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(f, v)),
            "Deployment" => drop(typed::<Deployment>(f, v)),
            "Service" => drop(typed::<Service>(f, v)),
            "Role" => drop(typed::<Role>(f, v)),
            "RoleBinding" => drop(typed::<RoleBinding>(f, v)),
            "StatefulSet" => drop(typed::<StatefulSet>(f, v)),
            "HorizontalPodAutoscaler" => drop(typed::<HorizontalPodAutoscaler>(f, v)),
            "CronJob" => drop(typed::<CronJob>(f, v)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(f, v)),
            other => panic!("{}: unexpected kind {other:?}", f.display()),
        }
    }
}

fn declared() -> BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn the_role_grants_exactly_the_calls_the_cluster_layer_declares_and_nothing_wider() {
    let role: Role = documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "Role" && v["metadata"]["name"] == "rocketops")
        .map(|(f, v)| typed(&f, &v))
        .unwrap();
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    assert!(v != "*" && r != "*" && g != "*", "no wildcards in the Role");
                    granted.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    assert_eq!(granted, declared());
    let bot = documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "Deployment" && v["metadata"]["name"] == "rocketops")
        .unwrap();
    assert!(
        !serde_json::to_string(&bot.1)
            .unwrap()
            .contains("cluster-admin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_cluster_layer_does_stays_within_its_declared_calls_and_uses_all_of_them() {
    rocketops::tls::install_crypto_provider();
    let sim = KubeSim::start(KubeSimConfig {
        pod_ready_after: Duration::from_millis(30),
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    sim.seed_environments(&["prod"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, &["prod"]).unwrap();
    sim.clear_api_calls();
    let c = Cluster::from_kubeconfig(&kc, Some("prod"), None)
        .await
        .unwrap();
    let limit = Duration::from_secs(20);
    let clusters = Clusters::from_map([("prod".to_string(), c.clone())].into());
    let cancel = tokio_util::sync::CancellationToken::new();
    let kinds = [
        WatchedKind::Jobs,
        WatchedKind::Pods,
        WatchedKind::Deployments,
        WatchedKind::StatefulSets,
        WatchedKind::CronJobs,
        WatchedKind::Events,
    ];
    let mut rx = watch_environments(&clusters, &kinds, None, cancel.clone());
    for _ in 0..kinds.len() {
        tokio::time::timeout(limit, rx.recv()).await.unwrap();
    }
    let repo = rocketops::sandbox::kube::seed::ROCKETCHAT_REPO;
    c.set_image("rocketchat", "rocketchat", &format!("{repo}:7.0.0"), "x")
        .await
        .unwrap();
    c.watch_rollout("rocketchat", None, limit).await.unwrap();
    c.history("rocketchat").await.unwrap();
    c.undo("rocketchat", None).await.unwrap();
    c.scale(Workload::Deployment, "rocketchat", 12, HpaPolicy::Adjust)
        .await
        .unwrap();
    c.scale(Workload::StatefulSet, "mongodb", 2, HpaPolicy::Respect)
        .await
        .unwrap();
    c.statefulset("mongodb").await.unwrap();
    c.job_from_cronjob("mongodb-backup", "rbac-check")
        .await
        .unwrap();
    c.wait_job("rbac-check", limit).await.unwrap();
    sim.script_job(
        "rbac-fail",
        JobScript {
            exit_code: 1,
            ..JobScript::default()
        },
    );
    c.job_from_cronjob("mongodb-backup", "rbac-fail")
        .await
        .unwrap();
    c.wait_job("rbac-fail", limit).await.unwrap();
    c.delete_job("rbac-check").await.unwrap();
    // What a restore does to the app and its autoscaler.
    let hpa = c
        .hpa_for(Workload::Deployment, "rocketchat")
        .await
        .unwrap()
        .unwrap();
    let saved = rocketops::cluster::hpa_snapshot(&hpa);
    c.delete_hpa("rocketchat").await.unwrap();
    c.scale(Workload::Deployment, "rocketchat", 0, HpaPolicy::Respect)
        .await
        .unwrap();
    c.wait_pods_gone("rocketchat", limit).await.unwrap();
    c.restore_hpa(&saved).await.unwrap();
    // With `redact_secret_values`: the Secrets the Jobs read.
    sim.create(
        "secrets",
        "prod",
        serde_json::json!({"metadata": {"name": "mongodb"}, "stringData": {"uri": "mongodb://x"}}),
    )
    .unwrap();
    c.secret("mongodb").await.unwrap();
    cancel.cancel();
    let observed = sim.api_calls();
    let mut declared = declared();
    declared.extend(
        rocketops::cluster::SECRET_VALUE_CALLS
            .iter()
            .flat_map(|(g, r, verbs)| {
                verbs
                    .iter()
                    .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
            }),
    );
    let undeclared: Vec<_> = observed.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "calls made but not declared (and not granted): {undeclared:?}"
    );
    let unused: Vec<_> = declared.difference(&observed).collect();
    assert!(
        unused.is_empty(),
        "declared (and granted) but never made: {unused:?}"
    );
}

#[test]
fn the_secret_values_role_grants_only_get_on_named_secrets() {
    let (f, v) = documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "Role" && v["metadata"]["name"] == "rocketops-secret-values")
        .expect("manifests/rbac-secret-values/role.yaml");
    let role: Role = typed(&f, &v);
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        let names = rule.resource_names.clone().unwrap_or_default();
        assert!(!names.is_empty(), "every rule names its Secrets");
        assert!(names.contains(&"mongodb".to_string()), "{names:?}");
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.insert((g.clone(), r.clone(), verb.clone()));
                }
            }
        }
    }
    let wanted: BTreeSet<(String, String, String)> = rocketops::cluster::SECRET_VALUE_CALLS
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(granted, wanted);
}

#[test]
fn the_dockerfile_builds_locked_runs_non_root_and_matches_the_manifests_paths() {
    let d = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        d.contains("cargo build --locked --profile dist --no-default-features --bin rocketops")
    );
    assert!(d.contains("COPY --from=build /src/target/dist/rocketops /usr/local/bin/rocketops"));
    assert!(d.contains("USER 65532:65532"));
    // Cargo reads every member of the workspace, so each is in the build's context.
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        assert!(
            member == "." || d.contains(&format!("COPY {member} ./{member}")),
            "the Dockerfile copies the workspace member {member}"
        );
    }
    assert!(d.contains("ENTRYPOINT [\"/usr/local/bin/rocketops\"]"));
    assert!(d.contains("ROCKETOPS_CONFIG=/etc/rocketops/rocketops.toml"));
    assert!(d.contains("/var/lib/rocketops"));
    let (f, v) = documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "Deployment" && v["metadata"]["name"] == "rocketops")
        .unwrap();
    let dep: Deployment = typed(&f, &v);
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(65532));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(
        (sc.read_only_root_filesystem, sc.allow_privilege_escalation),
        (Some(true), Some(false))
    );
    let mounts: Vec<String> = c
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert!(
        mounts.contains(&"/etc/rocketops/rocketops.toml".to_string())
            && mounts.contains(&"/var/lib/rocketops".to_string()),
        "{mounts:?}"
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
}

#[test]
fn the_example_backup_cronjob_runs_the_same_script_as_the_mongodb_backup_template() {
    let text = std::fs::read_to_string("manifests/example-environment/backup.yaml").unwrap();
    let cronjob: serde_json::Value = text
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<serde_json::Value>(doc).unwrap())
        .find(|d| d["kind"] == "CronJob")
        .unwrap();
    let from_cluster = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let mut config = rocketops::config::Config::from_toml(
        "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.test]\n",
        std::path::Path::new("t.toml"),
        &|_| None,
    )
    .unwrap();
    config.bot.commands_dir = "commands".into();
    let e = &config.environments["test"];
    let rec = rocketops::store::OpRecord {
        id: rocketops::journal::OpId::new(1),
        env: "test".into(),
        ..Default::default()
    };
    let params = rocketops::ops::templates::params(&rec, e, &[("backup", "test-1")]);
    let job = rocketops::ops::templates::render(
        &config.bot.commands_dir,
        e,
        rocketops::ops::templates::Kind::Backup,
        &params,
    )
    .unwrap();
    let from_bot =
        serde_json::to_value(&job.spec.unwrap().template.spec.unwrap().containers[0]).unwrap();
    assert!(
        from_bot["args"][0]
            .as_str()
            .is_some_and(|a| a.contains("mongodump"))
    );
    for field in ["image", "command", "args"] {
        assert_eq!(from_cluster[field], from_bot[field], "{field} differs");
    }
    assert_eq!(
        from_cluster["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        from_bot["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    );
    let claim = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
        ["claimName"];
    assert_eq!(claim, e.backup.claim_or(e));
}

#[test]
fn without_a_configuration_the_cli_says_how_to_get_one_and_init_writes_it_where_config_points() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rocketops");
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .current_dir(dir.path())
        .env_remove("ROCKETOPS_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no configuration file at rocketops.toml")
            && err.contains("`rocketops init` writes a commented one"),
        "{err}"
    );
    let out = std::process::Command::new(bin)
        .args(["init", "--config", "ops/bot.toml"])
        .current_dir(dir.path())
        .output();
    // The folder does not exist: a clear error, not a panic.
    assert!(!out.unwrap().status.success());
    std::fs::create_dir(dir.path().join("ops")).unwrap();
    let out = std::process::Command::new(bin)
        .args(["init", "--config", "ops/bot.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("ops/bot.toml").exists());
    let again = std::process::Command::new(bin)
        .args(["init", "--config", "ops/bot.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "never overwritten without --force");
}

/// kubectl against the world's Kubernetes simulator, as a user types it (no extra flags).
fn kubectl_in(w: &crate::support::World, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(w.kubeconfig())
        .args(["--context", "test"])
        .args(args)
        .current_dir(root())
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_environment_applied_with_kubectl_as_it_stands_runs_and_the_bot_manages_it() {
    if !crate::support::kubectl_or_skip(
        "the_example_environment_applied_with_kubectl_as_it_stands_runs_and_the_bot_manages_it",
    ) {
        return;
    }
    use crate::support::{World, bot_texts};
    let mut w = World::with_cluster().await;
    // kubectl's default validation downloads the OpenAPI documents first; no --validate=false.
    let out = kubectl_in(&w, &["apply", "-k", "manifests/example-environment"]);
    for made in [
        "namespace/rocketchat-test created",
        "secret/mongodb created",
        "deployment.apps/rocketchat created",
        "statefulset.apps/mongodb created",
        "cronjob.batch/mongodb-backup created",
        "horizontalpodautoscaler.autoscaling/rocketchat created",
    ] {
        assert!(out.contains(made), "{made}: {out}");
    }
    let again = kubectl_in(&w, &["apply", "-k", "manifests/example-environment"]);
    assert!(
        again.contains("deployment.apps/rocketchat unchanged"),
        "{again}"
    );
    for what in ["deploy/rocketchat", "sts/mongodb"] {
        kubectl_in(
            &w,
            &[
                "-n",
                "rocketchat-test",
                "rollout",
                "status",
                what,
                "--timeout=30s",
            ],
        );
    }
    let claims = kubectl_in(
        &w,
        &["-n", "rocketchat-test", "get", "pvc", "mongodb-backup"],
    );
    assert!(claims.contains("Bound"), "{claims}");
    kubectl_in(
        &w,
        &[
            "-n",
            "rocketchat-test",
            "create",
            "job",
            "backup-by-hand",
            "--from=cronjob/mongodb-backup",
        ],
    );
    let waited = kubectl_in(
        &w,
        &[
            "-n",
            "rocketchat-test",
            "wait",
            "--for=condition=complete",
            "job/backup-by-hand",
            "--timeout=30s",
        ],
    );
    assert!(waited.contains("condition met"), "{waited}");

    // Once in the configuration, the bot manages it.
    let mut config = w.config();
    let mut env = config.environments["test"].clone();
    env.namespace = Some("rocketchat-test".into());
    env.smoke = None;
    config.environments.insert("example".into(), env);
    w.start_bot_with(config).await;
    w.sim.post("alice", "#ops", "/status example").unwrap();
    let msgs = w
        .wait_for("#ops", "the status", |m| !bot_texts(m).is_empty())
        .await;
    let status = bot_texts(&msgs).join("\n");
    assert!(status.contains("3/3 ready"), "{status}");
    w.sim
        .post("alice", "#ops", "/deploy example 7.0.0")
        .unwrap();
    w.wait_for("#ops", "the deploy's end", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("✅") && t.contains("example runs 7.0.0"))
    })
    .await;
    let image = kubectl_in(
        &w,
        &[
            "-n",
            "rocketchat-test",
            "get",
            "deploy",
            "rocketchat",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(image.trim(), "rocketchat/rocket.chat:7.0.0");
}

#[test]
fn the_starter_configuration_is_checked_as_run_would_start_it_secrets_included() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rocketops");
    let run = |args: &[&str], secrets: &[&str]| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("ROCKETOPS_CONFIG")
            .env_remove("ROCKETOPS_RC_TOKEN")
            .env_remove("ROCKETOPS_RC_PASSWORD")
            .env_remove("ROCKETOPS_AUDIT_KEY");
        if secrets.contains(&"token") {
            cmd.env("ROCKETOPS_RC_TOKEN", "a-token");
        }
        if secrets.contains(&"audit") {
            cmd.env("ROCKETOPS_AUDIT_KEY", "0123456789abcdef0123456789abcdef");
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["init"], &[]);
    assert!(ok, "{err}");
    let starter = std::fs::read_to_string(dir.path().join("rocketops.toml")).unwrap();
    assert!(
        starter.contains("ROCKETOPS_AUDIT_KEY"),
        "the header names every secret"
    );
    // Without the secrets, check-config fails as run would, naming them.
    let (ok, _, err) = run(&["check-config"], &[]);
    assert!(
        !ok,
        "check-config passed a configuration without credentials"
    );
    assert!(err.contains("ROCKETOPS_RC_TOKEN"), "{err}");
    let (ok, _, err) = run(&["check-config"], &["token"]);
    assert!(!ok, "check-config passed a configuration run refuses");
    assert!(err.contains("would refuse to start"), "{err}");
    assert!(err.contains("ROCKETOPS_AUDIT_KEY"), "{err}");
    // Checked where the secrets are not present, it says so and passes.
    let (ok, out, err) = run(&["check-config", "--offline-secrets"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("not checked (--offline-secrets)"), "{out}");
    assert!(out.contains("ROCKETOPS_AUDIT_KEY"), "{out}");
    // With them, it passes; the risky blocks are off and the summary says so.
    let (ok, out, err) = run(&["check-config"], &["token", "audit"]);
    assert!(ok, "{err}");
    assert!(out.contains("off-site prod:  off"), "{out}");
    assert!(
        !out.contains("refresh test"),
        "no refresh of test from prod: {out}"
    );
    assert!(!out.contains("acme"), "no example bucket: {out}");
    // A misspelt command in a policy rule is an error naming its line, with a did-you-mean.
    let typo = starter.replacen(
        "allow_when_locked = [\"rollback\"",
        "allow_when_locked = [\"rolback\"",
        1,
    );
    assert_ne!(typo, starter, "the starter has allow_when_locked");
    let line = typo
        .lines()
        .position(|l| l.contains("\"rolback\""))
        .unwrap()
        + 1;
    std::fs::write(dir.path().join("rocketops.toml"), typo).unwrap();
    let (ok, _, err) = run(&["check-config"], &["token", "audit"]);
    assert!(!ok, "check-config passed a policy naming no command");
    assert!(
        err.contains(&format!("rocketops.toml:{line}:"))
            && err.contains("unknown command `rolback`; did you mean `rollback`?"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_image_a_deploy_changes_only_the_tag_of_the_running_repository() {
    use crate::support::{World, bot_texts};
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    config.environments.get_mut("test").unwrap().image = None;
    w.start_bot_with(config).await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the deploy's end", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("✅"))
    })
    .await;
    let image = w.kube().get("deployments", "test", "rocketchat").unwrap()["spec"]["template"]
        ["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        image,
        format!("{}:7.0.0", rocketops::sandbox::kube::seed::ROCKETCHAT_REPO),
        "a version is never an image by itself"
    );
    w.stop_bot().await;
}

#[test]
fn no_kustomization_applies_a_secret_and_the_example_names_every_secret_the_bot_reads() {
    let docs = documents();
    for (f, v) in &docs {
        if v["kind"] != "Kustomization" {
            continue;
        }
        for r in v["resources"].as_array().into_iter().flatten() {
            let target = f.parent().unwrap().join(r.as_str().unwrap_or_default());
            // The bot's own Secret (the managed app's example may ship its database's).
            let applies_secret = docs.iter().any(|(g, d)| {
                g == &target && d["kind"] == "Secret" && d["metadata"]["name"] == "rocketops"
            });
            assert!(
                !applies_secret,
                "{} applies {}: applying it again would overwrite the real Secret",
                f.display(),
                target.display()
            );
        }
    }
    let example = std::fs::read_to_string(root().join("manifests/secret.example.yaml")).unwrap();
    for secret in ["ROCKETOPS_RC_TOKEN", "ROCKETOPS_AUDIT_KEY"] {
        assert!(
            example.matches(secret).count() >= 2,
            "the example and its create-secret line name {secret}"
        );
    }
    let starter = rocketops::config::STARTER;
    for secret in ["ROCKETOPS_RC_TOKEN", "ROCKETOPS_AUDIT_KEY"] {
        assert!(
            starter.contains(secret),
            "the starter's header names {secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kustomization_under_manifests_applies_to_the_kubernetes_simulator_with_plain_kubectl()
 {
    if !crate::support::kubectl_or_skip(
        "every_kustomization_under_manifests_applies_to_the_kubernetes_simulator_with_plain_kubectl",
    ) {
        return;
    }
    let w = crate::support::World::with_cluster().await;
    // The managed namespaces the overlays and the example environment name.
    for ns in ["rocketchat-dev", "rocketchat-test", "rocketchat-prod"] {
        kubectl_in(&w, &["create", "namespace", ns]);
    }
    let mut kustomizations = Vec::new();
    for (f, v) in documents() {
        // The two-replica variant replaces the base rather than adding to it: applied over it in
        // its own test.
        if v["kind"] == "Kustomization" && !f.starts_with(root().join("manifests/ha")) {
            kustomizations.push(f.parent().unwrap().to_path_buf());
        }
    }
    kustomizations.sort();
    assert!(kustomizations.len() >= 6, "{kustomizations:?}");
    for dir in &kustomizations {
        let dir = dir.display().to_string();
        kubectl_in(&w, &["apply", "-k", &dir]);
    }
    // Applying again changes nothing and fails nothing.
    let again = kubectl_in(&w, &["apply", "-k", "manifests/base"]);
    assert!(
        again.contains("deployment.apps/rocketops unchanged"),
        "{again}"
    );
    // Applying a changed object patches it, with no warning from kubectl.
    let changed = std::env::temp_dir().join(format!("rocketops-apply-{}", std::process::id()));
    std::fs::create_dir_all(&changed).unwrap();
    let deployment =
        std::fs::read_to_string(root().join("manifests/base/deployment.yaml")).unwrap();
    let set = "              value: /etc/rocketops/rocketops.toml\n";
    assert!(deployment.contains(set), "the base sets ROCKETOPS_CONFIG");
    let added = format!("{set}            - name: RUST_BACKTRACE\n              value: \"1\"\n");
    std::fs::write(
        changed.join("deployment.yaml"),
        deployment.replacen(set, &added, 1),
    )
    .unwrap();
    let file = changed.join("deployment.yaml").display().to_string();
    let out = kubectl_in(&w, &["apply", "-n", "rocketops", "-f", &file]);
    assert!(
        out.contains("deployment.apps/rocketops configured"),
        "{out}"
    );
    assert!(!out.to_lowercase().contains("warning"), "{out}");
    let dep = w
        .kube()
        .get("deployments", "rocketops", "rocketops")
        .unwrap();
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("ROCKETOPS_CONFIG") && env.contains("RUST_BACKTRACE"),
        "the list is merged by name: {env}"
    );
    std::fs::remove_dir_all(&changed).ok();
    assert!(
        w.kube()
            .get("serviceaccounts", "rocketops", "rocketops")
            .is_ok(),
        "the bot's service account is stored"
    );
}

/// `kubectl kustomize manifests/ha`: what applying the two-replica variant sends, as documents.
fn rendered_ha() -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", "manifests/ha"])
        .current_dir(root())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/ha: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(
        &String::from_utf8(out.stdout).unwrap(),
        Path::new("kubectl kustomize manifests/ha"),
    )
}

/// The one rendered object of `kind` named `name`, as its type.
fn rendered_one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name} in manifests/ha");
    typed(Path::new("manifests/ha"), found[0])
}

#[test]
fn the_two_replica_variant_runs_a_leader_and_a_standby_rolling_one_at_a_time_on_separate_nodes_with_no_volume()
 {
    if !crate::support::kubectl_or_skip(
        "the_two_replica_variant_runs_a_leader_and_a_standby_rolling_one_at_a_time_on_separate_nodes_with_no_volume",
    ) {
        return;
    }
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let docs = rendered_ha();
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"]
                .as_str()
                .or(d["metadata"]["name"].as_str()),
            Some("rocketops"),
            "everything in the bot's own namespace: {}",
            d["metadata"]
        );
    }
    assert!(
        !docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"),
        "no volume: the state lives in ConfigMaps"
    );
    let dep: Deployment = rendered_one(&docs, "Deployment", "rocketops");
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (Some(IntOrString::Int(1)), Some(IntOrString::Int(0)))
    );
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    let pod = spec.template.spec.unwrap();
    assert!(pod.termination_grace_period_seconds.unwrap() >= 30);
    // Spread over nodes, preferred: required would leave the second pod Pending on one node.
    let anti = pod
        .affinity
        .unwrap()
        .pod_anti_affinity
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert!(
        anti.iter().any(|t| {
            let term = &t.pod_affinity_term;
            term.topology_key == "kubernetes.io/hostname"
                && term
                    .label_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|m| {
                        !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
        }),
        "{anti:?}"
    );
    let volumes = pod.volumes.unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
        "{volumes:?}"
    );
    let c = &pod.containers[0];
    let mounts: Vec<String> = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert_eq!(
        mounts,
        ["/etc/rocketops/rocketops.toml"],
        "the config, nothing else"
    );
    for m in c.volume_mounts.iter().flatten() {
        assert!(
            volumes.iter().any(|v| v.name == m.name),
            "{} is a volume",
            m.name
        );
    }
    // The Lease holder's identity and namespace, from the downward API.
    let env = c.env.clone().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} is set"));
        let from = var.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
        assert_eq!(from.map(|f| f.field_path.as_str()), Some(field), "{name}");
    }
    assert!(env.iter().any(|e| e.name == "ROCKETOPS_CONFIG"));
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe(&c.readiness_probe).as_deref(), Some("/readyz"));
    // A drain never takes both; it selects exactly the bot's pods.
    let pdb: PodDisruptionBudget = rendered_one(&docs, "PodDisruptionBudget", "rocketops");
    let pdb = pdb.spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb.max_unavailable, None);
    assert_eq!(
        pdb.selector.unwrap().match_labels,
        spec.selector.match_labels,
        "the budget selects the Deployment's pods"
    );
    // The configuration it mounts keeps the state in Kubernetes.
    let cm: ConfigMap = rendered_one(&docs, "ConfigMap", "rocketops-config");
    let toml = cm.data.unwrap()["rocketops.toml"].clone();
    let config = rocketops::config::Config::from_toml(&toml, Path::new("manifests/ha"), &|k| {
        (k == "ROCKETOPS_RC_TOKEN").then(|| "t".to_string())
    })
    .unwrap();
    assert_eq!(config.ha.store, rocketops::config::StoreBackend::Kubernetes);
    assert_eq!(config.ha.namespace, None, "from POD_NAMESPACE");
    assert!(
        volumes.iter().any(|v| v
            .config_map
            .as_ref()
            .is_some_and(|s| s.name == "rocketops-config")),
        "{volumes:?}"
    );
}

#[test]
fn the_two_replica_variant_s_configuration_is_the_base_s_with_only_the_ha_section_added() {
    let toml_of = |dir: &str| {
        let (f, v) = documents()
            .into_iter()
            .find(|(f, v)| {
                f.starts_with(root().join(dir))
                    && v["kind"] == "ConfigMap"
                    && v["metadata"]["name"] == "rocketops-config"
            })
            .unwrap_or_else(|| panic!("{dir} has the bot's ConfigMap"));
        let cm: ConfigMap = typed(&f, &v);
        cm.data.unwrap()["rocketops.toml"].clone()
    };
    let base = toml_of("manifests/base");
    let ha = toml_of("manifests/ha");
    let section: toml::Table = ha.parse().unwrap();
    assert_eq!(
        section["ha"].as_table().unwrap().get("store"),
        Some(&toml::Value::String("kubernetes".into()))
    );
    // The [ha] table and the comment lines just above it taken out, the rest is the base's.
    let lines: Vec<&str> = ha.lines().collect();
    let start = lines.iter().position(|l| l.trim() == "[ha]").unwrap();
    let mut from = start;
    while from > 0 && lines[from - 1].trim_start().starts_with('#') {
        from -= 1;
    }
    let mut to = start + 1;
    while to < lines.len()
        && !lines[to].trim_start().starts_with('[')
        && !lines[to].trim().is_empty()
    {
        to += 1;
    }
    // The blank line after the table.
    if to < lines.len() && lines[to].trim().is_empty() {
        to += 1;
    }
    let rest: Vec<&str> = lines[..from].iter().chain(&lines[to..]).copied().collect();
    assert_eq!(
        rest.join("\n"),
        base.lines().collect::<Vec<_>>().join("\n"),
        "manifests/ha/configmap.yaml drifted from manifests/base/configmap.yaml"
    );
}

#[test]
fn the_two_replica_role_grants_the_lease_by_name_and_the_state_configmaps_in_its_own_namespace_and_nothing_else()
 {
    let docs = documents();
    let in_ha = |kind: &str| -> Vec<(PathBuf, Value)> {
        docs.iter()
            .filter(|(f, v)| f.starts_with(root().join("manifests/ha")) && v["kind"] == kind)
            .cloned()
            .collect()
    };
    let roles = in_ha("Role");
    assert_eq!(roles.len(), 1, "one Role in manifests/ha");
    let (f, v) = &roles[0];
    let role: Role = typed(f, v);
    let name = role.metadata.name.clone().unwrap();
    let lease = rocketops::config::HaConfig::default().lease_name;
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert!(rule.non_resource_urls.is_none());
        let names = rule.resource_names.clone().unwrap_or_default();
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        verb != "*" && r != "*" && g != "*",
                        "no wildcards in the Role"
                    );
                    granted.insert((g.clone(), r.clone(), verb.clone(), names.clone()));
                }
            }
        }
    }
    let by_name = vec![lease];
    let mut wanted = BTreeSet::new();
    for verb in ["get", "update"] {
        wanted.insert((
            "coordination.k8s.io".to_string(),
            "leases".to_string(),
            verb.to_string(),
            by_name.clone(),
        ));
    }
    // Create cannot be narrowed by name.
    wanted.insert((
        "coordination.k8s.io".into(),
        "leases".into(),
        "create".into(),
        vec![],
    ));
    for verb in ["get", "list", "create", "update"] {
        wanted.insert((String::new(), "configmaps".into(), verb.into(), vec![]));
    }
    assert_eq!(granted, wanted, "exactly these, so no watch and no Secrets");
    // Bound to the bot's service account, in the bot's own namespace; no cluster-wide rules.
    let bindings = in_ha("RoleBinding");
    assert_eq!(bindings.len(), 1);
    let (f, v) = &bindings[0];
    let binding: RoleBinding = typed(f, v);
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", name.as_str())
    );
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "rocketops", Some("rocketops"))
    );
    let kustomization = &in_ha("Kustomization")[0].1;
    assert_eq!(kustomization["namespace"], "rocketops");
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(in_ha(kind).is_empty(), "no {kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_replica_variant_applies_over_the_base_with_plain_kubectl_and_back() {
    if !crate::support::kubectl_or_skip(
        "the_two_replica_variant_applies_over_the_base_with_plain_kubectl_and_back",
    ) {
        return;
    }
    let w = crate::support::World::with_cluster().await;
    kubectl_in(&w, &["apply", "-k", "manifests/base"]);
    let out = kubectl_in(&w, &["apply", "-k", "manifests/ha"]);
    for line in [
        "deployment.apps/rocketops configured",
        "configmap/rocketops-config configured",
        "poddisruptionbudget.policy/rocketops created",
        "role.rbac.authorization.k8s.io/rocketops-ha created",
        "rolebinding.rbac.authorization.k8s.io/rocketops-ha created",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(!out.to_lowercase().contains("warning"), "{out}");
    let dep = w
        .kube()
        .get("deployments", "rocketops", "rocketops")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"].as_array().unwrap().len(),
        1,
        "{}",
        pod["volumes"]
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        pod["containers"][0]["env"]
            .to_string()
            .contains("POD_NAMESPACE")
    );
    let again = kubectl_in(&w, &["apply", "-k", "manifests/ha"]);
    assert!(
        again.contains("deployment.apps/rocketops unchanged"),
        "{again}"
    );
    // Back to one replica: the base's strategy, volume and configuration again.
    kubectl_in(&w, &["apply", "-k", "manifests/base"]);
    let dep = w
        .kube()
        .get("deployments", "rocketops", "rocketops")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(
        dep["spec"]["strategy"],
        serde_json::json!({"type": "Recreate"})
    );
    let pod = &dep["spec"]["template"]["spec"];
    assert!(pod["volumes"].to_string().contains("rocketops-store"));
    assert!(!pod["containers"][0]["env"].to_string().contains("POD_NAME"));
    let cm = w
        .kube()
        .get("configmaps", "rocketops", "rocketops-config")
        .unwrap();
    assert!(
        !cm["data"]["rocketops.toml"]
            .as_str()
            .unwrap()
            .contains("[ha]")
    );
}

/// The paths a row of the map's table names: `dir/file.rs`, `dir/{a,b}.rs`, and bare `file.rs`
/// after a path in the same row (a sibling of it).
fn map_paths(row: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dir = String::new();
    for code in row.split('`').skip(1).step_by(2) {
        let expanded: Vec<String> = match (code.find('{'), code.find('}')) {
            (Some(a), Some(b)) if a < b => code[a + 1..b]
                .split(',')
                .map(|x| format!("{}{}{}", &code[..a], x.trim(), &code[b + 1..]))
                .collect(),
            _ => vec![code.to_string()],
        };
        for p in expanded {
            if p.starts_with('/') {
                // An API path (`/scale`), not a file.
                continue;
            }
            if let Some((d, _)) = p.rsplit_once('/') {
                dir = d.to_string();
                out.push(p);
            } else if p.ends_with(".rs") && !dir.is_empty() {
                out.push(format!("{dir}/{p}"));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root()).unwrap().display().to_string();
            out.push(rel);
        }
    }
}

#[test]
fn every_source_file_of_the_bot_and_the_simulators_has_a_row_in_the_map_and_every_row_exists() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let map = doc
        .split("## The map")
        .nth(1)
        .expect("docs/architecture.md has a section `## The map`");
    let named: BTreeSet<String> = map
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|'))
        .flat_map(map_paths)
        .collect();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("sim/src"), &mut files);
    // A module's unit tests (`tests.rs` beside it) belong to its row.
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| !f.ends_with("/tests.rs") && !named.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "files with no row in the map of docs/architecture.md: {missing:?}"
    );
    let stale: Vec<&String> = named
        .iter()
        .filter(|p| !p.contains('*') && !root().join(p).exists())
        .collect();
    assert!(
        stale.is_empty(),
        "the map names paths that do not exist: {stale:?}"
    );
}
