//! The operations journal's records: what an operation is (typed, versioned), its steps and the facts it learned, as written to the store before and after every step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The journal format written by this version. 1: command as text, facts as a string map;
/// 2: a typed [`OpSpec`] and typed [`Facts`].
pub const JOURNAL_VERSION: u32 = 2;

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

/// An operation's number, as people see it (`#42`) and as the journal, the locks, the audit log
/// and the catalog store it (a plain number: the type is transparent to serde).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct OpId(u64);

impl OpId {
    pub const fn new(n: u64) -> OpId {
        OpId(n)
    }

    /// The number itself (store keys, metrics).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number as a store key: big-endian, so that keys sort in the order operations started.
    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// A store key read back.
    pub fn from_key(key: &[u8]) -> Option<OpId> {
        key.try_into().ok().map(u64::from_be_bytes).map(OpId)
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Operation numbers gathered as bare numbers, for the chaos benchmark, which still counts
/// operations in `u64`.
impl FromIterator<OpId> for Vec<u64> {
    fn from_iter<I: IntoIterator<Item = OpId>>(ops: I) -> Vec<u64> {
        ops.into_iter().map(OpId::get).collect()
    }
}

impl std::str::FromStr for OpId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<OpId, Self::Err> {
        s.parse().map(OpId)
    }
}

/// A lock an operation takes: an environment's app, or the environment's backups (so that a long
/// verify never blocks an urgent rollback). Stored as the text it always was: `prod`,
/// `prod#backups`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum LockKey {
    /// Changes to the environment's app (deploy, rollback, scale, restore).
    Env(String),
    /// The environment's backup volume and catalog (backup, verify, prune, restore).
    Backups(String),
}

/// How a backups lock is told apart from its environment's in the store.
const BACKUPS_SUFFIX: &str = "#backups";

impl LockKey {
    /// The lock on `env`'s app.
    pub fn env(env: &str) -> LockKey {
        LockKey::Env(env.to_string())
    }

    /// The lock on `env`'s backups.
    pub fn backups(env: &str) -> LockKey {
        LockKey::Backups(env.to_string())
    }

    /// The environment it locks.
    pub fn environment(&self) -> &str {
        match self {
            LockKey::Env(e) | LockKey::Backups(e) => e,
        }
    }

    /// The key as stored (`prod`, `prod#backups`).
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// A stored key read back.
    pub fn parse(key: &str) -> LockKey {
        match key.strip_suffix(BACKUPS_SUFFIX) {
            Some(env) => LockKey::backups(env),
            None => LockKey::env(key),
        }
    }
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockKey::Env(e) => f.write_str(e),
            LockKey::Backups(e) => write!(f, "{e}{BACKUPS_SUFFIX}"),
        }
    }
}

impl From<String> for LockKey {
    fn from(key: String) -> LockKey {
        LockKey::parse(&key)
    }
}

impl From<LockKey> for String {
    fn from(key: LockKey) -> String {
        key.to_string()
    }
}

/// What an operation learned that later steps, undo and resume need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Facts {
    /// The locks it holds.
    pub locks: Vec<LockKey>,
    /// Deploy: the revision and image before the new image was set.
    pub previous_revision: Option<String>,
    pub previous_image: Option<String>,
    /// The revision the rollout ended on.
    pub revision: Option<i64>,
    /// Rollback: the revision (and version) it started from, and where it went.
    pub undo_from: Option<String>,
    pub undo_from_version: Option<String>,
    pub undo_to: Option<i64>,
    pub undo_version: Option<String>,
    /// The backup taken by a `backup` step (deploy, backup now).
    pub backup: Option<TakenBackup>,
    /// The safety backup a restore takes first.
    pub safety: Option<TakenBackup>,
    /// Restore: the app's replicas and autoscaler before it was scaled down.
    pub replicas: Option<i32>,
    pub hpa: Option<String>,
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
            previous_revision: get("previous_revision"),
            previous_image: get("previous_image"),
            revision: get("revision").and_then(|r| r.parse().ok()),
            undo_from: get("undo_from"),
            undo_from_version: get("undo_from_version"),
            undo_to: get("undo_to").and_then(|r| r.parse().ok()),
            undo_version: get("undo_version"),
            backup: taken("backup"),
            safety: taken("safety"),
            replicas: get("replicas").and_then(|r| r.parse().ok()),
            hpa: get("hpa"),
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

/// What a step does: how the journal names it (its stable name, the text journals have always
/// held), how operations dispatch it, and how people read it (its label, free to change).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StepKind {
    /// Take a backup (before a deploy, or asked for).
    Backup,
    /// The backup a restore takes first.
    SafetyBackup,
    /// Copy the backup just taken to the off-site bucket.
    OffsiteCopy,
    /// Fetch a backup back from the off-site bucket.
    OffsiteFetch,
    /// Remove the off-site copies retention drops.
    OffsitePrune,
    /// A pre-deploy runbook, by name.
    Runbook(String),
    SetImage,
    /// Follow a rollout until it completes.
    Rollout,
    SmokeTest,
    /// A rollback's `rollout undo`.
    Undo,
    ScaleDown,
    /// A restore's restore Job.
    Restore,
    ScaleUp,
    /// Putting the app back after a failed restore.
    Recover,
    /// A scale operation's one step.
    Scale,
    /// A verify's test-restore.
    Verify,
    /// A prune's prune Job.
    Prune,
    /// A runbook operation's Job.
    Job,
    /// Putting a failed deploy back on its previous revision.
    Rollback,
    /// Putting a failed rollback forward again.
    RollForward,
    /// A step this version does not know (journaled by another version): kept as written.
    Unknown(String),
}

/// How a runbook's step is named: `runbook migrate`.
const RUNBOOK_PREFIX: &str = "runbook ";

impl StepKind {
    /// The steps with a fixed name, each with the name journals hold.
    const NAMED: [(StepKind, &'static str); 19] = [
        (StepKind::Backup, "backup"),
        (StepKind::SafetyBackup, "safety backup"),
        (StepKind::OffsiteCopy, "off-site copy"),
        (StepKind::OffsiteFetch, "fetch off-site"),
        (StepKind::OffsitePrune, "prune off-site"),
        (StepKind::SetImage, "set image"),
        (StepKind::Rollout, "rollout"),
        (StepKind::SmokeTest, "smoke test"),
        (StepKind::Undo, "undo"),
        (StepKind::ScaleDown, "scale down"),
        (StepKind::Restore, "restore"),
        (StepKind::ScaleUp, "scale up"),
        (StepKind::Recover, "recover"),
        (StepKind::Scale, "scale"),
        (StepKind::Verify, "verify"),
        (StepKind::Prune, "prune"),
        (StepKind::Job, "job"),
        (StepKind::Rollback, "rollback"),
        (StepKind::RollForward, "roll forward"),
    ];

    /// The stable name the journal holds; never change one, or older journals stop resuming.
    pub fn name(&self) -> String {
        match self {
            StepKind::Runbook(r) => format!("{RUNBOOK_PREFIX}{r}"),
            StepKind::Unknown(n) => n.clone(),
            fixed => Self::NAMED
                .iter()
                .find(|(k, _)| k == fixed)
                .map(|(_, n)| n.to_string())
                .unwrap_or_default(),
        }
    }

    /// A journaled name read back (a name this version does not know is kept as written).
    pub fn parse(name: &str) -> StepKind {
        if let Some((k, _)) = Self::NAMED.iter().find(|(_, n)| *n == name) {
            return k.clone();
        }
        match name.strip_prefix(RUNBOOK_PREFIX) {
            Some(r) => StepKind::Runbook(r.to_string()),
            None => StepKind::Unknown(name.to_string()),
        }
    }

    /// How the progress message shows it.
    pub fn label(&self) -> String {
        match self {
            StepKind::Backup => "backup".into(),
            StepKind::SafetyBackup => "safety backup".into(),
            StepKind::OffsiteCopy => "off-site copy".into(),
            StepKind::OffsiteFetch => "fetch off-site".into(),
            StepKind::OffsitePrune => "prune off-site".into(),
            StepKind::Runbook(r) => format!("runbook {r}"),
            StepKind::SetImage => "set image".into(),
            StepKind::Rollout => "rollout".into(),
            StepKind::SmokeTest => "smoke test".into(),
            StepKind::Undo => "undo".into(),
            StepKind::ScaleDown => "scale down".into(),
            StepKind::Restore => "restore".into(),
            StepKind::ScaleUp => "scale up".into(),
            StepKind::Recover => "recover".into(),
            StepKind::Scale => "scale".into(),
            StepKind::Verify => "verify".into(),
            StepKind::Prune => "prune".into(),
            StepKind::Job => "job".into(),
            StepKind::Rollback => "rollback".into(),
            StepKind::RollForward => "roll forward".into(),
            StepKind::Unknown(n) => n.clone(),
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl From<String> for StepKind {
    fn from(name: String) -> StepKind {
        StepKind::parse(&name)
    }
}

impl From<StepKind> for String {
    fn from(kind: StepKind) -> String {
        kind.name()
    }
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
    /// an older record without a spec is resolved once, by the engine, when it resumes).
    pub fn upgrade(&mut self) {
        if !self.legacy_data.is_empty() {
            self.facts = Facts::from_legacy(&self.legacy_data);
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
mod tests {
    use super::*;

    #[test]
    fn an_operation_number_is_stored_as_the_plain_number_it_always_was() {
        assert_eq!(serde_json::to_string(&OpId::new(41)).unwrap(), "41");
        assert_eq!(serde_json::from_str::<OpId>("41").unwrap(), OpId::new(41));
        assert_eq!("41".parse::<OpId>().unwrap().to_string(), "41");
        assert_eq!(OpId::from_key(&OpId::new(41).to_key()), Some(OpId::new(41)));
    }

    #[test]
    fn every_step_keeps_the_name_journals_have_always_held_and_reads_back_as_itself() {
        // The names journals written by every earlier version hold: never change one.
        let names = [
            "backup",
            "safety backup",
            "off-site copy",
            "fetch off-site",
            "prune off-site",
            "runbook migrate",
            "set image",
            "rollout",
            "smoke test",
            "undo",
            "scale down",
            "restore",
            "scale up",
            "recover",
            "scale",
            "verify",
            "prune",
            "job",
            "rollback",
            "roll forward",
        ];
        for name in names {
            let kind = StepKind::parse(name);
            assert!(!matches!(kind, StepKind::Unknown(_)), "{name}");
            assert_eq!(kind.name(), name);
            assert_eq!(kind.label(), name, "shown as it always was");
            let json = serde_json::to_string(&StepRecord::pending(kind.clone())).unwrap();
            assert!(
                json.starts_with(&format!(r#"{{"name":"{name}","#)),
                "{json}"
            );
            let back: StepRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back.kind, kind);
        }
        assert_eq!(
            StepKind::parse("runbook migrate"),
            StepKind::Runbook("migrate".into())
        );
    }

    #[test]
    fn a_step_this_version_does_not_know_is_kept_as_written() {
        let kind = StepKind::parse("defragment");
        assert_eq!(kind, StepKind::Unknown("defragment".into()));
        assert_eq!(serde_json::to_string(&kind).unwrap(), r#""defragment""#);
    }

    #[test]
    fn a_lock_key_is_stored_as_the_text_it_always_was_and_reads_back_typed() {
        let keys = vec![LockKey::env("prod"), LockKey::backups("prod")];
        let json = serde_json::to_string(&keys).unwrap();
        assert_eq!(json, r#"["prod","prod#backups"]"#);
        assert_eq!(serde_json::from_str::<Vec<LockKey>>(&json).unwrap(), keys);
        assert_eq!(LockKey::parse("prod#backups").environment(), "prod");
    }
}
