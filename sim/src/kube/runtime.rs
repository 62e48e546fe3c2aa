//! The Kubernetes simulator's local Job runtime: a Job pod whose images are all on a configured list runs its containers' command and args as local processes (env with Secrets and ConfigMaps, volumes as directories, the termination message file, logs), so Job templates are proven by really running them.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

/// Which Jobs run for real, and where their volumes live.
#[derive(Debug, Clone, Default)]
pub struct LocalJobs {
    /// Image patterns: `postgres:*` (any tag of a repository), `rclone/rclone:1.60`, or `*`.
    pub images: Vec<String>,
    /// Volumes live here: a PersistentVolumeClaim at `pvc/<namespace>/<claim>`, a pod's own
    /// volumes and files under `pods/<the first 12 hex digits of its uid>`. Keep it short: a Unix
    /// socket in a volume must fit in 107 bytes.
    pub root: PathBuf,
    /// Directories put before the simulator's own `PATH` (for tools not on it, such as
    /// PostgreSQL's server binaries).
    pub path: Vec<PathBuf>,
}

impl LocalJobs {
    /// Whether containers of `image` run locally.
    pub fn runs(&self, image: &str) -> bool {
        self.images.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => image == p,
        })
    }

    /// The directory that holds a PersistentVolumeClaim's files.
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        self.root.join("pvc").join(namespace).join(claim)
    }

    /// Whether every container of `pod` (init containers included) runs locally.
    pub fn runs_pod(&self, pod: &Value) -> bool {
        let images: Vec<&str> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
            .map(|c| c["image"].as_str().unwrap_or_default())
            .collect();
        !images.is_empty() && images.iter().all(|i| self.runs(i))
    }
}

/// One container, ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    pub name: String,
    pub image: String,
    pub init: bool,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Where the container writes its termination message.
    pub termination: PathBuf,
    /// `FallbackToLogsOnError`: a failed container with no message reports its last log lines.
    pub fallback_to_logs: bool,
}

/// A pod, ready to run: its directories, files and containers in order.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub dir: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub containers: Vec<ContainerRun>,
    pub deadline: Option<Duration>,
}

/// How one container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub name: String,
    pub image: String,
    pub init: bool,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

/// How a pod's run ended: every container that ran, and their logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub containers: Vec<Finished>,
    pub logs: Vec<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.exit_code == 0)
    }
}

/// Runs in progress (`None`) and finished, by pod uid.
#[derive(Default)]
pub(crate) struct Runs {
    pub by_pod: Mutex<HashMap<String, Option<Outcome>>>,
}

/// A characters that may appear inside a path: a mount path is only replaced where it stands
/// as a whole path, not inside a longer one.
fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Pure: `s` with each mount path (longest first) replaced by its local directory where it
/// stands as a whole path or a path's leading part (`/backup`, `/backup/x`, `"/backup"`), never
/// inside another word (`/backups`, `a/backup`).
pub fn rewrite(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut sorted: Vec<&(String, PathBuf)> = mounts.iter().collect();
    sorted.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < s.len() {
        let before = s[..i].chars().next_back();
        let starts_path = before.is_none_or(|c| !path_char(c) && c != '/');
        if starts_path {
            for (m, local) in &sorted {
                if s[i..].starts_with(m.as_str()) {
                    let after = s[i + m.len()..].chars().next();
                    if after.is_none_or(|c| !path_char(c)) {
                        out.push_str(&local.to_string_lossy());
                        i += m.len();
                        continue 'scan;
                    }
                }
            }
        }
        let c = s[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

/// A key of a Secret or ConfigMap, decoded.
fn key_of(obj: &Value, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = obj["data"][key].as_str() {
        if obj["kind"] == "ConfigMap" {
            return Some(v.as_bytes().to_vec());
        }
        return base64::engine::general_purpose::STANDARD.decode(v).ok();
    }
    if let Some(v) = obj["stringData"][key].as_str() {
        return Some(v.as_bytes().to_vec());
    }
    obj["binaryData"][key]
        .as_str()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
}

/// Every key of a Secret or ConfigMap, decoded.
fn keys_of(obj: &Value) -> Vec<(String, Vec<u8>)> {
    ["data", "stringData", "binaryData"]
        .iter()
        .flat_map(|f| obj[f].as_object().into_iter().flatten())
        .filter_map(|(k, _)| key_of(obj, k).map(|v| (k.clone(), v)))
        .collect()
}

/// `$(VAR)` references to earlier variables expanded, `$$(VAR)` left as `$(VAR)`, as the kubelet does.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(t) = tail.strip_prefix("$$(") {
            out.push_str("$(");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| *k == t[..end])
        {
            out.push_str(v);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Pure: the plan to run `pod` (of `job`), looking Secrets and ConfigMaps up with `lookup`
/// (`kind`, namespace, name). An error says why the pod cannot start, as the kubelet's
/// `CreateContainerConfigError` does.
pub fn plan(
    pod: &Value,
    job: Option<&Value>,
    lookup: &dyn Fn(&str, &str, &str) -> Option<Value>,
    rt: &LocalJobs,
    host_path: &str,
) -> Result<PodPlan, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or(name);
    // Paths stay short: a Unix socket in a volume (a throwaway database's) allows 107 bytes.
    let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
    let dir = rt.root.join("pods").join(short);
    let mut dirs = vec![dir.clone(), dir.join("home")];
    let mut files = Vec::new();
    // Volumes as directories.
    let mut volumes: HashMap<String, PathBuf> = HashMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        let local = if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            if lookup("persistentvolumeclaims", ns, claim).is_none() {
                return Err(format!(
                    "persistentvolumeclaim \"{claim}\" not found (volume {vname})"
                ));
            }
            rt.claim_dir(ns, claim)
        } else {
            let local = dir.join("volumes").join(&vname);
            let source = if let Some(s) = v["secret"]["secretName"].as_str() {
                Some(("secrets", s, v["secret"]["optional"] == true))
            } else {
                v["configMap"]["name"]
                    .as_str()
                    .map(|s| ("configmaps", s, v["configMap"]["optional"] == true))
            };
            if let Some((plural, source, optional)) = source {
                match lookup(plural, ns, source) {
                    Some(obj) => {
                        for (k, bytes) in keys_of(&obj) {
                            files.push((local.join(k), bytes));
                        }
                    }
                    None if optional => {}
                    None => return Err(format!("{plural} \"{source}\" not found")),
                }
            }
            local
        };
        dirs.push(local.clone());
        volumes.insert(vname, local);
    }
    let deadline = job
        .and_then(|j| j["spec"]["activeDeadlineSeconds"].as_u64())
        .map(Duration::from_secs);
    let mut containers = Vec::new();
    for (init, key) in [(true, "initContainers"), (false, "containers")] {
        for c in pod["spec"][key].as_array().into_iter().flatten() {
            let cname = c["name"].as_str().unwrap_or_default().to_string();
            let cdir = dir.join("containers").join(&cname);
            dirs.push(cdir.clone());
            let termination = cdir.join("termination-log");
            let mut mounts: Vec<(String, PathBuf)> = Vec::new();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vname = m["name"].as_str().unwrap_or_default();
                let Some(local) = volumes.get(vname) else {
                    return Err(format!("container {cname}: no volume named {vname}"));
                };
                let local = match m["subPath"].as_str().filter(|s| !s.is_empty()) {
                    Some(sub) => {
                        let p = local.join(sub);
                        dirs.push(p.clone());
                        p
                    }
                    None => local.clone(),
                };
                let at = m["mountPath"].as_str().unwrap_or_default().to_string();
                mounts.push((at, local));
            }
            mounts.push((
                c["terminationMessagePath"]
                    .as_str()
                    .unwrap_or("/dev/termination-log")
                    .to_string(),
                termination.clone(),
            ));
            let mut env: Vec<(String, String)> = vec![
                (
                    "PATH".into(),
                    rt.path
                        .iter()
                        .map(|p| p.to_string_lossy().into_owned())
                        .chain(std::iter::once(host_path.to_string()))
                        .collect::<Vec<_>>()
                        .join(":"),
                ),
                (
                    "HOME".into(),
                    dir.join("home").to_string_lossy().into_owned(),
                ),
                ("HOSTNAME".into(), name.to_string()),
            ];
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let prefix = from["prefix"].as_str().unwrap_or_default();
                for (plural, field) in [("secrets", "secretRef"), ("configmaps", "configMapRef")] {
                    if let Some(src) = from[field]["name"].as_str() {
                        match lookup(plural, ns, src) {
                            Some(obj) => {
                                for (k, v) in keys_of(&obj) {
                                    env.push((
                                        format!("{prefix}{k}"),
                                        String::from_utf8_lossy(&v).into_owned(),
                                    ));
                                }
                            }
                            None if from[field]["optional"] == true => {}
                            None => return Err(format!("{plural} \"{src}\" not found")),
                        }
                    }
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let key = e["name"].as_str().unwrap_or_default().to_string();
                let value = if let Some(v) = e["value"].as_str() {
                    Some(expand(v, &env))
                } else if let Some(r) = e["valueFrom"].as_object() {
                    let from = |plural: &str, field: &str| -> Result<Option<String>, String> {
                        let r = &r[field];
                        let src = r["name"].as_str().unwrap_or_default();
                        let k = r["key"].as_str().unwrap_or_default();
                        let got = lookup(plural, ns, src).and_then(|o| key_of(&o, k));
                        match got {
                            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
                            None if r["optional"] == true => Ok(None),
                            None => Err(format!(
                                "couldn't find key {k} in {plural} {ns}/{src} (env {key})"
                            )),
                        }
                    };
                    if r.contains_key("secretKeyRef") {
                        from("secrets", "secretKeyRef")?
                    } else if r.contains_key("configMapKeyRef") {
                        from("configmaps", "configMapKeyRef")?
                    } else {
                        match r["fieldRef"]["fieldPath"].as_str() {
                            Some("metadata.name") => Some(name.to_string()),
                            Some("metadata.namespace") => Some(ns.to_string()),
                            Some("metadata.uid") => Some(uid.to_string()),
                            _ => None,
                        }
                    }
                } else {
                    Some(String::new())
                };
                if let Some(v) = value {
                    env.retain(|(k, _)| *k != key);
                    env.push((key, rewrite(&v, &mounts)));
                }
            }
            let argv: Vec<String> = ["command", "args"]
                .iter()
                .flat_map(|k| c[k].as_array().into_iter().flatten())
                .filter_map(|a| a.as_str())
                .map(|a| rewrite(&expand(a, &env), &mounts))
                .collect();
            if c["command"].as_array().is_none_or(|a| a.is_empty()) {
                return Err(format!(
                    "container {cname}: the local runtime needs `command` (it cannot know the image's entrypoint)"
                ));
            }
            let cwd = c["workingDir"]
                .as_str()
                .map(|w| PathBuf::from(rewrite(w, &mounts)))
                .unwrap_or_else(|| cdir.clone());
            containers.push(ContainerRun {
                name: cname,
                image: c["image"].as_str().unwrap_or_default().to_string(),
                init,
                argv,
                env,
                cwd,
                termination,
                fallback_to_logs: c["terminationMessagePolicy"] == "FallbackToLogsOnError",
            });
        }
    }
    Ok(PodPlan {
        dir,
        dirs,
        files,
        containers,
        deadline,
    })
}

/// The unprivileged user a root simulator runs containers as (`nobody`), as `runAsNonRoot` asks.
const NOBODY: u32 = 65_534;

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chown_tree(p: &Path, id: u32) {
    let _ = std::os::unix::fs::chown(p, Some(id), Some(id));
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            chown_tree(&e.path(), id);
        }
    }
}

/// Runs a planned pod to its end (blocking): init containers, then containers, in order; stops
/// at the first that fails or when the Job's deadline passes.
pub fn execute(plan: &PodPlan) -> Outcome {
    let mut out = Outcome::default();
    let root = as_root();
    for d in &plan.dirs {
        if let Err(e) = std::fs::create_dir_all(d) {
            out.logs.push(format!("cannot create {}: {e}", d.display()));
        }
    }
    for (f, bytes) in &plan.files {
        if let Some(parent) = f.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(f, bytes) {
            out.logs.push(format!("cannot write {}: {e}", f.display()));
        }
    }
    if root {
        for d in &plan.dirs {
            chown_tree(d, NOBODY);
        }
    }
    let started = Instant::now();
    for c in &plan.containers {
        let left = plan.deadline.map(|d| d.saturating_sub(started.elapsed()));
        let finished = run_container(c, left, root, &mut out.logs);
        let failed = finished.exit_code != 0;
        out.containers.push(finished);
        if failed {
            break;
        }
    }
    out
}

fn run_container(
    c: &ContainerRun,
    deadline: Option<Duration>,
    root: bool,
    logs: &mut Vec<String>,
) -> Finished {
    let done = |exit_code: i32, reason: &str, message: String| Finished {
        name: c.name.clone(),
        image: c.image.clone(),
        init: c.init,
        exit_code,
        reason: reason.into(),
        message,
    };
    let log_path = c.termination.with_file_name("output.log");
    let Ok(log_file) = std::fs::File::create(&log_path) else {
        return done(
            128,
            "ContainerCannotRun",
            "cannot create the log file".into(),
        );
    };
    let mut cmd = std::process::Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..])
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&c.cwd)
        .stdin(std::process::Stdio::null())
        .stderr(match log_file.try_clone() {
            Ok(f) => std::process::Stdio::from(f),
            Err(_) => std::process::Stdio::null(),
        })
        .stdout(log_file);
    if root {
        use std::os::unix::process::CommandExt;
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let mut child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return done(128, "StartError", format!("exec: \"{}\": {e}", c.argv[0]));
        }
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if deadline.is_some_and(|d| start.elapsed() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&log_path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    // The kubelet keeps at most 4096 bytes of a termination message.
    let mut message = std::fs::read(&c.termination)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    logs.extend(lines.iter().cloned());
    let Some(status) = status else {
        return done(
            137,
            "DeadlineExceeded",
            "the Job's activeDeadlineSeconds passed".into(),
        );
    };
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(9)
    });
    if code != 0 && message.is_empty() && c.fallback_to_logs {
        let tail = lines.len().saturating_sub(80);
        message = lines[tail..].join("\n");
    }
    let reason = if code == 0 { "Completed" } else { "Error" };
    done(code, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt() -> LocalJobs {
        LocalJobs {
            images: vec!["postgres:*".into(), "busybox:1.36".into()],
            root: PathBuf::from("/r"),
            path: vec![PathBuf::from("/opt/pg/bin")],
        }
    }

    #[test]
    fn image_patterns_match_a_repository_with_any_tag_or_one_exact_image() {
        let rt = rt();
        assert!(rt.runs("postgres:16"));
        assert!(rt.runs("postgres:16-alpine"));
        assert!(rt.runs("busybox:1.36"));
        assert!(!rt.runs("busybox:1.37"));
        assert!(!rt.runs("mongo:7.0"));
    }

    #[test]
    fn a_mount_path_is_replaced_only_where_it_stands_as_a_path() {
        let m = vec![
            ("/backup".to_string(), PathBuf::from("/r/pvc/b")),
            ("/dev/termination-log".to_string(), PathBuf::from("/r/t")),
        ];
        assert_eq!(
            rewrite(
                "cd /backup && ls /backup/x \"/backup\" > /dev/termination-log",
                &m
            ),
            "cd /r/pvc/b && ls /r/pvc/b/x \"/r/pvc/b\" > /r/t"
        );
        assert_eq!(rewrite("--log=/backup/l", &m), "--log=/r/pvc/b/l");
        assert_eq!(
            rewrite("/backups a/backup x/backup", &m),
            "/backups a/backup x/backup"
        );
        assert_eq!(rewrite("é /backup", &m), "é /r/pvc/b");
    }

    #[test]
    fn variables_expand_as_the_kubelet_expands_them() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)-$$(A)-$(B)-$", &env), "1-$(A)-$(B)-$");
    }

    #[test]
    fn a_plan_resolves_secrets_mounts_the_claim_and_orders_init_containers_first() {
        let pod = json!({
            "metadata": {"name": "j-1", "namespace": "pg", "uid": "u1"},
            "spec": {
                "initContainers": [{"name": "dump", "image": "postgres:16", "command": ["/bin/sh", "-c"],
                    "args": ["echo $PG_URI > /backup/x"],
                    "env": [{"name": "PG_URI", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "uri"}}}],
                    "volumeMounts": [{"name": "b", "mountPath": "/backup"}]}],
                "containers": [{"name": "up", "image": "postgres:16", "command": ["/bin/true"],
                    "env": [{"name": "N", "value": "$(HOSTNAME)"}]}],
                "volumes": [{"name": "b", "persistentVolumeClaim": {"claimName": "backups"}}]
            }
        });
        let lookup = |plural: &str, _: &str, name: &str| -> Option<Value> {
            match (plural, name) {
                ("secrets", "pg") => {
                    Some(json!({"kind": "Secret", "data": {"uri": "cG9zdGdyZXM6Ly94"}}))
                }
                ("persistentvolumeclaims", "backups") => Some(json!({})),
                _ => None,
            }
        };
        let job = json!({"spec": {"activeDeadlineSeconds": 60}});
        let p = plan(&pod, Some(&job), &lookup, &rt(), "/usr/bin").unwrap();
        assert_eq!(p.deadline, Some(Duration::from_secs(60)));
        let (first, second) = (&p.containers[0], &p.containers[1]);
        assert!(first.init && !second.init);
        assert_eq!(
            first.argv,
            ["/bin/sh", "-c", "echo $PG_URI > /r/pvc/pg/backups/x"]
        );
        assert!(
            first
                .env
                .contains(&("PG_URI".into(), "postgres://x".into()))
        );
        assert!(
            first
                .env
                .contains(&("PATH".into(), "/opt/pg/bin:/usr/bin".into()))
        );
        assert!(second.env.contains(&("N".into(), "j-1".into())));
        // A missing Secret stops the pod before it starts, naming what is missing.
        let none = |plural: &str, _: &str, _: &str| -> Option<Value> {
            (plural == "persistentvolumeclaims").then(|| json!({}))
        };
        let err = plan(&pod, None, &none, &rt(), "/usr/bin").unwrap_err();
        assert!(
            err.contains("couldn't find key uri in secrets pg/pg"),
            "{err}"
        );
    }

    #[test]
    fn a_pod_runs_its_containers_in_order_and_reports_exit_codes_messages_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        // A root test runs its containers as nobody, who must reach the folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = LocalJobs {
            images: vec!["*".into()],
            root: dir.path().to_path_buf(),
            path: vec![],
        };
        let pod = json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "u2"},
            "spec": {
                "initContainers": [{"name": "a", "image": "x", "command": ["/bin/sh", "-c", "echo first; echo one > /data/f"],
                    "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                "containers": [
                    {"name": "b", "image": "x", "command": ["/bin/sh", "-c", "echo second; printf '{\"n\":%s}' \"$(cat /data/f | wc -c)\" > /dev/termination-log"],
                     "volumeMounts": [{"name": "d", "mountPath": "/data"}]},
                    {"name": "c", "image": "x", "command": ["/bin/sh", "-c", "echo broken >&2; exit 3"],
                     "terminationMessagePolicy": "FallbackToLogsOnError"},
                    {"name": "d", "image": "x", "command": ["/bin/sh", "-c", "echo never"]}],
                "volumes": [{"name": "d", "emptyDir": {}}]
            }
        });
        let p = plan(
            &pod,
            None,
            &|_: &str, _: &str, _: &str| None,
            &rt,
            "/usr/bin:/bin",
        )
        .unwrap();
        let o = execute(&p);
        let got: Vec<(&str, i32, &str)> = o
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.exit_code, c.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [("a", 0, ""), ("b", 0, "{\"n\":4}"), ("c", 3, "broken")]
        );
        assert_eq!(o.logs, ["first", "second", "broken"]);
        assert!(!o.succeeded());
    }
}
