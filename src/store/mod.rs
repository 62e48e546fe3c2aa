//! The embedded store (sled, plus append-only files for seen message ids and the audit log) behind a small typed API.
//!
//! **Which calls block.** Every method but [`Store::flush`] and [`Store::flush_journal`] is
//! synchronous and runs on the caller's thread, the runtime's included. None of them waits for the
//! disk: a sled write lands in sled's page cache (sled's own thread writes it out every 500 ms),
//! and an append to the seen-ids or audit file is one `write(2)` into the kernel's page cache
//! under a short mutex, without `fsync`. So they stay on the async threads rather than going
//! through `spawn_blocking`, which would cost more than they do: `rocketops bench` times the five
//! writes of one command (seen, being handled, audit record, handled, read mark) in its "store
//! writes per command" line (docs/benchmarks.md has the figures). The two `flush` calls do wait
//! for the disk and are `async`: the journal is flushed after every step of an operation,
//! everything at shutdown. A crash of the process loses nothing written; a crash of the machine
//! may lose what the kernel had not yet written out, the last seconds of the audit log included.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod append;
mod audit_log;
mod journal;
mod marks;
mod records;
mod replica;
mod seen;
mod trees;

pub use self::records::{Record, Records};
pub use self::replica::{Changes, PushFuture, Replica};
pub use self::trees::Tree;
use self::trees::{LEGACY_AUDIT, LEGACY_SEEN};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another rocketops process (only one may run per store)"
    )]
    Locked { path: PathBuf },
    #[error(
        "the store at {path} is damaged ({detail}). To recover: stop rocketops, move {path} aside (keep it: `rocketops audit verify` and support may need it), and start again. A new store starts its read marks at now, so no earlier command runs again; its operation journal, locks and backup catalog start empty (the cluster's own backups are catalogued again as its CronJob runs)."
    )]
    Damaged { path: PathBuf, detail: String },
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
    #[error("cannot {op} {path}: {source}")]
    File {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store record is corrupt in tree {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("cannot write the state to Kubernetes: {detail}")]
    Replica { detail: String },
}

/// A stored JSON record.
fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

/// A record as stored JSON.
fn encode<T: Serialize + ?Sized>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn io(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// One audited command: who asked what, where, what was decided and why, and how it ended.
/// Records form a hash chain: each carries the hash of the one before. With the bot's audit key
/// the chain is keyed (HMAC-SHA256), so someone holding the store file but not the key cannot
/// rewrite it and recompute the hashes; `verify_audit` finds edits, and an anchor kept outside the
/// store (the head hash posted to a room, exported as a metric) finds truncation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEntry {
    /// Position in the log (set on append).
    #[serde(default)]
    pub seq: u64,
    pub at_ms: i64,
    /// Username that asked.
    pub user: String,
    /// Room it came from (channel name or room id).
    pub room: String,
    /// The command as typed.
    pub text: String,
    /// The parsed command, normalised (empty when it did not parse).
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub env: Option<String>,
    pub decision: AuditDecision,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub op: Option<OpId>,
    /// How it ended, when known.
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
    /// Whether `hash` is keyed (HMAC-SHA256 with the audit key) rather than a plain SHA-256.
    #[serde(default)]
    pub keyed: bool,
}

/// What the bot decided about a request, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum AuditDecision {
    #[default]
    #[serde(rename = "allowed")]
    Allowed,
    /// A read-only command answered.
    #[serde(rename = "allowed (read-only)")]
    AllowedReadOnly,
    #[serde(rename = "refused")]
    Refused,
    #[serde(rename = "confirmation requested")]
    ConfirmationRequested,
    #[serde(rename = "approval requested")]
    ApprovalRequested,
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "approved")]
    Approved,
    /// An operation ended (its outcome says how).
    #[serde(rename = "finished")]
    Finished,
    /// A schedule started it.
    #[serde(rename = "scheduled")]
    Scheduled,
    /// A schedule's run did not start (paused, busy, no backup).
    #[serde(rename = "skipped")]
    Skipped,
}

impl AuditDecision {
    /// As written in the log and its export.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allowed => "allowed",
            AuditDecision::AllowedReadOnly => "allowed (read-only)",
            AuditDecision::Refused => "refused",
            AuditDecision::ConfirmationRequested => "confirmation requested",
            AuditDecision::ApprovalRequested => "approval requested",
            AuditDecision::Confirmed => "confirmed",
            AuditDecision::Approved => "approved",
            AuditDecision::Finished => "finished",
            AuditDecision::Scheduled => "scheduled",
            AuditDecision::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for AuditDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for AuditDecision {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl AuditEntry {
    /// The hash of this record's content chained to `prev_hash`: keyed when `keyed` is set.
    fn compute_hash(&self, key: Option<&[u8]>) -> Option<String> {
        use hmac::Mac;
        use sha2::{Digest, Sha256};
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let body = serde_json::to_vec(&unhashed).unwrap_or_default();
        let bytes: Vec<u8> = if self.keyed {
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(key?).ok()?;
            m.update(self.prev_hash.as_bytes());
            m.update(&body);
            m.finalize().into_bytes().to_vec()
        } else {
            let mut h = Sha256::new();
            h.update(self.prev_hash.as_bytes());
            h.update(&body);
            h.finalize().to_vec()
        };
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What `verify_audit` found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    pub records: usize,
    /// The newest record's hash (empty for an empty log).
    pub head: String,
    /// The first keyed record, if any (records before it predate the key).
    pub keyed_from: Option<u64>,
}

/// Where the audit chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditBreak {
    #[error("audit record {seq} was altered (its hash does not match its content)")]
    Altered { seq: u64 },
    #[error("audit record {seq} does not follow record {prev} (a record was removed or inserted)")]
    Broken { seq: u64, prev: u64 },
    #[error("audit record at key {key} is unreadable: {detail}")]
    Unreadable { key: u64, detail: String },
    #[error(
        "audit record {seq} is not keyed although record {first_keyed} is: records were rewritten without the key"
    )]
    Unkeyed { seq: u64, first_keyed: u64 },
    #[error("audit record {seq} is keyed: verifying it needs the audit key (ROCKETOPS_AUDIT_KEY)")]
    NeedsKey { seq: u64 },
    #[error(
        "no audit record has the anchored head hash {head}: records were removed or rewritten after the anchor was taken"
    )]
    AnchorMissing { head: String },
}

/// Who holds a lock on an environment, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvLock {
    pub by: String,
    pub reason: Option<String>,
    pub at_ms: i64,
}

pub use self::seen::digest as message_digest;
pub use crate::journal::{LockKey, OpId, OpRecord, OpState, StepRecord, StepState};

/// An operation's record in this version's form, whatever format it was written in.
fn decode_op(v: &[u8]) -> Result<OpRecord, StoreError> {
    let mut op: OpRecord = decode(Tree::Ops.name(), v)?;
    op.upgrade();
    Ok(op)
}

/// sled's page cache; its default (1 GiB) would let a long-running bot grow without need.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// The bot's persistent state. Cloning is cheap and shares the same database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    seen: seen::Seen,
    /// Messages being handled, until answered (kept open: written twice per command).
    handling: sled::Tree,
    audit: audit_log::AuditLog,
    marks: sled::Tree,
    locks: sled::Tree,
    meta: sled::Tree,
    ops: sled::Tree,
    op_locks: sled::Tree,
    /// The audit key (HMAC), once set: new records are keyed with it.
    audit_key: std::sync::Arc<std::sync::RwLock<Option<Vec<u8>>>>,
    /// Writes to fail on purpose (tests of what a failed write leaves behind).
    faults: std::sync::Arc<std::sync::Mutex<Vec<WriteFault>>>,
    /// The replica writes go to, with state in Kubernetes.
    tracking: std::sync::Arc<std::sync::OnceLock<replica::Tracking>>,
}

/// A kind of record write that [`Store::fail_next_writes`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Put,
    Remove,
}

/// Writes of one kind to one tree still to be failed.
#[derive(Debug)]
struct WriteFault {
    tree: Tree,
    op: WriteOp,
    left: u32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `path`; a store held by another process is a clear error.
    ///
    /// A store just closed in this process can stay locked for a moment while sled's flusher
    /// thread ends, so a held lock is tried again for up to a second (a blocking wait, at start
    /// only) before it is reported.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut tries = 0;
        loop {
            match Store::open_once(path) {
                Err(StoreError::Locked { .. }) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Store, StoreError> {
        append::private_dir(path)?;
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
                let damaged = match &e {
                    sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => true,
                    sled::Error::Io(io) => {
                        io.kind() == std::io::ErrorKind::InvalidData
                            || io.kind() == std::io::ErrorKind::UnexpectedEof
                    }
                    other => other.to_string().to_lowercase().contains("corrupt"),
                };
                if locked {
                    StoreError::Locked {
                        path: path.to_path_buf(),
                    }
                } else if damaged {
                    StoreError::Damaged {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    }
                } else {
                    StoreError::OpenFailed {
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
            })?;
        let store = Store::from_db(db, Some(path)).map_err(|e| match e {
            StoreError::Io { source, .. } => StoreError::Damaged {
                path: path.to_path_buf(),
                detail: source.to_string(),
            },
            other => other,
        })?;
        append::tighten_tree(path)?;
        Ok(store)
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
        Store::from_db(db, None)
    }

    fn from_db(db: sled::Db, dir: Option<&Path>) -> Result<Store, StoreError> {
        let seen = match dir {
            Some(dir) => seen::Seen::open(&dir.join(seen::FILE))?,
            None => seen::Seen::temporary(),
        };
        let audit = match dir {
            Some(dir) => audit_log::AuditLog::open(&dir.join(audit_log::FILE))?,
            None => audit_log::AuditLog::temporary(),
        };
        // Before the audit file, the records were a tree, keyed by sequence number.
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_AUDIT.as_bytes())
        {
            let tree = db.open_tree(LEGACY_AUDIT).map_err(io("open audit"))?;
            let mut lines = audit.lines()?;
            for item in tree.iter() {
                let (_, v) = item.map_err(io("migrate audit"))?;
                lines.push(v.to_vec());
            }
            audit.rewrite(&lines)?;
            drop(tree);
            db.drop_tree(LEGACY_AUDIT).map_err(io("drop old audit"))?;
        }
        // Before the seen-ids file, each id was its own key in a tree.
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_SEEN.as_bytes())
        {
            let legacy = db.open_tree(LEGACY_SEEN).map_err(io("open seen"))?;
            seen.take_over(&legacy)?;
            drop(legacy);
            db.drop_tree(LEGACY_SEEN).map_err(io("drop old seen"))?;
        }
        let open = |t: Tree| db.open_tree(t.name()).map_err(io("open tree"));
        Ok(Store {
            seen,
            handling: open(Tree::Unanswered)?,
            audit,
            marks: open(Tree::Marks)?,
            locks: open(Tree::Locks)?,
            meta: open(Tree::Meta)?,
            ops: open(Tree::Ops)?,
            op_locks: open(Tree::OpLocks)?,
            audit_key: Default::default(),
            faults: Default::default(),
            tracking: Default::default(),
            db,
        })
    }

    /// Fails the next `n` record writes of kind `op` to `tree` as a broken disk would, for tests
    /// of what a failed write leaves behind.
    pub fn fail_next_writes(&self, tree: Tree, op: WriteOp, n: u32) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.retain(|f| !(f.tree == tree && f.op == op));
        faults.push(WriteFault { tree, op, left: n });
    }

    /// An injected failure of this write, if one is due.
    fn injected(&self, tree: Tree, op: WriteOp) -> Result<(), StoreError> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        match faults
            .iter_mut()
            .find(|f| f.tree == tree && f.op == op && f.left > 0)
        {
            Some(f) => {
                f.left -= 1;
                Err(StoreError::Io {
                    op: match op {
                        WriteOp::Put => "kv put",
                        WriteOp::Remove => "kv remove",
                    },
                    source: sled::Error::Io(std::io::Error::other("injected write failure")),
                })
            }
            None => Ok(()),
        }
    }

    /// Records a message id as seen; `true` if it was new (so its command may run), `false` if seen before.
    pub fn mark_seen(&self, message_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let new = self.seen.mark(message_id, now_ms)?;
        if new {
            self.touch_seen();
        }
        Ok(new)
    }

    pub fn is_seen(&self, message_id: &str) -> Result<bool, StoreError> {
        Ok(self.seen.contains(message_id))
    }

    /// Forgets message ids recorded before `cutoff_ms` (a minute's bucket at a time); returns how many.
    pub fn prune_seen(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let n = self.seen.prune(cutoff_ms)?;
        if n > 0 {
            self.touch_seen();
        }
        Ok(n)
    }

    /// Keys the audit chain from now on (the key comes from a Secret, never from the store).
    pub fn set_audit_key(&self, key: Option<&[u8]>) {
        if let Ok(mut k) = self.audit_key.write() {
            *k = key.filter(|k| !k.is_empty()).map(<[u8]>::to_vec);
        }
    }

    fn audit_key(&self) -> Option<Vec<u8>> {
        self.audit_key.read().ok().and_then(|k| k.clone())
    }

    /// Appends an audit record, chaining it to the previous one; returns its sequence number.
    pub fn audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let key = self.audit_key();
        let mut written = Vec::new();
        let seq = self.audit.append(|head| {
            let (seq, prev_hash) = match head {
                Some((seq, hash)) => (seq + 1, hash.clone()),
                None => (1, String::new()),
            };
            let mut e = entry.clone();
            // What chat shows redacted is stored redacted: the chain covers the redacted text.
            e.text = crate::redact::redact(&e.text);
            e.command = crate::redact::redact(&e.command);
            e.reason = e.reason.as_deref().map(crate::redact::redact);
            e.outcome = e.outcome.as_deref().map(crate::redact::redact);
            e.seq = seq;
            e.prev_hash = prev_hash;
            e.keyed = key.is_some();
            e.hash = e.compute_hash(key.as_deref()).unwrap_or_default();
            written = encode("audit", &e)?;
            Ok((seq, e.hash.clone(), written.clone()))
        })?;
        self.touch_audit(seq, &written);
        Ok(seq)
    }

    /// The newest `limit` audit records, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let lines = self.audit.lines()?;
        lines
            .iter()
            .rev()
            .take(limit)
            .map(|l| decode("audit", l))
            .collect()
    }

    /// Every audit record, oldest first.
    pub fn all_audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .lines()?
            .iter()
            .map(|l| decode("audit", l))
            .collect()
    }

    /// Checks the audit hash chain with `key` (needed for keyed records); with `anchor`, also that
    /// a record with that head hash is still in the chain.
    pub fn verify_audit(
        &self,
        key: Option<&[u8]>,
        anchor: Option<&str>,
    ) -> Result<Result<AuditSummary, AuditBreak>, StoreError> {
        let mut prev: Option<AuditEntry> = None;
        let mut n = 0;
        let mut keyed_from: Option<u64> = None;
        let mut anchored = anchor.is_none();
        for line in self.audit.lines()? {
            let e: AuditEntry = match serde_json::from_slice(&line) {
                Ok(e) => e,
                Err(err) => {
                    return Ok(Err(AuditBreak::Unreadable {
                        key: prev.as_ref().map_or(1, |p| p.seq + 1),
                        detail: err.to_string(),
                    }));
                }
            };
            if e.keyed {
                keyed_from.get_or_insert(e.seq);
                if key.is_none() {
                    return Ok(Err(AuditBreak::NeedsKey { seq: e.seq }));
                }
            } else if let Some(first_keyed) = keyed_from {
                return Ok(Err(AuditBreak::Unkeyed {
                    seq: e.seq,
                    first_keyed,
                }));
            }
            if Some(&e.hash) != e.compute_hash(key).as_ref() {
                return Ok(Err(AuditBreak::Altered { seq: e.seq }));
            }
            if anchor.is_some_and(|a| a.eq_ignore_ascii_case(&e.hash)) {
                anchored = true;
            }
            let expected_prev = prev.as_ref().map(|p| p.hash.clone()).unwrap_or_default();
            let expected_seq = prev.as_ref().map_or(1, |p| p.seq + 1);
            if e.prev_hash != expected_prev || e.seq != expected_seq {
                return Ok(Err(AuditBreak::Broken {
                    seq: e.seq,
                    prev: prev.map_or(0, |p| p.seq),
                }));
            }
            prev = Some(e);
            n += 1;
        }
        if !anchored {
            return Ok(Err(AuditBreak::AnchorMissing {
                head: anchor.unwrap_or_default().to_string(),
            }));
        }
        Ok(Ok(AuditSummary {
            records: n,
            head: prev.map(|p| p.hash).unwrap_or_default(),
            keyed_from,
        }))
    }

    /// The newest record's sequence number and hash (the anchor to keep outside the store).
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.audit.head())
    }

    /// Replaces the whole log (the tamper helpers below).
    #[cfg(any(test, feature = "test-util"))]
    fn write_audit_records(&self, records: &[AuditEntry]) -> Result<(), StoreError> {
        let lines = records
            .iter()
            .map(|e| encode("audit", e))
            .collect::<Result<Vec<_>, _>>()?;
        self.touch_audit_rewritten();
        self.audit.rewrite(&lines)
    }

    /// Edits record `seq` and recomputes the chain from there with `key` (keyed when given):
    /// what someone with the store file would do to hide an edit. For tamper-detection tests only.
    #[cfg(any(test, feature = "test-util"))]
    pub fn forge_audit(
        &self,
        seq: u64,
        f: impl FnOnce(&mut AuditEntry),
        key: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut f = Some(f);
        let mut records = self.all_audit()?;
        let mut prev_hash = records
            .iter()
            .find(|e| e.seq + 1 == seq)
            .map(|e| e.hash.clone())
            .unwrap_or_default();
        for e in records.iter_mut().filter(|e| e.seq >= seq) {
            if let Some(f) = f.take() {
                f(e);
            }
            e.prev_hash = prev_hash;
            e.keyed = key.is_some();
            e.hash = e.compute_hash(key).unwrap_or_default();
            prev_hash = e.hash.clone();
        }
        self.write_audit_records(&records)
    }

    /// Overwrites a stored audit record as-is (for tests of tamper detection only).
    #[cfg(any(test, feature = "test-util"))]
    pub fn tamper_audit(
        &self,
        seq: u64,
        f: impl FnOnce(&mut AuditEntry),
    ) -> Result<(), StoreError> {
        let mut records = self.all_audit()?;
        if let Some(e) = records.iter_mut().find(|e| e.seq == seq) {
            f(e);
        }
        self.write_audit_records(&records)
    }

    /// Removes a stored audit record (for tests of tamper detection only).
    #[cfg(any(test, feature = "test-util"))]
    pub fn delete_audit(&self, seq: u64) -> Result<(), StoreError> {
        let mut records = self.all_audit()?;
        records.retain(|e| e.seq != seq);
        self.write_audit_records(&records)
    }

    /// Records that message `id` is being handled (`what` says where to answer it).
    pub fn begin_handling<T: Serialize>(&self, id: &str, what: &T) -> Result<(), StoreError> {
        let v = encode(Tree::Unanswered.name(), what)?;
        self.handling
            .insert(id.as_bytes(), v)
            .map_err(io("begin handling"))?;
        self.touch(Tree::Unanswered, id.as_bytes());
        Ok(())
    }

    /// The messages still being handled (after a restart: those it stopped in the middle of).
    pub fn unanswered<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.handling.iter() {
            let (_, v) = item.map_err(io("read unanswered"))?;
            out.push(decode(Tree::Unanswered.name(), &v)?);
        }
        Ok(out)
    }

    /// Message `id` has been answered.
    pub fn end_handling(&self, id: &str) -> Result<(), StoreError> {
        self.handling
            .remove(id.as_bytes())
            .map_err(io("end handling"))?;
        self.touch(Tree::Unanswered, id.as_bytes());
        Ok(())
    }

    /// Flushes to disk (and pushes to the replica, with state in Kubernetes).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(io("flush"))?;
        self.audit.sync()?;
        self.sync_replica().await
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
    fn a_store_from_before_the_seen_ids_file_keeps_its_seen_ids_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let old = s.db.open_tree("seen").unwrap();
            old.insert("m-old", &5i64.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert!(s.is_seen("m-old").unwrap());
        assert!(!s.mark_seen("m-old", 6).unwrap());
        assert!(!s.db.tree_names().iter().any(|n| n.as_ref() == b"seen"));
        drop(s);
        assert!(Store::open(dir.path()).unwrap().is_seen("m-old").unwrap());
    }

    #[test]
    fn a_secret_in_a_command_is_stored_redacted_and_the_chain_covers_the_redacted_text() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.audit(&AuditEntry {
            user: "alice".into(),
            text: "/ping password=Hunter9Zq".into(),
            reason: Some("job log: redis-cli -a Hunter9Zq ping".into()),
            ..AuditEntry::default()
        })
        .unwrap();
        let file = std::fs::read_to_string(dir.path().join(audit_log::FILE)).unwrap();
        assert!(!file.contains("Hunter9Zq"), "{file}");
        assert!(file.contains("password=***"), "{file}");
        assert!(s.verify_audit(None, None).unwrap().is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn store_files_are_private_to_the_bot_and_an_older_store_is_tightened_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let fresh = parent.path().join("fresh");
        Store::open(&fresh)
            .unwrap()
            .audit(&AuditEntry::default())
            .unwrap();
        assert_eq!(mode(&fresh), 0o700);
        for f in [audit_log::FILE, seen::FILE] {
            assert_eq!(mode(&fresh.join(f)), 0o600, "{f}");
        }
        // A store made before: world-readable folder and files.
        let old = parent.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(old.join(audit_log::FILE), "").unwrap();
        std::fs::set_permissions(
            old.join(audit_log::FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        drop(Store::open(&old).unwrap());
        assert_eq!(mode(&old), 0o700);
        for entry in std::fs::read_dir(&old).unwrap().flatten() {
            let want = if entry.file_type().unwrap().is_dir() {
                0o700
            } else {
                0o600
            };
            assert_eq!(mode(&entry.path()), want, "{}", entry.path().display());
        }
    }

    #[test]
    fn the_audit_log_survives_a_reopen_drops_a_torn_last_line_and_takes_over_the_old_tree() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            // As a store from before the audit file left its records: a tree keyed by sequence.
            let old = s.db.open_tree("audit").unwrap();
            let first = AuditEntry {
                seq: 1,
                user: "alice".into(),
                ..AuditEntry::default()
            };
            let mut first = first;
            first.hash = first.compute_hash(None).unwrap();
            old.insert(1u64.to_be_bytes(), serde_json::to_vec(&first).unwrap())
                .unwrap();
            s.db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.all_audit().unwrap()[0].user, "alice");
        assert!(!s.db.tree_names().iter().any(|n| n.as_ref() == b"audit"));
        assert_eq!(
            s.audit(&AuditEntry {
                user: "bob".into(),
                ..AuditEntry::default()
            })
            .unwrap(),
            2
        );
        assert_eq!(s.verify_audit(None, None).unwrap().unwrap().records, 2);
        drop(s);
        // A crash in the middle of a write leaves half a line.
        let path = dir.path().join(audit_log::FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"seq\":3,\"us").unwrap();
        drop(f);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.audit_head().unwrap().unwrap().0, 2);
        assert_eq!(s.verify_audit(None, None).unwrap().unwrap().records, 2);
        assert_eq!(s.recent_audit(1).unwrap()[0].user, "bob");
    }

    #[test]
    fn a_long_audit_log_reopens_from_its_tail_with_the_chain_going_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            for i in 0..400 {
                s.audit(&AuditEntry {
                    user: format!("user-{i}"),
                    text: "x".repeat(400),
                    ..AuditEntry::default()
                })
                .unwrap();
            }
        }
        let len = std::fs::metadata(dir.path().join(audit_log::FILE))
            .unwrap()
            .len();
        assert!(
            len > 2 * 64 * 1024,
            "longer than the tail read at start: {len}"
        );
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.audit_head().unwrap().unwrap().0, 400);
        s.audit(&AuditEntry::default()).unwrap();
        assert_eq!(s.verify_audit(None, None).unwrap().unwrap().records, 401);
    }

    #[test]
    fn pruning_forgets_only_old_ids() {
        let s = Store::temporary().unwrap();
        s.mark_seen("old", 10).unwrap();
        s.mark_seen("new", 100_000).unwrap();
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
                text: format!("ping {i}"),
                decision: AuditDecision::Allowed,
                ..AuditEntry::default()
            })
            .unwrap();
        }
        let got = s.recent_audit(2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text, "ping 2");
        assert_eq!(got[0].seq, 3);
    }

    fn audited(key: Option<&[u8]>, n: i64) -> Store {
        let s = Store::temporary().unwrap();
        s.set_audit_key(key);
        for i in 0..n {
            s.audit(&AuditEntry {
                at_ms: i,
                user: "alice".into(),
                text: format!("deploy prod v{i}"),
                decision: AuditDecision::Allowed,
                ..AuditEntry::default()
            })
            .unwrap();
        }
        s
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn an_altered_or_removed_audit_record_breaks_the_chain() {
        let s = audited(None, 4);
        assert_eq!(s.verify_audit(None, None).unwrap().unwrap().records, 4);
        s.tamper_audit(2, |e| e.user = "mallory".into()).unwrap();
        assert_eq!(
            s.verify_audit(None, None).unwrap(),
            Err(AuditBreak::Altered { seq: 2 })
        );
        let s = audited(None, 4);
        s.delete_audit(3).unwrap();
        assert_eq!(
            s.verify_audit(None, None).unwrap(),
            Err(AuditBreak::Broken { seq: 4, prev: 2 })
        );
    }

    #[test]
    fn a_keyed_chain_rewritten_without_the_key_is_detected() {
        let s = audited(Some(KEY), 4);
        let ok = s.verify_audit(Some(KEY), None).unwrap().unwrap();
        assert_eq!((ok.records, ok.keyed_from), (4, Some(1)));
        // Recomputed as a plain hash chain: every hash matches its content, but it is not keyed.
        s.forge_audit(2, |e| e.user = "mallory".into(), None)
            .unwrap();
        assert!(matches!(
            s.verify_audit(Some(KEY), None).unwrap(),
            Err(AuditBreak::Unkeyed { seq: 2, .. })
        ));
        // Recomputed with a guessed key: the hashes do not match the real key.
        let s = audited(Some(KEY), 4);
        s.forge_audit(
            2,
            |e| e.user = "mallory".into(),
            Some(b"guessed-key-guessed-key"),
        )
        .unwrap();
        assert_eq!(
            s.verify_audit(Some(KEY), None).unwrap(),
            Err(AuditBreak::Altered { seq: 2 })
        );
        assert_eq!(
            s.verify_audit(None, None).unwrap(),
            Err(AuditBreak::NeedsKey { seq: 1 })
        );
    }

    #[test]
    fn truncation_is_found_by_the_anchored_head() {
        let s = audited(Some(KEY), 5);
        let (seq, head) = s.audit_head().unwrap().unwrap();
        assert_eq!(seq, 5);
        assert!(s.verify_audit(Some(KEY), Some(&head)).unwrap().is_ok());
        s.delete_audit(5).unwrap();
        s.delete_audit(4).unwrap();
        // What is left is a valid chain, but the anchor is gone.
        assert!(s.verify_audit(Some(KEY), None).unwrap().is_ok());
        assert_eq!(
            s.verify_audit(Some(KEY), Some(&head)).unwrap(),
            Err(AuditBreak::AnchorMissing { head })
        );
    }

    #[test]
    fn records_from_before_the_key_stay_verifiable_and_the_key_applies_from_then_on() {
        let s = audited(None, 2);
        s.set_audit_key(Some(KEY));
        s.audit(&AuditEntry {
            user: "bob".into(),
            decision: AuditDecision::Allowed,
            ..AuditEntry::default()
        })
        .unwrap();
        let ok = s.verify_audit(Some(KEY), None).unwrap().unwrap();
        assert_eq!((ok.records, ok.keyed_from), (3, Some(3)));
    }

    #[test]
    fn operation_numbers_count_up_and_environment_locks_are_exclusive() {
        let s = Store::temporary().unwrap();
        assert_eq!(
            (s.next_op_id().unwrap(), s.next_op_id().unwrap()),
            (OpId::new(1), OpId::new(2))
        );
        let l = EnvLock {
            by: "alice".into(),
            reason: Some("freeze".into()),
            at_ms: 1,
        };
        assert_eq!(s.lock_env("prod", &l).unwrap(), Ok(()));
        let again = s
            .lock_env(
                "prod",
                &EnvLock {
                    by: "bob".into(),
                    reason: None,
                    at_ms: 2,
                },
            )
            .unwrap();
        assert_eq!(again, Err(l.clone()));
        assert_eq!(s.unlock_env("prod").unwrap(), Some(l));
        assert_eq!(s.env_lock("prod").unwrap(), None);
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
