//! The bot and Rocket.Chat over the real realtime protocol: login, answering, filtering, reconnects, catch-up, faults.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{PATIENCE, World, bot_texts, count, texts};
use rocketops::sandbox::rocketchat::RateRule;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_logs_in_with_a_password_and_answers_ping() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/ping").unwrap();
    w.wait_for("#ops", "pong", |m| count(m, "pong") == 1).await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_logs_in_with_a_personal_access_token_and_answers() {
    let mut w = World::new().await;
    let (token, _uid) = w.sim.create_token("rocketops").unwrap();
    let mut config = w.config();
    config.rocketchat.username = None;
    config.rocketchat.password = None;
    config.rocketchat.token = Some(rocketops::config::Secret::new(token));
    w.start_bot_with(config).await;
    w.ping_ok("token").await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_non_zero_naming_the_user_and_the_server() {
    let w = World::new().await;
    let cfg = w.dir.path().join("rocketops.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bot]\nstore_path = \"{}\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n[rocketchat]\nurl = \"{}\"\nusername = \"rocketops\"\n",
            w.store_path().display(),
            w.sim.url()
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("ROCKETOPS_RC_PASSWORD", "not-the-password")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("process exits instead of retrying")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("login as rocketops"), "{stderr}");
    assert!(stderr.contains(&w.sim.url()), "{stderr}");
    assert!(stderr.contains("wrong username or password"), "{stderr}");
    assert!(
        !stderr.contains("not-the-password"),
        "the password leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_a_channel_a_dm_and_a_thread_is_answered_in_the_same_place() {
    let mut w = World::new().await;
    w.start_bot().await;

    w.sim.post("alice", "#ops", "!ping channel").unwrap();
    let ops = w
        .wait_for("#ops", "channel answer", |m| count(m, "pong channel") == 1)
        .await;
    let answer = ops.iter().find(|m| m["msg"] == "pong channel").unwrap();
    assert!(
        answer.get("tmid").is_none(),
        "a channel answer is not threaded"
    );

    let dm = w.sim.post("bob", "@rocketops", "ping dm").unwrap();
    let rid = dm["rid"].as_str().unwrap().to_string();
    w.wait_for(&rid, "DM answer", |m| count(m, "pong dm") == 1)
        .await;

    let parent = w
        .sim
        .post("alice", "#ops", "deploying soon, thoughts?")
        .unwrap();
    let parent_id = parent["_id"].as_str().unwrap();
    w.sim
        .post_in("alice", "#ops", "@rocketops ping thread", Some(parent_id))
        .unwrap();
    let ops = w
        .wait_for("#ops", "thread answer", |m| count(m, "pong thread") == 1)
        .await;
    let answer = ops.iter().find(|m| m["msg"] == "pong thread").unwrap();
    assert_eq!(answer["tmid"], parent_id, "the answer stays in the thread");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_messages_system_messages_and_edits_never_trigger_a_command() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.sim.post("rocketops", "#ops", "/ping own").unwrap();
    w.sim
        .post_system("bob", "#ops", "uj", "/ping system")
        .unwrap();
    let hello = w.sim.post("alice", "#ops", "hello").unwrap();
    w.sim
        .edit("alice", hello["_id"].as_str().unwrap(), "/ping edited")
        .unwrap();
    w.sim
        .post("alice", "#ops", "ping plain chat in a channel")
        .unwrap();
    w.ping_ok("sentinel").await;
    // The sentinel's answer came after the others would have: none of them was answered.
    let msgs = w.sim.messages("#ops").unwrap();
    assert_eq!(
        bot_texts(&msgs),
        vec!["/ping own", "pong sentinel"],
        "{:?}",
        texts(&msgs)
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_and_thread_counters_do_not_run_a_command_twice() {
    let mut w = World::new().await;
    w.start_bot().await;
    let parent = w.sim.post("alice", "#ops", "/ping parent").unwrap();
    w.wait_for("#ops", "first answer", |m| count(m, "pong parent") == 1)
        .await;
    // A reaction and a thread reply each re-deliver the whole parent message.
    w.sim
        .react("bob", parent["_id"].as_str().unwrap(), "thumbsup")
        .unwrap();
    w.sim
        .post_in("bob", "#ops", "nice", parent["_id"].as_str())
        .unwrap();
    w.ping_ok("after").await;
    assert_eq!(count(&w.sim.messages("#ops").unwrap(), "pong parent"), 1);
    w.stop_bot().await;
}

async fn five_pings_answered_once_in_order(w: &World, tag: &str) {
    let want: Vec<String> = (1..=5).map(|i| format!("pong {tag}{i}")).collect();
    let msgs = w
        .wait_for("#ops", "five answers", |m| {
            want.iter().all(|t| count(m, t) >= 1)
        })
        .await;
    let got: Vec<String> = bot_texts(&msgs)
        .into_iter()
        .filter(|t| t.starts_with(&format!("pong {tag}")))
        .collect();
    assert_eq!(got, want, "each answered exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_posted_while_disconnected_are_answered_once_in_order_after_reconnecting() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("before").await;
    let accepted = w.sim.connections_accepted();
    w.sim.refuse_connections_for(Duration::from_millis(800));
    w.sim.drop_connections();
    for i in 1..=5 {
        w.sim
            .post("alice", "#ops", &format!("/ping away{i}"))
            .unwrap();
    }
    five_pings_answered_once_in_order(&w, "away").await;
    assert!(
        w.sim.connections_accepted() > accepted,
        "the bot reconnected"
    );
    w.ping_ok("after").await;
    let msgs = w.sim.messages("#ops").unwrap();
    assert_eq!(
        count(&msgs, "pong before"),
        1,
        "nothing from before the drop ran again"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_posted_while_the_bot_was_stopped_are_answered_once_after_a_restart() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("before").await;
    w.stop_bot().await;
    for i in 1..=5 {
        w.sim
            .post("alice", "#ops", &format!("/ping down{i}"))
            .unwrap();
    }
    w.start_bot().await;
    five_pings_answered_once_in_order(&w, "down").await;
    // A second restart replays nothing.
    w.stop_bot().await;
    w.start_bot().await;
    w.ping_ok("again").await;
    let msgs = w.sim.messages("#ops").unwrap();
    assert_eq!(count(&msgs, "pong before"), 1);
    for i in 1..=5 {
        assert_eq!(count(&msgs, &format!("pong down{i}")), 1);
    }
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_missed_for_longer_than_the_catch_up_window_is_explained_not_run() {
    let mut w = World::new().await;
    let mut config = w.config();
    // Long enough that a live command caught up at start on a loaded machine is still fresh.
    config.bot.catch_up_max_age = Duration::from_millis(250);
    w.start_bot_with(config.clone()).await;
    w.ping_ok("before").await;
    w.stop_bot().await;
    w.sim.post("alice", "#ops", "/ping stale").unwrap();
    // The command must be older than the window when the bot comes back (real message age).
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.start_bot_with(config).await;
    let msgs = w
        .wait_for("#ops", "the offline notice", |m| {
            bot_texts(m).iter().any(|t| t.contains("I was offline"))
        })
        .await;
    assert_eq!(count(&msgs, "pong stale"), 0);
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_pings_is_dropped_and_the_bot_reconnects() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("before").await;
    let accepted = w.sim.connections_accepted();
    w.sim.set_silent(true);
    // ping_interval + ping_timeout is 600 ms in these tests.
    let started = tokio::time::Instant::now();
    while w.sim.connections_accepted() == accepted {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the bot never noticed the silent server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.sim.set_silent(false);
    w.ping_ok("after").await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_frames_are_skipped_and_the_connection_survives() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("before").await;
    let accepted = w.sim.connections_accepted();
    for frame in [
        "{not json",
        "[1,2,3]",
        r#"{"msg":"teleport","to":"mars"}"#,
        r#"{"msg":"result"}"#,
        r#"{"msg":"changed","collection":"stream-room-messages","fields":{"args":["x"]}}"#,
        r#"{"msg":"changed","collection":"stream-room-messages","fields":{"args":[{"_id":1}]}}"#,
        "",
    ] {
        w.sim.inject_frame(frame);
    }
    w.ping_ok("after").await;
    assert_eq!(
        w.sim.connections_accepted(),
        accepted,
        "no reconnect was needed"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_twenty_answers_all_arrive_despite_the_servers_rate_limit() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.sim.set_rate_limit(
        "sendMessage",
        Some(RateRule {
            limit: 5,
            window: Duration::from_millis(500),
            exempt_bots: false,
        }),
    );
    for i in 0..20 {
        w.sim
            .post("alice", "#ops", &format!("/ping burst{i}"))
            .unwrap();
    }
    let msgs = w
        .wait_for("#ops", "20 answers", |m| {
            (0..20).all(|i| count(m, &format!("pong burst{i}")) >= 1)
        })
        .await;
    for i in 0..20 {
        assert_eq!(
            count(&msgs, &format!("pong burst{i}")),
            1,
            "burst{i} answered once"
        );
    }
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_the_servers_limit_is_split_not_lost() {
    let mut w = World::new().await;
    w.sim.set_max_message_len(150);
    w.start_bot().await;
    let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
    w.sim
        .post("alice", "#ops", &format!("/ping {}", words.join(" ")))
        .unwrap();
    let msgs = w
        .wait_for("#ops", "the whole echo", |m| {
            bot_texts(m).concat().contains("w59")
        })
        .await;
    let parts: Vec<String> = bot_texts(&msgs);
    assert!(parts.len() > 1, "split into several messages: {parts:?}");
    for p in &parts {
        assert!(p.chars().count() <= 150, "{p}");
    }
    let all: Vec<String> = parts
        .iter()
        .flat_map(|p| p.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for word in &words {
        assert_eq!(
            all.iter().filter(|x| *x == word).count(),
            1,
            "{word} appears once"
        );
    }
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_commands_and_an_unknown_command_gets_a_suggestion() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/help").unwrap();
    w.sim.post("alice", "#ops", "/pnig").unwrap();
    let msgs = w
        .wait_for("#ops", "two answers", |m| bot_texts(m).len() >= 2)
        .await;
    let answers = bot_texts(&msgs);
    assert!(answers[0].contains("ping [TEXT]"), "{}", answers[0]);
    assert!(
        answers[1].contains("Did you mean `ping`?"),
        "{}",
        answers[1]
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_command_is_audited() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("audited").await;
    w.stop_bot().await;
    let store = w.open_store();
    let entries = store.recent_audit(10).unwrap();
    let e = entries
        .iter()
        .find(|e| e.text == "ping audited")
        .expect("audit entry");
    assert_eq!(e.user, "alice");
    assert_eq!(e.room, "ops");
    assert_eq!(e.outcome.as_deref(), Some("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_handle_posts_edits_in_place_reacts_and_opens_direct_messages() {
    use rocketops::chat::Chat;
    use rocketops::chat::rocketchat::{ConnectOptions, RocketChat};
    let w = World::new().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let (chat, _incoming) = RocketChat::connect(
        w.config().rocketchat,
        ConnectOptions::default(),
        cancel.clone(),
    )
    .await
    .unwrap();
    assert_eq!(chat.bot_username(), "rocketops");
    let ops = chat.room_id("#ops").await.unwrap();
    let progress = chat
        .post(&ops, None, "deploy: 1/3 pods ready")
        .await
        .unwrap();
    chat.edit(&progress, "deploy: 3/3 pods ready")
        .await
        .unwrap();
    chat.react(&progress, "white_check_mark").await.unwrap();
    let msgs = w.sim.messages("#ops").unwrap();
    assert_eq!(msgs.len(), 1, "edited in place, not re-posted");
    assert_eq!(msgs[0]["msg"], "deploy: 3/3 pods ready");
    assert!(msgs[0]["editedAt"].is_object());
    assert_eq!(
        msgs[0]["reactions"][":white_check_mark:"]["usernames"],
        serde_json::json!(["rocketops"])
    );
    let dm = chat.direct_room("alice").await.unwrap();
    chat.post(&dm, None, "hello alice").await.unwrap();
    assert_eq!(
        w.sim.direct_room("alice", "rocketops").as_deref(),
        Some(dm.as_str())
    );
    assert!(chat.room_id("#no-such-room").await.is_err());
    cancel.cancel();
}
