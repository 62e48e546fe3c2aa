//! `verify [ENV] [BACKUP] [from offsite]`: its grammar, help, policy name, normal form and what it asks before it runs.

use super::{Asks, Builtin, Form, Kind, View, opt};
use crate::command::args::{backup_ref, bad, from_as_word, is_offsite, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{BackupRef, Command, Grammar};
use crate::error::UserError;

pub const VERIFY: Builtin = Builtin {
    name: "verify",
    usage: "verify [ENV] [BACKUP] [from offsite]",
    summary: "test-restores a backup into a throwaway database",
    details: "Proves a backup can be restored, and records how long it took.",
    examples: &["verify prod", "verify prod latest"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "verify",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::Nobody,
    sample: Some(|env| Command::Verify {
        env: Some(env),
        backup: None,
        offsite: false,
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = VERIFY.usage;
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
                    usage,
                    "`verify … from` takes only `offsite`: `verify prod latest from offsite`.",
                ));
            }
        }
    }
    let env = match words.first() {
        Some(e) => Some(g.env(usage, Some(e), "verify")?.name.clone()),
        None if offsite => {
            return Err(bad(usage, "`verify … from offsite` needs an environment."));
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

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Verify {
        env,
        backup,
        offsite,
    } = cmd
    else {
        return None;
    };
    let text = format!(
        "verify{}{}{}",
        opt(env),
        match backup {
            Some(BackupRef::Latest) => " latest".to_string(),
            Some(BackupRef::Named(n)) => format!(" {n}"),
            None => String::new(),
        },
        if *offsite { " from offsite" } else { "" }
    );
    Some(View {
        form: &FORM,
        env: env.as_deref(),
        text,
    })
}
