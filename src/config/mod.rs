//! The TOML configuration: types, defaults, environment overrides, and validation whose errors name file, key and line.

mod locate;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use locate::{key_at_offset, line_col, span_of_key};

/// The commented starter configuration `rocketops init` writes (also the repository's example).
pub const STARTER: &str = include_str!("../../rocketops.example.toml");

/// A secret value (token, password): never printed by `Debug`, never logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is sent to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub bot: BotConfig,
    pub rocketchat: RocketChatConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The managed environments, by name (`dev`, `test`, `prod`).
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// Rate limits and timeouts of the policy.
    #[serde(default)]
    pub policy: policy::PolicyConfig,
    /// Failure alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The audit log's key and anchor.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The file this was read from, so that checks made after loading can name a line too.
    /// `None` for a configuration built in code.
    #[serde(skip)]
    pub source: Option<std::sync::Arc<ConfigSource>>,
}

/// A configuration file's path and text.
pub struct ConfigSource {
    path: PathBuf,
    text: String,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigSource({})", self.path.display())
    }
}

/// The audit log (`[audit]`): its key comes only from `ROCKETOPS_AUDIT_KEY` (a Secret).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the head hash and record count are posted (the anchor kept outside the store).
    pub room: Option<String>,
    /// How often the anchor is posted (and once at start).
    #[serde(with = "humantime_serde")]
    pub anchor_every: Duration,
    /// The HMAC key of the chain: from `ROCKETOPS_AUDIT_KEY` only, never from the file.
    #[serde(skip)]
    pub key: Option<Secret>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            room: None,
            anchor_every: Duration::from_secs(24 * 3600),
            key: None,
        }
    }
}

/// The shortest audit key accepted, in bytes.
pub const MIN_AUDIT_KEY_LEN: usize = 16;

/// Failure alerts (`[alerts]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// Alerts posted per minute across all environments, and in a burst; the rest are summarized.
    pub per_minute: u32,
    pub burst: u32,
    /// How long a StatefulSet may have fewer ready replicas than desired before it alerts.
    #[serde(with = "humantime_serde")]
    pub statefulset_grace: Duration,
    /// How often time-based checks (StatefulSets, stale CronJobs, held-back alerts) run.
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
    /// A Rocket.Chat incoming-webhook URL that also receives every alert (it carries a token:
    /// prefer `ROCKETOPS_ALERTS_WEBHOOK`).
    pub webhook_url: Option<Secret>,
    /// Warning events that raise an alert, by reason.
    pub warning_events: Vec<String>,
    /// A warning-event incident with no new event for this long is considered over.
    #[serde(with = "humantime_serde")]
    pub warning_ttl: Duration,
    /// `22:00-07:00` (UTC): warnings are held and posted as one digest when the window ends.
    pub quiet_hours: Option<QuietHours>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            per_minute: 10,
            burst: 5,
            statefulset_grace: Duration::from_secs(300),
            check_every: Duration::from_secs(15),
            webhook_url: None,
            warning_events: [
                "BackoffLimitExceeded",
                "FailedMount",
                "FailedScheduling",
                "FailedCreate",
                "Unhealthy",
                "Evicted",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            warning_ttl: Duration::from_secs(3600),
            quiet_hours: None,
        }
    }
}

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

/// How the bot recognises commands and where it keeps its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// Prefixes that mark a message as a command in a channel (`/deploy`, `!deploy`).
    pub prefixes: Vec<String>,
    /// Directory of the embedded store.
    pub store_path: PathBuf,
    /// Answer messages from other bots (messages with a `bot` field).
    pub respond_to_bots: bool,
    /// A command missed while the bot was offline runs only if it is younger than this.
    #[serde(with = "humantime_serde")]
    pub catch_up_max_age: Duration,
    /// How long message ids are remembered for de-duplication.
    #[serde(with = "humantime_serde")]
    pub seen_retention: Duration,
    /// Directory of runbook command files (`*.toml`).
    pub commands_dir: PathBuf,
    /// Remove the exact values (and their base64) of the Secrets the Job templates reference
    /// from everything the bot posts. Needs `get` on those Secrets (see the README, "Secrets in
    /// chat and logs"); the values go into `redact::values`.
    pub redact_secret_values: bool,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            prefixes: vec!["/".into(), "!".into()],
            store_path: PathBuf::from("./data"),
            respond_to_bots: false,
            catch_up_max_age: Duration::from_secs(600),
            seen_retention: Duration::from_secs(7 * 24 * 3600),
            commands_dir: PathBuf::from("commands"),
            redact_secret_values: false,
        }
    }
}

/// The Rocket.Chat server and the bot's account on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RocketChatConfig {
    /// Base URL, e.g. `https://chat.example.org`; the WebSocket is `<url>/websocket`.
    pub url: String,
    /// The bot's username (needed for a password login; learnt from the server otherwise).
    #[serde(default)]
    pub username: Option<String>,
    /// Personal access token (preferred). Also `ROCKETOPS_RC_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Password, for a password login. Also `ROCKETOPS_RC_PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Channels to join at start (public ones are joined; a private group needs an invitation).
    /// With the alerts channel, the rooms `/readyz` waits for.
    #[serde(default = "default_rooms")]
    pub rooms: Vec<String>,
    /// Channel for failure alerts.
    #[serde(default = "default_alerts_channel")]
    pub alerts_channel: String,
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(default = "default_ping_timeout", with = "humantime_serde")]
    pub ping_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one request (a REST call, or the socket's login) may wait for its answer.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long a post, edit or reaction keeps retrying through outages and rate limits before it
    /// is given up.
    #[serde(default = "default_send_deadline", with = "humantime_serde")]
    pub send_deadline: Duration,
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The server's `Message_MaxAllowedSize`; longer messages are split.
    #[serde(default = "default_max_message_len")]
    pub max_message_len: usize,
}

fn default_rooms() -> Vec<String> {
    vec!["ops".into()]
}
fn default_alerts_channel() -> String {
    "alerts".into()
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_ping_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_send_deadline() -> Duration {
    Duration::from_secs(120)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_message_len() -> usize {
    5000
}

impl RocketChatConfig {
    /// A configuration for `url` with every default and no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        RocketChatConfig {
            url: url.into(),
            username: None,
            token: None,
            password: None,
            rooms: default_rooms(),
            alerts_channel: default_alerts_channel(),
            ping_interval: default_ping_interval(),
            ping_timeout: default_ping_timeout(),
            connect_timeout: default_connect_timeout(),
            call_timeout: default_call_timeout(),
            send_deadline: default_send_deadline(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            max_message_len: default_max_message_len(),
        }
    }

    /// Which way the bot logs in, without the secret.
    pub fn auth_method(&self) -> &'static str {
        if self.token.is_some() {
            "personal access token"
        } else if self.password.is_some() {
            "password"
        } else {
            "none"
        }
    }
}

/// Log format and the health/metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// Address of `/healthz`, `/readyz` and `/metrics` (`"none"` to disable).
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<std::net::SocketAddr>,
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an address like 0.0.0.0:9090 (or \"none\")"
        ))
    })
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            listen: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9090))),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`rocketchat.url`); empty for the file as a whole.
    pub key: String,
    /// 1-based line and column, when the key appears in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration file at {}: `rocketops init` writes a commented one there (`--config PATH` or ROCKETOPS_CONFIG picks another; `rocketops sandbox` needs none)",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("cannot read config file {path}: {source}")]
    ReadFailed {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// serde's "unknown field `x`, expected one of `a`, `b`" as a person would say it: the nearest
/// known key when one is close, the list otherwise.
fn unknown_key(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let Some((given, known)) = quoted.split_first() else {
        return message.trim().to_string();
    };
    let nearest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(given, k), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, k)) => format!("unknown key `{given}`; did you mean `{k}`?"),
        None => format!(
            "unknown key `{given}`; the keys here are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            let at = match p.position {
                Some((l, c)) => format!("{}:{l}:{c}", path.display()),
                None => path.display().to_string(),
            };
            if p.key.is_empty() {
                format!("{at}: {}", p.message)
            } else {
                format!("{at}: key `{}`: {}", p.key, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Environment variables that override the file (secrets belong here rather than in the file).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("ROCKETOPS_RC_URL", "rocketchat.url"),
    ("ROCKETOPS_RC_USERNAME", "rocketchat.username"),
    ("ROCKETOPS_RC_TOKEN", "rocketchat.token"),
    ("ROCKETOPS_RC_PASSWORD", "rocketchat.password"),
    ("ROCKETOPS_STORE_PATH", "bot.store_path"),
    ("ROCKETOPS_ALERTS_WEBHOOK", "alerts.webhook_url"),
    ("ROCKETOPS_AUDIT_KEY", "audit key (never in the file)"),
];

/// A configuration file's text; a missing file is told apart from one that cannot be read.
fn read_source(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing {
            path: path.to_path_buf(),
        },
        _ => ConfigError::ReadFailed {
            path: path.to_path_buf(),
            source,
        },
    })
}

impl Config {
    /// Reads and validates a file, applying the process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_source(path)?, path, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`], for a file checked where the secrets are not present: a missing
    /// Rocket.Chat credential is left to [`Config::run_refusals`] to report instead of failing
    /// the read.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_source(path)?, path, &|k| std::env::var(k).ok(), false)
    }

    /// Parses and validates `src` (named `path` in errors), with `env` supplying overrides.
    pub fn from_toml(
        src: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse(src, path, env, true)
    }

    fn parse(
        src: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        secrets_present: bool,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        // An unknown key is blanked out (offsets kept) and the file read again, so that every
        // unknown key is reported in one run together with every other problem.
        let mut text = src.to_string();
        let mut problems = Vec::new();
        let mut config: Config = loop {
            match toml::from_str(&text) {
                Ok(c) => break c,
                Err(e) => {
                    let start = e.span().map(|s| s.start);
                    let key = start.map(|s| key_at_offset(&text, s)).unwrap_or_default();
                    let unknown = e.message().starts_with("unknown field");
                    let blanked = match (unknown, start) {
                        (true, Some(s)) if problems.len() < 100 => locate::blank_entry(&text, s),
                        _ => None,
                    };
                    let (key, message) = match start {
                        _ if unknown => (key, unknown_key(e.message())),
                        Some(s) if key.is_empty() => locate::syntax_problem(&text, s, e.message()),
                        _ => (key, e.message().trim().to_string()),
                    };
                    problems.push(Problem {
                        key,
                        position: start.map(|s| line_col(src, s)),
                        message,
                    });
                    match blanked {
                        Some(t) => text = t,
                        None => return Err(invalid(problems)),
                    }
                }
            }
        };
        config.apply_env(env);
        config.source = Some(std::sync::Arc::new(ConfigSource {
            path: path.to_path_buf(),
            text: src.to_string(),
        }));
        problems.extend(config.problems(src, secrets_present));
        problems.sort_by_key(|p| p.position);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let rc = &mut self.rocketchat;
        if let Some(v) = env("ROCKETOPS_RC_URL") {
            rc.url = v;
        }
        if let Some(v) = env("ROCKETOPS_RC_USERNAME") {
            rc.username = Some(v);
        }
        if let Some(v) = env("ROCKETOPS_RC_TOKEN") {
            rc.token = Some(Secret(v));
        }
        if let Some(v) = env("ROCKETOPS_RC_PASSWORD") {
            rc.password = Some(Secret(v));
        }
        if let Some(v) = env("ROCKETOPS_ALERTS_WEBHOOK") {
            self.alerts.webhook_url = Some(Secret(v));
        }
        if let Some(v) = env("ROCKETOPS_STORE_PATH") {
            self.bot.store_path = PathBuf::from(v);
        }
        if let Some(v) = env("ROCKETOPS_AUDIT_KEY").filter(|v| !v.is_empty()) {
            self.audit.key = Some(Secret(v));
        }
    }

    /// Why the bot must not start with this configuration's audit settings, if it must not:
    /// a production environment needs a keyed audit log.
    pub fn audit_refusal(&self) -> Option<String> {
        let production: Vec<&String> = self
            .environments
            .iter()
            .filter(|(n, e)| e.is_production(n))
            .map(|(n, _)| n)
            .collect();
        match &self.audit.key {
            Some(k) if k.expose().len() < MIN_AUDIT_KEY_LEN => Some(format!(
                "ROCKETOPS_AUDIT_KEY is shorter than {MIN_AUDIT_KEY_LEN} bytes; use a random key from a Secret"
            )),
            Some(_) => None,
            None if !production.is_empty() => Some(format!(
                "production environments ({}) need a keyed audit log: set ROCKETOPS_AUDIT_KEY from a Secret (at least {MIN_AUDIT_KEY_LEN} random bytes, e.g. `openssl rand -hex 32`)",
                production
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => None,
        }
    }

    /// Why `run` would refuse to start with this configuration as the environment completes it
    /// (secrets included), and which of those reasons are only secrets that are absent here. With
    /// `offline_secrets`, absent secrets are reported as notes (the file is checked where the
    /// secrets are not present), and only what is wrong whatever the secrets are refuses.
    pub fn run_refusals(&self, offline_secrets: bool) -> (Vec<String>, Vec<String>) {
        let (mut refusals, mut notes) = (Vec::new(), Vec::new());
        let mut absent = |why: String| {
            if offline_secrets {
                notes.push(format!("not checked (--offline-secrets): {why}"));
            } else {
                refusals.push(why);
            }
        };
        let rc = &self.rocketchat;
        if rc.token.is_none() && rc.password.is_none() {
            absent(
                "no Rocket.Chat credentials: set ROCKETOPS_RC_TOKEN (or ROCKETOPS_RC_PASSWORD with rocketchat.username)"
                    .into(),
            );
        }
        if let Some(why) = self.audit_refusal() {
            if self.audit.key.is_none() {
                absent(why);
            } else {
                refusals.push(why);
            }
        }
        (refusals, notes)
    }

    /// Where `item` is written in the list at `key` (`environments.prod.policy.allow[0].commands`):
    /// `file:line:col`, or `file` when it is not in the file (or the file is not known).
    pub fn position_of(&self, key: &str, item: &str) -> String {
        let Some(source) = &self.source else {
            return String::new();
        };
        match locate::span_of_item(&source.text, key, item) {
            Some(at) => {
                let (line, col) = line_col(&source.text, at);
                format!("{}:{line}:{col}", source.path.display())
            }
            None => source.path.display().to_string(),
        }
    }

    /// Semantic checks, each naming its key and, where the key is in the file, its line.
    fn problems(&self, src: &str, secrets_present: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            let position = span_of_key(src, key).map(|s| line_col(src, s));
            out.push(Problem {
                key: key.to_string(),
                position,
                message,
            });
        };
        let rc = &self.rocketchat;
        match url::Url::parse(&rc.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host_str().is_none() {
                    bad("rocketchat.url", format!("`{}` has no host", rc.url));
                }
            }
            Ok(u) => bad(
                "rocketchat.url",
                format!("scheme `{}` is not http or https", u.scheme()),
            ),
            Err(e) => bad("rocketchat.url", format!("`{}` is not a URL: {e}", rc.url)),
        }
        if secrets_present && rc.token.is_none() && rc.password.is_none() {
            bad(
                "rocketchat",
                "no credentials: set `token` (or ROCKETOPS_RC_TOKEN), or `username` with `password` (or ROCKETOPS_RC_PASSWORD)".into(),
            );
        }
        if rc.password.is_some() && rc.token.is_none() && rc.username.is_none() {
            bad(
                "rocketchat.username",
                "a password login needs `username`".into(),
            );
        }
        if let Some(u) = &rc.username
            && !valid_name(u)
        {
            bad(
                "rocketchat.username",
                format!("`{u}` is not a valid Rocket.Chat username"),
            );
        }
        for room in &rc.rooms {
            if !valid_name(room.trim_start_matches('#')) {
                bad(
                    "rocketchat.rooms",
                    format!("`{room}` is not a valid channel name"),
                );
            }
        }
        if !valid_name(rc.alerts_channel.trim_start_matches('#')) {
            bad(
                "rocketchat.alerts_channel",
                format!("`{}` is not a valid channel name", rc.alerts_channel),
            );
        }
        if rc.ping_interval.is_zero() {
            bad("rocketchat.ping_interval", "must be more than zero".into());
        }
        if rc.ping_timeout.is_zero() {
            bad("rocketchat.ping_timeout", "must be more than zero".into());
        }
        if rc.call_timeout.is_zero() {
            bad("rocketchat.call_timeout", "must be more than zero".into());
        }
        if rc.reconnect_min > rc.reconnect_max {
            bad(
                "rocketchat.reconnect_min",
                "must not exceed `reconnect_max`".into(),
            );
        }
        if rc.max_message_len < 100 {
            bad(
                "rocketchat.max_message_len",
                format!("{} is too small (at least 100)", rc.max_message_len),
            );
        }
        for (name, env) in &self.environments {
            let key = format!("environments.{name}");
            if !dns_label(name) {
                bad(
                    &key,
                    format!(
                        "`{name}` is not a valid environment name (lowercase letters, digits and `-`)"
                    ),
                );
            }
            if let Some(ns) = &env.namespace
                && !dns_label(ns)
            {
                bad(
                    &format!("{key}.namespace"),
                    format!("`{ns}` is not a valid namespace"),
                );
            }
            if !dns_label(&env.deployment) {
                bad(
                    &format!("{key}.deployment"),
                    format!("`{}` is not a valid Deployment name", env.deployment),
                );
            }
            if env.min_replicas > env.max_replicas {
                bad(
                    &format!("{key}.min_replicas"),
                    format!(
                        "{} is more than max_replicas ({})",
                        env.min_replicas, env.max_replicas
                    ),
                );
            }
            if env.policy.approvals > policy::MAX_APPROVALS {
                bad(
                    &format!("{key}.policy.approvals"),
                    format!(
                        "{} is not a number of approvers anyone can gather (at most {})",
                        env.policy.approvals,
                        policy::MAX_APPROVALS
                    ),
                );
            }
            if let Some(p) = &env.kubeconfig
                && p.as_os_str().is_empty()
            {
                bad(&format!("{key}.kubeconfig"), "must not be empty".into());
            }
            for (k, v) in [
                ("claim", env.backup.claim.as_ref()),
                ("secret", env.backup.secret.as_ref()),
            ] {
                if let Some(v) = v
                    && !dns_label(v)
                {
                    bad(
                        &format!("{key}.backup.{k}"),
                        format!("`{v}` is not a valid Kubernetes name"),
                    );
                }
            }
            if env.backup.retention.daily == 0 {
                bad(
                    &format!("{key}.backup.retention"),
                    "`daily` must be at least 1, so that the newest backup is always kept".into(),
                );
            }
            if let Some(c) = &env.backup.report_channel
                && !valid_name(c.trim_start_matches('#'))
            {
                bad(
                    &format!("{key}.backup.report_channel"),
                    format!("`{c}` is not a valid channel name"),
                );
            }
            if let Some(tz) = &env.schedule.timezone
                && tz.parse::<chrono_tz::Tz>().is_err()
            {
                bad(
                    &format!("{key}.schedule.timezone"),
                    format!("`{tz}` is not a time zone (use an IANA name like \"Europe/Berlin\")"),
                );
            }
            match (&env.schedule.refresh, &env.schedule.refresh_from) {
                (Some(_), None) => bad(
                    &format!("{key}.schedule.refresh"),
                    "needs `refresh_from`, the environment whose backup it restores".into(),
                ),
                (Some(_), Some(_)) if env.is_production(name) => bad(
                    &format!("{key}.schedule.refresh"),
                    format!(
                        "{name} is production: its data is never replaced on a schedule (run `restore` by hand)"
                    ),
                ),
                (_, Some(src)) if !self.environments.contains_key(src) || src == name => bad(
                    &format!("{key}.schedule.refresh_from"),
                    format!("`{src}` is not another configured environment"),
                ),
                _ => {}
            }
            for (kind, expr) in env.schedule.entries() {
                if let Err(e) = expr.cron() {
                    bad(&format!("{key}.schedule.{kind}"), e.to_string());
                }
            }
        }
        if let Some(q) = &self.alerts.quiet_hours
            && q.window().is_none()
        {
            bad(
                "alerts.quiet_hours",
                format!("`{}` is not a window like \"22:00-07:00\"", q.as_str()),
            );
        }
        if self.bot.prefixes.is_empty() {
            bad(
                "bot.prefixes",
                "needs at least one prefix, e.g. \"!\"".into(),
            );
        }
        for p in &self.bot.prefixes {
            if p.is_empty() || p.chars().any(char::is_whitespace) || p.chars().count() > 3 {
                bad(
                    "bot.prefixes",
                    format!("`{p}` must be 1 to 3 characters without spaces"),
                );
            }
        }
        out
    }

    /// A human summary for `check-config`, with no secret in it.
    pub fn summary(&self) -> String {
        let rc = &self.rocketchat;
        format!(
            "Rocket.Chat:  {}\n\
             login:        {} ({})\n\
             rooms:        {}\n\
             alerts:       #{}\n\
             prefixes:     {}\n\
             store:        {}\n\
             catch-up:     commands younger than {} run after a reconnect\n\
             audit:        {}\n\
             environments: {}",
            rc.url,
            rc.username.as_deref().unwrap_or("(learnt from the token)"),
            rc.auth_method(),
            rc.rooms
                .iter()
                .map(|r| format!("#{}", r.trim_start_matches('#')))
                .collect::<Vec<_>>()
                .join(", "),
            rc.alerts_channel.trim_start_matches('#'),
            self.bot.prefixes.join(" "),
            self.bot.store_path.display(),
            humantime_serde::re::humantime::format_duration(self.bot.catch_up_max_age),
            match (self.audit_refusal(), &self.audit.key) {
                (Some(why), _) => format!("NOT READY: {why}"),
                (None, Some(_)) => format!(
                    "keyed chain (ROCKETOPS_AUDIT_KEY); anchor {}",
                    self.audit
                        .room
                        .as_deref()
                        .map(|r| format!(
                            "posted to #{} and exported as metrics",
                            r.trim_start_matches('#')
                        ))
                        .unwrap_or_else(|| "exported as metrics".into())
                ),
                (None, None) => "hash chain without a key (set ROCKETOPS_AUDIT_KEY)".into(),
            },
            if self.environments.is_empty() {
                "(none)".to_string()
            } else {
                self.environments
                    .iter()
                    .map(|(n, e)| {
                        let place = match (&e.kubeconfig, &e.context) {
                            (Some(k), Some(c)) => format!("{} context {c}", k.display()),
                            (Some(k), None) => k.display().to_string(),
                            (None, Some(c)) => format!("context {c}"),
                            (None, None) => "in-cluster or default kubeconfig".into(),
                        };
                        let prod = if e.is_production(n) {
                            ", production"
                        } else {
                            ""
                        };
                        format!("{n} (namespace {}, {place}{prod})", e.namespace_or(n))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ) + &self.backup_summary()
            + &self.policy_summary()
    }

    /// Per environment: what a change needs before it runs (confirmation, approvers).
    fn policy_summary(&self) -> String {
        let mut out = String::new();
        for (n, e) in &self.environments {
            let confirm = e.policy.confirm.unwrap_or_else(|| e.is_production(n));
            let approvals = match e.policy.approvals {
                0 => "no approval".to_string(),
                1 => "approved by 1 other person".to_string(),
                a => format!("approved by {a} different people, none of them the requester"),
            };
            out.push_str(&format!(
                "\npolicy {n}:    changes {}, {approvals}",
                if confirm {
                    "confirmed by the requester"
                } else {
                    "unconfirmed"
                }
            ));
        }
        out
    }

    /// Per environment: the backup engine and volume, retention, and schedules.
    fn backup_summary(&self) -> String {
        let mut out = String::new();
        for (n, e) in &self.environments {
            let b = &e.backup;
            let r = b.retention;
            let schedules: Vec<String> = e
                .schedule
                .entries()
                .into_iter()
                .map(|(k, expr)| format!("{k} `{expr}`"))
                .collect();
            out.push_str(&format!(
                "\nbackups {n}:   {} on volume {}, keep {} daily / {} weekly / {} monthly; schedules: {}{}",
                b.engine.name(),
                b.claim_or(e),
                r.daily,
                r.weekly,
                r.monthly,
                if schedules.is_empty() {
                    "none".to_string()
                } else {
                    schedules.join(", ")
                },
                e.schedule
                    .timezone
                    .as_deref()
                    .filter(|_| !schedules.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ));
            out.push_str(&format!(
                "\noff-site {n}:  {}",
                match &b.offsite {
                    Some(o) => format!(
                        "ON: every backup copied, encrypted, to bucket `{}` at {}",
                        o.bucket, o.endpoint
                    ),
                    None => "off".into(),
                }
            ));
            if let Some(when) = &e.schedule.refresh {
                out.push_str(&format!(
                    "\nrefresh {n}:   ON: {n}'s data is REPLACED by {}'s newest backup at `{when}`",
                    e.schedule
                        .refresh_from
                        .as_deref()
                        .unwrap_or("(no refresh_from)")
                ));
            }
        }
        out
    }
}

/// A DNS-1123 label, as namespaces and most object names are.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Rocket.Chat's default username and channel-name rule.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

#[cfg(test)]
mod tests;
