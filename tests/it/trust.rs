//! The trust guarantees, each driven the way an attacker or an on-call engineer found it broken: chat in through the Rocket.Chat simulator, the cluster through the Kubernetes simulator.

use std::time::Duration;

use serde_json::Value;

use crate::support::{World, bot_texts};

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
    let store = rocketops::store::Store::open(&w.store_path()).unwrap();
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
