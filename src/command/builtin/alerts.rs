//! `alerts list` and `alerts mute ENV DURATION [REASON...]`: their grammar, help, and the two forms the policy tells apart (`alerts list` only reads).

use super::{Asks, Builtin, Form, Kind, View};
use crate::command::args::{bad, shorten, split_args};
use crate::command::grammar::Token;
use crate::command::{Command, Grammar};
use crate::error::UserError;

pub const ALERTS: Builtin = Builtin {
    name: "alerts",
    usage: "alerts list | alerts mute ENV DURATION [REASON...]",
    summary: "shows open incidents and the failed operations alerted in the last day, or silences an environment's alerts for a while",
    details: "A mute ends by itself; incidents raised meanwhile are kept and posted when it ends.",
    examples: &["alerts list", "alerts mute test 2h db migration"],
    forms: &[LIST, MUTE],
    kind: Kind::Command { parse, view },
};

const LIST: Form = Form {
    policy_name: "alerts list",
    mutating: false,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|_| Command::AlertsList),
};

const MUTE: Form = Form {
    policy_name: "alerts mute",
    mutating: true,
    open: false,
    operation: false,
    asks: Asks::AsConfigured,
    sample: Some(|env| Command::AlertsMute {
        env,
        secs: 60,
        reason: None,
    }),
};

fn parse(rest: Vec<Token>, g: &Grammar) -> Result<Command, UserError> {
    let usage = ALERTS.usage;
    let a = split_args(rest, usage, "alerts", &[])?;
    match a.words.first().map(|w| w.to_lowercase()).as_deref() {
        Some("list") | Some("ls") if a.words.len() == 1 => Ok(Command::AlertsList),
        Some("mute") => {
            let env = g
                .env(usage, a.words.get(1).map(String::as_str), "alerts mute")?
                .name
                .clone();
            let Some(d) = a.words.get(2) else {
                return Err(bad(
                    usage,
                    "`alerts mute` needs a duration, e.g. `2h` or `30m`.",
                ));
            };
            let secs = humantime_serde::re::humantime::parse_duration(d)
                .map_err(|_| {
                    bad(
                        usage,
                        format!(
                            "`{}` is not a duration (like `30m`, `2h`, `1d`).",
                            shorten(d)
                        ),
                    )
                })?
                .as_secs();
            if secs == 0 || secs > 7 * 24 * 3600 {
                return Err(bad(usage, "A mute lasts from 1 second to 7 days."));
            }
            let reason =
                (a.words.len() > 3).then(|| a.words[3..].join(" ").chars().take(200).collect());
            Ok(Command::AlertsMute { env, secs, reason })
        }
        _ => Err(bad(usage, "`alerts` needs `list` or `mute`.")),
    }
}

fn view(cmd: &Command) -> Option<View<'_>> {
    match cmd {
        Command::AlertsList => Some(View {
            form: &LIST,
            env: None,
            text: "alerts list".into(),
        }),
        Command::AlertsMute { env, secs, reason } => Some(View {
            form: &MUTE,
            env: Some(env),
            text: format!(
                "alerts mute {env} {}{}",
                humantime_serde::re::humantime::format_duration(std::time::Duration::from_secs(
                    *secs
                )),
                super::opt(reason)
            ),
        }),
        _ => None,
    }
}
