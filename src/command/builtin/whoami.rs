//! `whoami`: tells the asker who they are to the bot (username, the roles it sees) and what they may run where, from the room they ask in.

use super::{Asks, Asker, Kind, Builtin, Form, Query, View};
use crate::command::Command;
use crate::command::args::{split_args, too_many};

pub const WHOAMI: Builtin = Builtin {
    name: "whoami",
    usage: "whoami",
    summary: "your username, your roles as the bot sees them, and what you may run where",
    details: "Answers from the room you ask in: some environments take commands only from their own channels.",
    examples: &["whoami"],
    forms: &[FORM],
    kind: Kind::Command {
        parse: |rest, _| {
            let a = split_args(rest, WHOAMI.usage, "whoami", &[])?;
            if let Some(extra) = a.words.first() {
                return Err(too_many(WHOAMI.usage, extra));
            }
            Ok(Command::Query {
                query: &QUERY,
                arg: None,
            })
        },
        view: |cmd| match cmd {
            Command::Query { query, .. } if *query == &QUERY => Some(View {
                form: &FORM,
                env: None,
                text: "whoami".into(),
            }),
            _ => None,
        },
    },
};

const FORM: Form = Form {
    policy_name: "whoami",
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
    name: "whoami",
    needs_roles: true,
    answer,
};

fn answer(_: Option<&str>, asker: &Asker<'_>) -> String {
    let roles = if asker.roles.is_empty() {
        "none".to_string()
    } else {
        asker.roles.join(", ")
    };
    let mut out = format!(
        "You are @{}. Your Rocket.Chat roles, as I see them: {roles}.",
        asker.username
    );
    let names: Vec<&str> = super::ALL
        .iter()
        .flat_map(|b| b.forms)
        .map(|f| f.policy_name)
        .chain(asker.grammar.runbooks.iter().map(|r| r.name.as_str()))
        .collect();
    let mut anywhere: Vec<&str> = Vec::new();
    let mut per_env: Vec<(&str, Vec<&str>)> = asker
        .grammar
        .environments
        .iter()
        .map(|e| (e.name.as_str(), Vec::new()))
        .collect();
    for name in names {
        match (asker.allowed)(name) {
            None => {}
            Some(envs) if envs.is_empty() => anywhere.push(name),
            Some(envs) => {
                for (env, list) in per_env.iter_mut() {
                    if envs.iter().any(|e| e == env) {
                        list.push(name);
                    }
                }
            }
        }
    }
    out.push_str("\nFrom here you may run:");
    for (env, list) in per_env.iter().filter(|(_, l)| !l.is_empty()) {
        out.push_str(&format!("\n• *{env}*: {}", list.join(", ")));
    }
    if per_env.iter().all(|(_, l)| l.is_empty()) {
        out.push_str("\n• in no environment: nothing that reads or changes one");
    }
    out.push_str(&format!("\n• anywhere: {}", anywhere.join(", ")));
    out.push_str("\n`help COMMAND` explains one.");
    out
}
