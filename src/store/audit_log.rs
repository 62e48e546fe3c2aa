//! The audit log's storage: one JSON record per line in an append-only file, with only the head in memory.
//!
//! Kept in sled, the log's tree made the bot's memory grow with every command (2–4 MB per 90,000
//! commands beyond everything else, measured by `rocketops bench --messages 100000`). A file
//! costs no memory, and a log collector can ship it line by line. The hash chain (see
//! [`super::AuditEntry`]) is what makes edits detectable, wherever the records live.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::StoreError;

/// The file, inside the store's folder.
pub(super) const FILE: &str = "audit.jsonl";

fn fail<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::File {
        op,
        path: path.to_path_buf(),
        source: e,
    }
}

enum Log {
    File(File),
    Memory(Vec<u8>),
}

struct Inner {
    log: Log,
    /// The newest record's sequence number and hash.
    head: Option<(u64, String)>,
}

/// The audit log. Cloning shares it.
#[derive(Clone)]
pub(super) struct AuditLog {
    path: Option<PathBuf>,
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
    /// A log that lives in memory only.
    pub(super) fn temporary() -> AuditLog {
        AuditLog {
            path: None,
            inner: Arc::new(Mutex::new(Inner {
                log: Log::Memory(Vec::new()),
                head: None,
            })),
        }
    }

    /// Opens (or creates) the file at `path`. A line cut short by a crash at the end of the file
    /// is dropped: it was never a whole record.
    pub(super) fn open(path: &Path) -> Result<AuditLog, StoreError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(fail("open", path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(fail("read", path))?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole != bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "dropping an audit record cut short at the end of the log");
            file.set_len(whole as u64).map_err(fail("repair", path))?;
            bytes.truncate(whole);
        }
        Ok(AuditLog {
            path: Some(path.to_path_buf()),
            inner: Arc::new(Mutex::new(Inner {
                head: head_of(&bytes),
                log: Log::File(file),
            })),
        })
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
        match (&mut g.log, self.path.as_deref()) {
            (Log::File(f), Some(path)) => f.write_all(&line).map_err(fail("append to", path))?,
            (Log::File(_), None) => {}
            (Log::Memory(m), _) => m.extend_from_slice(&line),
        }
        g.head = Some((seq, hash));
        Ok(seq)
    }

    /// Every whole line, oldest first.
    pub(super) fn lines(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let g = self.lock();
        let bytes = match (&g.log, self.path.as_deref()) {
            (Log::Memory(m), _) => m.clone(),
            (Log::File(_), Some(path)) => std::fs::read(path).map_err(fail("read", path))?,
            (Log::File(_), None) => Vec::new(),
        };
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
        g.log = match self.path.as_deref() {
            None => Log::Memory(bytes),
            Some(path) => {
                let tmp = path.with_extension("rewrite");
                let mut out = File::create(&tmp).map_err(fail("rewrite", path))?;
                out.write_all(&bytes).map_err(fail("rewrite", path))?;
                out.sync_all().map_err(fail("rewrite", path))?;
                drop(out);
                std::fs::rename(&tmp, path).map_err(fail("replace", path))?;
                Log::File(
                    OpenOptions::new()
                        .append(true)
                        .open(path)
                        .map_err(fail("open", path))?,
                )
            }
        };
        Ok(())
    }

    /// Writes the log to disk.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let g = self.lock();
        if let (Log::File(f), Some(path)) = (&g.log, self.path.as_deref()) {
            f.sync_data().map_err(fail("sync", path))?;
        }
        Ok(())
    }
}
