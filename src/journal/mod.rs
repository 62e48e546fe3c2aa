//! The operations journal's records: what an operation is (typed, versioned), its steps and the facts it learned, as written to the store before and after every step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod ids;
mod saved;
mod step;

pub use ids::{LockKey, OpId};
pub use saved::SavedHpa;
use saved::{revision_number, starting_revision};
pub use step::StepKind;

/// The journal format written by this version. 1: command as text, facts as a string map;
/// 2: a typed [`OpSpec`] and typed [`Facts`]; 3: a deploy's previous revision and a rollback's
/// starting revision as numbers.
/// This version reads them all.
pub const JOURNAL_VERSION: u32 = 3;

/// What an operation is, resolved when it started (the image, the backup, the runbook's Job), so
/// that it resumes after a restart or an upgrade exactly as it was asked and authorized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpSpec {
    Deploy(Deploy),
    Rollback(Rollback),
    Scale(Scale),
    Backup(BackupNow),
    Restore(Restore),
    Verify(Verify),
    Prune(Prune),
    Runbook(Runbook),
}

/// `deploy ENV VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub version: String,
    /// The full image reference the version resolved to.
    pub image: String,
    #[serde(default)]
    pub no_backup: bool,
    /// The pre-deploy runbooks, in order, with the Job template each had when the deploy started.
    #[serde(default)]
    pub runbooks: Vec<RunbookJob>,
}

/// A runbook's Job template, captured when the operation started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookJob {
    pub name: String,
    /// YAML with `${…}` placeholders; empty when the runbook was not defined.
    pub job: String,
}

/// `rollback ENV [REVISION|VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    #[serde(default)]
    pub to: Option<RollbackTo>,
}

/// `scale ENV REPLICAS [COMPONENT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub replicas: u32,
    #[serde(default)]
    pub component: Option<String>,
}

/// `backup now ENV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackupNow {}

/// `restore ENV BACKUP [from ENV]` (from another environment: refreshing it from that one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    pub backup: ChosenBackup,
    #[serde(default)]
    pub no_safety_backup: bool,
    /// Fetched from the off-site copy first.
    #[serde(default)]
    pub offsite: bool,
}

/// `verify ENV [BACKUP]`: a test-restore into a throwaway database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    pub backup: ChosenBackup,
    /// Fetched from the off-site copy first, which the verify then proves.
    #[serde(default)]
    pub offsite: bool,
}

/// `backup prune ENV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Prune {}

/// A runbook from `commands/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runbook {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The Job template (YAML with `${…}` placeholders) as it was when the runbook started.
    pub job: String,
}

/// What a rollback goes back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTo {
    Revision(i64),
    Version(String),
}

/// The backup a restore or verify uses, chosen from the catalog when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChosenBackup {
    pub name: String,
    /// The Job that took it (its key in the catalog).
    pub job: String,
    /// The environment whose backup it is.
    pub env: String,
    pub finished_ms: i64,
}

/// A backup an operation took (before a deploy, before a restore, or asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TakenBackup {
    /// The Job, journaled before waiting for it so that a resumed operation adopts it.
    pub job: String,
    /// The backup's name, once known.
    #[serde(default)]
    pub name: Option<String>,
}

/// What an operation learned that later steps, undo and resume need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Facts {
    /// The locks it holds.
    pub locks: Vec<LockKey>,
    /// Deploy: the revision and image before the new image was set. The image is recorded with
    /// the revision, always (empty when the container had none), so it says whether they were
    /// recorded; the revision is absent when the Deployment had none.
    #[serde(deserialize_with = "revision_number")]
    pub previous_revision: Option<i64>,
    pub previous_image: Option<String>,
    /// The revision the rollout ended on.
    pub revision: Option<i64>,
    /// Rollback: the revision (and version) it started from, and where it went.
    /// The revision is 0 when the Deployment had none (as `kubectl rollout undo --to-revision=0`,
    /// going back from it means the previous one).
    #[serde(deserialize_with = "starting_revision")]
    pub undo_from: Option<i64>,
    pub undo_from_version: Option<String>,
    pub undo_to: Option<i64>,
    pub undo_version: Option<String>,
    /// The backup taken by a `backup` step (deploy, backup now).
    pub backup: Option<TakenBackup>,
    /// The safety backup a restore takes first.
    pub safety: Option<TakenBackup>,
    /// Restore: the app's replicas and autoscaler before it was scaled down.
    pub replicas: Option<i32>,
    pub hpa: Option<SavedHpa>,
    pub hpa_name: Option<String>,
}

impl Facts {
    /// The first format's string map, read into typed facts (unknown keys are dropped).
    pub fn from_legacy(data: &BTreeMap<String, String>) -> Facts {
        let get = |k: &str| data.get(k).cloned();
        let taken = |k: &str| {
            get(&format!("{k}_job")).map(|job| TakenBackup {
                job,
                name: get(&format!("{k}_name")),
            })
        };
        Facts {
            locks: get("locks")
                .map(|l| l.split(',').map(LockKey::parse).collect())
                .unwrap_or_default(),
            previous_revision: get("previous_revision").and_then(|r| r.parse().ok()),
            previous_image: get("previous_image"),
            revision: get("revision").and_then(|r| r.parse().ok()),
            undo_from: get("undo_from").map(|r| r.parse().unwrap_or(0)),
            undo_from_version: get("undo_from_version"),
            undo_to: get("undo_to").and_then(|r| r.parse().ok()),
            undo_version: get("undo_version"),
            backup: taken("backup"),
            safety: taken("safety"),
            replicas: get("replicas").and_then(|r| r.parse().ok()),
            hpa: get("hpa").map(SavedHpa::from),
            hpa_name: get("hpa_name"),
        }
    }
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OpState {
    #[default]
    Running,
    Succeeded,
    Failed,
    /// It failed and the environment was put back as it was.
    RolledBack,
    Cancelled,
}

impl OpState {
    /// How people read it: `running`, `succeeded`, `failed`, `rolled back`, `cancelled`.
    pub fn describe(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::RolledBack => "rolled back",
            OpState::Cancelled => "cancelled",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// One step of an operation, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    #[serde(rename = "name")]
    pub kind: StepKind,
    pub state: StepState,
    /// What happened (`3/3 ready`, the backup's size, the failing pod).
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub finished_ms: Option<i64>,
}

impl StepRecord {
    pub fn pending(kind: StepKind) -> StepRecord {
        StepRecord {
            kind,
            state: StepState::Pending,
            detail: String::new(),
            started_ms: None,
            finished_ms: None,
        }
    }
}

/// An operation's journal: written before and after each step, so that after a crash the bot
/// knows exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OpRecord {
    pub id: OpId,
    pub env: String,
    /// The journal format this record was written in ([`JOURNAL_VERSION`]; 0 or absent: the
    /// first format, whose command was text and whose facts were a string map).
    #[serde(default)]
    pub v: u32,
    /// The command in normal form (`deploy prod v3.1`), for people: progress, history, audit.
    pub command: String,
    /// What the operation is, typed and resolved when it started; resuming reads this, never the
    /// text above and never today's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<OpSpec>,
    pub user: String,
    pub room_id: String,
    #[serde(default)]
    pub thread: Option<String>,
    /// The progress message, edited in place.
    #[serde(default)]
    pub message_id: Option<String>,
    pub steps: Vec<StepRecord>,
    pub state: OpState,
    pub started_ms: i64,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// What the operation learned that later steps, undo and resume need.
    #[serde(default)]
    pub facts: Facts,
    /// The first format's facts as a string map; [`OpRecord::upgrade`] moves them into `facts`.
    #[serde(default, rename = "data", skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy_data: BTreeMap<String, String>,
    /// The final one-line result.
    #[serde(default)]
    pub summary: Option<String>,
    /// This operation's unique mark, journaled before it creates anything: the objects it creates
    /// carry it (label `rocketops.io/mark`, and Job names end in its first five characters), and an
    /// existing object is adopted only when it carries the same mark.
    #[serde(default)]
    pub mark: String,
    /// The room it was asked in, by name (`ops`, `@alice` for a direct message), for the audit log.
    #[serde(default)]
    pub room: String,
    /// The chat message whose command started it (`None` for a schedule): a replica taking over
    /// knows that message was answered by this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl OpRecord {
    /// A fresh random mark: lowercase letters and digits, fit for names and label values.
    pub fn new_mark() -> String {
        crate::random::token(b"abcdefghijklmnopqrstuvwxyz0123456789", 12)
    }

    /// The suffix of the Jobs this operation creates: `<op>-<first five characters of the mark>`.
    pub fn job_suffix(&self) -> String {
        let m: String = self.mark.chars().take(5).collect();
        if m.is_empty() {
            self.id.to_string()
        } else {
            format!("{}-{m}", self.id)
        }
    }

    /// Reads a record of an older format into this one's typed facts (the command stays as it was:
    /// an older record without a spec is resolved once, by the engine, when it resumes). A record
    /// with a spec is held in this version's types from here on, and written back in its format.
    pub fn upgrade(&mut self) {
        if !self.legacy_data.is_empty() {
            self.facts = Facts::from_legacy(&self.legacy_data);
        }
        if self.spec.is_some() {
            self.v = JOURNAL_VERSION;
        }
    }

    /// The chosen backup of a first-format restore or verify (its facts held it).
    pub fn legacy_backup(&self) -> Option<ChosenBackup> {
        let d = &self.legacy_data;
        Some(ChosenBackup {
            name: d.get("backup_name")?.clone(),
            job: d.get("backup_job").cloned().unwrap_or_default(),
            env: d
                .get("backup_env")
                .cloned()
                .unwrap_or_else(|| self.env.clone()),
            finished_ms: d
                .get("backup_finished_ms")
                .and_then(|t| t.parse().ok())
                .unwrap_or_default(),
        })
    }

    /// The locks the operation holds (a first-format record without any held its environment).
    pub fn lock_keys(&self) -> Vec<LockKey> {
        if self.facts.locks.is_empty() {
            vec![LockKey::env(&self.env)]
        } else {
            self.facts.locks.clone()
        }
    }
}

#[cfg(test)]
mod tests;
