//! The store's side of replication: the keys written since the last push, the raw reads and loads a replica needs, and the push at the store's flush points.
//!
//! With state in Kubernetes (`[ha] store = "kubernetes"`), the store is a working copy in memory
//! and a [`Replica`] writes what changed to the API server at the points where the store would
//! otherwise flush: after every step of an operation ([`Store::flush_journal`]), around every
//! command ([`Store::sync_replica`]) and at shutdown. Without a replica none of this costs more
//! than one atomic load per write.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::{Store, StoreError, Tree, io};

/// What was written since the last push.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Record keys written or removed, by tree.
    pub keys: BTreeSet<(Tree, Vec<u8>)>,
    /// A message id was taken (or the set pruned).
    pub seen: bool,
    /// Audit records appended: sequence number and stored line.
    pub audit: Vec<(u64, Vec<u8>)>,
    /// The audit log was rewritten as a whole (the tamper tests' helpers).
    pub audit_rewritten: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.seen && self.audit.is_empty() && !self.audit_rewritten
    }
}

/// A push's future.
pub type PushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Writes the store's changes somewhere that outlives this process.
pub trait Replica: Send + Sync {
    /// Writes what changed (taken with [`Store::take_changes`]); returns when it is written.
    fn push<'a>(&'a self, store: &'a Store) -> PushFuture<'a>;
}

/// The replica attached to a store and what it has not pushed yet.
pub(super) struct Tracking {
    changes: Mutex<Changes>,
    replica: Arc<dyn Replica>,
}

impl Store {
    /// Tracks every write from now on and pushes it through `replica` at the flush points.
    /// A store has at most one replica; a second call is ignored and returns `false`.
    pub fn attach_replica(&self, replica: Arc<dyn Replica>) -> bool {
        self.tracking
            .set(Tracking {
                changes: Mutex::new(Changes::default()),
                replica,
            })
            .is_ok()
    }

    /// Whether writes are replicated (state in Kubernetes).
    pub fn is_replicated(&self) -> bool {
        self.tracking.get().is_some()
    }

    fn changes(&self) -> Option<std::sync::MutexGuard<'_, Changes>> {
        self.tracking
            .get()
            .map(|t| t.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Notes a written (or removed) record for the next push.
    pub(super) fn touch(&self, tree: Tree, key: &[u8]) {
        if let Some(mut c) = self.changes() {
            c.keys.insert((tree, key.to_vec()));
        }
    }

    pub(super) fn touch_seen(&self) {
        if let Some(mut c) = self.changes() {
            c.seen = true;
        }
    }

    pub(super) fn touch_audit(&self, seq: u64, line: &[u8]) {
        if let Some(mut c) = self.changes() {
            c.audit.push((seq, line.to_vec()));
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn touch_audit_rewritten(&self) {
        if let Some(mut c) = self.changes() {
            c.audit_rewritten = true;
        }
    }

    /// Whether anything but records of `trees` waits to be pushed.
    pub fn has_changes_beyond(&self, trees: &[Tree]) -> bool {
        self.changes().is_some_and(|c| {
            c.seen
                || c.audit_rewritten
                || !c.audit.is_empty()
                || c.keys.iter().any(|(t, _)| !trees.contains(t))
        })
    }

    /// What was written since the last call (the replica's push takes it).
    pub fn take_changes(&self) -> Changes {
        self.changes()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Puts changes a failed push took back, so the next push writes them.
    pub fn restore_changes(&self, back: Changes) {
        if let Some(mut c) = self.changes() {
            c.keys.extend(back.keys);
            c.seen |= back.seen;
            c.audit_rewritten |= back.audit_rewritten;
            let mut audit = back.audit;
            audit.append(&mut c.audit);
            c.audit = audit;
        }
    }

    /// Pushes what changed through the replica, if there is one (with sled alone, a no-op: a
    /// write is already safe from a crash of the process).
    pub async fn sync_replica(&self) -> Result<(), StoreError> {
        match self.tracking.get() {
            Some(t) => t.replica.push(self).await,
            None => Ok(()),
        }
    }

    /// A record's stored bytes, as the replica copies them.
    pub fn raw_get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.db.open_tree(tree.name()).map_err(io("open tree"))?;
        Ok(t.get(key).map_err(io("kv get"))?.map(|v| v.to_vec()))
    }

    /// Loads a record as the replica read it (not itself a change to push).
    pub fn raw_load(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let t = self.db.open_tree(tree.name()).map_err(io("open tree"))?;
        t.insert(key, value).map_err(io("kv put"))?;
        Ok(())
    }

    /// The taken message ids, as (digest, taken at ms), oldest first.
    pub fn seen_records(&self) -> Result<Vec<(u64, i64)>, StoreError> {
        self.seen.records()
    }

    /// Loads taken message ids as the replica read them.
    pub fn load_seen(&self, records: &[(u64, i64)]) -> Result<(), StoreError> {
        self.seen.load(records)
    }

    /// The whole audit log, as (sequence number, stored line).
    pub fn audit_lines(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.audit
            .lines()?
            .into_iter()
            .map(|l| {
                let e: super::AuditEntry = super::decode("audit", &l)?;
                Ok((e.seq, l))
            })
            .collect()
    }

    /// Drops audit records before `seq` from the working copy, once more than `slack` of them
    /// could go (the replica has written them out; appending needs only the newest).
    pub fn forget_audit_before(&self, seq: u64, slack: u64) -> Result<(), StoreError> {
        let lines = self.audit.lines()?;
        let first = lines
            .first()
            .and_then(|l| serde_json::from_slice::<super::AuditEntry>(l).ok())
            .map_or(seq, |e| e.seq);
        if seq <= first || seq - first <= slack {
            return Ok(());
        }
        let keep: Vec<Vec<u8>> = lines
            .into_iter()
            .filter(|l| {
                serde_json::from_slice::<super::AuditEntry>(l).map_or(true, |e| e.seq >= seq)
            })
            .collect();
        self.audit.rewrite(&keep)
    }

    /// Loads the whole audit log as the replica read it.
    pub fn load_audit(&self, lines: &[Vec<u8>]) -> Result<(), StoreError> {
        self.audit.rewrite(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that writes nothing anywhere.
    struct Nowhere;

    impl Replica for Nowhere {
        fn push<'a>(&'a self, store: &'a Store) -> PushFuture<'a> {
            Box::pin(async move {
                store.take_changes();
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn read_marks_alone_are_not_worth_a_push_but_anything_else_is() {
        let s = Store::temporary().unwrap();
        s.advance_mark("room", 5).unwrap();
        assert!(
            !s.has_changes_beyond(&[]),
            "nothing is tracked without a replica"
        );
        assert!(s.attach_replica(Arc::new(Nowhere)));
        s.advance_mark("room", 6).unwrap();
        assert!(s.has_changes_beyond(&[]));
        assert!(!s.has_changes_beyond(&[Tree::Marks]));
        assert!(s.mark_seen("m1", 1).unwrap());
        assert!(s.has_changes_beyond(&[Tree::Marks]));
        s.sync_replica().await.unwrap();
        assert!(!s.has_changes_beyond(&[]));
        assert!(s.take_changes().is_empty());
    }
}
