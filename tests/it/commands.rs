//! Commands end to end: a chat message in through the Rocket.Chat simulator, the bot's policy, the cluster through the Kubernetes simulator, and what the channel and the audit log show.

use std::process::Command as Process;

use serde_json::Value;

use crate::support::{World, bot_texts};

fn last_bot_text(msgs: &[Value]) -> String {
    bot_texts(msgs).last().cloned().unwrap_or_default()
}

fn image_of(w: &World, env: &str) -> String {
    w.kube().get("deployments", env, "rocketchat").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_shows_only_what_the_asker_may_run() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/help").unwrap();
    let msgs = w
        .wait_for("#ops", "alice's help", |m| bot_texts(m).len() == 1)
        .await;
    let alice = last_bot_text(&msgs);
    assert!(
        alice.contains("`/deploy ENV VERSION [--no-backup]`") && alice.contains("_(prod, test)_"),
        "{alice}"
    );
    w.sim.post("bob", "#ops", "/help").unwrap();
    let msgs = w
        .wait_for("#ops", "bob's help", |m| bot_texts(m).len() == 2)
        .await;
    let bob = last_bot_text(&msgs);
    assert!(
        !bob.contains("`/deploy"),
        "bob (no ops role) is not offered deploy: {bob}"
    );
    assert!(
        bob.contains("`/status [ENV]`") && bob.contains("need permissions you don't have"),
        "{bob}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_deploy_is_refused_and_both_commands_are_audited() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("bob", "#ops", "/deploy prod v3.1").unwrap();
    let msgs = w
        .wait_for("#ops", "the refusal", |m| !bot_texts(m).is_empty())
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "You may not deploy prod v3.1: in prod, `/deploy` is for @admin or role ops."
    );
    w.sim.post("bob", "#ops", "/status prod").unwrap();
    w.wait_for("#ops", "the status", |m| bot_texts(m).len() == 2)
        .await;
    assert_eq!(
        image_of(&w, "prod"),
        format!("{}:6.5.0", rocketops::sandbox::kube::seed::ROCKETCHAT_REPO),
        "nothing changed"
    );
    w.stop_bot().await;

    let cfg = w.cli_config("");
    let out = Process::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["audit", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("bob")
            && text.contains("deploy prod v3.1")
            && text.contains("refused — You may not deploy prod v3.1"),
        "{text}"
    );
    assert!(
        text.contains("status prod") && text.contains("allowed (read-only)"),
        "{text}"
    );
    let json = Process::new(env!("CARGO_BIN_EXE_rocketops"))
        .args([
            "audit", "--json", "--env", "prod", "--user", "bob", "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["decision"], "refused");
    let verify = Process::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .env("ROCKETOPS_AUDIT_KEY", crate::support::AUDIT_KEY)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Someone edits the log on disk: verification fails.
    let store = w.open_store();
    store
        .tamper_audit(1, |e| e.decision = rocketops::store::AuditDecision::Allowed)
        .unwrap();
    drop(store);
    let verify = Process::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .env("ROCKETOPS_AUDIT_KEY", crate::support::AUDIT_KEY)
        .output()
        .unwrap();
    assert!(!verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("audit record 1 was altered"),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_to_test_rolls_out_smoke_tests_and_edits_one_progress_message() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the deploy's end", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    let answers = bot_texts(&msgs);
    assert_eq!(
        answers.len(),
        1,
        "one progress message, edited in place: {answers:?}"
    );
    let text = &answers[0];
    assert!(text.contains("– backup: not production"), "{text}");
    assert!(
        text.contains("✓ rollout") && text.contains("complete, revision 2"),
        "{text}"
    );
    assert!(
        text.contains("✓ smoke test") && text.contains("200, version 7.0.0"),
        "{text}"
    );
    assert!(text.ends_with("test runs 7.0.0 (revision 2)."), "{text}");
    let progress = msgs
        .iter()
        .find(|m| m["u"]["username"] == "rocketops")
        .unwrap();
    assert!(
        progress["editedAt"].is_object(),
        "the message was edited as the deploy advanced"
    );
    assert!(image_of(&w, "test").ends_with(":7.0.0"));

    w.sim.post("alice", "#ops", "/history test").unwrap();
    let msgs = w
        .wait_for("#ops", "history", |m| bot_texts(m).len() == 2)
        .await;
    assert!(
        last_bot_text(&msgs).contains("`2` 7.0.0 — deploy 7.0.0 by alice (#1)"),
        "{}",
        last_bot_text(&msgs)
    );
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "no-op deploy", |m| bot_texts(m).len() == 3)
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "test is already running 7.0.0; nothing to do."
    );
    w.sim.post("alice", "#ops", "/status test").unwrap();
    let msgs = w
        .wait_for("#ops", "status", |m| bot_texts(m).len() == 4)
        .await;
    assert!(
        last_bot_text(&msgs).contains("rocketchat 7.0.0, 3/3 ready")
            && last_bot_text(&msgs).contains("last deploy #1 by @alice"),
        "{}",
        last_bot_text(&msgs)
    );
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    let msgs = w
        .wait_for("#ops", "scale", |m| {
            bot_texts(m).iter().filter(|t| t.starts_with("✅")).count() == 2
        })
        .await;
    assert!(
        last_bot_text(&msgs).contains("rocketchat from 3 to 2 replicas"),
        "{}",
        last_bot_text(&msgs)
    );
    w.sim.post("alice", "#ops", "/scale test 50").unwrap();
    let msgs = w
        .wait_for("#ops", "scale refusal", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("test allows"))
        })
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "test allows 1 to 10 replicas, not 50.\nUsage: `/scale ENV REPLICAS [COMPONENT]`"
    );
    w.sim.post("alice", "#ops", "/rollback test").unwrap();
    w.wait_for("#ops", "rollback", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.contains("test is back on 6.5.0 (revision 3)."))
    })
    .await;
    assert!(image_of(&w, "test").ends_with(":6.5.0"));
    w.sim.post("alice", "#ops", "/rollback test 2").unwrap();
    w.wait_for("#ops", "rollback to 2", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.contains("test is back on 7.0.0 (revision 4)."))
    })
    .await;
    assert!(image_of(&w, "test").ends_with(":7.0.0"));
    w.stop_bot().await;
}

pub async fn shorten_deadline(w: &World, env: &str) {
    // Only once the seeded rollout is done, so that the short deadline applies to the next one.
    let started = tokio::time::Instant::now();
    while w.kube().get("deployments", env, "rocketchat").unwrap()["status"]["availableReplicas"]
        != 3
    {
        assert!(
            started.elapsed() < crate::support::PATIENCE,
            "the seeded rollout did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let kc = kube::config::Kubeconfig::read_from(w.kubeconfig()).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some(env.into()),
        ..Default::default()
    };
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap(),
    )
    .unwrap();
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(client, env);
    let patch = serde_json::json!({"spec": {"progressDeadlineSeconds": 1}});
    api.patch(
        "rocketchat",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_an_unknown_tag_rolls_back_alerts_and_releases_the_environment() {
    let mut w = World::with_cluster().await;
    shorten_deadline(&w, "test").await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy test 9.9.9").unwrap();
    let msgs = w
        .wait_for("#ops", "the failure", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("↩️"))
        })
        .await;
    let text = last_bot_text(&msgs);
    assert!(
        text.contains("ImagePullBackOff") || text.contains("ErrImagePull"),
        "{text}"
    );
    assert!(
        text.contains("✓ rollback")
            && text.ends_with("test is back on rocketchat/rocket.chat:6.5.0.")
            || text.contains("test is back on 6.5.0."),
        "{text}"
    );
    w.wait_for("#alerts", "the operation's alert", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("🚨 #1 deploy test 9.9.9 by @alice failed"))
    })
    .await;
    assert!(image_of(&w, "test").ends_with(":6.5.0"));
    // `alerts list` shows what was alerted, and why it is not an open incident.
    w.sim.post("alice", "#ops", "/alerts list").unwrap();
    let list = w
        .wait_bot_text("#ops", "the alerts list", |t| t.contains("open incidents"))
        .await;
    assert!(
        list.contains("Failed operations alerted in the last 24 h")
            && list.contains("#1 deploy test 9.9.9 — rolled back"),
        "{list}"
    );
    // The environment is free again.
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the next deploy", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("✅"))
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_smoke_test_after_a_good_rollout_rolls_back() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.kube()
        .set_app_failing("test", "rocketchat", true, Some("7.0.0"));
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the rollback", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("↩️"))
        })
        .await;
    let text = last_bot_text(&msgs);
    assert!(
        text.contains("✓ rollout") && text.contains("✗ smoke test") && text.contains("→ 500"),
        "{text}"
    );
    assert!(image_of(&w, "test").ends_with(":6.5.0"));
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_to_a_busy_environment_is_refused_while_another_environment_deploys_in_parallel()
 {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    // A slow rollout in test: pods take a while to become ready.
    w.kube().set_known_tags(
        rocketops::sandbox::kube::seed::ROCKETCHAT_REPO,
        &["6.5.0", "v3.1"],
    );
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the first deploy under way", |m| {
        bot_texts(m).iter().any(|t| t.contains("… rollout"))
    })
    .await;
    w.sim
        .post("alice", "@rocketops", "deploy test v3.1")
        .unwrap();
    let dm = w.sim.direct_room("alice", "rocketops").unwrap();
    let msgs = w
        .wait_for(&dm, "busy refusal", |m| !bot_texts(m).is_empty())
        .await;
    let refusal = last_bot_text(&msgs);
    assert!(
        refusal.starts_with("test is busy with deploy #1 (started by @alice"),
        "{refusal}"
    );
    w.sim.post("admin", "#ops", "/deploy prod v3.1").unwrap();
    let msgs = w
        .wait_for("#ops", "prod question", |m| {
            bot_texts(m).iter().any(|t| t.contains("confirm "))
        })
        .await;
    let question = last_bot_text(&msgs);
    let code = question
        .split("`confirm ")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_string();
    w.sim
        .post("admin", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let ask = w
        .wait_bot_text("#ops", "approval request", |t| {
            t.contains("needs a second person")
        })
        .await;
    let op = ask
        .split("`approve #")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_string();
    w.sim
        .post("alice", "#ops", &format!("/approve #{op}"))
        .unwrap();
    // prod deploys while test is still stuck in its rollout: environments run in parallel.
    let msgs = w
        .wait_for("#ops", "prod deployed", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.starts_with("✅") && t.contains("deploy prod v3.1"))
        })
        .await;
    assert!(
        bot_texts(&msgs)
            .iter()
            .any(|t| t.starts_with("⏳") && t.contains("deploy test 7.0.0")),
        "test still running"
    );
    // Now the image exists: the first deploy finishes.
    w.kube().set_known_tags(
        rocketops::sandbox::kube::seed::ROCKETCHAT_REPO,
        rocketops::sandbox::kube::seed::KNOWN_TAGS,
    );
    w.wait_for("#ops", "test deploy done", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("✅") && t.contains("deploy test 7.0.0"))
    })
    .await;
    w.stop_bot().await;
}

/// The bot as its own process with this world's environments, for kill -9.
fn spawn_bot_process(w: &World) -> std::process::Child {
    let cfg = w.dir.path().join("crash.toml");
    let k = w.kube();
    std::fs::write(
        &cfg,
        format!(
            r#"[bot]
store_path = "{store}"
[telemetry]
listen = "127.0.0.1:0"
[rocketchat]
url = "{rc}"
username = "rocketops"
rooms = ["ops"]
reconnect_min = "50ms"
reconnect_max = "200ms"
[environments.test]
kubeconfig = "{kc}"
context = "test"
image = "{repo}"
smoke = {{ url = "{smoke}", version_field = "version", timeout = "5s", interval = "100ms" }}
[[environments.test.policy.allow]]
commands = ["*"]
roles = ["ops"]
"#,
            store = w.store_path().display(),
            rc = w.sim.url(),
            kc = w.kubeconfig().display(),
            repo = rocketops::sandbox::kube::seed::ROCKETCHAT_REPO,
            smoke = k.app_info_url("test", "rocketchat"),
        ),
    )
    .unwrap();
    Process::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("ROCKETOPS_RC_PASSWORD", "rocketops")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn logged_in(w: &World) {
    let started = tokio::time::Instant::now();
    while w.sim.sessions_of("rocketops") == 0 {
        assert!(
            started.elapsed() < crate::support::PATIENCE,
            "bot process did not log in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_mid_rollout_is_finished_after_restart_with_one_summary() {
    let w = World::with_cluster().await;
    // The new pods cannot start until the tag "appears": the rollout is stuck when the bot dies.
    w.kube()
        .set_known_tags(rocketops::sandbox::kube::seed::ROCKETCHAT_REPO, &["6.5.0"]);
    let mut bot = spawn_bot_process(&w);
    logged_in(&w).await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the rollout under way", |m| {
        bot_texts(m).iter().any(|t| t.contains("… rollout"))
    })
    .await;
    bot.kill().unwrap(); // SIGKILL
    bot.wait().unwrap();
    w.kube().set_known_tags(
        rocketops::sandbox::kube::seed::ROCKETCHAT_REPO,
        rocketops::sandbox::kube::seed::KNOWN_TAGS,
    );
    let started = tokio::time::Instant::now();
    while w.sim.sessions_of("rocketops") > 0 {
        assert!(started.elapsed() < crate::support::PATIENCE);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut bot = spawn_bot_process(&w);
    let msgs = w
        .wait_for("#ops", "the resumed deploy's end", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    let answers = bot_texts(&msgs);
    assert_eq!(
        answers.len(),
        1,
        "the same progress message, one summary: {answers:?}"
    );
    assert!(
        answers[0].ends_with("test runs 7.0.0 (revision 2)."),
        "{}",
        answers[0]
    );
    assert!(image_of(&w, "test").ends_with(":7.0.0"));
    // Released: another operation may start.
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    w.wait_for("#ops", "scale after resume", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.contains("from 3 to 2 replicas"))
    })
    .await;
    bot.kill().unwrap();
    bot.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_rollout_exits_cleanly_and_the_deploy_resumes_on_restart() {
    let w = World::with_cluster().await;
    w.kube()
        .set_known_tags(rocketops::sandbox::kube::seed::ROCKETCHAT_REPO, &["6.5.0"]);
    let mut bot = spawn_bot_process(&w);
    logged_in(&w).await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the rollout under way", |m| {
        bot_texts(m).iter().any(|t| t.contains("… rollout"))
    })
    .await;
    Process::new("kill")
        .args(["-TERM", &bot.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || bot.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    w.kube().set_known_tags(
        rocketops::sandbox::kube::seed::ROCKETCHAT_REPO,
        rocketops::sandbox::kube::seed::KNOWN_TAGS,
    );
    let mut bot = spawn_bot_process(&w);
    let msgs = w
        .wait_for("#ops", "the resumed deploy's end", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    assert_eq!(bot_texts(&msgs).len(), 1);
    bot.kill().unwrap();
    bot.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_needs_confirmation_by_the_requester_and_approval_by_someone_else() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy prod 7.0.0").unwrap();
    let msgs = w
        .wait_for("#ops", "the question", |m| !bot_texts(m).is_empty())
        .await;
    let question = msgs
        .iter()
        .rev()
        .find(|m| m["u"]["username"] == "rocketops")
        .unwrap()
        .clone();
    let text = question["msg"].as_str().unwrap();
    let code = text
        .split("`confirm ")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_string();
    let actions = &question["attachments"][0]["actions"];
    assert_eq!(
        actions[0]["msg"],
        format!("confirm {code}"),
        "one click confirms"
    );
    assert_eq!(actions[0]["msg_in_chat_window"], true);
    // Another user's confirm, and a wrong code, are refused.
    w.sim
        .post("bob", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let msgs = w
        .wait_for("#ops", "wrong user", |m| bot_texts(m).len() == 2)
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "Only @alice can confirm that command."
    );
    w.sim.post("alice", "#ops", "/confirm ZZZZZZ").unwrap();
    let msgs = w
        .wait_for("#ops", "wrong code", |m| bot_texts(m).len() == 3)
        .await;
    assert!(last_bot_text(&msgs).starts_with("No command is waiting for the code `ZZZZZZ`"));
    w.sim
        .post("alice", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let msgs = w
        .wait_for("#ops", "approval request", |m| bot_texts(m).len() == 4)
        .await;
    let ask = last_bot_text(&msgs);
    assert!(ask.contains("needs a second person"), "{ask}");
    let op = ask
        .split("`approve #")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_string();
    w.sim
        .post("alice", "#ops", &format!("/approve #{op}"))
        .unwrap();
    let msgs = w
        .wait_for("#ops", "self-approval", |m| bot_texts(m).len() == 5)
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "You can't approve your own request; another authorized user must."
    );
    w.sim
        .post("bob", "#ops", &format!("/approve #{op}"))
        .unwrap();
    let msgs = w
        .wait_for("#ops", "bob may not approve", |m| bot_texts(m).len() == 6)
        .await;
    assert!(
        last_bot_text(&msgs).starts_with(&format!("You may not approve #{op}")),
        "{}",
        last_bot_text(&msgs)
    );
    assert!(image_of(&w, "prod").ends_with(":6.5.0"), "nothing ran yet");
    w.sim
        .post("admin", "#ops", &format!("/approve #{op}"))
        .unwrap();
    w.wait_for("#ops", "the deploy", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("✅"))
    })
    .await;
    assert!(image_of(&w, "prod").ends_with(":7.0.0"));
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_commands_from_another_room_are_refused_and_a_locked_environment_refuses_changes()
 {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim
        .post("alice", "#alerts", "/deploy prod 7.0.0")
        .unwrap();
    let msgs = w
        .wait_for("#alerts", "room refusal", |m| !bot_texts(m).is_empty())
        .await;
    assert_eq!(
        last_bot_text(&msgs),
        "You may not deploy prod 7.0.0: commands for prod are accepted only in #ops."
    );
    w.sim
        .post("alice", "#ops", "/lock test \"release freeze\"")
        .unwrap();
    let msgs = w
        .wait_for("#ops", "lock", |m| !bot_texts(m).is_empty())
        .await;
    assert!(last_bot_text(&msgs).starts_with("🔒 test is locked by @alice: release freeze"));
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    let msgs = w
        .wait_for("#ops", "locked refusal", |m| bot_texts(m).len() == 2)
        .await;
    assert!(
        last_bot_text(&msgs).starts_with("test is locked by @alice"),
        "{}",
        last_bot_text(&msgs)
    );
    w.sim.post("alice", "#ops", "/status test").unwrap();
    let msgs = w
        .wait_for("#ops", "status", |m| bot_texts(m).len() == 3)
        .await;
    let status = last_bot_text(&msgs);
    assert!(
        status.contains("*test*: rocketchat 6.5.0, 3/3 ready")
            && status.contains("🔒 locked by @alice: release freeze"),
        "{status}"
    );
    w.sim.post("alice", "#ops", "/unlock test").unwrap();
    w.wait_for("#ops", "unlock", |m| bot_texts(m).len() == 4)
        .await;
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    w.wait_for("#ops", "scale", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("✅") && t.contains("from 3 to 2 replicas"))
    })
    .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_with_the_app_at_zero_finishes_after_restart_and_puts_everything_back() {
    let w = World::with_cluster().await;
    w.add_test_autoscaler();
    w.seed_catalog(&[(
        "test",
        "test-nightly",
        chrono::Utc::now().timestamp_millis() - 3_600_000,
    )]);
    // The restore Job runs long enough for the bot to die in the middle of it.
    w.kube().script_job(
        "mongodb-restore",
        rocketops::sandbox::kube::JobScript {
            runtime: std::time::Duration::from_secs(3),
            termination_message: r#"{"restore_seconds":3}"#.into(),
            ..Default::default()
        },
    );
    let mut bot = spawn_bot_process(&w);
    logged_in(&w).await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    w.confirm("alice", "#ops").await;
    w.wait_for("#ops", "the restore under way", |m| {
        bot_texts(m).iter().any(|t| t.contains("… restore"))
    })
    .await;
    bot.kill().unwrap(); // SIGKILL, with the app at 0 and its autoscaler removed
    bot.wait().unwrap();
    let d = w.kube().get("deployments", "test", "rocketchat").unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    assert!(
        w.kube()
            .get("horizontalpodautoscalers", "test", "rocketchat")
            .is_err()
    );
    let started = tokio::time::Instant::now();
    while w.sim.sessions_of("rocketops") > 0 {
        assert!(started.elapsed() < crate::support::PATIENCE);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut bot = spawn_bot_process(&w);
    let msgs = w
        .wait_for("#ops", "the resumed restore's end", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.contains("restore test latest") && t.starts_with("✅"))
        })
        .await;
    let done = bot_texts(&msgs)
        .into_iter()
        .find(|t| t.contains("restore test latest"))
        .unwrap();
    assert!(
        done.contains("recorded 3 replicas and autoscaler rocketchat (removed)")
            && done.contains(
                "rocketchat back at 3 replicas, all ready, autoscaler rocketchat restored"
            ),
        "{done}"
    );
    // One restore Job: the resumed step waited for the one already running.
    let restores = w
        .kube()
        .list("jobs", Some("test"))
        .into_iter()
        .filter(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("mongodb-restore-")
        })
        .count();
    assert_eq!(restores, 1);
    let d = w.kube().get("deployments", "test", "rocketchat").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    let hpa = w
        .kube()
        .get("horizontalpodautoscalers", "test", "rocketchat")
        .unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    bot.kill().unwrap();
    bot.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_words_the_bot_asks_for_work_in_the_channel_and_its_name_alone_gets_help() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy prod v3.1").unwrap();
    let (_, code) = w.confirmation("#ops").await;
    // Typed exactly as the question says: no prefix.
    w.sim
        .post("alice", "#ops", &format!("confirm {code}"))
        .unwrap();
    let ask = w
        .wait_bot_text("#ops", "the approval request", |t| {
            t.contains("needs a second person")
        })
        .await;
    assert!(ask.contains("types `approve #1`"), "{ask}");
    w.sim.post("admin", "#ops", "approve #1").unwrap();
    w.wait_bot_text("#ops", "the deploy", |t| t.starts_with("✅ *#1"))
        .await;
    assert!(image_of(&w, "prod").ends_with(":v3.1"));
    // Ordinary talk with the same words is left alone; the bot's name alone gets the help.
    w.sim
        .post("bob", "#ops", "confirm it with alice first")
        .unwrap();
    w.sim.post("bob", "#ops", "@rocketops").unwrap();
    let help = w
        .wait_bot_text("#ops", "the help", |t| t.contains("`/status [ENV]`"))
        .await;
    assert!(!help.is_empty());
    let texts = bot_texts(&w.sim.messages("#ops").unwrap());
    assert!(
        !texts.iter().any(|t| t.contains("not a confirmation code")),
        "{texts:?}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_can_be_checked_before_confirmation_is_checked_first_and_the_second_person_is_named_up_front()
 {
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    let prod = config.environments.get_mut("prod").unwrap();
    prod.policy.allow[0].commands.push("scale".into());
    // prod's app has the seeded autoscaler: 3 to 10 replicas.
    let hpa = w
        .kube()
        .get("horizontalpodautoscalers", "prod", "rocketchat")
        .unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    w.start_bot_with(config).await;
    // Under an autoscaler whose minimum is 3, scaling prod to 2 is refused before any question.
    w.sim.post("alice", "#ops", "/scale prod 2").unwrap();
    let msgs = w
        .wait_for("#ops", "the refusal", |m| !bot_texts(m).is_empty())
        .await;
    let refusal = last_bot_text(&msgs);
    assert!(
        refusal.starts_with("I won't scale prod rocketchat to 2: HorizontalPodAutoscaler rocketchat keeps it between 3 and 10"),
        "{refusal}"
    );
    assert_eq!(bot_texts(&msgs).len(), 1, "no confirmation question");
    // A deploy to prod says at once that a second person must approve it.
    w.sim.post("alice", "#ops", "/deploy prod v3.1").unwrap();
    let question = w
        .wait_bot_text("#ops", "the question", |t| t.contains("`confirm "))
        .await;
    assert!(
        question.contains(
            "It then needs a second person: another user who may run it types `approve #1`."
        ),
        "{question}"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_waits_long_shows_its_elapsed_time_while_it_runs() {
    let mut w = World::with_cluster().await;
    w.kube().script_job(
        "mongodb-backup",
        rocketops::sandbox::kube::JobScript {
            runtime: std::time::Duration::from_secs(7),
            termination_message: r#"{"name":"slow","bytes":1}"#.into(),
            ..Default::default()
        },
    );
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    // Nothing reports during the Job's run, yet the running step's time moves on.
    let msgs = w
        .wait_for("#ops", "the elapsed time on the running step", |m| {
            bot_texts(m).iter().any(|t| {
                t.starts_with("⏳")
                    && t.lines()
                        .any(|l| l.starts_with("… backup (5") || l.starts_with("… backup (6"))
            })
        })
        .await;
    assert_eq!(
        bot_texts(&msgs)
            .iter()
            .filter(|t| t.contains("#1 backup now test"))
            .count(),
        1,
        "drawn again in place, not posted again"
    );
    w.wait_bot_text("#ops", "the backup", |t| t.starts_with("✅"))
        .await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmation_names_what_will_happen_and_a_verify_with_nothing_to_test_is_refused_at_once_and_one_with_a_backup_asks_nothing()
 {
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    let prod = config.environments.get_mut("prod").unwrap();
    prod.policy.allow[0].commands = vec!["*".into()];
    w.start_bot_with(config.clone()).await;
    w.sim.post("alice", "#ops", "/verify").unwrap();
    let refused = w
        .wait_bot_text("#ops", "the refusal", |t| t.contains("backup"))
        .await;
    assert_eq!(
        refused,
        "No environment has a backup to test yet; `/backup now` takes one."
    );
    w.sim.post("alice", "#ops", "/backup now").unwrap();
    let question = w
        .wait_bot_text("#ops", "the backup question", |t| t.contains("back up"))
        .await;
    for env in ["prod", "test"] {
        assert!(question.contains(&format!("{env} (onto ")), "{question}");
    }
    assert!(question.contains("the app keeps running"), "{question}");
    w.sim
        .post("alice", "#ops", "/lock prod release freeze")
        .unwrap();
    let question = w
        .wait_bot_text("#ops", "the lock question", |t| t.contains("lock prod"))
        .await;
    assert!(
        question.contains("changes to it are refused until `unlock prod`")
            && question.contains("still allowed: rollback, unlock, backup now, status"),
        "{question}"
    );
    w.stop_bot().await;
    w.seed_catalog(&[(
        "prod",
        "prod-nightly",
        chrono::Utc::now().timestamp_millis() - 3_600_000,
    )]);
    w.start_bot_with(config).await;
    // A verify touches no live data: it starts at once, though prod asks to confirm changes.
    w.sim.post("alice", "#ops", "/verify").unwrap();
    let started = w
        .wait_bot_text("#ops", "the verify", |t| t.contains("prod-nightly"))
        .await;
    assert!(!started.contains("confirm"), "{started}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_help_the_bot_points_to_works_bare_in_a_channel() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "help deploy").unwrap();
    let answer = w
        .wait_bot_text("#ops", "help for deploy", |t| t.starts_with("*deploy*"))
        .await;
    // In a channel the usage is written as it is typed there.
    assert!(answer.contains("Usage: `/deploy ENV VERSION"), "{answer}");
    w.sim.post("alice", "#ops", "help").unwrap();
    w.wait_bot_text("#ops", "the command list", |t| {
        t.starts_with("*Commands you may run*")
    })
    .await;
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

/// The refusals in the bot's audit log (read once the bot has stopped).
fn refusals_audited(w: &World) -> Vec<String> {
    w.open_store()
        .all_audit()
        .unwrap()
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["decision"] == "refused")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_approved_after_prod_was_locked_is_refused_naming_the_lock() {
    let mut w = World::with_cluster().await;
    let mut config = w.config();
    config
        .environments
        .get_mut("prod")
        .unwrap()
        .policy
        .allow
        .push(rocketops::policy::AllowRule {
            commands: vec!["lock".into(), "unlock".into()],
            users: vec!["bob".into(), "admin".into()],
            roles: vec![],
        });
    w.start_bot_with(config).await;
    w.sim.post("alice", "#ops", "/deploy prod 7.0.0").unwrap();
    w.confirm("alice", "#ops").await;
    let deploy = approval_op(&w, "deploy prod 7.0.0 needs a second person").await;
    // A release freeze starts while the deploy waits for its approval.
    w.sim
        .post("bob", "#ops", "/lock prod release freeze")
        .unwrap();
    let question = w
        .wait_bot_text("#ops", "the lock question", |t| {
            t.contains("lock prod") && t.contains("`confirm ")
        })
        .await;
    let code = question
        .split("`confirm ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap();
    w.sim
        .post("bob", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let lock = approval_op(&w, "lock prod release freeze needs a second person").await;
    w.sim
        .post("admin", "#ops", &format!("/approve #{lock}"))
        .unwrap();
    w.wait_bot_text("#ops", "the lock", |t| t.contains("prod is locked"))
        .await;
    w.sim
        .post("admin", "#ops", &format!("/approve #{deploy}"))
        .unwrap();
    let refused = w
        .wait_bot_text("#ops", "the refusal", |t| t.contains("was locked by"))
        .await;
    assert!(
        refused.starts_with("prod was locked by @bob at ")
            && refused.contains("(release freeze) after @alice asked for #")
            && refused.contains(": not deploying."),
        "{refused}"
    );
    // The request is over: a second approval finds nothing waiting, and nothing was deployed.
    w.sim
        .post("admin", "#ops", &format!("/approve #{deploy}"))
        .unwrap();
    w.wait_bot_text("#ops", "nothing waits", |t| {
        t == format!("No operation #{deploy} is waiting for approval.")
    })
    .await;
    assert!(image_of(&w, "prod").ends_with(":6.5.0"), "nothing deployed");
    w.stop_bot().await;
    assert!(
        refusals_audited(&w)
            .iter()
            .any(|r| r.starts_with("prod was locked by @bob") && r.contains("not deploying")),
        "{:?}",
        refusals_audited(&w)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_confirmed_after_test_was_locked_is_refused_naming_the_lock() {
    let mut w = World::with_cluster().await;
    w.seed_catalog(&[(
        "test",
        "test-nightly",
        chrono::Utc::now().timestamp_millis() - 3_600_000,
    )]);
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/restore test latest").unwrap();
    let (_, code) = w.confirmation("#ops").await;
    w.sim
        .post("alice", "#ops", "/lock test maintenance")
        .unwrap();
    w.wait_bot_text("#ops", "the lock", |t| t.contains("test is locked"))
        .await;
    w.sim
        .post("alice", "#ops", &format!("/confirm {code}"))
        .unwrap();
    let refused = w
        .wait_bot_text("#ops", "the refusal", |t| t.contains("was locked by"))
        .await;
    assert!(
        refused.starts_with("test was locked by @alice at ")
            && refused.contains("(maintenance) after @alice asked for #")
            && refused.contains(": not restoring."),
        "{refused}"
    );
    assert!(
        w.kube()
            .list("jobs", Some("test"))
            .iter()
            .all(|j| !j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("mongodb-restore-")),
        "nothing restored"
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_approvals_one_is_not_enough_and_a_second_different_person_runs_it() {
    let mut w = World::with_cluster().await;
    w.sim.add_user("carol", &["user", "ops"]);
    w.sim.join("carol", "#ops").unwrap();
    let mut config = w.config();
    config
        .environments
        .get_mut("prod")
        .unwrap()
        .policy
        .approvals = 2;
    w.start_bot_with(config).await;
    w.sim.post("alice", "#ops", "/deploy prod 7.0.0").unwrap();
    let question = w.confirm("alice", "#ops").await;
    assert!(
        question.contains(
            "It then needs 2 more people: 2 different users who may run it each type `approve #"
        ),
        "{question}"
    );
    let op = approval_op(&w, "deploy prod 7.0.0 needs 2 more people").await;
    w.sim
        .post("admin", "#ops", &format!("/approve #{op}"))
        .unwrap();
    w.wait_bot_text("#ops", "the first approval", |t| {
        t == format!(
            "#{op} deploy prod 7.0.0: approved by @admin (1 of 2). It still needs 1 approval: another user who may run it types `approve #{op}`."
        )
    })
    .await;
    // The same approver again counts once; the requester never counts.
    w.sim
        .post("admin", "#ops", &format!("/approve #{op}"))
        .unwrap();
    w.wait_bot_text("#ops", "the repeated approval", |t| {
        t == format!("You already approved #{op}; it still needs 1 approval from someone else.")
    })
    .await;
    w.sim
        .post("alice", "#ops", &format!("/approve #{op}"))
        .unwrap();
    w.wait_bot_text("#ops", "the self-approval", |t| {
        t == "You can't approve your own request; another authorized user must."
    })
    .await;
    assert!(
        image_of(&w, "prod").ends_with(":6.5.0"),
        "one is not enough"
    );
    w.sim
        .post("carol", "#ops", &format!("/approve #{op}"))
        .unwrap();
    w.wait_bot_text("#ops", "the second approval", |t| {
        t == format!("#{op} deploy prod 7.0.0: approved by @admin and @carol (2 of 2); starting.")
    })
    .await;
    let done = w
        .wait_bot_text("#ops", "the deploy", |t| {
            t.starts_with("✅") || t.starts_with("❌")
        })
        .await;
    assert!(done.starts_with("✅"), "{done}");
    assert!(image_of(&w, "prod").ends_with(":7.0.0"));
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_approved_after_prods_image_changed_by_hand_is_refused_naming_the_change() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/deploy prod 7.0.0").unwrap();
    w.confirm("alice", "#ops").await;
    let op = approval_op(&w, "deploy prod 7.0.0 needs a second person").await;
    // Someone changes prod by hand while the deploy waits: its plan was made against 6.5.0.
    let repo = rocketops::sandbox::kube::seed::ROCKETCHAT_REPO;
    rocketops::cluster::Cluster::from_kubeconfig(&w.kubeconfig(), Some("prod"), None)
        .await
        .unwrap()
        .set_image(
            "rocketchat",
            "rocketchat",
            &format!("{repo}:6.6.0"),
            "kubectl set image",
        )
        .await
        .unwrap();
    w.sim
        .post("admin", "#ops", &format!("/approve #{op}"))
        .unwrap();
    let refused = w
        .wait_bot_text("#ops", "the refusal", |t| t.contains("changed from"))
        .await;
    assert_eq!(
        refused,
        format!(
            "prod changed from `{repo}:6.5.0` to `{repo}:6.6.0` after @alice asked for #{op}: not deploying. Send the command again if it is still wanted."
        )
    );
    assert!(image_of(&w, "prod").ends_with(":6.6.0"), "not deployed");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_and_an_unlock_take_no_operation_number_so_the_next_deploy_is_number_one() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/lock test freeze").unwrap();
    w.wait_bot_text("#ops", "the lock", |t| t.starts_with("🔒"))
        .await;
    w.sim.post("alice", "#ops", "/unlock test").unwrap();
    w.wait_bot_text("#ops", "the unlock", |t| t.starts_with("🔓"))
        .await;
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    let done = w
        .wait_bot_text("#ops", "the deploy", |t| t.starts_with("✅"))
        .await;
    assert!(done.contains("#1 deploy test 7.0.0"), "{done}");
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_the_asker_their_roles_and_what_they_may_run_where_from_the_room_they_ask_in()
{
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/whoami").unwrap();
    let alice = w
        .wait_bot_text("#ops", "alice's whoami", |t| {
            t.starts_with("You are @alice")
        })
        .await;
    assert!(
        alice.contains("roles, as I see them: user, ops.")
            && alice.contains("\n• *prod*: deploy, rollback, backup list,")
            && alice.contains("\n• *test*: deploy, rollback, scale, backup now,")
            && alice.contains("\n• anywhere: cancel, approve, confirm, whoami, help, ping"),
        "{alice}"
    );
    // prod takes commands only from #ops: asked in a direct message, it is not offered.
    w.sim.post("alice", "@rocketops", "whoami").unwrap();
    let dm = w.sim.direct_room("alice", "rocketops").unwrap();
    let msgs = w
        .wait_for(&dm, "alice's whoami in a direct message", |m| {
            !bot_texts(m).is_empty()
        })
        .await;
    let direct = last_bot_text(&msgs);
    assert!(
        direct.starts_with("You are @alice") && !direct.contains("*prod*"),
        "{direct}"
    );
    assert!(direct.contains("\n• *test*: deploy,"), "{direct}");
    // Without the ops role, bob may read both environments and change neither.
    w.sim.post("bob", "#ops", "/whoami").unwrap();
    let bob = w
        .wait_bot_text("#ops", "bob's whoami", |t| t.starts_with("You are @bob"))
        .await;
    assert!(
        bob.contains("roles, as I see them: user.")
            && bob.contains("\n• *prod*: backup list, backup report, status, history,")
            && !bob.contains("deploy"),
        "{bob}"
    );
    w.stop_bot().await;
}
