//! `rocketops sandbox` as a newcomer runs it: the binary, headless, answering `/ping` in #ops, stopping on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::PATIENCE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_sandbox_answers_ping_in_ops_and_exits_cleanly_on_sigterm() {
    rocketops::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .arg("sandbox")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let ready = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("Rocket.Chat simulator: ").nth(1) {
                url = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("running headless") {
                return;
            }
        }
        panic!("sandbox ended before it was ready");
    })
    .await;
    assert!(ready.is_ok(), "sandbox did not become ready");
    let url = url.expect("the banner names the simulator's address");

    let http = reqwest::Client::new();
    http.post(format!("{url}/_sim/post"))
        .json(&json!({"user":"alice","room":"#ops","text":"/ping"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let answered = tokio::time::timeout(PATIENCE, async {
        loop {
            let msgs: Vec<Value> = http
                .get(format!("{url}/_sim/messages?room=ops"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if msgs
                .iter()
                .any(|m| m["u"]["username"] == "rocketops" && m["msg"] == "pong")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(answered.is_ok(), "the bot answered /ping in #ops");

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit, got {status}");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pseudo-terminal: the sandbox's standard input, output and error, as a person's terminal.
struct Pty {
    master: std::fs::File,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Pty {
    fn spawn(dir: &std::path::Path) -> (Pty, std::process::Child) {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors on success; they are owned from here on.
        let ok = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(ok, 0, "openpty");
        // SAFETY: both descriptors were just opened by openpty and are not used elsewhere.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
            .arg("sandbox")
            .current_dir(dir)
            .env("TERM", "xterm")
            .env_remove("RUST_LOG")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut reader, out) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (Pty { master, seen }, child)
    }

    fn type_keys(&mut self, keys: &str) {
        use std::io::Write;
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the terminal has shown `what`; returns everything shown so far.
    fn wait_for(&self, what: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.contains(what) {
                return seen;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the terminal never showed {what:?}; it showed:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn at_the_prompt_the_sandbox_names_who_and_where_keeps_logs_off_screen_and_leaves_at_once_on_ctrl_c()
 {
    let dir = tempfile::tempdir().unwrap();
    let (mut pty, child) = Pty::spawn(dir.path());
    // A failing assertion must not leave the sandbox running.
    let mut child = KillOnDrop(child);
    let banner = pty.wait_for("alice@#ops> ");
    let kubeconfig = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("kubeconfig: "))
        .expect("the kubeconfig's path")
        .trim()
        .to_string();
    assert!(std::path::Path::new(&kubeconfig).exists());
    assert!(banner.contains("logs: "), "{banner}");
    assert!(
        !banner.contains(" INFO "),
        "no log lines on the chat screen: {banner}"
    );
    pty.type_keys("/ping\r");
    pty.wait_for("rocketops: pong");
    // The bot's hints are written the way they work where they are read: in a channel, with `/`.
    pty.type_keys("/lock test drill\r");
    pty.wait_for("`/unlock test`");
    pty.type_keys("/unlock test\r");
    pty.wait_for("test is unlocked");
    pty.type_keys(":as mallory\r");
    pty.wait_for("there is no user mallory");
    pty.type_keys(":as bob\r");
    pty.wait_for("bob@#ops> ");
    // Ctrl-C at the prompt: the sandbox stops at once, without waiting for Enter.
    pty.type_keys("\u{3}");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(15) {
            panic!(
                "still running 15 s after Ctrl-C:\n{}",
                pty.seen.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(&kubeconfig).exists(),
        "the kubeconfig of a stopped sandbox is removed"
    );
}

#[test]
fn fifty_lines_typed_quickly_at_the_prompt_show_every_echo_and_answer_once_and_other_rooms_as_one_line()
 {
    let dir = tempfile::tempdir().unwrap();
    let (mut pty, child) = Pty::spawn(dir.path());
    let _child = KillOnDrop(child);
    let banner = pty.wait_for("alice@#ops> ");
    let url = banner
        .lines()
        .find_map(|l| l.split("Rocket.Chat simulator: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the simulator's address")
        .to_string();
    // Fifty lines typed at once, as fast as a paste: ten commands from each of the three users
    // (each within the bot's per-user burst), the switches between them, and lines the prompt
    // answers itself. Every line must show its echo or its answer exactly once.
    let mut typed = String::new();
    let mut echoes = Vec::new();
    let mut shown_by_prompt = Vec::new();
    for (user, tag) in [("alice", "a"), ("bob", "b"), ("admin", "c")] {
        typed.push_str(&format!(":as {user}\r"));
        shown_by_prompt.push(format!("(now speaking as {user})"));
        for i in 0..10 {
            typed.push_str(&format!("/ping {tag}{i:02}\r"));
            echoes.push((user, format!("{tag}{i:02}")));
        }
    }
    for i in 0..17 {
        typed.push_str(&format!(":as ghost{i:02}\r"));
        shown_by_prompt.push(format!("(there is no user ghost{i:02};"));
    }
    assert_eq!(typed.matches('\r').count(), 50);
    pty.type_keys(&typed);
    let started = std::time::Instant::now();
    while !(echoes
        .iter()
        .all(|(_, t)| seen_once(&pty, &format!("[#ops] rocketops: pong {t}")))
        && shown_by_prompt.iter().all(|l| seen_once(&pty, l)))
        && started.elapsed() < PATIENCE
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = pty.seen.lock().unwrap().clone();
    for (user, t) in &echoes {
        assert_eq!(
            shown.matches(&format!("[#ops] {user}: /ping {t}")).count(),
            1,
            "the echo of /ping {t}:\n{shown}"
        );
        assert_eq!(
            shown
                .matches(&format!("[#ops] rocketops: pong {t}"))
                .count(),
            1,
            "the answer to /ping {t}:\n{shown}"
        );
    }
    for line in &shown_by_prompt {
        assert!(
            shown.contains(line.as_str()),
            "{line} never shown:\n{shown}"
        );
    }
    pty.type_keys(":as alice\r");
    pty.wait_for("(now speaking as alice)\r\n");
    // A new message in another room shows as one line.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        rocketops::tls::install_crypto_provider();
        reqwest::Client::new()
            .post(format!("{url}/_sim/post"))
            .json(&json!({"user": "admin", "room": "#alerts", "text": "drill: the pager works\nsecond line"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(200));
    pty.wait_for("[#alerts] admin: drill: the pager works …");
    // Moving to a room shows its latest messages.
    pty.type_keys(":in #alerts\r");
    let moved = pty.wait_for("(now in #alerts)");
    let after = moved.rfind("(now in #alerts)").unwrap();
    let started = std::time::Instant::now();
    loop {
        let shown = pty.seen.lock().unwrap().clone();
        if shown[after..].contains("[#alerts] admin: drill: the pager works") {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no history on moving to #alerts:\n{}",
            &shown[after..]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pty.type_keys(":quit\r");
}

/// Whether the terminal has shown `what`.
fn seen_once(pty: &Pty, what: &str) -> bool {
    pty.seen.lock().unwrap().contains(what)
}
