//! What a step of an operation is ([`StepKind`]): its stable name in the journal, the one operations dispatch on, and its label for people.

use serde::{Deserialize, Serialize};

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
