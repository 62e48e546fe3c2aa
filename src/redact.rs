//! The one redaction pass for outside text (logs, events, API errors, termination messages, smoke-test bodies): secrets out, mass mentions and code-fence breakouts defused.
//!
//! Three layers, cheapest first: exact values of the Secrets the bot's Jobs read ([`values`],
//! when `redact_secret_values` is on), the rule table ([`rules`]: the vendor-token rules of the
//! `nosecrets-rules` crate and our own for command-line options, URLs, key/value pairs and SQL,
//! each woken by its keywords), and base64 runs that decode to something a rule would catch.

mod cli;
pub mod control;
mod rules;
pub mod values;

use std::sync::LazyLock;

use base64::Engine as _;
use regex::{Captures, Regex};

pub use control::{escape_controls, escape_log_record};

/// Why a redaction rule or the exact values could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction rule {id} does not build: {reason}")]
    RuleInvalid { id: String, reason: String },
    #[error("the vendor rule list cannot be read: {reason}")]
    RulesUnreadable { reason: String },
}

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A zero-width space: breaks a mention or a code fence without changing what a reader sees.
const ZWSP: char = '\u{200B}';

static BASE64ISH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_-]{16,}={0,2}").expect("base64 pattern"));

static MASS_MENTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)@(all|here|everyone)\b").expect("mention pattern"));

/// `text` with every credential it contains replaced by `***`. Works on whole texts: a secret
/// split over lines (a PEM block, a JSON value on the next line) is found too.
pub fn redact(text: &str) -> String {
    let exact = values::apply(text);
    let out = rules::RULES.apply(&exact);
    redact_encoded(&out)
}

/// Base64 runs that decode to text holding a credential or a connection string are masked.
fn redact_encoded(text: &str) -> String {
    BASE64ISH
        .replace_all(text, |c: &Captures<'_>| {
            let token = &c[0];
            if hides_secret(token) {
                MASK.to_string()
            } else {
                token.to_string()
            }
        })
        .into_owned()
}

fn hides_secret(token: &str) -> bool {
    let trimmed = token.trim_end_matches('=');
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().any(|e| {
        e.decode(trimmed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|s| {
                s.contains("://") || s.contains("PRIVATE KEY") || rules::RULES.finds(&s)
            })
    })
}

/// Mass mentions (`@all`, `@here`) no longer notify anyone and a code fence no longer closes:
/// for text that is quoted into a message (outside text, echoed user text).
pub fn defuse(text: &str) -> String {
    let out = MASS_MENTION.replace_all(text, |c: &Captures<'_>| format!("@{ZWSP}{}", &c[1]));
    out.replace("```", &format!("`{ZWSP}`{ZWSP}`"))
}

/// Outside text made fit for chat and logs: redacted, then defused.
pub fn outside(text: &str) -> String {
    defuse(&redact(text))
}

/// The last pass over every message the bot sends: redacted, and mass mentions defused except
/// one deliberate page (`@here ` or `@all ` at the very start, which only the bot's own alert
/// texts put there).
pub fn outgoing(text: &str) -> String {
    let redacted = redact(text);
    let (page, rest) = ["@here ", "@all "]
        .iter()
        .find_map(|p| redacted.strip_prefix(p).map(|rest| (*p, rest)))
        .unwrap_or(("", redacted.as_str()));
    let rest = MASS_MENTION.replace_all(rest, |c: &Captures<'_>| format!("@{ZWSP}{}", &c[1]));
    format!("{page}{rest}")
}

#[cfg(test)]
mod tests;
