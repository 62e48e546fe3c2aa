//! The answers to the bot's own questions, `confirm CODE`, `approve OP` and `cancel OP`: their type (not a command: they name what they answer), grammar, help and policy names (anyone may give one; what it answers decides).

use super::{Asks, Builtin, Form, Kind};
use crate::command::OpId;
use crate::command::args::{CODE, bad, op_id, shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::error::UserError;

/// An answer to a question the bot asked: to confirm a command, approve or cancel an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Confirm { code: String },
    Approve { op: OpId },
    Cancel { op: OpId },
}

impl Answer {
    /// Its name, as in `help`, which is also the name the policy and the metrics know it by.
    pub fn name(&self) -> &'static str {
        self.form().policy_name
    }

    /// Whether it changes anything: a cancel stops something.
    pub fn is_mutating(&self) -> bool {
        self.form().mutating
    }

    /// The answer in normal form (`approve #12`); a confirmation code is a secret of the
    /// moment and is left out.
    pub fn describe(&self) -> String {
        match self {
            Answer::Confirm { .. } => "confirm".into(),
            Answer::Approve { op } => format!("approve #{op}"),
            Answer::Cancel { op } => format!("cancel #{op}"),
        }
    }

    fn form(&self) -> &'static Form {
        match self {
            Answer::Confirm { .. } => &CONFIRM_FORM,
            Answer::Approve { .. } => &APPROVE_FORM,
            Answer::Cancel { .. } => &CANCEL_FORM,
        }
    }
}

pub const CANCEL: Builtin = Builtin {
    name: "cancel",
    usage: "cancel OP",
    summary: "stops a running or pending operation",
    details: "OP is the operation's number, as in `#42`.",
    examples: &["cancel #42"],
    forms: &[CANCEL_FORM],
    kind: Kind::Answer {
        parse: |rest| op_of(rest, CANCEL.usage, "cancel").map(|op| Answer::Cancel { op }),
    },
};

pub const APPROVE: Builtin = Builtin {
    name: "approve",
    usage: "approve OP",
    summary: "approves someone else's operation (two-person rule)",
    details: "Only another user who may run the command there can approve it. Where the environment asks for more than one approval, each must come from a different person; the bot says who approved so far and how many more it needs.",
    examples: &["approve #42"],
    forms: &[APPROVE_FORM],
    kind: Kind::Answer {
        parse: |rest| op_of(rest, APPROVE.usage, "approve").map(|op| Answer::Approve { op }),
    },
};

pub const CONFIRM: Builtin = Builtin {
    name: "confirm",
    usage: "confirm CODE",
    summary: "confirms your pending command",
    details: "The code is in the question; it expires after a few minutes.",
    examples: &["confirm K7Q2XM"],
    forms: &[CONFIRM_FORM],
    kind: Kind::Answer {
        parse: parse_confirm,
    },
};

// Cancelling stops something, so it counts as a change (audited as one).
const CANCEL_FORM: Form = Form {
    policy_name: "cancel",
    mutating: true,
    open: true,
    operation: false,
    asks: Asks::AsConfigured,
    sample: None,
};

const APPROVE_FORM: Form = Form {
    policy_name: "approve",
    mutating: false,
    open: true,
    operation: false,
    asks: Asks::AsConfigured,
    sample: None,
};

const CONFIRM_FORM: Form = Form {
    policy_name: "confirm",
    mutating: false,
    open: true,
    operation: false,
    asks: Asks::AsConfigured,
    sample: None,
};

/// The operation number `cancel` and `approve` take.
fn op_of(rest: Vec<Token>, usage: &str, name: &str) -> Result<OpId, UserError> {
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

fn parse_confirm(rest: Vec<Token>) -> Result<Answer, UserError> {
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
    Ok(Answer::Confirm {
        code: code.to_uppercase(),
    })
}
