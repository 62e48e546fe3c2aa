//! State in Kubernetes: the store's working copy written to ConfigMaps of the bot's namespace with compare-and-swap on resourceVersion, each write stamped with the leader's epoch (fencing).
//!
//! The objects, all labelled `app.kubernetes.io/name: rocketops` and
//! `app.kubernetes.io/component: state`:
//! - `rocketops-state-0`, the head: the operation counter, operation and environment locks, read
//!   marks, messages being handled, mutes, schedules and the message ids taken within the
//!   catch-up horizon (older ones can never be run again, so they are not kept here).
//! - `rocketops-state-1` to `-8`: the backup catalog and the incidents, spread by key.
//! - `rocketops-ops-<k>`: the journal of operations `32k` to `32k + 31`.
//! - `rocketops-audit-<k>`: audit records `256k + 1` to `256k + 256`, one hash chain across them.
//!   A leader reads only the newest chunk (appending needs the chain's head, which the head object
//!   names) and keeps only the end of the log in memory; `rocketops audit` reads them all.
//!
//! A write is a PUT carrying the resourceVersion last read or written, so it fails with 409 when
//! anyone else wrote the object since. A new leader, before it acts, rewrites with its epoch the
//! head, every shard, the journal chunks of running operations and the newest chunks, and creates
//! the next (empty) chunk of each kind: from then on every write of a deposed leader fails. One
//! that fails finds the newer epoch in the object, and the process stops.
//!
//! Writes happen at the store's flush points (each command, each step of an operation), each
//! rewriting only the objects whose records changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use super::HaError;
use crate::store::{OpId, Store, StoreError, Tree};

/// The annotation each state object carries: the epoch of the leader that wrote it.
pub const EPOCH: &str = "rocketops.io/epoch";
/// The label selector of the state objects.
pub const SELECTOR: &str = "app.kubernetes.io/name=rocketops,app.kubernetes.io/component=state";
/// Shards of the catalog and incidents.
const SHARDS: u32 = 8;
/// Operations per journal chunk (a record with its steps is a few kilobytes).
const OPS_PER_CHUNK: u64 = 32;
/// Audit records per chunk (a record is under a kilobyte).
const AUDIT_PER_CHUNK: u64 = 256;
/// Above this an object is refused before the API server refuses it (its limit is 1 MiB).
const MAX_OBJECT_BYTES: usize = 900 * 1024;
/// Head keys that are not records.
const SEEN_KEY: &str = "_seen";
/// The head's record of the newest audit record written: a new leader reads the audit log's
/// newest chunk only (appending needs its head; the whole chain is read by `rocketops audit`).
const AUDIT_SEQ_KEY: &str = "_audit_seq";
/// The label naming which part of the state an object holds.
const PART: &str = "rocketops.io/part";

/// One state object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Obj {
    Head,
    Ops(u64),
    Shard(u32),
    Audit(u64),
}

impl Obj {
    fn part(self) -> &'static str {
        match self {
            Obj::Head => "head",
            Obj::Shard(_) => "shard",
            Obj::Ops(_) => "ops",
            Obj::Audit(_) => "audit",
        }
    }

    fn name(self) -> String {
        match self {
            Obj::Head => "rocketops-state-0".into(),
            Obj::Shard(n) => format!("rocketops-state-{n}"),
            Obj::Ops(k) => format!("rocketops-ops-{k}"),
            Obj::Audit(k) => format!("rocketops-audit-{k}"),
        }
    }

    fn parse(name: &str) -> Option<Obj> {
        let num = |p: &str| name.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = num("rocketops-state-") {
            return Some(if n == 0 {
                Obj::Head
            } else {
                Obj::Shard(u32::try_from(n).ok()?)
            });
        }
        num("rocketops-ops-")
            .map(Obj::Ops)
            .or_else(|| num("rocketops-audit-").map(Obj::Audit))
    }

    /// Pure: where the record `key` of `tree` is kept.
    fn of(tree: Tree, key: &[u8]) -> Obj {
        match tree {
            Tree::Ops => Obj::Ops(OpId::from_key(key).map_or(0, OpId::get) / OPS_PER_CHUNK),
            Tree::Meta
            | Tree::OpLocks
            | Tree::Locks
            | Tree::Marks
            | Tree::Unanswered
            | Tree::Mutes
            | Tree::Schedule => Obj::Head,
            Tree::Backups
            | Tree::BackupFailures
            | Tree::BackupPrunes
            | Tree::Incidents
            | Tree::IncidentsResolved => {
                let d = crate::store::message_digest(&format!(
                    "{}/{}",
                    tree.name(),
                    String::from_utf8_lossy(key)
                ));
                Obj::Shard(1 + (d % u64::from(SHARDS)) as u32)
            }
        }
    }

    fn audit_chunk(seq: u64) -> Obj {
        Obj::Audit(seq.saturating_sub(1) / AUDIT_PER_CHUNK)
    }
}

/// Pure: a record's key in a ConfigMap (`<tree>.<key>`, the key's bytes other than letters,
/// digits and `-` written `_xx`).
fn data_key(tree: Tree, key: &[u8]) -> String {
    let mut out = String::with_capacity(tree.name().len() + 1 + key.len());
    out.push_str(tree.name());
    out.push('.');
    for b in key {
        if b.is_ascii_alphanumeric() || *b == b'-' {
            out.push(*b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Pure: the tree and key a ConfigMap key names; `None` for one that is not a record.
fn parse_data_key(k: &str) -> Option<(Tree, Vec<u8>)> {
    let (tree, rest) = k.split_once('.')?;
    let tree = Tree::from_name(tree)?;
    let mut key = Vec::with_capacity(rest.len());
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = rest.get(i + 1..i + 3)?;
            key.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            key.push(bytes[i]);
            i += 1;
        }
    }
    Some((tree, key))
}

/// Pure: the head's copy of the taken message ids: 16 bytes per id (digest, taken at ms).
fn encode_seen(records: &[(u64, i64)], since_ms: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, at) in records.iter().filter(|(_, at)| *at >= since_ms) {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
    }
    out
}

fn decode_seen(bytes: &[u8]) -> Vec<(u64, i64)> {
    bytes
        .chunks_exact(16)
        .map(|r| {
            let h = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
            let at = i64::from_le_bytes(r[8..].try_into().unwrap_or([0; 8]));
            (h, at)
        })
        .collect()
}

/// Pure: a new term's epoch: the Lease's transitions, unless the state was written with that
/// epoch or a later one already.
fn next_epoch(lease: u64, state: Option<u64>) -> u64 {
    match state {
        Some(e) if e >= lease => e + 1,
        _ => lease,
    }
}

/// An object as last read or written.
#[derive(Debug, Clone, Default)]
struct Copy {
    data: BTreeMap<String, Vec<u8>>,
    /// `None`: not created yet.
    rv: Option<String>,
}

impl Copy {
    fn from_configmap(cm: &ConfigMap) -> Copy {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.iter().flatten() {
            data.insert(k.clone(), v.0.clone());
        }
        Copy {
            data,
            rv: cm.metadata.resource_version.clone(),
        }
    }

    fn size(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

fn epoch_of(cm: &ConfigMap) -> u64 {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EPOCH))
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// What a deposed leader does: stop at once (the process exits; see `ha::run`).
pub type OnDeposed = Arc<dyn Fn(&HaError) + Send + Sync>;

/// The state objects of one leader's term, and the writer of the store's changes to them.
pub struct KubeState {
    api: Api<ConfigMap>,
    epoch: u64,
    call_timeout: Duration,
    /// Message ids taken longer ago than this are not kept in the head.
    horizon: Duration,
    /// The objects as last written (the lock also makes pushes one at a time).
    copies: tokio::sync::Mutex<Objects>,
    on_deposed: OnDeposed,
    writes: AtomicU64,
}

#[derive(Default)]
struct Objects {
    by: BTreeMap<Obj, Copy>,
    /// Changed and not yet written (a push that failed part way leaves the rest here).
    pending: BTreeSet<Obj>,
}

impl std::fmt::Debug for KubeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeState")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// How the state objects are reached.
#[derive(Clone)]
pub struct StateOptions {
    pub namespace: String,
    /// The leader's epoch (the Lease's transitions when it acquired it).
    pub epoch: u64,
    /// Bound of each API call.
    pub call_timeout: Duration,
    /// How long taken message ids are kept (the catch-up horizon).
    pub horizon: Duration,
    pub on_deposed: OnDeposed,
}

impl KubeState {
    /// Takes the state over for a new term: fences the head with `epoch`, reads every object
    /// into a new in-memory store, fences the rest, and attaches itself to the store as its
    /// replica. Nothing may act on the cluster or in chat before this returns.
    pub async fn take_over(
        client: kube::Client,
        options: StateOptions,
    ) -> Result<(Store, Arc<KubeState>), HaError> {
        let api: Api<ConfigMap> = Api::namespaced(client, &options.namespace);
        // The epoch only grows, even if the Lease was deleted and made again (its transitions
        // then start from 0): a term's epoch is above every epoch the state was written with.
        let head_epoch = match tokio::time::timeout(
            options.call_timeout,
            api.get_opt(&Obj::Head.name()),
        )
        .await
        {
            Ok(Ok(head)) => head.as_ref().map(epoch_of),
            Ok(Err(source)) => {
                return Err(HaError::Api {
                    action: "read rocketops-state-0".into(),
                    source,
                });
            }
            Err(_) => {
                return Err(HaError::Timeout {
                    action: "read rocketops-state-0".into(),
                    after: options.call_timeout,
                });
            }
        };
        let epoch = next_epoch(options.epoch, head_epoch);
        if epoch != options.epoch {
            tracing::warn!(
                lease = options.epoch,
                state = ?head_epoch,
                epoch,
                "the Lease's transitions are behind the state's epoch (was the Lease deleted?): this term takes the next epoch after the state's"
            );
        }
        let state = Arc::new(KubeState {
            api,
            epoch,
            call_timeout: options.call_timeout,
            horizon: options.horizon,
            copies: tokio::sync::Mutex::new(Objects::default()),
            on_deposed: options.on_deposed,
            writes: AtomicU64::new(0),
        });
        let mut tries = 0;
        let store = loop {
            tries += 1;
            match state.read_and_fence().await {
                Err(HaError::Raced { object }) if tries < 5 => {
                    tracing::warn!(%object, "an older leader wrote while this one took over; reading the state again");
                }
                Err(e) => return Err(e),
                Ok(store) => break store,
            }
        };
        store.attach_replica(state.clone());
        tracing::info!(
            epoch = state.epoch,
            writes = state.writes(),
            "took the state over from Kubernetes"
        );
        Ok((store, state))
    }

    /// Fences the head with this term's epoch, reads every object into a new store, and fences
    /// the rest; [`HaError::Raced`] when an older leader wrote in between.
    async fn read_and_fence(&self) -> Result<Store, HaError> {
        let state = self;
        let store = Store::temporary().map_err(|e| HaError::Corrupt {
            object: "(working copy)".into(),
            detail: e.to_string(),
        })?;
        {
            let mut objs = state.copies.lock().await;
            *objs = Objects::default();
            // The head first: once it carries this epoch, a deposed leader can write nothing new.
            let head = state.read(Obj::Head).await?;
            objs.by.insert(Obj::Head, head.unwrap_or_default());
            state.write(&mut objs, Obj::Head, true).await?;
            // Everything but the audit log, then the audit log's newest chunks only.
            let audit_seq = objs.by[&Obj::Head]
                .data
                .get(AUDIT_SEQ_KEY)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            let selector = match audit_seq {
                Some(_) => format!("{SELECTOR},{PART}!=audit"),
                None => SELECTOR.to_string(),
            };
            let list = state
                .call(
                    "list state",
                    state.api.list(&ListParams::default().labels(&selector)),
                )
                .await?;
            for cm in &list.items {
                let Some(obj) = cm.metadata.name.as_deref().and_then(Obj::parse) else {
                    continue;
                };
                if obj != Obj::Head {
                    objs.by.insert(obj, Copy::from_configmap(cm));
                }
            }
            // From the chunk after the newest record's down to the first that holds a record
            // (a write of the newest chunk may have failed after the head's).
            if let Some(Obj::Audit(newest)) = audit_seq.map(Obj::audit_chunk) {
                let mut k = newest + 1;
                loop {
                    if let Some(copy) = state.read(Obj::Audit(k)).await? {
                        let holds_records = !copy.data.is_empty();
                        objs.by.insert(Obj::Audit(k), copy);
                        if holds_records && k <= newest {
                            break;
                        }
                    }
                    if k == 0 {
                        break;
                    }
                    k -= 1;
                }
            }
            state.load_into(&objs, &store)?;
            for obj in state.to_fence(&store)? {
                objs.by.entry(obj).or_default();
                state.write(&mut objs, obj, true).await?;
            }
        }
        Ok(store)
    }

    /// The state as the objects hold it now, read without writing anything (no fencing: for
    /// reading the audit log or the journal beside a running leader, and for `bench --ha`).
    pub async fn snapshot(client: kube::Client, namespace: &str) -> Result<Store, HaError> {
        let reader = KubeState {
            api: Api::namespaced(client, namespace),
            epoch: u64::MAX,
            call_timeout: Duration::from_secs(30),
            horizon: Duration::from_secs(600),
            copies: tokio::sync::Mutex::new(Objects::default()),
            on_deposed: Arc::new(|_| {}),
            writes: AtomicU64::new(0),
        };
        let list = reader
            .call(
                "list state",
                reader.api.list(&ListParams::default().labels(SELECTOR)),
            )
            .await?;
        let mut objs = Objects::default();
        for cm in &list.items {
            if let Some(obj) = cm.metadata.name.as_deref().and_then(Obj::parse) {
                objs.by.insert(obj, Copy::from_configmap(cm));
            }
        }
        let store = Store::temporary().map_err(|e| HaError::Corrupt {
            object: "(snapshot)".into(),
            detail: e.to_string(),
        })?;
        reader.load_into(&objs, &store)?;
        Ok(store)
    }

    /// Whether objects changed by an earlier push are still to be written (it failed part way).
    pub async fn has_pending(&self) -> bool {
        !self.copies.lock().await.pending.is_empty()
    }

    /// API writes made so far (for `bench --ha` and the docs' figures).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Fills `store` with the records of every object read.
    fn load_into(&self, objs: &Objects, store: &Store) -> Result<(), HaError> {
        let corrupt = |obj: Obj, e: StoreError| HaError::Corrupt {
            object: obj.name(),
            detail: e.to_string(),
        };
        let mut audit: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut top_op = 0;
        for (obj, copy) in &objs.by {
            for (k, v) in &copy.data {
                if let Obj::Audit(_) = obj {
                    if let Ok(seq) = k.parse::<u64>() {
                        audit.push((seq, v.clone()));
                    }
                    continue;
                }
                if *obj == Obj::Head && k == AUDIT_SEQ_KEY {
                    continue;
                }
                if *obj == Obj::Head && k == SEEN_KEY {
                    store
                        .load_seen(&decode_seen(v))
                        .map_err(|e| corrupt(*obj, e))?;
                    continue;
                }
                let Some((tree, key)) = parse_data_key(k) else {
                    tracing::warn!(object = %obj.name(), key = %k, "a key that is no record; left alone");
                    continue;
                };
                if tree == Tree::Ops {
                    top_op = top_op.max(OpId::from_key(&key).map_or(0, OpId::get));
                }
                store
                    .raw_load(tree, &key, v)
                    .map_err(|e| corrupt(*obj, e))?;
            }
        }
        audit.sort_by_key(|(seq, _)| *seq);
        let lines: Vec<Vec<u8>> = audit.into_iter().map(|(_, l)| l).collect();
        store
            .load_audit(&lines)
            .map_err(|e| corrupt(Obj::Audit(0), e))?;
        // The counter is never behind the journal.
        let counter = store
            .raw_get(Tree::Meta, b"next_op")
            .map_err(|e| corrupt(Obj::Head, e))?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        if counter < top_op {
            store
                .raw_load(Tree::Meta, b"next_op", &top_op.to_be_bytes())
                .map_err(|e| corrupt(Obj::Head, e))?;
        }
        Ok(())
    }

    /// Pure on what was read: the objects a new term rewrites (or creates) with its epoch so
    /// that no deposed leader's write is accepted after it.
    fn to_fence(&self, store: &Store) -> Result<BTreeSet<Obj>, HaError> {
        let mut out: BTreeSet<Obj> = (1..=SHARDS).map(Obj::Shard).collect();
        let counter = store
            .raw_get(Tree::Meta, b"next_op")
            .ok()
            .flatten()
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        // Every chunk a deposed leader may still write: those with running operations, the one
        // the newest operation number falls in, and the next (created empty if it is not there,
        // so that a deposed leader's create fails). A deposed leader numbers an operation only
        // in the head, which it can no longer write.
        let top_ops = counter / OPS_PER_CHUNK;
        for op in store.running_ops().map_err(|e| HaError::Corrupt {
            object: "rocketops-ops".into(),
            detail: e.to_string(),
        })? {
            out.insert(Obj::Ops(op.id.get() / OPS_PER_CHUNK));
        }
        out.insert(Obj::Ops(top_ops));
        out.insert(Obj::Ops(top_ops + 1));
        // Likewise the audit chunk of the newest record and the next.
        let top_audit = store.audit_head().ok().flatten().map_or(0, |(seq, _)| seq);
        let top_chunk = top_audit.saturating_sub(1) / AUDIT_PER_CHUNK;
        out.insert(Obj::Audit(top_chunk));
        out.insert(Obj::Audit(top_chunk + 1));
        Ok(out)
    }

    /// Bounds an API call by the call timeout.
    async fn call<T>(
        &self,
        action: &str,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, HaError> {
        match tokio::time::timeout(self.call_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(HaError::Api {
                action: action.to_string(),
                source,
            }),
            Err(_) => Err(HaError::Timeout {
                action: action.to_string(),
                after: self.call_timeout,
            }),
        }
    }

    async fn read(&self, obj: Obj) -> Result<Option<Copy>, HaError> {
        let name = obj.name();
        let cm = self
            .call(&format!("read {name}"), self.api.get_opt(&name))
            .await?;
        if let Some(cm) = &cm {
            let theirs = epoch_of(cm);
            if theirs > self.epoch {
                return Err(self.deposed(name, theirs));
            }
        }
        Ok(cm.as_ref().map(Copy::from_configmap))
    }

    fn deposed(&self, object: String, theirs: u64) -> HaError {
        let e = HaError::Deposed {
            object,
            ours: self.epoch,
            theirs,
        };
        (self.on_deposed)(&e);
        e
    }

    fn configmap(&self, obj: Obj, copy: &Copy) -> ConfigMap {
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        for (k, v) in &copy.data {
            match std::str::from_utf8(v) {
                Ok(s) => {
                    data.insert(k.clone(), s.to_string());
                }
                Err(_) => {
                    binary.insert(k.clone(), ByteString(v.clone()));
                }
            }
        }
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(obj.name()),
                resource_version: copy.rv.clone(),
                labels: Some(
                    [
                        ("app.kubernetes.io/name", "rocketops"),
                        ("app.kubernetes.io/component", "state"),
                        (PART, obj.part()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                annotations: Some(
                    [(EPOCH.to_string(), self.epoch.to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            ..ConfigMap::default()
        }
    }

    /// Writes one object from its copy: a create when it does not exist, else a replace on the
    /// resourceVersion last seen. A conflict with a newer epoch means this leader is deposed.
    async fn write(&self, objs: &mut Objects, obj: Obj, fencing: bool) -> Result<(), HaError> {
        let name = obj.name();
        for _ in 0..3 {
            let copy = objs.by.entry(obj).or_default();
            let size = copy.size();
            if size > MAX_OBJECT_BYTES {
                return Err(HaError::Corrupt {
                    object: name,
                    detail: format!(
                        "{size} bytes would exceed what an object may hold; prune the catalog or raise the shard count"
                    ),
                });
            }
            let cm = self.configmap(obj, copy);
            let pp = PostParams::default();
            let result = match copy.rv {
                None => {
                    self.call(&format!("create {name}"), self.api.create(&pp, &cm))
                        .await
                }
                Some(_) => {
                    self.call(&format!("write {name}"), self.api.replace(&name, &pp, &cm))
                        .await
                }
            };
            self.writes.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(written) => {
                    copy.rv = written.metadata.resource_version;
                    return Ok(());
                }
                Err(HaError::Api {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 409 => {
                    // Someone wrote it since: a newer leader (stop), or this term's own write
                    // whose answer was lost (take its version and write again).
                    match self
                        .call(&format!("read {name}"), self.api.get_opt(&name))
                        .await?
                    {
                        Some(current) => {
                            let theirs = epoch_of(&current);
                            if theirs > self.epoch {
                                return Err(self.deposed(name, theirs));
                            }
                            if theirs < self.epoch && fencing {
                                // An older leader wrote it after this term read it: what was
                                // read is stale, so the take-over reads everything again.
                                return Err(HaError::Raced { object: name });
                            }
                            if theirs < self.epoch {
                                tracing::warn!(object = %name, theirs, ours = self.epoch, "an object written by an older leader after this term fenced the state; overwriting it");
                            }
                            if copy.rv.is_none() {
                                // It exists though it was not read: keep its records, with
                                // this term's on top, rather than write over them.
                                for (k, v) in Copy::from_configmap(&current).data {
                                    copy.data.entry(k).or_insert(v);
                                }
                            }
                            copy.rv = current.metadata.resource_version;
                        }
                        None => copy.rv = None,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(HaError::Corrupt {
            object: name,
            detail: "kept conflicting with writes of this same term".into(),
        })
    }

    /// Writes what changed in `store` since the last push.
    async fn push_changes(&self, store: &Store) -> Result<(), StoreError> {
        let mut objs = self.copies.lock().await;
        let changes = store.take_changes();
        let err = |e: StoreError| e;
        for (tree, key) in &changes.keys {
            let obj = Obj::of(*tree, key);
            let value = store.raw_get(*tree, key).map_err(err)?;
            let copy = objs.by.entry(obj).or_default();
            let k = data_key(*tree, key);
            match value {
                Some(v) => copy.data.insert(k, v),
                None => copy.data.remove(&k),
            };
            objs.pending.insert(obj);
        }
        if changes.seen {
            let since = crate::clock::Clock::System.now_ms() - self.horizon.as_millis() as i64;
            let seen = encode_seen(&store.seen_records()?, since);
            objs.by
                .entry(Obj::Head)
                .or_default()
                .data
                .insert(SEEN_KEY.into(), seen);
            objs.pending.insert(Obj::Head);
        }
        if changes.audit_rewritten {
            for obj in objs.by.keys().copied().collect::<Vec<_>>() {
                if let Obj::Audit(_) = obj {
                    objs.by.entry(obj).or_default().data.clear();
                    objs.pending.insert(obj);
                }
            }
            for (seq, line) in store.audit_lines()? {
                let obj = Obj::audit_chunk(seq);
                objs.by
                    .entry(obj)
                    .or_default()
                    .data
                    .insert(format!("{seq:010}"), line);
                objs.pending.insert(obj);
            }
        } else {
            let newest = changes.audit.iter().map(|(seq, _)| *seq).max();
            for (seq, line) in changes.audit {
                let obj = Obj::audit_chunk(seq);
                objs.by
                    .entry(obj)
                    .or_default()
                    .data
                    .insert(format!("{seq:010}"), line);
                objs.pending.insert(obj);
            }
            if let Some(seq) = newest {
                objs.by
                    .entry(Obj::Head)
                    .or_default()
                    .data
                    .insert(AUDIT_SEQ_KEY.into(), seq.to_string().into_bytes());
                objs.pending.insert(Obj::Head);
                // Written out, the older records need not stay in memory.
                store.forget_audit_before(seq.saturating_sub(AUDIT_PER_CHUNK), AUDIT_PER_CHUNK)?;
            }
        }
        // An object to create is written after the head, so that a deposed leader, whose head
        // write fails, never creates one.
        let creates = objs
            .pending
            .iter()
            .any(|o| objs.by.get(o).is_none_or(|c| c.rv.is_none()));
        if creates {
            objs.pending.insert(Obj::Head);
        }
        let order: Vec<Obj> = objs.pending.iter().copied().collect();
        for obj in order {
            match self.write(&mut objs, obj, false).await {
                Ok(()) => {
                    objs.pending.remove(&obj);
                }
                Err(e) => {
                    return Err(StoreError::Replica {
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl crate::store::Replica for KubeState {
    fn push<'a>(&'a self, store: &'a Store) -> crate::store::PushFuture<'a> {
        Box::pin(self.push_changes(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_key_survives_the_trip_through_a_configmap_key() {
        for (tree, key) in [
            (Tree::Marks, b"GENERAL".to_vec()),
            (Tree::OpLocks, b"env:prod".to_vec()),
            (Tree::Backups, b"prod/backup-29381_x.y".to_vec()),
            (Tree::Ops, 7u64.to_be_bytes().to_vec()),
            (Tree::Unanswered, "ü \n/_".as_bytes().to_vec()),
        ] {
            let k = data_key(tree, &key);
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
                "{k}"
            );
            assert_eq!(parse_data_key(&k), Some((tree, key)));
        }
        assert_eq!(parse_data_key("_seen"), None);
        assert_eq!(parse_data_key("nosuchtree.x"), None);
        assert_eq!(parse_data_key("marks.bad_zz"), None);
    }

    #[test]
    fn records_go_to_the_head_a_shard_or_their_chunk() {
        assert_eq!(Obj::of(Tree::Marks, b"r"), Obj::Head);
        assert_eq!(Obj::of(Tree::Ops, &OpId::new(31).to_key()), Obj::Ops(0));
        assert_eq!(Obj::of(Tree::Ops, &OpId::new(32).to_key()), Obj::Ops(1));
        assert!(matches!(
            Obj::of(Tree::Backups, b"prod/x"),
            Obj::Shard(1..=SHARDS)
        ));
        assert_eq!(Obj::audit_chunk(1), Obj::Audit(0));
        assert_eq!(Obj::audit_chunk(256), Obj::Audit(0));
        assert_eq!(Obj::audit_chunk(257), Obj::Audit(1));
        for obj in [Obj::Head, Obj::Shard(3), Obj::Ops(12), Obj::Audit(4)] {
            assert_eq!(Obj::parse(&obj.name()), Some(obj));
        }
        assert_eq!(Obj::parse("rocketops-leader"), None);
    }

    #[cfg(feature = "sandbox")]
    mod against_the_simulator {
        use super::super::*;
        use crate::sandbox::kube::{KubeSim, KubeSimConfig};
        use crate::store::{AuditDecision, AuditEntry, EnvLock};

        /// A Kubernetes simulator with the bot's namespace.
        async fn cluster() -> KubeSim {
            let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
            sim.create(
                "namespaces",
                "",
                serde_json::json!({"metadata": {"name": "rocketops"}}),
            )
            .unwrap();
            sim
        }

        async fn client(sim: &KubeSim, agent: &str) -> kube::Client {
            crate::tls::install_crypto_provider();
            let mut cfg = kube::Config::new(sim.url().parse().unwrap());
            cfg.default_retry = false;
            cfg.headers.push((
                axum::http::header::USER_AGENT,
                axum::http::HeaderValue::from_str(agent).unwrap(),
            ));
            kube::Client::try_from(cfg).unwrap()
        }

        fn options(epoch: u64, deposed: Arc<std::sync::atomic::AtomicBool>) -> StateOptions {
            StateOptions {
                namespace: "rocketops".into(),
                epoch,
                call_timeout: Duration::from_secs(5),
                horizon: Duration::from_secs(600),
                on_deposed: Arc::new(move |_| deposed.store(true, Ordering::SeqCst)),
            }
        }

        fn entry(text: &str) -> AuditEntry {
            AuditEntry {
                at_ms: 1,
                user: "alice".into(),
                room: "ops".into(),
                text: text.into(),
                decision: AuditDecision::Allowed,
                ..AuditEntry::default()
            }
        }

        #[tokio::test]
        async fn what_one_leader_wrote_the_next_one_reads_and_the_deposed_one_cannot_write_again() {
            let sim = cluster().await;
            // What the Role in manifests/ha does not grant, the backend does without.
            for verb in ["delete", "watch", "patch", "deletecollection"] {
                sim.revoke_permission("configmaps", verb);
            }
            let a_deposed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (a, a_state) =
                KubeState::take_over(client(&sim, "bot-a").await, options(1, a_deposed.clone()))
                    .await
                    .unwrap();
            a.set_audit_key(Some(b"k"));
            assert!(
                a.mark_seen("m1", crate::clock::Clock::System.now_ms())
                    .unwrap()
            );
            let op = a.next_op_id().unwrap();
            a.lock_env(
                "prod",
                &EnvLock {
                    by: "alice".into(),
                    reason: None,
                    at_ms: 1,
                },
            )
            .unwrap()
            .unwrap();
            a.advance_mark("room", 42).unwrap();
            for i in 0..300 {
                a.audit(&entry(&format!("/ping {i}"))).unwrap();
            }
            a.flush().await.unwrap();
            assert!(a_state.writes() > 0);

            let b_deposed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (b, _) =
                KubeState::take_over(client(&sim, "bot-b").await, options(2, b_deposed.clone()))
                    .await
                    .unwrap();
            b.set_audit_key(Some(b"k"));
            assert!(b.is_seen("m1").unwrap());
            assert_eq!(b.next_op_id().unwrap().get(), op.get() + 1);
            assert_eq!(b.env_lock("prod").unwrap().unwrap().by, "alice");
            assert_eq!(b.read_mark("room").unwrap(), Some(42));
            // The new leader holds the newest records only; the chain is whole in the objects.
            assert_eq!(b.audit_head().unwrap().map(|(seq, _)| seq), Some(300));
            assert!(b.all_audit().unwrap().len() < 300);
            let whole = KubeState::snapshot(client(&sim, "cli").await, "rocketops")
                .await
                .unwrap();
            whole.set_audit_key(Some(b"k"));
            assert_eq!(whole.all_audit().unwrap().len(), 300);
            assert!(
                whole.verify_audit(Some(b"k"), None).unwrap().is_ok(),
                "one chain across chunks"
            );

            // The deposed leader's next write fails, and it is told to stop.
            a.advance_mark("room", 99).unwrap();
            assert!(a.flush().await.is_err());
            assert!(a_deposed.load(Ordering::SeqCst));
            // Nor can it start a new chunk the new leader does not know of.
            for i in 0..300 {
                a.audit(&entry(&format!("/late {i}"))).unwrap();
            }
            assert!(a.flush().await.is_err());
            assert!(!b_deposed.load(Ordering::SeqCst));
            b.audit(&entry("/ping after")).unwrap();
            b.flush().await.unwrap();
            let (c, _) = KubeState::take_over(
                client(&sim, "bot-c").await,
                options(3, Arc::new(std::sync::atomic::AtomicBool::new(false))),
            )
            .await
            .unwrap();
            assert_eq!(c.read_mark("room").unwrap(), Some(42));
            let audit = KubeState::snapshot(client(&sim, "cli").await, "rocketops")
                .await
                .unwrap()
                .all_audit()
                .unwrap();
            assert_eq!(audit.len(), 301);
            assert_eq!(c.audit_head().unwrap().map(|(seq, _)| seq), Some(301));
            assert!(audit.iter().all(|e| !e.text.starts_with("/late")));
            let accepted_late = sim
                .write_log()
                .into_iter()
                .filter(|r| r.agent.contains("bot-a") && (200..300).contains(&r.status))
                .filter(|r| r.epoch.as_deref() == Some("1"))
                .filter(|r| {
                    r.seq
                        > sim
                            .write_log()
                            .iter()
                            .find(|x| x.agent.contains("bot-b"))
                            .map_or(u64::MAX, |x| x.seq)
                })
                .count();
            assert_eq!(accepted_late, 0);
        }

        #[tokio::test]
        async fn a_long_audit_log_stays_whole_in_the_objects_while_the_leader_keeps_only_its_end() {
            let sim = cluster().await;
            let flag = || Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (a, _) = KubeState::take_over(client(&sim, "bot-a").await, options(1, flag()))
                .await
                .unwrap();
            a.set_audit_key(Some(b"k"));
            for i in 0..1000 {
                a.audit(&entry(&format!("/ping {i}"))).unwrap();
                if i % 10 == 9 {
                    a.flush().await.unwrap();
                }
            }
            let kept = a.all_audit().unwrap().len();
            assert!(
                kept <= 2 * AUDIT_PER_CHUNK as usize + 10,
                "{kept} in memory"
            );
            let (b, _) = KubeState::take_over(client(&sim, "bot-b").await, options(2, flag()))
                .await
                .unwrap();
            b.set_audit_key(Some(b"k"));
            assert!(b.all_audit().unwrap().len() <= AUDIT_PER_CHUNK as usize);
            b.audit(&entry("/ping after")).unwrap();
            b.flush().await.unwrap();
            let whole = KubeState::snapshot(client(&sim, "cli").await, "rocketops")
                .await
                .unwrap();
            assert_eq!(whole.all_audit().unwrap().len(), 1001);
            assert!(whole.verify_audit(Some(b"k"), None).unwrap().is_ok());
        }

        #[tokio::test]
        async fn a_take_over_that_an_older_leader_writes_into_reads_the_state_again() {
            let sim = cluster().await;
            let flag = || Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (a, _) = KubeState::take_over(client(&sim, "bot-a").await, options(1, flag()))
                .await
                .unwrap();
            a.advance_mark("room", 1).unwrap();
            a.flush().await.unwrap();
            // The new leader has read the head; the old one writes before the new one fences it.
            let b = KubeState {
                api: Api::namespaced(client(&sim, "bot-b").await, "rocketops"),
                epoch: 2,
                call_timeout: Duration::from_secs(5),
                horizon: Duration::from_secs(600),
                copies: tokio::sync::Mutex::new(Objects::default()),
                on_deposed: Arc::new(|_| {}),
                writes: AtomicU64::new(0),
            };
            let mut objs = Objects::default();
            objs.by
                .insert(Obj::Head, b.read(Obj::Head).await.unwrap().unwrap());
            a.advance_mark("room", 2).unwrap();
            a.flush().await.unwrap();
            assert!(matches!(
                b.write(&mut objs, Obj::Head, true).await,
                Err(HaError::Raced { .. })
            ));
            // Taking over again reads what the old leader wrote last.
            let store = b.read_and_fence().await.unwrap();
            assert_eq!(store.read_mark("room").unwrap(), Some(2));
        }
    }

    #[test]
    fn a_term_s_epoch_is_the_lease_s_transitions_unless_the_state_is_ahead_of_them() {
        assert_eq!(next_epoch(0, None), 0);
        assert_eq!(next_epoch(5, Some(4)), 5);
        assert_eq!(next_epoch(0, Some(4)), 5);
        assert_eq!(next_epoch(4, Some(4)), 5);
    }

    #[test]
    fn taken_message_ids_older_than_the_horizon_are_not_kept_in_the_head() {
        let bytes = encode_seen(&[(1, 100), (2, 200), (3, 300)], 200);
        assert_eq!(decode_seen(&bytes), vec![(2, 200), (3, 300)]);
    }
}
