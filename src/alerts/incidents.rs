//! Incidents and mutes as kept in the store, and the writes that log (and count) a failure instead of dropping it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::detect::{IncidentKey, Severity};
use crate::store::{Record, Store, Tree};

/// An incident as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub key: IncidentKey,
    pub severity: Severity,
    pub detail: String,
    pub first_ms: i64,
    pub last_ms: i64,
    /// How many distinct occurrences (e.g. failed runs of one CronJob).
    pub count: u32,
    #[serde(default)]
    pub occurrences: Vec<String>,
    /// The alert message, once posted.
    #[serde(default)]
    pub message: Option<(String, String)>,
    #[serde(default)]
    pub resolved_ms: Option<i64>,
    /// What the webhook has been told (`fired`, `resolved`), so that nothing is sent twice.
    #[serde(default)]
    pub webhook: Vec<String>,
    /// Posted as part of a quiet-hours digest (its message is the digest).
    #[serde(default)]
    pub digest: bool,
}

impl Record for Incident {
    const TREE: Tree = Tree::Incidents;
}

/// A resolved incident, kept for the record apart from the open ones (which every tick scans).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Resolved(pub(super) Incident);

impl Record for Resolved {
    const TREE: Tree = Tree::IncidentsResolved;
}

/// An environment's alerts silenced until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub env: String,
    pub until_ms: i64,
    pub by: String,
    pub reason: Option<String>,
}

impl Record for Mute {
    const TREE: Tree = Tree::Mutes;
}

/// Whether `env` is muted at `now_ms`.
pub fn is_muted(mute: Option<&Mute>, now_ms: i64) -> bool {
    mute.is_some_and(|m| now_ms < m.until_ms)
}

/// Mutes `env` for `d`.
pub fn mute(
    store: &Store,
    env: &str,
    d: Duration,
    by: &str,
    reason: Option<String>,
    now_ms: i64,
) -> Result<Mute, crate::store::StoreError> {
    let m = Mute {
        env: env.into(),
        until_ms: now_ms + d.as_millis() as i64,
        by: by.into(),
        reason,
    };
    store.records().put(env, &m)?;
    Ok(m)
}

/// Open incidents, oldest first.
pub fn open_incidents(store: &Store) -> Vec<Incident> {
    let mut v: Vec<Incident> = store
        .records::<Incident>()
        .all()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.resolved_ms.is_none())
        .collect();
    v.sort_by_key(|i| i.first_ms);
    v
}

/// Writes a record of the alert store. The alert loop has no caller to hand a failure to, and a
/// lost write repeats an alert or loses what is known about an incident: the failure is logged
/// and counted, never dropped. `false` when it failed.
pub(super) fn put_logged<T: Record>(store: &Store, key: &str, value: &T) -> bool {
    match store.records().put(key, value) {
        Ok(()) => true,
        Err(e) => {
            write_failed(T::TREE, key, &e);
            false
        }
    }
}

/// Removes a record of the alert store; as [`put_logged`].
pub(super) fn remove_logged<T: Record>(store: &Store, key: &str) -> bool {
    match store.records::<T>().remove(key) {
        Ok(()) => true,
        Err(e) => {
            write_failed(T::TREE, key, &e);
            false
        }
    }
}

pub(super) fn write_failed(tree: Tree, key: &str, e: &crate::store::StoreError) {
    let tree = tree.name();
    tracing::error!(error = %e, tree, key, "cannot write the alert store; an alert may repeat or an incident's state be lost");
    crate::telemetry::metrics()
        .store_write_failures
        .get_or_create(&crate::telemetry::labels(&[("tree", tree)]))
        .inc();
}
