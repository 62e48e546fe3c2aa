//! The backup, restore, verify and prune Job templates: the files in `commands/backup/` (or the copies built into the binary), their placeholders, and rendering them for an environment.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::batch::v1::Job;

use crate::cluster::jobs::{self, TemplateError};
use crate::config::{Config, DbEngine, EnvironmentConfig};
use crate::store::OpRecord;

/// Which template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backup,
    Restore,
    Verify,
    Prune,
    /// A backup's files, encrypted, into the off-site bucket.
    OffsiteCopy,
    /// A backup's files from the off-site bucket onto the volume.
    OffsiteFetch,
    /// Off-site copies the retention plan drops.
    OffsitePrune,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Backup, Kind::Restore, Kind::Verify, Kind::Prune];
    pub const OFFSITE: [Kind; 3] = [Kind::OffsiteCopy, Kind::OffsiteFetch, Kind::OffsitePrune];

    /// The file name under `commands/backup/`.
    pub fn file(self, engine: DbEngine) -> String {
        match self {
            Kind::Backup => format!("{}-backup.yaml", engine.name()),
            Kind::Restore => format!("{}-restore.yaml", engine.name()),
            Kind::Verify => format!("{}-verify.yaml", engine.name()),
            Kind::Prune => "prune.yaml".into(),
            Kind::OffsiteCopy => "offsite-copy.yaml".into(),
            Kind::OffsiteFetch => "offsite-fetch.yaml".into(),
            Kind::OffsitePrune => "offsite-prune.yaml".into(),
        }
    }

    /// The templates an environment uses: the off-site ones only where it has `offsite`.
    pub fn used_by(e: &EnvironmentConfig) -> Vec<Kind> {
        let mut kinds = Kind::ALL.to_vec();
        if e.backup.offsite.is_some() {
            kinds.extend(Kind::OFFSITE);
        }
        kinds
    }
}

const BUILT_IN: &[(&str, &str)] = &[
    (
        "mongodb-backup.yaml",
        include_str!("../../commands/backup/mongodb-backup.yaml"),
    ),
    (
        "mongodb-restore.yaml",
        include_str!("../../commands/backup/mongodb-restore.yaml"),
    ),
    (
        "mongodb-verify.yaml",
        include_str!("../../commands/backup/mongodb-verify.yaml"),
    ),
    (
        "postgresql-backup.yaml",
        include_str!("../../commands/backup/postgresql-backup.yaml"),
    ),
    (
        "postgresql-restore.yaml",
        include_str!("../../commands/backup/postgresql-restore.yaml"),
    ),
    (
        "postgresql-verify.yaml",
        include_str!("../../commands/backup/postgresql-verify.yaml"),
    ),
    (
        "prune.yaml",
        include_str!("../../commands/backup/prune.yaml"),
    ),
    (
        "offsite-copy.yaml",
        include_str!("../../commands/backup/offsite-copy.yaml"),
    ),
    (
        "offsite-fetch.yaml",
        include_str!("../../commands/backup/offsite-fetch.yaml"),
    ),
    (
        "offsite-prune.yaml",
        include_str!("../../commands/backup/offsite-prune.yaml"),
    ),
];

/// The template's text and where it came from: `<dir>/backup/<file>` if present, else the built-in copy.
pub fn source(commands_dir: &Path, engine: DbEngine, kind: Kind) -> (String, String) {
    let file = kind.file(engine);
    let path = commands_dir.join("backup").join(&file);
    match std::fs::read_to_string(&path) {
        Ok(text) => (path.display().to_string(), text),
        Err(_) => (
            format!("{file} (built in)"),
            BUILT_IN
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, t)| t.to_string())
                .unwrap_or_default(),
        ),
    }
}

/// The placeholders every template of `env` gets; `extra` adds `backup`, `claim`, `names`.
pub fn params(
    rec: &OpRecord,
    e: &EnvironmentConfig,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let env = rec.env.as_str();
    let mut p = BTreeMap::new();
    p.insert("env".into(), env.to_string());
    p.insert("namespace".into(), e.namespace_or(env).to_string());
    p.insert("op".into(), rec.id.to_string());
    p.insert("job_suffix".into(), rec.job_suffix());
    p.insert("mark".into(), rec.mark.clone());
    p.insert("claim".into(), e.backup.claim_or(e).to_string());
    p.insert("secret".into(), e.backup.secret_or(e));
    p.insert("tools_image".into(), e.backup.tools_image().to_string());
    if let Some(o) = &e.backup.offsite {
        p.insert("offsite_endpoint".into(), o.endpoint.clone());
        p.insert("offsite_bucket".into(), o.bucket.clone());
        p.insert("offsite_prefix".into(), o.prefix_or(env));
        p.insert("offsite_region".into(), o.region.clone());
        p.insert("offsite_secret".into(), o.secret.clone());
        p.insert("offsite_key_secret".into(), o.encryption_secret.clone());
        p.insert("offsite_image".into(), o.image().to_string());
    }
    for (k, v) in extra {
        p.insert(k.to_string(), v.to_string());
    }
    p
}

/// Renders a template into a Job named `<template's name>-<op>-<mark>` (`job_suffix`).
pub fn render(
    commands_dir: &Path,
    e: &EnvironmentConfig,
    kind: Kind,
    params: &BTreeMap<String, String>,
) -> Result<Job, TemplateError> {
    let (name, text) = source(commands_dir, e.backup.engine, kind);
    let mut job = jobs::render_job_template(&name, &text, params)?;
    let base = job
        .metadata
        .name
        .take()
        .unwrap_or_else(|| kind.file(e.backup.engine).replace(".yaml", ""));
    job.metadata.name = Some(jobs::job_name(
        &base,
        params
            .get("job_suffix")
            .or_else(|| params.get("op"))
            .map(String::as_str)
            .unwrap_or("0"),
    ));
    if job.metadata.namespace.is_none() {
        job.metadata.namespace = params.get("namespace").cloned();
    }
    if let Some(op) = params.get("op") {
        job.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(jobs::OPERATION_LABEL.into(), op.clone());
    }
    Ok(job)
}

/// The values a template is rendered with when it is only checked, not run.
fn sample_params(env: &str, e: &EnvironmentConfig) -> BTreeMap<String, String> {
    let sample = OpRecord {
        id: crate::journal::OpId::new(1),
        env: env.to_string(),
        mark: "sample00mark".into(),
        ..OpRecord::default()
    };
    params(
        &sample,
        e,
        &[
            ("backup", &format!("{env}-20260101T020000Z")),
            ("names", &format!("{env}-20250101T020000Z")),
        ],
    )
}

/// The Secrets (and their keys; `None`: every key) that `env`'s Jobs read: those its rendered
/// templates reference, and its off-site store's credentials and encryption key.
pub fn referenced_secrets(
    config: &Config,
    env: &str,
    e: &EnvironmentConfig,
) -> std::collections::BTreeMap<String, Option<std::collections::BTreeSet<String>>> {
    let mut out = std::collections::BTreeMap::new();
    let p = sample_params(env, e);
    for kind in Kind::used_by(e) {
        if let Ok(job) = render(&config.bot.commands_dir, e, kind, &p)
            && let Ok(v) = serde_json::to_value(&job)
        {
            for (name, keys) in crate::redact::values::referenced_secrets(&v) {
                merge_keys(&mut out, name, keys);
            }
        }
    }
    if let Some(o) = &e.backup.offsite {
        for name in [&o.secret, &o.encryption_secret] {
            merge_keys(&mut out, name.clone(), None);
        }
    }
    out
}

fn merge_keys(
    out: &mut std::collections::BTreeMap<String, Option<std::collections::BTreeSet<String>>>,
    name: String,
    keys: Option<std::collections::BTreeSet<String>>,
) {
    match (out.get_mut(&name), keys) {
        (None, keys) => {
            out.insert(name, keys);
        }
        (Some(Some(have)), Some(more)) => have.extend(more),
        (Some(entry), None) => *entry = None,
        (Some(None), Some(_)) => {}
    }
}

/// Renders every template each environment uses with sample values (for `check-config` and start-up).
pub fn check_all(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (env, e) in &config.environments {
        for kind in Kind::used_by(e) {
            let p = sample_params(env, e);
            match render(&config.bot.commands_dir, e, kind, &p) {
                Ok(job) => {
                    let has_container = job
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .is_some_and(|s| !s.containers.is_empty());
                    if !has_container {
                        problems.push(format!(
                            "{} (environment {env}): the Job has no container",
                            source(&config.bot.commands_dir, e.backup.engine, kind).0
                        ));
                    }
                }
                Err(err) => problems.push(format!("{err} (environment {env})")),
            }
        }
    }
    problems
}

/// A backup name that is safe in a file name: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn safe_backup_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `<env>-<UTC timestamp>`, the name a backup taken now gets.
pub fn backup_name(env: &str, now_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    format!("{env}-{}", t.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_template_renders_for_both_engines_and_names_its_job_after_the_operation() {
        for engine in ["mongodb", "postgresql"] {
            let src = format!(
                "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[bot]\ncommands_dir = \"/nonexistent\"\n[environments.prod.backup]\nengine = \"{engine}\"\nclaim = \"db-backups\"\n"
            );
            let cfg = Config::from_toml(&src, Path::new("t.toml"), &|_| None).unwrap();
            assert_eq!(check_all(&cfg), Vec::<String>::new());
            let e = &cfg.environments["prod"];
            for kind in Kind::ALL {
                let rec = OpRecord {
                    id: crate::journal::OpId::new(42),
                    env: "prod".into(),
                    mark: "k3x9aqqqqqqq".into(),
                    ..OpRecord::default()
                };
                let p = params(
                    &rec,
                    e,
                    &[("backup", "prod-20261121T020000Z"), ("names", "a:b")],
                );
                let job = render(Path::new("/nonexistent"), e, kind, &p).unwrap();
                let name = job.metadata.name.clone().unwrap();
                assert!(name.ends_with("-42-k3x9a"), "{name}");
                let spec = job.spec.unwrap().template.spec.unwrap();
                let claim = spec.volumes.unwrap()[0]
                    .persistent_volume_claim
                    .clone()
                    .unwrap()
                    .claim_name;
                assert_eq!(claim, "db-backups");
                let c = &spec.containers[0];
                assert_eq!(
                    c.image.as_deref(),
                    Some(if engine == "mongodb" {
                        "mongo:7.0"
                    } else {
                        "postgres:16"
                    })
                );
                let script = c.args.as_ref().unwrap()[0].clone();
                assert!(
                    script.contains("/dev/termination-log"),
                    "{kind:?} writes its result"
                );
                if kind != Kind::Prune {
                    let env = c.env.as_ref().unwrap();
                    assert!(
                        env.iter().any(|v| v.name == "NAME"
                            && v.value.as_deref() == Some("prod-20261121T020000Z"))
                    );
                }
            }
        }
    }

    #[test]
    fn the_offsite_templates_render_where_offsite_is_configured_with_credentials_only_by_reference()
    {
        let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[bot]\ncommands_dir = \"/nonexistent\"\n[environments.prod.backup]\nclaim = \"db-backups\"\n[environments.prod.backup.offsite]\nendpoint = \"https://s3.example.org\"\nbucket = \"acme-backups\"\nsecret = \"s3-creds\"\nencryption_secret = \"s3-key\"\n";
        let cfg = Config::from_toml(src, Path::new("t.toml"), &|_| None).unwrap();
        assert_eq!(check_all(&cfg), Vec::<String>::new());
        let e = &cfg.environments["prod"];
        assert_eq!(Kind::used_by(e).len(), 7);
        let rec = OpRecord {
            id: crate::journal::OpId::new(7),
            env: "prod".into(),
            mark: "k3x9aqqqqqqq".into(),
            ..OpRecord::default()
        };
        let p = params(&rec, e, &[("backup", "prod-1"), ("names", "a:b")]);
        for kind in Kind::OFFSITE {
            let job = render(Path::new("/nonexistent"), e, kind, &p).unwrap();
            let spec = job.spec.unwrap().template.spec.unwrap();
            let c = &spec.containers[0];
            assert_eq!(c.image.as_deref(), Some("rclone/rclone:1.68"));
            let env = c.env.clone().unwrap();
            let var = |n: &str| env.iter().find(|v| v.name == n).cloned().unwrap();
            assert_eq!(
                var("RCLONE_CONFIG_SEALED_REMOTE").value.as_deref(),
                Some("store:acme-backups/prod/")
            );
            let key = var("PASSPHRASE")
                .value_from
                .unwrap()
                .secret_key_ref
                .unwrap();
            assert_eq!((key.name.as_str(), key.key.as_str()), ("s3-key", "key"));
            let id = var("RCLONE_CONFIG_STORE_ACCESS_KEY_ID").value_from.unwrap();
            assert_eq!(id.secret_key_ref.unwrap().name, "s3-creds");
        }
        // Without `offsite`, an environment has no off-site templates to check.
        let plain = Config::from_toml(&src.replace("[environments.prod.backup.offsite]\nendpoint = \"https://s3.example.org\"\nbucket = \"acme-backups\"\nsecret = \"s3-creds\"\nencryption_secret = \"s3-key\"\n", ""), Path::new("t.toml"), &|_| None).unwrap();
        assert_eq!(Kind::used_by(&plain.environments["prod"]).len(), 4);
    }

    #[test]
    fn a_template_in_the_commands_directory_overrides_the_built_in_one_and_its_errors_name_the_file()
     {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("backup")).unwrap();
        std::fs::write(
            dir.path().join("backup/mongodb-verify.yaml"),
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: v\nspec:\n  template:\n    spec:\n      containers:\n      - name: v\n        image: ${no_such_thing}\n",
        )
        .unwrap();
        let src = format!(
            "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[bot]\ncommands_dir = \"{}\"\n[environments.test]\n",
            dir.path().display()
        );
        let cfg = Config::from_toml(&src, Path::new("t.toml"), &|_| None).unwrap();
        let problems = check_all(&cfg);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("backup/mongodb-verify.yaml"),
            "{problems:?}"
        );
        assert!(problems[0].contains("`${no_such_thing}`"), "{problems:?}");
    }

    #[test]
    fn backup_names_that_could_escape_the_backup_directory_are_refused() {
        for ok in ["prod-20261121T020000Z", "mongodb-backup-manual-12", "a.b_c"] {
            assert!(safe_backup_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "../etc", "a/b", "a b", "a:b", "x;rm"] {
            assert!(!safe_backup_name(bad), "{bad}");
        }
        assert_eq!(
            backup_name("prod", 1_795_312_800_000),
            "prod-20261122T020000Z"
        );
    }
}
