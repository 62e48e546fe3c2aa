//! The backup catalog: every backup the bot took or saw the cluster take, with its size, checksum, who or what took it, and whether a test-restore proved it.

use serde::{Deserialize, Serialize};

use crate::store::{Record, Store, StoreError, Tree};

impl Record for BackupRecord {
    const TREE: Tree = Tree::Backups;
}

impl Record for Failure {
    const TREE: Tree = Tree::BackupFailures;
}

impl Record for Prune {
    const TREE: Tree = Tree::BackupPrunes;
}

/// How long failures and prunes are kept for reports.
const KEEP_MS: i64 = 90 * 86_400_000;

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
    /// How long the dump took.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// Collections (or tables) and documents (or rows) in the backup's manifest.
    #[serde(default)]
    pub collections: Option<u64>,
    #[serde(default)]
    pub documents: Option<u64>,
    /// The last test-restore.
    #[serde(default)]
    pub verify: Option<VerifyRecord>,
    /// Who created the backup's Job, as its `managedFields` name the manager
    /// (`kube-controller-manager` for the CronJob's schedule, `kubectl-create` for a manual run);
    /// `None` for the bot's own backups.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Taken outside the bot and outside the CronJob's schedule: until a verify proves it, it
    /// decides neither `latest` nor what retention keeps.
    #[serde(default)]
    pub outside: bool,
    /// When a prune started removing its archive: from then on nothing picks it (the archive may
    /// be gone), and the next prune forgets it if this one could not.
    #[serde(default)]
    pub removing_ms: Option<i64>,
    /// The encrypted copy outside the cluster, made and read back whole.
    #[serde(default)]
    pub offsite: Option<OffsiteCopy>,
    /// Why the last off-site copy failed: the backup is on the cluster only.
    #[serde(default)]
    pub offsite_error: Option<String>,
}

/// A backup's copy in the off-site bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteCopy {
    /// `s3://bucket/prefix/name` (the files are `name.*`, encrypted).
    pub url: String,
    /// The archive's checksum as read back through the decryption.
    pub sha256: Option<String>,
    /// Bytes stored off-site (encrypted).
    pub bytes: Option<u64>,
    pub at_ms: i64,
}

/// A test-restore's result: the recovery-time and recovery-point figures a team can quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub ok: bool,
    pub at_ms: i64,
    /// How long the restore into the throwaway database took (recovery time).
    pub restore_secs: Option<u64>,
    /// The backup's age when it was verified (recovery point).
    pub age_secs: u64,
    pub detail: String,
    pub op: crate::journal::OpId,
}

/// A backup that failed, kept for the daily report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub env: String,
    pub job: String,
    pub at_ms: i64,
    pub reason: String,
}

/// What a prune removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    pub env: String,
    pub at_ms: i64,
    pub removed: Vec<String>,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
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
        let r = crate::cluster::jobs::JobReport::read(message);
        BackupRecord {
            env: env.into(),
            name: r.name.unwrap_or_else(|| job.to_string()),
            job: job.into(),
            bytes: r.bytes,
            sha256: r.sha256,
            finished_ms,
            by: by.into(),
            verified: None,
            duration_secs: r.duration_secs,
            collections: r.collections,
            documents: r.documents,
            verify: None,
            created_by: None,
            outside: false,
            removing_ms: None,
            offsite: None,
            offsite_error: None,
        }
    }

    /// Whether it may decide `latest` and the newest-verified rule of retention: the bot took
    /// it, the CronJob's schedule did, or a verify proved it.
    pub fn trusted(&self) -> bool {
        !self.outside || self.verified == Some(true)
    }

    /// Whether its archive is still there to restore (no prune has started removing it).
    pub fn available(&self) -> bool {
        self.removing_ms.is_none()
    }
}

/// Why the catalog could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot mark backup {job} of {env} as being removed: {source}")]
    MarkRemovingFailed {
        env: String,
        job: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot forget the removed backup {job} of {env}: {source}")]
    ForgetFailed {
        env: String,
        job: String,
        #[source]
        source: StoreError,
    },
}

/// The backup `which` names in `env`: the newest trusted one, or the one with that name (or Job
/// name). A backup a prune is removing is never found.
pub fn find(store: &Store, env: &str, which: &crate::command::BackupRef) -> Option<BackupRecord> {
    pick(list(store, Some(env)), which)
}

/// Pure: the backup `which` names among `records` (newest first), as [`find`].
pub fn pick(records: Vec<BackupRecord>, which: &crate::command::BackupRef) -> Option<BackupRecord> {
    let mut available = records.into_iter().filter(BackupRecord::available);
    match which {
        crate::command::BackupRef::Latest => available.find(BackupRecord::trusted),
        crate::command::BackupRef::Named(n) => available.find(|b| b.name == *n || b.job == *n),
    }
}

/// Pure: the retention plan over catalog records (keyed by Job name, which is unique). Backups
/// from outside a schedule that no verify proved take no part: they are neither kept (so they
/// cannot push out a genuine one) nor dropped (the bot deletes nothing it cannot vouch for).
/// Backups a prune already started removing are dropped again.
pub fn retention_plan(
    records: &[BackupRecord],
    r: crate::schedule::retention::Retention,
) -> crate::schedule::retention::Plan {
    use crate::schedule::retention::{Candidate, plan};
    let candidates: Vec<Candidate> = records
        .iter()
        .filter(|b| b.trusted() && b.available())
        .map(|b| Candidate {
            name: b.job.clone(),
            at: chrono::DateTime::from_timestamp_millis(b.finished_ms).unwrap_or_default(),
            verified: b.verified == Some(true),
        })
        .collect();
    let mut p = plan(&candidates, r);
    p.drop.extend(
        records
            .iter()
            .filter(|b| !b.available())
            .map(|b| b.job.clone()),
    );
    p
}

/// Records a test-restore's result on its backup.
pub fn set_verify(
    store: &Store,
    env: &str,
    job: &str,
    v: VerifyRecord,
) -> Result<bool, StoreError> {
    let Some(mut b) = store.records::<BackupRecord>().get(&key(env, job))? else {
        return Ok(false);
    };
    b.verified = Some(v.ok);
    b.verify = Some(v);
    record(store, &b)?;
    Ok(true)
}

/// Records how a backup's off-site copy went: where it lives, or why there is none.
pub fn set_offsite(
    store: &Store,
    env: &str,
    job: &str,
    copy: Result<OffsiteCopy, String>,
) -> Result<bool, StoreError> {
    let Some(mut b) = store.records::<BackupRecord>().get(&key(env, job))? else {
        return Ok(false);
    };
    match copy {
        Ok(c) => {
            b.offsite = Some(c);
            b.offsite_error = None;
        }
        Err(why) => b.offsite_error = Some(why),
    }
    record(store, &b)?;
    Ok(true)
}

/// Pure: where a backup's copies are, for lists (`on-cluster + off-site`); empty when the
/// environment copies nothing off-site.
pub fn places(b: &BackupRecord) -> &'static str {
    match (&b.offsite, &b.offsite_error) {
        (Some(_), _) => " · on-cluster + off-site",
        (None, Some(_)) => " · on-cluster only (off-site copy failed)",
        (None, None) => "",
    }
}

/// Marks a backup as being removed by a prune, before its archive is deleted: from then on
/// neither `latest` nor its name picks it, whatever happens to the prune.
pub fn mark_removing(store: &Store, env: &str, job: &str, now_ms: i64) -> Result<(), CatalogError> {
    let failed = |source| CatalogError::MarkRemovingFailed {
        env: env.into(),
        job: job.into(),
        source,
    };
    let Some(mut b) = store
        .records::<BackupRecord>()
        .get(&key(env, job))
        .map_err(failed)?
    else {
        return Ok(());
    };
    if b.removing_ms.is_none() {
        b.removing_ms = Some(now_ms);
        record(store, &b).map_err(failed)?;
    }
    Ok(())
}

/// Forgets a pruned backup.
pub fn remove(store: &Store, env: &str, job: &str) -> Result<(), CatalogError> {
    store
        .records::<BackupRecord>()
        .remove(&key(env, job))
        .map_err(|source| CatalogError::ForgetFailed {
            env: env.into(),
            job: job.into(),
            source,
        })
}

/// Pure: what a list says about a backup nothing may pick yet (or any more).
pub fn caveat(b: &BackupRecord) -> &'static str {
    if !b.available() {
        " · being removed by a prune"
    } else if !b.trusted() {
        " · taken outside the schedule: not used for `latest` or retention until verified"
    } else {
        ""
    }
}

/// Remembers a failed backup (for reports).
pub fn record_failure(store: &Store, f: &Failure) -> Result<(), StoreError> {
    let failures = store.records::<Failure>();
    failures.put(&key(&f.env, &f.job), f)?;
    failures.retain(|_, old| old.at_ms >= f.at_ms - KEEP_MS)?;
    Ok(())
}

/// Remembers a failed backup seen through a watch, unless it is known already.
pub fn record_failure_if_new(store: &Store, f: &Failure) -> Result<(), StoreError> {
    if store
        .records::<Failure>()
        .get(&key(&f.env, &f.job))?
        .is_none()
    {
        record_failure(store, f)?;
    }
    Ok(())
}

/// The records of `T` about `env` since `since_ms`, oldest first; `of` gives a record's
/// environment and time.
fn since<T: Record>(
    store: &Store,
    env: &str,
    since_ms: i64,
    of: impl Fn(&T) -> (&str, i64),
) -> Vec<T> {
    let mut v: Vec<T> = readable(store.records::<T>().all())
        .into_iter()
        .filter(|t| {
            let (e, at) = of(t);
            e == env && at >= since_ms
        })
        .collect();
    v.sort_by_key(|t| of(t).1);
    v
}

/// Failed backups of `env` since `since_ms`, oldest first.
pub fn failures(store: &Store, env: &str, since_ms: i64) -> Vec<Failure> {
    since(store, env, since_ms, |f: &Failure| (&f.env, f.at_ms))
}

/// Remembers a prune.
pub fn record_prune(store: &Store, p: &Prune) -> Result<(), StoreError> {
    let prunes = store.records::<Prune>();
    prunes.put(&format!("{}/{:020}", p.env, p.at_ms), p)?;
    prunes.retain(|_, old| old.at_ms >= p.at_ms - KEEP_MS)?;
    Ok(())
}

/// Prunes of `env` since `since_ms`, oldest first.
pub fn prunes(store: &Store, env: &str, since_ms: i64) -> Vec<Prune> {
    since(store, env, since_ms, |p: &Prune| (&p.env, p.at_ms))
}

fn key(env: &str, job: &str) -> String {
    format!("{env}/{job}")
}

/// What the catalog knows about the backup of Job `job` in `env`.
pub fn get(store: &Store, env: &str, job: &str) -> Result<Option<BackupRecord>, StoreError> {
    store.records().get(&key(env, job))
}

/// Records a backup (replacing what was known about the same Job).
pub fn record(store: &Store, b: &BackupRecord) -> Result<(), StoreError> {
    store.records().put(&key(&b.env, &b.job), b)
}

/// Records a backup unless the same Job is already known (for backups seen through watches).
pub fn record_if_new(store: &Store, b: &BackupRecord) -> Result<bool, StoreError> {
    if store
        .records::<BackupRecord>()
        .get(&key(&b.env, &b.job))?
        .is_some()
    {
        return Ok(false);
    }
    record(store, b)?;
    Ok(true)
}

/// Backups, newest first, of one environment or all.
/// The catalog's records, or none when the store cannot be read: an error a reader of the
/// catalog cannot act on, so it is logged (with its reason) where it would read as "no backups".
/// Nothing destructive follows from an empty read: a prune deletes only what it lists.
fn readable<T>(r: Result<Vec<T>, crate::store::StoreError>) -> Vec<T> {
    r.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read the backup catalog; it reads as empty");
        Vec::new()
    })
}

pub fn list(store: &Store, env: Option<&str>) -> Vec<BackupRecord> {
    let mut v: Vec<BackupRecord> = readable(store.records::<BackupRecord>().all())
        .into_iter()
        .filter(|b: &BackupRecord| env.is_none_or(|e| b.env == e))
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.finished_ms));
    v
}

pub fn size(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        Some(b) if b >= 100_000 => format!("{:.1} MB", b as f64 / 1e6),
        Some(b) => format!("{:.1} kB", b as f64 / 1e3),
        None => "size unknown".into(),
    }
}

pub fn ago(ms: i64, now_ms: i64) -> String {
    crate::clock::ago(ms, now_ms)
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
            "\n• *{}* `{}` · {} · {} · {} · {verified}{}{}",
            b.env,
            b.name,
            size(b.bytes),
            ago(b.finished_ms, now_ms),
            b.by,
            places(b),
            caveat(b)
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
            text.contains("`prod-1` · 1.0 MB · 1 min 1 s ago · @alice (#1) · verified never"),
            "{text}"
        );
        assert!(list(&s, Some("test")).is_empty());
    }

    fn backup(job: &str, finished_ms: i64) -> BackupRecord {
        BackupRecord::from_result(
            "test",
            job,
            "",
            "schedule (cronjob mongodb-backup)",
            finished_ms,
        )
    }

    #[test]
    fn latest_skips_an_unverified_backup_from_outside_the_schedule_until_a_verify_proves_it() {
        use crate::command::BackupRef;
        let genuine = backup("genuine", 1_000);
        let mut outside = BackupRecord {
            outside: true,
            created_by: Some("kubectl-create".into()),
            ..backup("manual", 2_000)
        };
        let picked = |records: Vec<BackupRecord>| pick(records, &BackupRef::Latest).map(|b| b.job);
        assert_eq!(
            picked(vec![outside.clone(), genuine.clone()]).as_deref(),
            Some("genuine")
        );
        assert_eq!(
            pick(vec![outside.clone()], &BackupRef::Named("manual".into())).map(|b| b.job),
            Some("manual".into()),
            "named, it can still be verified"
        );
        outside.verified = Some(true);
        assert_eq!(
            picked(vec![outside.clone(), genuine.clone()]).as_deref(),
            Some("manual")
        );
    }

    #[test]
    fn a_backup_being_removed_is_never_picked_and_the_next_plan_drops_it_again() {
        use crate::command::BackupRef;
        let newest = BackupRecord {
            removing_ms: Some(5_000),
            ..backup("newest", 3_000)
        };
        let older = backup("older", 1_000);
        let records = vec![newest.clone(), older.clone()];
        assert_eq!(
            pick(records.clone(), &BackupRef::Latest).map(|b| b.job),
            Some("older".into())
        );
        assert_eq!(
            pick(records.clone(), &BackupRef::Named("newest".into())),
            None
        );
        let keep_all = crate::schedule::retention::Retention {
            daily: 7,
            weekly: 0,
            monthly: 0,
        };
        let plan = retention_plan(&records, keep_all);
        assert!(
            plan.drop.contains("newest") && plan.keep.contains("older"),
            "{plan:?}"
        );
        assert!(render_list(&records, Some("test"), 6_000).contains("being removed by a prune"));
    }

    #[test]
    fn retention_neither_keeps_nor_drops_an_unproven_backup_from_outside_the_schedule() {
        let day = 86_400_000;
        let genuine = backup("genuine", 10 * day);
        let older = backup("older", 8 * day);
        let outside = BackupRecord {
            outside: true,
            ..backup("outside", 10 * day + 1_000)
        };
        let one = crate::schedule::retention::Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
        let plan = retention_plan(&[outside.clone(), genuine, older], one);
        assert_eq!(plan.keep.iter().collect::<Vec<_>>(), vec!["genuine"]);
        assert_eq!(plan.drop.iter().collect::<Vec<_>>(), vec!["older"]);
        let text = render_list(&[outside], Some("test"), 10 * day + 2_000);
        assert!(
            text.contains("not used for `latest` or retention until verified"),
            "{text}"
        );
    }

    #[test]
    fn marking_a_backup_as_being_removed_keeps_its_first_time_and_ignores_an_unknown_one() {
        let s = Store::temporary().unwrap();
        record(&s, &backup("a", 1_000)).unwrap();
        mark_removing(&s, "test", "a", 7).unwrap();
        mark_removing(&s, "test", "a", 9).unwrap();
        mark_removing(&s, "test", "unknown", 9).unwrap();
        assert_eq!(list(&s, Some("test"))[0].removing_ms, Some(7));
        remove(&s, "test", "a").unwrap();
        assert!(list(&s, Some("test")).is_empty());
    }

    #[test]
    fn failures_and_prunes_older_than_ninety_days_are_forgotten_when_new_ones_arrive() {
        let s = Store::temporary().unwrap();
        let day = 86_400_000;
        let now = 1_795_341_600_000;
        let failure = |job: &str, at_ms| Failure {
            env: "prod".into(),
            job: job.into(),
            at_ms,
            reason: "BackoffLimitExceeded".into(),
        };
        record_failure(&s, &failure("old", now - 100 * day)).unwrap();
        record_failure(&s, &failure("recent", now - 10 * day)).unwrap();
        assert_eq!(failures(&s, "prod", 0).len(), 2);
        record_failure(&s, &failure("new", now)).unwrap();
        let left: Vec<String> = failures(&s, "prod", 0).into_iter().map(|f| f.job).collect();
        assert_eq!(left, vec!["recent", "new"]);
        let prune = |at_ms| Prune {
            env: "prod".into(),
            at_ms,
            removed: vec!["x".into()],
            used_bytes: None,
            free_bytes: None,
        };
        record_prune(&s, &prune(now - 91 * day)).unwrap();
        record_prune(&s, &prune(now)).unwrap();
        assert_eq!(prunes(&s, "prod", 0).len(), 1);
    }
}
