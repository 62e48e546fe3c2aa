//! The rule table: the vendor-token rules of `nosecrets-rules` and our own, each behind keywords so text holding none of them costs one automaton scan.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Captures, Regex};

use super::{MASK, RedactError, cli};

/// How a match is rewritten.
pub(super) enum Action {
    /// A replacement template (`$1***`).
    Template(&'static str),
    /// Capture group `n` becomes `***`; the rest of the match stays.
    Group(usize),
    /// Decides from the captures and the whole text (the command a short option belongs to).
    Custom(fn(&Captures<'_>, &str) -> String),
}

/// One rule: a pattern, what to do with a match, and the keywords without which it cannot match.
pub(super) struct Rule {
    /// Named by the tests (which rules the vendor list gave).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) id: String,
    re: Regex,
    action: Action,
    /// Lower-case literals; the rule runs only when one is in the text. Empty: always runs.
    keywords: Vec<String>,
    /// Also runs when the text starts with this byte (a keyword needs something before it).
    at_start: Option<u8>,
}

impl Rule {
    fn rewrite(&self, c: &Captures<'_>, text: &str) -> String {
        match &self.action {
            Action::Template(t) => {
                let mut out = String::new();
                c.expand(t, &mut out);
                out
            }
            Action::Group(n) => mask_group(c, *n),
            Action::Custom(f) => f(c, text),
        }
    }
}

/// The match with capture group `n` replaced by `***` (the whole match when the group is absent).
pub(super) fn mask_group(c: &Captures<'_>, n: usize) -> String {
    let Some(all) = c.get(0) else {
        return String::new();
    };
    match c.get(n) {
        Some(g) if n > 0 && !g.as_str().is_empty() => {
            let s = all.as_str();
            let (a, b) = (g.start() - all.start(), g.end() - all.start());
            format!("{}{MASK}{}", &s[..a], &s[b..])
        }
        Some(_) if n > 0 => all.as_str().to_string(),
        _ => MASK.to_string(),
    }
}

fn own(id: &str, re: &str, action: Action, keywords: &[&str]) -> Result<Rule, RedactError> {
    Ok(Rule {
        id: id.to_string(),
        re: Regex::new(re).map_err(|e| RedactError::RuleInvalid {
            id: id.to_string(),
            reason: e.to_string(),
        })?,
        action,
        keywords: keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
        at_start: None,
    })
}

/// Key names whose values are secrets. Long names count with any prefix (`encryption_password`,
/// `AWS_SECRET_ACCESS_KEY`); short ones only as a whole word or after `_`, `.`, `-` or a
/// camel-case hump (`MONGO_PASS`, `encryptionKey`), so `monkey` or `bypass` are left alone.
pub(super) const SECRET_KEY: &str = r"(?:[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|session[_-]?id|cookie|signature)|(?:[A-Za-z0-9.-]*[_.-])?(?:key|auth|pw|pwd|pass|sig)|[A-Za-z0-9]*(?-i:[a-z0-9](?:Key|KEY|Auth|AUTH|Pw|PW|Pwd|PWD|Pass|PASS)))";

/// Keywords of the key-name rules.
const KEY_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "pw",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "session",
    "cookie",
    "sig",
];

fn own_rules() -> (Vec<Rule>, Vec<RedactError>) {
    use Action::{Custom, Group, Template};
    let key = format!(r#"(?i)(\b{SECRET_KEY}\b\]?(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?)"#);
    let built = [
        // PEM private keys, also when the tail of a log cut off their end ...
        own(
            "private-key-block",
            r"(?s)(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----).*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            Template("$1 *** -----END PRIVATE KEY-----"),
            &["private key"],
        ),
        // ... or their beginning.
        own(
            "private-key-tail",
            r"(?s)\A(?:[^-]|-[^-]|--[^-]|---[^-]|----[^-])*?-----END ([A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----",
            Template("*** -----END ${1}PRIVATE KEY-----"),
            &["private key"],
        ),
        // Authorization headers: everything after the header name, whatever the scheme.
        own(
            "authorization-header",
            r#"(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*)[^\r\n"']+"#,
            Template("$1***"),
            &["authorization"],
        ),
        own(
            "bearer",
            r"(?i)\b(bearer)\s+[^\s,;]+",
            Template("$1 ***"),
            &["bearer"],
        ),
        own(
            "basic",
            r"(?i)\b(basic)\s+[A-Za-z0-9+/=]{6,}",
            Template("$1 ***"),
            &["basic"],
        ),
        // Webhook URLs carry their token in the path.
        own(
            "slack-webhook-url",
            r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9_/-]+",
            Template("$1***"),
            &["hooks.slack.com"],
        ),
        own(
            "rocketchat-webhook-url",
            r"(/hooks/)[A-Za-z0-9_-]{6,}/[A-Za-z0-9_-]{6,}",
            Template("$1***"),
            &["/hooks/"],
        ),
        // scheme://user:password@host (empty user, `@` or `/` inside the password).
        own(
            "url-credentials",
            r#"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'"]*:)([^\s'"]*)@"#,
            Custom(cli::url_password),
            &["://"],
        ),
        own(
            "url-token-user",
            r"(?i)\b([a-z][a-z0-9+.-]*://)[A-Za-z0-9_-]{20,}@",
            Template("$1***@"),
            &["://"],
        ),
        // The API server quoting a rejected secret field: `data[password]: Invalid value: "..."`.
        own(
            "invalid-value",
            &format!(r#"(?i)(\b{SECRET_KEY}\b\]?:\s*Invalid value:\s*)"[^"]*""#),
            Template("$1\"***\""),
            &["invalid value"],
        ),
        // SQL: CREATE/ALTER USER|ROLE ... PASSWORD '...', IDENTIFIED [WITH plugin] BY '...'.
        own(
            "sql-identified-by",
            r#"(?i)(\bIDENTIFIED(?:\s+WITH\s+[A-Za-z0-9_]+)?\s+BY(?:\s+PASSWORD)?\s+)('[^']*'|"[^"]*"|[^\s;,)]+)"#,
            Template("$1***"),
            &["identified"],
        ),
        own(
            "sql-password-quoted",
            r#"(?i)(\bPASSWORD\s*(?:=\s*)?(?:\(\s*)?)('[^'\r\n]*'|\$\$[^\r\n]*?\$\$)"#,
            Group(2),
            &["password"],
        ),
        own(
            "sql-user-password",
            r#"(?i)\b(?:CREATE|ALTER)\s+(?:USER|ROLE)\b[^;\n]*?\bPASSWORD\s+("[^"]*"|[^\s;,)'"]+)"#,
            Group(1),
            &["password"],
        ),
        // Redis: `requirepass X`, `masterauth X`, `CONFIG SET requirepass X`, `--requirepass X`.
        own(
            "redis-requirepass",
            r#"(?i)\b((?:requirepass|masterauth)[ \t]+)("[^"]*"|'[^']*'|[^\s"']+)"#,
            Template("$1***"),
            &["requirepass", "masterauth"],
        ),
        // `--user user:PASS` (curl, wget), `--proxy-user user:PASS`.
        own(
            "long-user-option",
            r#"(?i)((?:^|[\s'"])--(?:proxy-)?user(?:=|[ \t]+)['"]?[^\s:'"]*:)([^\s'"]+)"#,
            Template("$1***"),
            &["--user", "--proxy-user"],
        ),
        // Command-line options naming a secret: --password X, --password=X, --crypt-password2 X,
        // -pass pass:X, --api-key X.
        own(
            "secret-long-option",
            r#"(?i)((?:^|[\s'"(])--?([A-Za-z0-9-]*(?:password|passwd|passphrase|pass(?:in|out|word)?|token|secret|api-?key|apikey|access-key|secret-key|auth-token|auth|credentials?|key))[0-9]?(?:=|[ \t]+))('[^']*'|"[^"]*"|[^\s'"]+)"#,
            Custom(cli::long_option),
            &["--", " -pass", "\t-pass", "'-pass", "\"-pass"],
        ),
        // Short options: each tool's own letter (mysql -p, redis-cli -a, curl -u user:PASS, ...).
        own(
            "secret-short-option",
            r#"(^|[\s'"(])-([pPauUwsk])([ \t]*)('[^']*'|"[^"]*"|[^\s'"]+)"#,
            Custom(cli::short_option),
            &[" -", "\t-", "\n-", "'-", "\"-", "(-"],
        )
        .map(|r| Rule {
            at_start: Some(b'-'),
            ..r
        }),
        own(
            "htpasswd-batch",
            r"\bhtpasswd((?:[ \t]+-[A-Za-z]+)+)[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(\S+))?",
            Custom(cli::htpasswd),
            &["htpasswd"],
        ),
        // Secret-looking keys with quoted values (kept quoted), then bare values.
        own(
            "key-double-quoted",
            &format!(r#"{key}"[^"\r\n]*""#),
            Template("$1\"***\""),
            KEY_WORDS,
        ),
        own(
            "key-single-quoted",
            &format!(r"{key}'[^'\r\n]*'"),
            Template("$1'***'"),
            KEY_WORDS,
        ),
        own(
            "key-escaped-quoted",
            &format!(r#"{key}\\"(?:[^"\\]|\\[^"])*\\""#),
            Template("$1\\\"***\\\""),
            KEY_WORDS,
        ),
        own(
            "key-bare",
            &format!(r#"{key}[^\s"',;&\\]+"#),
            Template("$1***"),
            KEY_WORDS,
        ),
        // A long high-entropy word right after a key name, without `=` or `:` (`token 9f8Xa...`).
        own(
            "key-high-entropy-word",
            &format!(
                r"(?i)(\b{SECRET_KEY}\b[ \t]+(?:is[ \t]+|was[ \t]+)?)([A-Za-z0-9+/_=.~-]{{16,}})"
            ),
            Custom(cli::entropic_word),
            KEY_WORDS,
        ),
        // Token shapes no vendor list spells the way they appear in our logs.
        own(
            "vendor-token-shapes",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{16,}|rk_live_[A-Za-z0-9]{16,}|npm_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{30,})\b",
            Template("***"),
            &[
                "ghp_",
                "gho_",
                "ghu_",
                "ghs_",
                "ghr_",
                "github_pat_",
                "glpat-",
                "xox",
                "xapp-",
                "akia",
                "sk_live_",
                "rk_live_",
                "npm_",
                "aiza",
            ],
        ),
        own(
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            Template("***"),
            &["eyj"],
        ),
    ];
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for r in built {
        match r {
            Ok(r) => rules.push(r),
            Err(e) => errors.push(e),
        }
    }
    (rules, errors)
}

/// The vendor-token rules the `nosecrets-rules` crate maintains; the matched token (its capture
/// group) becomes `***`, the words around it stay. Their allow-lists (`example`, `test`) are not
/// used: a placeholder masked by mistake costs nothing, a real token let through does.
fn vendor_rules() -> Result<(Vec<Rule>, Vec<RedactError>), RedactError> {
    let list = nosecrets_rules::load_builtin_rules().map_err(|e| RedactError::RulesUnreadable {
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    // Our private-key rule masks the whole block; theirs would mask only its first line.
    for r in list.into_iter().filter(|r| r.id != "private-key") {
        let re = match Regex::new(&r.pattern) {
            Ok(re) => re,
            Err(e) => {
                errors.push(RedactError::RuleInvalid {
                    id: format!("vendor:{}", r.id),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        out.push(Rule {
            id: format!("vendor:{}", r.id),
            re,
            action: Action::Group(r.capture),
            keywords: r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            at_start: None,
        });
    }
    Ok((out, errors))
}

/// Every rule and the one automaton over all their keywords.
pub(super) struct RuleSet {
    pub(super) rules: Vec<Rule>,
    /// `None` when it could not be built: then every rule runs.
    finder: Option<AhoCorasick>,
    /// For each keyword of the automaton, the rules it wakes.
    wakes: Vec<Vec<usize>>,
}

impl RuleSet {
    /// The table and the rules that could not be built.
    pub(super) fn build() -> (RuleSet, Vec<RedactError>) {
        let (mut rules, mut errors) = own_rules();
        match vendor_rules() {
            Ok((vendor, bad)) => {
                rules.extend(vendor);
                errors.extend(bad);
            }
            Err(e) => errors.push(e),
        }
        let mut words: Vec<String> = Vec::new();
        let mut wakes: Vec<Vec<usize>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.keywords {
                match words.iter().position(|w| w == k) {
                    Some(p) => wakes[p].push(i),
                    None => {
                        words.push(k.clone());
                        wakes.push(vec![i]);
                    }
                }
            }
        }
        let finder = match AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&words)
        {
            Ok(f) => Some(f),
            Err(e) => {
                // Without the pre-filter every rule runs on every text: slower, never weaker.
                errors.push(RedactError::RuleInvalid {
                    id: "keywords".into(),
                    reason: e.to_string(),
                });
                for r in &mut rules {
                    r.keywords.clear();
                }
                words.clear();
                wakes.clear();
                None
            }
        };
        (
            RuleSet {
                rules,
                finder,
                wakes,
            },
            errors,
        )
    }

    /// Which rules may match `text`: one pass of the keyword automaton.
    fn awake(&self, text: &str) -> Vec<bool> {
        let mut on: Vec<bool> = self
            .rules
            .iter()
            .map(|r| {
                r.keywords.is_empty()
                    || r.at_start
                        .is_some_and(|b| text.as_bytes().first() == Some(&b))
            })
            .collect();
        let Some(finder) = &self.finder else {
            return on;
        };
        for m in finder.find_overlapping_iter(text) {
            for &i in &self.wakes[m.pattern().as_usize()] {
                on[i] = true;
            }
        }
        on
    }

    /// `text` with every rule applied, in table order.
    pub(super) fn apply(&self, text: &str) -> String {
        let on = self.awake(text);
        let mut out = text.to_string();
        for (r, _) in self.rules.iter().zip(on).filter(|(_, on)| *on) {
            if r.re.is_match(&out) {
                let next =
                    r.re.replace_all(&out, |c: &Captures<'_>| r.rewrite(c, &out));
                out = next.into_owned();
            }
        }
        out
    }

    /// Whether any rule would change `text`.
    pub(super) fn finds(&self, text: &str) -> bool {
        self.apply(text) != text
    }
}

/// The rules, built once. A rule that does not build is left out and logged (a unit test makes
/// sure every rule builds), so redaction never stops for one bad pattern.
pub(super) static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    let (set, errors) = RuleSet::build();
    for e in errors {
        tracing::error!(error = %e, "a redaction rule was left out");
    }
    set
});
