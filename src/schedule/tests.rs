//! Schedule tests under paused tokio time: time zones, both DST changes, missed runs, pause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config(schedule: &str) -> Config {
    let src = format!(
        "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.prod]\n[environments.prod.schedule]\n{schedule}\n"
    );
    Config::from_toml(&src, std::path::Path::new("t.toml"), &|_| None).unwrap()
}

/// (environment, kind, slot, when it ran).
type Run = (String, Kind, DateTime<Utc>, DateTime<Utc>);

#[derive(Clone, Default)]
struct Recorder {
    runs: Arc<Mutex<Vec<Run>>>,
    clock: Arc<Mutex<Option<Clock>>>,
}

impl Runner for Recorder {
    async fn run(&self, env: &str, kind: Kind, slot: DateTime<Utc>) {
        let now = self.clock.lock().unwrap().unwrap().now();
        self.runs
            .lock()
            .unwrap()
            .push((env.to_string(), kind, slot, now));
    }
}

/// Runs the scheduler from `start` for `days` of virtual time; returns (kind, UTC time) of each run.
async fn simulate(
    cfg: &Config,
    store: &Store,
    start: &str,
    days: u64,
) -> Vec<(Kind, DateTime<Utc>)> {
    let clock = Clock::starting_at(at(start));
    let rec = Recorder::default();
    *rec.clock.lock().unwrap() = Some(clock);
    let stop = CancellationToken::new();
    let task = {
        let (cfg, store, rec, stop) = (cfg.clone(), store.clone(), rec.clone(), stop.clone());
        tokio::spawn(async move { run(&cfg, &store, clock, &rec, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(days * 86_400)).await;
    stop.cancel();
    task.await.unwrap();
    let runs = rec.runs.lock().unwrap().clone();
    for (_, _, slot, fired) in &runs {
        assert!(fired >= slot, "a schedule ran before its time");
    }
    runs.into_iter().map(|(_, k, _, now)| (k, now)).collect()
}

#[tokio::test(start_paused = true)]
async fn schedules_fire_at_local_times_across_the_spring_dst_change() {
    // Europe/Berlin moves from 02:00 CET to 03:00 CEST on 2026-03-29; 02:30 does not exist that day.
    let cfg = config(
        "timezone = \"Europe/Berlin\"\nbackup = \"30 2 * * *\"\nverify = \"0 4 * * *\"\nreport = \"0 8 * * *\"",
    );
    let store = Store::temporary().unwrap();
    let runs = simulate(&cfg, &store, "2026-03-27T23:00:00Z", 3).await;
    let expect = vec![
        (Kind::Backup, at("2026-03-28T01:30:00Z")), // 02:30 CET
        (Kind::Verify, at("2026-03-28T03:00:00Z")), // 04:00 CET
        (Kind::Report, at("2026-03-28T07:00:00Z")), // 08:00 CET
        (Kind::Backup, at("2026-03-29T01:00:00Z")), // the gap: 03:00 CEST that day
        (Kind::Verify, at("2026-03-29T02:00:00Z")), // 04:00 CEST
        (Kind::Report, at("2026-03-29T06:00:00Z")), // 08:00 CEST
        (Kind::Backup, at("2026-03-30T00:30:00Z")), // 02:30 CEST
        (Kind::Verify, at("2026-03-30T02:00:00Z")),
        (Kind::Report, at("2026-03-30T06:00:00Z")),
    ];
    assert_eq!(runs, expect);
}

#[tokio::test(start_paused = true)]
async fn a_schedule_in_the_repeated_autumn_hour_runs_once() {
    // 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice; the backup runs once.
    let cfg = config("timezone = \"Europe/Berlin\"\nbackup = \"30 2 * * *\"");
    let store = Store::temporary().unwrap();
    let runs = simulate(&cfg, &store, "2026-10-24T12:00:00Z", 2).await;
    assert_eq!(
        runs,
        vec![
            (Kind::Backup, at("2026-10-25T00:30:00Z")), // 02:30 CEST, the first of the two
            (Kind::Backup, at("2026-10-26T01:30:00Z")), // 02:30 CET
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_schedule_missed_while_down_runs_once_at_start_not_once_per_slot() {
    let cfg = config("backup = \"0 * * * *\"");
    let store = Store::temporary().unwrap();
    // Seen running three days ago: 72 hourly slots were missed.
    store
        .records()
        .put(
            "prod/backup",
            &State {
                last_run_ms: Some(at("2026-11-18T10:00:00Z").timestamp_millis()),
                since_ms: None,
                paused_by: None,
            },
        )
        .unwrap();
    let clock = Clock::starting_at(at("2026-11-21T10:20:00Z"));
    let rec = Recorder::default();
    *rec.clock.lock().unwrap() = Some(clock);
    let stop = CancellationToken::new();
    let task = {
        let (cfg, store, rec, stop) = (cfg.clone(), store.clone(), rec.clone(), stop.clone());
        tokio::spawn(async move { run(&cfg, &store, clock, &rec, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    stop.cancel();
    task.await.unwrap();
    let runs = rec.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (_, kind, slot, fired) = &runs[0];
    assert_eq!(*kind, Kind::Backup);
    assert_eq!(*slot, at("2026-11-21T10:00:00Z"));
    assert_eq!(*fired, at("2026-11-21T10:20:00Z"));
}

#[tokio::test(start_paused = true)]
async fn a_schedule_never_seen_before_waits_for_its_first_slot() {
    let cfg = config("backup = \"0 * * * *\"");
    let store = Store::temporary().unwrap();
    let runs = simulate(&cfg, &store, "2026-11-21T10:20:00Z", 0).await;
    assert!(runs.is_empty());
    let runs = simulate(&cfg, &store, "2026-11-21T10:20:00Z", 1).await;
    assert_eq!(
        runs.first(),
        Some(&(Kind::Backup, at("2026-11-21T11:00:00Z")))
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_schedule_skips_its_runs_until_resumed() {
    let cfg = config("backup = \"0 2 * * *\"\nreport = \"0 8 * * *\"");
    let store = Store::temporary().unwrap();
    assert_eq!(
        set_paused(
            &store,
            &cfg,
            Some("prod"),
            Some(Kind::Backup),
            Some("alice")
        ),
        1
    );
    let runs = simulate(&cfg, &store, "2026-11-21T00:00:00Z", 1).await;
    assert_eq!(runs, vec![(Kind::Report, at("2026-11-21T08:00:00Z"))]);
    let list = render_list(&store, &cfg, at("2026-11-21T09:00:00Z"));
    assert!(list.contains("⏸ paused by @alice"), "{list}");
    assert_eq!(set_paused(&store, &cfg, Some("prod"), None, None), 1);
    // Resuming does not make up for the skipped run.
    let runs = simulate(&cfg, &store, "2026-11-22T00:00:00Z", 1).await;
    assert_eq!(
        runs,
        vec![
            (Kind::Backup, at("2026-11-22T02:00:00Z")),
            (Kind::Report, at("2026-11-22T08:00:00Z"))
        ]
    );
}

#[test]
fn schedule_list_shows_each_schedule_with_its_next_run_in_its_zone() {
    let cfg =
        config("timezone = \"America/New_York\"\nbackup = \"0 2 * * *\"\nprune = \"0 3 * * 0\"");
    let store = Store::temporary().unwrap();
    let text = render_list(&store, &cfg, at("2026-11-21T12:00:00Z"));
    assert_eq!(
        text,
        "*Schedules*\n• *prod* backup `0 2 * * *` (America/New_York) · next Sun 2026-11-22 02:00 EST\n• *prod* prune `0 3 * * 0` (America/New_York) · next Sun 2026-11-22 03:00 EST"
    );
}

#[test]
fn a_bad_cron_expression_or_zone_is_refused_with_its_key_and_line() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.prod.schedule]\ntimezone = \"Mars/Olympus\"\nbackup = \"every night\"\n";
    let e = Config::from_toml(src, std::path::Path::new("bot.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("environments.prod.schedule.timezone"), "{e}");
    assert!(e.contains("bot.toml:5"), "{e}");
    assert!(e.contains("environments.prod.schedule.backup"), "{e}");
    assert!(e.contains("bot.toml:6"), "{e}");
}

#[test]
fn a_scheduled_refresh_needs_another_environment_and_never_targets_production() {
    let cfg = |body: &str| {
        let src = format!(
            "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.test]\n[environments.prod]\n{body}\n"
        );
        Config::from_toml(&src, std::path::Path::new("bot.toml"), &|_| None)
    };
    let ok = cfg("[environments.test.schedule]\nrefresh = \"0 5 * * *\"\nrefresh_from = \"prod\"")
        .unwrap();
    let text = render_list(
        &Store::temporary().unwrap(),
        &ok,
        at("2026-11-21T12:00:00Z"),
    );
    assert!(
        text.contains("*test* refresh from prod `0 5 * * *`"),
        "{text}"
    );
    let e = cfg("[environments.test.schedule]\nrefresh = \"0 5 * * *\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("environments.test.schedule.refresh") && e.contains("needs `refresh_from`"),
        "{e}"
    );
    let e = cfg("[environments.prod.schedule]\nrefresh = \"0 5 * * *\"\nrefresh_from = \"test\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("prod is production"), "{e}");
    let e =
        cfg("[environments.test.schedule]\nrefresh = \"0 5 * * *\"\nrefresh_from = \"staging\"")
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("`staging` is not another configured environment"),
        "{e}"
    );
}

#[test]
fn crons_and_quiet_hours_are_parsed_when_read_and_every_bad_one_is_reported_in_one_run() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[alerts]\nquiet_hours = \"25:00-07:00\"\n[environments.prod.schedule]\nbackup = \"0 2 * * *\"\nverify = \"61 * * * *\"\nreport = \"soon\"\n";
    let e = Config::from_toml(src, std::path::Path::new("bot.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    for (key, line) in [
        ("alerts.quiet_hours", "bot.toml:5"),
        ("environments.prod.schedule.verify", "bot.toml:8"),
        ("environments.prod.schedule.report", "bot.toml:9"),
    ] {
        assert!(e.contains(key) && e.contains(line), "{key} at {line}: {e}");
    }
    assert!(!e.contains("schedule.backup"), "{e}");
    let good = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[alerts]\nquiet_hours = \"22:00-07:00\"\n[environments.prod.schedule]\nbackup = \"0 2 * * *\"\n";
    let c = Config::from_toml(good, std::path::Path::new("bot.toml"), &|_| None).unwrap();
    let backup = c.environments["prod"].schedule.backup.as_ref().unwrap();
    assert!(backup.cron().is_ok(), "parsed once, when read");
    assert_eq!(
        c.alerts.quiet_hours.as_ref().and_then(|q| q.window()),
        Some((22 * 60, 7 * 60))
    );
}
