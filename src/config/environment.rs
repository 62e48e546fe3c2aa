//! One managed environment's configuration (`[environments.NAME]`): its app, database, backups, off-site copies, schedules and smoke test, with their defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::policy;

/// One managed environment: where it runs and what the app is made of.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Namespace of the app (default: the environment's name).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubeconfig file; without it, the in-cluster service account, else `KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The app's Deployment.
    #[serde(default = "default_deployment")]
    pub deployment: String,
    /// The container whose image a deploy changes (default: the Deployment's name).
    #[serde(default)]
    pub container: Option<String>,
    /// The image repository; a deploy's VERSION becomes its tag.
    #[serde(default)]
    pub image: Option<String>,
    /// The database StatefulSet.
    #[serde(default = "default_database")]
    pub database: String,
    /// The backup CronJob.
    #[serde(default = "default_backup_cronjob")]
    pub backup_cronjob: String,
    /// Production: confirmation and a pre-deploy backup by default (default: named `prod*`).
    #[serde(default)]
    pub production: Option<bool>,
    /// Bounds for `scale`.
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Accept a full image reference (`registry/app:tag`) as a deploy version, not only a tag.
    #[serde(default)]
    pub allow_image_refs: bool,
    /// Who may do what here.
    #[serde(default)]
    pub policy: policy::EnvPolicy,
    /// Take a backup before each deploy (default: in production).
    #[serde(default)]
    pub pre_deploy_backup: Option<bool>,
    /// Runbook commands run (with the new VERSION) before the image changes, e.g. `["migrate"]`.
    #[serde(default)]
    pub pre_deploy: Vec<String>,
    /// Roll back automatically when a rollout or smoke test fails.
    #[serde(default = "yes")]
    pub auto_rollback: bool,
    /// The HTTP check after a rollout.
    #[serde(default)]
    pub smoke: Option<SmokeConfig>,
    /// Where this environment's alerts go (default: `rocketchat.alerts_channel`).
    #[serde(default)]
    pub alerts_channel: Option<String>,
    /// Backups: database engine, volume, Job templates, retention and reports.
    #[serde(default)]
    pub backup: BackupConfig,
    /// When backups, test-restores, pruning and reports run.
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

/// The database engine, which picks the backup, restore and verify templates.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    #[default]
    Mongodb,
    Postgresql,
}

impl DbEngine {
    pub fn name(self) -> &'static str {
        match self {
            DbEngine::Mongodb => "mongodb",
            DbEngine::Postgresql => "postgresql",
        }
    }

    /// What the engine's data is counted in: (collections, documents) or (tables, rows).
    pub fn units(self) -> (&'static str, &'static str) {
        match self {
            DbEngine::Mongodb => ("collections", "documents"),
            DbEngine::Postgresql => ("tables", "rows"),
        }
    }

    fn default_image(self) -> &'static str {
        match self {
            DbEngine::Mongodb => "mongo:7.0",
            DbEngine::Postgresql => "postgres:16",
        }
    }
}

/// How an environment's backups are taken, kept and reported.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    #[serde(default)]
    pub engine: DbEngine,
    /// The PersistentVolumeClaim holding the archives (default: the backup CronJob's name).
    #[serde(default)]
    pub claim: Option<String>,
    /// The Secret with the database connection string under key `uri` (default: the database's name).
    #[serde(default)]
    pub secret: Option<String>,
    /// The image with the dump/restore tools (default: `mongo:7.0` or `postgres:16`).
    #[serde(default)]
    pub tools_image: Option<String>,
    /// Grandfather-father-son retention (default: 7 daily, 4 weekly, 6 monthly).
    #[serde(default)]
    pub retention: Retention,
    /// Where reports go (default: the first of `rocketchat.rooms`).
    #[serde(default)]
    pub report_channel: Option<String>,
    /// Encrypted copies in an S3-compatible object store, outside the cluster.
    #[serde(default)]
    pub offsite: Option<OffsiteConfig>,
}

/// Where an environment's backups are copied off the cluster, and how. The credentials and the
/// encryption key are read from Secrets by the Jobs; the bot never sees them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OffsiteConfig {
    /// The S3-compatible endpoint (`https://s3.eu-central-1.amazonaws.com`, a MinIO URL …).
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix inside the bucket (default: the environment's name and `/`).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// A Secret with keys `access_key_id` and `secret_access_key`.
    pub secret: String,
    /// A Secret whose key `key` is the passphrase the copies are encrypted with (rclone crypt).
    pub encryption_secret: String,
    /// The uploader's image (default: `rclone/rclone:1.68`).
    #[serde(default)]
    pub image: Option<String>,
    /// Which copy the nightly verify proves: `alternate` (on-cluster one night, off-site the next;
    /// the default), `on-cluster` or `offsite`.
    #[serde(default)]
    pub verify: OffsiteVerify,
}

/// Which copy the nightly verify proves.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OffsiteVerify {
    #[default]
    Alternate,
    OnCluster,
    Offsite,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl OffsiteConfig {
    pub fn prefix_or(&self, env: &str) -> String {
        self.prefix.clone().unwrap_or_else(|| format!("{env}/"))
    }

    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or("rclone/rclone:1.68")
    }

    /// Whether the nightly verify of day `ordinal` (of the year) proves the off-site copy.
    pub fn verify_offsite(&self, ordinal: u32) -> bool {
        match self.verify {
            OffsiteVerify::Alternate => ordinal % 2 == 1,
            OffsiteVerify::OnCluster => false,
            OffsiteVerify::Offsite => true,
        }
    }

    /// Where a copy of `file` lives, for people (`s3://bucket/prefix/file`).
    pub fn url(&self, env: &str, file: &str) -> String {
        format!("s3://{}/{}{file}", self.bucket, self.prefix_or(env))
    }
}

impl BackupConfig {
    pub fn claim_or<'a>(&'a self, env: &'a EnvironmentConfig) -> &'a str {
        self.claim.as_deref().unwrap_or(&env.backup_cronjob)
    }

    pub fn secret_or(&self, env: &EnvironmentConfig) -> String {
        self.secret.clone().unwrap_or_else(|| env.database.clone())
    }

    pub fn tools_image(&self) -> &str {
        self.tools_image
            .as_deref()
            .unwrap_or(self.engine.default_image())
    }
}

/// Cron expressions (5 fields, or 6 with seconds) in a time zone; an absent one does not run.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// An IANA zone such as `Europe/Berlin` (default: UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub backup: Option<CronExpr>,
    #[serde(default)]
    pub verify: Option<CronExpr>,
    #[serde(default)]
    pub prune: Option<CronExpr>,
    #[serde(default)]
    pub report: Option<CronExpr>,
    /// The report plus a chart of backup size and duration (e.g. "0 8 * * 1").
    #[serde(default)]
    pub weekly: Option<CronExpr>,
    /// `restore ENV latest from <refresh_from>`, e.g. test refreshed nightly with prod's data.
    #[serde(default)]
    pub refresh: Option<CronExpr>,
    /// The environment whose newest backup a scheduled refresh restores.
    #[serde(default)]
    pub refresh_from: Option<String>,
}

fn yes() -> bool {
    true
}

/// An HTTP smoke test: GET `url`, expect `status`, and optionally a JSON field equal to the version.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmokeConfig {
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
    /// A JSON field that must name the deployed version (Rocket.Chat's `/api/info` has `version`).
    #[serde(default)]
    pub version_field: Option<String>,
    /// How long to keep trying.
    #[serde(default = "default_smoke_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_smoke_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_status() -> u16 {
    200
}
fn default_smoke_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_smoke_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_min_replicas() -> u32 {
    0
}
fn default_max_replicas() -> u32 {
    10
}

fn default_deployment() -> String {
    "rocketchat".into()
}
fn default_database() -> String {
    "mongodb".into()
}
fn default_backup_cronjob() -> String {
    "mongodb-backup".into()
}

impl EnvironmentConfig {
    /// Defaults for an environment named `name`.
    pub fn named(name: &str) -> EnvironmentConfig {
        EnvironmentConfig {
            namespace: Some(name.to_string()),
            kubeconfig: None,
            context: None,
            deployment: default_deployment(),
            container: None,
            image: None,
            database: default_database(),
            backup_cronjob: default_backup_cronjob(),
            production: None,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            allow_image_refs: false,
            policy: policy::EnvPolicy::default(),
            pre_deploy_backup: None,
            pre_deploy: Vec::new(),
            auto_rollback: true,
            smoke: None,
            alerts_channel: None,
            backup: BackupConfig::default(),
            schedule: ScheduleConfig::default(),
        }
    }

    pub fn namespace_or<'a>(&'a self, name: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(name)
    }

    pub fn container(&self) -> &str {
        self.container.as_deref().unwrap_or(&self.deployment)
    }

    pub fn is_production(&self, name: &str) -> bool {
        self.production.unwrap_or_else(|| name.starts_with("prod"))
    }
}

/// How many of each to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            daily: 7,
            weekly: 4,
            monthly: 6,
        }
    }
}

/// Parses a cron expression (5 fields, or 6 with seconds first); the error is for a person and
/// names the field at fault (`hour 25 is out of range 0-23`).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    if let Some(why) = cron_field_problem(expr) {
        return Err(format!("`{expr}`: {why}"));
    }
    expr.trim()
        .parse::<croner::Cron>()
        .map_err(|e| format!("`{expr}` is not a cron expression like \"0 2 * * *\": {e}"))
}

/// Pure: what is wrong with a cron expression's shape or numbers, if anything is.
fn cron_field_problem(expr: &str) -> Option<String> {
    const FIVE: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let named: Vec<(&str, u32, u32)> = match fields.len() {
        5 => FIVE.to_vec(),
        6 => std::iter::once(("second", 0, 59)).chain(FIVE).collect(),
        n => {
            return Some(format!(
                "has {n} field{}; write 5 (minute hour day-of-month month day-of-week, as \"0 2 * * *\") or 6 (seconds first)",
                if n == 1 { "" } else { "s" }
            ));
        }
    };
    for (text, (name, lo, hi)) in fields.iter().zip(named) {
        for part in text.split(',') {
            // The step after `/` is a count, not a value of the field.
            let values = part.split('/').next().unwrap_or_default();
            for n in values
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
            {
                match n.parse::<u32>() {
                    Ok(v) if v < lo || v > hi => {
                        return Some(format!("{name} {v} is out of range {lo}-{hi}"));
                    }
                    Err(_) => return Some(format!("{name} `{n}` is not a number")),
                    _ => {}
                }
            }
        }
    }
    None
}

/// A cron expression (5 fields, or 6 with seconds first), parsed when the configuration is read.
/// A bad one is kept with its problem rather than failing the read, so that the validation pass
/// reports every problem in a file, each with its key and line.
#[derive(Debug, Clone)]
pub struct CronExpr {
    text: String,
    /// Boxed: a parsed schedule is a few hundred bytes, and six per environment are kept.
    parsed: Result<Box<croner::Cron>, String>,
}

impl CronExpr {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed schedule, or what is wrong with the expression.
    pub fn cron(&self) -> Result<&croner::Cron, &str> {
        self.parsed.as_deref().map_err(String::as_str)
    }
}

impl From<&str> for CronExpr {
    fn from(s: &str) -> CronExpr {
        CronExpr {
            text: s.to_string(),
            parsed: parse_cron(s).map(Box::new),
        }
    }
}

impl From<String> for CronExpr {
    fn from(s: String) -> CronExpr {
        CronExpr::from(s.as_str())
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &CronExpr) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CronExpr, D::Error> {
        Ok(CronExpr::from(String::deserialize(d)?.as_str()))
    }
}

/// A daily window such as `22:00-07:00` (it may wrap midnight), parsed when the configuration is
/// read; a bad one is kept with no window and reported by the validation pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    text: String,
    window: Option<(u32, u32)>,
}

impl QuietHours {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its start and end in minutes since midnight (`None` when it did not parse).
    pub fn window(&self) -> Option<(u32, u32)> {
        self.window
    }
}

impl From<&str> for QuietHours {
    fn from(s: &str) -> QuietHours {
        QuietHours {
            text: s.to_string(),
            window: parse_quiet_hours(s),
        }
    }
}

impl<'de> Deserialize<'de> for QuietHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QuietHours, D::Error> {
        Ok(QuietHours::from(String::deserialize(d)?.as_str()))
    }
}

/// Parses `22:00-07:00` into minutes since midnight.
pub fn parse_quiet_hours(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    Some((hm(a)?, hm(b)?))
}
