//! One conversation played against every Rocket.Chat release the simulator serves (7.10, 8.5 LTS, 8.9 LTS, 9.0): the same answers everywhere, and nothing but `login` over the socket.

use rocketops::sandbox::rocketchat::Release;
use serde_json::Value;

use crate::commands::shorten_deadline;
use crate::support::{World, bot_texts, count};

/// The bot's messages in `room` whose text starts with `prefix`.
fn bot_messages<'a>(msgs: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    msgs.iter()
        .filter(|m| m["u"]["username"] == "rocketops")
        .filter(|m| m["msg"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .collect()
}

async fn conversation(release: Release) {
    let mut w = World::with_cluster_on(release, None, &["test", "prod"]).await;
    shorten_deadline(&w, "test").await;
    w.start_bot().await;

    // A command in a channel.
    w.ping_ok(&format!("on {release}")).await;

    // A deploy whose one progress message is edited to the end.
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the deploy's end", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    let done = bot_messages(&msgs, "✅");
    assert_eq!(done.len(), 1, "{release}: one progress message");
    assert!(
        done[0]["editedAt"].is_object(),
        "{release}: the progress message was edited in place"
    );
    let progress_id = done[0]["_id"].clone();
    assert_eq!(
        msgs.iter()
            .filter(|m| m["u"]["username"] == "rocketops" && m["_id"] == progress_id)
            .count(),
        1
    );

    // A command in a direct message, bare.
    w.sim
        .post("alice", "@rocketops", "ping in private")
        .unwrap();
    let dm = w.sim.direct_room("alice", "rocketops").expect("the DM");
    w.wait_for(&dm, "the DM answer", |m| count(m, "pong in private") == 1)
        .await;

    // A confirmation answered by its button's text.
    w.sim.post("alice", "#ops", "/deploy prod 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the question", |m| {
            bot_texts(m).iter().any(|t| t.contains("`confirm "))
        })
        .await;
    let question = msgs
        .iter()
        .rev()
        .find(|m| m["msg"].as_str().is_some_and(|t| t.contains("`confirm ")))
        .unwrap();
    let button = question["attachments"][0]["actions"][0]["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("{release}: the question has a button: {question}"))
        .to_string();
    assert!(button.starts_with("confirm "), "{button}");
    w.sim.post("alice", "#ops", &button).unwrap();
    w.wait_bot_text("#ops", "the approval request", |t| {
        t.contains("needs a second person")
    })
    .await;

    // A failed deploy's alert, with its attachment.
    w.sim.post("alice", "#ops", "/deploy test 9.9.9").unwrap();
    let failed = "🚨 #";
    let alerts = w
        .wait_for("#alerts", "the operation's alert", |m| {
            bot_messages(m, failed).iter().any(|a| {
                a["msg"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("deploy test 9.9.9 by @alice failed")
            })
        })
        .await;
    let alert = bot_messages(&alerts, failed)
        .into_iter()
        .find(|a| a["msg"].as_str().unwrap_or_default().contains("9.9.9"))
        .unwrap();
    assert_eq!(
        alert["attachments"][0]["fields"][0]["value"], "test",
        "{release}: the alert carries its attachment: {alert}"
    );

    // A command posted while the bot was down is answered once after it comes back.
    w.stop_bot().await;
    w.sim.post("alice", "#ops", "/ping while away").unwrap();
    w.start_bot().await;
    w.wait_for("#ops", "the missed command's answer", |m| {
        count(m, "pong while away") == 1
    })
    .await;
    w.ping_ok("after the catch-up").await;
    let msgs = w.sim.messages("#ops").unwrap();
    assert_eq!(
        count(&msgs, "pong while away"),
        1,
        "{release}: answered once"
    );

    w.stop_bot().await;
    let calls: Vec<(String, String)> = w
        .sim
        .methods_called()
        .into_iter()
        .filter(|(_, m)| m != "login")
        .collect();
    assert!(
        calls.is_empty(),
        "{release}: only `login` went over the socket, not {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_works_against_rocketchat_7_10() {
    conversation(Release::V7_10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_works_against_rocketchat_8_5_lts() {
    conversation(Release::V8_5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_works_against_rocketchat_8_9_lts() {
    conversation(Release::V8_9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_works_against_rocketchat_9_0() {
    conversation(Release::V9_0).await;
}

#[test]
fn the_matrix_covers_every_release_the_simulator_serves() {
    assert_eq!(
        Release::ALL.len(),
        4,
        "a new release needs its own test above"
    );
}
