//! The whole bot on one clock: a week of schedules, an alert mute and the reports, run in seconds on an accelerated clock that operations, alerts, the catalog and the scheduler all read.

use std::time::Duration;

use rocketops::sandbox::kube::JobScript;
use serde_json::json;

use crate::support::{World, bot_texts};

fn reports(w: &World) -> usize {
    bot_texts(&w.sim.messages("#ops").unwrap())
        .iter()
        .filter(|t| t.starts_with("📋 *Backup report for test*"))
        .count()
}

fn alerts_about(w: &World, what: &str) -> usize {
    bot_texts(&w.sim.messages("#alerts").unwrap())
        .iter()
        .filter(|t| t.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_schedules_a_two_day_mute_and_the_daily_reports_run_in_seconds_on_one_clock() {
    let mut w = World::with_cluster().await;
    let mut c = w.config();
    c.alerts.check_every = Duration::from_millis(100);
    let test = c.environments.get_mut("test").unwrap();
    test.schedule.timezone = Some("UTC".into());
    test.schedule.backup = Some("0 1 * * *".into());
    test.schedule.verify = Some("0 9 * * *".into());
    test.schedule.report = Some("0 17 * * *".into());
    test.backup.report_channel = Some("ops".into());
    // Sunday evening before the week, so that the bot is up before Monday's first run; half a
    // scheduled day per real second.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T20:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    w.start_bot_at(c, rocketops::schedule::Clock::scaled(start, 43_200))
        .await;
    w.sim
        .post("alice", "#ops", "/alerts mute test 2d maintenance")
        .unwrap();
    let muted = w
        .wait_bot_text("#ops", "the mute", |t| t.contains("muted until"))
        .await;
    // The mute ends two days after the clock's Sunday, not two days after today's wall clock.
    assert!(muted.contains("2026-11-24"), "{muted}");
    // A Job fails while the alerts are muted: the alert is held.
    w.kube().script_job(
        "nightly-export",
        JobScript {
            exit_code: 1,
            ..JobScript::default()
        },
    );
    w.kube()
        .create(
            "jobs",
            "test",
            json!({"metadata": {"name": "nightly-export"},
                   "spec": {"template": {"spec": {"restartPolicy": "Never",
                            "containers": [{"name": "export", "image": "busybox"}]}}}}),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(alerts_about(&w, "nightly-export"), 0, "held by the mute");
    // Seven daily reports: the week has passed.
    let started = tokio::time::Instant::now();
    while reports(&w) < 7 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} reports after a minute",
            reports(&w)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        alerts_about(&w, "nightly-export"),
        1,
        "posted once when the mute ended"
    );
    w.stop_bot().await;
    let store = w.open_store();
    let runs: Vec<(String, String)> = store
        .all_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.user == "(schedule)" && e.decision == "scheduled")
        .map(|e| (e.command, e.reason.unwrap_or_default()))
        .collect();
    for (what, hour) in [
        ("backup now test", "01:00"),
        ("verify test", "09:00"),
        ("report", "17:00"),
    ] {
        let days: Vec<&str> = runs
            .iter()
            .filter(|(c, _)| c == what)
            .map(|(_, r)| r.as_str())
            .collect();
        assert!(days.len() >= 7, "{what}: {days:?}");
        for (i, d) in days.iter().take(7).enumerate() {
            let day = format!("2026-11-{} {hour}", 23 + i);
            assert!(d.contains(&day), "{what} run {i}: {d}");
        }
    }
    // Every operation is journaled on the same clock: within the week, not today.
    let ops = store.recent_ops(Some("test"), 100).unwrap();
    assert!(ops.len() >= 14, "{}", ops.len());
    let week_end = start.timestamp_millis() + 8 * 86_400_000;
    assert!(
        ops.iter()
            .all(|o| o.started_ms >= start.timestamp_millis() && o.started_ms < week_end),
        "operations stamped on the clock"
    );
}
