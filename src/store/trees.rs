//! The store's trees, each name spelled once: what every record kind is kept under on disk.

/// A tree of the store. Its name is on disk: never change one, or stores written before lose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Messages being handled, from their first delivery until answered.
    Unanswered,
    /// The newest message handled per room, and the global read mark.
    Marks,
    /// Environments locked by people (`lock ENV`).
    Locks,
    /// Counters: the next operation number.
    Meta,
    /// The operations journal, by operation number.
    Ops,
    /// Which operation holds which [`crate::store::LockKey`].
    OpLocks,
    /// The backup catalog, by environment and Job.
    Backups,
    /// Backup Jobs that failed, kept a while for reports.
    BackupFailures,
    /// Prunes that ran, kept a while for reports.
    BackupPrunes,
    /// Open incidents of the alerter.
    Incidents,
    /// Muted environments' alerts.
    Mutes,
    /// Resolved incidents, kept for the record (never scanned by the alert loop).
    IncidentsResolved,
    /// Each schedule's last run and pause.
    Schedule,
}

impl Tree {
    /// Every tree, for tests of the names on disk.
    pub const ALL: [Tree; 13] = [
        Tree::Unanswered,
        Tree::Marks,
        Tree::Locks,
        Tree::Meta,
        Tree::Ops,
        Tree::OpLocks,
        Tree::Backups,
        Tree::BackupFailures,
        Tree::BackupPrunes,
        Tree::Incidents,
        Tree::Mutes,
        Tree::IncidentsResolved,
        Tree::Schedule,
    ];

    /// Its name on disk.
    pub const fn name(self) -> &'static str {
        match self {
            Tree::Unanswered => "unanswered",
            Tree::Marks => "marks",
            Tree::Locks => "locks",
            Tree::Meta => "meta",
            Tree::Ops => "ops",
            Tree::OpLocks => "op_locks",
            Tree::Backups => "backups",
            Tree::BackupFailures => "backup_failures",
            Tree::BackupPrunes => "backup_prunes",
            Tree::Incidents => "incidents",
            Tree::Mutes => "mutes",
            Tree::IncidentsResolved => "incidents_resolved",
            Tree::Schedule => "schedule",
        }
    }
}

impl Tree {
    /// The tree of this name on disk.
    pub fn from_name(name: &str) -> Option<Tree> {
        Tree::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The tree older stores kept the audit log in, taken over into its file on open.
pub(super) const LEGACY_AUDIT: &str = "audit";
/// The tree older stores kept seen message ids in, taken over into its file on open.
pub(super) const LEGACY_SEEN: &str = "seen";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tree_keeps_the_name_stores_have_always_had() {
        let names: Vec<&str> = Tree::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "unanswered",
                "marks",
                "locks",
                "meta",
                "ops",
                "op_locks",
                "backups",
                "backup_failures",
                "backup_prunes",
                "incidents",
                "mutes",
                "incidents_resolved",
                "schedule",
            ]
        );
    }
}
