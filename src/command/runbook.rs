//! Runbook commands declared in `commands/*.toml`: name, help, typed parameters, where and by whom, and the Job template they run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cluster::jobs::render_job_template;
use crate::config::{key_at_offset, line_col, span_of_key};

/// A parameter's type; values are checked at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    /// An image tag (or image reference where the environment allows it).
    Version,
    Integer {
        min: i64,
        max: i64,
    },
    Choice {
        values: Vec<String>,
    },
    /// Letters, digits, `-`, `_`, `.`.
    Word,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamType,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

/// A runbook command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookSpec {
    pub name: String,
    pub summary: String,
    /// Environments it may run in (empty: all).
    pub environments: Vec<String>,
    /// Who may run it (empty: whoever the environment's policy allows).
    pub roles: Vec<String>,
    pub users: Vec<String>,
    pub confirm: bool,
    pub params: Vec<ParamSpec>,
    /// The Job manifest (YAML) with `${…}` placeholders.
    pub job: String,
    /// Where it was defined.
    pub file: PathBuf,
}

impl RunbookSpec {
    pub fn usage(&self) -> String {
        let mut u = format!("{} ENV", self.name);
        for p in &self.params {
            let n = p.name.to_uppercase();
            if p.required && p.default.is_none() {
                u.push_str(&format!(" {n}"));
            } else {
                u.push_str(&format!(" [{n}]"));
            }
        }
        u
    }

    /// Placeholders always available to the template besides the parameters.
    pub const BUILTIN_PLACEHOLDERS: &'static [&'static str] = &["env", "namespace", "image", "op"];
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: String,
    summary: String,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    params: Vec<RawParam>,
    job: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
}

fn yes() -> bool {
    true
}

/// Why a runbook file is invalid: names the file, the field and (where known) the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RunbookError {
    pub file: String,
    pub field: String,
    pub line: Option<usize>,
    pub message: String,
}

const RESERVED: &[&str] = &[
    "deploy", "rollback", "scale", "backup", "restore", "verify", "status", "history", "lock",
    "unlock", "cancel", "approve", "confirm", "schedule", "help", "ping",
];

/// Parses and validates one runbook file's text.
pub fn parse_runbook(
    file: &Path,
    src: &str,
    env_names: &[String],
) -> Result<RunbookSpec, RunbookError> {
    let fname = file.display().to_string();
    let err = |field: &str, message: String| RunbookError {
        file: fname.clone(),
        field: field.to_string(),
        line: span_of_key(src, field).map(|o| line_col(src, o).0),
        message,
    };
    let raw: RawRunbook = toml::from_str(src).map_err(|e| {
        let (field, line) = match e.span() {
            Some(s) => (key_at_offset(src, s.start), Some(line_col(src, s.start).0)),
            None => (String::new(), None),
        };
        RunbookError {
            file: fname.clone(),
            field,
            line,
            message: e.message().trim().to_string(),
        }
    })?;
    if !raw
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || raw.name.is_empty()
        || raw.name.len() > 32
    {
        return Err(err(
            "name",
            format!(
                "`{}` must be 1 to 32 lowercase letters, digits or `-`",
                raw.name
            ),
        ));
    }
    if RESERVED.contains(&raw.name.as_str()) {
        return Err(err("name", format!("`{}` is a built-in command", raw.name)));
    }
    for e in &raw.environments {
        if !env_names.is_empty() && !env_names.contains(e) {
            return Err(err(
                "environments",
                format!(
                    "`{e}` is not a configured environment ({})",
                    env_names.join(", ")
                ),
            ));
        }
    }
    let mut params = Vec::new();
    for (i, p) in raw.params.iter().enumerate() {
        let field = format!("params[{i}]");
        if !p
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            || p.name.is_empty()
        {
            return Err(err(
                &field,
                format!("name `{}` must be lowercase letters, digits or `_`", p.name),
            ));
        }
        if RunbookSpec::BUILTIN_PLACEHOLDERS.contains(&p.name.as_str()) {
            return Err(err(
                &field,
                format!("name `{}` is reserved for the template", p.name),
            ));
        }
        let kind = match p.kind.as_str() {
            "version" => ParamType::Version,
            "integer" => ParamType::Integer {
                min: p.min.unwrap_or(i64::MIN),
                max: p.max.unwrap_or(i64::MAX),
            },
            "choice" if !p.values.is_empty() => ParamType::Choice {
                values: p.values.clone(),
            },
            "choice" => return Err(err(&field, "a `choice` parameter needs `values`".into())),
            "word" => ParamType::Word,
            other => {
                return Err(err(
                    &field,
                    format!("type `{other}` is not one of version, integer, choice, word"),
                ));
            }
        };
        params.push(ParamSpec {
            name: p.name.clone(),
            kind,
            description: p.description.clone(),
            required: p.required,
            default: p.default.clone(),
        });
    }
    // The template must render to a Job with sample values.
    let mut sample: BTreeMap<String, String> = BTreeMap::new();
    for b in RunbookSpec::BUILTIN_PLACEHOLDERS {
        sample.insert((*b).into(), format!("sample-{b}"));
    }
    sample.insert("image".into(), "registry.example.org/app".into());
    for p in &params {
        let v = match &p.kind {
            ParamType::Version => "1.0.0".to_string(),
            ParamType::Integer { min, .. } => (*min).max(0).to_string(),
            ParamType::Choice { values } => values[0].clone(),
            ParamType::Word => "sample".to_string(),
        };
        sample.insert(p.name.clone(), v);
    }
    render_job_template(&raw.name, &raw.job, &sample).map_err(|e| err("job", e.to_string()))?;
    Ok(RunbookSpec {
        name: raw.name,
        summary: raw.summary,
        environments: raw.environments,
        roles: raw.roles,
        users: raw.users,
        confirm: raw.confirm,
        params,
        job: raw.job,
        file: file.to_path_buf(),
    })
}

/// Loads every `*.toml` in `dir` (a missing directory has none); all problems are reported.
/// The runbook files shipped in `commands/`, built into the binary (the sandbox uses them when it
/// is started away from a checkout).
pub const BUILT_IN: &[(&str, &str)] =
    &[("migrate.toml", include_str!("../../commands/migrate.toml"))];

pub fn load_dir(dir: &Path, env_names: &[String]) -> Result<Vec<RunbookSpec>, Vec<RunbookError>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut specs: Vec<RunbookSpec> = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let src = match std::fs::read_to_string(&p) {
            Ok(s) => s,
            Err(e) => {
                errors.push(RunbookError {
                    file: p.display().to_string(),
                    field: String::new(),
                    line: None,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match parse_runbook(&p, &src, env_names) {
            Ok(s) if specs.iter().any(|o| o.name == s.name) => errors.push(RunbookError {
                file: p.display().to_string(),
                field: "name".into(),
                line: None,
                message: format!("`{}` is defined twice", s.name),
            }),
            Ok(s) => specs.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATE: &str = r#"
name = "migrate"
summary = "runs the schema migration for a version"
environments = ["test", "prod"]
roles = ["ops"]
confirm = true
job = """
apiVersion: batch/v1
kind: Job
metadata:
  generateName: migrate-
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: ${image}:${version}
"""

[[params]]
name = "version"
type = "version"
description = "the version to migrate to"
"#;

    fn envs() -> Vec<String> {
        vec!["dev".into(), "test".into(), "prod".into()]
    }

    #[test]
    fn a_valid_runbook_loads_with_its_usage() {
        let spec = parse_runbook(Path::new("commands/migrate.toml"), MIGRATE, &envs()).unwrap();
        assert_eq!(spec.usage(), "migrate ENV VERSION");
        assert!(spec.confirm);
        assert_eq!(spec.roles, vec!["ops"]);
    }

    #[test]
    fn an_invalid_template_names_the_file_and_field() {
        let src = "name = \"oops\"\nsummary = \"x\"\njob = \"kind: Job\\nspec: [1]\\n\"\n";
        let e = parse_runbook(Path::new("commands/oops.toml"), src, &envs()).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.field.as_str(), e.line),
            ("commands/oops.toml", "job", Some(3))
        );
    }

    #[test]
    fn an_unknown_field_names_its_line() {
        let src = "name = \"x\"\nsummary = \"x\"\nwho = 1\njob = \"\"\n";
        let e = parse_runbook(Path::new("c.toml"), src, &envs()).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("who"), "{e}");
    }

    #[test]
    fn the_runbooks_shipped_in_commands_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("commands");
        let specs = load_dir(&dir, &envs()).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(specs.iter().any(|s| s.name == "migrate"));
    }

    #[test]
    fn a_builtin_name_or_unknown_environment_is_refused() {
        let e = parse_runbook(
            Path::new("c.toml"),
            "name = \"deploy\"\nsummary = \"x\"\njob = \"\"\n",
            &envs(),
        )
        .unwrap_err();
        assert_eq!(e.field, "name");
        let e = parse_runbook(
            Path::new("c.toml"),
            "name = \"m\"\nsummary = \"x\"\nenvironments = [\"staging\"]\njob = \"\"\n",
            &envs(),
        )
        .unwrap_err();
        assert_eq!(e.field, "environments");
    }
}
