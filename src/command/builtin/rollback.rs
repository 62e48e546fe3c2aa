//! `rollback ENV [REVISION|VERSION]`: its grammar, help, policy name, normal form and what it asks before it runs.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{bad, check_version, shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar, RollbackTarget};
use crate::error::UserError;

pub const ROLLBACK: Builtin = Builtin {
    name: "rollback",
    usage: "rollback ENV [REVISION|VERSION]",
    summary: "goes back to the last good (or a given) revision",
    details: "Without an argument, the last good revision: the newest earlier one that succeeded (failed and rolled-back ones are passed over), named before you confirm; a number is a revision from `history`, anything else a version.",
    examples: &["rollback prod", "rollback prod 4", "rollback test v3.0"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "rollback",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Rollback { env, to: None }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = ROLLBACK.usage;
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
                bad(
                    usage,
                    format!("`{}` is too large to be a revision.", shorten(n)),
                )
            })?;
            if r == 0 {
                return Err(bad(usage, "Revisions start at 1."));
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

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Rollback { env, to } = cmd else {
        return None;
    };
    let to = match to {
        None => String::new(),
        Some(RollbackTarget::Revision(r)) => format!(" {r}"),
        Some(RollbackTarget::Version(v)) => format!(" {v}"),
    };
    Some(View {
        form: &FORM,
        env: Some(env),
        text: format!("rollback {env}{to}"),
    })
}
