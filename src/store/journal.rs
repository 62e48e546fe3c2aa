//! The operations journal in the store: operation numbers, the records written before and after every step, and which operation holds which lock.

use super::{LockKey, OpId, OpRecord, OpState, Store, StoreError, Tree, decode_op, encode, io};

impl Store {
    /// A new operation number (1, 2, 3, ...).
    pub fn next_op_id(&self) -> Result<OpId, StoreError> {
        let v = self
            .meta
            .update_and_fetch("next_op", |old| {
                let n = old
                    .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                    .unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(io("op id"))?;
        self.touch(Tree::Meta, b"next_op");
        Ok(v.and_then(|v| OpId::from_key(&v)).unwrap_or(OpId::new(1)))
    }

    /// Writes (or rewrites) an operation's journal record and flushes it to disk.
    /// Writes an operation's record; it is on disk after [`Store::flush_journal`] (or sled's
    /// own periodic flush), so that progress ticks never wait on the disk.
    pub fn put_op(&self, op: &OpRecord) -> Result<(), StoreError> {
        let value = encode(Tree::Ops.name(), op)?;
        self.ops
            .insert(op.id.to_key(), value)
            .map_err(io("journal"))?;
        self.touch(Tree::Ops, &op.id.to_key());
        Ok(())
    }

    /// Writes an operation's record exactly as given, after checking that it reads (a journal
    /// written by an older version: the upgrade tests and recovery tools use it).
    pub fn put_op_json(&self, id: OpId, json: &[u8]) -> Result<(), StoreError> {
        decode_op(json)?;
        self.ops.insert(id.to_key(), json).map_err(io("journal"))?;
        self.touch(Tree::Ops, &id.to_key());
        Ok(())
    }

    /// Makes the journal and the operation locks durable, off the async runtime's threads.
    pub async fn flush_journal(&self) -> Result<(), StoreError> {
        self.ops.flush_async().await.map_err(io("journal flush"))?;
        self.op_locks
            .flush_async()
            .await
            .map_err(io("op lock flush"))?;
        self.sync_replica().await
    }

    pub fn get_op(&self, id: OpId) -> Result<Option<OpRecord>, StoreError> {
        match self.ops.get(id.to_key()).map_err(io("read journal"))? {
            Some(v) => Ok(Some(decode_op(&v)?)),
            None => Ok(None),
        }
    }

    /// Operations, newest first, optionally of one environment.
    pub fn recent_ops(&self, env: Option<&str>, limit: usize) -> Result<Vec<OpRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.ops.iter().rev() {
            let (_, v) = item.map_err(io("read journal"))?;
            let op = decode_op(&v)?;
            if env.is_none_or(|e| op.env == e) {
                out.push(op);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Operations still marked running (after a crash or shutdown: to resume).
    pub fn running_ops(&self) -> Result<Vec<OpRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.ops.iter() {
            let (_, v) = item.map_err(io("read journal"))?;
            let op = decode_op(&v)?;
            if op.state == OpState::Running {
                out.push(op);
            }
        }
        Ok(out)
    }

    /// Takes `lock` for operation `op`: `Err(holder)` when another operation holds it.
    pub fn acquire_env_op(&self, lock: &LockKey, op: OpId) -> Result<Result<(), OpId>, StoreError> {
        match self
            .op_locks
            .compare_and_swap(
                lock.key().as_bytes(),
                None as Option<&[u8]>,
                Some(&op.to_key()[..]),
            )
            .map_err(io("op lock"))?
        {
            Ok(()) => {
                self.touch(Tree::OpLocks, lock.key().as_bytes());
                Ok(Ok(()))
            }
            Err(cas) => {
                let holder = cas
                    .current
                    .and_then(|v| OpId::from_key(&v))
                    .unwrap_or_default();
                if holder == op {
                    Ok(Ok(()))
                } else {
                    Ok(Err(holder))
                }
            }
        }
    }

    /// Releases `lock` if operation `op` holds it.
    pub fn release_env_op(&self, lock: &LockKey, op: OpId) -> Result<(), StoreError> {
        // A lock another operation holds (or none) is left as it is: only the swap's outcome is
        // dropped, never a storage error.
        let _ = self
            .op_locks
            .compare_and_swap(
                lock.key().as_bytes(),
                Some(&op.to_key()[..]),
                None as Option<&[u8]>,
            )
            .map_err(io("op unlock"))?;
        self.touch(Tree::OpLocks, lock.key().as_bytes());
        Ok(())
    }

    /// Every held operation lock: the key and the operation holding it.
    pub fn held_locks(&self) -> Result<Vec<(LockKey, OpId)>, StoreError> {
        let mut out = Vec::new();
        for item in self.op_locks.iter() {
            let (k, v) = item.map_err(io("read op locks"))?;
            if let Some(op) = OpId::from_key(&v) {
                out.push((LockKey::parse(&String::from_utf8_lossy(&k)), op));
            }
        }
        Ok(out)
    }

    /// The operation holding `lock`, if any.
    pub fn env_op(&self, lock: &LockKey) -> Result<Option<OpId>, StoreError> {
        Ok(self
            .op_locks
            .get(lock.key().as_bytes())
            .map_err(io("read op lock"))?
            .and_then(|v| OpId::from_key(&v)))
    }
}
