//! `check-config --online`: logs in as the bot would and checks what a deployment needs on the Rocket.Chat side (version, login, rooms, roles, rate-limit exemption, the slash-command setting).

use std::fmt;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{ConnectOptions, RATE_LIMIT_ADVICE, RocketChat};
use crate::chat::Chat;
use crate::config::RocketChatConfig;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but worse than it should (said why).
    Warning,
    /// `run` would not work.
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// Everything checked, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether anything would stop `run`.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Failed)
    }

    pub(crate) fn push(&mut self, what: &'static str, verdict: Verdict, detail: impl Into<String>) {
        self.checks.push(Check {
            what,
            verdict,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = match c.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warning => "WARN",
                Verdict::Failed => "FAIL",
            };
            writeln!(f, "  {mark} {:<14} {}", c.what, c.detail)?;
        }
        Ok(())
    }
}

/// Pure: what the slash-command setting means for the users.
pub fn slash_advice(allowed: Option<bool>, bot: &str) -> (Verdict, String) {
    match allowed {
        Some(true) => (
            Verdict::Ok,
            "Message_AllowUnrecognizedSlashCommand is on: `/deploy …` reaches the bot".into(),
        ),
        Some(false) => (
            Verdict::Warning,
            format!(
                "Message_AllowUnrecognizedSlashCommand is off: `/deploy …` typed in the web client never leaves it, so no bot sees it. `!deploy …`, `@{bot} deploy …` and plain `deploy …` in a direct message still work. To allow slash commands: Administration > Settings > Message > \"Allow unrecognized slash commands\"."
            ),
        ),
        None => (
            Verdict::Warning,
            "could not read Message_AllowUnrecognizedSlashCommand; if it is off, `/deploy` typed in the web client never reaches the bot (`!deploy` and mentions still do)".into(),
        ),
    }
}

/// Logs in with `cfg` and checks the server from the bot's side.
pub async fn check(cfg: &RocketChatConfig) -> Report {
    let mut report = Report::default();
    let cancel = CancellationToken::new();
    let connected = tokio::time::timeout(
        cfg.connect_timeout + cfg.call_timeout * 3,
        RocketChat::connect(cfg.clone(), ConnectOptions::default(), cancel.clone()),
    )
    .await;
    let chat = match connected {
        Ok(Ok((chat, _incoming))) => chat,
        Ok(Err(e)) => {
            report.push("login", Verdict::Failed, e.to_string());
            return report;
        }
        Err(_) => {
            cancel.cancel();
            report.push(
                "login",
                Verdict::Failed,
                format!(
                    "no session with {} within the connect and call timeouts",
                    cfg.url
                ),
            );
            return report;
        }
    };
    let bot = chat.bot_username();
    match chat.server_version() {
        Some(v) => report.push(
            "server",
            Verdict::Ok,
            format!(
                "Rocket.Chat {v} at {} (supported: {} and newer)",
                cfg.url,
                super::server::OLDEST_SUPPORTED
            ),
        ),
        None => report.push(
            "server",
            Verdict::Warning,
            format!(
                "{} did not say which version it runs; taken for a current one",
                cfg.url
            ),
        ),
    }
    let roles = chat.roles();
    report.push(
        "login",
        Verdict::Ok,
        format!("as @{bot} (roles: {})", roles.join(", ")),
    );
    let needed = super::rooms::needed_rooms(cfg);
    let missing = chat.missing_rooms();
    for name in &needed {
        match missing.iter().find(|m| &m.name == name) {
            Some(m) => report.push("room", Verdict::Failed, m.explain(&bot)),
            None => report.push("room", Verdict::Ok, format!("#{name}: the bot is a member")),
        }
    }
    if !roles.iter().any(|r| r == "bot") {
        report.push(
            "roles",
            Verdict::Warning,
            format!("@{bot} lacks the `bot` role, which carries `send-many-messages` and `api-bypass-rate-limit`"),
        );
    }
    match chat.rate_limit_exempt().await {
        Ok(true) => report.push(
            "rate limit",
            Verdict::Ok,
            "exempt (`api-bypass-rate-limit`)",
        ),
        Ok(false) => report.push("rate limit", Verdict::Warning, RATE_LIMIT_ADVICE),
        Err(e) => report.push(
            "rate limit",
            Verdict::Warning,
            format!("could not read the permissions ({e})"),
        ),
    }
    let slash = chat
        .public_setting("Message_AllowUnrecognizedSlashCommand")
        .await
        .ok()
        .flatten()
        .and_then(|v| match v {
            Value::Bool(b) => Some(b),
            _ => None,
        });
    let (verdict, detail) = slash_advice(slash, &bot);
    report.push("slash commands", verdict, detail);
    cancel.cancel();
    chat.closed(std::time::Duration::from_secs(2)).await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_slash_commands_off_the_advice_says_what_still_works() {
        let (v, text) = slash_advice(Some(false), "rocketops");
        assert_eq!(v, Verdict::Warning);
        assert!(text.contains("`!deploy …`"), "{text}");
        assert!(text.contains("`@rocketops deploy …`"), "{text}");
        assert!(text.contains("Allow unrecognized slash commands"), "{text}");
        assert_eq!(slash_advice(Some(true), "b").0, Verdict::Ok);
        assert_eq!(slash_advice(None, "b").0, Verdict::Warning);
    }

    #[test]
    fn a_report_fails_only_on_a_failed_check() {
        let mut r = Report::default();
        r.push("rate limit", Verdict::Warning, "x");
        assert!(!r.failed());
        r.push("room", Verdict::Failed, "#ops was not found");
        assert!(r.failed());
        let text = r.to_string();
        assert!(text.contains("WARN rate limit"), "{text}");
        assert!(text.contains("FAIL room"), "{text}");
    }
}
