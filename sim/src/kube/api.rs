//! The Kubernetes simulator's HTTP surface: discovery, list/watch/get/create/replace/patch/delete, `/scale`, `/status` and `pods/log`.
//!
//! Long by design: the whole REST surface in one router (discovery, create, read, update, patch,
//! delete, list, watch, subresources, the control API), each handler short.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::openapi;
use super::patch;
use super::resources::{self, RESOURCES, ResourceType};
use super::store::{ApiError, Change, Selectors, WriteMode};
use super::table;
use super::{KubeInner, Partition, WriteRecord};

type Sim = State<Arc<KubeInner>>;
type Params = std::collections::HashMap<String, String>;

pub(crate) fn router(sim: Arc<KubeInner>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route(
            "/openapi/v3",
            get(|| async { json_response(200, &openapi::index()) }),
        )
        .route("/openapi/v3/{*gv}", get(openapi_document))
        .route(
            "/openapi/v2",
            get(|| async { json_response(200, &openapi::v2()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/api", get(core_versions))
        .route("/apis", get(api_groups))
        .route("/_sim/fail-writes", axum::routing::post(ctl_fail_writes))
        .route("/_sim/fail-lists", axum::routing::post(ctl_fail_lists))
        .route("/_sim/partition", axum::routing::post(ctl_partition))
        .route("/_sim/agent-delay", axum::routing::post(ctl_agent_delay))
        .route("/_sim/writes", axum::routing::get(ctl_writes))
        .route("/_sim/delay", axum::routing::post(ctl_delay))
        .route("/_sim/drop-watches", axum::routing::post(ctl_drop_watches))
        .route("/_sim/compact", axum::routing::post(ctl_compact))
        .route("/_sim/tags", axum::routing::post(ctl_tags))
        .route("/_sim/job-script", axum::routing::post(ctl_job_script))
        .route("/_sim/app-fail", axum::routing::post(ctl_app_fail))
        .route("/_app/{namespace}/{deployment}/api/info", get(app_info))
        .fallback(dispatch)
        .with_state(sim)
}

fn json_response(code: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code(), &e.status())
}

async fn openapi_document(axum::extract::Path(gv): axum::extract::Path<String>) -> Response {
    match openapi::document(&gv) {
        Some(doc) => json_response(200, &doc),
        None => error_response(&ApiError::NotFound {
            what: "the server could not find the requested resource".into(),
            name: format!("/openapi/v3/{gv}"),
            kind: String::new(),
            group: String::new(),
        }),
    }
}

async fn version() -> Response {
    json_response(
        200,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-rocketops-sim", "gitCommit": "", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
    )
}

async fn core_versions(State(sim): Sim) -> Response {
    json_response(
        200,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": sim.addr.to_string()}]}),
    )
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

async fn api_groups() -> Response {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| group_json(g, v))
        .collect();
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let verbs: Vec<&str> = if r.read_only {
            vec!["get", "list", "watch"]
        } else {
            vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        };
        let mut entry = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                        "verbs": verbs, "shortNames": r.short_names});
        // `kubectl get all` is the category these kinds belong to on a real server.
        if [
            "pods",
            "services",
            "deployments",
            "replicasets",
            "statefulsets",
            "jobs",
            "cronjobs",
            "horizontalpodautoscalers",
        ]
        .contains(&r.plural)
        {
            entry["categories"] = json!(["all"]);
        }
        out.push(entry);
        for sub in r.subresources {
            let (kind, verbs, g, v): (&str, Vec<&str>, &str, &str) = match *sub {
                "scale" => ("Scale", vec!["get", "patch", "update"], "autoscaling", "v1"),
                "log" => ("Pod", vec!["get"], "", "v1"),
                _ => (r.kind, vec!["get", "patch", "update"], r.group, r.version),
            };
            let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *sub == "scale" {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            out.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

/// A parsed resource path.
struct Target {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    ResourceList(String, String),
    Group(String),
    Resource(Target),
}

fn parse_path(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Route::ResourceList(group.into(), version.into()));
    }
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && resources::find(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let rt = resources::find(group, version, rest[0])?;
    Some(Route::Resource(Target {
        rt,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }))
}

/// Every API request: the client's partition and delay first, then the request, then the write
/// log.
async fn dispatch(
    State(sim): Sim,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: Query<Params>,
    body: Bytes,
) -> Response {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let partitioned = |sim: &KubeInner| {
        sim.faults()
            .partitions
            .iter()
            .find(|(a, _)| agent.contains(a.as_str()))
            .map(|(_, m)| *m)
    };
    match partitioned(&sim) {
        Some(Partition::Reject) => {
            return error_response(&ApiError::ServiceUnavailable {
                message: "no endpoints available for service \"kubernetes\" (partitioned)".into(),
            });
        }
        Some(Partition::Drop) => {
            // Lost: no answer while the partition lasts, and never applied after it heals.
            while partitioned(&sim) == Some(Partition::Drop) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return error_response(&ApiError::ServiceUnavailable {
                message: "the request was lost in a partition".into(),
            });
        }
        None => {}
    }
    let agent_delay = sim
        .faults()
        .agent_delays
        .iter()
        .filter(|(a, _)| agent.contains(a.as_str()))
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    if !agent_delay.is_zero() {
        tokio::time::sleep(agent_delay).await;
    }
    let write = write_of(&method, uri.path(), &body);
    let response = dispatch_request(State(sim.clone()), method, uri, headers, q, body).await;
    if let Some((verb, resource, namespace, name, epoch)) = write
        && let Ok(mut log) = sim.writes.lock()
    {
        let seq = log.last().map_or(1, |w| w.seq + 1);
        // A sandbox left running keeps the newest writes only.
        if log.len() >= WRITE_LOG_MAX {
            log.drain(..WRITE_LOG_MAX / 2);
        }
        log.push(WriteRecord {
            seq,
            agent,
            verb,
            resource,
            namespace,
            name,
            status: response.status().as_u16(),
            epoch,
        });
    }
    response
}

/// How many writes the log keeps.
const WRITE_LOG_MAX: usize = 100_000;

/// A write's verb, resource, namespace, name and claimed epoch, from its method, path and body;
/// `None` for a read or a path that is no resource.
#[allow(clippy::type_complexity)]
fn write_of(
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<(String, String, Option<String>, String, Option<String>)> {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    };
    let Some(Route::Resource(t)) = parse_path(path) else {
        return None;
    };
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let meta = doc.as_ref().map(|d| &d["metadata"]);
    let name = t
        .name
        .clone()
        .or_else(|| meta.and_then(|m| m["name"].as_str()).map(str::to_string))
        .unwrap_or_default();
    let epoch = meta
        .and_then(|m| m["annotations"]["rocketops.io/epoch"].as_str())
        .map(str::to_string);
    let resource = match &t.sub {
        Some(sub) => format!("{}/{sub}", t.rt.plural),
        None => t.rt.plural.to_string(),
    };
    Some((verb.to_string(), resource, t.namespace.clone(), name, epoch))
}

async fn dispatch_request(
    State(sim): Sim,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<Params>,
    body: Bytes,
) -> Response {
    let delay = sim.faults().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let route = match parse_path(uri.path()) {
        Some(r) => r,
        None => {
            return error_response(&ApiError::NotFound {
                what: "the server could not find the requested resource".into(),
                name: uri.path().into(),
                kind: String::new(),
                group: String::new(),
            });
        }
    };
    match route {
        Route::ResourceList(g, v) => {
            if RESOURCES.iter().any(|r| r.group == g && r.version == v) {
                json_response(200, &resource_list(&g, &v))
            } else {
                error_response(&ApiError::NotFound {
                    what: "group version".into(),
                    name: format!("{g}/{v}"),
                    kind: String::new(),
                    group: g,
                })
            }
        }
        Route::Group(g) => match resources::groups().into_iter().find(|(name, _)| *name == g) {
            Some((g, v)) => {
                let mut body = group_json(g, v);
                body["kind"] = json!("APIGroup");
                body["apiVersion"] = json!("v1");
                json_response(200, &body)
            }
            None => error_response(&ApiError::NotFound {
                what: "group".into(),
                name: g,
                kind: String::new(),
                group: String::new(),
            }),
        },
        Route::Resource(t) => {
            let verb = match (
                &method,
                t.name.is_some(),
                q.get("watch").is_some_and(|w| w == "true" || w == "1"),
            ) {
                (&Method::GET, false, true) => "watch",
                (&Method::GET, false, false) => "list",
                (&Method::GET, true, _) => "get",
                (m, _, _) => verb_of(m),
            };
            let resource = match &t.sub {
                Some(sub) => format!("{}/{sub}", t.rt.plural),
                None => t.rt.plural.to_string(),
            };
            if let Ok(mut calls) = sim.api_calls.lock() {
                calls.insert((t.rt.group.to_string(), resource.clone(), verb.to_string()));
            }
            let revoked = {
                let f = sim.faults();
                f.revoked.contains(&(resource.clone(), verb.to_string()))
                    || (t.namespace.is_none()
                        && t.rt.namespaced
                        && f.revoked
                            .contains(&(resource.clone(), format!("{verb}@cluster"))))
            };
            if revoked {
                // As after its Role lost the rule: every such request is refused until restored.
                return error_response(&ApiError::Forbidden {
                    message: format!(
                        "{} is forbidden: User \"system:serviceaccount:rocketops:rocketops\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                        t.rt.qualified(),
                        t.rt.plural,
                        t.rt.group,
                        t.namespace.as_deref().unwrap_or("")
                    ),
                });
            }
            if verb == "list"
                && let Some(code) = sim.take_list_fault(t.rt.plural)
            {
                let message =
                    "the server is currently unable to handle the request (fault injected)";
                let e = match code {
                    503 => ApiError::ServiceUnavailable {
                        message: message.into(),
                    },
                    _ => ApiError::Internal {
                        message: message.into(),
                    },
                };
                return error_response(&e);
            }
            let is_write = !matches!(method, Method::GET | Method::HEAD);
            if is_write && let Some((code, said)) = sim.take_write_fault() {
                let e = match code {
                    409 => ApiError::conflict(t.rt, t.name.as_deref().unwrap_or("")),
                    403 => ApiError::Forbidden {
                        message: format!(
                            "{} \"{}\" is forbidden: User \"system:serviceaccount:rocketops:rocketops\" cannot {} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                            t.rt.qualified(),
                            t.name.as_deref().unwrap_or(""),
                            verb_of(&method),
                            t.rt.plural,
                            t.rt.group,
                            t.namespace.as_deref().unwrap_or("")
                        ),
                    },
                    429 => ApiError::TooManyRequests {
                        message: "too many requests (fault injected)".into(),
                    },
                    422 => ApiError::Invalid {
                        kind: t.rt.kind.to_string(),
                        name: t.name.clone().unwrap_or_default(),
                        field: "spec".into(),
                        message: said.unwrap_or_else(|| "invalid (fault injected)".into()),
                    },
                    _ => ApiError::Internal {
                        message: said.unwrap_or_else(|| "internal error (fault injected)".into()),
                    },
                };
                return error_response(&e);
            }
            match handle(&sim, &method, t, &headers, &q, &body).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    }
}

/// Who is writing, as the API server names a field manager: the `fieldManager` parameter, else
/// the client's user agent up to its first `/` (`kubectl/v1.31.0 …` is `kubectl`).
fn field_manager(q: &Params, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.chars().take(128).collect();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

async fn handle(
    sim: &Arc<KubeInner>,
    method: &Method,
    t: Target,
    headers: &HeaderMap,
    q: &Params,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let rt = t.rt;
    if rt.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(ApiError::bad_request(
            "a namespace is required for this resource",
        ));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    if let Some(ns_name) = t.namespace.as_deref()
        && *method == Method::POST
        && sim
            .store()
            .get(resources::by_plural("namespaces"), "", ns_name)
            .is_err()
    {
        return Err(ApiError::NotFound {
            what: "namespaces".into(),
            name: ns_name.into(),
            kind: "namespaces".into(),
            group: String::new(),
        });
    }
    let forbidden = |verb: &str| ApiError::Forbidden {
        message: format!(
            "{} is forbidden: the simulator serves {} read-only; cannot {verb}",
            rt.qualified(),
            rt.plural
        ),
    };
    match (method.clone(), t.name.as_deref(), t.sub.as_deref()) {
        (Method::GET, None, None) => {
            let sel = Selectors::parse(
                q.get("labelSelector").map(String::as_str),
                q.get("fieldSelector").map(String::as_str),
            )?;
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return Ok(watch(
                    sim.clone(),
                    rt,
                    t.namespace.clone(),
                    sel,
                    q,
                    table::wanted(headers),
                ));
            }
            let (items, rv) = sim.store().list(rt, t.namespace.as_deref(), &sel);
            let page = super::paging::page(
                items,
                rv,
                q.get("limit").map(String::as_str),
                q.get("continue").map(String::as_str),
            )?;
            if table::wanted(headers) {
                let mut t = table::table(
                    rt,
                    &page.items,
                    &page.rv.to_string(),
                    q.get("includeObject").map(String::as_str),
                    chrono::Utc::now().timestamp(),
                );
                t["metadata"] = page.metadata();
                return Ok(json_response(200, &t));
            }
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": page.metadata(), "items": page.items}),
            ))
        }
        (Method::GET, Some(name), None) if table::wanted(headers) => {
            let o = sim.store().get(rt, &ns, name)?;
            let rv = o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let t = table::table(
                rt,
                &[o],
                &rv,
                q.get("includeObject").map(String::as_str),
                chrono::Utc::now().timestamp(),
            );
            Ok(json_response(200, &t))
        }
        (Method::GET, Some(name), None) | (Method::GET, Some(name), Some("status")) => {
            Ok(json_response(200, &sim.store().get(rt, &ns, name)?))
        }
        (Method::GET, Some(name), Some("scale")) => Ok(json_response(
            200,
            &scale_of(&sim.store().get(rt, &ns, name)?),
        )),
        (Method::GET, Some(name), Some("log")) if rt.plural == "pods" => {
            sim.store().get(rt, &ns, name)?;
            let lines = sim.pod_log(&ns, name);
            let tail = q
                .get("tailLines")
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let skip = lines.len().saturating_sub(tail);
            let mut text = lines[skip..].join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            if let Some(limit) = q.get("limitBytes").and_then(|l| l.parse::<usize>().ok()) {
                text.truncate(limit);
            }
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        (Method::POST, None, None) => {
            if rt.read_only {
                return Err(forbidden("create"));
            }
            let obj = if is_protobuf(headers) {
                protobuf_job(sim, rt, &ns, body)?
            } else {
                parse_body(body, headers)?
            };
            if q.get("dryRun").is_some() {
                let mut probe = super::store::ObjectStore::new(1);
                if rt.namespaced {
                    probe.create(
                        resources::by_plural("namespaces"),
                        "",
                        json!({"metadata": {"name": ns}}),
                    )?;
                }
                let created = probe.create(rt, &ns, obj)?;
                return Ok(json_response(201, &created));
            }
            let manager = field_manager(q, headers);
            let created = sim.store().create_by(rt, &ns, obj, &manager)?;
            sim.kick();
            Ok(json_response(201, &created))
        }
        (Method::PUT, Some(name), sub) => {
            if rt.read_only {
                return Err(forbidden("update"));
            }
            let obj = parse_body(body, headers)?;
            let updated = match sub {
                None => sim.store().update(rt, &ns, name, obj, WriteMode::Main)?,
                Some("status") => sim.store().update(rt, &ns, name, obj, WriteMode::Status)?,
                Some("scale") => set_scale(sim, rt, &ns, name, &obj)?,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown subresource {other}"
                    )));
                }
            };
            sim.kick();
            Ok(json_response(200, &updated))
        }
        (Method::PATCH, Some(name), sub) => {
            if rt.read_only {
                return Err(forbidden("patch"));
            }
            let ctype = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let current = sim.store().get(rt, &ns, name)?;
            let base = if sub == Some("scale") {
                scale_of(&current)
            } else {
                current.clone()
            };
            let mut target = base.clone();
            match ctype.as_str() {
                "application/strategic-merge-patch+json" => patch::strategic_merge(&mut target, &parse_json(body)?),
                "application/merge-patch+json" => patch::merge(&mut target, &parse_json(body)?),
                "application/json-patch+json" => patch::json_patch(&mut target, &parse_json(body)?).map_err(|e| {
                    if e.contains("test") || e.contains("Test") {
                        ApiError::Conflict { what: rt.qualified(), name: name.into(), kind: rt.plural.into(), group: rt.group.into(), message: Some(format!("the server rejected our request due to an error in our request: {e}")) }
                    } else {
                        ApiError::Invalid { kind: rt.qualified_kind(), name: name.into(), field: "patch".into(), message: e }
                    }
                })?,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    if q.get("fieldManager").is_none_or(|f| f.is_empty()) {
                        return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set"));
                    }
                    let applied = parse_body(body, headers)?;
                    patch::merge(&mut target, &applied);
                }
                other => return Err(ApiError::UnsupportedMediaType { message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})") }),
            }
            if target == base {
                return Ok(json_response(200, &base));
            }
            let updated = match sub {
                None => sim.store().update(rt, &ns, name, target, WriteMode::Main)?,
                Some("status") => sim
                    .store()
                    .update(rt, &ns, name, target, WriteMode::Status)?,
                Some("scale") => set_scale(sim, rt, &ns, name, &target)?,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown subresource {other}"
                    )));
                }
            };
            sim.kick();
            Ok(json_response(200, &updated))
        }
        (Method::DELETE, Some(name), None) => {
            if rt.read_only {
                return Err(forbidden("delete"));
            }
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body).unwrap_or(json!({}))
            };
            let policy = opts["propagationPolicy"]
                .as_str()
                .or(q.get("propagationPolicy").map(String::as_str))
                .map(str::to_string);
            let deleted = sim.store().delete(rt, &ns, name)?;
            // batch/v1 Jobs orphan their pods unless told otherwise, like the real API.
            let default_orphan = rt.plural == "jobs";
            let orphan = match policy.as_deref() {
                Some("Orphan") => true,
                Some(_) => false,
                None => default_orphan,
            };
            sim.collect_garbage(&deleted, orphan);
            if rt.plural == "namespaces" {
                sim.empty_namespace(name);
            }
            sim.kick();
            Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": deleted["metadata"]["uid"]}}),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed {
            message: format!(
                "the server does not allow this method on the requested resource ({method} {})",
                rt.plural
            ),
        }),
    }
}

/// The RBAC verb of a write.
fn verb_of(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("protobuf"))
}

/// A protobuf Job created from a CronJob: its metadata from the body, its spec from the CronJob's template.
fn protobuf_job(
    sim: &KubeInner,
    rt: &'static ResourceType,
    ns: &str,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let unsupported = || {
        ApiError::UnsupportedMediaType {
        message: "the simulator reads protobuf bodies of Namespaces, ConfigMaps, Secrets, Services, Pods, Deployments, Jobs and CronJobs; send application/json".into(),
    }
    };
    let from_cronjob = super::protobuf::decode_envelope(body).is_some_and(|(_, kind, meta)| {
        kind == "Job"
            && meta["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["kind"] == "CronJob"))
    });
    if !from_cronjob && let Some(obj) = super::protobuf::decode_object(body) {
        if obj["kind"] != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                obj["kind"].as_str().unwrap_or_default(),
                rt.kind
            )));
        }
        return Ok(obj);
    }
    let (api_version, kind, meta) =
        super::protobuf::decode_envelope(body).ok_or_else(unsupported)?;
    if rt.plural != "jobs" || kind != "Job" {
        return Err(unsupported());
    }
    let owner = meta["ownerReferences"]
        .as_array()
        .and_then(|o| o.iter().find(|r| r["kind"] == "CronJob"))
        .ok_or_else(unsupported)?;
    let cj = sim.store().get(
        resources::by_plural("cronjobs"),
        ns,
        owner["name"].as_str().unwrap_or_default(),
    )?;
    Ok(
        json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": cj["spec"]["jobTemplate"]["spec"]}),
    )
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// JSON, or YAML when the client sent YAML.
fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML: {e}")));
    }
    parse_json(body)
}

/// The `autoscaling/v1` Scale view of a Deployment or StatefulSet.
fn scale_of(obj: &Value) -> Value {
    let labels = obj["spec"]["selector"]["matchLabels"].as_object().map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",")
    });
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": labels.unwrap_or_default()}
    })
}

fn set_scale(
    sim: &KubeInner,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    scale: &Value,
) -> Result<Value, ApiError> {
    if !rt.subresources.contains(&"scale") {
        return Err(ApiError::NotFound {
            what: format!("{}/scale", rt.plural),
            name: name.into(),
            kind: rt.plural.into(),
            group: rt.group.into(),
        });
    }
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::invalid(rt, name, "spec.replicas", "Required value"))?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec.replicas",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut store = sim.store();
    let mut obj = store.get(rt, ns, name)?;
    if let Some(rv) = scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
        && rv
            != obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
    {
        return Err(ApiError::conflict(rt, name));
    }
    obj["spec"]["replicas"] = json!(replicas);
    let updated = store.update(rt, ns, name, obj, WriteMode::Main)?;
    Ok(scale_of(&updated))
}

/// Streams watch events, one JSON object per line.
fn watch(
    sim: Arc<KubeInner>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    sel: Selectors,
    q: &Params,
    as_table: bool,
) -> Response {
    let include = q.get("includeObject").cloned();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800)
        .min(3600);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    // With `as=Table`, each object goes out as a Table of one row, as the API server sends it.
    let line = move |kind: &str, obj: &Value| {
        let obj = match (as_table, kind) {
            (true, "ADDED" | "MODIFIED" | "DELETED") => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                &table::table(
                    rt,
                    std::slice::from_ref(obj),
                    rv,
                    include.as_deref(),
                    chrono::Utc::now().timestamp(),
                )
            }
            _ => obj,
        };
        Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})))
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let mut matching = std::collections::HashSet::new();
    let ns_ok = |c: &Change, ns: &Option<String>| ns.as_ref().is_none_or(|n| *n == c.namespace);
    let (mut live, expired, current_rv) = {
        let store = sim.store();
        let live = store.changes.subscribe();
        let current_rv = store.current_rv();
        let (items, _) = store.list(rt, namespace.as_deref(), &sel);
        for i in &items {
            matching.insert(key_of(i));
        }
        let mut expired = false;
        if rv_param.is_empty() || rv_param == "0" {
            for i in &items {
                initial.push(line("ADDED", i));
            }
        } else {
            match rv_param
                .parse::<u64>()
                .ok()
                .and_then(|rv| store.changes_since(rt.plural, rv))
            {
                Some(changes) => {
                    for c in changes
                        .iter()
                        .filter(|c| ns_ok(c, &namespace) && sel.matches(&c.object))
                    {
                        initial.push(line(c.kind, &c.object));
                    }
                }
                None => expired = true,
            }
        }
        (live, expired, current_rv)
    };
    let drop_token = sim.watch_drop.lock().map(|t| t.clone()).unwrap_or_default();
    let open = super::OpenWatch::new(&sim, rt.plural, namespace.clone());
    tokio::spawn(async move {
        let _open = open;
        if expired {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": format!("too old resource version: {rv_param} ({current_rv})"), "reason": "Expired", "code": 410});
            let _ = tx.send(Ok(line("ERROR", &status))).await;
            return;
        }
        for b in initial {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        bookmark.tick().await;
        let mut last_rv = current_rv;
        loop {
            tokio::select! {
                c = live.recv() => {
                    let c = match c {
                        Ok(c) => c,
                        // A slow watcher is cut off; it resumes from its last resourceVersion.
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                    };
                    last_rv = c.rv;
                    if c.plural != rt.plural || !ns_ok(&c, &namespace) {
                        continue;
                    }
                    // Keyed by namespace and name: a cluster-wide watch sees the same name in many namespaces.
                    let name = key_of(&c.object);
                    let now_matches = sel.matches(&c.object);
                    let was = matching.contains(&name);
                    let kind = match (c.kind, was, now_matches) {
                        ("DELETED", true, _) => { matching.remove(&name); "DELETED" }
                        ("DELETED", false, _) => continue,
                        (_, false, true) => { matching.insert(name); "ADDED" }
                        (_, true, true) => c.kind,
                        (_, true, false) => { matching.remove(&name); "DELETED" }
                        (_, false, false) => continue,
                    };
                    if tx.send(Ok(line(kind, &c.object))).await.is_err() {
                        return;
                    }
                }
                _ = bookmark.tick(), if bookmarks => {
                    let b = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &b))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = drop_token.cancelled() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `namespace/name`: an object's identity within one resource.
fn key_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn handle_of(sim: &Arc<KubeInner>) -> super::KubeSim {
    super::KubeSim { inner: sim.clone() }
}

#[derive(serde::Deserialize)]
struct FailWrites {
    count: u32,
    code: u16,
}

async fn ctl_fail_writes(State(sim): Sim, axum::Json(b): axum::Json<FailWrites>) -> StatusCode {
    handle_of(&sim).fail_next_writes(b.count, b.code);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct FailLists {
    resource: String,
    count: u32,
    code: u16,
}

async fn ctl_fail_lists(State(sim): Sim, axum::Json(b): axum::Json<FailLists>) -> StatusCode {
    handle_of(&sim).fail_next_lists(&b.resource, b.count, b.code);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct PartitionBody {
    agent: String,
    /// `drop`, `reject`, or `heal` (or absent) to end it.
    mode: Option<String>,
}

async fn ctl_partition(State(sim): Sim, axum::Json(b): axum::Json<PartitionBody>) -> Response {
    let mode = match b.mode.as_deref() {
        Some("drop") => Some(Partition::Drop),
        Some("reject") => Some(Partition::Reject),
        None | Some("heal") => None,
        Some(other) => {
            return error_response(&ApiError::BadRequest {
                message: format!("mode `{other}`: use drop, reject or heal"),
            });
        }
    };
    handle_of(&sim).partition(&b.agent, mode);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct AgentDelay {
    agent: String,
    ms: u64,
}

async fn ctl_agent_delay(State(sim): Sim, axum::Json(b): axum::Json<AgentDelay>) -> StatusCode {
    handle_of(&sim).set_agent_delay(&b.agent, Duration::from_millis(b.ms));
    StatusCode::NO_CONTENT
}

async fn ctl_writes(State(sim): Sim) -> Response {
    json_response(200, &json!(handle_of(&sim).write_log()))
}

#[derive(serde::Deserialize)]
struct Delay {
    ms: u64,
}

async fn ctl_delay(State(sim): Sim, axum::Json(b): axum::Json<Delay>) -> StatusCode {
    handle_of(&sim).set_delay(Duration::from_millis(b.ms));
    StatusCode::NO_CONTENT
}

async fn ctl_drop_watches(State(sim): Sim) -> StatusCode {
    handle_of(&sim).drop_watches();
    StatusCode::NO_CONTENT
}

async fn ctl_compact(State(sim): Sim) -> StatusCode {
    handle_of(&sim).compact();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct Tags {
    repo: String,
    tags: Vec<String>,
}

async fn ctl_tags(State(sim): Sim, axum::Json(b): axum::Json<Tags>) -> StatusCode {
    let tags: Vec<&str> = b.tags.iter().map(String::as_str).collect();
    handle_of(&sim).set_known_tags(&b.repo, &tags);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct Script {
    prefix: String,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    termination_message: String,
    #[serde(default)]
    log: Vec<String>,
    #[serde(default = "default_runtime")]
    runtime_ms: u64,
}

fn default_runtime() -> u64 {
    200
}

async fn ctl_job_script(State(sim): Sim, axum::Json(b): axum::Json<Script>) -> StatusCode {
    handle_of(&sim).script_job(
        &b.prefix,
        super::JobScript {
            runtime: Duration::from_millis(b.runtime_ms),
            exit_code: b.exit_code,
            termination_message: b.termination_message,
            log: b.log,
        },
    );
    StatusCode::NO_CONTENT
}

/// The managed app as seen through its route: `/api/info` answers with the running image's tag
/// when the Deployment has available replicas (503 otherwise, 500 when failing on purpose).
async fn app_info(
    State(sim): Sim,
    axum::extract::Path((namespace, deployment)): axum::extract::Path<(String, String)>,
) -> Response {
    let Ok(d) = sim
        .store()
        .get(resources::by_plural("deployments"), &namespace, &deployment)
    else {
        return json_response(404, &json!({"success": false, "error": "no such app"}));
    };
    if d["status"]["availableReplicas"].as_i64().unwrap_or(0) < 1 {
        return json_response(503, &json!({"success": false, "error": "no ready pods"}));
    }
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tag = super::split_image(&image).1.to_string();
    let failing = sim
        .app_failing
        .lock()
        .ok()
        .and_then(|f| f.get(&(namespace.clone(), deployment.clone())).cloned())
        .is_some_and(|only| only.is_none_or(|v| v == tag));
    if failing {
        return json_response(
            500,
            &json!({"success": false, "error": "Internal server error (fault injected)"}),
        );
    }
    json_response(200, &json!({"version": tag, "success": true}))
}

#[derive(serde::Deserialize)]
struct AppFail {
    namespace: String,
    deployment: String,
    fail: bool,
    #[serde(default)]
    version: Option<String>,
}

async fn ctl_app_fail(State(sim): Sim, axum::Json(b): axum::Json<AppFail>) -> StatusCode {
    handle_of(&sim).set_app_failing(&b.namespace, &b.deployment, b.fail, b.version.as_deref());
    StatusCode::NO_CONTENT
}
