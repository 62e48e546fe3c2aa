//! The OpenAPI v3 documents kubectl downloads before `apply` and `create -f`: the index and one per group version.
//!
//! kubectl asks them whether the server validates fields itself (a `fieldValidation` query
//! parameter on the kind's PATCH operation). It does here, so kubectl sends
//! `fieldValidation=Strict` and checks nothing on its side. Schemas are open objects tagged with
//! their kind: enough for clients that look kinds up, not a full schema.

use serde_json::{Map, Value, json};

use super::resources::{RESOURCES, ResourceType};

/// `api/v1`, `apis/apps/v1`: the keys of the index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every served group version, core first.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// A stable tag for a document's contents, as the `hash` query the real index carries.
fn hash(group: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{group}/{version}/{}", RESOURCES.len()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `GET /openapi/v3`.
pub(crate) fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(g, v))}),
        );
    }
    json!({ "paths": paths })
}

fn schema_name(rt: &ResourceType) -> String {
    let group = match rt.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{group}.{}.{}", rt.version, rt.kind)
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `GET /openapi/v3/{api/v1 | apis/G/V}`, or `None` for a group version not served.
pub(crate) fn document(path: &str) -> Option<Value> {
    let (g, v) = group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path.trim_matches('/'))?;
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
        let base = format!("/{}", gv_path(g, v));
        let collection = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        let item = format!("{collection}/{{name}}");
        let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(rt))});
        let body = json!({"content": {"application/json": {"schema": schema}}});
        let op = |action: &str, params: Vec<Value>| {
            json!({"operationId": format!("{action}{}", rt.kind), "x-kubernetes-action": action,
                   "x-kubernetes-group-version-kind": gvk(rt), "parameters": params,
                   "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}})
        };
        let writes = || {
            vec![
                query("dryRun"),
                query("fieldManager"),
                query("fieldValidation"),
            ]
        };
        let mut coll = json!({"get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("watch")])});
        let mut one = json!({"get": op("get", vec![])});
        if !rt.read_only {
            coll["post"] = op("post", writes());
            coll["post"]["requestBody"] = body.clone();
            one["put"] = op("put", writes());
            one["put"]["requestBody"] = body.clone();
            let mut patch = writes();
            patch.push(query("force"));
            one["patch"] = op("patch", patch);
            // The patch types it takes. The simulator still applies strategic merge patches,
            // but this document leaves that type out: kubectl would compute one from the kind's
            // schema here, which describes only the metadata, and warn on the first other field
            // of a changed object. Without it kubectl computes the patch from its own built-in
            // types, with their real merge keys, as it does for any kind the document omits.
            let patch_body =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
            one["patch"]["requestBody"] = json!({"content": {
                "application/json-patch+json": {"schema": patch_body},
                "application/merge-patch+json": {"schema": patch_body},
                "application/apply-patch+yaml": {"schema": patch_body},
            }});
            one["delete"] = op("delete", vec![query("dryRun"), query("propagationPolicy")]);
        }
        paths.insert(collection, coll);
        paths.insert(item, one);
        schemas.insert(
            schema_name(rt),
            json!({"type": "object", "description": format!("{} (served by the rocketops simulator)", rt.kind),
                   "x-kubernetes-group-version-kind": [gvk(rt)],
                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                               "properties": {
                                                   "name": {"type": "string"}, "namespace": {"type": "string"},
                                                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                   "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `GET /openapi/v2`: the same operations and kinds as one Swagger 2.0 document, for clients that
/// still read it.
pub(crate) fn v2() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (g, v) in group_versions() {
        let Some(doc) = document(&gv_path(g, v)) else {
            continue;
        };
        let text = doc
            .to_string()
            .replace("#/components/schemas/", "#/definitions/");
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for (path, item) in doc["paths"].as_object().cloned().unwrap_or_default() {
            let mut item = item;
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                let mut params = Vec::new();
                for p in op["parameters"].as_array().cloned().unwrap_or_default() {
                    params.push(json!({"name": p["name"], "in": p["in"], "type": p["schema"]["type"], "uniqueItems": true}));
                }
                if let Some(body) = op.as_object_mut().and_then(|o| o.remove("requestBody")) {
                    params.push(json!({"name": "body", "in": "body", "required": true,
                                       "schema": body["content"]["application/json"]["schema"]}));
                }
                op["parameters"] = Value::Array(params);
                let schema =
                    op["responses"]["200"]["content"]["application/json"]["schema"].clone();
                op["responses"] = json!({"200": {"description": "OK", "schema": schema}});
                op["consumes"] = json!([
                    "application/json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml"
                ]);
                op["produces"] = json!(["application/json"]);
            }
            paths.insert(path, item);
        }
        for (name, schema) in doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            definitions.insert(name, schema);
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "definitions": definitions})
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_swagger_document_has_every_kind_with_field_validation_on_patch() {
        let doc = v2();
        assert_eq!(doc["swagger"], "2.0");
        let patch = &doc["paths"]["/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["type"] == "string")
        );
        let post = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets"]["post"];
        assert_eq!(
            post["parameters"].as_array().unwrap().last().unwrap()["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Secret"
        );
        assert_eq!(
            doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"]
                [0]["kind"],
            "Deployment"
        );
    }

    use super::*;

    #[test]
    fn the_index_names_one_document_per_group_version_and_each_says_patch_takes_field_validation() {
        let idx = index();
        let paths = idx["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        let doc = document(
            url.trim_start_matches("/openapi/v3/")
                .split('?')
                .next()
                .unwrap(),
        )
        .unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(doc["paths"]["/api/v1/namespaces/{name}"].is_null());
        assert!(
            document("api/v1").unwrap()["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object()
        );
        assert!(document("apis/nope/v1").is_none());
    }
}
