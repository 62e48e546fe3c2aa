//! Kubernetes' protobuf bodies as typed kubectl commands send them, decoded to the simulator's JSON.
//!
//! Typed kubectl commands send built-in objects as protobuf and do not fall back to JSON:
//! `create namespace`, `create configmap`, `create secret`, `create deployment` and `create job
//! --from=cronjob/…`. The envelope and metadata are read for every kind; the bodies of
//! Namespaces, ConfigMaps, Secrets and Deployments by the field tables below (field numbers as in
//! the API's `generated.proto`). For a Job the spec comes from the owning CronJob's
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
        if b.is_empty() {
            continue;
        }
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

/// How one field reads: its JSON name and shape.
#[derive(Clone, Copy)]
enum Shape {
    /// Strings, numbers and booleans read as Go's JSON writes them: empty, 0 and false are left
    /// out (`omitempty`). `Opt*` fields are pointers in Go, so a 0 or false that was sent is kept.
    Str,
    Int,
    OptInt,
    Bool,
    OptBool,
    RepStr,
    MapStr,
    MapBytes,
    /// `map<string, Quantity>`.
    MapQuantity,
    IntOrString,
    Meta,
    Msg(&'static [(u64, &'static str, Shape)]),
    RepMsg(&'static [(u64, &'static str, Shape)]),
}

type Table = &'static [(u64, &'static str, Shape)];

const LABEL_SELECTOR: Table = &[
    (1, "matchLabels", Shape::MapStr),
    (
        2,
        "matchExpressions",
        Shape::RepMsg(&[
            (1, "key", Shape::Str),
            (2, "operator", Shape::Str),
            (3, "values", Shape::RepStr),
        ]),
    ),
];
const CONTAINER: Table = &[
    (1, "name", Shape::Str),
    (2, "image", Shape::Str),
    (3, "command", Shape::RepStr),
    (4, "args", Shape::RepStr),
    (5, "workingDir", Shape::Str),
    (
        6,
        "ports",
        Shape::RepMsg(&[
            (1, "name", Shape::Str),
            (2, "hostPort", Shape::Int),
            (3, "containerPort", Shape::Int),
            (4, "protocol", Shape::Str),
        ]),
    ),
    (
        7,
        "env",
        Shape::RepMsg(&[(1, "name", Shape::Str), (2, "value", Shape::Str)]),
    ),
    (
        8,
        "resources",
        Shape::Msg(&[
            (1, "limits", Shape::MapQuantity),
            (2, "requests", Shape::MapQuantity),
        ]),
    ),
    (
        9,
        "volumeMounts",
        Shape::RepMsg(&[
            (1, "name", Shape::Str),
            (2, "readOnly", Shape::Bool),
            (3, "mountPath", Shape::Str),
        ]),
    ),
    (13, "terminationMessagePath", Shape::Str),
    (14, "imagePullPolicy", Shape::Str),
    (20, "terminationMessagePolicy", Shape::Str),
];
const POD_SPEC: Table = &[
    (2, "containers", Shape::RepMsg(CONTAINER)),
    (3, "restartPolicy", Shape::Str),
    (4, "terminationGracePeriodSeconds", Shape::OptInt),
    (5, "activeDeadlineSeconds", Shape::OptInt),
    (6, "dnsPolicy", Shape::Str),
    (7, "nodeSelector", Shape::MapStr),
    (8, "serviceAccountName", Shape::Str),
    (20, "initContainers", Shape::RepMsg(CONTAINER)),
];
const DEPLOYMENT_SPEC: Table = &[
    (1, "replicas", Shape::OptInt),
    (2, "selector", Shape::Msg(LABEL_SELECTOR)),
    (
        3,
        "template",
        Shape::Msg(&[
            (1, "metadata", Shape::Meta),
            (2, "spec", Shape::Msg(POD_SPEC)),
        ]),
    ),
    (
        4,
        "strategy",
        Shape::Msg(&[
            (1, "type", Shape::Str),
            (
                2,
                "rollingUpdate",
                Shape::Msg(&[
                    (1, "maxUnavailable", Shape::IntOrString),
                    (2, "maxSurge", Shape::IntOrString),
                ]),
            ),
        ]),
    ),
    (5, "minReadySeconds", Shape::Int),
    (6, "revisionHistoryLimit", Shape::OptInt),
    (7, "paused", Shape::Bool),
    (9, "progressDeadlineSeconds", Shape::OptInt),
];

const POD_TEMPLATE: Table = &[
    (1, "metadata", Shape::Meta),
    (2, "spec", Shape::Msg(POD_SPEC)),
];
const JOB_SPEC: Table = &[
    (1, "parallelism", Shape::OptInt),
    (2, "completions", Shape::OptInt),
    (3, "activeDeadlineSeconds", Shape::OptInt),
    (4, "selector", Shape::Msg(LABEL_SELECTOR)),
    (5, "manualSelector", Shape::OptBool),
    (6, "template", Shape::Msg(POD_TEMPLATE)),
    (7, "backoffLimit", Shape::OptInt),
    (8, "ttlSecondsAfterFinished", Shape::OptInt),
    (10, "suspend", Shape::OptBool),
];

/// The body fields of the kinds decoded whole (`metadata`, field 1, is read for every kind).
fn body_table(kind: &str) -> Option<Table> {
    Some(match kind {
        "Namespace" => &[(2, "spec", Shape::Msg(&[(1, "finalizers", Shape::RepStr)]))],
        "ConfigMap" => &[
            (2, "data", Shape::MapStr),
            (3, "binaryData", Shape::MapBytes),
            (4, "immutable", Shape::OptBool),
        ],
        "Secret" => &[
            (2, "data", Shape::MapBytes),
            (3, "type", Shape::Str),
            (4, "stringData", Shape::MapStr),
            (5, "immutable", Shape::OptBool),
        ],
        "Deployment" => &[(2, "spec", Shape::Msg(DEPLOYMENT_SPEC))],
        "Pod" => &[(2, "spec", Shape::Msg(POD_SPEC))],
        "Job" => &[(2, "spec", Shape::Msg(JOB_SPEC))],
        "CronJob" => &[(
            2,
            "spec",
            Shape::Msg(&[
                (1, "schedule", Shape::Str),
                (2, "startingDeadlineSeconds", Shape::OptInt),
                (3, "concurrencyPolicy", Shape::Str),
                (4, "suspend", Shape::OptBool),
                (
                    5,
                    "jobTemplate",
                    Shape::Msg(&[
                        (1, "metadata", Shape::Meta),
                        (2, "spec", Shape::Msg(JOB_SPEC)),
                    ]),
                ),
                (6, "successfulJobsHistoryLimit", Shape::OptInt),
                (7, "failedJobsHistoryLimit", Shape::OptInt),
                (8, "timeZone", Shape::Str),
            ]),
        )],
        "Service" => &[(
            2,
            "spec",
            Shape::Msg(&[
                (
                    1,
                    "ports",
                    Shape::RepMsg(&[
                        (1, "name", Shape::Str),
                        (2, "protocol", Shape::Str),
                        (3, "port", Shape::Int),
                        (4, "targetPort", Shape::IntOrString),
                        (5, "nodePort", Shape::Int),
                    ]),
                ),
                (2, "selector", Shape::MapStr),
                (3, "clusterIP", Shape::Str),
                (4, "type", Shape::Str),
            ]),
        )],
        _ => return None,
    })
}

fn map_entry(b: &[u8]) -> Option<(String, Option<&[u8]>)> {
    let mut key = String::new();
    let mut value = None;
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) => value = Some(v),
            _ => {}
        }
    }
    Some((key, value))
}

fn decode_message(buf: &[u8], table: Table) -> Option<Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Map::new();
    for (n, f) in fields(buf)? {
        let Some((_, name, shape)) = table.iter().find(|(num, _, _)| *num == n) else {
            continue;
        };
        let name = (*name).to_string();
        match (*shape, f) {
            (Shape::Str, Field::Bytes(b)) => {
                if !b.is_empty() {
                    out.insert(name, json!(text(b)?));
                }
            }
            (Shape::Int | Shape::OptInt, Field::Varint(v)) => {
                // int32 and int64 alike: a negative number is sent as its 64-bit two's complement.
                if v != 0 || matches!(shape, Shape::OptInt) {
                    out.insert(name, json!(v as i64));
                }
            }
            (Shape::Bool | Shape::OptBool, Field::Varint(v)) => {
                if v != 0 || matches!(shape, Shape::OptBool) {
                    out.insert(name, json!(v != 0));
                }
            }
            (Shape::RepStr, Field::Bytes(b)) => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                list.as_array_mut()?.push(json!(text(b)?));
            }
            (Shape::MapStr | Shape::MapBytes | Shape::MapQuantity, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let v = v.unwrap_or_default();
                let value = match *shape {
                    Shape::MapStr => json!(text(v)?),
                    Shape::MapBytes => json!(b64.encode(v)),
                    _ => decode_message(v, &[(1, "string", Shape::Str)])?["string"].clone(),
                };
                let map = out.entry(name).or_insert_with(|| json!({}));
                map.as_object_mut()?.insert(k, value);
            }
            (Shape::IntOrString, Field::Bytes(b)) => {
                let v = decode_message(
                    b,
                    &[
                        (1, "type", Shape::Int),
                        (2, "intVal", Shape::Int),
                        (3, "strVal", Shape::Str),
                    ],
                )?;
                let value = if v["type"] == 1 {
                    v["strVal"].clone()
                } else {
                    json!(v["intVal"].as_i64().unwrap_or(0))
                };
                out.insert(name, value);
            }
            (Shape::Meta, Field::Bytes(b)) => {
                out.insert(name, object_meta(b)?);
            }
            (Shape::Msg(t), Field::Bytes(b)) => {
                out.insert(name, decode_message(b, t)?);
            }
            (Shape::RepMsg(t), Field::Bytes(b)) => {
                let item = decode_message(b, t)?;
                let list = out.entry(name).or_insert_with(|| json!([]));
                list.as_array_mut()?.push(item);
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

/// A protobuf body decoded whole, for the kinds [`body_table`] knows: `None` for any other kind
/// or for malformed input.
pub fn decode_object(body: &[u8]) -> Option<Value> {
    let (api_version, kind, meta) = decode_envelope(body)?;
    let table = body_table(&kind)?;
    let raw = raw_object(body)?;
    let mut obj = decode_message(raw, table)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj["metadata"] = meta;
    Some(obj)
}

/// The encoded object inside the envelope.
fn raw_object(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(MAGIC)?;
    fields(rest)?.into_iter().find_map(|(n, f)| match (n, f) {
        (2, Field::Bytes(b)) => Some(b),
        _ => None,
    })
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

    fn varint_field(num: u64, v: u64) -> Vec<u8> {
        let mut out = vec![(num << 3) as u8];
        let mut v = v;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn a_deployment_reads_whole_with_go_json_omissions_and_pointer_zeros_kept() {
        let type_meta = [ld(1, b"apps/v1"), ld(2, b"Deployment")].concat();
        let labels = ld(1, &[ld(1, b"app"), ld(2, b"web")].concat());
        let port = [
            ld(1, b""),
            varint_field(2, 0),
            varint_field(3, 3000),
            ld(4, b"TCP"),
        ]
        .concat();
        let limits = ld(1, &[ld(1, b"cpu"), ld(2, &ld(1, b"500m"))].concat());
        let container = [ld(1, b"web"), ld(2, b"img:1"), ld(6, &port), ld(8, &limits)].concat();
        let pod_spec = [ld(2, &container), ld(3, b"")].concat();
        let template = [
            ld(
                1,
                &[ld(1, b""), ld(11, &[ld(1, b"app"), ld(2, b"web")].concat())].concat(),
            ),
            ld(2, &pod_spec),
        ]
        .concat();
        let spec = [
            varint_field(1, 0),
            ld(2, &labels),
            ld(3, &template),
            varint_field(7, 0),
        ]
        .concat();
        let object = [ld(1, &ld(1, b"web")), ld(2, &spec)].concat();
        let body = [MAGIC.to_vec(), ld(1, &type_meta), ld(2, &object)].concat();
        let d = decode_object(&body).unwrap();
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["metadata"]["name"], "web");
        assert_eq!(d["spec"]["replicas"], 0, "a pointer's 0 is kept");
        assert!(
            d["spec"].get("paused").is_none(),
            "a plain false is left out"
        );
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 3000, "protocol": "TCP"})
        );
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(
            d["spec"]["template"]["metadata"],
            json!({"labels": {"app": "web"}})
        );
        assert!(d["spec"]["template"]["spec"].get("restartPolicy").is_none());
    }

    #[test]
    fn a_kind_without_a_field_table_is_not_decoded_whole() {
        let type_meta = [ld(1, b"v1"), ld(2, b"Event")].concat();
        let body = [
            MAGIC.to_vec(),
            ld(1, &type_meta),
            ld(2, &ld(1, &ld(1, b"p"))),
        ]
        .concat();
        assert!(decode_object(&body).is_none());
        assert!(decode_envelope(&body).is_some());
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(decode_envelope(b"not protobuf").is_none());
        assert!(decode_envelope(&[b'k', b'8', b's', 0, 0x0a, 0xff]).is_none());
        for n in 0..=255u8 {
            let _ = decode_envelope(&[b'k', b'8', b's', 0, n, n, n]);
            let _ = decode_object(&[b'k', b'8', b's', 0, 0x12, 3, n, n, n]);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            let len = rng.usize(0..64);
            let mut b = MAGIC.to_vec();
            b.extend((0..len).map(|_| rng.u8(..)));
            let _ = decode_object(&b);
        }
    }
}
