//! `help [COMMAND]`: its grammar, and the help itself, written from every command's definition.

use super::{Asks, Asker, Builtin, Form, Kind, Query, View, opt};
use crate::command::args::{shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar, suggest};
use crate::error::UserError;

pub const HELP: Builtin = Builtin {
    name: "help",
    usage: "help [COMMAND]",
    summary: "lists the commands you may run, or explains one",
    details: "",
    examples: &["help", "help deploy"],
    forms: &[FORM],
    kind: Kind::Command {
        parse,
        view: |cmd| match cmd {
            Command::Query { query, arg } if *query == &QUERY => Some(View {
                form: &FORM,
                env: None,
                text: format!("help{}", opt(arg)),
            }),
            _ => None,
        },
    },
};

const FORM: Form = Form {
    policy_name: "help",
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
    name: "help",
    needs_roles: false,
    answer: |topic, asker: &Asker<'_>| text(topic, asker.grammar, asker.bot_name, asker.allowed),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = HELP.usage;
    let a = split_args(rest, usage, "help", &[])?;
    match a.words.as_slice() {
        [] => Ok(Command::Query {
            query: &QUERY,
            arg: None,
        }),
        [topic] => {
            let topic = topic.trim_start_matches(['/', '!']).to_lowercase();
            if super::find(&topic).is_some() || g.runbooks.iter().any(|r| r.name == topic) {
                Ok(Command::Query {
                    query: &QUERY,
                    arg: Some(topic),
                })
            } else {
                Err(UserError::UnknownCommand {
                    suggestion: suggest(&topic, g),
                    given: shorten(&topic),
                })
            }
        }
        [_, extra, ..] => Err(too_many(usage, extra)),
    }
}

/// The answer to `help` (commands the user may run, with where) or `help COMMAND`.
/// `allowed(name)` gives the environments where the asker may run the command (`Some(vec![])`
/// for commands that take none; `None` when they may not run it at all).
pub fn text(
    topic: Option<&str>,
    grammar: &Grammar,
    bot_name: &str,
    allowed: &dyn Fn(&str) -> Option<Vec<String>>,
) -> String {
    let where_ = |name: &str| match allowed(name) {
        None => "you may not run it".to_string(),
        Some(envs) if envs.is_empty() => "you may run it".to_string(),
        Some(envs) => format!("you may run it in {}", envs.join(", ")),
    };
    if let Some(t) = topic {
        if let Some(s) = super::find(t) {
            let mut out = format!("*{}*: {}\nUsage: `{}`", s.name, s.summary, s.usage);
            if !s.details.is_empty() {
                out.push_str(&format!("\n{}", s.details));
            }
            if !s.examples.is_empty() {
                out.push_str(&format!(
                    "\nExamples: {}",
                    s.examples
                        .iter()
                        .map(|e| format!("`/{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.push_str(&format!("\nWho: {}.", where_(s.name)));
            return out;
        }
        if let Some(r) = grammar.runbooks.iter().find(|r| r.name == t) {
            let mut out = format!("*{}*: {}\nUsage: `{}`", r.name, r.summary, r.usage());
            for p in &r.params {
                out.push_str(&format!("\n• {}: {}", p.name.to_uppercase(), p.description));
            }
            out.push_str(&format!("\nWho: {}.", where_(&r.name)));
            return out;
        }
    }
    let mut out = String::from("*Commands you may run*\n");
    let mut hidden = 0;
    for s in super::ALL {
        let names: Vec<&str> = s.forms.iter().map(|f| f.policy_name).collect();
        let any = names.iter().any(|n| allowed(n).is_some());
        if !any {
            hidden += 1;
            continue;
        }
        let envs: Vec<String> = names
            .iter()
            .filter_map(|n| allowed(n))
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let scope = if envs.is_empty() {
            String::new()
        } else {
            format!(" _({})_", envs.join(", "))
        };
        out.push_str(&format!("• `{}`: {}{scope}\n", s.usage, s.summary));
    }
    for r in &grammar.runbooks {
        match allowed(&r.name) {
            Some(envs) => {
                let scope = if envs.is_empty() {
                    String::new()
                } else {
                    format!(" _({})_", envs.join(", "))
                };
                out.push_str(&format!("• `{}`: {}{scope}\n", r.usage(), r.summary));
            }
            None => hidden += 1,
        }
    }
    if hidden > 0 {
        out.push_str(&format!(
            "({hidden} more need permissions you don't have.)\n"
        ));
    }
    out.push_str(&format!("`help COMMAND` explains one. Address me as `/status`, `!status` or `@{bot_name} status`; in a direct message just `status`."));
    out
}

