//! `status [ENV]`: its grammar, help, policy name and normal form.

use super::{Asks, Builtin, Form, Kind, View, opt};
use crate::command::args::{split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const STATUS: Builtin = Builtin {
    name: "status",
    usage: "status [ENV]",
    summary: "versions, replicas, last deploy, backup and lock per environment",
    details: "",
    examples: &["status", "status prod"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "status",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Status { env: Some(env) }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = STATUS.usage;
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

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Status { env } = cmd else {
        return None;
    };
    Some(View {
        form: &FORM,
        env: env.as_deref(),
        text: format!("status{}", opt(env)),
    })
}
