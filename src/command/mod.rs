//! Commands: which messages address the bot, the typed `Command` they ask for, and the help text beside each definition.

use crate::chat::RoomKind;
use crate::error::UserError;

/// How a message may address the bot.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// `/`, `!`: a message starting with one of these (then a letter) is a command.
    pub prefixes: Vec<String>,
    /// The bot's username, for `@rocketops deploy ...`.
    pub bot_name: String,
}

/// The command text of a message addressed to the bot, or `None` if it is not addressed to it.
/// Channels need a prefix or a mention; in a direct message bare text is a command too.
pub fn addressed_body<'a>(text: &'a str, room: RoomKind, to: &Addressing) -> Option<&'a str> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('@') {
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == ':' || c == ',')
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        if !to.bot_name.is_empty() && name.eq_ignore_ascii_case(&to.bot_name) {
            let body = after.trim_start_matches([':', ',']).trim();
            return (!body.is_empty()).then_some(body);
        }
        return None;
    }
    for p in &to.prefixes {
        if let Some(rest) = t.strip_prefix(p.as_str())
            && rest.chars().next().is_some_and(|c| c.is_alphabetic())
        {
            return Some(rest.trim());
        }
    }
    (room == RoomKind::Direct && !t.is_empty()).then_some(t)
}

/// A command the bot understands, with its arguments already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Checks that the bot is alive and answering; echoes any text given.
    Ping { echo: Option<String> },
    /// Lists the commands, or explains one.
    Help { topic: Option<String> },
}

/// A command's name, usage line and one-line summary: the help text lives here, once.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub example: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "help",
        usage: "help [COMMAND]",
        summary: "lists the commands, or explains one",
        example: "help ping",
    },
    Spec {
        name: "ping",
        usage: "ping [TEXT]",
        summary: "checks that the bot is alive and answering",
        example: "ping",
    },
];

fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name == name)
}

/// The closest known command name, if one is close enough to be a typo.
fn suggest(given: &str) -> Option<String> {
    COMMANDS
        .iter()
        .map(|s| (strsim::levenshtein(given, s.name), s.name))
        .filter(|(d, name)| *d <= 2 && *d < name.len())
        .min()
        .map(|(_, n)| n.to_string())
}

/// Parses the command text (without prefix or mention).
pub fn parse(body: &str) -> Result<Command, UserError> {
    let mut words = body.split_whitespace();
    let Some(first) = words.next() else {
        return Err(UserError::UnknownCommand {
            given: String::new(),
            suggestion: Some("help".into()),
        });
    };
    let name = first.to_lowercase();
    let rest: Vec<&str> = words.collect();
    match name.as_str() {
        "ping" => Ok(Command::Ping {
            echo: (!rest.is_empty()).then(|| rest.join(" ")),
        }),
        "help" => match rest.as_slice() {
            [] => Ok(Command::Help { topic: None }),
            [topic] => {
                let topic = topic.trim_start_matches(['/', '!']).to_lowercase();
                match spec(&topic) {
                    Some(_) => Ok(Command::Help { topic: Some(topic) }),
                    None => Err(UserError::UnknownCommand {
                        suggestion: suggest(&topic),
                        given: topic,
                    }),
                }
            }
            _ => Err(UserError::BadArguments {
                usage: "help [COMMAND]",
                problem: "`help` takes at most one command name.".into(),
            }),
        },
        _ => Err(UserError::UnknownCommand {
            suggestion: suggest(&name),
            given: name.chars().take(40).collect(),
        }),
    }
}

/// The answer to `help` or `help COMMAND`.
pub fn help_text(topic: Option<&str>, bot_name: &str) -> String {
    match topic.and_then(spec) {
        Some(s) => format!(
            "*{}*: {}\nUsage: `{}`\nExample: `/{}`",
            s.name, s.summary, s.usage, s.example
        ),
        None => {
            let mut out = String::from("*Commands*\n");
            for s in COMMANDS {
                out.push_str(&format!("• `{}`: {}\n", s.usage, s.summary));
            }
            out.push_str(&format!(
                "Address me as `/ping`, `!ping` or `@{bot_name} ping`; in a direct message just `ping`."
            ));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to() -> Addressing {
        Addressing {
            prefixes: vec!["/".into(), "!".into()],
            bot_name: "rocketops".into(),
        }
    }

    #[test]
    fn a_slash_command_in_a_channel_is_addressed() {
        assert_eq!(
            addressed_body("/deploy test v3.1", RoomKind::Channel, &to()),
            Some("deploy test v3.1")
        );
    }

    #[test]
    fn a_bang_command_is_addressed() {
        assert_eq!(
            addressed_body("!ping", RoomKind::Channel, &to()),
            Some("ping")
        );
    }

    #[test]
    fn a_mention_addresses_the_bot_in_any_case_and_with_a_colon() {
        assert_eq!(
            addressed_body("@RocketOps: ping", RoomKind::Channel, &to()),
            Some("ping")
        );
        assert_eq!(
            addressed_body("@rocketops ping now", RoomKind::Private, &to()),
            Some("ping now")
        );
    }

    #[test]
    fn a_mention_of_someone_else_is_not_addressed() {
        assert_eq!(
            addressed_body("@alice ping", RoomKind::Channel, &to()),
            None
        );
    }

    #[test]
    fn plain_chat_in_a_channel_is_not_addressed() {
        assert_eq!(addressed_body("ping", RoomKind::Channel, &to()), None);
        assert_eq!(
            addressed_body("/ some path", RoomKind::Channel, &to()),
            None
        );
        assert_eq!(addressed_body("!!!", RoomKind::Channel, &to()), None);
    }

    #[test]
    fn bare_text_in_a_direct_message_is_addressed() {
        assert_eq!(
            addressed_body("ping", RoomKind::Direct, &to()),
            Some("ping")
        );
    }

    #[test]
    fn ping_echoes_its_text() {
        assert_eq!(
            parse("ping hello there"),
            Ok(Command::Ping {
                echo: Some("hello there".into())
            })
        );
        assert_eq!(parse("PING"), Ok(Command::Ping { echo: None }));
    }

    #[test]
    fn an_unknown_command_suggests_the_closest_one() {
        let e = parse("pnig").unwrap_err();
        assert_eq!(
            e,
            UserError::UnknownCommand {
                given: "pnig".into(),
                suggestion: Some("ping".into())
            }
        );
        assert!(e.to_string().contains("Did you mean `ping`?"));
    }

    #[test]
    fn help_for_an_unknown_command_says_so() {
        assert!(matches!(
            parse("help dploy"),
            Err(UserError::UnknownCommand { .. })
        ));
    }

    #[test]
    fn help_lists_every_command_with_its_usage() {
        let h = help_text(None, "rocketops");
        for s in COMMANDS {
            assert!(h.contains(s.usage));
        }
        assert!(help_text(Some("ping"), "rocketops").contains("Usage: `ping [TEXT]`"));
    }

    proptest! {
        #[test]
        fn no_text_makes_parsing_panic(s in "\\PC{0,80}") {
            let _ = addressed_body(&s, RoomKind::Direct, &to()).map(parse);
        }
    }
}
