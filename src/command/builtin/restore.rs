//! `restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]`: its grammar, help, policy name, normal form and what it asks before it runs.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{backup_ref, bad, from_as_word, is_offsite, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{BackupRef, Command, Grammar};
use crate::error::UserError;

pub const RESTORE: Builtin = Builtin {
    name: "restore",
    usage: "restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]",
    summary: "restores a backup into an environment",
    details: "Always asks for confirmation. Takes a safety backup, scales the app to 0, restores, scales back and smoke-tests.",
    examples: &[
        "restore test latest from prod",
        "restore prod prod-20261121T000100Z",
    ],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "restore",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AlwaysConfirm,
    sample: Some(|env| Command::Restore {
        env,
        backup: BackupRef::Latest,
        from: None,
        no_safety_backup: false,
        offsite: false,
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = RESTORE.usage;
    let a = split_args(from_as_word(rest), usage, "restore", &["no-safety-backup"])?;
    let env = g.env(usage, a.words.first().map(String::as_str), "restore")?;
    let Some(b) = a.words.get(1) else {
        return Err(bad(usage, "`restore` needs a backup name or `latest`."));
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

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Restore {
        env,
        backup,
        from,
        no_safety_backup,
        offsite,
    } = cmd
    else {
        return None;
    };
    let text = format!(
        "restore {env} {}{}{}",
        match backup {
            BackupRef::Latest => "latest".to_string(),
            BackupRef::Named(n) => n.clone(),
        },
        match (from, offsite) {
            (_, true) => " from offsite".to_string(),
            (Some(f), false) => format!(" from {f}"),
            (None, false) => String::new(),
        },
        if *no_safety_backup {
            " --no-safety-backup"
        } else {
            ""
        }
    );
    Some(View {
        form: &FORM,
        env: Some(env),
        text,
    })
}
