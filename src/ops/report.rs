//! The daily backup report of an environment (a pure function of the catalog): backups of the last day, the last test-restore, storage and its trend, failures, pruning; as Rocket.Chat attachments coloured by health.

use serde_json::{Value, json};

use crate::catalog::{self, BackupRecord, Failure, Prune};

const DAY_MS: i64 = 86_400_000;

/// How an environment's backups are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Good,
    Warning,
    Bad,
}

impl Health {
    fn colour(self) -> &'static str {
        match self {
            Health::Good => "#2de0a5",
            Health::Warning => "#ffd21f",
            Health::Bad => "#f5455c",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Health::Good => "✅ healthy",
            Health::Warning => "⚠️ needs a look",
            Health::Bad => "🔴 failing",
        }
    }
}

/// What the report is made of.
pub struct Input<'a> {
    pub env: &'a str,
    pub now_ms: i64,
    /// Every backup of the environment in the catalog, newest first.
    pub backups: &'a [BackupRecord],
    /// Failed backups of the last day.
    pub failures: &'a [Failure],
    /// Prunes of the last day.
    pub prunes: &'a [Prune],
}

/// A report: the message text and its attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub health: Health,
    pub text: String,
    pub attachments: Vec<Value>,
}

fn duration(secs: u64) -> String {
    crate::clock::human(std::time::Duration::from_secs(secs))
}

/// Pure: the daily report.
pub fn daily(i: &Input) -> Report {
    let since = i.now_ms - DAY_MS;
    let recent: Vec<&BackupRecord> = i.backups.iter().filter(|b| b.finished_ms > since).collect();
    let last_verify = i
        .backups
        .iter()
        .filter_map(|b| b.verify.as_ref().map(|v| (b, v)))
        .max_by_key(|(_, v)| v.at_ms);
    let stored: u64 = i.backups.iter().filter_map(|b| b.bytes).sum();
    // The trend: the newest backup's size against the newest one of a week before (data growth).
    let newest = i.backups.iter().find_map(|b| b.bytes);
    let week_ago = i
        .backups
        .iter()
        .filter(|b| b.finished_ms <= i.now_ms - 7 * DAY_MS)
        .find_map(|b| b.bytes);

    let mut problems = Vec::new();
    let mut health = Health::Good;
    let mut worse = |h: Health, why: String| {
        if matches!(
            (health, h),
            (Health::Good, _) | (Health::Warning, Health::Bad)
        ) {
            health = h;
        }
        problems.push(why);
    };
    if recent.is_empty() {
        worse(Health::Bad, "no backup in the last 24 hours".into());
    }
    if !i.failures.is_empty() {
        worse(
            Health::Bad,
            format!("{} failed backup(s) in the last 24 hours", i.failures.len()),
        );
    }
    match last_verify {
        None => worse(Health::Warning, "no backup has been test-restored".into()),
        Some((_, v)) if !v.ok => worse(Health::Bad, "the last test-restore failed".into()),
        Some((_, v)) if i.now_ms - v.at_ms > 7 * DAY_MS => worse(
            Health::Warning,
            "the last successful test-restore is over a week old".into(),
        ),
        _ => {}
    }
    // Off-site copies, where the environment makes them (a backup says whether it was copied).
    let copies_offsite = i
        .backups
        .iter()
        .any(|b| b.offsite.is_some() || b.offsite_error.is_some());
    let offsite = copies_offsite.then(|| {
        let copied = recent.iter().filter(|b| b.offsite.is_some()).count();
        if copied < recent.len() {
            worse(
                Health::Warning,
                format!(
                    "{} backup(s) of the last 24 hours not copied off-site",
                    recent.len() - copied
                ),
            );
        }
        let newest = i
            .backups
            .iter()
            .find_map(|b| b.offsite.as_ref().map(|c| (b, c)));
        format!(
            "{copied} of {} backup(s) copied{}",
            recent.len(),
            newest
                .map(|(b, c)| format!(
                    "; newest copy `{}` {}, {}",
                    b.name,
                    catalog::ago(c.at_ms, i.now_ms),
                    catalog::size(c.bytes)
                ))
                .unwrap_or_else(|| "; none off-site yet".into())
        )
    });

    let taken = if recent.is_empty() {
        "none".to_string()
    } else {
        recent
            .iter()
            .map(|b| {
                format!(
                    "`{}` {}{} · {}",
                    b.name,
                    catalog::size(b.bytes),
                    b.duration_secs
                        .map(|s| format!(" in {}", duration(s)))
                        .unwrap_or_default(),
                    b.by
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let verify = match last_verify {
        None => "never — `verify ENV` proves a backup".to_string(),
        Some((b, v)) => format!(
            "{} `{}` {}: restore took {} (recovery time), backup was {} old (recovery point)",
            if v.ok { "✓" } else { "✗" },
            b.name,
            catalog::ago(v.at_ms, i.now_ms),
            v.restore_secs
                .map(duration)
                .unwrap_or_else(|| "unknown".into()),
            duration(v.age_secs / 60 * 60),
        ),
    };
    let trend = match (newest, week_ago) {
        (Some(n), Some(w)) if w > 0 => {
            let pct = (n as f64 - w as f64) / w as f64 * 100.0;
            format!("backup size {pct:+.1}% in 7 days")
        }
        _ => "no backup from a week ago to compare".to_string(),
    };
    let storage = format!(
        "{} in {} backup(s), {trend}{}",
        catalog::size(Some(stored)),
        i.backups.len(),
        i.prunes
            .last()
            .and_then(|p| p.free_bytes)
            .map(|f| format!("; {} free on the volume", catalog::size(Some(f))))
            .unwrap_or_default()
    );
    let failures = if i.failures.is_empty() {
        "none".to_string()
    } else {
        i.failures
            .iter()
            .map(|f| {
                format!(
                    "`{}` {} ({})",
                    f.job,
                    catalog::ago(f.at_ms, i.now_ms),
                    f.reason
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let pruned: Vec<String> = i.prunes.iter().flat_map(|p| p.removed.clone()).collect();
    let pruned = if pruned.is_empty() {
        "nothing".to_string()
    } else {
        pruned
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let day = chrono::DateTime::from_timestamp_millis(i.now_ms)
        .unwrap_or_default()
        .format("%Y-%m-%d");
    let text = format!(
        "📋 *Backup report for {}* · {day} · {}{}",
        i.env,
        health.word(),
        if problems.is_empty() {
            String::new()
        } else {
            format!(": {}", problems.join("; "))
        }
    );
    let field = |title: &str, value: String, short: bool| json!({"short": short, "title": title, "value": value});
    let mut fields = vec![
        field("Backups taken", taken, false),
        field("Last test-restore", verify, false),
        field("Storage", storage, true),
        field("Failures", failures, true),
        field("Pruned", pruned, false),
    ];
    if let Some(o) = offsite {
        fields.insert(3, field("Off-site", o, true));
    }
    let attachment = json!({
        "color": health.colour(),
        "title": format!("{} backups, last 24 hours", i.env),
        "fields": fields,
    });
    Report {
        health,
        text,
        attachments: vec![attachment],
    }
}

/// The daily report of `env` from the store's catalog, as of `now_ms`.
pub fn for_env(store: &crate::store::Store, env: &str, now_ms: i64) -> Report {
    let backups = catalog::list(store, Some(env));
    let failures = catalog::failures(store, env, now_ms - DAY_MS);
    let prunes = catalog::prunes(store, env, now_ms - DAY_MS);
    daily(&Input {
        env,
        now_ms,
        backups: &backups,
        failures: &failures,
        prunes: &prunes,
    })
}

/// The report as plain text (for a server that refuses attachments).
pub fn plain(r: &Report) -> String {
    let mut out = r.text.clone();
    for a in &r.attachments {
        for f in a["fields"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n*{}*: {}",
                f["title"].as_str().unwrap_or_default(),
                f["value"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::VerifyRecord;

    const NOW: i64 = 1_795_341_600_000; // 2026-11-22T08:00:00Z

    fn backup(name: &str, hours_ago: i64, mb: u64, verify: Option<(bool, i64)>) -> BackupRecord {
        BackupRecord {
            env: "prod".into(),
            name: name.into(),
            job: format!("job-{name}"),
            bytes: Some(mb * 1_000_000),
            sha256: Some("ab".into()),
            finished_ms: NOW - hours_ago * 3_600_000,
            by: "schedule (#7)".into(),
            verified: verify.map(|(ok, _)| ok),
            duration_secs: Some(190),
            collections: Some(57),
            documents: Some(120_743),
            verify: verify.map(|(ok, at_hours_ago)| VerifyRecord {
                ok,
                at_ms: NOW - at_hours_ago * 3_600_000,
                restore_secs: Some(41),
                age_secs: 5 * 3600 + 17,
                detail: String::new(),
                op: crate::journal::OpId::new(8),
            }),
            created_by: None,
            outside: false,
            removing_ms: None,
            offsite: None,
            offsite_error: None,
        }
    }

    fn render(r: &Report) -> String {
        format!(
            "{}\n{}",
            r.text,
            serde_json::to_string_pretty(&r.attachments).unwrap()
        )
    }

    #[test]
    fn a_healthy_day_is_green_with_the_recovery_figures() {
        let backups = [
            backup("prod-20261122T020000Z", 6, 50, Some((true, 1))),
            backup("prod-20261121T020000Z", 30, 49, None),
            backup("prod-20261114T020000Z", 8 * 24 + 6, 45, None),
        ];
        let prunes = [Prune {
            env: "prod".into(),
            at_ms: NOW - 2 * 3_600_000,
            removed: vec!["prod-20261001T020000Z".into()],
            used_bytes: Some(144_000_000),
            free_bytes: Some(9_800_000_000),
        }];
        let r = daily(&Input {
            env: "prod",
            now_ms: NOW,
            backups: &backups,
            failures: &[],
            prunes: &prunes,
        });
        assert_eq!(r.health, Health::Good);
        insta::assert_snapshot!("report_healthy", render(&r));
    }

    #[test]
    fn a_backup_of_the_day_not_copied_off_site_turns_the_report_yellow_and_is_counted() {
        let mut copied = backup("prod-20261122T020000Z", 6, 50, Some((true, 1)));
        copied.offsite = Some(crate::catalog::OffsiteCopy {
            url: "s3://acme/prod/prod-20261122T020000Z".into(),
            sha256: Some("ab".into()),
            bytes: Some(50_100_000),
            at_ms: NOW - 5 * 3_600_000,
        });
        let mut failed = backup("prod-20261122T070000Z", 1, 50, None);
        failed.offsite_error = Some("job failed".into());
        let backups = [failed, copied];
        let r = daily(&Input {
            env: "prod",
            now_ms: NOW,
            backups: &backups,
            failures: &[],
            prunes: &[],
        });
        assert_eq!(r.health, Health::Warning);
        assert!(
            r.text
                .ends_with(": 1 backup(s) of the last 24 hours not copied off-site"),
            "{}",
            r.text
        );
        let fields = r.attachments[0]["fields"].as_array().unwrap();
        let offsite = fields.iter().find(|f| f["title"] == "Off-site").unwrap();
        assert_eq!(
            offsite["value"],
            "1 of 2 backup(s) copied; newest copy `prod-20261122T020000Z` 5 h ago, 50.1 MB"
        );
        // An environment that copies nothing off-site has no such field.
        let plain = [backup("prod-20261122T020000Z", 6, 50, Some((true, 1)))];
        let r = daily(&Input {
            env: "prod",
            now_ms: NOW,
            backups: &plain,
            failures: &[],
            prunes: &[],
        });
        let fields = r.attachments[0]["fields"].as_array().unwrap();
        assert!(fields.iter().all(|f| f["title"] != "Off-site"));
    }

    #[test]
    fn a_day_with_a_failure_and_a_failed_verify_is_red_and_says_why() {
        let backups = [backup("prod-20261120T020000Z", 54, 48, Some((false, 3)))];
        let failures = [Failure {
            env: "prod".into(),
            job: "mongodb-backup-29391000".into(),
            at_ms: NOW - 6 * 3_600_000,
            reason: "BackoffLimitExceeded".into(),
        }];
        let r = daily(&Input {
            env: "prod",
            now_ms: NOW,
            backups: &backups,
            failures: &failures,
            prunes: &[],
        });
        assert_eq!(r.health, Health::Bad);
        insta::assert_snapshot!("report_failing", render(&r));
    }

    #[test]
    fn backups_never_test_restored_are_a_warning() {
        let backups = [backup("prod-20261122T020000Z", 6, 50, None)];
        let r = daily(&Input {
            env: "prod",
            now_ms: NOW,
            backups: &backups,
            failures: &[],
            prunes: &[],
        });
        assert_eq!(r.health, Health::Warning);
        assert!(
            plain(&r).contains("*Last test-restore*: never"),
            "{}",
            plain(&r)
        );
        assert!(
            r.text
                .ends_with("⚠️ needs a look: no backup has been test-restored")
        );
    }
}
