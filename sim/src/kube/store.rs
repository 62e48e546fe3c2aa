//! The Kubernetes simulator's object store: resourceVersions, generations, optimistic concurrency, selectors and the watch history.
//!
//! Long by design: the object store, its watch history and its selectors are one structure under
//! one lock, so that every write and the events it sends stay in order.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::ResourceType;

/// A change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub plural: &'static str,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// An API failure, rendered as a `Status` body with the exact `reason`.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    NotFound {
        what: String,
        name: String,
        kind: String,
        group: String,
    },
    AlreadyExists {
        what: String,
        name: String,
        kind: String,
        group: String,
    },
    Conflict {
        what: String,
        name: String,
        kind: String,
        group: String,
        message: Option<String>,
    },
    Invalid {
        kind: String,
        name: String,
        field: String,
        message: String,
    },
    Forbidden {
        message: String,
    },
    BadRequest {
        message: String,
    },
    MethodNotAllowed {
        message: String,
    },
    UnsupportedMediaType {
        message: String,
    },
    Internal {
        message: String,
    },
    TooManyRequests {
        message: String,
    },
    ServiceUnavailable {
        message: String,
    },
}

impl ApiError {
    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::NotFound {
            what: rt.qualified(),
            name: name.into(),
            kind: rt.plural.into(),
            group: rt.group.into(),
        }
    }
    pub fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::Conflict {
            what: rt.qualified(),
            name: name.into(),
            kind: rt.plural.into(),
            group: rt.group.into(),
            message: None,
        }
    }
    pub fn invalid(rt: &ResourceType, name: &str, field: &str, message: &str) -> ApiError {
        ApiError::Invalid {
            kind: rt.qualified_kind(),
            name: name.into(),
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::Forbidden { .. } => 403,
            ApiError::BadRequest { .. } => 400,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Internal { .. } => 500,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::ServiceUnavailable { .. } => 503,
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let (reason, message, details) = match self {
            ApiError::NotFound { what, name, kind, group } => (
                "NotFound",
                format!("{what} \"{name}\" not found"),
                json!({"name": name, "group": group, "kind": kind}),
            ),
            ApiError::AlreadyExists { what, name, kind, group } => (
                "AlreadyExists",
                format!("{what} \"{name}\" already exists"),
                json!({"name": name, "group": group, "kind": kind}),
            ),
            ApiError::Conflict { what, name, kind, group, message } => (
                "Conflict",
                message.clone().unwrap_or_else(|| format!(
                    "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                )),
                json!({"name": name, "group": group, "kind": kind}),
            ),
            ApiError::Invalid { kind, name, field, message } => (
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {field}: {message}"),
                json!({"name": name, "kind": kind.split('.').next().unwrap_or_default(), "causes": [{"reason": "FieldValueInvalid", "field": field, "message": message}]}),
            ),
            ApiError::Forbidden { message } => ("Forbidden", message.clone(), Value::Null),
            ApiError::BadRequest { message } => ("BadRequest", message.clone(), Value::Null),
            ApiError::MethodNotAllowed { message } => ("MethodNotAllowed", message.clone(), Value::Null),
            ApiError::UnsupportedMediaType { message } => ("UnsupportedMediaType", message.clone(), Value::Null),
            ApiError::Internal { message } => ("InternalError", message.clone(), Value::Null),
            ApiError::TooManyRequests { message } => ("TooManyRequests", message.clone(), Value::Null),
            ApiError::ServiceUnavailable { message } => ("ServiceUnavailable", message.clone(), Value::Null),
        };
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": self.code()
        });
        if !details.is_null() {
            s["details"] = details;
        }
        s
    }
}

/// How a write treats the object's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The main endpoint: status is kept as it was.
    Main,
    /// The `/status` subresource: only status changes.
    Status,
    /// Controllers: write everything.
    Controller,
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selectors {
    /// Parses `labelSelector` and `fieldSelector` values.
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Selectors, ApiError> {
        let mut s = Selectors::default();
        if let Some(l) = label.filter(|l| !l.trim().is_empty()) {
            for part in split_top(l) {
                let p = part.trim();
                let req = if let Some((k, v)) = p.split_once("!=") {
                    Requirement::NotEq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = p.split_once("==") {
                    Requirement::Eq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = p.split_once('=') {
                    Requirement::Eq(k.trim().into(), v.trim().into())
                } else if let Some((k, rest)) = p.split_once(" notin ") {
                    Requirement::NotIn(k.trim().into(), set_values(rest)?)
                } else if let Some((k, rest)) = p.split_once(" in ") {
                    Requirement::In(k.trim().into(), set_values(rest)?)
                } else if let Some(k) = p.strip_prefix('!') {
                    Requirement::NotExists(k.trim().into())
                } else if !p.is_empty() && !p.contains(' ') {
                    Requirement::Exists(p.into())
                } else {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse requirement: {p}"
                    )));
                };
                s.labels.push(req);
            }
        }
        if let Some(f) = field.filter(|f| !f.trim().is_empty()) {
            for part in f.split(',') {
                let (k, neg, v) = if let Some((k, v)) = part.split_once("!=") {
                    (k, true, v)
                } else if let Some((k, v)) = part.split_once("==") {
                    (k, false, v)
                } else if let Some((k, v)) = part.split_once('=') {
                    (k, false, v)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: {part}"
                    )));
                };
                s.fields.push((k.trim().into(), neg, v.trim().into()));
            }
        }
        Ok(s)
    }

    /// A selector matching `matchLabels` exactly (for controllers).
    pub fn from_match_labels(labels: &Value) -> Selectors {
        let mut s = Selectors::default();
        if let Some(m) = labels.as_object() {
            for (k, v) in m {
                s.labels.push(Requirement::Eq(
                    k.clone(),
                    v.as_str().unwrap_or_default().into(),
                ));
            }
        }
        s
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, neg, want)| {
                let mut v = obj;
                for seg in path.split('.') {
                    v = &v[seg];
                }
                let got = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (got == *want) != *neg
            })
    }
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn set_values(s: &str) -> Result<Vec<String>, ApiError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse set: {s}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

type Key = (&'static str, String, String);

/// Where an object is kept: cluster-scoped objects have no namespace, whatever the request said.
/// An object's namespace and name (empty when absent), as the store orders objects.
pub fn ns_name(o: &Value) -> (String, String) {
    let field = |f: &str| o["metadata"][f].as_str().unwrap_or_default().to_string();
    (field("namespace"), field("name"))
}

fn key(rt: &'static ResourceType, ns: &str, name: &str) -> Key {
    let ns = if rt.namespaced {
        ns.to_string()
    } else {
        String::new()
    };
    (rt.plural, ns, name.to_string())
}

/// All objects and their recent history.
pub struct ObjectStore {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    history_cap: usize,
    /// Changes with rv <= this are no longer in the history.
    compacted: u64,
    /// The version of each namespace's last change (controllers skip what has settled).
    namespace_rv: HashMap<String, u64>,
    pub changes: broadcast::Sender<Change>,
}

/// The field manager of the cluster's controllers (the Job, CronJob, Deployment, ReplicaSet
/// controllers), as the API server records it from their user agent.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The fields a created object sets, as a managed-fields entry lists them (`f:spec`, and under
/// `f:metadata` its labels, annotations and owners), down to the first level.
fn fields_set(obj: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let Some(o) = obj.as_object() else {
        return Value::Object(out);
    };
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations", "ownerReferences", "finalizers"] {
        if o.get("metadata").and_then(|m| m.get(k)).is_some() {
            meta.insert(format!("f:{k}"), json!({}));
        }
    }
    if !meta.is_empty() {
        out.insert("f:metadata".into(), Value::Object(meta));
    }
    for k in o.keys() {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            out.insert(format!("f:{k}"), json!({}));
        }
    }
    Value::Object(out)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn new_uid() -> String {
    let h = |n: usize| {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect::<String>()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

/// Five lowercase alphanumerics, as `generateName` and pod names use.
pub fn random_suffix() -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| A[fastrand::usize(..A.len())] as char)
        .collect()
}

impl Default for ObjectStore {
    fn default() -> Self {
        ObjectStore::new(10_000)
    }
}

impl ObjectStore {
    pub fn new(history_cap: usize) -> ObjectStore {
        ObjectStore {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap,
            compacted: 0,
            namespace_rv: HashMap::new(),
            changes: broadcast::channel(16_384).0,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Forgets history, as etcd compaction does: resuming a watch from any position before now
    /// gets 410 Expired, while a list taken after this resumes fine.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
    }

    /// The version of the last change in namespace `ns` (0: none since start).
    pub fn namespace_rv(&self, ns: &str) -> u64 {
        self.namespace_rv.get(ns).copied().unwrap_or(0)
    }

    fn record(&mut self, plural: &'static str, namespace: &str, kind: &'static str, object: Value) {
        match self.namespace_rv.get_mut(namespace) {
            Some(rv) => *rv = self.rv,
            None => {
                self.namespace_rv.insert(namespace.to_string(), self.rv);
            }
        }
        let change = Change {
            rv: self.rv,
            plural,
            namespace: namespace.to_string(),
            kind,
            object,
        };
        if self.history.len() == self.history_cap
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.rv;
        }
        self.history.push_back(change.clone());
        let _ = self.changes.send(change);
    }

    /// Changes of one resource after `rv`, or `None` if `rv` is older than the history kept.
    pub fn changes_since(&self, plural: &str, rv: u64) -> Option<Vec<Change>> {
        if rv < self.compacted {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.plural == plural && c.rv > rv)
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, rt: &'static ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, in a namespace or all, matching the selectors; plus the list's RV.
    pub fn list(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
    ) -> (Vec<Value>, u64) {
        // Keys sort by resource, then namespace: read only the range asked for.
        let from = (rt.plural, ns.unwrap_or_default().to_string(), String::new());
        let items = self
            .objects
            .range(from..)
            .take_while(|((p, n, _), _)| *p == rt.plural && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .filter(|v| sel.matches(v))
            .cloned()
            .collect();
        (items, self.rv)
    }

    /// Every object of a type across namespaces (controllers).
    pub fn all(&self, plural: &'static str) -> Vec<Value> {
        self.objects
            .range((plural, String::new(), String::new())..)
            .take_while(|((p, _, _), _)| *p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every object of a type in one namespace (controllers finding what an owner owns).
    pub fn all_in(&self, plural: &'static str, ns: &str) -> Vec<Value> {
        self.objects
            .range((plural, ns.to_string(), String::new())..)
            .take_while(|((p, n, _), _)| *p == plural && n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The objects of a type in one namespace that `keep` accepts, cloning only those (the
    /// controllers look for what one owner owns many times a second).
    pub fn all_in_where(
        &self,
        plural: &'static str,
        ns: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.objects
            .range((plural, ns.to_string(), String::new())..)
            .take_while(|((p, n, _), _)| *p == plural && n == ns)
            .map(|(_, v)| v)
            .filter(|v| keep(v))
            .cloned()
            .collect()
    }

    /// Objects of a type across namespaces that `keep` accepts, cloning only those.
    pub fn all_where(&self, plural: &'static str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.objects
            .range((plural, String::new(), String::new())..)
            .take_while(|((p, _, _), _)| *p == plural)
            .map(|(_, v)| v)
            .filter(|v| keep(v))
            .cloned()
            .collect()
    }

    /// The uids of every object (garbage collection finding dependents whose owner is gone).
    pub fn uids(&self) -> std::collections::HashSet<String> {
        self.objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string))
            .collect()
    }

    /// Creates an object as the cluster's controllers do (field manager
    /// `kube-controller-manager`), filling in server-set metadata.
    pub fn create(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.create_by(rt, ns, obj, CONTROLLER_MANAGER)
    }

    /// Creates an object for the field manager `manager`, filling in server-set metadata: the
    /// `managedFields` entry of its creation names the manager and the fields it set.
    pub fn create_by(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        mut obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        check_type(rt, &mut obj)?;
        if obj.get("metadata").is_none() {
            obj["metadata"] = json!({});
        }
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        if !valid_dns_name(&name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                "metadata.name",
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            ));
        }
        let key = key(rt, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists {
                what: rt.qualified(),
                name,
                kind: rt.plural.into(),
                group: rt.group.into(),
            });
        }
        if rt.namespaced {
            if let Some(existing) = meta.get("namespace").and_then(Value::as_str)
                && existing != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
        }
        self.rv += 1;
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        let managed = json!([{
            "manager": manager,
            "operation": "Update",
            "apiVersion": rt.api_version(),
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_set(&obj),
        }]);
        obj["metadata"]["managedFields"] = managed;
        allocate(rt, &mut obj);
        self.objects.insert(key.clone(), obj.clone());
        self.record(rt.plural, &key.1, "ADDED", obj.clone());
        Ok(obj)
    }

    /// Replaces an object. A stale `metadata.resourceVersion` is a conflict; a no-op write changes nothing.
    pub fn update(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        mut new: Value,
        mode: WriteMode,
    ) -> Result<Value, ApiError> {
        let key = key(rt, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        check_type(rt, &mut new)?;
        if let Some(rv) = new["metadata"]["resourceVersion"]
            .as_str()
            .filter(|r| !r.is_empty())
            && rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::conflict(rt, name));
        }
        if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        // Server-owned metadata always comes from the stored object (the simulator keeps the
        // creation's managed-fields entry as it was).
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        match mode {
            WriteMode::Main => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            },
            WriteMode::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            WriteMode::Controller => {}
        }
        if new == old {
            return Ok(old);
        }
        let spec_changed = new.get("spec") != old.get("spec");
        let annotations_changed = rt.plural == "deployments"
            && new["metadata"].get("annotations") != old["metadata"].get("annotations");
        if mode != WriteMode::Status && (spec_changed || annotations_changed) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), new.clone());
        self.record(rt.plural, &key.1, "MODIFIED", new.clone());
        Ok(new)
    }

    /// Deletes an object (immediately; dependents are collected by the garbage collector).
    pub fn delete(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = key(rt, ns, name);
        let mut old = self
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        self.rv += 1;
        old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(rt.plural, &key.1, "DELETED", old.clone());
        Ok(old)
    }

    /// Whether any object has this uid.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|o| o["metadata"]["uid"] == uid)
    }
}

fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let api_version = rt.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None => obj["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None => obj["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    if rt.kind == "Secret" {
        secret_data(obj)?;
    }
    Ok(())
}

/// What the cluster fills in as an object is created: a Service's cluster IP (unless headless),
/// and a claim bound at once to a volume of the size it asked for (a provisioner's work).
fn allocate(rt: &ResourceType, obj: &mut Value) {
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match rt.kind {
        "Service" => {
            if obj["spec"]["clusterIP"].is_null() {
                let ip = format!("10.96.{}.{}", fastrand::u8(..), fastrand::u8(1..255));
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            if obj["spec"]["type"].is_null() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
        }
        "PersistentVolumeClaim" if obj["status"]["phase"].is_null() => {
            let size = obj["spec"]["resources"]["requests"]["storage"].clone();
            obj["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
            obj["spec"]["volumeMode"] = json!("Filesystem");
            obj["status"] = json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"], "capacity": {"storage": size}});
        }
        _ => {}
    }
}

/// As the API server stores a Secret: `stringData` folded into `data` (base64, winning over
/// the same key in `data`), every `data` value checked to be base64, and `type` defaulted.
fn secret_data(obj: &mut Value) -> Result<(), ApiError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(m) = obj.as_object_mut() else {
        return Ok(());
    };
    let strings = m.remove("stringData");
    let data = m.entry("data").or_insert_with(|| json!({}));
    if let Some(d) = data.as_object() {
        for (k, v) in d {
            if v.as_str().is_none_or(|s| b64.decode(s).is_err()) {
                return Err(ApiError::Invalid {
                    kind: "Secret".into(),
                    name,
                    field: format!("data[{k}]"),
                    message: "illegal base64 data".into(),
                });
            }
        }
    }
    if let (Some(d), Some(Value::Object(strings))) = (data.as_object_mut(), strings) {
        for (k, v) in strings {
            d.insert(k, json!(b64.encode(v.as_str().unwrap_or_default())));
        }
    }
    if data.as_object().is_some_and(|d| d.is_empty()) {
        m.remove("data");
    }
    m.entry("type").or_insert(json!("Opaque"));
    Ok(())
}

/// RFC 1123 subdomain, at most 253 characters.
pub fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::by_plural;

    fn deploy(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "rc", "tier": "web"}}, "spec": {"replicas": 3}})
    }

    #[test]
    fn a_secrets_string_data_is_stored_as_base64_data_and_bad_base64_is_invalid() {
        let mut s = ObjectStore::new(10);
        let rt = by_plural("secrets");
        let made = s
            .create(rt, "ns", json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}, "data": {"user": "YWRtaW4="}}))
            .unwrap();
        assert_eq!(
            made["data"],
            json!({"password": "aHVudGVyMg==", "user": "YWRtaW4="})
        );
        assert!(made.get("stringData").is_none());
        assert_eq!(made["type"], "Opaque");
        let bad = s.create(
            rt,
            "ns",
            json!({"metadata": {"name": "bad"}, "data": {"k": "not base64!"}}),
        );
        assert!(
            matches!(bad, Err(ApiError::Invalid { ref field, .. }) if field == "data[k]"),
            "{bad:?}"
        );
    }

    #[test]
    fn create_sets_server_metadata_and_a_second_create_is_already_exists() {
        let mut s = ObjectStore::default();
        let d = s
            .create(by_plural("deployments"), "prod", deploy("rc"))
            .unwrap();
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["metadata"]["namespace"], "prod");
        let e = s
            .create(by_plural("deployments"), "prod", deploy("rc"))
            .unwrap_err();
        assert_eq!(e.status()["reason"], "AlreadyExists");
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict() {
        let mut s = ObjectStore::default();
        let rt = by_plural("deployments");
        let d = s.create(rt, "p", deploy("rc")).unwrap();
        let mut a = d.clone();
        a["spec"]["replicas"] = json!(4);
        s.update(rt, "p", "rc", a, WriteMode::Main).unwrap();
        let mut b = d;
        b["spec"]["replicas"] = json!(5);
        let e = s.update(rt, "p", "rc", b, WriteMode::Main).unwrap_err();
        assert_eq!(e.code(), 409);
        assert_eq!(e.status()["reason"], "Conflict");
    }

    #[test]
    fn generation_rises_on_spec_and_deployment_annotation_changes_only() {
        let mut s = ObjectStore::default();
        let rt = by_plural("deployments");
        let d = s.create(rt, "p", deploy("rc")).unwrap();
        let mut a = d.clone();
        a["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "x"});
        let a = s.update(rt, "p", "rc", a, WriteMode::Main).unwrap();
        assert_eq!(a["metadata"]["generation"], 2);
        let mut st = a.clone();
        st["status"] = json!({"replicas": 3});
        let st = s.update(rt, "p", "rc", st, WriteMode::Status).unwrap();
        assert_eq!(st["metadata"]["generation"], 2);
        let rv = st["metadata"]["resourceVersion"].clone();
        let same = s
            .update(rt, "p", "rc", st.clone(), WriteMode::Main)
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"], rv,
            "a no-op write changes nothing"
        );
    }

    #[test]
    fn selectors_match_labels_sets_and_fields() {
        let d = json!({"metadata": {"name": "rc", "labels": {"app": "rc", "tier": "web"}}, "status": {"phase": "Running"}});
        let m = |l: Option<&str>, f: Option<&str>| Selectors::parse(l, f).unwrap().matches(&d);
        assert!(m(Some("app=rc"), None));
        assert!(m(Some("app in (rc,db),!canary"), None));
        assert!(!m(Some("tier notin (web)"), None));
        assert!(m(None, Some("metadata.name=rc")));
        assert!(m(None, Some("status.phase!=Pending")));
        assert!(!m(None, Some("metadata.name=db")));
        assert!(Selectors::parse(Some("a in b"), None).is_err());
    }

    #[test]
    fn history_beyond_its_capacity_is_expired() {
        let mut s = ObjectStore::new(2);
        let rt = by_plural("configmaps");
        for i in 0..4 {
            s.create(rt, "p", json!({"metadata": {"name": format!("c{i}")}}))
                .unwrap();
        }
        assert!(s.changes_since("configmaps", 1).is_none());
        assert_eq!(
            s.changes_since("configmaps", s.current_rv() - 1)
                .unwrap()
                .len(),
            1
        );
    }
}
