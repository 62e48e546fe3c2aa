//! The TOML configuration: types, defaults, environment overrides, and validation whose errors name file, key and line.

mod check;
mod environment;
mod locate;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use environment::*;

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
    /// Where the state lives and, with state in Kubernetes, the leader election of the replicas.
    #[serde(default)]
    pub ha: HaConfig,
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

/// Where the bot's state lives: `sled` (one replica, a volume; the default) or `kubernetes`
/// (ConfigMaps in the bot's namespace, so that two replicas can run, one leading by a Lease).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Kubernetes,
}

/// High availability: the state backend and, with `kubernetes`, the Lease the replicas elect a
/// leader on (client-go's algorithm and defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// `sled` or `kubernetes`.
    pub store: StoreBackend,
    /// The bot's own namespace, where the Lease and the state objects live. Default: the
    /// `POD_NAMESPACE` environment variable, else the namespace of the kubeconfig's context or of
    /// the service account.
    pub namespace: Option<String>,
    /// A kubeconfig for the bot's own cluster (default: in-cluster, else the default kubeconfig).
    pub kubeconfig: Option<PathBuf>,
    /// A context of that kubeconfig.
    pub context: Option<String>,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a Lease not renewed stays held: a standby takes over this long after the
    /// leader's last renewal it saw.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// A leader that has not renewed within this long stops (and is restarted as a standby).
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// How often a standby tries to acquire, and a leader to renew.
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            store: StoreBackend::Sled,
            namespace: None,
            kubeconfig: None,
            context: None,
            lease_name: "rocketops-leader".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
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

    /// `name`'s configuration, or the defaults of an environment of that name when it is not
    /// configured (an operation journaled for an environment since removed still resumes).
    pub fn environment(&self, name: &str) -> EnvironmentConfig {
        self.environments
            .get(name)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(name))
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
}

#[cfg(test)]
mod tests;
