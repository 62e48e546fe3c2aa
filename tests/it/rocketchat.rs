//! The bot and Rocket.Chat over the real realtime protocol: login, answering, filtering, reconnects, catch-up, faults.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{PATIENCE, World, bot_texts, count, texts};

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
async fn without_the_rate_limit_exemption_a_burst_of_twenty_answers_waits_for_the_limit_and_loses_none()
 {
    let mut w = World::new().await;
    // As on a server where the bot user lacks `api-bypass-rate-limit`: the REST limiter applies.
    w.sim.revoke_permission("bot", "api-bypass-rate-limit");
    w.sim
        .set_rest_rate_limit(Some((5, Duration::from_millis(500))));
    w.start_bot().await;
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
        answers[1].contains("Did you mean `/ping`?"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_is_resumed_on_every_reconnect_not_repeated() {
    let mut w = World::new().await;
    // The socket refused at first: the retries resume the one login too.
    w.sim.refuse_connections_for(Duration::from_millis(800));
    w.start_bot().await;
    w.ping_ok("first").await;
    assert_eq!(w.sim.tokens_of("rocketops"), 1, "one login at start");
    for i in 0..3 {
        let accepted = w.sim.connections_accepted();
        w.sim.drop_connections();
        let started = tokio::time::Instant::now();
        while w.sim.connections_accepted() == accepted || w.sim.sessions_of("rocketops") == 0 {
            assert!(started.elapsed() < PATIENCE, "no reconnect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.ping_ok(&format!("after drop {i}")).await;
    }
    assert_eq!(
        w.sim.tokens_of("rocketops"),
        1,
        "reconnects resume the first login's token instead of minting new ones"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_room_the_bot_cannot_reach_keeps_it_unready_and_is_named_where_it_listens() {
    let mut w = World::new().await;
    w.sim.add_channel("secret-ops", true, &["alice"]);
    let mut config = w.config();
    config.rocketchat.rooms = vec!["ops".into(), "secret-ops".into()];
    w.start_bot_with(config).await;
    let addr = w.telemetry.expect("telemetry");
    let warning = w
        .wait_bot_text("#ops", "the unreachable room named", |t| {
            t.starts_with("⚠️ I cannot reach")
        })
        .await;
    assert!(warning.contains("#secret-ops was not found"), "{warning}");
    assert!(warning.contains("`/invite @rocketops`"), "{warning}");
    let (code, body) = readyz(addr).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("#secret-ops"), "{body}");
    // Commands still work where it listens.
    w.ping_ok("meanwhile").await;
    // Invited, the bot finds the room on its next try and is ready.
    w.sim.join("rocketops", "secret-ops").unwrap();
    crate::support::eventually(
        "/readyz to answer 200",
        Duration::from_millis(50),
        || async { (readyz(addr).await.0 == 200).then_some(()) },
    )
    .await;
    w.wait_bot_text("#ops", "the all-clear", |t| {
        t.starts_with("✅ I can reach every room")
    })
    .await;
    w.sim
        .post("alice", "#secret-ops", "!ping in the group")
        .unwrap();
    w.wait_for("#secret-ops", "the answer in the group", |m| {
        count(m, "pong in the group") == 1
    })
    .await;
    w.stop_bot().await;
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_older_than_the_oldest_supported_is_refused_at_start_naming_both_versions() {
    use axum::routing::get;
    rocketops::tls::install_crypto_provider();
    let old = axum::Router::new().route(
        "/api/info",
        get(|| async { axum::Json(serde_json::json!({"version": "6.13", "success": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, old).await });
    let mut cfg = rocketops::config::RocketChatConfig::new(format!("http://{addr}"));
    cfg.token = Some(rocketops::config::Secret::new("a-token"));
    cfg.connect_timeout = Duration::from_secs(2);
    let cancel = tokio_util::sync::CancellationToken::new();
    let result = tokio::time::timeout(
        PATIENCE,
        rocketops::chat::rocketchat::RocketChat::connect(cfg, Default::default(), cancel.clone()),
    )
    .await
    .expect("refused at once, not retried");
    let Err(e) = result else {
        panic!("a 6.13 server was accepted");
    };
    let text = e.to_string();
    assert!(
        text.contains(
            "Rocket.Chat 6.13.0 is older than the oldest version rocketops supports (7.0.0)"
        ),
        "{text}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_checks_the_server_rooms_roles_exemption_and_slash_setting() {
    let w = World::new().await;
    w.sim.revoke_permission("bot", "api-bypass-rate-limit");
    w.sim.set_setting(
        "Message_AllowUnrecognizedSlashCommand",
        serde_json::json!(false),
    );
    let cfg = w.dir.path().join("rocketops.toml");
    let write = |rooms: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[bot]\nstore_path = \"{}\"\n[rocketchat]\nurl = \"{}\"\nusername = \"rocketops\"\nrooms = [{rooms}]\n",
                w.store_path().display(),
                w.sim.url()
            ),
        )
        .unwrap();
    };
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
            .args(["check-config", "--online", "--config"])
            .arg(&cfg)
            .env("ROCKETOPS_RC_PASSWORD", "rocketops")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    write("\"ops\", \"nowhere\"");
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a missing room fails the check: {stdout}"
    );
    assert!(
        stdout.contains("ok   server         Rocket.Chat 9.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   login          as @rocketops"),
        "{stdout}"
    );
    assert!(stdout.contains("ok   room           #ops"), "{stdout}");
    assert!(
        stdout.contains("FAIL room           #nowhere was not found"),
        "{stdout}"
    );
    assert!(stdout.contains("WARN rate limit"), "{stdout}");
    assert!(stdout.contains("api-bypass-rate-limit"), "{stdout}");
    assert!(
        stdout.contains("WARN slash commands Message_AllowUnrecognizedSlashCommand is off"),
        "{stdout}"
    );
    assert!(stdout.contains("`!deploy …`"), "{stdout}");
    // Fixed on the server, the same check passes.
    w.sim.grant_permission("bot", "api-bypass-rate-limit");
    w.sim.set_setting(
        "Message_AllowUnrecognizedSlashCommand",
        serde_json::json!(true),
    );
    write("\"ops\"");
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.contains("WARN") && !stdout.contains("FAIL"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_the_rate_limit_exemption_says_so_at_start() {
    let w = World::new().await;
    w.sim.revoke_permission("bot", "api-bypass-rate-limit");
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("ROCKETOPS_RC_PASSWORD", "rocketops")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = tokio::select! {
                l = out.next_line() => l,
                l = err.next_line() => l,
            };
            match line {
                Ok(Some(l)) => {
                    let hit = l.contains("lacks the `api-bypass-rate-limit` permission");
                    seen.push(l);
                    if hit {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    })
    .await;
    let _ = child.kill().await;
    assert_eq!(found, Ok(true), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stamped_in_the_year_2100_does_not_hide_commands_sent_while_the_bot_was_down() {
    let mut w = World::new().await;
    w.start_bot().await;
    w.ping_ok("before").await;
    let rid = w.sim.room_id("ops").unwrap();
    let year_2100 = 4_102_444_800_000i64;
    let forged = serde_json::json!({"msg": "changed", "collection": "stream-room-messages", "id": "id",
        "fields": {"eventName": "__my_messages__", "args": [
            {"_id": "forged-2100", "rid": rid, "msg": "/ping from the future",
             "ts": {"$date": year_2100}, "_updatedAt": {"$date": year_2100},
             "u": {"_id": "someone", "username": "mallory"}},
            {"roomParticipant": true, "roomType": "c", "roomName": "ops"}]}});
    w.sim.inject_frame(&forged.to_string());
    w.wait_for("#ops", "the forged message handled", |m| {
        count(m, "pong from the future") == 1
    })
    .await;
    w.stop_bot().await;
    let mark = w.open_store().read_mark(&rid).unwrap().unwrap();
    assert!(mark < year_2100, "the read mark moved to {mark}");
    w.sim.post("alice", "#ops", "/ping while down").unwrap();
    w.start_bot().await;
    w.wait_for("#ops", "the caught-up answer", |m| {
        count(m, "pong while down") == 1
    })
    .await;
    w.stop_bot().await;
}
