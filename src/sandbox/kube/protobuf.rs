//! Just enough of Kubernetes' protobuf encoding to accept the Job that `kubectl create job --from=cronjob/…` sends.
//!
//! Typed kubectl commands send built-in objects as protobuf and do not fall back to JSON. The
//! simulator speaks JSON; for a protobuf Job it reads the envelope and the object's metadata
//! (name, labels, annotations, owner references) and takes the spec from the owning CronJob's
//! `jobTemplate`, which is exactly what kubectl copied into it.

use serde_json::{Map, Value, json};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Splits a message into (field number, value) pairs; `None` on malformed input.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                Field::Other
            }
            _ => return None,
        };
        out.push((num, f));
    }
    Some(out)
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn string_map(entries: &[&[u8]]) -> Option<Value> {
    let mut m = Map::new();
    for e in entries {
        let mut k = String::new();
        let mut v = String::new();
        for (n, f) in fields(e)? {
            if let Field::Bytes(b) = f {
                match n {
                    1 => k = text(b)?,
                    2 => v = text(b)?,
                    _ => {}
                }
            }
        }
        m.insert(k, json!(v));
    }
    Some(Value::Object(m))
}

fn owner_reference(buf: &[u8]) -> Option<Value> {
    let mut r = Map::new();
    for (n, f) in fields(buf)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                r.insert("kind".into(), json!(text(b)?));
            }
            (3, Field::Bytes(b)) => {
                r.insert("name".into(), json!(text(b)?));
            }
            (4, Field::Bytes(b)) => {
                r.insert("uid".into(), json!(text(b)?));
            }
            (5, Field::Bytes(b)) => {
                r.insert("apiVersion".into(), json!(text(b)?));
            }
            (6, Field::Varint(v)) => {
                r.insert("controller".into(), json!(v != 0));
            }
            (7, Field::Varint(v)) => {
                r.insert("blockOwnerDeletion".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Some(Value::Object(r))
}

fn object_meta(buf: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Vec::new();
    let mut annotations = Vec::new();
    let mut owners = Vec::new();
    for (n, f) in fields(buf)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                meta.insert("name".into(), json!(text(b)?));
            }
            2 => {
                meta.insert("generateName".into(), json!(text(b)?));
            }
            3 => {
                meta.insert("namespace".into(), json!(text(b)?));
            }
            11 => labels.push(b),
            12 => annotations.push(b),
            13 => owners.push(owner_reference(b)?),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), string_map(&labels)?);
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), string_map(&annotations)?);
    }
    if !owners.is_empty() {
        meta.insert("ownerReferences".into(), Value::Array(owners));
    }
    Some(Value::Object(meta))
}

/// A protobuf-encoded object's kind and metadata: `(apiVersion, kind, metadata)`.
pub fn decode_envelope(body: &[u8]) -> Option<(String, String, Value)> {
    let rest = body.strip_prefix(MAGIC)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in fields(tm)? {
                    if let Field::Bytes(b) = g {
                        match m {
                            1 => api_version = text(b)?,
                            2 => kind = text(b)?,
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let meta = fields(raw)?
        .into_iter()
        .find_map(|(n, f)| match (n, f) {
            (1, Field::Bytes(b)) => Some(b),
            _ => None,
        })
        .map(object_meta)
        .unwrap_or_else(|| Some(json!({})))?;
    Some((api_version, kind, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn a_job_envelope_yields_its_kind_and_metadata() {
        let type_meta = [ld(1, b"batch/v1"), ld(2, b"Job")].concat();
        let label = [ld(1, b"app"), ld(2, b"backup")].concat();
        let owner = [
            ld(1, b"CronJob"),
            ld(3, b"mongodb-backup"),
            ld(4, b"u-1"),
            vec![6 << 3, 1],
        ]
        .concat();
        let meta = [ld(1, b"backup-now"), ld(11, &label), ld(13, &owner)].concat();
        let job = ld(1, &meta);
        let body = [MAGIC.to_vec(), ld(1, &type_meta), ld(2, &job)].concat();
        let (av, kind, meta) = decode_envelope(&body).unwrap();
        assert_eq!((av.as_str(), kind.as_str()), ("batch/v1", "Job"));
        assert_eq!(meta["name"], "backup-now");
        assert_eq!(meta["labels"]["app"], "backup");
        assert_eq!(meta["ownerReferences"][0]["name"], "mongodb-backup");
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(decode_envelope(b"not protobuf").is_none());
        assert!(decode_envelope(&[b'k', b'8', b's', 0, 0x0a, 0xff]).is_none());
        for n in 0..=255u8 {
            let _ = decode_envelope(&[b'k', b'8', b's', 0, n, n, n]);
        }
    }
}
