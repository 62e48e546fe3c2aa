//! Environment locks people take (`lock ENV`) and the read marks that keep a restarted bot from running a command twice.

use super::{EnvLock, Store, StoreError, Tree, encode, io};

/// Key of the room-independent read mark.
const GLOBAL_MARK: &str = "*";

impl Store {
    /// Locks an environment; `Err` with the holder when it is already locked.
    pub fn lock_env(&self, env: &str, lock: &EnvLock) -> Result<Result<(), EnvLock>, StoreError> {
        let value = encode(Tree::Locks.name(), lock)?;
        match self
            .locks
            .compare_and_swap(env.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(io("lock"))?
        {
            Ok(()) => {
                self.touch(Tree::Locks, env.as_bytes());
                Ok(Ok(()))
            }
            Err(cas) => {
                let held = cas.current.and_then(|v| serde_json::from_slice(&v).ok());
                Ok(Err(held.unwrap_or(EnvLock {
                    by: "?".into(),
                    reason: None,
                    at_ms: 0,
                })))
            }
        }
    }

    /// Lifts an environment's lock; returns what it was.
    pub fn unlock_env(&self, env: &str) -> Result<Option<EnvLock>, StoreError> {
        let old = self.locks.remove(env.as_bytes()).map_err(io("unlock"))?;
        self.touch(Tree::Locks, env.as_bytes());
        Ok(old.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn env_lock(&self, env: &str) -> Result<Option<EnvLock>, StoreError> {
        Ok(self
            .locks
            .get(env.as_bytes())
            .map_err(io("read lock"))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
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
            self.touch(Tree::Marks, key.as_bytes());
        }
        Ok(())
    }

    /// Sets the global mark if none exists yet (first start: history before now is not replayed).
    pub fn init_global_mark(&self, now_ms: i64) -> Result<(), StoreError> {
        // A mark already there wins (that is the point); only the swap's outcome is dropped.
        let _ = self
            .marks
            .compare_and_swap(
                GLOBAL_MARK.as_bytes(),
                None as Option<&[u8]>,
                Some(&now_ms.to_be_bytes()[..]),
            )
            .map_err(io("init mark"))?;
        self.touch(Tree::Marks, GLOBAL_MARK.as_bytes());
        Ok(())
    }
}
