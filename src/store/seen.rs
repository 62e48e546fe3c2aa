//! The set of message ids already taken as commands: 8 bytes each in memory, an append-only file on disk.
//!
//! One sled key per id cost about 140 bytes of sled's memory each (14 MB per 100,000 commands,
//! measured by `rocketops bench --messages 100000`), and sled keeps a share of any tree this busy
//! in memory. Here an id is kept as 8 bytes of its SHA-256 in a sorted vector, and appended to the
//! store's `seen-ids` file as one 16-byte record (digest, time) written before the command runs,
//! so a killed process never loses it. Pruning rewrites the file without the old records.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::StoreError;
use super::append::Sink;

/// The file, inside the store's folder.
pub(super) const FILE: &str = "seen-ids";
const RECORD: usize = 16;

/// The keys are already uniformly distributed (SHA-256 bits): hashing them again is waste.
#[derive(Default, Clone, Copy)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Ids newer than the last merge; at most [`MERGE_AT`] of them.
type Recent = HashSet<u64, BuildHasherDefault<Passthrough>>;

/// How many new ids wait in the hash set before they are merged into the sorted vector.
const MERGE_AT: usize = 4096;

/// The digests: most in a sorted vector of exactly their size (8 bytes each, searched by halves),
/// the newest in a small hash set merged into it in batches. A hash set of them all would cost
/// 9 to 18 bytes each and double its table at once as it grows.
#[derive(Default)]
struct IdSet {
    sorted: Vec<u64>,
    recent: Recent,
}

impl IdSet {
    fn contains(&self, h: u64) -> bool {
        self.recent.contains(&h) || self.sorted.binary_search(&h).is_ok()
    }

    fn insert(&mut self, h: u64) {
        if self.contains(h) {
            return;
        }
        self.recent.insert(h);
        if self.recent.len() >= MERGE_AT {
            self.merge();
        }
    }

    fn merge(&mut self) {
        // Grown to the exact size (a large block is remapped in place, not copied and left behind).
        self.sorted.reserve_exact(self.recent.len());
        self.sorted.extend(self.recent.drain());
        self.sorted.sort_unstable();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }
}

impl FromIterator<u64> for IdSet {
    fn from_iter<I: IntoIterator<Item = u64>>(ids: I) -> IdSet {
        let mut sorted: Vec<u64> = ids.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        IdSet {
            sorted,
            recent: Recent::default(),
        }
    }
}

/// The 8-byte digest an id is kept as (stable across versions and restarts).
pub fn digest(message_id: &str) -> u64 {
    let d = Sha256::digest(message_id.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

fn record(h: u64, at_ms: i64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&h.to_le_bytes());
    r[8..].copy_from_slice(&at_ms.to_le_bytes());
    r
}

fn parse(r: &[u8]) -> (u64, i64) {
    let h = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
    let at = i64::from_le_bytes(r[8..RECORD].try_into().unwrap_or([0; 8]));
    (h, at)
}

struct Inner {
    set: IdSet,
    sink: Sink,
}

/// Seen message ids. Cloning shares the same set and file.
#[derive(Clone)]
pub(super) struct Seen {
    inner: Arc<Mutex<Inner>>,
}

impl Seen {
    fn new(set: IdSet, sink: Sink) -> Seen {
        Seen {
            inner: Arc::new(Mutex::new(Inner { set, sink })),
        }
    }

    /// A set that lives in memory only.
    pub(super) fn temporary() -> Seen {
        Seen::new(IdSet::default(), Sink::memory())
    }

    /// Opens (or creates) the file at `path` and loads its ids. A record cut short by a crash
    /// at the end of the file is dropped (its command had not been taken).
    pub(super) fn open(path: &Path) -> Result<Seen, StoreError> {
        let (sink, bytes) = Sink::open(path, |b| b.len() - b.len() % RECORD)?;
        let set: IdSet = bytes.chunks_exact(RECORD).map(|r| parse(r).0).collect();
        Ok(Seen::new(set, sink))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `message_id`; `true` if it was new. The record is in the file when this returns.
    pub(super) fn mark(&self, message_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let h = digest(message_id);
        let mut g = self.lock();
        if g.set.contains(h) {
            return Ok(false);
        }
        // Not durable, so not taken: the message is not run.
        g.sink.append(&record(h, now_ms))?;
        g.set.insert(h);
        Ok(true)
    }

    /// Whether `message_id` was recorded.
    pub(super) fn contains(&self, message_id: &str) -> bool {
        self.lock().set.contains(digest(message_id))
    }

    /// Forgets ids recorded before `cutoff_ms`; returns how many. The file is rewritten beside
    /// the old one and renamed over it, so a crash in between leaves one whole file.
    pub(super) fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut g = self.lock();
        let bytes = g.sink.read()?;
        let mut kept = Vec::with_capacity(bytes.len());
        let mut dropped = 0;
        for r in bytes.chunks_exact(RECORD) {
            if parse(r).1 < cutoff_ms {
                dropped += 1;
            } else {
                kept.extend_from_slice(r);
            }
        }
        if dropped == 0 {
            return Ok(0);
        }
        // The set is built again from what the file keeps: the file is the authority.
        let set: IdSet = kept.chunks_exact(RECORD).map(|r| parse(r).0).collect();
        g.sink.replace(kept)?;
        g.set = set;
        Ok(dropped)
    }

    /// Every record, as (digest, taken at ms), oldest first.
    pub(super) fn records(&self) -> Result<Vec<(u64, i64)>, StoreError> {
        let bytes = self.lock().sink.read()?;
        Ok(bytes.chunks_exact(RECORD).map(parse).collect())
    }

    /// Adds records read elsewhere (a replica's copy), skipping digests already known.
    pub(super) fn load(&self, records: &[(u64, i64)]) -> Result<(), StoreError> {
        let mut g = self.lock();
        for &(h, at) in records {
            if !g.set.contains(h) {
                g.sink.append(&record(h, at))?;
                g.set.insert(h);
            }
        }
        Ok(())
    }

    /// Appends ids of the former one-sled-key-per-id tree, then empties it.
    pub(super) fn take_over(&self, legacy: &sled::Tree) -> Result<(), StoreError> {
        for item in legacy.iter() {
            let (k, v) = item.map_err(super::io("migrate seen"))?;
            let at = v.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(0);
            self.mark(&String::from_utf8_lossy(&k), at)?;
        }
        legacy.clear().map_err(super::io("migrate seen"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn ids_stay_known_across_merges_into_the_sorted_part_and_are_counted_once() {
        let mut set = IdSet::default();
        let n = 3 * MERGE_AT as u64 + 17;
        for i in 0..n {
            set.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            set.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        assert_eq!(set.len(), n as usize);
        assert!(set.recent.len() < MERGE_AT);
        assert!(set.sorted.windows(2).all(|w| w[0] < w[1]));
        assert!((0..n).all(|i| set.contains(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
        assert!(!(n..n + 1000).any(|i| set.contains(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
        let again: IdSet = [5, 3, 5, 1].into_iter().collect();
        assert_eq!(
            (again.sorted.as_slice(), again.len()),
            ([1, 3, 5].as_slice(), 3)
        );
    }

    #[test]
    fn an_id_is_new_once_and_still_known_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let s = Seen::open(&path).unwrap();
        for i in 0..1000 {
            assert!(s.mark(&format!("m{i}"), i).unwrap());
        }
        assert!(!s.mark("m5", 2000).unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            1000 * RECORD as u64
        );
        drop(s);
        let again = Seen::open(&path).unwrap();
        assert!(again.contains("m999") && again.contains("m0") && !again.contains("m1000"));
        assert!(!again.mark("m0", 3000).unwrap());
        assert!(again.mark("m1000", 3000).unwrap());
    }

    #[test]
    fn pruning_forgets_old_ids_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let s = Seen::open(&path).unwrap();
        s.mark("old", 10).unwrap();
        s.mark("new", 100).unwrap();
        assert_eq!(s.prune(50).unwrap(), 1);
        assert!(!s.contains("old") && s.contains("new"));
        // Appends go on after the rewrite, into the new file.
        s.mark("newer", 200).unwrap();
        let again = Seen::open(&path).unwrap();
        assert!(!again.contains("old") && again.contains("new") && again.contains("newer"));
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let s = Seen::open(&path).unwrap();
        s.mark("whole", 1).unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&record(digest("torn"), 2)[..7]).unwrap();
        drop(f);
        let again = Seen::open(&path).unwrap();
        assert!(again.contains("whole") && !again.contains("torn"));
        assert!(again.mark("torn", 3).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * RECORD as u64);
    }

    #[test]
    fn ids_of_the_former_one_key_per_id_tree_are_taken_over() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let old = db.open_tree("seen").unwrap();
        old.insert("m-before-upgrade", &42i64.to_be_bytes())
            .unwrap();
        let s = Seen::temporary();
        s.take_over(&old).unwrap();
        assert!(s.contains("m-before-upgrade") && old.is_empty());
        assert!(!s.mark("m-before-upgrade", 50).unwrap());
    }
}
