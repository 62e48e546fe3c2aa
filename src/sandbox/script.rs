//! Scripted sandbox conversations (`rocketops sandbox --script FILE`): lines to post as users, and what the bot must answer.
//!
//! ```text
//! # a comment
//! room #ops                     # where the next lines are posted (default #ops; `@rocketops` for the DM)
//! alice> /deploy test 7.0.0     # post as alice
//! expect: test runs 7.0.0       # a bot message since the last post contains this (30 s to appear)
//! expect~ confirm (?P<CODE>\w+) # a regular expression; named groups become ${CODE} in later lines
//! ```

use std::collections::HashMap;
use std::time::Duration;

use regex::Regex;

use super::rocketchat::RocketChatSim;

/// One line of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Room(String),
    Say { user: String, text: String },
    Expect(String),
    ExpectRegex(String),
}

/// Why a script did not pass.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error(
        "line {line}: expected a bot message matching `{want}` within {secs}s; the bot said: {got:?}"
    )]
    Unmet {
        line: usize,
        want: String,
        secs: u64,
        got: Vec<String>,
    },
}

/// Parses a script.
pub fn parse(text: &str) -> Result<Vec<(usize, Step)>, ScriptError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let step = if let Some(rest) = l.strip_prefix("expect:") {
            Step::Expect(rest.trim().to_string())
        } else if let Some(rest) = l.strip_prefix("expect~") {
            let re = rest.trim().to_string();
            Regex::new(&re).map_err(|e| ScriptError::Invalid {
                line,
                message: format!("bad regular expression: {e}"),
            })?;
            Step::ExpectRegex(re)
        } else if let Some(rest) = l.strip_prefix("room ") {
            Step::Room(rest.trim().to_string())
        } else if let Some((user, text)) = l.split_once("> ") {
            if user.is_empty() || user.contains(' ') {
                return Err(ScriptError::Invalid {
                    line,
                    message: format!("`{user}` is not a user name"),
                });
            }
            Step::Say {
                user: user.to_string(),
                text: text.to_string(),
            }
        } else {
            return Err(ScriptError::Invalid {
                line,
                message: "expected `USER> text`, `expect: …`, `expect~ …` or `room …`".into(),
            });
        };
        out.push((line, step));
    }
    Ok(out)
}

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Runs a script against the simulator; prints the conversation as it goes.
pub async fn run(
    sim: &RocketChatSim,
    steps: &[(usize, Step)],
    patience: Duration,
) -> Result<(), ScriptError> {
    let mut room = "#ops".to_string();
    let mut speaker = "alice".to_string();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut cursor = 0usize;
    let room_id = |sim: &RocketChatSim, room: &str, speaker: &str| -> String {
        match room.strip_prefix('@') {
            Some(other) => sim.direct_room(speaker, other).unwrap_or_default(),
            None => room.to_string(),
        }
    };
    for (line, step) in steps {
        match step {
            Step::Room(r) => room = r.clone(),
            Step::Say { user, text } => {
                let text = substitute(text, &vars);
                speaker = user.clone();
                let target = room_id(sim, &room, user);
                cursor = bot_messages(sim, &target).len();
                println!("{user}> {text}");
                sim.post(user, &room, &text)
                    .map_err(|e| ScriptError::Invalid {
                        line: *line,
                        message: e.to_string(),
                    })?;
            }
            Step::Expect(want) | Step::ExpectRegex(want) => {
                let want = substitute(want, &vars);
                let re = match step {
                    Step::ExpectRegex(_) => {
                        Some(Regex::new(&want).map_err(|e| ScriptError::Invalid {
                            line: *line,
                            message: e.to_string(),
                        })?)
                    }
                    _ => None,
                };
                let started = tokio::time::Instant::now();
                loop {
                    let msgs = bot_messages(sim, &room_id(sim, &room, &speaker));
                    let recent = &msgs[cursor.min(msgs.len())..];
                    let hit = recent.iter().find_map(|m| match &re {
                        Some(re) => re.captures(m).map(|c| {
                            for name in re.capture_names().flatten() {
                                if let Some(v) = c.name(name) {
                                    vars.insert(name.to_string(), v.as_str().to_string());
                                }
                            }
                            m.clone()
                        }),
                        None => m.contains(&want).then(|| m.clone()),
                    });
                    if let Some(m) = hit {
                        println!("rocketops: {}", m.replace('\n', "\n           "));
                        break;
                    }
                    if started.elapsed() > patience {
                        return Err(ScriptError::Unmet {
                            line: *line,
                            want,
                            secs: patience.as_secs(),
                            got: recent.to_vec(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    Ok(())
}

fn bot_messages(sim: &RocketChatSim, room: &str) -> Vec<String> {
    sim.messages(room)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["u"]["username"] == "rocketops" && m.get("t").is_none())
        .map(|m| m["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_parses_into_steps_and_bad_lines_name_their_number() {
        let s = parse(
            "# tour\nroom #ops\nalice> /ping\nexpect: pong\nexpect~ confirm (?P<CODE>\\w+)\n",
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[1].1,
            Step::Say {
                user: "alice".into(),
                text: "/ping".into()
            }
        );
        assert_eq!(
            parse("hello there").unwrap_err(),
            ScriptError::Invalid {
                line: 1,
                message: "expected `USER> text`, `expect: …`, `expect~ …` or `room …`".into()
            }
        );
        assert!(matches!(
            parse("\nexpect~ (").unwrap_err(),
            ScriptError::Invalid { line: 2, .. }
        ));
    }
}
