//! Failure alerts end to end: faults in the Kubernetes simulator → incidents → what #alerts shows.

use std::time::Duration;

use rocketops::cluster::Cluster;
use rocketops::sandbox::kube::JobScript;
use serde_json::{Value, json};

use crate::support::{World, bot_texts};

fn alert_config(w: &World) -> rocketops::config::Config {
    let mut c = w.config();
    c.alerts.check_every = Duration::from_millis(200);
    c
}

fn alert_messages(w: &World) -> Vec<Value> {
    w.sim
        .messages("#alerts")
        .unwrap()
        .into_iter()
        .filter(|m| m["u"]["username"] == "rocketops" && m.get("tmid").is_none())
        .collect()
}

async fn test_cluster(w: &World) -> Cluster {
    Cluster::from_kubeconfig(&w.kubeconfig(), Some("test"), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backup_cronjob_alerts_once_counts_repeats_and_resolves_on_success() {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    let c = test_cluster(&w).await;
    w.kube().script_job(
        "mongodb-backup",
        JobScript {
            exit_code: 1,
            log: vec![
                "connecting to mongodb://admin:s3cr3tpw@mongodb-0:27017".into(),
                "error: authentication failed".into(),
            ],
            ..JobScript::default()
        },
    );
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-28000001")
        .await
        .unwrap();
    let alert = w
        .wait_bot_text("#alerts", "the alert", |t| {
            t.contains("cronjob/mongodb-backup JobFailed")
        })
        .await;
    assert!(
        alert.contains("authentication failed") && !alert.contains("s3cr3tpw"),
        "log tail, redacted: {alert}"
    );
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-28000002")
        .await
        .unwrap();
    w.wait_for("#alerts", "the counter", |m| {
        bot_texts(m).iter().any(|t| t.contains("(×2)"))
    })
    .await;
    assert_eq!(alert_messages(&w).len(), 1, "one alert per incident");
    w.kube().script_job("mongodb-backup", JobScript::default());
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-28000003")
        .await
        .unwrap();
    let msgs = w
        .wait_for("#alerts", "resolved", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.starts_with("✅ Resolved after"))
        })
        .await;
    let reply = msgs
        .iter()
        .find(|m| {
            m["msg"]
                .as_str()
                .unwrap_or_default()
                .starts_with("✅ Resolved")
        })
        .unwrap();
    assert_eq!(
        reply["tmid"],
        alert_messages(&w)[0]["_id"],
        "in the alert's thread"
    );
    assert!(
        alert_messages(&w)[0]["msg"]
            .as_str()
            .unwrap()
            .contains("✅ resolved:")
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_pod_alerts_survives_a_bot_restart_without_duplicates_and_resolves() {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    let c = test_cluster(&w).await;
    let repo = rocketops::sandbox::kube::seed::ROCKETCHAT_REPO;
    c.set_image(
        "rocketchat",
        "rocketchat",
        &format!("{repo}:7.0.0-crash"),
        "bad build",
    )
    .await
    .unwrap();
    w.wait_for("#alerts", "crash alert", |m| {
        bot_texts(m).iter().any(|t| t.contains("CrashLoopBackOff"))
    })
    .await;
    let before = alert_messages(&w).len();
    w.stop_bot().await;
    w.start_bot_with(alert_config(&w)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        alert_messages(&w).len(),
        before,
        "the restarted bot remembers the incident"
    );
    c.set_image("rocketchat", "rocketchat", &format!("{repo}:6.5.0"), "fix")
        .await
        .unwrap();
    w.wait_for("#alerts", "resolved", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("✅ Resolved after"))
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_failing_pods_post_a_bounded_number_of_alerts_and_a_summary() {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    w.kube()
        .create(
            "deployments",
            "test",
            json!({"metadata": {"name": "flood"}, "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "flood"}},
                   "template": {"metadata": {"labels": {"app": "flood"}}, "spec": {"containers": [{"name": "f", "image": "flood:1-crash"}]}}}}),
        )
        .unwrap();
    let msgs = w
        .wait_for("#alerts", "the summary", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.contains("more alerts were held back"))
        })
        .await;
    let posted = bot_texts(&msgs);
    assert!(
        posted.len() <= 10,
        "a failing cluster cannot flood the channel: {} messages",
        posted.len()
    );
    let summary = posted.iter().find(|t| t.contains("held back")).unwrap();
    let held: u32 = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(held >= 90, "{summary}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_that_has_not_succeeded_for_two_intervals_says_backups_stopped() {
    let mut w = World::with_cluster().await;
    let five_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(5))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    w.kube()
        .create(
            "cronjobs",
            "test",
            json!({"metadata": {"name": "nightly-dump"}, "spec": {"schedule": "0 * * * *", "suspend": true,
                   "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "d", "image": "mongo:7.0"}]}}}}}}),
        )
        .unwrap();
    let kc = kube::config::Kubeconfig::read_from(w.kubeconfig()).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some("test".into()),
        ..Default::default()
    };
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap(),
    )
    .unwrap();
    let api: kube::Api<k8s_openapi::api::batch::v1::CronJob> =
        kube::Api::namespaced(client, "test");
    api.patch_status(
        "nightly-dump",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({"status": {"lastSuccessfulTime": five_hours_ago}})),
    )
    .await
    .unwrap();
    w.start_bot_with(alert_config(&w)).await;
    let msgs = w
        .wait_for("#alerts", "backups stopped", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.contains("nightly-dump BackupsStopped"))
        })
        .await;
    assert!(
        bot_texts(&msgs)
            .iter()
            .any(|t| t.contains("backups stopped"))
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_holds_alerts_back_until_it_ends_and_alerts_list_shows_them() {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    w.sim
        .post("alice", "#ops", "/alerts mute test 3s planned work")
        .unwrap();
    w.wait_for("#ops", "mute", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("🔕 Alerts for test are muted"))
    })
    .await;
    let c = test_cluster(&w).await;
    w.kube().script_job(
        "mongodb-backup",
        JobScript {
            exit_code: 1,
            ..JobScript::default()
        },
    );
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-muted")
        .await
        .unwrap();
    c.wait_job("mongodb-backup-muted", Duration::from_secs(10))
        .await
        .unwrap();
    // The incident is recorded (and listed) while the mute keeps it out of #alerts: within the
    // 3 s mute, hence a deadline of its own rather than the tests' patience.
    let started = tokio::time::Instant::now();
    loop {
        let before = bot_texts(&w.sim.messages("#ops").unwrap()).len();
        w.sim.post("alice", "#ops", "/alerts list").unwrap();
        let msgs = w
            .wait_for("#ops", "the list", |m| bot_texts(m).len() > before)
            .await;
        if bot_texts(&msgs)
            .last()
            .is_some_and(|t| t.contains("cronjob/mongodb-backup JobFailed"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the incident was not recorded in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(alert_messages(&w).is_empty(), "muted: nothing posted yet");
    w.wait_for("#alerts", "the alert after the mute", |m| {
        bot_texts(m).iter().any(|t| t.contains("JobFailed"))
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_also_reach_the_incoming_webhook_once_despite_a_failed_attempt() {
    let mut w = World::with_cluster().await;
    // The integration is made as an administrator would, through the simulator's control API.
    let made: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/_sim/webhook", w.sim.url()))
        .json(&serde_json::json!({"room": "#alerts", "user": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook = made["url"].as_str().unwrap().to_string();
    w.sim.fail_webhooks(1);
    let mut config = alert_config(&w);
    config.alerts.webhook_url = Some(rocketops::config::Secret::new(hook));
    w.start_bot_with(config).await;
    let c = test_cluster(&w).await;
    w.kube().script_job(
        "mongodb-backup",
        JobScript {
            exit_code: 1,
            ..JobScript::default()
        },
    );
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-hooked")
        .await
        .unwrap();
    let by_hook = |m: &[Value]| -> Vec<String> {
        m.iter()
            .filter(|m| m["u"]["username"] == "admin")
            .map(|m| m["msg"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let msgs = w
        .wait_for("#alerts", "the webhook's copy", |m| {
            by_hook(m).iter().any(|t| t.contains("JobFailed"))
        })
        .await;
    assert_eq!(
        by_hook(&msgs).len(),
        1,
        "retried after the failure, delivered once"
    );
    w.kube().script_job("mongodb-backup", JobScript::default());
    c.job_from_cronjob("mongodb-backup", "mongodb-backup-hooked-ok")
        .await
        .unwrap();
    let msgs = w
        .wait_for("#alerts", "the webhook's resolved", |m| {
            by_hook(m).iter().any(|t| t.contains("resolved after"))
        })
        .await;
    assert_eq!(by_hook(&msgs).len(), 2);
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_warning_event_alerts_as_a_warning_and_others_do_not() {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    let event = |name: &str, reason: &str| {
        json!({"metadata": {"name": name}, "type": "Warning", "reason": reason, "message": format!("{reason} on mongodb-0"),
               "involvedObject": {"kind": "Pod", "name": "mongodb-0", "namespace": "test"}})
    };
    w.kube()
        .create("events", "test", event("ev-ignored", "SomethingHarmless"))
        .unwrap();
    w.kube()
        .create("events", "test", event("ev-mount", "FailedMount"))
        .unwrap();
    let msgs = w
        .wait_for("#alerts", "the warning", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.contains("pod/mongodb-0 FailedMount"))
        })
        .await;
    assert!(
        !bot_texts(&msgs)
            .iter()
            .any(|t| t.contains("SomethingHarmless"))
    );
    assert!(
        !bot_texts(&msgs).iter().any(|t| t.contains("@here")),
        "warnings do not page"
    );
    w.stop_bot().await;
}

/// A world whose test and prod share one API server and one context: the bot watches them with
/// one cluster-wide watch per kind; `other` is a namespace it does not manage.
async fn shared_server_world() -> (World, rocketops::config::Config) {
    let w = World::with_cluster_running(None, &["test", "prod", "other"]).await;
    let mut c = alert_config(&w);
    c.environments.get_mut("prod").unwrap().context = Some("test".into());
    (w, c)
}

async fn crash(w: &World, context: &str) {
    let c = Cluster::from_kubeconfig(&w.kubeconfig(), Some(context), None)
        .await
        .unwrap();
    let repo = rocketops::sandbox::kube::seed::ROCKETCHAT_REPO;
    c.set_image(
        "rocketchat",
        "rocketchat",
        &format!("{repo}:7.0.0-crash"),
        "bad build",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_on_one_api_server_share_one_watch_per_kind_and_unmanaged_namespaces_stay_quiet()
 {
    let (mut w, c) = shared_server_world().await;
    w.start_bot_with(c).await;
    // One watch per kind across the cluster, none per namespace.
    let open = w
        .wait_for("#ops", "the watches", |_| {
            w.kube()
                .open_watches()
                .keys()
                .filter(|(_, ns)| ns.is_none())
                .count()
                >= 6
        })
        .await;
    drop(open);
    let watches = w.kube().open_watches();
    assert!(
        watches.keys().all(|(_, ns)| ns.is_none()),
        "only cluster-wide watches: {watches:?}"
    );
    for kind in [
        "pods",
        "jobs",
        "deployments",
        "statefulsets",
        "cronjobs",
        "events",
    ] {
        assert_eq!(
            watches.get(&(kind.to_string(), None)),
            Some(&1),
            "{kind}: {watches:?}"
        );
    }
    // A crash in an unmanaged namespace says nothing; one in prod is told, named as prod.
    crash(&w, "other").await;
    crash(&w, "prod").await;
    let alert = w
        .wait_bot_text("#alerts", "the crash alert", |t| {
            t.contains("CrashLoopBackOff")
        })
        .await;
    assert!(alert.contains("prod"), "{alert}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let texts = bot_texts(&alert_messages(&w));
    assert!(texts.iter().all(|t| !t.contains("other")), "{texts:?}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cluster_wide_read_the_bot_watches_each_namespace_and_still_alerts() {
    let (mut w, c) = shared_server_world().await;
    // As a namespaced Role grants: pods only per namespace.
    w.kube().revoke_cluster_wide("pods");
    w.start_bot_with(c).await;
    w.wait_for("#ops", "the per-namespace pod watches", |_| {
        let open = w.kube().open_watches();
        open.contains_key(&("pods".to_string(), Some("test".to_string())))
            && open.contains_key(&("pods".to_string(), Some("prod".to_string())))
    })
    .await;
    let open = w.kube().open_watches();
    assert!(!open.contains_key(&("pods".to_string(), Some("other".to_string()))));
    assert_eq!(open.get(&("jobs".to_string(), None)), Some(&1), "{open:?}");
    crash(&w, "prod").await;
    let alert = w
        .wait_bot_text("#alerts", "the crash alert", |t| {
            t.contains("CrashLoopBackOff")
        })
        .await;
    assert!(alert.contains("prod"), "{alert}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_refused_after_its_permission_is_removed_raises_one_incident_naming_it_and_resolves()
 {
    let mut w = World::with_cluster().await;
    w.start_bot_with(alert_config(&w)).await;
    w.wait_for("#ops", "the pod watches", |_| {
        w.kube()
            .open_watches()
            .contains_key(&("pods".to_string(), Some("prod".to_string())))
    })
    .await;
    // The Role loses pods: every re-list is refused with 403 from now on.
    w.kube().revoke_permission("pods", "list");
    w.kube().revoke_permission("pods", "watch");
    let alert = w
        .wait_bot_text("#alerts", "the refused-watch incident", |t| {
            t.contains("watch/pods")
        })
        .await;
    assert!(
        alert.contains("may no longer list and watch pods")
            && alert.contains("`list` and `watch` on `pods`"),
        "{alert}"
    );
    // The watcher backs off rather than spinning, and says it once per environment: both
    // environments' incidents arrive (however loaded the machine), and a while later no more.
    let refused = |m: &[serde_json::Value]| {
        bot_texts(m)
            .iter()
            .filter(|t| t.contains("watch/pods"))
            .count()
    };
    w.wait_for("#alerts", "one incident each for test and prod", |m| {
        refused(m) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        refused(&alert_messages(&w)),
        2,
        "one incident each for test and prod"
    );
    w.kube().restore_permission("pods", "list");
    w.kube().restore_permission("pods", "watch");
    w.wait_for("#alerts", "resolved", |m| {
        bot_texts(m)
            .iter()
            .filter(|t| t.starts_with("✅ Resolved after"))
            .count()
            >= 2
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_the_store_cannot_write_is_logged_and_counted_not_dropped_silently() {
    let mut w = World::with_cluster().await;
    let store = w.start_bot_sharing_store(alert_config(&w)).await;
    store.fail_next_writes(
        rocketops::store::Tree::Incidents,
        rocketops::store::WriteOp::Put,
        1_000,
    );
    w.kube().script_job(
        "nightly-export",
        JobScript {
            exit_code: 1,
            ..JobScript::default()
        },
    );
    w.kube()
        .create(
            "jobs",
            "test",
            json!({"metadata": {"name": "nightly-export"},
                   "spec": {"template": {"spec": {"restartPolicy": "Never",
                            "containers": [{"name": "export", "image": "busybox"}]}}}}),
        )
        .unwrap();
    w.wait_bot_text("#alerts", "the alert", |t| t.contains("nightly-export"))
        .await;
    let addr = w.telemetry.unwrap();
    rocketops::tls::install_crypto_provider();
    crate::support::eventually(
        "a failed incident write counted in /metrics",
        Duration::from_millis(50),
        || async {
            let metrics = reqwest::get(format!("http://{addr}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metrics
                .lines()
                .find(|l| l.starts_with("rocketops_store_write_failures_total{tree=\"incidents\"}"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        },
    )
    .await;
    w.stop_bot().await;
}
