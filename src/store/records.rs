//! Typed repositories over the store's record trees: each record type names its tree once ([`Record`]), and the modules that own the records read and write them through [`Records`], never by tree name.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError, Tree, WriteOp, decode, encode, io};

/// A record kept as JSON, under a key, in a tree of its own: the type says which.
pub trait Record: Serialize + DeserializeOwned {
    const TREE: Tree;
}

/// The records of type `T`, in their tree.
pub struct Records<'a, T: Record> {
    store: &'a Store,
    of: PhantomData<fn() -> T>,
}

impl Store {
    /// The repository of `T`'s records.
    pub fn records<T: Record>(&self) -> Records<'_, T> {
        Records {
            store: self,
            of: PhantomData,
        }
    }
}

impl<T: Record> Records<'_, T> {
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        self.store
            .db
            .open_tree(T::TREE.name())
            .map_err(io("open tree"))
    }

    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree()?.get(key.as_bytes()).map_err(io("kv get"))? {
            Some(v) => Ok(Some(decode(T::TREE.name(), &v)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.store.injected(T::TREE, WriteOp::Put)?;
        let v = encode(T::TREE.name(), value)?;
        self.tree()?
            .insert(key.as_bytes(), v)
            .map_err(io("kv put"))?;
        self.store.touch(T::TREE, key.as_bytes());
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.store.injected(T::TREE, WriteOp::Remove)?;
        self.tree()?
            .remove(key.as_bytes())
            .map_err(io("kv remove"))?;
        self.store.touch(T::TREE, key.as_bytes());
        Ok(())
    }

    /// Every record, in key order.
    pub fn all(&self) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree()?.iter() {
            let (_, v) = item.map_err(io("kv scan"))?;
            out.push(decode(T::TREE.name(), &v)?);
        }
        Ok(out)
    }

    /// Removes the records that `keep` (given key and record) rejects; returns how many.
    pub fn retain(&self, keep: impl Fn(&str, &T) -> bool) -> Result<usize, StoreError> {
        let t = self.tree()?;
        let mut gone = Vec::new();
        for item in t.iter() {
            let (k, v) = item.map_err(io("kv scan"))?;
            let value: T = decode(T::TREE.name(), &v)?;
            if !keep(&String::from_utf8_lossy(&k), &value) {
                gone.push(k);
            }
        }
        for k in &gone {
            t.remove(k).map_err(io("kv remove"))?;
            self.store.touch(T::TREE, k);
        }
        Ok(gone.len())
    }

    /// Removes the records whose key `keep` rejects, without reading them (so that a record an
    /// older version wrote in another shape goes too); returns how many.
    pub fn retain_keys(&self, keep: impl Fn(&str) -> bool) -> Result<usize, StoreError> {
        let t = self.tree()?;
        let mut gone = Vec::new();
        for item in t.iter() {
            let (k, _) = item.map_err(io("kv scan"))?;
            if !keep(&String::from_utf8_lossy(&k)) {
                gone.push(k);
            }
        }
        for k in &gone {
            t.remove(k).map_err(io("kv remove"))?;
            self.store.touch(T::TREE, k);
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Note {
        at: i64,
    }

    impl Record for Note {
        const TREE: Tree = Tree::Meta;
    }

    #[test]
    fn records_are_kept_in_their_own_tree_and_a_failed_write_leaves_them_as_they_were() {
        let s = Store::temporary().unwrap();
        let notes = s.records::<Note>();
        notes.put("a", &Note { at: 1 }).unwrap();
        notes.put("b", &Note { at: 2 }).unwrap();
        assert_eq!(notes.get("a").unwrap(), Some(Note { at: 1 }));
        s.fail_next_writes(Tree::Meta, WriteOp::Put, 1);
        assert!(notes.put("a", &Note { at: 9 }).is_err());
        assert_eq!(notes.get("a").unwrap(), Some(Note { at: 1 }));
        assert_eq!(notes.retain(|_, n| n.at > 1).unwrap(), 1);
        assert_eq!(notes.all().unwrap(), vec![Note { at: 2 }]);
        assert_eq!(notes.retain_keys(|k| k != "b").unwrap(), 1);
        assert!(notes.all().unwrap().is_empty());
    }
}
