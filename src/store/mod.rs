//! The embedded store (sled) behind a small typed API: seen message ids, the audit log and room read marks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another rocketops process (only one may run per store)"
    )]
    Locked { path: PathBuf },
    #[error("cannot open the store at {path}: {source}")]
    OpenFailed {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("store record is corrupt in tree {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
}

fn io(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Username that asked.
    pub user: String,
    /// Room id the command came from.
    pub room: String,
    /// The command as typed (already free of secrets).
    pub command: String,
    /// `accepted`, `refused: <reason>`, `done`, `failed: <reason>`.
    pub outcome: String,
}

/// sled's page cache; its default (1 GiB) would let a long-running bot grow without need.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Key of the room-independent read mark.
const GLOBAL_MARK: &str = "*";

/// The bot's persistent state. Cloning is cheap and shares the same database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    seen: sled::Tree,
    audit: sled::Tree,
    marks: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `path`; a store held by another process is a clear error.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| {
                let locked = match &e {
                    sled::Error::Io(io) => {
                        io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().contains("lock")
                    }
                    _ => false,
                };
                if locked {
                    StoreError::Locked {
                        path: path.to_path_buf(),
                    }
                } else {
                    StoreError::OpenFailed {
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
            })?;
        Store::from_db(db)
    }

    /// A store that lives in memory and vanishes on drop (tests, benchmarks).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| StoreError::OpenFailed {
                path: PathBuf::from("(temporary)"),
                source,
            })?;
        Store::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            seen: db.open_tree("seen").map_err(io("open seen"))?,
            audit: db.open_tree("audit").map_err(io("open audit"))?,
            marks: db.open_tree("marks").map_err(io("open marks"))?,
            db,
        })
    }

    /// Records a message id as seen; `true` if it was new (so its command may run), `false` if seen before.
    pub fn mark_seen(&self, message_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let swapped = self
            .seen
            .compare_and_swap(
                message_id.as_bytes(),
                None as Option<&[u8]>,
                Some(&now_ms.to_be_bytes()[..]),
            )
            .map_err(io("mark seen"))?;
        Ok(swapped.is_ok())
    }

    pub fn is_seen(&self, message_id: &str) -> Result<bool, StoreError> {
        self.seen
            .contains_key(message_id.as_bytes())
            .map_err(io("read seen"))
    }

    /// Forgets message ids recorded before `cutoff_ms`; returns how many.
    pub fn prune_seen(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.seen.iter() {
            let (k, v) = item.map_err(io("scan seen"))?;
            let at = v
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if at < cutoff_ms {
                self.seen.remove(k).map_err(io("prune seen"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Appends an audit entry; returns its sequence number.
    pub fn audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let id = self.db.generate_id().map_err(io("audit id"))?;
        let value = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
            tree: "audit",
            detail: e.to_string(),
        })?;
        self.audit
            .insert(id.to_be_bytes(), value)
            .map_err(io("audit"))?;
        Ok(id)
    }

    /// The newest `limit` audit entries, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev().take(limit) {
            let (_, v) = item.map_err(io("read audit"))?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                tree: "audit",
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// The timestamp (server ms) of the newest message handled in `room`, or the global mark.
    pub fn read_mark(&self, room: &str) -> Result<Option<i64>, StoreError> {
        match self.mark(room)? {
            Some(m) => Ok(Some(m)),
            None => self.mark(GLOBAL_MARK),
        }
    }

    fn mark(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .marks
            .get(key.as_bytes())
            .map_err(io("read mark"))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Moves `room`'s read mark (and the global one) forward to `ts_ms`; never backwards.
    pub fn advance_mark(&self, room: &str, ts_ms: i64) -> Result<(), StoreError> {
        for key in [room, GLOBAL_MARK] {
            self.marks
                .fetch_and_update(key.as_bytes(), |old| {
                    let old = old
                        .and_then(|v| v.try_into().ok().map(i64::from_be_bytes))
                        .unwrap_or(i64::MIN);
                    Some(old.max(ts_ms).to_be_bytes().to_vec())
                })
                .map_err(io("advance mark"))?;
        }
        Ok(())
    }

    /// Sets the global mark if none exists yet (first start: history before now is not replayed).
    pub fn init_global_mark(&self, now_ms: i64) -> Result<(), StoreError> {
        let _ = self
            .marks
            .compare_and_swap(
                GLOBAL_MARK.as_bytes(),
                None as Option<&[u8]>,
                Some(&now_ms.to_be_bytes()[..]),
            )
            .map_err(io("init mark"))?;
        Ok(())
    }

    /// Flushes to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(io("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_new_once_and_seen_after() {
        let s = Store::temporary().unwrap();
        assert!(s.mark_seen("m1", 10).unwrap());
        assert!(!s.mark_seen("m1", 11).unwrap());
        assert!(s.is_seen("m1").unwrap());
    }

    #[test]
    fn pruning_forgets_only_old_ids() {
        let s = Store::temporary().unwrap();
        s.mark_seen("old", 10).unwrap();
        s.mark_seen("new", 100).unwrap();
        assert_eq!(s.prune_seen(50).unwrap(), 1);
        assert!(!s.is_seen("old").unwrap());
        assert!(s.is_seen("new").unwrap());
    }

    #[test]
    fn read_marks_only_move_forward_and_fall_back_to_the_global_mark() {
        let s = Store::temporary().unwrap();
        assert_eq!(s.read_mark("r1").unwrap(), None);
        s.init_global_mark(5).unwrap();
        assert_eq!(s.read_mark("r1").unwrap(), Some(5));
        s.advance_mark("r1", 20).unwrap();
        s.advance_mark("r1", 15).unwrap();
        assert_eq!(s.read_mark("r1").unwrap(), Some(20));
        assert_eq!(s.read_mark("r2").unwrap(), Some(20));
        s.init_global_mark(1).unwrap();
        assert_eq!(s.read_mark("r2").unwrap(), Some(20));
    }

    #[test]
    fn audit_entries_come_back_newest_first() {
        let s = Store::temporary().unwrap();
        for i in 0..3 {
            s.audit(&AuditEntry {
                at_ms: i,
                user: "alice".into(),
                room: "r".into(),
                command: format!("ping {i}"),
                outcome: "done".into(),
            })
            .unwrap();
        }
        let got = s.recent_audit(2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].command, "ping 2");
    }

    #[test]
    fn a_store_held_by_another_opener_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another"));
    }
}
