//! `schedule list|pause|resume`: their grammar, help, and the two forms the policy tells apart (`schedule list` only reads).

use super::{Asks, Builtin, Form, Kind, View, opt};
use crate::command::args::{bad, shorten, split_args, too_many};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar, ScheduleAction};
use crate::error::UserError;


pub const SCHEDULE: Builtin = Builtin {
    name: "schedule",
    usage: "schedule list | schedule pause [ENV] [KIND] | schedule resume [ENV] [KIND]",
    summary: "shows or pauses the scheduled backups, test-restores, pruning and reports",
    details: "KIND is backup, verify, prune, report, weekly or refresh (all when left out). `schedule list` shows each schedule with its next run in its time zone. A paused schedule skips its runs; resuming does not make them up.",
    examples: &[
        "schedule list",
        "schedule pause test",
        "schedule resume prod verify",
    ],
    forms: &[LIST, CHANGE],
    kind: Kind::Command { parse, view },
};

const LIST: Form = Form {
    policy_name: "schedule list",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|_| Command::Schedule {
        action: ScheduleAction::List,
    }),
};

/// Pausing and resuming.
const CHANGE: Form = Form {
    policy_name: "schedule",
    mutating: true,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::Schedule {
        action: ScheduleAction::Pause {
            env: Some(env),
            kind: None,
        },
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = SCHEDULE.usage;
    let a = split_args(rest, usage, "schedule", &[])?;
    let env = match a.words.get(1) {
        Some(e) => Some(g.env(usage, Some(e), "schedule")?.name.clone()),
        None => None,
    };
    let kind = match a.words.get(2).map(|w| w.to_lowercase()) {
        None => None,
        Some(k) if crate::schedule::Kind::parse(&k).is_some() => crate::schedule::Kind::parse(&k),
        Some(k) => {
            return Err(bad(
                usage,
                format!(
                    "`{}` is not a schedule; use backup, verify, prune, report, weekly or refresh.",
                    shorten(&k)
                ),
            ));
        }
    };
    if let Some(extra) = a.words.get(3) {
        return Err(too_many(usage, extra));
    }
    let action = match a.words.first().map(|w| w.to_lowercase()).as_deref() {
        Some("list") if env.is_none() => ScheduleAction::List,
        Some("pause") => ScheduleAction::Pause { env, kind },
        Some("resume") => ScheduleAction::Resume { env, kind },
        _ => {
            return Err(bad(
                usage,
                "`schedule` needs `list`, `pause` or `resume`.",
            ));
        }
    };
    Ok(Command::Schedule { action })
}

fn view(cmd: &Command) -> Option<View<'_>> {
    let Command::Schedule { action } = cmd else {
        return None;
    };
    let (verb, env, kind) = match action {
        ScheduleAction::List => {
            return Some(View {
                form: &LIST,
                env: None,
                text: "schedule list".into(),
            });
        }
        ScheduleAction::Pause { env, kind } => ("pause", env, kind),
        ScheduleAction::Resume { env, kind } => ("resume", env, kind),
    };
    Some(View {
        form: &CHANGE,
        env: env.as_deref(),
        text: format!(
            "schedule {verb}{}{}",
            opt(env),
            kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default()
        ),
    })
}
