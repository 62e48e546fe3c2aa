//! `lock ENV [REASON...]` and `unlock ENV`: their grammar, help, policy names and normal forms.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const LOCK: Builtin = Builtin {
    name: "lock",
    usage: "lock ENV [REASON...]",
    summary: "freezes an environment against changes",
    details: "Until `unlock`, changing commands on it are refused and the reason is shown.",
    examples: &["lock prod \"release freeze until Monday\""],
    forms: &[LOCK_FORM],
    kind: Kind::Command {
        parse: parse_lock,
        view: view_lock,
    },
};

pub const UNLOCK: Builtin = Builtin {
    name: "unlock",
    usage: "unlock ENV",
    summary: "lifts a freeze",
    details: "",
    examples: &["unlock prod"],
    forms: &[UNLOCK_FORM],
    kind: Kind::Command {
        parse: parse_unlock,
        view: view_unlock,
    },
};

const LOCK_FORM: Form = Form {
    policy_name: "lock",
    mutating: true,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Lock { env, reason: None }),
};

const UNLOCK_FORM: Form = Form {
    policy_name: "unlock",
    mutating: true,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Unlock { env }),
};

fn parse_lock(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = LOCK.usage;
    let a = split_args(rest, usage, "lock", &[])?;
    let env = g
        .env(usage, a.words.first().map(String::as_str), "lock")?
        .name
        .clone();
    let reason = (a.words.len() > 1).then(|| a.words[1..].join(" ").chars().take(200).collect());
    Ok(Command::Lock { env, reason })
}

fn parse_unlock(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = UNLOCK.usage;
    let a = split_args(rest, usage, "unlock", &[])?;
    let env = g
        .env(usage, a.words.first().map(String::as_str), "unlock")?
        .name
        .clone();
    if let Some(extra) = a.words.get(1) {
        return Err(too_many(usage, extra));
    }
    Ok(Command::Unlock { env })
}

fn view_lock(cmd: &Command) -> Option<View<'_>> {
    let Command::Lock { env, reason } = cmd else {
        return None;
    };
    Some(View {
        form: &LOCK_FORM,
        env: Some(env),
        text: format!("lock {env}{}", super::opt(reason)),
    })
}

fn view_unlock(cmd: &Command) -> Option<View<'_>> {
    let Command::Unlock { env } = cmd else {
        return None;
    };
    Some(View {
        form: &UNLOCK_FORM,
        env: Some(env),
        text: format!("unlock {env}"),
    })
}
