//! The trust guarantees, each driven the way an attacker or an on-call engineer found it broken: chat in through the Rocket.Chat simulator, the cluster through the Kubernetes simulator.

use std::time::Duration;

use serde_json::Value;

use crate::support::{PATIENCE, World, bot_texts};

fn replicas(w: &World, env: &str) -> i64 {
    w.kube().get("deployments", env, "rocketchat").unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

fn last_bot_text(msgs: &[Value]) -> String {
    bot_texts(msgs).last().cloned().unwrap_or_default()
}

/// The store's audit rows as the `rocketops audit --json` export prints them.
fn audit_rows(w: &World) -> Vec<Value> {
    let store = w.open_store();
    store
        .all_audit()
        .unwrap()
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_or_thread_reply_to_an_old_command_never_runs_it_again_even_after_the_seen_set_is_gone()
 {
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    config.bot.seen_retention = Duration::from_millis(1);
    w.start_bot_with(config.clone()).await;
    let scale = w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    let scale_id = scale["_id"].as_str().unwrap().to_string();
    w.wait_bot_text("#ops", "the scale", |t| t.starts_with("✅"))
        .await;
    assert_eq!(replicas(&w, "test"), 2);
    w.stop_bot().await;
    // Someone puts the app back at 3 by hand.
    w.kube().set_replicas("test", "rocketchat", 3).unwrap();
    let answers = |w: &World| bot_texts(&w.sim.messages("#ops").unwrap()).len();

    // A restart with a short seen retention: bob reacts to alice's old message.
    w.start_bot_with(config.clone()).await;
    let before = answers(&w);
    w.sim.react("bob", &scale_id, "thumbsup").unwrap();
    w.ping_ok("after-reaction").await;
    assert_eq!(answers(&w), before + 1, "only the sentinel was answered");
    w.stop_bot().await;

    // The store is lost altogether: a thread reply and another reaction re-send the message again.
    std::fs::remove_dir_all(w.store_path()).unwrap();
    w.start_bot_with(config).await;
    let before = answers(&w);
    w.sim
        .post_in("bob", "#ops", "why 2?", Some(&scale_id))
        .unwrap();
    w.sim.react("bob", &scale_id, "eyes").unwrap();
    w.ping_ok("after-reset").await;
    assert_eq!(answers(&w), before + 1, "only the sentinel was answered");
    assert_eq!(replicas(&w, "test"), 3, "the replicas were left alone");
    w.stop_bot().await;
    let scales = audit_rows(&w)
        .into_iter()
        .filter(|r| r["text"].as_str().unwrap_or_default().contains("scale"))
        .count();
    assert_eq!(scales, 0, "the new store audited no scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbooks_own_roles_never_widen_what_the_environment_allows() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    // prod allows only deploy and rollback; migrate says roles = ["ops"] and alice has role ops.
    w.sim.post("alice", "#ops", "/migrate prod 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the refusal", |m| !bot_texts(m).is_empty())
        .await;
    let refusal = last_bot_text(&msgs);
    assert!(
        refusal.starts_with("You may not migrate prod")
            && refusal.contains("default deny")
            && !refusal.contains("confirm"),
        "{refusal}"
    );
    // In test the environment allows everything for role ops, and the runbook agrees.
    w.sim.post("bob", "#ops", "/migrate test 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "bob's refusal", |m| bot_texts(m).len() == 2)
        .await;
    assert!(
        last_bot_text(&msgs).starts_with("You may not migrate test"),
        "{}",
        last_bot_text(&msgs)
    );
    assert!(
        w.kube().list("jobs", Some("prod")).is_empty()
            && w.kube().list("jobs", Some("test")).is_empty(),
        "no Job was created"
    );
    w.stop_bot().await;
}

/// Log lines of a failing Job holding every form of secret the redactor must catch.
fn leaky_log() -> Vec<String> {
    [
        "connecting to redis://:redispass1@redis:6379",
        "+ mongodump -u admin -p ShortFlag2 --gzip",
        "+ mongorestore --password LongFlag3",
        "Authorization: Bearer tok4",
        "MONGO_PASS=envpass5",
        "PGPASSWORD='two words6'",
        "mongodb://admin:p@ss7@mongodb-0:27017/rocketchat",
        "-----BEGIN PRIVATE KEY-----",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC8",
        "-----END PRIVATE KEY-----",
        "{\"password\":",
        "   \"nextline9\"}",
        "uri bW9uZ29kYjovL2FkbWluOmh1bnRlcjJAbW9uZ29kYjoyNzAxNw==",
        "error: authentication failed @all ``` closed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const LEAKED: &[&str] = &[
    "redispass1",
    "ShortFlag2",
    "LongFlag3",
    "tok4",
    "envpass5",
    "two words6",
    "p@ss7",
    "ss7@",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC8",
    "nextline9",
    "bW9uZ29kYjovL2FkbWluOmh1bnRlcjJAbW9uZ29kYjoyNzAxNw",
    "hunter9",
    "tk-abcdef0123456789",
];

/// Whether `text` holds a secret, a working mass mention, or more code fences than it opened itself.
fn unsafe_parts(text: &str) -> Vec<String> {
    let mut bad: Vec<String> = LEAKED
        .iter()
        .filter(|s| text.contains(**s))
        .map(|s| s.to_string())
        .collect();
    for m in ["@all", "@here"] {
        if text.contains(m) && !text.starts_with("@here ") {
            bad.push(m.to_string());
        }
    }
    if !text.matches("```").count().is_multiple_of(2) {
        bad.push("unbalanced code fence".into());
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_events_job_logs_and_api_errors_never_reach_chat_and_mentions_stay_quiet() {
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    config.alerts.check_every = Duration::from_millis(200);
    w.start_bot_with(config).await;

    // A Warning event whose message carries credentials, a mass mention and a closing fence.
    w.kube()
        .create(
            "events",
            "test",
            serde_json::json!({"metadata": {"name": "ev-leak"}, "type": "Warning", "reason": "FailedMount",
                "message": "MountVolume.SetUp failed: password=hunter9 token=tk-abcdef0123456789 @all ``` done",
                "involvedObject": {"kind": "Pod", "name": "mongodb-0", "namespace": "test"}}),
        )
        .unwrap();
    let alert = w
        .wait_bot_text("#alerts", "the event alert", |t| t.contains("FailedMount"))
        .await;
    assert!(unsafe_parts(&alert).is_empty(), "{alert}");
    assert!(alert.contains("MountVolume.SetUp failed"), "{alert}");

    // A backup Job that fails with a leaky log: the progress message shows its tail, redacted.
    w.kube().script_job(
        "mongodb-backup",
        rocketops::sandbox::kube::JobScript {
            exit_code: 1,
            log: leaky_log(),
            ..Default::default()
        },
    );
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let failed = w
        .wait_bot_text("#ops", "the failed backup", |t| t.starts_with("❌"))
        .await;
    assert!(failed.contains("authentication failed"), "{failed}");
    assert!(unsafe_parts(&failed).is_empty(), "{failed}");

    // The API server rejects a write and quotes a secret in its 422 body.
    w.kube().fail_next_writes_saying(
        1,
        422,
        "spec.template.spec.containers[0].env[0].value: Invalid value: password=hunter9 @here",
    );
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    let rejected = w
        .wait_bot_text("#ops", "the rejected scale", |t| {
            t.contains("rejected") || t.contains("Invalid value")
        })
        .await;
    assert!(unsafe_parts(&rejected).is_empty(), "{rejected}");

    // Echoed text is no way round it.
    w.sim
        .post("alice", "#ops", "/ping @all password=hunter9 ```")
        .unwrap();
    let pong = w
        .wait_bot_text("#ops", "the pong", |t| t.starts_with("pong"))
        .await;
    assert!(unsafe_parts(&pong).is_empty(), "{pong}");

    // Every message the bot wrote anywhere is clean.
    for room in ["#ops", "#alerts"] {
        for t in bot_texts(&w.sim.messages(room).unwrap()) {
            assert!(unsafe_parts(&t).is_empty(), "{room}: {t}");
        }
    }
    w.stop_bot().await;
}

async fn test_cluster(w: &World) -> rocketops::cluster::Cluster {
    rocketops::cluster::Cluster::from_kubeconfig(&w.kubeconfig(), Some("test"), None)
        .await
        .unwrap()
}

fn plain_job(name: &str) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

/// A finished Job someone else made, whose termination message claims a backup.
async fn plant_forged_backup_job(w: &World, name: &str) {
    let c = test_cluster(w).await;
    w.kube().script_job(
        name,
        rocketops::sandbox::kube::JobScript {
            termination_message: r#"{"name":"forged-backup","bytes":1,"sha256":"00"}"#.into(),
            ..Default::default()
        },
    );
    c.create_job(&plain_job(name)).await.unwrap();
    c.wait_job(name, Duration::from_secs(15)).await.unwrap();
    w.kube().unscript_job(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_bot_did_not_create_is_never_taken_as_its_own() {
    let mut w = World::with_cluster().await;
    // Planted under the names a fresh store's first operations used to pick.
    for n in ["mongodb-backup-manual-1", "mongodb-backup-manual-2"] {
        plant_forged_backup_job(&w, n).await;
    }
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the backup", |t| {
            t.starts_with("✅") || t.starts_with("❌")
        })
        .await;
    assert!(done.starts_with("✅") && !done.contains("forged"), "{done}");
    w.sim.post("alice", "#ops", "/backup list test").unwrap();
    let list = w
        .wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of test*"))
        .await;
    assert!(!list.contains("forged"), "{list}");
    w.stop_bot().await;

    // A store reset starts the numbers again at 1: the new Jobs still get names of their own.
    let first: Vec<String> = job_names(&w, "mongodb-backup-manual-1-");
    assert_eq!(first.len(), 1, "{first:?}");
    std::fs::remove_dir_all(w.store_path()).unwrap();
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_for("#ops", "the second #1", |m| {
        bot_texts(m)
            .iter()
            .filter(|t| t.starts_with("✅ *#1 backup now test*"))
            .count()
            == 2
    })
    .await;
    let after = job_names(&w, "mongodb-backup-manual-1-");
    assert_eq!(
        after.len(),
        2,
        "two distinct Jobs for the two #1s: {after:?}"
    );
    w.stop_bot().await;
}

fn job_names(w: &World, prefix: &str) -> Vec<String> {
    w.kube()
        .list("jobs", Some("test"))
        .into_iter()
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_job_is_adopted_only_when_it_carries_the_operations_own_mark() {
    let w = World::with_cluster().await;
    plant_forged_backup_job(&w, "restore-7-abcde").await;
    let c = test_cluster(&w).await;
    let job = plain_job;
    // Someone else's Job under the name: an error that names it.
    let err = c
        .create_owned_job(&mut job("restore-7-abcde"), 7, "abcdemark000")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("restore-7-abcde") && text.contains("did not create it"),
        "{text}"
    );
    // The operation's own Job, created before a restart: adopted.
    c.create_owned_job(&mut job("restore-8-fghij"), 8, "fghijmark000")
        .await
        .unwrap();
    c.create_owned_job(&mut job("restore-8-fghij"), 8, "fghijmark000")
        .await
        .expect("the same mark is this operation's own Job");
    let err = c
        .create_owned_job(&mut job("restore-8-fghij"), 8, "othermark000")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not create it"), "{err}");
}

fn image_tag(w: &World, env: &str) -> String {
    w.kube().get("deployments", env, "rocketchat").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["image"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string()
}

/// Every `revision N` a message names.
fn revisions_named(text: &str) -> std::collections::BTreeSet<String> {
    text.split("revision ")
        .skip(1)
        .filter_map(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!n.is_empty()).then_some(n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rollback_goes_back_to_the_last_good_version_and_a_failed_one_rolls_forward() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_bot_text("#ops", "the deploy", |t| t.starts_with("✅ *#1"))
        .await;
    // 6.5.1 fails its smoke test and is rolled back automatically: test is on 7.0.0 again.
    w.kube()
        .set_app_failing("test", "rocketchat", true, Some("6.5.1"));
    w.sim.post("alice", "#ops", "/deploy test 6.5.1").unwrap();
    w.wait_bot_text("#ops", "the rolled back deploy", |t| {
        t.starts_with("↩️ *#2")
    })
    .await;
    assert_eq!(image_tag(&w, "test"), "7.0.0");

    // A plain rollback skips the broken 6.5.1, names 6.5.0, and asks because it is not the previous one.
    w.kube()
        .set_app_failing("test", "rocketchat", true, Some("6.5.0"));
    w.sim.post("alice", "#ops", "/rollback test").unwrap();
    let question = w.confirm("alice", "#ops").await;
    assert!(
        question.contains("to revision 1 (6.5.0), the newest earlier revision that succeeded")
            && question.contains("passing over revision 3 (6.5.1: rolled back by #2)"),
        "{question}"
    );
    // 6.5.0 does not answer: the rollback goes forward again to 7.0.0 and alerts.
    let failed = w
        .wait_bot_text("#ops", "the failed rollback", |t| t.starts_with("↩️ *#3"))
        .await;
    assert!(
        failed.contains("✓ roll forward") && failed.ends_with("test is back on 7.0.0."),
        "{failed}"
    );
    assert_eq!(image_tag(&w, "test"), "7.0.0");
    w.wait_bot_text("#alerts", "the rollback's alert", |t| {
        t.contains("#3 rollback test 1 by @alice failed")
    })
    .await;

    // Once 6.5.0 answers again, the previous revision is good: no question, and one number for it.
    w.kube().set_app_failing("test", "rocketchat", false, None);
    w.sim.post("alice", "#ops", "/rollback test").unwrap();
    let done = w
        .wait_bot_text("#ops", "the rollback", |t| t.starts_with("✅ *#4"))
        .await;
    assert_eq!(image_tag(&w, "test"), "6.5.0");
    assert!(
        done.contains("✓ undo") && done.contains("to 6.5.0"),
        "{done}"
    );
    assert_eq!(revisions_named(&done).len(), 1, "{done}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_deploy_and_undoes_it_and_a_running_restore_always_scales_back() {
    let mut w = World::with_cluster().await;
    w.sim.add_user("carol", &["user", "ops"]);
    w.sim.join("carol", "#ops").unwrap();
    w.add_test_autoscaler();
    w.start_bot().await;
    // A deploy whose rollout never finishes (the tag cannot be pulled; the deadline is long).
    w.sim
        .post("alice", "#ops", "/deploy test 9.9.9-missing")
        .unwrap();
    w.wait_bot_text("#ops", "the rollout under way", |t| {
        t.starts_with("⏳ *#1") && t.contains("… rollout")
    })
    .await;
    // bob may not run deploys in test, so he may not cancel alice's either.
    w.sim.post("bob", "#ops", "/cancel #1").unwrap();
    w.wait_bot_text("#ops", "bob's refusal", |t| {
        t.starts_with("You may not cancel #1")
    })
    .await;
    w.sim.post("carol", "#ops", "/cancel #1").unwrap();
    let done = w
        .wait_bot_text("#ops", "the cancelled deploy", |t| {
            t.starts_with("🚫 *#1") && t.contains("rollback (") && !t.contains("… rollback")
        })
        .await;
    assert!(
        done.contains("cancelled by @carol")
            && done.contains("✓ rollback")
            && done.ends_with("test is back on 6.5.0."),
        "{done}"
    );
    assert_eq!(image_tag(&w, "test"), "6.5.0");

    // A restore cancelled while its Job runs still scales the app back and restores the autoscaler.
    w.kube().script_job(
        "mongodb-restore",
        rocketops::sandbox::kube::JobScript {
            runtime: Duration::from_secs(60),
            ..Default::default()
        },
    );
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅ *#2"))
        .await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    w.confirm("alice", "#ops").await;
    w.wait_bot_text("#ops", "the restore Job running", |t| {
        t.starts_with("⏳ *#3") && t.contains("✓ scale down") && t.contains("restore (")
    })
    .await;
    w.sim.post("alice", "#ops", "/cancel #3").unwrap();
    let done = w
        .wait_bot_text("#ops", "the cancelled restore", |t| {
            t.starts_with("🚫 *#3") && t.contains("was cancelled")
        })
        .await;
    assert!(
        done.contains("cancelled by @alice") && done.contains("rocketchat back at 3 replicas"),
        "{done}"
    );
    assert_eq!(replicas(&w, "test"), 3);
    let hpa = w
        .kube()
        .get("horizontalpodautoscalers", "test", "rocketchat")
        .expect("the autoscaler is back");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    // Both environments' locks are free again.
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    w.wait_bot_text("#ops", "the next operation", |t| t.starts_with("✅ *#4"))
        .await;
    w.stop_bot().await;
}

/// Runs `rocketops ARGS --config CFG` with the audit key in its environment (or none).
fn rocketops(cfg: &std::path::Path, args: &[&str], key: Option<&str>) -> std::process::Output {
    let mut p = std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"));
    p.args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("ROCKETOPS_AUDIT_KEY");
    if let Some(k) = key {
        p.env("ROCKETOPS_AUDIT_KEY", k);
    }
    p.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_rewritten_audit_log_is_detected_by_its_key_and_its_anchor() {
    use crate::support::AUDIT_KEY;
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    config.audit.room = Some("alerts".into());
    config.audit.anchor_every = Duration::from_millis(300);
    w.start_bot_with(config).await;
    for i in 0..3 {
        w.ping_ok(&format!("audited{i}")).await;
    }
    // The anchor outside the store: posted to the audit room and exported as a metric.
    let anchor = w
        .wait_bot_text("#alerts", "an anchor covering the pings", |t| {
            t.starts_with("🔏 Audit anchor: 3 records")
        })
        .await;
    let head = anchor
        .split("head `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap()
        .to_string();
    let metrics = reqwest::get(format!("http://{}/metrics", w.telemetry.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rocketops_audit_records"), "{metrics}");
    assert!(metrics.contains("rocketops_audit_anchor{"), "{metrics}");
    w.stop_bot().await;

    let cfg = w.cli_config("");
    let intact = rocketops(&cfg, &["audit", "verify", "--head", &head], Some(AUDIT_KEY));
    assert!(intact.status.success(), "{}", text(&intact));
    assert!(
        text(&intact).contains("keyed chain verified"),
        "{}",
        text(&intact)
    );
    // Without the key a keyed log cannot be vouched for.
    let keyless = rocketops(&cfg, &["audit", "verify"], None);
    assert!(!keyless.status.success() && text(&keyless).contains("needs the audit key"));
    // Export: every record as a JSON line.
    let export = rocketops(&cfg, &["audit", "export", "--json"], Some(AUDIT_KEY));
    let lines: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["keyed"] == true && l["room"] == "ops")
    );

    // Someone with the store file edits a record and recomputes the chain after it.
    let store = w.open_store();
    store
        .forge_audit(2, |e| e.user = "mallory".into(), None)
        .unwrap();
    drop(store);
    let forged = rocketops(&cfg, &["audit", "verify"], Some(AUDIT_KEY));
    assert!(!forged.status.success(), "{}", text(&forged));
    assert!(
        text(&forged).contains("audit log BROKEN"),
        "{}",
        text(&forged)
    );

    // ... or only deletes the newest records: what is left is a valid chain, the anchor is gone.
    std::fs::remove_dir_all(w.store_path()).unwrap();
    let store = w.open_store();
    store.set_audit_key(Some(AUDIT_KEY.as_bytes()));
    for i in 0..3 {
        store
            .audit(&rocketops::store::AuditEntry {
                user: "alice".into(),
                text: format!("ping {i}"),
                decision: rocketops::store::AuditDecision::Allowed,
                ..Default::default()
            })
            .unwrap();
    }
    let (_, head) = store.audit_head().unwrap().unwrap();
    store.delete_audit(3).unwrap();
    drop(store);
    let truncated = rocketops(&cfg, &["audit", "verify", "--head", &head], Some(AUDIT_KEY));
    assert!(!truncated.status.success());
    assert!(
        text(&truncated).contains("records were removed or rewritten after the anchor"),
        "{}",
        text(&truncated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_configuration_without_an_audit_key_refuses_to_start_and_a_damaged_store_says_how_to_recover()
 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rocketops.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bot]\nstore_path = \"{}\"\n[rocketchat]\nurl = \"http://127.0.0.1:9\"\ntoken = \"unused\"\n[environments.prod]\nproduction = true\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let refused = rocketops(&cfg, &["run"], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("need a keyed audit log: set ROCKETOPS_AUDIT_KEY"),
        "{}",
        text(&refused)
    );

    // A store file damaged on disk: the error names the path and the way out.
    let path = dir.path().join("store");
    {
        let s = rocketops::store::Store::open(&path).unwrap();
        s.audit(&rocketops::store::AuditEntry::default()).unwrap();
        s.flush().await.unwrap();
    }
    for entry in std::fs::read_dir(&path).unwrap() {
        let p = entry.unwrap().path();
        // The data file, not the small `conf` file beside it.
        if p.is_file() && p.file_name().is_some_and(|n| n != "conf") {
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            std::fs::write(&p, vec![0xA5u8; len.max(64)]).unwrap();
        }
    }
    let damaged = rocketops(&cfg, &["audit"], Some(crate::support::AUDIT_KEY));
    assert!(!damaged.status.success());
    let t = text(&damaged);
    assert!(
        t.contains(&path.display().to_string()) && t.contains("damaged") && t.contains("move"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_gets_one_slow_down_per_window_and_one_audit_record_with_a_count() {
    let mut w = World::new().await;
    let mut config = w.config();
    config.policy.rate_burst = 5;
    config.policy.rate_per_minute = 6;
    w.start_bot_with(config).await;
    for i in 0..200 {
        w.sim.post("bob", "#ops", &format!("/ping f{i}")).unwrap();
    }
    // The last message is refused too; once it is handled, nothing more comes.
    w.wait_for("#ops", "the flood handled", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("Slow down"))
    })
    .await;
    w.ping_ok("sentinel").await;
    let texts = bot_texts(&w.sim.messages("#ops").unwrap());
    let pongs = texts.iter().filter(|t| t.starts_with("pong f")).count();
    let slow = texts.iter().filter(|t| t.starts_with("Slow down")).count();
    assert_eq!(pongs, 5, "the burst is answered");
    assert!(slow <= 2, "one answer per window, got {slow}: {texts:?}");
    w.stop_bot().await;
    let refused: Vec<Value> = audit_rows(&w)
        .into_iter()
        .filter(|r| r["user"] == "bob" && r["decision"] == "refused")
        .collect();
    assert!(refused.len() <= 2, "{refused:#?}");
    let counted: u64 = refused
        .iter()
        .filter_map(|r| {
            r["outcome"]
                .as_str()?
                .strip_prefix("rate_limited ×")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(counted, 195, "{refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_status_in_a_direct_message_shows_the_environments_the_user_may_see() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    // prod takes commands only from #ops; a DM has no room, so it shows test alone.
    w.sim.post("alice", "@rocketops", "status").unwrap();
    let dm = w.sim.direct_room("alice", "rocketops").unwrap();
    let msgs = w
        .wait_for(&dm, "the status", |m| !bot_texts(m).is_empty())
        .await;
    let status = last_bot_text(&msgs);
    assert!(
        status.contains("*test*") && !status.contains("*prod*"),
        "{status}"
    );
    // In #ops both are shown.
    w.sim.post("alice", "#ops", "/status").unwrap();
    let all = w
        .wait_bot_text("#ops", "the status in #ops", |t| t.contains("*test*"))
        .await;
    assert!(all.contains("*prod*"), "{all}");
    // `alerts list` names no environment: in #alerts it shows what alice may see there.
    w.sim.post("alice", "#alerts", "/alerts list").unwrap();
    let listed = w
        .wait_bot_text("#alerts", "the alerts list", |t| !t.is_empty())
        .await;
    assert_eq!(listed, "No open incidents.");
    // Naming prod in the DM is still refused, with the reason.
    w.sim.post("alice", "@rocketops", "status prod").unwrap();
    let msgs = w
        .wait_for(&dm, "the refusal", |m| bot_texts(m).len() == 2)
        .await;
    assert!(
        last_bot_text(&msgs).contains("accepted only in #ops"),
        "{}",
        last_bot_text(&msgs)
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_started_away_from_the_checkout_still_has_its_runbooks() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tour.script");
    std::fs::write(
        &script,
        "room #ops\nalice> /help migrate\nexpect: migrate ENV VERSION\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["sandbox", "--script"])
        .arg(&script)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{}-commands", out_pid(&out)))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the sandbox removes its runbook copies"
    );
}

/// The sandbox's process id, from the runbook folder it names.
fn out_pid(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split("rocketops-sandbox-")
        .nth(1)
        .and_then(|s| s.split('-').next())
        .unwrap_or("none")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_the_bot_is_no_longer_allowed_fails_the_wait_with_the_missing_permission_instead_of_spinning()
 {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    // The bot's Role loses `watch` on deployments (and the request is refused every time).
    w.kube().revoke_permission("deployments", "watch");
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let done = w
        .wait_bot_text("#ops", "the deploy's end", |t| {
            t.starts_with("❌ *#1") || t.starts_with("↩️ *#1") || t.starts_with("✅ *#1")
        })
        .await;
    assert!(
        done.contains("may not watch deployment rocketchat")
            && done.contains("its Role needs this permission"),
        "{done}"
    );
    // Bounded by the wait above: the deploy gave up after a few backed-off refusals, long before
    // its rollout deadline.
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_of_command_line_clients_in_a_failed_backup_log_reach_neither_progress_nor_alert()
{
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.kube().script_job(
        "mongodb-backup",
        rocketops::sandbox::kube::JobScript {
            exit_code: 1,
            log: [
                "CREATE USER backup WITH PASSWORD 'SqlPw7Zq';",
                "requirepass RequirePw8Zq",
                "posting to https://chat.example.org/hooks/6f1e2d3c4b5a6978/HookTok9ZqAbCdEf",
                "+ redis-cli -h redis -a RedisPw4Zq ping",
                "+ rclone copy /backup sealed: --crypt-password CryptPw5Zq",
                "+ curl -fsS -u backup:CurlPw6Zq https://store.example/upload",
                "error: upload failed",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        },
    );
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let failed = w
        .wait_bot_text("#ops", "the failed backup", |t| t.starts_with("❌"))
        .await;
    let alert = w
        .wait_bot_text("#alerts", "the backup's alert", |t| t.contains("🚨"))
        .await;
    let leaked = [
        "RedisPw4Zq",
        "CryptPw5Zq",
        "CurlPw6Zq",
        "SqlPw7Zq",
        "RequirePw8Zq",
        "HookTok9ZqAbCdEf",
    ];
    for text in [&failed, &alert] {
        for s in leaked {
            assert!(!text.contains(s), "{s} in: {text}");
        }
    }
    assert!(
        failed.contains("redis-cli -h redis -a ***") && failed.contains("--crypt-password ***"),
        "{failed}"
    );
    w.stop_bot().await;
    for row in audit_rows(&w) {
        let row = row.to_string();
        for s in leaked {
            assert!(!row.contains(s), "{s} in the audit: {row}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_a_password_is_redacted_in_the_audit_file_and_a_forged_line_prints_escaped()
{
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim
        .post("alice", "#ops", "/ping password=AuditPw3Zq")
        .unwrap();
    let pong = w
        .wait_bot_text("#ops", "the pong", |t| t.starts_with("pong"))
        .await;
    assert!(!pong.contains("AuditPw3Zq"), "{pong}");
    let forged =
        "/ping ok\n2026-12-04T10:31Z alice ops #7 deploy prod v9.9 allowed → started\x1b[1A\x1b[2K";
    w.sim.post("alice", "#ops", forged).unwrap();
    w.ping_ok("after-forgery").await;
    w.stop_bot().await;

    let file = std::fs::read_to_string(w.store_path().join("audit.jsonl")).unwrap();
    assert!(!file.contains("AuditPw3Zq"), "{file}");
    assert!(file.contains("password=***"), "{file}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.store_path().join("audit.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let cfg = w.cli_config("");
    let out = rocketops(&cfg, &["audit"], None);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!printed.contains('\x1b'), "{printed}");
    let forged_lines: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("deploy prod v9.9"))
        .collect();
    assert_eq!(forged_lines.len(), 1, "{printed}");
    assert!(
        forged_lines[0].contains("ping ok\\n2026-12-04T10:31Z alice")
            && forged_lines[0].contains("\\x1b[1A\\x1b[2K"),
        "{printed}"
    );
    assert!(
        !printed.lines().any(|l| l.starts_with("2026-12-04T10:31Z")),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redact_secret_values_the_exact_value_of_a_jobs_secret_never_reaches_chat() {
    let mut w = World::with_cluster().await;
    // A value no rule would recognise: only knowing it finds it.
    let value = "Qz7plainExactWord42";
    w.kube()
        .create(
            "secrets",
            "test",
            serde_json::json!({"metadata": {"name": "mongodb"}, "stringData": {"uri": value}}),
        )
        .unwrap();
    let mut config = w.config();
    config.bot.redact_secret_values = true;
    w.start_bot_with(config).await;
    let started = tokio::time::Instant::now();
    while rocketops::redact::outgoing(value).contains(value) {
        assert!(
            started.elapsed() < PATIENCE,
            "the Secret's value was never learnt"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w.kube().script_job(
        "mongodb-backup",
        rocketops::sandbox::kube::JobScript {
            exit_code: 1,
            log: vec![
                format!("connecting as {value} failed"),
                "error: no dump".into(),
            ],
            ..Default::default()
        },
    );
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    let failed = w
        .wait_bot_text("#ops", "the failed backup", |t| t.starts_with("❌"))
        .await;
    let alert = w
        .wait_bot_text("#alerts", "the backup's alert", |t| t.contains("🚨"))
        .await;
    for text in [&failed, &alert] {
        assert!(!text.contains(value), "{text}");
    }
    assert!(failed.contains("connecting as *** failed"), "{failed}");
    w.stop_bot().await;
}
