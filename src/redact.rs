//! The one redaction pass for outside text (logs, events, API errors, termination messages, smoke-test bodies): secrets out, mass mentions and code-fence breakouts defused.

use std::sync::LazyLock;

use base64::Engine as _;
use regex::{Captures, Regex};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A zero-width space: breaks a mention or a code fence without changing what a reader sees.
const ZWSP: char = '\u{200B}';

struct Rule {
    re: Regex,
    rep: &'static str,
}

fn rule(re: &str, rep: &'static str) -> Rule {
    Rule {
        re: Regex::new(re).unwrap_or_else(|e| panic!("redaction rule {re}: {e}")),
        rep,
    }
}

/// Key names whose values are secrets (as `KEY=value`, `key: value`, `"key": "value"`).
const SECRET_KEY: &str = r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|pwd|pass|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|session[_-]?id|cookie|signature|sig)";

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let key = format!(r#"(?i)(\b{SECRET_KEY}\b\]?(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?)"#);
    vec![
        // PEM private keys, also when the tail of a log cut off their end.
        rule(
            r"(?s)(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----).*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            "$1 *** -----END PRIVATE KEY-----",
        ),
        // ... or their beginning.
        rule(
            r"(?s)\A(?:[^-]|-[^-]|--[^-]|---[^-]|----[^-])*?-----END ([A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----",
            "*** -----END ${1}PRIVATE KEY-----",
        ),
        // Authorization headers: everything after the header name, whatever the scheme.
        rule(
            r#"(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*)[^\r\n"']+"#,
            "$1***",
        ),
        rule(r"(?i)\b(bearer)\s+[^\s,;]+", "$1 ***"),
        rule(r"(?i)\b(basic)\s+[A-Za-z0-9+/=]{6,}", "$1 ***"),
        // scheme://user:password@host (empty user, `@` inside the password), scheme://token@host
        rule(
            r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s:/@]*):[^\s/?#]*@",
            "$1$2:***@",
        ),
        rule(r"(?i)\b([a-z][a-z0-9+.-]*://)[A-Za-z0-9_-]{20,}@", "$1***@"),
        // The API server quoting a rejected secret field: `data[password]: Invalid value: "..."`.
        rule(
            &format!(r#"(?i)(\b{SECRET_KEY}\b\]?:\s*Invalid value:\s*)"[^"]*""#),
            "$1\"***\"",
        ),
        // Secret-looking keys with quoted values (kept quoted), then bare values.
        rule(&format!(r#"{key}"[^"\r\n]*""#), "$1\"***\""),
        rule(&format!(r"{key}'[^'\r\n]*'"), "$1'***'"),
        rule(
            &format!(r#"{key}\\"(?:[^"\\]|\\[^"])*\\""#),
            "$1\\\"***\\\"",
        ),
        rule(&format!(r#"{key}[^\s"',;&\\]+"#), "$1***"),
        // Command-line flags: --password x, --password=x, -p x, -px
        rule(
            r#"(?i)((?:^|\s)--?(?:password|passwd|pass|token|secret|api-key|apikey|access-key|secret-key|auth-token)(?:=|\s+))(?:'[^']*'|"[^"]*"|\S+)"#,
            "$1***",
        ),
        rule(r#"((?:^|\s)-p\s*)(?:'[^']*'|"[^"]*"|[^\s-]\S*)"#, "$1***"),
        // Well-known token formats.
        rule(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{16,})\b",
            "***",
        ),
        rule(
            r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            "***",
        ),
    ]
});

static BASE64ISH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_-]{16,}={0,2}").expect("base64 pattern"));

static MASS_MENTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)@(all|here|everyone)\b").expect("mention pattern"));

/// `text` with every credential it contains replaced by `***`. Works on whole texts: a secret
/// split over lines (a PEM block, a JSON value on the next line) is found too.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for r in RULES.iter() {
        if r.re.is_match(&out) {
            out = r.re.replace_all(&out, r.rep).into_owned();
        }
    }
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
                s.contains("://")
                    || s.contains("PRIVATE KEY")
                    || RULES.iter().any(|r| r.re.is_match(&s))
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
