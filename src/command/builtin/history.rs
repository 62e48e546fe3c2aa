//! `history ENV`: its grammar, help, policy name and normal form.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const HISTORY: Builtin = Builtin {
    name: "history",
    usage: "history ENV",
    summary: "the app's revisions: version, change cause, who and when",
    details: "",
    examples: &["history prod"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "history",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::History { env }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = HISTORY.usage;
    let a = split_args(rest, usage, "history", &[])?;
    let env = g
        .env(usage, a.words.first().map(String::as_str), "history")?
        .name
        .clone();
    if let Some(extra) = a.words.get(1) {
        return Err(too_many(usage, extra));
    }
    Ok(Command::History { env })
}

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::History { env } = cmd else {
        return None;
    };
    Some(View {
        form: &FORM,
        env: Some(env),
        text: format!("history {env}"),
    })
}
