//! The journal as the only truth about an operation: a record written by an older version resumes, and resuming never depends on today's grammar, bounds or runbooks.

use rocketops::journal::{
    Facts, JOURNAL_VERSION, LockKey, OpId, OpRecord, OpSpec, OpState, StepKind, StepRecord,
};

use crate::support::{World, bot_texts};

fn ops_room(w: &World) -> String {
    w.sim.room_id("ops").unwrap()
}

/// A running operation of this version's format, as if the bot had died before its first step.
fn running(w: &World, id: u64, command: &str, spec: OpSpec, steps: &[&str]) -> OpRecord {
    OpRecord {
        id: OpId::new(id),
        env: "test".into(),
        v: JOURNAL_VERSION,
        command: command.into(),
        spec: Some(spec),
        user: "alice".into(),
        room_id: ops_room(w),
        steps: steps
            .iter()
            .map(|s| StepRecord::pending(StepKind::parse(s)))
            .collect(),
        state: OpState::Running,
        started_ms: chrono::Utc::now().timestamp_millis(),
        facts: Facts {
            locks: vec![LockKey::env("test")],
            ..Facts::default()
        },
        mark: OpRecord::new_mark(),
        room: "ops".into(),
        origin: None,
        ..OpRecord::default()
    }
}

/// Message `id` (`text`, in #ops) on record as taken and being handled, as a process killed
/// before recording it answered leaves it.
fn leave_being_handled(w: &World, id: &str, text: &str) {
    let store = w.open_store();
    // Taken already when the process was handling it (true or false: it is taken now).
    let _taken = store
        .mark_seen(id, chrono::Utc::now().timestamp_millis())
        .unwrap();
    store
        .begin_handling(
            id,
            &serde_json::json!({"id": id, "room_id": ops_room(w), "thread": null, "text": text}),
        )
        .unwrap();
}

fn journal(w: &World, rec: &OpRecord) {
    let store = w.open_store();
    store.put_op(rec).unwrap();
    assert_eq!(
        store.acquire_env_op(&LockKey::env("test"), rec.id).unwrap(),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_journaled_by_the_first_format_resumes_after_an_upgrade_with_the_backup_it_had_chosen()
 {
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    // A newer backup exists now: `latest` would pick it, but the journal chose test-nightly.
    w.seed_catalog(&[
        ("test", "test-nightly", now - 7_200_000),
        ("test", "test-later", now - 60_000),
    ]);
    w.kube().set_replicas("test", "rocketchat", 0).unwrap();
    let golden = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/journal-v1-restore.json"),
    )
    .unwrap()
    .replace("GENERAL-OPS", &ops_room(&w));
    {
        let store = w.open_store();
        store.put_op_json(OpId::new(41), golden.as_bytes()).unwrap();
        let read = store.get_op(OpId::new(41)).unwrap().unwrap();
        assert_eq!(
            (read.v, read.spec.is_none()),
            (0, true),
            "read as the first format"
        );
        assert_eq!(read.facts.replicas, Some(3));
        assert_eq!(
            read.lock_keys(),
            vec![LockKey::env("test"), LockKey::backups("test")]
        );
    }
    w.start_bot().await;
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
    assert!(done.contains("test-nightly of test restored"), "{done}");
    assert!(
        done.contains("rocketchat back at 3 replicas, all ready"),
        "{done}"
    );
    let jobs = w.kube().list("jobs", Some("test"));
    let restore = jobs
        .iter()
        .find(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("mongodb-restore-41-k3v9q")
        })
        .expect("the restore Job, named with the journaled mark");
    assert!(restore.to_string().contains("test-nightly"));
    assert!(!restore.to_string().contains("test-later"));
    assert_eq!(
        w.kube().get("deployments", "test", "rocketchat").unwrap()["spec"]["replicas"],
        3
    );
    w.stop_bot().await;
    let store = w.open_store();
    let rec = store.get_op(OpId::new(41)).unwrap().unwrap();
    assert_eq!(rec.v, JOURNAL_VERSION, "rewritten in this version's format");
    assert!(matches!(rec.spec, Some(OpSpec::Restore(ref r)) if r.backup.name == "test-nightly"));
    assert_eq!(rec.state, OpState::Succeeded);
    assert_eq!(store.env_op(&LockKey::env("test")).unwrap(), None);
    assert_eq!(store.env_op(&LockKey::backups("test")).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_scale_finishes_as_it_was_asked_after_the_replica_bound_was_lowered() {
    let mut w = World::with_cluster().await;
    let rec = running(
        &w,
        7,
        "scale test 5",
        OpSpec::Scale(rocketops::journal::Scale {
            replicas: 5,
            component: None,
        }),
        &["scale"],
    );
    journal(&w, &rec);
    let mut config = w.config();
    // `scale test 5` no longer parses with this bound; the journal does not need it to.
    config.environments.get_mut("test").unwrap().max_replicas = 4;
    w.start_bot_with(config).await;
    let msgs = w
        .wait_for("#ops", "the resumed scale", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    assert!(
        bot_texts(&msgs)
            .iter()
            .any(|t| t.contains("rocketchat from 3 to 5 replicas")),
        "{:?}",
        bot_texts(&msgs)
    );
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_removed_while_its_operation_was_interrupted_still_runs_the_job_it_started_with()
{
    let mut w = World::with_cluster().await;
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: gone-runbook\n  namespace: ${namespace}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: run\n          image: busybox\n          args: [\"echo\", \"${what}\"]\n";
    let rec = running(
        &w,
        9,
        "gone test what=cleanup",
        OpSpec::Runbook(rocketops::journal::Runbook {
            name: "gone".into(),
            params: [("what".to_string(), "cleanup".to_string())].into(),
            job: job.into(),
        }),
        &["job"],
    );
    journal(&w, &rec);
    w.start_bot().await;
    w.wait_for("#ops", "the resumed runbook", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("✅"))
    })
    .await;
    let made = w.kube().list("jobs", Some("test"));
    let ran = made
        .iter()
        .find(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("gone-runbook-9-")
        })
        .expect("the runbook's Job");
    assert!(ran.to_string().contains("cleanup"));
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_by_an_operation_that_had_ended_is_released_when_the_bot_starts() {
    let mut w = World::with_cluster().await;
    let mut rec = running(
        &w,
        5,
        "scale test 2",
        OpSpec::Scale(rocketops::journal::Scale {
            replicas: 2,
            component: None,
        }),
        &["scale"],
    );
    rec.state = OpState::Succeeded;
    journal(&w, &rec); // ended, but died before its lock was released
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/scale test 2").unwrap();
    let msgs = w
        .wait_for("#ops", "the scale", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.starts_with("✅") || t.contains("busy"))
        })
        .await;
    assert!(
        bot_texts(&msgs).iter().any(|t| t.starts_with("✅")),
        "{:?}",
        bot_texts(&msgs)
    );
    w.stop_bot().await;
}

#[test]
fn under_kills_dropped_sockets_and_failed_writes_no_operation_is_lost_doubled_or_left_holding_anything()
 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args([
            "bench",
            "--chaos",
            "--chaos-ops",
            "24",
            "--chaos-kills",
            "8",
            "--chaos-seed",
            "7",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("8 SIGKILLs")
            && report.contains("operations lost 0, run twice 0, progress messages duplicated 0, locks left held 0, apps left scaled down 0"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_bot_was_handling_when_it_died_gets_a_word_after_the_restart_and_is_not_run()
{
    let mut w = World::with_cluster().await;
    // As a bot killed after recording `/scale test 1` as seen, before answering it, leaves it.
    leave_being_handled(&w, "m-killed", "/scale test 1");
    w.start_bot().await;
    let told = w
        .wait_bot_text("#ops", "the word after the restart", |t| {
            t.starts_with("I restarted")
        })
        .await;
    assert!(
        told.contains("(`/scale test 1`)") && told.contains("If you got no answer, send it again."),
        "{told}"
    );
    w.stop_bot().await;
    assert_eq!(
        w.kube().get("deployments", "test", "rocketchat").unwrap()["spec"]["replicas"],
        3,
        "not run"
    );
    let store = w.open_store();
    let left: Vec<serde_json::Value> = store.unanswered().unwrap();
    assert!(left.is_empty(), "told once: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_answered_by_a_process_that_died_before_recording_it_gets_no_word_after_the_restart()
 {
    let mut w = World::new().await;
    w.start_bot().await;
    let asked = w.sim.post("alice", "#ops", "/ping answered").unwrap();
    let id = asked["_id"].as_str().unwrap().to_string();
    w.wait_for("#ops", "the answer", |m| {
        crate::support::count(m, "pong answered") == 1
    })
    .await;
    w.stop_bot().await;
    // As a process killed after answering, before recording the message answered, leaves it.
    leave_being_handled(&w, &id, "/ping answered");
    w.start_bot().await;
    w.ping_ok("sentinel").await;
    let msgs = w.sim.messages("#ops").unwrap();
    assert!(
        !bot_texts(&msgs)
            .iter()
            .any(|t| t.starts_with("I restarted")),
        "{:?}",
        bot_texts(&msgs)
    );
    w.stop_bot().await;
    let left: Vec<serde_json::Value> = w.open_store().unanswered().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_operation_had_started_gets_no_word_after_the_restart_and_its_operation_resumes()
 {
    let mut w = World::with_cluster().await;
    // As a bot killed after starting `/scale test 5`, before recording the message answered.
    leave_being_handled(&w, "m-started", "/scale test 5");
    let mut rec = running(
        &w,
        3,
        "scale test 5",
        OpSpec::Scale(rocketops::journal::Scale {
            replicas: 5,
            component: None,
        }),
        &["scale"],
    );
    rec.origin = Some("m-started".into());
    journal(&w, &rec);
    w.start_bot().await;
    let msgs = w
        .wait_for("#ops", "the resumed scale", |m| {
            bot_texts(m).iter().any(|t| t.starts_with("✅"))
        })
        .await;
    assert!(
        !bot_texts(&msgs)
            .iter()
            .any(|t| t.starts_with("I restarted")),
        "{:?}",
        bot_texts(&msgs)
    );
    w.stop_bot().await;
    let left: Vec<serde_json::Value> = w.open_store().unanswered().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_message_journaled_but_never_posted_is_posted_once_under_its_id_after_a_restart()
{
    let mut w = World::with_cluster().await;
    let mut rec = running(
        &w,
        12,
        "scale test 2",
        OpSpec::Scale(rocketops::journal::Scale {
            replicas: 2,
            component: None,
        }),
        &["scale"],
    );
    // The bot died after journaling the operation and before posting its progress message.
    rec.message_id = Some("ProgressOf12xxxxx".into());
    journal(&w, &rec);
    w.start_bot().await;
    w.wait_bot_text("#ops", "the resumed scale", |t| t.starts_with("✅"))
        .await;
    w.stop_bot().await;
    let progress: Vec<serde_json::Value> = w
        .sim
        .messages("#ops")
        .unwrap()
        .into_iter()
        .filter(|m| m["msg"].as_str().is_some_and(|t| t.contains("*#12 ")))
        .collect();
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0]["_id"], "ProgressOf12xxxxx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_journaled_by_the_second_format_resumes_after_an_upgrade_and_puts_its_autoscaler_back()
 {
    let mut w = World::with_cluster().await;
    let now = chrono::Utc::now().timestamp_millis();
    w.seed_catalog(&[("test", "test-nightly", now - 7_200_000)]);
    // As the journaled scale down left it: the app at zero, its autoscaler removed.
    w.kube().set_replicas("test", "rocketchat", 0).unwrap();
    let golden = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/journal-v2-restore-hpa.json"),
    )
    .unwrap()
    .replace("GENERAL-OPS", &ops_room(&w));
    w.open_store()
        .put_op_json(OpId::new(58), golden.as_bytes())
        .unwrap();
    w.start_bot().await;
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
    assert!(done.contains("autoscaler rocketchat restored"), "{done}");
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
        (&2.into(), &6.into(), &"chat".into())
    );
    w.stop_bot().await;
    let rec = w.open_store().get_op(OpId::new(58)).unwrap().unwrap();
    assert_eq!(rec.v, JOURNAL_VERSION, "rewritten in this version's format");
    assert_eq!(rec.state, OpState::Succeeded);
}
