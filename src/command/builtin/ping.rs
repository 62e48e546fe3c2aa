//! `ping [TEXT]`: its grammar, help and policy name.

use super::{Kind, Builtin, Form, View};
use crate::command::Command;
use crate::command::grammar::Token;

pub const PING: Builtin = Builtin {
    name: "ping",
    usage: "ping [TEXT]",
    summary: "checks that the bot is alive and answering",
    details: "",
    examples: &["ping"],
    forms: &[FORM],
    kind: Kind::Command {
        parse: |rest, _| {
            // Anything goes: the words come back as they were typed.
            let words: Vec<String> = rest
                .into_iter()
                .map(|t| match t {
                    Token::Word(w) => w,
                    Token::Flag(f) => format!("--{f}"),
                    Token::Pair(k, v) => format!("{k}={v}"),
                })
                .collect();
            Ok(Command::Ping {
                echo: (!words.is_empty()).then(|| words.join(" ")),
            })
        },
        view: |cmd| match cmd {
            Command::Ping { .. } => Some(View {
                form: &FORM,
                env: None,
                text: "ping".into(),
            }),
            _ => None,
        },
    },
};

const FORM: Form = Form {
    policy_name: "ping",
    mutating: false,
    open: true,
    sample: Some(|_| Command::Ping { echo: None }),
};
