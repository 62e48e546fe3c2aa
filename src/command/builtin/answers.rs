//! The answers the bot asks for, `confirm CODE`, `approve OP` and `cancel OP`: their grammar, help and policy names (anyone may give them; what they answer decides).

use super::{Builtin, Form, View};
use crate::command::args::{CODE, bad, op_id, shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const CANCEL: Builtin = Builtin {
    name: "cancel",
    usage: "cancel OP",
    summary: "stops a running or pending operation",
    details: "OP is the operation's number, as in `#42`.",
    examples: &["cancel #42"],
    forms: &[CANCEL_FORM],
    parse: |rest, _| {
        op_of(rest, CANCEL.usage, "cancel").map(|op| Command::Cancel { op })
    },
    view: |cmd| match cmd {
        Command::Cancel { op } => Some(View {
            form: &CANCEL_FORM,
            env: None,
            text: format!("cancel #{op}"),
        }),
        _ => None,
    },
};

pub const APPROVE: Builtin = Builtin {
    name: "approve",
    usage: "approve OP",
    summary: "approves someone else's operation (two-person rule)",
    details: "Only another user who may run the command there can approve it. Where the environment asks for more than one approval, each must come from a different person; the bot says who approved so far and how many more it needs.",
    examples: &["approve #42"],
    forms: &[APPROVE_FORM],
    parse: |rest, _| {
        op_of(rest, APPROVE.usage, "approve").map(|op| Command::Approve { op })
    },
    view: |cmd| match cmd {
        Command::Approve { op } => Some(View {
            form: &APPROVE_FORM,
            env: None,
            text: format!("approve #{op}"),
        }),
        _ => None,
    },
};

pub const CONFIRM: Builtin = Builtin {
    name: "confirm",
    usage: "confirm CODE",
    summary: "confirms your pending command",
    details: "The code is in the question; it expires after a few minutes.",
    examples: &["confirm K7Q2XM"],
    forms: &[CONFIRM_FORM],
    parse: parse_confirm,
    view: |cmd| match cmd {
        // The code is a secret of the moment: the normal form leaves it out.
        Command::Confirm { .. } => Some(View {
            form: &CONFIRM_FORM,
            env: None,
            text: "confirm".into(),
        }),
        _ => None,
    },
};

// Cancelling stops something, so it counts as a change (audited as one); it is open to anyone,
// and whose operation it is decides.
const CANCEL_FORM: Form = Form {
    policy_name: "cancel",
    mutating: true,
    open: true,
    sample: |_| Command::Cancel { op: 0 },
};

const APPROVE_FORM: Form = Form {
    policy_name: "approve",
    mutating: false,
    open: true,
    sample: |_| Command::Approve { op: 0 },
};

const CONFIRM_FORM: Form = Form {
    policy_name: "confirm",
    mutating: false,
    open: true,
    sample: |_| Command::Confirm {
        code: String::new(),
    },
};

/// The operation number `cancel` and `approve` take.
fn op_of(rest: Vec<Token>, usage: &str, name: &str) -> Result<u64, UserError> {
    let a = split_args(rest, usage, name, &[])?;
    let Some(op) = a.words.first() else {
        return Err(bad(
            usage,
            format!("`{name}` needs an operation number, e.g. `#42`."),
        ));
    };
    let op = op_id(op, usage)?;
    if let Some(extra) = a.words.get(1) {
        return Err(too_many(usage, extra));
    }
    Ok(op)
}

fn parse_confirm(rest: Vec<Token>, _: &Grammar) -> Result<Command, UserError> {
    let usage = CONFIRM.usage;
    let a = split_args(rest, usage, "confirm", &[])?;
    let Some(code) = a.words.first() else {
        return Err(bad(usage, "`confirm` needs the code from my question."));
    };
    if !CODE.is_match(code) {
        return Err(bad(
            usage,
            format!("`{}` is not a confirmation code.", shorten(code)),
        ));
    }
    if let Some(extra) = a.words.get(1) {
        return Err(too_many(usage, extra));
    }
    Ok(Command::Confirm {
        code: code.to_uppercase(),
    })
}
