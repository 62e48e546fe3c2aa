//! The one error type that may be shown in a channel: what went wrong for the user, and what to do about it.

/// A failure the person who typed a command may see. Everything else is logged, not posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("I don't know the command `{given}`.{}", did_you_mean(suggestion))]
    UnknownCommand {
        given: String,
        suggestion: Option<String>,
    },
    #[error("I couldn't read that: {problem}.")]
    Malformed { problem: String },
    #[error("{problem}\nUsage: `{usage}`")]
    BadArguments { usage: String, problem: String },
    #[error("You may not {action}: {reason}")]
    NotAllowed { action: String, reason: String },
    #[error("Slow down: you may send another command in {retry_after_secs}s.")]
    RateLimited { retry_after_secs: u64 },
    #[error("{}", no_such_backup(env, name.as_deref()))]
    NoSuchBackup { env: String, name: Option<String> },
    #[error("{env} is already running {version}; nothing to do.")]
    AlreadyThere { env: String, version: String },
    #[error("{env} is busy with {}.", busy_with(*op, holder.as_ref()))]
    Busy {
        env: String,
        op: u64,
        /// What the holder runs, who started it and how long ago (when its journal is readable).
        holder: Option<Holder>,
    },
    #[error("{env} has no cluster connection configured.")]
    NoCluster { env: String },
    #[error("{0}")]
    Refused(String),
    #[error(
        "I was offline when you sent this ({age}), so I did not run it: send it again if it is still wanted."
    )]
    MissedWhileOffline { age: String },
    #[error("Something went wrong on my side; the details are in my log.")]
    Internal,
}

/// The operation holding an environment, as the busy answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its command word (`deploy`).
    pub command: String,
    /// `@alice`, or `the schedule`.
    pub by: String,
    pub minutes: i64,
}

fn busy_with(op: u64, h: Option<&Holder>) -> String {
    match h {
        Some(h) => format!(
            "{} #{op} (started by {} {} min ago)",
            h.command, h.by, h.minutes
        ),
        None => format!("operation #{op}"),
    }
}

fn no_such_backup(env: &str, name: Option<&str>) -> String {
    match name {
        None => format!("No backup of {env} is known; `backup now {env}` takes one."),
        Some(n) => format!("No backup of {env} is called `{n}`; `backup list {env}` shows them."),
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" Did you mean `{s}`? Type `help` for the list."),
        None => " Type `help` for the list.".to_string(),
    }
}

impl UserError {
    /// Short label for logs, metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            UserError::UnknownCommand { .. } => "unknown_command",
            UserError::Malformed { .. } => "malformed",
            UserError::BadArguments { .. } => "bad_arguments",
            UserError::NotAllowed { .. } => "not_allowed",
            UserError::RateLimited { .. } => "rate_limited",
            UserError::NoSuchBackup { .. } => "no_such_backup",
            UserError::AlreadyThere { .. } => "already_there",
            UserError::Busy { .. } => "busy",
            UserError::NoCluster { .. } => "no_cluster",
            UserError::Refused(_) => "refused",
            UserError::MissedWhileOffline { .. } => "missed_while_offline",
            UserError::Internal => "internal",
        }
    }
}
