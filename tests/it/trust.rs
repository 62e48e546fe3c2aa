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
