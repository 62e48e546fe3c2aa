//! `scale ENV REPLICAS [COMPONENT]`: its grammar, help, policy name, normal form and what it asks before it runs.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{bad, shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const SCALE: Builtin = Builtin {
    name: "scale",
    usage: "scale ENV REPLICAS [COMPONENT]",
    summary: "sets the number of replicas",
    details: "COMPONENT is the app (default) or the database; an autoscaler on the app is taken into account.",
    examples: &["scale test 5", "scale prod 4 rocketchat"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "scale",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Scale {
        env,
        replicas: 1,
        component: None,
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = SCALE.usage;
    let a = split_args(rest, usage, "scale", &[])?;
    let env = g.env(usage, a.words.first().map(String::as_str), "scale")?;
    let Some(n) = a.words.get(1) else {
        return Err(bad(
            usage,
            format!(
                "`scale` needs a number of replicas ({} to {} in {}).",
                env.min_replicas, env.max_replicas, env.name
            ),
        ));
    };
    let replicas: u32 = n.parse().map_err(|_| {
        bad(
            usage,
            format!("`{}` is not a number of replicas.", shorten(n)),
        )
    })?;
    if replicas < env.min_replicas || replicas > env.max_replicas {
        return Err(bad(
            usage,
            format!(
                "{} allows {} to {} replicas, not {replicas}.",
                env.name, env.min_replicas, env.max_replicas
            ),
        ));
    }
    let component = match a.words.get(2) {
        None => None,
        Some(c) if env.components.iter().any(|k| k == c) => Some(c.clone()),
        Some(c) => {
            return Err(bad(
                usage,
                format!(
                    "`{}` is not a component of {}; components: {}.",
                    shorten(c),
                    env.name,
                    env.components.join(", ")
                ),
            ));
        }
    };
    if let Some(extra) = a.words.get(3) {
        return Err(too_many(usage, extra));
    }
    Ok(Command::Scale {
        env: env.name.clone(),
        replicas,
        component,
    })
}

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Scale {
        env,
        replicas,
        component,
    } = cmd
    else {
        return None;
    };
    Some(View {
        form: &FORM,
        env: Some(env),
        text: format!("scale {env} {replicas}{}", super::opt(component)),
    })
}
