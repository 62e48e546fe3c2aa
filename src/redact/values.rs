//! Exact-value redaction: the values of the Secrets the Job templates reference, removed (also as base64) from everything the bot posts, whatever the format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use serde_json::Value;

use super::MASK;

/// Values shorter than this are not registered: masking every `admin` or `5432` would make
/// messages unreadable and protects nothing a rule does not.
pub const MIN_LEN: usize = 6;

#[derive(Default)]
struct Exact {
    values: BTreeSet<String>,
    finder: Option<AhoCorasick>,
}

static EXACT: LazyLock<RwLock<Arc<Exact>>> = LazyLock::new(Default::default);

/// The forms a value takes in text: itself, each long line of it, and its base64 encodings.
fn forms(value: &str) -> Vec<String> {
    let value = value.trim_end_matches(['\n', '\r']);
    if value.chars().count() < MIN_LEN {
        return vec![];
    }
    let mut out = vec![value.to_string()];
    out.extend(
        value
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 16 && *l != value)
            .map(String::from),
    );
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        out.push(engine.encode(value));
    }
    out
}

/// Adds `values` to the exact values removed from outgoing text; returns how many are known now.
pub fn register<I, S>(values: I) -> usize
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut g = EXACT.write().unwrap_or_else(|p| p.into_inner());
    let mut all = g.values.clone();
    for v in values {
        all.extend(forms(v.as_ref()));
    }
    let finder = AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build(all.iter())
        .ok();
    let n = all.len();
    *g = Arc::new(Exact {
        values: all,
        finder,
    });
    n
}

/// `text` with every registered value replaced by `***`.
pub(super) fn apply(text: &str) -> String {
    let exact = EXACT.read().unwrap_or_else(|p| p.into_inner()).clone();
    match &exact.finder {
        Some(f) if !exact.values.is_empty() => f.replace_all(text, &vec![MASK; exact.values.len()]),
        _ => text.to_string(),
    }
}

/// The Secrets a rendered Job spec reads, by name, with the keys it reads (`None`: all of them,
/// as `envFrom` and secret volumes do).
pub fn referenced_secrets(spec: &Value) -> BTreeMap<String, Option<BTreeSet<String>>> {
    let mut out: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    let mut add = |name: &str, key: Option<&str>| {
        if name.is_empty() {
            return;
        }
        let entry = out
            .entry(name.to_string())
            .or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), key) {
            (Some(keys), Some(k)) => {
                keys.insert(k.to_string());
            }
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    };
    fn walk(v: &Value, add: &mut dyn FnMut(&str, Option<&str>)) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("secretKeyRef") {
                    add(
                        r["name"].as_str().unwrap_or_default(),
                        r["key"].as_str().or(Some("")),
                    );
                }
                if let Some(r) = m.get("secretRef") {
                    add(r["name"].as_str().unwrap_or_default(), None);
                }
                if let Some(s) = m.get("secret").and_then(|s| s.get("secretName")) {
                    add(s.as_str().unwrap_or_default(), None);
                }
                m.values().for_each(|x| walk(x, add));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, add)),
            _ => {}
        }
    }
    walk(spec, &mut add);
    out
}

/// The values to register from a Secret's `data` (base64) and `stringData`, limited to `keys`.
pub fn secret_values(secret: &Value, keys: Option<&BTreeSet<String>>) -> Vec<String> {
    let wanted = |k: &str| keys.is_none_or(|ks| ks.contains(k));
    let mut out = Vec::new();
    if let Some(data) = secret["data"].as_object() {
        for (_, v) in data.iter().filter(|(k, _)| wanted(k)) {
            if let Some(bytes) = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    if let Some(data) = secret["stringData"].as_object() {
        for (_, v) in data.iter().filter(|(k, _)| wanted(k)) {
            if let Some(s) = v.as_str() {
                out.push(s.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_value_is_removed_raw_and_as_base64_whatever_surrounds_it() {
        register(["Zq9-exact-Value-77"]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("Zq9-exact-Value-77");
        let text = format!("x=Zq9-exact-Value-77;y {b64} <Zq9-exact-Value-77>");
        let out = apply(&text);
        assert!(
            !out.contains("Zq9-exact-Value-77") && !out.contains(&b64),
            "{out}"
        );
        assert_eq!(out, "x=***;y *** <***>");
    }

    #[test]
    fn a_short_value_is_not_registered() {
        register(["abc"]);
        assert_eq!(apply("abc abc"), "abc abc");
    }

    #[test]
    fn the_secrets_a_job_reads_are_found_with_their_keys() {
        let spec = serde_json::json!({"spec": {"template": {"spec": {"containers": [{
            "env": [{"name": "URI", "valueFrom": {"secretKeyRef": {"name": "mongodb", "key": "uri"}}}],
            "envFrom": [{"secretRef": {"name": "extra"}}, {"configMapRef": {"name": "cm"}}]
        }], "volumes": [{"name": "k", "secret": {"secretName": "tls"}}]}}}});
        let found = referenced_secrets(&spec);
        assert_eq!(
            found.get("mongodb"),
            Some(&Some(BTreeSet::from(["uri".to_string()])))
        );
        assert_eq!(found.get("extra"), Some(&None));
        assert_eq!(found.get("tls"), Some(&None));
        assert!(!found.contains_key("cm"));
    }

    #[test]
    fn only_the_referenced_keys_of_a_secret_are_taken() {
        let secret = serde_json::json!({"data": {"uri": "bW9uZ29kYjovL3g6eUBo", "other": "eA=="}});
        let keys = BTreeSet::from(["uri".to_string()]);
        assert_eq!(secret_values(&secret, Some(&keys)), vec!["mongodb://x:y@h"]);
    }
}
