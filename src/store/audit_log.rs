//! The audit log's storage: one JSON record per line in an append-only file, with only the head in memory.
//!
//! Kept in sled, the log's tree made the bot's memory grow with every command (2–4 MB per 90,000
//! commands beyond everything else, measured by `rocketops bench --messages 100000`). A file
//! costs no memory, and a log collector can ship it line by line. The hash chain (see
//! [`super::AuditEntry`]) is what makes edits detectable, wherever the records live.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::append::Sink;

/// The file, inside the store's folder.
pub(super) const FILE: &str = "audit.jsonl";

/// How much of the end of the file is read at start to find the head.
const TAIL: u64 = 64 * 1024;

struct Inner {
    sink: Sink,
    /// The newest record's sequence number and hash.
    head: Option<(u64, String)>,
}

/// The audit log. Cloning shares it.
#[derive(Clone)]
pub(super) struct AuditLog {
    inner: Arc<Mutex<Inner>>,
}

/// The sequence number and hash of the last readable line.
fn head_of(bytes: &[u8]) -> Option<(u64, String)> {
    bytes
        .split(|b| *b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .find_map(|l| serde_json::from_slice::<super::AuditEntry>(l).ok())
        .map(|e| (e.seq, e.hash))
}

impl AuditLog {
    fn new(sink: Sink, head: Option<(u64, String)>) -> AuditLog {
        AuditLog {
            inner: Arc::new(Mutex::new(Inner { sink, head })),
        }
    }

    /// A log that lives in memory only.
    pub(super) fn temporary() -> AuditLog {
        AuditLog::new(Sink::memory(), None)
    }

    /// Opens (or creates) the file at `path`. A line cut short by a crash at the end of the file
    /// is dropped: it was never a whole record.
    /// Only the end of the file is read at start (a record is at most a few kilobytes).
    pub(super) fn open(path: &Path) -> Result<AuditLog, StoreError> {
        let whole = |b: &[u8]| b.iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
        let (sink, tail) = Sink::open_tail(path, TAIL, whole)?;
        let head = match head_of(&tail) {
            Some(h) => Some(h),
            // No whole record in the tail: an empty log, or a longer one to read whole.
            None if !tail.is_empty() => head_of(&sink.read()?),
            None => None,
        };
        Ok(AuditLog::new(sink, head))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest record's sequence number and hash.
    pub(super) fn head(&self) -> Option<(u64, String)> {
        self.lock().head.clone()
    }

    /// Appends the record `make` builds from the current head; returns its sequence number.
    pub(super) fn append(
        &self,
        make: impl FnOnce(Option<&(u64, String)>) -> Result<(u64, String, Vec<u8>), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let (seq, hash, mut line) = make(g.head.as_ref())?;
        line.push(b'\n');
        g.sink.append(&line)?;
        g.head = Some((seq, hash));
        Ok(seq)
    }

    /// Every whole line, oldest first.
    pub(super) fn lines(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let bytes = self.lock().sink.read()?;
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Replaces the whole log (the tamper-detection tests' helpers and the migration use it).
    pub(super) fn rewrite(&self, lines: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        let mut g = self.lock();
        g.head = head_of(&bytes);
        g.sink.replace(bytes)
    }

    /// Writes the log to disk.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.lock().sink.sync()
    }
}
