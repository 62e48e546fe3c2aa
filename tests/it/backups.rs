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
    w.kube()
        .create(
            "jobs",
            "test",
            json!({"metadata": {"name": "mongodb-backup-29000000", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "mongodb-backup", "uid": cj["metadata"]["uid"], "controller": true}]},
                   "spec": cj["spec"]["jobTemplate"]["spec"]}),
        )
        .unwrap();
    let started = tokio::time::Instant::now();
    loop {
        let before = bot_texts(&w.sim.messages("#ops").unwrap()).len();
        w.sim.post("alice", "#ops", "/backup list test").unwrap();
        let msgs = w
            .wait_for("#ops", "the list", |m| bot_texts(m).len() > before)
            .await;
        if bot_texts(&msgs)
            .last()
            .is_some_and(|t| t.contains("schedule (cronjob mongodb-backup)"))
        {
            break;
        }
        assert!(
            started.elapsed() < crate::support::PATIENCE,
            "the scheduled backup never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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
