//! Commands: which messages address the bot, the typed `Command` they ask for, parsing with clear errors, and help beside each definition.

mod args;
pub mod builtin;
pub mod grammar;
pub mod runbook;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use self::args::{check_version, shorten, too_many};
pub use self::builtin::Answer;
pub use self::builtin::Asks;
pub use self::builtin::help_text;
use self::builtin::{Form, Kind, Query};
use self::grammar::{Token, tokenize};
use self::runbook::{ParamType, RunbookSpec};
use crate::chat::RoomKind;
use crate::config::Config;
use crate::error::UserError;

/// How a message may address the bot.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// `/`, `!`: a message starting with one of these (then a letter) is a command.
    pub prefixes: Vec<String>,
    /// The bot's username, for `@rocketops deploy ...`.
    pub bot_name: String,
}

/// The command text of a message addressed to the bot, or `None` if it is not addressed to it.
/// Channels need a prefix or a mention; in a direct message bare text is a command too.
pub fn addressed_body<'a>(text: &'a str, room: RoomKind, to: &Addressing) -> Option<&'a str> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('@') {
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == ':' || c == ',')
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        if !to.bot_name.is_empty() && name.eq_ignore_ascii_case(&to.bot_name) {
            let body = after.trim_start_matches([':', ',']).trim();
            let body = strip_prefix_of(body, to).unwrap_or(body);
            // `@rocketops` alone is a question too: the answer is the help.
            return Some(if body.is_empty() { "help" } else { body });
        }
        return None;
    }
    if let Some(body) = strip_prefix_of(t, to) {
        return Some(body);
    }
    if room == RoomKind::Direct {
        return (!t.is_empty()).then_some(t);
    }
    // The answers the bot asks for by their bare words (`confirm E2TBR7`, `approve #12`,
    // `cancel #12`) work in any room: nobody says them to anyone else. So does the `help` it
    // points people to, alone or with a command's name (`help deploy`), and nothing looser:
    // "help me" in a channel is said to people.
    (BARE_ANSWER.is_match(t) || is_bare_help(t)).then_some(t)
}

/// Pure: `text` with every command it suggests in backticks (`` `unlock test` ``) written so that
/// it works where it is read: with `prefix` in a channel, where bare words reach no bot; as it is
/// in a direct message. The answers taken bare everywhere (`confirm`, `approve`, `cancel`, `help`)
/// and code blocks are left alone.
pub fn typable_hints(text: &str, prefix: &str, room: RoomKind) -> String {
    if room == RoomKind::Direct || prefix.is_empty() || !text.contains('`') {
        return text.to_string();
    }
    let suggested = |span: &str| {
        let first = span.split_whitespace().next().unwrap_or_default();
        // The answers and `help` are taken bare everywhere (see `addressed_body`).
        builtin::find(first)
            .is_some_and(|b| matches!(b.kind, Kind::Command { .. }) && b.name != "help")
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(tick) = rest.find('`') {
        out.push_str(&rest[..tick]);
        let after = &rest[tick..];
        if let Some(block) = after.strip_prefix("```") {
            // A code block: copied as it is, up to and with its closing fence.
            let end = block.find("```").map_or(block.len(), |e| e + 3);
            out.push_str("```");
            out.push_str(&block[..end]);
            rest = &block[end..];
            continue;
        }
        let inner = &after[1..];
        match inner.find(['`', '\n']) {
            Some(close) if inner.as_bytes()[close] == b'`' => {
                let span = &inner[..close];
                out.push('`');
                // A usage with alternatives (`backup now [ENV] | backup list [ENV]`): each one.
                let parts: Vec<String> = span
                    .split(" | ")
                    .map(|part| {
                        if suggested(part) {
                            format!("{prefix}{part}")
                        } else {
                            part.to_string()
                        }
                    })
                    .collect();
                out.push_str(&parts.join(" | "));
                out.push('`');
                rest = &inner[close + 1..];
            }
            _ => {
                out.push('`');
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `help`, or `help` and a built-in command's name (`help deploy`, `help backup now`), exactly.
fn is_bare_help(t: &str) -> bool {
    let mut words = t.split_whitespace();
    if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("help")) {
        return false;
    }
    let topic = words.map(str::to_lowercase).collect::<Vec<_>>().join(" ");
    topic.is_empty()
        || builtin::ALL.iter().any(|s| {
            s.name == topic
                || (topic.starts_with(&format!("{} ", s.name))
                    && topic.split(' ').count() == 2
                    && s.usage.contains(&topic))
        })
}

/// `confirm CODE`, `approve #N` and `cancel #N` without a prefix.
static BARE_ANSWER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i:confirm)\s+[A-Z0-9]{6}$|^(?i:approve|cancel)\s+#\d{1,12}$")
        .expect("bare answer pattern")
});

fn strip_prefix_of<'a>(t: &'a str, to: &Addressing) -> Option<&'a str> {
    for p in &to.prefixes {
        if let Some(rest) = t.strip_prefix(p.as_str())
            && rest.chars().next().is_some_and(|c| c.is_alphabetic())
        {
            return Some(rest.trim());
        }
    }
    None
}

pub use crate::journal::OpId;

/// Which backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRef {
    Latest,
    Named(String),
}

/// What `rollback` goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    Revision(i64),
    Version(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleAction {
    List,
    /// `kind`: which of the environment's schedules (all when absent).
    Pause {
        env: Option<String>,
        kind: Option<crate::schedule::Kind>,
    },
    Resume {
        env: Option<String>,
        kind: Option<crate::schedule::Kind>,
    },
}

/// A command the bot understands, with its arguments already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deploy {
        env: String,
        version: String,
        no_backup: bool,
    },
    Rollback {
        env: String,
        to: Option<RollbackTarget>,
    },
    Scale {
        env: String,
        replicas: u32,
        component: Option<String>,
    },
    BackupNow {
        env: Option<String>,
    },
    BackupList {
        env: Option<String>,
    },
    BackupPrune {
        env: String,
    },
    BackupReport {
        env: Option<String>,
    },
    Restore {
        env: String,
        backup: BackupRef,
        from: Option<String>,
        no_safety_backup: bool,
        /// `from offsite`: the archive is fetched from the off-site bucket first.
        offsite: bool,
    },
    Verify {
        env: Option<String>,
        backup: Option<BackupRef>,
        /// `from offsite`: the off-site copy is fetched and proven.
        offsite: bool,
    },
    Status {
        env: Option<String>,
    },
    History {
        env: String,
    },
    Lock {
        env: String,
        reason: Option<String>,
    },
    Unlock {
        env: String,
    },
    Schedule {
        action: ScheduleAction,
    },
    /// Open incidents.
    AlertsList,
    /// Silences an environment's alerts for a while.
    AlertsMute {
        env: String,
        secs: u64,
        reason: Option<String>,
    },
    /// A read-only built-in its own module answers (`help`, `ping`, `whoami`).
    Query {
        query: &'static Query,
        arg: Option<String>,
    },
    /// A command declared in `commands/`.
    Runbook {
        name: String,
        env: String,
        params: BTreeMap<String, String>,
    },
}

impl Command {
    /// The command's name, as in `help`.
    pub fn name(&self) -> &str {
        match self {
            Command::Runbook { name, .. } => name,
            other => builtin::view(other).map_or("", |(b, _)| b.name),
        }
    }

    /// The name the policy knows it by (`backup list` is read-only, `backup now` is not).
    pub fn policy_name(&self) -> &str {
        match self {
            Command::Runbook { name, .. } => name,
            other => builtin::view(other).map_or("", |(_, v)| v.form.policy_name),
        }
    }

    /// The environment it acts on, when it names one.
    pub fn env(&self) -> Option<&str> {
        match self {
            Command::Runbook { env, .. } => Some(env),
            other => builtin::view(other).and_then(|(_, v)| v.env),
        }
    }

    /// Whether it changes anything (and so needs authorization, a lock, maybe confirmation).
    /// A runbook always may.
    pub fn is_mutating(&self) -> bool {
        self.form().is_none_or(|f| f.mutating)
    }

    /// Whether it runs as a journaled operation: a runbook, or a built-in that is one and names
    /// its environment (`backup now` without one starts one operation per environment).
    pub fn is_operation(&self) -> bool {
        self.form().is_none_or(|f| f.operation) && self.env().is_some()
    }

    /// Whom it asks before it runs, besides what the environment's policy asks for.
    pub fn asks(&self) -> Asks {
        self.form().map_or(Asks::AsConfigured, |f| f.asks)
    }

    /// Whether anyone may run it anywhere (`help`, the answers the bot asks for).
    pub fn is_open(&self) -> bool {
        self.form().is_some_and(|f| f.open)
    }

    /// The command in normal form (`deploy prod v3.1`).
    pub fn describe(&self) -> String {
        match self {
            Command::Runbook { name, env, params } => format!(
                "{name} {env}{}",
                params
                    .iter()
                    .map(|(k, v)| format!(" {k}={v}"))
                    .collect::<String>()
            ),
            other => builtin::view(other).map_or_else(String::new, |(_, v)| v.text),
        }
    }

    /// Its built-in form; `None` for a runbook.
    fn form(&self) -> Option<&'static Form> {
        builtin::view(self).map(|(_, v)| v.form)
    }
}

/// An instance of the command the policy calls `name` (a built-in form or a runbook), acting on
/// the first environment, for asking the policy who may run it; `None` for a name it does not know.
pub fn sample(name: &str, grammar: &Grammar) -> Option<Command> {
    let env = grammar
        .environments
        .first()
        .map(|e| e.name.clone())
        .unwrap_or_default();
    if let Some(f) = builtin::form(name) {
        return f.sample.map(|sample| sample(env));
    }
    grammar
        .runbooks
        .iter()
        .any(|r| r.name == name)
        .then(|| Command::Runbook {
            name: name.to_string(),
            env,
            params: BTreeMap::new(),
        })
}

/// One environment as the parser needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    pub name: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Accept `registry/app:tag` as a version, not only a tag.
    pub allow_image_refs: bool,
    /// Names `scale` accepts as COMPONENT.
    pub components: Vec<String>,
}

/// What parsing needs to know: the environments and the runbook commands.
#[derive(Debug, Clone, Default)]
pub struct Grammar {
    pub environments: Vec<EnvSpec>,
    pub runbooks: Vec<RunbookSpec>,
}

impl Grammar {
    pub fn from_config(config: &Config, runbooks: Vec<RunbookSpec>) -> Grammar {
        Grammar {
            environments: config
                .environments
                .iter()
                .map(|(name, e)| EnvSpec {
                    name: name.clone(),
                    min_replicas: e.min_replicas,
                    max_replicas: e.max_replicas,
                    allow_image_refs: e.allow_image_refs,
                    components: vec![e.deployment.clone(), e.database.clone()],
                })
                .collect(),
            runbooks,
        }
    }

    fn env_names(&self) -> String {
        let names: Vec<&str> = self.environments.iter().map(|e| e.name.as_str()).collect();
        match names.as_slice() {
            [] => "none are configured".into(),
            [one] => (*one).to_string(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }

    fn env(&self, usage: &str, given: Option<&str>, command: &str) -> Result<&EnvSpec, UserError> {
        let bad = |problem: String| UserError::BadArguments {
            usage: usage.to_string(),
            problem,
        };
        let Some(given) = given else {
            return Err(bad(format!(
                "`{command}` needs an environment: {}.",
                self.env_names()
            )));
        };
        let lower = given.to_lowercase();
        if let Some(e) = self.environments.iter().find(|e| e.name == lower) {
            return Ok(e);
        }
        let close = self
            .environments
            .iter()
            .map(|e| (strsim::levenshtein(&lower, &e.name), e.name.as_str()))
            .filter(|(d, n)| *d <= 2 && *d < n.len())
            .min()
            .map(|(_, n)| format!(" Did you mean `{n}`?"))
            .unwrap_or_default();
        Err(bad(format!(
            "There is no environment `{}`.{close} Environments: {}.",
            shorten(given),
            self.env_names()
        )))
    }
}

/// The closest known command name, if one is close enough to be a typo.
pub(crate) fn suggest(given: &str, grammar: &Grammar) -> Option<String> {
    builtin::ALL
        .iter()
        .map(|s| s.name.to_string())
        .chain(grammar.runbooks.iter().map(|r| r.name.clone()))
        .map(|n| (strsim::levenshtein(given, &n), n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min()
        .map(|(_, n)| n)
}

/// What the audit log and the metrics record of what someone asked for.
pub trait Asked {
    /// In normal form (`deploy prod v3.1`).
    fn describe(&self) -> String;
    /// The environment it names, if any.
    fn env(&self) -> Option<&str>;
    /// The name the policy knows it by.
    fn policy_name(&self) -> &str;
}

impl Asked for Command {
    fn describe(&self) -> String {
        Command::describe(self)
    }
    fn env(&self) -> Option<&str> {
        Command::env(self)
    }
    fn policy_name(&self) -> &str {
        Command::policy_name(self)
    }
}

impl Asked for Answer {
    fn describe(&self) -> String {
        Answer::describe(self)
    }
    fn env(&self) -> Option<&str> {
        None
    }
    fn policy_name(&self) -> &str {
        self.name()
    }
}

/// What a message addressed to the bot asks for: a command, or an answer to its question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Command(Command),
    Answer(Answer),
}

impl Request {
    /// What the audit log and the metrics record of it.
    pub fn asked(&self) -> &(dyn Asked + Sync) {
        match self {
            Request::Command(c) => c,
            Request::Answer(a) => a,
        }
    }
}

/// Parses a command (without prefix or mention); an answer to the bot's question is not one.
pub fn parse(body: &str, grammar: &Grammar) -> Result<Command, UserError> {
    match parse_request(body, grammar)? {
        Request::Command(c) => Ok(c),
        Request::Answer(a) => Err(UserError::BadArguments {
            usage: builtin::find(a.name()).map_or("", |b| b.usage).into(),
            problem: format!(
                "`{}` answers a question of mine; it is not a command of its own.",
                a.name()
            ),
        }),
    }
}

/// Parses the text of a message addressed to the bot (without prefix or mention).
pub fn parse_request(body: &str, grammar: &Grammar) -> Result<Request, UserError> {
    let tokens = tokenize(body)?;
    let mut it = tokens.into_iter();
    let Some(first) = it.next() else {
        return Err(UserError::UnknownCommand {
            given: String::new(),
            suggestion: Some("help".into()),
        });
    };
    let name = match &first {
        Token::Word(w) => w.trim_start_matches(['/', '!']).to_lowercase(),
        Token::Flag(f) => format!("--{f}"),
        Token::Pair(k, v) => format!("{k}={v}"),
    };
    let rest: Vec<Token> = it.collect();
    if let Some(b) = builtin::find(&name) {
        return match b.kind {
            Kind::Command { parse, .. } => parse(rest, grammar).map(Request::Command),
            Kind::Answer { parse } => parse(rest).map(Request::Answer),
        };
    }
    if let Some(r) = grammar.runbooks.iter().find(|r| r.name == name) {
        return parse_runbook(r, rest, grammar).map(Request::Command);
    }
    Err(UserError::UnknownCommand {
        suggestion: suggest(&name, grammar),
        given: shorten(&name),
    })
}

fn parse_runbook(r: &RunbookSpec, rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = r.usage();
    let bad = |problem: String| UserError::BadArguments {
        usage: usage.clone(),
        problem,
    };
    let mut words = Vec::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for t in rest {
        match t {
            Token::Word(w) => words.push(w),
            Token::Pair(k, v) => {
                named.insert(k, v);
            }
            Token::Flag(f) => {
                return Err(bad(format!(
                    "`{}` has no option `--{}`.",
                    r.name,
                    shorten(&f)
                )));
            }
        }
    }
    let mut words = words.into_iter();
    let env = g.env(&usage, words.next().as_deref(), &r.name)?;
    if !r.environments.is_empty() && !r.environments.contains(&env.name) {
        return Err(bad(format!(
            "`{}` is not available in {}; it runs in {}.",
            r.name,
            env.name,
            r.environments.join(", ")
        )));
    }
    let mut params = BTreeMap::new();
    for p in &r.params {
        let value = match named.remove(&p.name).or_else(|| words.next()) {
            Some(v) => v,
            None => match &p.default {
                Some(d) => d.clone(),
                None if p.required => {
                    return Err(bad(format!(
                        "`{}` needs {} ({}).",
                        r.name,
                        p.name.to_uppercase(),
                        p.description
                    )));
                }
                None => continue,
            },
        };
        let checked = match &p.kind {
            ParamType::Version => check_version(&value, env, &usage)?,
            ParamType::Integer { min, max } => {
                let n: i64 = value.parse().map_err(|_| {
                    bad(format!(
                        "{} must be a whole number, not `{}`.",
                        p.name.to_uppercase(),
                        shorten(&value)
                    ))
                })?;
                if n < *min || n > *max {
                    return Err(bad(format!(
                        "{} must be between {min} and {max}, not {n}.",
                        p.name.to_uppercase()
                    )));
                }
                n.to_string()
            }
            ParamType::Choice { values } => {
                if !values.contains(&value) {
                    return Err(bad(format!(
                        "{} must be one of {}, not `{}`.",
                        p.name.to_uppercase(),
                        values.join(", "),
                        shorten(&value)
                    )));
                }
                value
            }
            ParamType::Word => {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    || value.is_empty()
                    || value.len() > 63
                {
                    return Err(bad(format!(
                        "{} may contain letters, digits, `-`, `_` and `.` only.",
                        p.name.to_uppercase()
                    )));
                }
                value
            }
        };
        params.insert(p.name.clone(), checked);
    }
    if let Some(extra) = words.next().or_else(|| named.keys().next().cloned()) {
        return Err(too_many(&usage, &extra));
    }
    Ok(Command::Runbook {
        name: r.name.clone(),
        env: env.name.clone(),
        params,
    })
}

#[cfg(test)]
mod tests;
