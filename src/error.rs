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
    #[error("{0}")]
    Refused(String),
    #[error(
        "I was offline when you sent this ({age}), so I did not run it: send it again if it is still wanted."
    )]
    MissedWhileOffline { age: String },
    #[error("Something went wrong on my side; the details are in my log.")]
    Internal,
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
            UserError::Refused(_) => "refused",
            UserError::MissedWhileOffline { .. } => "missed_while_offline",
            UserError::Internal => "internal",
        }
    }
}
