//! Commands: which messages address the bot, the typed `Command` they ask for, parsing with clear errors, and help beside each definition.

pub mod grammar;
pub mod runbook;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

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
        COMMANDS.iter().any(|s| s.name == first)
            && !["confirm", "approve", "cancel", "help"].contains(&first)
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
        || COMMANDS.iter().any(|s| {
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
    Cancel {
        op: OpId,
    },
    Approve {
        op: OpId,
    },
    Confirm {
        code: String,
    },
    Schedule {
        action: ScheduleAction,
    },
    Help {
        topic: Option<String>,
    },
    Ping {
        echo: Option<String>,
    },
    /// Open incidents.
    AlertsList,
    /// Silences an environment's alerts for a while.
    AlertsMute {
        env: String,
        secs: u64,
        reason: Option<String>,
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
            Command::Deploy { .. } => "deploy",
            Command::Rollback { .. } => "rollback",
            Command::Scale { .. } => "scale",
            Command::BackupNow { .. }
            | Command::BackupList { .. }
            | Command::BackupPrune { .. }
            | Command::BackupReport { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Verify { .. } => "verify",
            Command::Status { .. } => "status",
            Command::History { .. } => "history",
            Command::Lock { .. } => "lock",
            Command::Unlock { .. } => "unlock",
            Command::Cancel { .. } => "cancel",
            Command::Approve { .. } => "approve",
            Command::Confirm { .. } => "confirm",
            Command::Schedule { .. } => "schedule",
            Command::Help { .. } => "help",
            Command::Ping { .. } => "ping",
            Command::AlertsList | Command::AlertsMute { .. } => "alerts",
            Command::Runbook { name, .. } => name,
        }
    }

    /// The name the policy knows it by (`backup list` is read-only, `backup now` is not).
    pub fn policy_name(&self) -> &str {
        match self {
            Command::BackupList { .. } => "backup list",
            Command::BackupNow { .. } => "backup now",
            Command::BackupPrune { .. } => "backup prune",
            Command::BackupReport { .. } => "backup report",
            Command::Schedule {
                action: ScheduleAction::List,
            } => "schedule list",
            Command::AlertsList => "alerts list",
            Command::AlertsMute { .. } => "alerts mute",
            other => other.name(),
        }
    }

    /// The environment it acts on, when it names one.
    pub fn env(&self) -> Option<&str> {
        match self {
            Command::Deploy { env, .. }
            | Command::Rollback { env, .. }
            | Command::Scale { env, .. }
            | Command::Restore { env, .. }
            | Command::History { env }
            | Command::Lock { env, .. }
            | Command::Unlock { env }
            | Command::AlertsMute { env, .. }
            | Command::BackupPrune { env }
            | Command::Runbook { env, .. } => Some(env),
            Command::BackupNow { env }
            | Command::BackupList { env }
            | Command::BackupReport { env }
            | Command::Verify { env, .. }
            | Command::Status { env } => env.as_deref(),
            Command::Schedule {
                action: ScheduleAction::Pause { env, .. } | ScheduleAction::Resume { env, .. },
            } => env.as_deref(),
            _ => None,
        }
    }

    /// Whether it changes anything (and so needs authorization, a lock, maybe confirmation).
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            Command::BackupList { .. }
                | Command::BackupReport { .. }
                | Command::Status { .. }
                | Command::History { .. }
                | Command::Help { .. }
                | Command::Ping { .. }
                | Command::Confirm { .. }
                | Command::Approve { .. }
                | Command::AlertsList
                | Command::Schedule {
                    action: ScheduleAction::List
                }
        )
    }
}

/// A built-in command's help: usage, summary, details and examples, written once, here.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub details: &'static str,
    pub examples: &'static [&'static str],
    /// Changes something (authorized per environment; confirmation where configured).
    pub mutating: bool,
}

/// Every built-in command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "deploy",
        usage: "deploy ENV VERSION [--no-backup]",
        summary: "rolls out a new version (image tag) of the app",
        details: "Takes a backup first in production (skip with `--no-backup` if you may), sets the image tag, follows the rollout and smoke-tests it; rolls back on failure.",
        examples: &["deploy test v3.1", "deploy prod 7.0.0"],
        mutating: true,
    },
    Spec {
        name: "rollback",
        usage: "rollback ENV [REVISION|VERSION]",
        summary: "goes back to the previous (or a given) revision",
        details: "Without an argument, the revision before the current one; a number is a revision from `history`, anything else a version.",
        examples: &["rollback prod", "rollback prod 4", "rollback test v3.0"],
        mutating: true,
    },
    Spec {
        name: "scale",
        usage: "scale ENV REPLICAS [COMPONENT]",
        summary: "sets the number of replicas",
        details: "COMPONENT is the app (default) or the database; an autoscaler on the app is taken into account.",
        examples: &["scale test 5", "scale prod 4 rocketchat"],
        mutating: true,
    },
    Spec {
        name: "backup",
        usage: "backup now [ENV] | backup list [ENV] | backup prune ENV | backup report [ENV]",
        summary: "takes a backup now, lists backups, applies the retention policy, or reports",
        details: "`backup now` runs the environment's backup job; `backup list` shows backups newest first with size, age and whether a test-restore proved them; `backup prune` deletes what the retention policy (grandfather-father-son) no longer keeps; `backup report` posts the daily report now.",
        examples: &[
            "backup now prod",
            "backup list prod",
            "backup prune test",
            "backup report prod",
        ],
        mutating: true,
    },
    Spec {
        name: "restore",
        usage: "restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]",
        summary: "restores a backup into an environment",
        details: "Always asks for confirmation. Takes a safety backup, scales the app to 0, restores, scales back and smoke-tests.",
        examples: &[
            "restore test latest from prod",
            "restore prod prod-20261121T000100Z",
        ],
        mutating: true,
    },
    Spec {
        name: "verify",
        usage: "verify [ENV] [BACKUP] [from offsite]",
        summary: "test-restores a backup into a throwaway database",
        details: "Proves a backup can be restored, and records how long it took.",
        examples: &["verify prod", "verify prod latest"],
        mutating: true,
    },
    Spec {
        name: "status",
        usage: "status [ENV]",
        summary: "versions, replicas, last deploy, backup and lock per environment",
        details: "",
        examples: &["status", "status prod"],
        mutating: false,
    },
    Spec {
        name: "history",
        usage: "history ENV",
        summary: "the app's revisions: version, change cause, who and when",
        details: "",
        examples: &["history prod"],
        mutating: false,
    },
    Spec {
        name: "lock",
        usage: "lock ENV [REASON...]",
        summary: "freezes an environment against changes",
        details: "Until `unlock`, changing commands on it are refused and the reason is shown.",
        examples: &["lock prod \"release freeze until Monday\""],
        mutating: true,
    },
    Spec {
        name: "unlock",
        usage: "unlock ENV",
        summary: "lifts a freeze",
        details: "",
        examples: &["unlock prod"],
        mutating: true,
    },
    Spec {
        name: "cancel",
        usage: "cancel OP",
        summary: "stops a running or pending operation",
        details: "OP is the operation's number, as in `#42`.",
        examples: &["cancel #42"],
        mutating: true,
    },
    Spec {
        name: "approve",
        usage: "approve OP",
        summary: "approves someone else's operation (two-person rule)",
        details: "Only another user who may run the command there can approve it. Where the environment asks for more than one approval, each must come from a different person; the bot says who approved so far and how many more it needs.",
        examples: &["approve #42"],
        mutating: false,
    },
    Spec {
        name: "confirm",
        usage: "confirm CODE",
        summary: "confirms your pending command",
        details: "The code is in the question; it expires after a few minutes.",
        examples: &["confirm K7Q2XM"],
        mutating: false,
    },
    Spec {
        name: "schedule",
        usage: "schedule list | schedule pause [ENV] [KIND] | schedule resume [ENV] [KIND]",
        summary: "shows or pauses the scheduled backups, test-restores, pruning and reports",
        details: "KIND is backup, verify, prune, report, weekly or refresh (all when left out). `schedule list` shows each schedule with its next run in its time zone. A paused schedule skips its runs; resuming does not make them up.",
        examples: &[
            "schedule list",
            "schedule pause test",
            "schedule resume prod verify",
        ],
        mutating: true,
    },
    Spec {
        name: "alerts",
        usage: "alerts list | alerts mute ENV DURATION [REASON...]",
        summary: "shows open incidents and the failed operations alerted in the last day, or silences an environment's alerts for a while",
        details: "A mute ends by itself; incidents raised meanwhile are kept and posted when it ends.",
        examples: &["alerts list", "alerts mute test 2h db migration"],
        mutating: true,
    },
    Spec {
        name: "help",
        usage: "help [COMMAND]",
        summary: "lists the commands you may run, or explains one",
        details: "",
        examples: &["help", "help deploy"],
        mutating: false,
    },
    Spec {
        name: "ping",
        usage: "ping [TEXT]",
        summary: "checks that the bot is alive and answering",
        details: "",
        examples: &["ping"],
        mutating: false,
    },
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name == name)
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

fn shorten(s: &str) -> String {
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
static CODE: LazyLock<Regex> =
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

fn op_id(s: &str, usage: &str) -> Result<OpId, UserError> {
    s.trim_start_matches('#')
        .parse::<OpId>()
        .map_err(|_| UserError::BadArguments {
            usage: usage.into(),
            problem: format!("`{}` is not an operation number (like `#42`).", shorten(s)),
        })
}

fn backup_ref(s: &str, usage: &str) -> Result<BackupRef, UserError> {
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

/// The closest known command name, if one is close enough to be a typo.
fn suggest(given: &str, grammar: &Grammar) -> Option<String> {
    COMMANDS
        .iter()
        .map(|s| s.name.to_string())
        .chain(grammar.runbooks.iter().map(|r| r.name.clone()))
        .map(|n| (strsim::levenshtein(given, &n), n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min()
        .map(|(_, n)| n)
}

/// Parses the command text (without prefix or mention).
pub fn parse(body: &str, grammar: &Grammar) -> Result<Command, UserError> {
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
    if let Some(s) = spec(&name) {
        return parse_builtin(s, rest, grammar);
    }
    if let Some(r) = grammar.runbooks.iter().find(|r| r.name == name) {
        return parse_runbook(r, rest, grammar);
    }
    Err(UserError::UnknownCommand {
        suggestion: suggest(&name, grammar),
        given: shorten(&name),
    })
}

/// Positional words and flags of a command, with errors for what it does not take.
struct Args {
    words: Vec<String>,
    flags: Vec<String>,
}

fn split_args(
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
fn from_as_word(rest: Vec<Token>) -> Vec<Token> {
    rest.into_iter()
        .map(|t| match t {
            Token::Flag(f) if f == "from" => Token::Word(f),
            t => t,
        })
        .collect()
}

fn is_offsite(word: &str) -> bool {
    matches!(word.to_lowercase().as_str(), "offsite" | "off-site")
}

fn too_many(usage: &str, extra: &str) -> UserError {
    UserError::BadArguments {
        usage: usage.into(),
        problem: format!("I don't know what `{}` is here.", shorten(extra)),
    }
}

fn parse_builtin(s: &Spec, rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = s.usage;
    let bad = |problem: String| UserError::BadArguments {
        usage: usage.into(),
        problem,
    };
    match s.name {
        "ping" => {
            let words: Vec<String> = rest
                .into_iter()
                .map(|t| match t {
                    Token::Word(w) => w,
                    Token::Flag(f) => format!("--{f}"),
                    Token::Pair(k, v) => format!("{k}={v}"),
                })
                .collect();
            Ok(Command::Ping {
                echo: (!words.is_empty()).then(|| words.join(" ")),
            })
        }
        "help" => {
            let a = split_args(rest, usage, "help", &[])?;
            match a.words.as_slice() {
                [] => Ok(Command::Help { topic: None }),
                [topic] => {
                    let topic = topic.trim_start_matches(['/', '!']).to_lowercase();
                    if spec(&topic).is_some() || g.runbooks.iter().any(|r| r.name == topic) {
                        Ok(Command::Help { topic: Some(topic) })
                    } else {
                        Err(UserError::UnknownCommand {
                            suggestion: suggest(&topic, g),
                            given: shorten(&topic),
                        })
                    }
                }
                [_, extra, ..] => Err(too_many(usage, extra)),
            }
        }
        "deploy" => {
            let a = split_args(rest, usage, "deploy", &["no-backup"])?;
            let env = g.env(usage, a.words.first().map(String::as_str), "deploy")?;
            let Some(v) = a.words.get(1) else {
                return Err(bad("`deploy` needs a version, e.g. `v3.1`.".into()));
            };
            if let Some(extra) = a.words.get(2) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Deploy {
                env: env.name.clone(),
                version: check_version(v, env, usage)?,
                no_backup: a.flags.iter().any(|f| f == "no-backup"),
            })
        }
        "rollback" => {
            let a = split_args(rest, usage, "rollback", &[])?;
            let env = g.env(usage, a.words.first().map(String::as_str), "rollback")?;
            let to = match a.words.get(1) {
                None => None,
                Some(n)
                    if n.trim_start_matches('#')
                        .chars()
                        .all(|c| c.is_ascii_digit())
                        && !n.is_empty() =>
                {
                    let r: i64 = n.trim_start_matches('#').parse().map_err(|_| {
                        bad(format!("`{}` is too large to be a revision.", shorten(n)))
                    })?;
                    if r == 0 {
                        return Err(bad("Revisions start at 1.".into()));
                    }
                    Some(RollbackTarget::Revision(r))
                }
                Some(v) => Some(RollbackTarget::Version(check_version(v, env, usage)?)),
            };
            if let Some(extra) = a.words.get(2) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Rollback {
                env: env.name.clone(),
                to,
            })
        }
        "scale" => {
            let a = split_args(rest, usage, "scale", &[])?;
            let env = g.env(usage, a.words.first().map(String::as_str), "scale")?;
            let Some(n) = a.words.get(1) else {
                return Err(bad(format!(
                    "`scale` needs a number of replicas ({} to {} in {}).",
                    env.min_replicas, env.max_replicas, env.name
                )));
            };
            let replicas: u32 = n
                .parse()
                .map_err(|_| bad(format!("`{}` is not a number of replicas.", shorten(n))))?;
            if replicas < env.min_replicas || replicas > env.max_replicas {
                return Err(bad(format!(
                    "{} allows {} to {} replicas, not {replicas}.",
                    env.name, env.min_replicas, env.max_replicas
                )));
            }
            let component = match a.words.get(2) {
                None => None,
                Some(c) if env.components.iter().any(|k| k == c) => Some(c.clone()),
                Some(c) => {
                    return Err(bad(format!(
                        "`{}` is not a component of {}; components: {}.",
                        shorten(c),
                        env.name,
                        env.components.join(", ")
                    )));
                }
            };
            if let Some(extra) = a.words.get(3) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Scale {
                env: env.name.clone(),
                replicas,
                component,
            })
        }
        "backup" => {
            let a = split_args(rest, usage, "backup", &[])?;
            let sub = a.words.first().map(|w| w.to_lowercase());
            let env = match a.words.get(1) {
                Some(e) => Some(g.env(usage, Some(e), "backup")?.name.clone()),
                None => None,
            };
            if let Some(extra) = a.words.get(2) {
                return Err(too_many(usage, extra));
            }
            match sub.as_deref() {
                Some("now") => Ok(Command::BackupNow { env }),
                Some("list") | Some("ls") => Ok(Command::BackupList { env }),
                Some("report") => Ok(Command::BackupReport { env }),
                Some("prune") => match env {
                    Some(env) => Ok(Command::BackupPrune { env }),
                    None => Err(bad("`backup prune` needs an environment.".into())),
                },
                _ => Err(bad(
                    "`backup` needs `now`, `list`, `prune` or `report`.".into()
                )),
            }
        }
        "restore" => {
            let a = split_args(from_as_word(rest), usage, "restore", &["no-safety-backup"])?;
            let env = g.env(usage, a.words.first().map(String::as_str), "restore")?;
            let Some(b) = a.words.get(1) else {
                return Err(bad("`restore` needs a backup name or `latest`.".into()));
            };
            let backup = backup_ref(b, usage)?;
            let (from, offsite) = match a.words.get(2).map(|w| w.to_lowercase()) {
                None => (None, false),
                Some(w) if w == "from" => match a.words.get(3) {
                    Some(o) if is_offsite(o) => (None, true),
                    other => (
                        Some(
                            g.env(usage, other.map(String::as_str), "restore … from")?
                                .name
                                .clone(),
                        ),
                        false,
                    ),
                },
                Some(_) => return Err(too_many(usage, &a.words[2])),
            };
            if let Some(extra) = a.words.get(if a.words.len() > 2 { 4 } else { 3 }) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Restore {
                env: env.name.clone(),
                backup,
                from,
                no_safety_backup: a.flags.iter().any(|f| f == "no-safety-backup"),
                offsite,
            })
        }
        "verify" => {
            let a = split_args(from_as_word(rest), usage, "verify", &[])?;
            let mut words = a.words;
            let mut offsite = false;
            if let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("from")) {
                match words.get(at + 1) {
                    Some(o) if is_offsite(o) && at + 2 == words.len() => {
                        offsite = true;
                        words.truncate(at);
                    }
                    _ => {
                        return Err(bad(
                            "`verify … from` takes only `offsite`: `verify prod latest from offsite`."
                                .into(),
                        ));
                    }
                }
            }
            let env = match words.first() {
                Some(e) => Some(g.env(usage, Some(e), "verify")?.name.clone()),
                None if offsite => {
                    return Err(bad("`verify … from offsite` needs an environment.".into()));
                }
                None => None,
            };
            let backup = words.get(1).map(|b| backup_ref(b, usage)).transpose()?;
            if let Some(extra) = words.get(2) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Verify {
                env,
                backup,
                offsite,
            })
        }
        "status" => {
            let a = split_args(rest, usage, "status", &[])?;
            let env = match a.words.first() {
                Some(e) => Some(g.env(usage, Some(e), "status")?.name.clone()),
                None => None,
            };
            if let Some(extra) = a.words.get(1) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Status { env })
        }
        "history" | "unlock" => {
            let a = split_args(rest, usage, s.name, &[])?;
            let env = g
                .env(usage, a.words.first().map(String::as_str), s.name)?
                .name
                .clone();
            if let Some(extra) = a.words.get(1) {
                return Err(too_many(usage, extra));
            }
            Ok(if s.name == "history" {
                Command::History { env }
            } else {
                Command::Unlock { env }
            })
        }
        "lock" => {
            let a = split_args(rest, usage, "lock", &[])?;
            let env = g
                .env(usage, a.words.first().map(String::as_str), "lock")?
                .name
                .clone();
            let reason =
                (a.words.len() > 1).then(|| a.words[1..].join(" ").chars().take(200).collect());
            Ok(Command::Lock { env, reason })
        }
        "cancel" | "approve" => {
            let a = split_args(rest, usage, s.name, &[])?;
            let Some(op) = a.words.first() else {
                return Err(bad(format!(
                    "`{}` needs an operation number, e.g. `#42`.",
                    s.name
                )));
            };
            let op = op_id(op, usage)?;
            if let Some(extra) = a.words.get(1) {
                return Err(too_many(usage, extra));
            }
            Ok(if s.name == "cancel" {
                Command::Cancel { op }
            } else {
                Command::Approve { op }
            })
        }
        "confirm" => {
            let a = split_args(rest, usage, "confirm", &[])?;
            let Some(code) = a.words.first() else {
                return Err(bad("`confirm` needs the code from my question.".into()));
            };
            if !CODE.is_match(code) {
                return Err(bad(format!(
                    "`{}` is not a confirmation code.",
                    shorten(code)
                )));
            }
            if let Some(extra) = a.words.get(1) {
                return Err(too_many(usage, extra));
            }
            Ok(Command::Confirm {
                code: code.to_uppercase(),
            })
        }
        "alerts" => {
            let a = split_args(rest, usage, "alerts", &[])?;
            match a.words.first().map(|w| w.to_lowercase()).as_deref() {
                Some("list") | Some("ls") if a.words.len() == 1 => Ok(Command::AlertsList),
                Some("mute") => {
                    let env = g
                        .env(usage, a.words.get(1).map(String::as_str), "alerts mute")?
                        .name
                        .clone();
                    let Some(d) = a.words.get(2) else {
                        return Err(bad(
                            "`alerts mute` needs a duration, e.g. `2h` or `30m`.".into()
                        ));
                    };
                    let secs = humantime_serde::re::humantime::parse_duration(d)
                        .map_err(|_| {
                            bad(format!(
                                "`{}` is not a duration (like `30m`, `2h`, `1d`).",
                                shorten(d)
                            ))
                        })?
                        .as_secs();
                    if secs == 0 || secs > 7 * 24 * 3600 {
                        return Err(bad("A mute lasts from 1 second to 7 days.".into()));
                    }
                    let reason = (a.words.len() > 3)
                        .then(|| a.words[3..].join(" ").chars().take(200).collect());
                    Ok(Command::AlertsMute { env, secs, reason })
                }
                _ => Err(bad("`alerts` needs `list` or `mute`.".into())),
            }
        }
        "schedule" => {
            let a = split_args(rest, usage, "schedule", &[])?;
            let env = match a.words.get(1) {
                Some(e) => Some(g.env(usage, Some(e), "schedule")?.name.clone()),
                None => None,
            };
            let kind = match a.words.get(2).map(|w| w.to_lowercase()) {
                None => None,
                Some(k) if crate::schedule::Kind::parse(&k).is_some() => {
                    crate::schedule::Kind::parse(&k)
                }
                Some(k) => {
                    return Err(bad(format!(
                        "`{}` is not a schedule; use backup, verify, prune, report, weekly or refresh.",
                        shorten(&k)
                    )));
                }
            };
            if let Some(extra) = a.words.get(3) {
                return Err(too_many(usage, extra));
            }
            let action = match a.words.first().map(|w| w.to_lowercase()).as_deref() {
                Some("list") if env.is_none() => ScheduleAction::List,
                Some("pause") => ScheduleAction::Pause { env, kind },
                Some("resume") => ScheduleAction::Resume { env, kind },
                _ => return Err(bad("`schedule` needs `list`, `pause` or `resume`.".into())),
            };
            Ok(Command::Schedule { action })
        }
        _ => Err(UserError::Internal),
    }
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

/// The answer to `help` (commands the user may run, with where) or `help COMMAND`.
/// `allowed(name)` gives the environments where the asker may run the command (`Some(vec![])`
/// for commands that take none; `None` when they may not run it at all).
pub fn help_text(
    topic: Option<&str>,
    grammar: &Grammar,
    bot_name: &str,
    allowed: &dyn Fn(&str) -> Option<Vec<String>>,
) -> String {
    let where_ = |name: &str| match allowed(name) {
        None => "you may not run it".to_string(),
        Some(envs) if envs.is_empty() => "you may run it".to_string(),
        Some(envs) => format!("you may run it in {}", envs.join(", ")),
    };
    if let Some(t) = topic {
        if let Some(s) = spec(t) {
            let mut out = format!("*{}*: {}\nUsage: `{}`", s.name, s.summary, s.usage);
            if !s.details.is_empty() {
                out.push_str(&format!("\n{}", s.details));
            }
            if !s.examples.is_empty() {
                out.push_str(&format!(
                    "\nExamples: {}",
                    s.examples
                        .iter()
                        .map(|e| format!("`/{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.push_str(&format!("\nWho: {}.", where_(s.name)));
            return out;
        }
        if let Some(r) = grammar.runbooks.iter().find(|r| r.name == t) {
            let mut out = format!("*{}*: {}\nUsage: `{}`", r.name, r.summary, r.usage());
            for p in &r.params {
                out.push_str(&format!("\n• {}: {}", p.name.to_uppercase(), p.description));
            }
            out.push_str(&format!("\nWho: {}.", where_(&r.name)));
            return out;
        }
    }
    let mut out = String::from("*Commands you may run*\n");
    let mut hidden = 0;
    for s in COMMANDS {
        let names: Vec<&str> = match s.name {
            "backup" => vec!["backup now", "backup list", "backup prune", "backup report"],
            "alerts" => vec!["alerts list", "alerts mute"],
            "schedule" => vec!["schedule list", "schedule"],
            n => vec![n],
        };
        let any = names.iter().any(|n| allowed(n).is_some());
        if !any {
            hidden += 1;
            continue;
        }
        let envs: Vec<String> = names
            .iter()
            .filter_map(|n| allowed(n))
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let scope = if envs.is_empty() {
            String::new()
        } else {
            format!(" _({})_", envs.join(", "))
        };
        out.push_str(&format!("• `{}`: {}{scope}\n", s.usage, s.summary));
    }
    for r in &grammar.runbooks {
        match allowed(&r.name) {
            Some(envs) => {
                let scope = if envs.is_empty() {
                    String::new()
                } else {
                    format!(" _({})_", envs.join(", "))
                };
                out.push_str(&format!("• `{}`: {}{scope}\n", r.usage(), r.summary));
            }
            None => hidden += 1,
        }
    }
    if hidden > 0 {
        out.push_str(&format!(
            "({hidden} more need permissions you don't have.)\n"
        ));
    }
    out.push_str(&format!("`help COMMAND` explains one. Address me as `/status`, `!status` or `@{bot_name} status`; in a direct message just `status`."));
    out
}

#[cfg(test)]
mod tests;
