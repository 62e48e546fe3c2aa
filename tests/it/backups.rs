//! Backups through chat and the cluster's own CronJob: the catalog, `backup list`, failures.

use serde_json::json;

use rocketops::sandbox::kube::JobScript;

use crate::support::{World, bot_texts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_runs_the_cronjobs_template_and_the_catalog_and_status_show_it() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    assert!(
        done.contains("✓ backup") && done.contains("48.2 MB"),
        "{done}"
    );
    let job = w
        .kube()
        .list("jobs", Some("test"))
        .into_iter()
        .find(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("mongodb-backup-manual-")
        })
        .unwrap();
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["name"],
        "mongodb-backup"
    );
    w.sim.post("alice", "#ops", "/backup list test").unwrap();
    let list = w
        .wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of test*"))
        .await;
    assert!(
        list.contains("48.2 MB") && list.contains("@alice (#1)") && list.contains("verified never"),
        "{list}"
    );
    w.sim.post("alice", "#ops", "/status test").unwrap();
    let msgs = w
        .wait_for("#ops", "status", |m| {
            bot_texts(m).iter().any(|t| t.contains("last backup"))
        })
        .await;
    assert!(
        bot_texts(&msgs)
            .iter()
            .any(|t| t.contains("last backup") && t.contains("(48.2 MB)"))
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_the_clusters_cronjob_takes_is_catalogued_as_scheduled() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    let cj = w.kube().get("cronjobs", "test", "mongodb-backup").unwrap();
    // As the CronJob controller creates a scheduled run.
    w.kube()
        .create_as(
            "jobs",
            "test",
            json!({"metadata": {"name": "mongodb-backup-29000000", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "mongodb-backup", "uid": cj["metadata"]["uid"], "controller": true}]},
                   "spec": cj["spec"]["jobTemplate"]["spec"]}),
            "kube-controller-manager",
        )
        .unwrap();
    list_until(&w, "the scheduled backup", |t| {
        t.contains("schedule (cronjob mongodb-backup)")
    })
    .await;
    w.stop_bot().await;
}

/// Asks for `backup list test` until the answer satisfies `done`; returns it.
async fn list_until(w: &World, what: &str, done: impl Fn(&str) -> bool) -> String {
    crate::support::eventually(
        &format!("{what} in the backup list"),
        std::time::Duration::from_millis(200),
        || async {
            let before = bot_texts(&w.sim.messages("#ops").unwrap()).len();
            w.sim.post("alice", "#ops", "/backup list test").unwrap();
            let msgs = w
                .wait_for("#ops", "the list", |m| bot_texts(m).len() > before)
                .await;
            bot_texts(&msgs).last().filter(|t| done(t)).cloned()
        },
    )
    .await
}

/// Waits until the Job `name` in test has a `Complete` condition.
async fn until_complete(w: &World, name: &str) {
    crate::support::eventually(
        &format!("job {name} to complete"),
        std::time::Duration::from_millis(50),
        || async {
            w.kube()
                .get("jobs", "test", name)
                .is_ok_and(|j| {
                    j["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Complete" && c["status"] == "True")
                    })
                })
                .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_job_naming_the_backup_cronjob_without_its_uid_is_no_backup_and_decides_nothing()
{
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    w.seed_catalog(&[
        ("test", "test-genuine", now - 3_600_000),
        ("test", "test-older", now - 2 * 86_400_000),
    ]);
    let mut c = w.config();
    c.environments.get_mut("test").unwrap().backup.retention =
        rocketops::schedule::retention::Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
    w.start_bot_with(c).await;
    let cj = w.kube().get("cronjobs", "test", "mongodb-backup").unwrap();
    let template = cj["spec"]["jobTemplate"]["spec"].clone();
    // A tenant's Job, named like a scheduled run, whose owner reference names the CronJob but
    // not its uid, and whose container writes a result of its choosing.
    w.kube().script_job(
        "mongodb-backup-2999",
        JobScript {
            termination_message: r#"{"name":"test-forged","bytes":48200000,"sha256":"ab"}"#.into(),
            ..JobScript::default()
        },
    );
    w.kube()
        .create(
            "jobs",
            "test",
            json!({"metadata": {"name": "mongodb-backup-29999999", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                   "name": "mongodb-backup", "uid": "0b7e1f6a-2c3d-4e5f-8a9b-7e4a4e7e4a4e", "controller": true}]},
                   "spec": template}),
        )
        .unwrap();
    until_complete(&w, "mongodb-backup-29999999").await;
    // Then a run of the real CronJob (its uid) that someone made by hand with kubectl: it is
    // listed with who made it, but decides nothing until a verify proves it.
    w.kube().script_job(
        "mongodb-backup-by-hand",
        JobScript {
            termination_message: r#"{"name":"test-by-hand","bytes":1000,"sha256":"cd"}"#.into(),
            ..JobScript::default()
        },
    );
    w.kube()
        .create(
            "jobs",
            "test",
            json!({"metadata": {"name": "mongodb-backup-by-hand",
                   "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                   "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "mongodb-backup",
                                        "uid": cj["metadata"]["uid"], "controller": true}]},
                   "spec": cj["spec"]["jobTemplate"]["spec"]}),
        )
        .unwrap();
    // Watch events come in order: once the later Job is listed, the forged one was seen.
    let list = list_until(&w, "the run made by hand", |t| t.contains("test-by-hand")).await;
    assert!(
        !list.contains("test-forged") && !list.contains("mongodb-backup-29999999"),
        "{list}"
    );
    assert!(
        list.contains("manual run of cronjob mongodb-backup by kubectl-create")
            && list.contains("not used for `latest` or retention until verified"),
        "{list}"
    );
    w.sim.post("alice", "#ops", "/backup prune test").unwrap();
    let pruned = w
        .wait_bot_text("#ops", "the prune", |t| {
            t.contains("backup prune test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        pruned.starts_with("✅") && pruned.contains("removed 1: test-older; kept 1"),
        "{pruned}"
    );
    let list = list_until(&w, "the list after the prune", |t| {
        !t.contains("test-older")
    })
    .await;
    assert!(
        list.contains("test-genuine") && list.contains("test-by-hand"),
        "{list}"
    );
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let (question, _) = w.confirmation("#ops").await;
    assert!(
        question.contains("test's backup `test-genuine`"),
        "{question}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_only_carries_the_verify_jobs_name_label_does_not_turn_a_failed_verify_into_a_success()
 {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    // The verify finds a mismatch, and takes a few seconds to say so.
    w.kube().script_job(
        "mongodb-verify",
        JobScript {
            runtime: std::time::Duration::from_secs(3),
            termination_message: r#"{"ok":false,"restore_seconds":40,"collections":57,"documents":9,"mismatches":["rocketchat.rocketchat_message 9/120431"]}"#.into(),
            ..JobScript::default()
        },
    );
    // A tenant's own pod says everything matched.
    w.kube().script_job(
        "lookalike",
        JobScript {
            termination_message:
                r#"{"ok":true,"restore_seconds":41,"collections":57,"documents":120743}"#.into(),
            ..JobScript::default()
        },
    );
    w.sim.post("alice", "#ops", "/verify test").unwrap();
    let job = crate::support::eventually(
        "the verify pod",
        std::time::Duration::from_millis(20),
        || async {
            w.kube()
                .list("pods", Some("test"))
                .into_iter()
                .find(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("mongodb-verify-"))
                })
                .and_then(|p| {
                    p["metadata"]["labels"]["batch.kubernetes.io/job-name"]
                        .as_str()
                        .map(str::to_string)
                })
        },
    )
    .await;
    // Creation times have whole seconds: the tenant's pod is the newest with the label.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    w.kube()
        .create(
            "pods",
            "test",
            json!({"metadata": {"name": "lookalike", "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
                   "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .unwrap();
    let done = w
        .wait_bot_text("#ops", "the verify", |t| {
            t.contains("#2 verify test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("❌")
            && done.contains("does not match its manifest: rocketchat.rocketchat_message 9/120431")
            && !done.contains("120743 documents match"),
        "{done}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_whose_catalog_cannot_forget_the_deleted_backups_fails_and_nothing_restores_them() {
    let mut w = World::with_cluster().await;
    let day = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    let at = |d: i64| now - d * day - 1000;
    let name = |d: i64| {
        let t = chrono::DateTime::from_timestamp_millis(at(d)).unwrap();
        format!("test-{}", t.format("%Y%m%dT%H%M%SZ"))
    };
    let (d0, d1, d2) = (name(0), name(1), name(2));
    w.seed_catalog(&[
        ("test", &d0, at(0)),
        ("test", &d1, at(1)),
        ("test", &d2, at(2)),
    ]);
    let mut c = w.config();
    c.environments.get_mut("test").unwrap().backup.retention =
        rocketops::schedule::retention::Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
    let store = w.start_bot_sharing_store(c).await;
    // The disk under the catalog fails just as the prune Job has deleted the archives.
    store.fail_next_writes(
        rocketops::store::Tree::Backups,
        rocketops::store::WriteOp::Remove,
        2,
    );
    w.sim.post("alice", "#ops", "/backup prune test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the prune", |t| {
            t.contains("backup prune test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("❌")
            && done.contains(&format!(
                "the prune job deleted 2 ({d1}, {d2}), but the catalog could not forget {d1}, {d2}"
            )),
        "{done}"
    );
    let list = list_until(&w, "the marks", |t| t.contains("being removed by a prune")).await;
    assert!(
        list.contains(&format!("`{d1}` · 1.0 MB · 1 d ago · schedule (cronjob mongodb-backup) · verified never · being removed by a prune")),
        "{list}"
    );
    // Nothing restores a backup whose archive is gone.
    w.sim
        .post("alice", "#ops", &format!("/restore test {d1}"))
        .unwrap();
    let answer = w
        .wait_bot_text("#ops", "the answer", |t| {
            t.contains(&format!("test's backup `{d1}`")) || t.contains(&format!("is called `{d1}`"))
        })
        .await;
    assert!(
        answer.contains(&format!("`{d1}` (not in the catalog)")) || answer.contains("is called"),
        "{answer}"
    );
    // Once the catalog can write again, the next prune forgets them.
    w.sim.post("alice", "#ops", "/backup prune test").unwrap();
    let again = w
        .wait_bot_text("#ops", "the second prune", |t| {
            // The refused restore took no operation number: this is the second operation.
            t.contains("#2 backup prune test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(again.starts_with("✅"), "{again}");
    let list = list_until(&w, "the list", |t| !t.contains(&d1)).await;
    assert!(list.contains(&d0) && !list.contains(&d2), "{list}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backup_reports_a_redacted_log_tail_and_alerts() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.kube().script_job(
        "mongodb-backup",
        JobScript {
            exit_code: 1,
            log: vec![
                "mongodump --uri mongodb://backup:hunter22@mongodb:27017".into(),
                "Failed: error connecting to db server".into(),
            ],
            ..JobScript::default()
        },
    );
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let text = w
        .wait_bot_text("#ops", "the failure", |t| t.starts_with("❌"))
        .await;
    assert!(
        text.contains("error connecting to db server") && !text.contains("hunter22"),
        "{text}"
    );
    w.wait_for("#alerts", "the alert", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.contains("backup now test") || t.contains("JobFailed"))
    })
    .await;
    w.stop_bot().await;
}

/// Waits for `env`'s backup report in #ops; returns the message (text and attachments).
async fn report_message(w: &World, env: &str) -> serde_json::Value {
    let prefix = format!("📋 *Backup report for {env}*");
    let is_report =
        |m: &serde_json::Value| m["msg"].as_str().is_some_and(|t| t.starts_with(&prefix));
    let msgs = w
        .wait_for("#ops", "the report", |m| m.iter().any(is_report))
        .await;
    msgs.into_iter().find(|m| is_report(m)).unwrap()
}

fn job_env(job: &serde_json::Value, var: &str) -> String {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == var)
        .and_then(|v| v["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn job_named(w: &World, ns: &str, prefix: &str) -> serde_json::Value {
    w.kube()
        .list("jobs", Some(ns))
        .into_iter()
        .find(|j| j["metadata"]["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no job {prefix}* in {ns}"))
}

/// The name of the Job (and so the backup) an operation made, found by its prefix.
fn made(w: &World, ns: &str, prefix: &str) -> String {
    job_named(w, ns, prefix)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What happened to the app and the restore Job, in order, as the cluster saw it.
fn watch_restore(w: &World) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rx = w.kube().changes();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(c) = rx.recv().await {
            if c.namespace != "test" {
                continue;
            }
            let name = c.object["metadata"]["name"].as_str().unwrap_or_default();
            let event = match (c.plural, c.kind) {
                ("deployments", _) => format!(
                    "replicas {}",
                    c.object["spec"]["replicas"].as_i64().unwrap_or(-1)
                ),
                ("horizontalpodautoscalers", k) => format!("hpa {k}"),
                ("jobs", "ADDED") => format!("job {name}"),
                _ => continue,
            };
            let mut v = out.lock().unwrap();
            if v.last() != Some(&event) {
                v.push(event);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_test_latest_takes_a_safety_backup_scales_to_zero_restores_and_puts_everything_back()
 {
    let mut w = World::with_cluster().await;
    w.add_test_autoscaler();
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    let manual = made(&w, "test", "mongodb-backup-manual-1-");
    let seen = watch_restore(&w);
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let question = w.confirm("alice", "#ops").await;
    assert!(
        question.contains(&format!("restore test's backup `{manual}` (48.2 MB"))
            && question.contains("(autoscaler rocketchat removed)")
            && question.contains("restore autoscaler rocketchat")
            && question.contains("safety backup of the current data"),
        "{question}"
    );
    let done = w
        .wait_bot_text("#ops", "the restore", |t| {
            t.contains("restore test latest") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(done.starts_with("✅"), "{done}");
    for step in [
        "✓ safety backup",
        "✓ scale down",
        "recorded 3 replicas and autoscaler rocketchat (removed)",
        "✓ restore",
        &format!("{manual} of test restored in 38 s (simulated: no data moved"),
        "✓ scale up",
        "rocketchat back at 3 replicas, all ready, autoscaler rocketchat restored",
        "✓ smoke test",
    ] {
        assert!(done.contains(step), "{step} missing in {done}");
    }
    // The restore used the backup named at the start, not the safety backup taken just before.
    let restore = job_named(&w, "test", "mongodb-restore-");
    assert_eq!(job_env(&restore, "NAME"), manual);
    let safety = made(&w, "test", "mongodb-backup-safety-");
    assert!(safety.starts_with("mongodb-backup-safety-2-"), "{safety}");
    // Order: autoscaler off, scale to 0, restore Job, scale back, autoscaler back.
    let events = seen.lock().unwrap().clone();
    let pos = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} not in {events:?}"))
    };
    assert!(pos("hpa DELETED") < pos("replicas 0"), "{events:?}");
    let restore_job = format!("job {}", made(&w, "test", "mongodb-restore-2-"));
    assert!(pos("replicas 0") < pos(&restore_job), "{events:?}");
    let restore_at = pos(&restore_job);
    let back = restore_at
        + events[restore_at..]
            .iter()
            .position(|x| x == "replicas 3")
            .unwrap();
    assert!(back < pos("hpa ADDED"), "{events:?}");
    let d = w.kube().get("deployments", "test", "rocketchat").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    let hpa = w
        .kube()
        .get("horizontalpodautoscalers", "test", "rocketchat")
        .unwrap();
    assert_eq!(
        (
            &hpa["spec"]["minReplicas"],
            &hpa["spec"]["maxReplicas"],
            &hpa["metadata"]["labels"]["team"]
        ),
        (&json!(2), &json!(6), &json!("chat"))
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_restore_job_still_scales_the_app_back_restores_the_autoscaler_and_says_so() {
    let mut w = World::with_cluster().await;
    w.add_test_autoscaler();
    w.kube().script_job(
        "mongodb-restore",
        JobScript {
            exit_code: 1,
            log: vec![
                "mongorestore --uri mongodb://restore:s3cret-pw@mongodb:27017".into(),
                "Failed: rocketchat.users: error restoring: E11000 duplicate key".into(),
            ],
            ..JobScript::default()
        },
    );
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    let manual = made(&w, "test", "mongodb-backup-manual-1-");
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    w.confirm("alice", "#ops").await;
    let done = w
        .wait_bot_text("#ops", "the failed restore", |t| {
            t.contains("restore test latest") && t.starts_with("❌")
        })
        .await;
    for part in [
        "✗ restore",
        "E11000 duplicate key",
        "✓ recover",
        "rocketchat back at 3 replicas, all ready, autoscaler rocketchat restored",
        &format!(
            "the restore of `{manual}` did not finish, so test's database may hold part of it"
        ),
        &format!(
            "The safety backup `{}` holds test's data from before the restore.",
            made(&w, "test", "mongodb-backup-safety-2-")
        ),
    ] {
        assert!(done.contains(part), "{part} missing in {done}");
    }
    assert!(!done.contains("s3cret-pw"), "{done}");
    assert!(!done.contains("✓ scale up"), "{done}");
    let d = w.kube().get("deployments", "test", "rocketchat").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(
        w.kube()
            .get("horizontalpodautoscalers", "test", "rocketchat")
            .is_ok()
    );
    w.wait_for("#alerts", "the alert", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.contains("restore test latest") && t.contains("failed"))
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_test_latest_from_prod_uses_prods_newest_backup_and_volume() {
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    w.seed_catalog(&[
        ("prod", "prod-old", now - 2 * 86_400_000),
        ("prod", "prod-newest", now - 3_600_000),
        ("test", "test-newer-than-prods", now - 60_000),
    ]);
    let mut c = w.config();
    c.environments.get_mut("prod").unwrap().backup.claim = Some("prod-backups".into());
    w.start_bot_with(c).await;
    w.sim
        .post("alice", "#ops", "/restore test latest from prod")
        .unwrap();
    let question = w.confirm("alice", "#ops").await;
    assert!(
        question.contains("prod's backup `prod-newest`"),
        "{question}"
    );
    let done = w
        .wait_bot_text("#ops", "the restore", |t| {
            t.contains("restore test latest from prod")
                && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("✅") && done.contains("prod-newest of prod restored"),
        "{done}"
    );
    let restore = job_named(&w, "test", "mongodb-restore-");
    assert_eq!(job_env(&restore, "NAME"), "prod-newest");
    assert_eq!(
        restore["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "prod-backups"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_test_restores_into_a_throwaway_database_and_the_catalog_records_the_result() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    w.sim.post("alice", "#ops", "/verify test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the verify", |t| {
            t.contains("#2 verify test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    let manual = made(&w, "test", "mongodb-backup-manual-1-");
    assert!(
        done.starts_with("✅")
            && done.contains(&format!("{manual} restored in 41 s into a throwaway database; 57 collections, 120743 documents match its manifest"))
            // The simulator's figures are marked as made up, through the Job's own note.
            && done.contains("(simulated: no data moved, the figures are made up)"),
        "{done}"
    );
    let job = job_named(&w, "test", "mongodb-verify-");
    assert_eq!(job_env(&job, "NAME"), manual);
    w.sim.post("alice", "#ops", "/backup list test").unwrap();
    let list = w
        .wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of test*"))
        .await;
    assert!(list.contains("verified ✓"), "{list}");
    w.sim.post("alice", "#ops", "/status test").unwrap();
    let status = w
        .wait_bot_text("#ops", "status", |t| t.contains("last verify"))
        .await;
    assert!(
        status.contains("last verify ✓") && status.contains("(restore 41 s)"),
        "{status}"
    );
    // A copy that does not match its manifest is a failed verification, and says why.
    w.kube().script_job(
        "mongodb-verify",
        JobScript {
            termination_message: r#"{"ok":false,"restore_seconds":40,"collections":57,"documents":9,"mismatches":["rocketchat.rocketchat_message 9/120431"]}"#.into(),
            ..JobScript::default()
        },
    );
    w.sim.post("alice", "#ops", "/verify test latest").unwrap();
    let failed = w
        .wait_bot_text("#ops", "the failed verify", |t| {
            t.contains("#3 verify test latest") && t.starts_with("❌")
        })
        .await;
    assert!(
        failed.contains("does not match its manifest: rocketchat.rocketchat_message 9/120431"),
        "{failed}"
    );
    // The report on demand shows the failed proof in red.
    w.sim.post("alice", "#ops", "/backup report test").unwrap();
    let report = report_message(&w, "test").await;
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .ends_with("🔴 failing: the last test-restore failed"),
        "{report}"
    );
    assert_eq!(report["attachments"][0]["color"], "#f5455c");
    w.sim.post("alice", "#ops", "/backup list test").unwrap();
    let list = w
        .wait_bot_text("#ops", "the list again", |t| {
            t.starts_with("*Backups of test*") && t.contains("✗")
        })
        .await;
    assert!(list.contains("verify failed ✗"), "{list}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_prune_deletes_what_the_retention_plan_drops_and_forgets_it() {
    let mut w = World::with_cluster().await;
    let day = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    let names: Vec<String> = (0..6).map(|d| format!("test-day{d}")).collect();
    let records: Vec<(&str, &str, i64)> = names
        .iter()
        .enumerate()
        .map(|(d, n)| ("test", n.as_str(), now - d as i64 * day - 1000))
        .collect();
    w.seed_catalog(&records);
    let mut c = w.config();
    c.environments.get_mut("test").unwrap().backup.retention =
        rocketops::schedule::retention::Retention {
            daily: 2,
            weekly: 0,
            monthly: 0,
        };
    w.start_bot_with(c).await;
    w.sim.post("alice", "#ops", "/backup prune test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the prune", |t| {
            t.contains("backup prune test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("✅")
            && done.contains("removed 4: test-day2, test-day3, test-day4, test-day5; kept 2"),
        "{done}"
    );
    let job = job_named(&w, "test", "backup-prune-");
    assert_eq!(
        job_env(&job, "NAMES"),
        "test-day2:test-day3:test-day4:test-day5"
    );
    w.sim.post("alice", "#ops", "/backup list test").unwrap();
    let list = w
        .wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of test*"))
        .await;
    assert!(
        list.contains("test-day0") && list.contains("test-day1") && !list.contains("test-day2"),
        "{list}"
    );
    w.stop_bot().await;
}

/// A 6-field cron expression for one moment `secs` from now (UTC).
fn cron_in(secs: i64) -> String {
    use chrono::Timelike;
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs);
    format!("{} {} {} * * *", t.second(), t.minute(), t.hour())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backup_verify_and_report_run_as_the_schedule_through_the_same_engine() {
    let mut w = World::with_cluster().await;
    let mut c = w.config();
    let test = c.environments.get_mut("test").unwrap();
    test.schedule.backup = Some(cron_in(3).into());
    test.schedule.verify = Some(cron_in(5).into());
    test.schedule.report = Some(cron_in(7).into());
    test.backup.report_channel = Some("ops".into());
    w.start_bot_with(c).await;
    let backup = w
        .wait_bot_text("#ops", "the scheduled backup", |t| {
            t.contains("backup now test") && t.starts_with("✅")
        })
        .await;
    assert!(backup.contains("· schedule ·"), "{backup}");
    let verify = w
        .wait_bot_text("#ops", "the scheduled verify", |t| {
            t.contains("verify test") && t.starts_with("✅")
        })
        .await;
    assert!(verify.contains("restored in 41 s"), "{verify}");
    let report = report_message(&w, "test").await;
    assert!(
        report["msg"].as_str().unwrap().contains("✅ healthy"),
        "{report}"
    );
    let a = &report["attachments"][0];
    assert_eq!(a["color"], "#2de0a5");
    assert!(
        a["fields"][0]["value"]
            .as_str()
            .unwrap()
            .contains("48.2 MB · schedule (#1)"),
        "{a}"
    );
    assert!(
        a["fields"][1]["value"].as_str().unwrap().starts_with("✓"),
        "{a}"
    );
    w.sim.post("alice", "#ops", "/schedule list").unwrap();
    let list = w
        .wait_bot_text("#ops", "the schedule list", |t| {
            t.starts_with("*Schedules*")
        })
        .await;
    assert!(
        list.contains("*test* backup") && list.contains("last "),
        "{list}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", w.telemetry.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "rocketops_scheduled_runs_total{env=\"test\",kind=\"backup\",outcome=\"started\"}",
        "rocketops_scheduled_runs_total{env=\"test\",kind=\"report\",outcome=\"started\"}",
        "rocketops_verify_success{env=\"test\"}",
        "rocketops_verify_restore_seconds{env=\"test\"}",
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }
    w.stop_bot().await;
    // The audit log names the schedule as the one who asked.
    let store = w.open_store();
    let audit = store.all_audit().unwrap();
    assert!(
        audit.iter().any(|e| e.user == "(schedule)"
            && e.command == "backup now test"
            && e.decision == "scheduled"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_uploads_a_chart_of_backup_size_and_duration_into_the_room() {
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    w.seed_catalog(&[
        ("prod", "prod-a", now - 3 * day),
        ("prod", "prod-b", now - 2 * day),
        ("prod", "prod-c", now - day),
    ]);
    let mut c = w.config();
    let prod = c.environments.get_mut("prod").unwrap();
    prod.schedule.weekly = Some(cron_in(3).into());
    prod.backup.report_channel = Some("ops".into());
    w.start_bot_with(c).await;
    let msgs = w
        .wait_for("#ops", "the chart", |m| {
            m.iter()
                .any(|m| m["attachments"][0]["image_type"] == "image/png")
        })
        .await;
    let chart = msgs
        .iter()
        .find(|m| m["attachments"][0]["image_type"] == "image/png")
        .unwrap();
    assert!(
        chart["msg"]
            .as_str()
            .unwrap()
            .starts_with("📈 *prod*: 3 backups from"),
        "{chart}"
    );
    // The weekly report includes the daily one.
    assert!(msgs.iter().any(|m| {
        m["msg"]
            .as_str()
            .is_some_and(|t| t.starts_with("📋 *Backup report for prod*"))
    }));
    let link = chart["attachments"][0]["title_link"].as_str().unwrap();
    let id = link.split('/').nth(2).unwrap();
    let (name, content_type, bytes) = w.sim.upload(id).expect("the chart was uploaded");
    assert!(
        name.starts_with("prod-backups-") && name.ends_with(".png"),
        "{name}"
    );
    assert_eq!(content_type, "image/png");
    let info = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG that decodes")
        .info()
        .clone();
    assert_eq!((info.width, info.height), (960, 540));
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_without_a_backup_cronjob_takes_its_backup_from_the_template() {
    let mut w = World::with_cluster().await;
    let mut c = w.config();
    c.environments.get_mut("test").unwrap().backup_cronjob = "no-such-cronjob".into();
    c.environments.get_mut("test").unwrap().backup.claim = Some("mongodb-backup".into());
    w.start_bot_with(c).await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the backup", |t| {
            t.contains("backup now test") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(done.starts_with("✅"), "{done}");
    let job = job_named(&w, "test", "mongodb-backup-manual-");
    assert!(job["metadata"]["ownerReferences"].is_null(), "{job}");
    assert_eq!(job["metadata"]["labels"]["rocketops.io/operation"], "1");
    let name = job_env(&job, "NAME");
    assert!(
        regex::Regex::new(r"^test-\d{8}T\d{6}Z$")
            .unwrap()
            .is_match(&name),
        "{name}"
    );
    assert!(
        done.contains(&format!("test is backed up: `{name}`")),
        "{done}"
    );
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "mongo:7.0");
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "mongodb"
    );
    w.stop_bot().await;
}

/// The scheduled runs in the audit log: (command, slot as the schedule's zone names it).
fn scheduled_runs(w: &World) -> Vec<(String, String)> {
    let store = w.open_store();
    store
        .all_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.user == "(schedule)" && e.decision == "scheduled")
        .map(|e| (e.command, e.reason.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_spring_dst_day_the_schedules_fire_at_the_right_local_times_through_both_simulators()
{
    let mut w = World::with_cluster().await;
    let mut c = w.config();
    let test = c.environments.get_mut("test").unwrap();
    test.schedule.timezone = Some("Europe/Berlin".into());
    test.schedule.backup = Some("30 2 * * *".into()); // 02:30 does not exist on 2026-03-29
    test.schedule.verify = Some("0 4 * * *".into());
    test.schedule.report = Some("0 8 * * *".into());
    test.backup.report_channel = Some("ops".into());
    // 00:00 CET on the day of the change; one scheduled hour per real second.
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-28T23:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    w.start_bot_at(c, rocketops::schedule::Clock::scaled(start, 3600))
        .await;
    w.wait_for("#ops", "the report", |m| {
        m.iter().any(|m| {
            m["msg"]
                .as_str()
                .is_some_and(|t| t.starts_with("📋 *Backup report for test*"))
        })
    })
    .await;
    let texts = bot_texts(&w.sim.messages("#ops").unwrap());
    assert!(
        texts
            .iter()
            .any(|t| t.contains("backup now test") && t.starts_with("✅")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("verify test") && t.starts_with("✅")),
        "{texts:?}"
    );
    w.stop_bot().await;
    assert_eq!(
        scheduled_runs(&w),
        vec![
            (
                "backup now test".to_string(),
                "backup schedule, slot 2026-03-29 03:00 CEST".to_string()
            ),
            (
                "verify test".to_string(),
                "verify schedule, slot 2026-03-29 04:00 CEST".to_string()
            ),
            (
                "report".to_string(),
                "report schedule, slot 2026-03-29 08:00 CEST".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_schedule_missed_for_days_runs_once_when_the_bot_starts() {
    let mut w = World::with_cluster().await;
    {
        let store = w.open_store();
        let three_days_ago = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
        store
            .records()
            .put(
                "test/backup",
                &rocketops::schedule::State {
                    last_run_ms: Some(three_days_ago),
                    since_ms: Some(three_days_ago),
                    paused_by: None,
                },
            )
            .unwrap();
    }
    let mut c = w.config();
    let test = c.environments.get_mut("test").unwrap();
    test.schedule.backup = Some("0 * * * *".into()); // hourly: 72 slots were missed
    test.backup.report_channel = Some("ops".into());
    w.start_bot_with(c).await;
    w.wait_bot_text("#ops", "the made-up backup", |t| {
        t.contains("backup now test") && t.starts_with("✅")
    })
    .await;
    w.stop_bot().await;
    let runs = scheduled_runs(&w);
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_refresh_restores_prods_newest_backup_into_test_as_the_schedule() {
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    w.seed_catalog(&[("prod", "prod-nightly", now - 3_600_000)]);
    let mut c = w.config();
    let test = c.environments.get_mut("test").unwrap();
    test.schedule.refresh = Some(cron_in(3).into());
    test.schedule.refresh_from = Some("prod".into());
    test.backup.report_channel = Some("ops".into());
    w.start_bot_with(c).await;
    let done = w
        .wait_bot_text("#ops", "the refresh", |t| {
            t.contains("restore test latest from prod")
                && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("✅")
            && done.contains("· schedule ·")
            && done.contains("prod-nightly of prod restored"),
        "{done}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_test_restore_holds_the_backups_but_never_blocks_a_change_to_the_app() {
    let mut w = World::with_cluster().await;
    w.seed_catalog(&[(
        "test",
        "test-nightly",
        chrono::Utc::now().timestamp_millis() - 60_000,
    )]);
    w.kube().script_job(
        "mongodb-verify",
        JobScript {
            runtime: std::time::Duration::from_secs(3),
            termination_message: r#"{"ok":true,"restore_seconds":3,"collections":1,"documents":1}"#
                .into(),
            ..JobScript::default()
        },
    );
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/verify test").unwrap();
    w.wait_bot_text("#ops", "the verify under way", |t| t.contains("… verify"))
        .await;
    // The app can still be changed (a rollback or a scale must never wait for a verify) …
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    w.wait_bot_text("#ops", "the scale", |t| {
        t.starts_with("✅") && t.contains("from 3 to 2 replicas")
    })
    .await;
    // … but a second job on the backup volume waits its turn.
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let busy = w
        .wait_bot_text("#ops", "the refusal", |t| t.starts_with("test is busy"))
        .await;
    assert!(busy.starts_with("test is busy with verify #1"), "{busy}");
    w.wait_bot_text("#ops", "the verify's end", |t| {
        t.contains("#1 verify test") && t.starts_with("✅")
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backups_command_lists_the_catalog_and_dry_runs_the_retention_plan_without_chat() {
    let w = World::new().await;
    let day = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    w.seed_catalog(&[
        ("test", "test-d0", now - 1000),
        ("test", "test-d1", now - day - 1000),
        ("test", "test-d2", now - 2 * day - 1000),
    ]);
    let cfg = w.cli_config(
        "[environments.test.backup]\nretention = { daily = 2, weekly = 0, monthly = 0 }\n",
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, list, err) = run(&["backups"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[2].contains("test-d0") && lines[2].contains("verified never"),
        "{list}"
    );
    let (ok, plan, err) = run(&["backups", "plan", "--env", "test"]);
    assert!(ok, "{err}");
    assert!(plan.starts_with("test: keep 2, delete 1"), "{plan}");
    assert!(
        plan.contains("delete") && plan.contains("test-d2"),
        "{plan}"
    );
    let (ok, json, err) = run(&["backups", "plan", "--env", "test", "--json"]);
    assert!(ok, "{err}");
    let kept: Vec<(String, bool)> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["keep"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            ("test-d0".to_string(), true),
            ("test-d1".to_string(), true),
            ("test-d2".to_string(), false)
        ]
    );
    let (ok, report, err) = run(&["backups", "report", "--env", "test"]);
    assert!(ok, "{err}");
    assert!(
        report.starts_with("📋 *Backup report for test*"),
        "{report}"
    );
    let (ok, _, err) = run(&["backups", "plan", "--env", "staging"]);
    assert!(
        !ok && err.contains("`staging` is not a configured environment"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_plan_mentions_an_autoscaler_only_where_the_app_has_one() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let question = w
        .wait_bot_text("#ops", "the question", |t| t.contains("`confirm "))
        .await;
    assert!(
        question
            .contains("scale test/rocketchat to 0, run the restore job, scale back, smoke test")
            && !question.contains("autoscaler"),
        "{question}"
    );
    w.stop_bot().await;
}

/// The op number in the bot's answer that contains `what` and asks for `approve #N`.
async fn approval_op(w: &World, what: &str) -> String {
    let ask = w
        .wait_bot_text("#ops", what, |t| {
            t.contains(what) && t.contains("`approve #")
        })
        .await;
    ask.split("`approve #")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_restore_of_latest_runs_the_backup_its_question_named_not_a_newer_one() {
    let mut w = World::with_cluster().await;
    w.seed_catalog(&[(
        "test",
        "test-nightly",
        chrono::Utc::now().timestamp_millis() - 3_600_000,
    )]);
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let (question, code) = w.confirmation("#ops").await;
    assert!(
        question.contains("restore test's backup `test-nightly`"),
        "{question}"
    );
    // A newer backup of test arrives before the confirmation.
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the newer backup", |t| {
        t.starts_with("✅") && t.contains("backup now test")
    })
    .await;
    let newer = made(&w, "test", "mongodb-backup-manual-");
    w.sim
        .post("alice", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let done = w
        .wait_bot_text("#ops", "the restore", |t| {
            t.contains("restore test latest") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("✅")
            && done.contains("test-nightly of test restored")
            && !done.contains(&newer),
        "{done}"
    );
    let restore = job_named(&w, "test", "mongodb-restore-");
    assert_eq!(job_env(&restore, "NAME"), "test-nightly");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_restore_of_latest_runs_the_backup_its_question_named_not_a_newer_one() {
    let mut w = World::with_cluster().await;
    w.sim.add_user("carol", &["user", "ops"]);
    w.sim.join("carol", "#ops").unwrap();
    w.seed_catalog(&[(
        "test",
        "test-nightly",
        chrono::Utc::now().timestamp_millis() - 3_600_000,
    )]);
    let mut config = w.config();
    config
        .environments
        .get_mut("test")
        .unwrap()
        .policy
        .approvals = 1;
    w.start_bot_with(config).await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let question = w.confirm("alice", "#ops").await;
    assert!(
        question.contains("restore test's backup `test-nightly`"),
        "{question}"
    );
    let restore_op = approval_op(&w, "restore test latest needs a second person").await;
    // While it waits for approval, a newer backup of test is taken (approved too).
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let backup_op = approval_op(&w, "backup now test needs a second person").await;
    w.sim
        .post("carol", "#ops", &format!("/approve #{backup_op}"))
        .unwrap();
    w.wait_bot_text("#ops", "the newer backup", |t| {
        t.starts_with("✅") && t.contains("backup now test")
    })
    .await;
    let newer = made(&w, "test", "mongodb-backup-manual-");
    w.sim
        .post("carol", "#ops", &format!("/approve #{restore_op}"))
        .unwrap();
    let done = w
        .wait_bot_text("#ops", "the restore", |t| {
            t.contains("restore test latest") && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(
        done.starts_with("✅")
            && done.contains("test-nightly of test restored")
            && !done.contains(&newer),
        "{done}"
    );
    let restore = job_named(&w, "test", "mongodb-restore-");
    assert_eq!(job_env(&restore, "NAME"), "test-nightly");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_latest_with_no_backup_known_is_refused_before_asking_to_confirm() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let answer = w
        .wait_bot_text("#ops", "the answer", |t| !t.is_empty())
        .await;
    assert_eq!(
        answer,
        "No backup of test is known; `/backup now test` takes one."
    );
    w.ping_ok("after").await;
    let msgs = w.sim.messages("#ops").unwrap();
    assert!(
        !bot_texts(&msgs).iter().any(|t| t.contains("`confirm ")),
        "nothing to confirm: {:?}",
        bot_texts(&msgs)
    );
    w.stop_bot().await;
}
