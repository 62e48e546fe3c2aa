//! `backup now|list|prune|report`: their grammar, help, and the four forms the policy tells apart (`backup list` and `backup report` only read).

use super::{Asks, Builtin, Form, Kind, View, opt};
use crate::command::args::{bad, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const BACKUP: Builtin = Builtin {
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
    forms: &[NOW, LIST, PRUNE, REPORT],
    kind: Kind::Command { parse, view },
};

const NOW: Form = Form {
    policy_name: "backup now",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::BackupNow { env: Some(env) }),
};

const LIST: Form = Form {
    policy_name: "backup list",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::BackupList { env: Some(env) }),
};

const PRUNE: Form = Form {
    policy_name: "backup prune",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::BackupPrune { env }),
};

const REPORT: Form = Form {
    policy_name: "backup report",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::BackupReport { env: Some(env) }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = BACKUP.usage;
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
            None => Err(bad(usage, "`backup prune` needs an environment.")),
        },
        _ => Err(bad(
            usage,
            "`backup` needs `now`, `list`, `prune` or `report`.",
        )),
    }
}

fn view(cmd: &Command) -> Option<View<'_>> {
    let (form, env) = match cmd {
        Command::BackupNow { env } => (&NOW, env),
        Command::BackupList { env } => (&LIST, env),
        Command::BackupReport { env } => (&REPORT, env),
        Command::BackupPrune { env } => {
            return Some(View {
                form: &PRUNE,
                env: Some(env),
                text: format!("backup prune {env}"),
            });
        }
        _ => return None,
    };
    Some(View {
        form,
        env: env.as_deref(),
        text: format!("{}{}", form.policy_name, opt(env)),
    })
}
