//! The numbers and keys that name what an operation holds: its number ([`OpId`]) and its locks ([`LockKey`]), typed in code and stored as the plain text and numbers they always were.

use serde::{Deserialize, Serialize};

/// An operation's number, as people see it (`#42`) and as the journal, the locks, the audit log
/// and the catalog store it (a plain number: the type is transparent to serde).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct OpId(u64);

impl OpId {
    pub const fn new(n: u64) -> OpId {
        OpId(n)
    }

    /// The number itself (store keys, metrics).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number as a store key: big-endian, so that keys sort in the order operations started.
    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// A store key read back.
    pub fn from_key(key: &[u8]) -> Option<OpId> {
        key.try_into().ok().map(u64::from_be_bytes).map(OpId)
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for OpId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<OpId, Self::Err> {
        s.parse().map(OpId)
    }
}

/// A lock an operation takes: an environment's app, or the environment's backups (so that a long
/// verify never blocks an urgent rollback). Stored as the text it always was: `prod`,
/// `prod#backups`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum LockKey {
    /// Changes to the environment's app (deploy, rollback, scale, restore).
    Env(String),
    /// The environment's backup volume and catalog (backup, verify, prune, restore).
    Backups(String),
}

/// How a backups lock is told apart from its environment's in the store.
const BACKUPS_SUFFIX: &str = "#backups";

impl LockKey {
    /// The lock on `env`'s app.
    pub fn env(env: &str) -> LockKey {
        LockKey::Env(env.to_string())
    }

    /// The lock on `env`'s backups.
    pub fn backups(env: &str) -> LockKey {
        LockKey::Backups(env.to_string())
    }

    /// The environment it locks.
    pub fn environment(&self) -> &str {
        match self {
            LockKey::Env(e) | LockKey::Backups(e) => e,
        }
    }

    /// The key as stored (`prod`, `prod#backups`).
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// A stored key read back.
    pub fn parse(key: &str) -> LockKey {
        match key.strip_suffix(BACKUPS_SUFFIX) {
            Some(env) => LockKey::backups(env),
            None => LockKey::env(key),
        }
    }
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockKey::Env(e) => f.write_str(e),
            LockKey::Backups(e) => write!(f, "{e}{BACKUPS_SUFFIX}"),
        }
    }
}

impl From<String> for LockKey {
    fn from(key: String) -> LockKey {
        LockKey::parse(&key)
    }
}

impl From<LockKey> for String {
    fn from(key: LockKey) -> String {
        key.to_string()
    }
}
