//! `deploy ENV VERSION [--no-backup]`: its grammar, help, policy name, normal form and what it asks before it runs.

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{bad, check_version, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const DEPLOY: Builtin = Builtin {
    name: "deploy",
    usage: "deploy ENV VERSION [--no-backup]",
    summary: "rolls out a new version (image tag) of the app",
    details: "Takes a backup first in production (skip with `--no-backup` if you may), sets the image tag, follows the rollout and smoke-tests it; rolls back on failure.",
    examples: &["deploy test v3.1", "deploy prod 7.0.0"],
    forms: &[FORM],
    kind: Kind::Command { parse, view },
};

const FORM: Form = Form {
    policy_name: "deploy",
    mutating: true,
    open: false,
    operation: true,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Deploy {
        env,
        version: "v1".into(),
        no_backup: false,
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = DEPLOY.usage;
    let a = split_args(rest, usage, "deploy", &["no-backup"])?;
    let env = g.env(usage, a.words.first().map(String::as_str), "deploy")?;
    let Some(v) = a.words.get(1) else {
        return Err(bad(usage, "`deploy` needs a version, e.g. `v3.1`."));
    };
    if let Some(extra) = a.words.get(2) {
        return Err(too_many(usage, extra));
    }
    Ok(Command::Deploy {
        env: env.name.clone(),
        version: check_version(v, env, usage)?,
        no_backup: a.flags.iter().any(|f| f == "no-backup"),
    })
}

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Deploy {
        env,
        version,
        no_backup,
    } = cmd
    else {
        return None;
    };
    Some(View {
        form: &FORM,
        env: Some(env),
        text: format!(
            "deploy {env} {version}{}",
            if *no_backup { " --no-backup" } else { "" }
        ),
    })
}
