//! The policy part of the configuration: who may run what where (`[policy]`, `[environments.NAME.policy]`).

use std::time::Duration;

use serde::Deserialize;

/// A set of people: usernames and Rocket.Chat roles.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Who {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Who {
    pub fn includes(&self, user: &str, roles: &[String]) -> bool {
        self.users.iter().any(|u| u.eq_ignore_ascii_case(user))
            || self.roles.iter().any(|r| roles.contains(r))
    }
    pub fn needs_roles(&self) -> bool {
        !self.roles.is_empty()
    }
    /// Who this is, for a refusal (`@alice or role ops`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.users.is_empty() {
            parts.push(
                self.users
                    .iter()
                    .map(|u| format!("@{u}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if !self.roles.is_empty() {
            parts.push(format!("role {}", self.roles.join(" or ")));
        }
        if parts.is_empty() {
            "no one".into()
        } else {
            parts.join(" or ")
        }
    }
}

/// Commands (by name, or `*`) a group of people may run.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub commands: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl AllowRule {
    /// The people this rule names.
    pub fn who(&self) -> Who {
        Who {
            users: self.users.clone(),
            roles: self.roles.clone(),
        }
    }
    /// Whether the rule names `command` (or a word it starts with, or `*`).
    pub fn covers(&self, command: &str) -> bool {
        self.commands
            .iter()
            .any(|c| c == "*" || c == command || command.starts_with(&format!("{c} ")))
    }
}

/// The most approvals an environment may ask for: more is a typo, not a rule anyone can follow.
pub const MAX_APPROVALS: u32 = 10;

/// One environment's policy (`[environments.NAME.policy]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvPolicy {
    /// Channels commands for this environment may come from (empty: any room the bot is in).
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Changing commands need `confirm CODE` (default: for production environments).
    #[serde(default)]
    pub confirm: Option<bool>,
    /// How many other authorized users must `approve` a changing command, each a different
    /// person (two-person rule: 1). At most [`MAX_APPROVALS`].
    #[serde(default)]
    pub approvals: u32,
    /// Who may run which changing commands. None: no one (default deny).
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Who may run read-only commands here (absent: anyone in the bot's rooms).
    #[serde(default)]
    pub readers: Option<Who>,
    /// Who may skip the pre-deploy backup with `--no-backup`, or the restore's safety backup.
    #[serde(default)]
    pub skip_backup: Who,
    /// Changing commands still allowed while the environment is locked.
    #[serde(default = "default_when_locked")]
    pub allow_when_locked: Vec<String>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            rooms: Vec::new(),
            confirm: None,
            approvals: 0,
            allow: Vec::new(),
            readers: None,
            skip_backup: Who::default(),
            allow_when_locked: default_when_locked(),
        }
    }
}

fn default_when_locked() -> Vec<String> {
    vec![
        "rollback".into(),
        "unlock".into(),
        "backup now".into(),
        "status".into(),
    ]
}

/// Bot-wide policy settings (`[policy]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Commands per minute each user may send (token bucket refill).
    pub rate_per_minute: u32,
    /// Commands a user may send in a burst.
    pub rate_burst: u32,
    /// How long a confirmation code stays valid.
    #[serde(with = "humantime_serde")]
    pub confirm_ttl: Duration,
    /// How long an approval request stays open.
    #[serde(with = "humantime_serde")]
    pub approval_ttl: Duration,
    /// How long looked-up Rocket.Chat roles are trusted.
    #[serde(with = "humantime_serde")]
    pub role_cache_ttl: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            rate_per_minute: 30,
            rate_burst: 10,
            confirm_ttl: Duration::from_secs(120),
            approval_ttl: Duration::from_secs(30 * 60),
            role_cache_ttl: Duration::from_secs(300),
        }
    }
}
