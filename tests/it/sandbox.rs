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
