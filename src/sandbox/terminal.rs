//! The sandbox's terminal chat: a line editor with a `user@room> ` prompt, chat printed above the line being typed, progress edits shown as the lines that changed, and Ctrl-C or Ctrl-D leaving at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use tokio_util::sync::CancellationToken;

use super::rocketchat::{RocketChatSim, SimEvent};

/// Tells the line editor a line was handled, when dropped.
struct Finished(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Prints a line above the one being typed.
type Printer = Box<dyn FnMut(String) + Send>;

/// Who the terminal speaks as, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub user: String,
    pub room: String,
}

impl Seat {
    pub fn prompt(&self) -> String {
        format!("{}@{}> ", self.user, self.room)
    }
}

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    Nothing,
    SpeakAs(String),
    MoveTo(String),
    Quit,
    Say(String),
}

/// Pure: reads one typed line.
pub fn read_line(line: &str) -> Typed {
    let line = line.trim();
    if line.is_empty() {
        Typed::Nothing
    } else if let Some(user) = line.strip_prefix(":as ") {
        Typed::SpeakAs(user.trim().trim_start_matches('@').to_string())
    } else if let Some(room) = line.strip_prefix(":in ") {
        let room = room.trim();
        Typed::MoveTo(if room.starts_with('@') || room.starts_with('#') {
            room.to_string()
        } else {
            format!("#{room}")
        })
    } else if line == ":quit" {
        Typed::Quit
    } else {
        Typed::Say(line.to_string())
    }
}

/// Pure: how a message is shown. A new one in full, its continuation lines indented under its
/// first; an edit as only the lines that changed since it was last shown (`None`: nothing did).
pub fn render(prefix: &str, text: &str, before: Option<&[String]>) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = " ".repeat(prefix.chars().count());
    let shown: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| before.is_none_or(|old| old.get(*i).map(String::as_str) != Some(**l)))
        .map(|(i, l)| {
            if i == 0 {
                format!("{prefix}{l}")
            } else {
                format!("{indent}{l}")
            }
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join("\n"))
}

/// Pure: a message in a room other than the one in view, as one line (its first, shortened).
pub fn glimpse(room: &str, author: &str, text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut line: String = first.chars().take(100).collect();
    if first.chars().count() > 100 || text.lines().nth(1).is_some() {
        line.push_str(" …");
    }
    format!("[{room}] {author}: {line}")
}

/// Pure: whether a message in `room` (as the simulator labels it: `#ops`, or `@a,@b` for a
/// direct message) is in the view of `seat`, or at least concerns its user.
fn placement(room: &str, seat: &Seat) -> (bool, bool) {
    let in_view = room == seat.room
        || (seat.room.starts_with('@')
            && room.contains(&format!("@{}", seat.user))
            && room.contains(&seat.room));
    let concerns = room.starts_with('#') || room.split(',').any(|m| m == format!("@{}", seat.user));
    (in_view, concerns)
}

/// How many earlier messages `:in` shows of the room it moves to.
const HISTORY_ON_MOVE: usize = 5;

/// Runs the terminal chat until `:quit`, Ctrl-C, Ctrl-D or `shutdown`.
pub async fn run(sim: &RocketChatSim, shutdown: CancellationToken) {
    println!();
    println!(
        "You are alice (role ops) in #ops. Try `/help`, `/status`, `/deploy test 7.0.0`, `/history test`,"
    );
    println!(
        "`/deploy prod v3.1` (confirm, then `:as admin` and `/approve #N`), or a tag that does not exist."
    );
    println!(
        "In a direct message with the bot (`:in @rocketops`) the same commands work without `/`."
    );
    println!(
        "Messages in other rooms show as one line each (`[#alerts] ...`); `:in ROOM` shows its latest."
    );
    println!("  :as USER    speak as another user (admin, alice, bob)");
    println!("  :in ROOM    move to #CHANNEL or @USER (a direct message)");
    println!("  :quit       leave (or Ctrl-C, Ctrl-D)");
    let seat = Arc::new(Mutex::new(Seat {
        user: "alice".into(),
        room: "#ops".into(),
    }));
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            println!("(cannot open the terminal: {e})");
            return;
        }
    };
    // Printing never blocks the chat: lines go to a thread of their own that hands them to the
    // line editor. The editor takes them while it waits for keys, so while typed-ahead lines are
    // still being read it may hold them back for a moment; a chat loop waiting on it meanwhile
    // would stop the very line handling the editor waits for.
    let (print_tx, print_rx) = std::sync::mpsc::channel::<String>();
    match editor.create_external_printer() {
        Ok(mut p) => {
            std::thread::spawn(move || {
                while let Ok(mut s) = print_rx.recv() {
                    // Outside the editor's raw mode (while a typed line is being handled) the
                    // printer writes the text as it is: without its newline, the next prompt
                    // would wipe it.
                    if !s.ends_with('\n') {
                        s.push('\n');
                    }
                    if p.print(s).is_err() {
                        return;
                    }
                }
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                while let Ok(s) = print_rx.recv() {
                    println!("{s}");
                }
            });
        }
    }
    let printer: Arc<Mutex<Printer>> = Arc::new(Mutex::new(Box::new(move |s: String| {
        let _ = print_tx.send(s);
    })));
    // Each line goes with an answer channel: the next prompt waits until the line was handled,
    // so that it shows the seat `:as` or `:in` just chose.
    type Handled = tokio::sync::oneshot::Sender<()>;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Option<(String, Handled)>>();
    let prompt_seat = seat.clone();
    // The line editor blocks: it runs on a thread of its own, which the process does not wait for.
    std::thread::spawn(move || {
        loop {
            let prompt = prompt_seat
                .lock()
                .map(|s| s.prompt())
                .unwrap_or_else(|_| "> ".into());
            match editor.readline(&prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    let (done, handled) = tokio::sync::oneshot::channel();
                    if lines_tx.send(Some((line, done))).is_err() {
                        return;
                    }
                    let _ = handled.blocking_recv();
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => {
                    let _ = lines_tx.send(None);
                    return;
                }
            }
        }
    });
    let shown_seat = seat.clone();
    let out = printer.clone();
    let mut events = sim.events();
    let watcher = tokio::spawn(async move {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        loop {
            match events.recv().await {
                Ok(SimEvent::Message {
                    room,
                    message,
                    edited,
                }) => {
                    let here = shown_seat.lock().map(|s| s.clone()).ok();
                    let Some(here) = here else { continue };
                    if message.get("t").is_some() {
                        continue;
                    }
                    let id = message["_id"].as_str().unwrap_or_default().to_string();
                    let author = message["u"]["username"].as_str().unwrap_or("?");
                    let text = message["msg"].as_str().unwrap_or_default();
                    let (in_view, concerns) = placement(&room, &here);
                    if !in_view {
                        // Elsewhere: a new message as one line (an alert in #alerts, a DM), not
                        // every edit of it.
                        let first_time = !seen.contains_key(&id);
                        seen.insert(id, text.lines().map(str::to_string).collect());
                        if concerns
                            && first_time
                            && !edited
                            && let Ok(mut p) = out.lock()
                        {
                            p(glimpse(&room, author, text));
                        }
                        continue;
                    }
                    let thread = if message.get("tmid").is_some() {
                        " ↳"
                    } else {
                        ""
                    };
                    let prefix = format!("[{room}]{thread} {author}: ");
                    if let Some(s) = render(&prefix, text, seen.get(&id).map(Vec::as_slice))
                        && let Ok(mut p) = out.lock()
                    {
                        p(s);
                    }
                    seen.insert(id, text.lines().map(str::to_string).collect());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    let say = |s: String| {
        if let Ok(mut p) = printer.lock() {
            p(s);
        }
    };
    loop {
        let line = tokio::select! {
            l = lines.recv() => l.flatten(),
            _ = shutdown.cancelled() => None,
        };
        let Some((line, handled)) = line else { break };
        let _handled = Finished(Some(handled));
        let here = match seat.lock() {
            Ok(s) => s.clone(),
            Err(_) => break,
        };
        match read_line(&line) {
            Typed::Nothing => {}
            Typed::SpeakAs(user) => {
                if sim.has_user(&user) {
                    if let Ok(mut s) = seat.lock() {
                        s.user = user.clone();
                    }
                    say(format!("(now speaking as {user})"));
                } else {
                    say(format!(
                        "(there is no user {user}; the sandbox has {})",
                        super::SEED_USERS
                            .iter()
                            .map(|(u, _)| *u)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Typed::MoveTo(room) => {
                if let Ok(mut s) = seat.lock() {
                    s.room = room.clone();
                }
                say(format!("(now in {room})"));
                let stored = match room.strip_prefix('@') {
                    Some(other) => sim.direct_room(&here.user, other),
                    None => Some(room.clone()),
                };
                let history = stored
                    .and_then(|r| sim.messages(&r).ok())
                    .unwrap_or_default();
                let recent: Vec<_> = history
                    .iter()
                    .filter(|m| m.get("t").is_none())
                    .rev()
                    .take(HISTORY_ON_MOVE)
                    .collect();
                for m in recent.into_iter().rev() {
                    let author = m["u"]["username"].as_str().unwrap_or("?");
                    let prefix = format!("[{room}] {author}: ");
                    if let Some(text) = render(&prefix, m["msg"].as_str().unwrap_or_default(), None)
                    {
                        say(text);
                    }
                }
            }
            Typed::Quit => break,
            Typed::Say(text) => {
                if let Err(e) = sim.post(&here.user, &here.room, &text) {
                    say(format!("(not sent: {e})"));
                }
            }
        }
    }
    watcher.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_elsewhere_is_one_shortened_line() {
        assert_eq!(
            glimpse("#alerts", "rocketops", "🚨 test failed\nmore"),
            "[#alerts] rocketops: 🚨 test failed …"
        );
        let long = "x".repeat(150);
        assert_eq!(
            glimpse("#ops", "bob", &long).chars().count(),
            "[#ops] bob: ".chars().count() + 100 + 2
        );
    }

    #[test]
    fn other_channels_and_the_users_own_direct_messages_concern_it_and_others_dms_do_not() {
        let seat = Seat {
            user: "alice".into(),
            room: "#ops".into(),
        };
        assert_eq!(placement("#ops", &seat), (true, true));
        assert_eq!(placement("#alerts", &seat), (false, true));
        assert_eq!(placement("@alice,@rocketops", &seat), (false, true));
        assert_eq!(placement("@bob,@rocketops", &seat), (false, false));
        let dm = Seat {
            user: "alice".into(),
            room: "@rocketops".into(),
        };
        assert_eq!(placement("@alice,@rocketops", &dm), (true, true));
    }

    #[test]
    fn the_prompt_names_the_user_and_the_room() {
        let s = Seat {
            user: "alice".into(),
            room: "#ops".into(),
        };
        assert_eq!(s.prompt(), "alice@#ops> ");
    }

    #[test]
    fn typed_lines_are_commands_to_the_terminal_or_chat() {
        assert_eq!(read_line("  "), Typed::Nothing);
        assert_eq!(read_line(":as @admin"), Typed::SpeakAs("admin".into()));
        assert_eq!(read_line(":in alerts"), Typed::MoveTo("#alerts".into()));
        assert_eq!(read_line(":in @bob"), Typed::MoveTo("@bob".into()));
        assert_eq!(read_line(":quit"), Typed::Quit);
        assert_eq!(read_line("/status"), Typed::Say("/status".into()));
    }

    #[test]
    fn a_new_message_is_shown_whole_and_an_edit_only_by_the_lines_that_changed() {
        let p = "[#ops] rocketops: ";
        let first = "⏳ *#3 deploy test 7.0.0* · @alice · 0s\n· set image\n· rollout";
        assert_eq!(
            render(p, first, None).unwrap(),
            "[#ops] rocketops: ⏳ *#3 deploy test 7.0.0* · @alice · 0s\n                  · set image\n                  · rollout"
        );
        let old: Vec<String> = first.lines().map(str::to_string).collect();
        let second = "⏳ *#3 deploy test 7.0.0* · @alice · 1s\n✓ set image (0.1s)\n· rollout";
        assert_eq!(
            render(p, second, Some(&old)).unwrap(),
            "[#ops] rocketops: ⏳ *#3 deploy test 7.0.0* · @alice · 1s\n                  ✓ set image (0.1s)"
        );
        assert_eq!(
            render(p, first, Some(&old)),
            None,
            "an edit that changed nothing"
        );
    }
}
