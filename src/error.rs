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
    #[error("No environment has a backup to test yet; `backup now` takes one.")]
    NothingToVerify,
    /// `from offsite` where there is no off-site copy to fetch.
    #[error("{}", no_offsite_copy(env, name.as_deref(), *configured))]
    NoOffsiteCopy {
        env: String,
        name: Option<String>,
        /// Whether the environment copies its backups off-site at all.
        configured: bool,
    },
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
    /// The cluster refused or failed a read-only command's call.
    #[error("{env}: {message}")]
    Cluster {
        env: String,
        message: String,
        /// Asking again later may work (the API server was unavailable, a conflict, a timeout).
        retryable: bool,
    },
    #[error("{env} is locked by @{by} ({ago}){}. `unlock {env}` lifts it.", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Locked {
        env: String,
        by: String,
        ago: String,
        reason: Option<String>,
    },
    #[error("{env} is already locked by @{by}{}.", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    AlreadyLocked {
        env: String,
        by: String,
        reason: Option<String>,
    },
    #[error("{env} is not locked.")]
    NotLocked { env: String },
    /// Found before asking for confirmation: the rollback has nowhere to go.
    #[error("I can't roll back {env}: {why}")]
    CannotRollBack { env: String, why: String },
    /// Found before asking for confirmation: the autoscaler would undo the scale.
    #[error("I won't scale {env} {workload} to {replicas}: {why}.")]
    WouldBeUndone {
        env: String,
        workload: String,
        replicas: u32,
        why: String,
    },
    #[error("No operation #{op} is waiting or running; `status` shows what runs.")]
    NoSuchOperation { op: u64 },
    #[error("#{op} has just finished; nothing to cancel.")]
    AlreadyFinished { op: u64 },
    #[error("I can't check your roles right now ({why}); try again, or ask an admin.")]
    RolesUnavailable { why: String },
    /// An answer (`confirm`, `approve`) that does not apply: the code is wrong or expired, the
    /// operation is not waiting for this person.
    #[error("{0}")]
    Refused(String),
    #[error(
        "I was offline when you sent this ({age}), so I did not run it: send it again if it is still wanted."
    )]
    MissedWhileOffline { age: String },
    /// Found at `confirm` or `approve`: something the request's decision rested on changed
    /// after it was asked (a lock, the policy, the state its plan read).
    #[error(
        "{what} after @{requester} asked for #{op}: not {action}. Send the command again if it is still wanted."
    )]
    ChangedSinceAsked {
        op: u64,
        what: String,
        requester: String,
        /// `deploying`, `restoring`.
        action: String,
    },
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
    /// When it started (`2 min ago`).
    pub ago: String,
}

fn busy_with(op: u64, h: Option<&Holder>) -> String {
    match h {
        Some(h) => format!("{} #{op} (started by {} {})", h.command, h.by, h.ago),
        None => format!("operation #{op}"),
    }
}

fn no_offsite_copy(env: &str, name: Option<&str>, configured: bool) -> String {
    match (configured, name) {
        (false, _) => {
            format!("{env} copies no backups off-site (no `[environments.{env}.backup.offsite]`).")
        }
        (true, None) => {
            format!("No backup of {env} has an off-site copy yet; `backup list {env}` shows them.")
        }
        (true, Some(n)) => format!(
            "Backup `{n}` of {env} has no off-site copy; `backup list {env}` shows which do."
        ),
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
            UserError::NothingToVerify => "nothing_to_verify",
            UserError::NoOffsiteCopy { .. } => "no_offsite_copy",
            UserError::AlreadyThere { .. } => "already_there",
            UserError::Busy { .. } => "busy",
            UserError::NoCluster { .. } => "no_cluster",
            UserError::Cluster { .. } => "cluster",
            UserError::Locked { .. } => "locked",
            UserError::AlreadyLocked { .. } => "already_locked",
            UserError::NotLocked { .. } => "not_locked",
            UserError::CannotRollBack { .. } => "cannot_roll_back",
            UserError::WouldBeUndone { .. } => "would_be_undone",
            UserError::NoSuchOperation { .. } => "no_such_operation",
            UserError::AlreadyFinished { .. } => "already_finished",
            UserError::RolesUnavailable { .. } => "roles_unavailable",
            UserError::Refused(_) => "refused",
            UserError::MissedWhileOffline { .. } => "missed_while_offline",
            UserError::ChangedSinceAsked { .. } => "changed_since_asked",
            UserError::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_reads_as_a_sentence_that_names_what_to_do() {
        let cases = [
            (
                UserError::Busy {
                    env: "prod".into(),
                    op: 41,
                    holder: Some(Holder {
                        command: "deploy".into(),
                        by: "@alice".into(),
                        ago: "2 min ago".into(),
                    }),
                },
                "prod is busy with deploy #41 (started by @alice 2 min ago).",
            ),
            (
                UserError::Busy {
                    env: "prod".into(),
                    op: 41,
                    holder: None,
                },
                "prod is busy with operation #41.",
            ),
            (
                UserError::Locked {
                    env: "prod".into(),
                    by: "bob".into(),
                    ago: "3m ago".into(),
                    reason: Some("release freeze".into()),
                },
                "prod is locked by @bob (3m ago): release freeze. `unlock prod` lifts it.",
            ),
            (
                UserError::NoSuchBackup {
                    env: "test".into(),
                    name: None,
                },
                "No backup of test is known; `backup now test` takes one.",
            ),
            (
                UserError::NoSuchBackup {
                    env: "test".into(),
                    name: Some("x".into()),
                },
                "No backup of test is called `x`; `backup list test` shows them.",
            ),
            (
                UserError::AlreadyThere {
                    env: "test".into(),
                    version: "v3.1".into(),
                },
                "test is already running v3.1; nothing to do.",
            ),
            (
                UserError::ChangedSinceAsked {
                    op: 12,
                    what: "prod was locked by @bob at 10:31 UTC (release freeze)".into(),
                    requester: "alice".into(),
                    action: "deploying".into(),
                },
                "prod was locked by @bob at 10:31 UTC (release freeze) after @alice asked for #12: not deploying. Send the command again if it is still wanted.",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
            assert_ne!(e.label(), "refused", "{e:?} has its own label");
        }
    }
}
