//! The pieces every command's grammar shares: positional words and flags, versions, backup names, operation numbers, and the errors that quote them.

use std::sync::LazyLock;

use regex::Regex;

use super::grammar::Token;
use super::{BackupRef, EnvSpec, OpId};
use crate::error::UserError;

/// `s` cut to 40 characters, for quoting what someone typed.
pub(crate) fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("tag regex"));
static IMAGE_REF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$").expect("image regex")
});
static BACKUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9-]{0,62}-\d{8}T\d{6}Z$").expect("backup regex"));
/// A confirmation code as typed.
pub(crate) static CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9]{4,12}$").expect("code regex"));

/// Checks a version: an image tag, or (where the environment allows) a full image reference.
pub fn check_version(v: &str, env: &EnvSpec, usage: &str) -> Result<String, UserError> {
    let bad = |problem: String| UserError::BadArguments {
        usage: usage.to_string(),
        problem,
    };
    if TAG.is_match(v) {
        return Ok(v.to_string());
    }
    if v.contains('/') && IMAGE_REF.is_match(v) {
        if env.allow_image_refs {
            return Ok(v.to_string());
        }
        return Err(bad(format!(
            "`{}` is a full image reference; {} accepts only a tag such as `v3.1`.",
            shorten(v),
            env.name
        )));
    }
    Err(bad(format!(
        "`{}` is not a valid image tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`).",
        shorten(v)
    )))
}

/// An operation number, `42` or `#42`.
pub(crate) fn op_id(s: &str, usage: &str) -> Result<OpId, UserError> {
    s.trim_start_matches('#')
        .parse::<OpId>()
        .map_err(|_| UserError::BadArguments {
            usage: usage.into(),
            problem: format!("`{}` is not an operation number (like `#42`).", shorten(s)),
        })
}

/// A backup name or `latest`.
pub(crate) fn backup_ref(s: &str, usage: &str) -> Result<BackupRef, UserError> {
    if s.eq_ignore_ascii_case("latest") {
        return Ok(BackupRef::Latest);
    }
    if BACKUP.is_match(s) {
        return Ok(BackupRef::Named(s.to_string()));
    }
    Err(UserError::BadArguments {
        usage: usage.into(),
        problem: format!(
            "`{}` is not a backup name (like `prod-20261122T000100Z`) or `latest`.",
            shorten(s)
        ),
    })
}

/// Positional words and flags of a command, with errors for what it does not take.
pub(crate) struct Args {
    pub words: Vec<String>,
    pub flags: Vec<String>,
}

pub(crate) fn split_args(
    rest: Vec<Token>,
    usage: &str,
    command: &str,
    allowed_flags: &[&str],
) -> Result<Args, UserError> {
    let mut words = Vec::new();
    let mut flags = Vec::new();
    for t in rest {
        match t {
            Token::Word(w) => words.push(w),
            Token::Flag(f) if allowed_flags.contains(&f.as_str()) => flags.push(f),
            Token::Flag(f) => {
                let options = if allowed_flags.is_empty() {
                    "it takes no options".to_string()
                } else {
                    format!(
                        "options: {}",
                        allowed_flags
                            .iter()
                            .map(|f| format!("`--{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(UserError::BadArguments {
                    usage: usage.into(),
                    problem: format!("`{command}` has no option `--{}`; {options}.", shorten(&f)),
                });
            }
            Token::Pair(k, v) => words.push(format!("{k}={v}")),
        }
    }
    Ok(Args { words, flags })
}

/// `--from` read as the word `from`, so `from offsite` and `--from offsite` mean the same.
pub(crate) fn from_as_word(rest: Vec<Token>) -> Vec<Token> {
    rest.into_iter()
        .map(|t| match t {
            Token::Flag(f) if f == "from" => Token::Word(f),
            t => t,
        })
        .collect()
}

/// `offsite` or `off-site`.
pub(crate) fn is_offsite(word: &str) -> bool {
    matches!(word.to_lowercase().as_str(), "offsite" | "off-site")
}

/// The answer to a word a command does not take.
pub(crate) fn too_many(usage: &str, extra: &str) -> UserError {
    UserError::BadArguments {
        usage: usage.into(),
        problem: format!("I don't know what `{}` is here.", shorten(extra)),
    }
}

/// A command's arguments are wrong: `problem`, and its usage.
pub(crate) fn bad(usage: &str, problem: impl Into<String>) -> UserError {
    UserError::BadArguments {
        usage: usage.into(),
        problem: problem.into(),
    }
}
