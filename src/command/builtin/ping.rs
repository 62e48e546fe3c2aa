//! `ping [TEXT]`: its grammar, help, policy name and normal form.

use super::{Asks, Builtin, Form, Kind, Query, View};
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
            Ok(Command::Query {
                query: &QUERY,
                arg: (!words.is_empty()).then(|| words.join(" ")),
            })
        },
        view: |cmd| match cmd {
            Command::Query { query, .. } if *query == &QUERY => Some(View {
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
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|_| Command::Query {
        query: &QUERY,
        arg: None,
    }),
};

const QUERY: Query = Query {
    name: "ping",
    needs_roles: false,
    answer: |echo, _| match echo {
        None => "pong".into(),
        // Whatever was typed comes back, with what looks like a secret masked.
        Some(t) => format!("pong {}", crate::redact::outside(t)),
    },
};
