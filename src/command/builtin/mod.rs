//! The built-in commands: each one's grammar, help, policy names and whether it changes anything, defined together in its own module, and the one list of them.

use super::grammar::Token;
use super::{Command, Grammar};
use crate::error::UserError;

/// Declares each command's module and lists what it defines, in the order `help` lists them.
macro_rules! builtins {
    ($($module:ident: $($def:ident),+;)+) => {
        $(mod $module;)+

        /// Every built-in command, in the order `help` lists them.
        pub static ALL: &[&Builtin] = &[$($(&$module::$def),+),+];
    };
}

// Adding a command is a module under `builtin/` and a line here.
builtins! {
    deploy: DEPLOY;
    rollback: ROLLBACK;
    scale: SCALE;
    backup: BACKUP;
    restore: RESTORE;
    verify: VERIFY;
    status: STATUS;
    history: HISTORY;
    lock: LOCK, UNLOCK;
    answers: CANCEL, APPROVE, CONFIRM;
    schedule: SCHEDULE;
    alerts: ALERTS;
    whoami: WHOAMI;
    help: HELP;
    ping: PING;
}

/// One built-in command, all of it in one place.
pub struct Builtin {
    /// The word that starts it (`deploy`).
    pub name: &'static str,
    /// Its usage, alternatives separated by ` | `.
    pub usage: &'static str,
    /// One line for the list `help` shows.
    pub summary: &'static str,
    /// More for `help NAME` (may be empty).
    pub details: &'static str,
    /// What `help NAME` shows to copy; each parses to this command.
    pub examples: &'static [&'static str],
    /// The forms the policy tells apart (`backup now` changes, `backup list` reads).
    pub forms: &'static [Form],
    /// A command, or an answer to the bot's question, and how to read it.
    pub kind: Kind,
}

/// What a built-in is: a command, or an answer to a question the bot asked.
pub enum Kind {
    Command {
        /// Parses the words after its name.
        parse: fn(Vec<Token>, &Grammar) -> Result<Command, UserError>,
        /// What a parsed command is, when it is one of this built-in's.
        view: for<'a> fn(&'a Command) -> Option<View<'a>>,
    },
    /// `confirm`, `approve`, `cancel`: they name what they answer, and what they answer decides.
    Answer {
        /// Parses the words after its name.
        parse: fn(Vec<Token>) -> Result<Answer, UserError>,
    },
}

/// A form of a command the policy decides about on its own.
pub struct Form {
    /// The name policy rules and `allow_when_locked` use (`backup list`).
    pub policy_name: &'static str,
    /// Whether it changes anything: authorized per environment as a change, refused while the
    /// environment is locked (unless allowed then), and confirmed where configured.
    pub mutating: bool,
    /// Anyone may run it, anywhere (`help`, the answers the bot asks for).
    pub open: bool,
    /// It runs as a journaled operation (numbered, shown in `history`, resumed after a
    /// restart) when it names an environment; without one it starts one per environment.
    pub operation: bool,
    /// Whom a change asks before it runs.
    pub asks: Asks,
    /// One instance of it acting on an environment, for asking the policy who may run it there
    /// (none for an answer: anyone may give one).
    pub sample: Option<fn(String) -> Command>,
}

/// Whom a change asks before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asks {
    /// As the environment's policy says: a confirmation, approvals by other people.
    AsConfigured,
    /// Its requester always confirms (a restore replaces data); approvals as configured.
    AlwaysConfirm,
    /// No one: it touches no live data (a verify restores into a scratch database of its own).
    Nobody,
}

/// What a parsed command is: its form, the environment it names, and its normal form.
pub struct View<'a> {
    pub form: &'static Form,
    pub env: Option<&'a str>,
    /// The command in normal form (`deploy prod v3.1`), for the audit log, questions and the journal.
    pub text: String,
}

/// A read-only built-in answered from what the bot knows of the asker and itself, by its own
/// module: such a command needs no code outside it.
pub struct Query {
    pub name: &'static str,
    /// Look up the asker's Rocket.Chat roles even where no policy rule needs them (to show them).
    pub needs_roles: bool,
    /// The answer, from the word after the name (if any) and the asker.
    pub answer: fn(Option<&str>, &Asker<'_>) -> String,
}

impl PartialEq for Query {
    fn eq(&self, other: &Query) -> bool {
        self.name == other.name
    }
}

impl Eq for Query {}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Query({})", self.name)
    }
}

/// What a [`Query`] may read about the asker.
pub struct Asker<'a> {
    pub username: &'a str,
    /// Their Rocket.Chat roles as the bot last looked them up.
    pub roles: &'a [String],
    /// The bot's username.
    pub bot_name: &'a str,
    pub grammar: &'a Grammar,
    /// Where the asker may run a command, by its policy name, from where they asked
    /// (`Some(vec![])` for commands that name no environment; `None` where they may not run it).
    pub allowed: &'a dyn Fn(&str) -> Option<Vec<String>>,
}

/// The built-in command called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    ALL.iter().copied().find(|b| b.name == name)
}

/// The built-in form the policy calls `policy_name`.
pub fn form(policy_name: &str) -> Option<&'static Form> {
    ALL.iter()
        .flat_map(|b| b.forms)
        .find(|f| f.policy_name == policy_name)
}

/// The built-in a parsed command belongs to, and what it is; `None` for a runbook.
pub fn view(cmd: &Command) -> Option<(&'static Builtin, View<'_>)> {
    ALL.iter().find_map(|b| match b.kind {
        Kind::Command { view, .. } => view(cmd).map(|v| (*b, v)),
        Kind::Answer { .. } => None,
    })
}

/// ` ENV` when there is one.
fn opt(word: &Option<String>) -> String {
    word.as_ref().map(|w| format!(" {w}")).unwrap_or_default()
}

pub use answers::Answer;
pub use help::text as help_text;
