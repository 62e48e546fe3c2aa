//! The backup catalog: every backup the bot took or saw the cluster take, with its size, checksum, who or what took it, and whether a test-restore proved it.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const TREE: &str = "backups";

/// One backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub env: String,
    /// The backup's name (from the Job's result, else the Job's name).
    pub name: String,
    pub job: String,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub finished_ms: i64,
    /// `@alice (#12)` or `schedule (cronjob mongodb-backup)`.
    pub by: String,
    /// `Some(true)` proven by a test-restore, `Some(false)` failed one, `None` never tried.
    #[serde(default)]
    pub verified: Option<bool>,
}

impl BackupRecord {
    /// A record from a backup Job's termination message (`{"name","bytes","sha256"}`).
    pub fn from_result(
        env: &str,
        job: &str,
        message: &str,
        by: &str,
        finished_ms: i64,
    ) -> BackupRecord {
        let v: serde_json::Value = serde_json::from_str(message).unwrap_or(serde_json::Value::Null);
        BackupRecord {
            env: env.into(),
            name: v["name"].as_str().unwrap_or(job).to_string(),
            job: job.into(),
            bytes: v["bytes"].as_u64(),
            sha256: v["sha256"].as_str().map(str::to_string),
            finished_ms,
            by: by.into(),
            verified: None,
        }
    }
}

fn key(env: &str, job: &str) -> String {
    format!("{env}/{job}")
}

/// Records a backup (replacing what was known about the same Job).
pub fn record(store: &Store, b: &BackupRecord) -> Result<(), StoreError> {
    store.kv_put(TREE, &key(&b.env, &b.job), b)
}

/// Records a backup unless the same Job is already known (for backups seen through watches).
pub fn record_if_new(store: &Store, b: &BackupRecord) -> Result<bool, StoreError> {
    if store
        .kv_get::<BackupRecord>(TREE, &key(&b.env, &b.job))?
        .is_some()
    {
        return Ok(false);
    }
    record(store, b)?;
    Ok(true)
}

/// Backups, newest first, of one environment or all.
pub fn list(store: &Store, env: Option<&str>) -> Vec<BackupRecord> {
    let mut v: Vec<BackupRecord> = store
        .kv_all(TREE)
        .unwrap_or_default()
        .into_iter()
        .filter(|b: &BackupRecord| env.is_none_or(|e| b.env == e))
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.finished_ms));
    v
}

pub fn size(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
        None => "size unknown".into(),
    }
}

pub fn ago(ms: i64, now_ms: i64) -> String {
    let s = ((now_ms - ms).max(0) / 1000) as u64;
    let rounded = if s >= 3600 { s / 60 * 60 } else { s };
    format!(
        "{} ago",
        humantime_serde::re::humantime::format_duration(std::time::Duration::from_secs(rounded))
    )
}

/// `backup list` as a chat message.
pub fn render_list(records: &[BackupRecord], env: Option<&str>, now_ms: i64) -> String {
    if records.is_empty() {
        return match env {
            Some(e) => format!("No backups of {e} are known yet; `backup now {e}` takes one."),
            None => "No backups are known yet.".into(),
        };
    }
    let mut out = format!(
        "*Backups{}* (newest first)",
        env.map(|e| format!(" of {e}")).unwrap_or_default()
    );
    for b in records.iter().take(20) {
        let verified = match b.verified {
            Some(true) => "verified ✓",
            Some(false) => "verify failed ✗",
            None => "verified never",
        };
        out.push_str(&format!(
            "\n• *{}* `{}` · {} · {} · {} · {verified}",
            b.env,
            b.name,
            size(b.bytes),
            ago(b.finished_ms, now_ms),
            b.by
        ));
    }
    if records.len() > 20 {
        out.push_str(&format!("\n… and {} older", records.len() - 20));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_newest_first_and_a_seen_job_is_not_recorded_twice() {
        let s = Store::temporary().unwrap();
        let a = BackupRecord::from_result(
            "prod",
            "job-a",
            r#"{"name":"prod-1","bytes":1000000,"sha256":"ab"}"#,
            "@alice (#1)",
            1_000,
        );
        let b = BackupRecord::from_result(
            "prod",
            "job-b",
            "not json",
            "schedule (cronjob mongodb-backup)",
            2_000,
        );
        record(&s, &a).unwrap();
        record(&s, &b).unwrap();
        assert!(
            !record_if_new(
                &s,
                &BackupRecord {
                    by: "other".into(),
                    ..a.clone()
                }
            )
            .unwrap()
        );
        let l = list(&s, Some("prod"));
        assert_eq!(
            l.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["job-b", "prod-1"]
        );
        assert_eq!(l[1].by, "@alice (#1)");
        let text = render_list(&l, Some("prod"), 62_000);
        assert!(
            text.contains("`prod-1` · 1.0 MB · 1m 1s ago · @alice (#1) · verified never"),
            "{text}"
        );
        assert!(list(&s, Some("test")).is_empty());
    }
}
