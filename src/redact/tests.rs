//! Tests for the redactor: the corpus of every form found so far, and properties over generated log text.

use super::*;
use proptest::prelude::*;

struct Case {
    name: String,
    secrets: Vec<String>,
    keep: Vec<String>,
    text: String,
}

fn list(line: &str, prefix: &str) -> Option<Vec<String>> {
    line.strip_prefix(prefix).map(|rest| {
        rest.split(", ")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for line in include_str!("corpus.txt").lines() {
        if let Some(name) = line.strip_prefix("## ") {
            cases.push(Case {
                name: name.to_string(),
                secrets: vec![],
                keep: vec![],
                text: String::new(),
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            continue;
        };
        if let Some(s) = list(line, "secrets: ") {
            case.secrets = s;
        } else if let Some(k) = list(line, "keep: ") {
            case.keep = k;
        } else if !line.is_empty() || !case.text.is_empty() {
            case.text.push_str(line);
            case.text.push('\n');
        }
    }
    cases
}

#[test]
fn every_secret_in_the_corpus_is_removed_and_the_readable_parts_are_kept() {
    let cases = corpus();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let out = redact(&c.text);
        for s in &c.secrets {
            if out.contains(s.as_str()) {
                failures.push(format!("{}: `{s}` survived in:\n{out}", c.name));
            }
        }
        for k in &c.keep {
            if !out.contains(k.as_str()) {
                failures.push(format!("{}: `{k}` was lost from:\n{out}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn redacting_twice_changes_nothing_more() {
    for c in corpus() {
        let once = redact(&c.text);
        assert_eq!(redact(&once), once, "{}", c.name);
    }
}

#[test]
fn mass_mentions_and_code_fences_in_outside_text_are_defused() {
    let out = outside("pod says @all and @here, closes ``` the block and @HERE too");
    assert!(!out.contains("@all") && !out.contains("@here") && !out.contains("@HERE"));
    assert!(!out.contains("```"), "{out}");
    assert!(out.contains("pod says"), "{out}");
}

#[test]
fn an_outgoing_message_keeps_only_its_own_leading_page() {
    let out = outgoing("@here 🚨 *prod* job/backup failed: event says @all password=hunter9");
    assert!(out.starts_with("@here 🚨"), "{out}");
    assert!(!out.contains("@all") && !out.contains("hunter9"), "{out}");
    let echoed = outgoing("pong @here");
    assert!(!echoed.contains("@here"), "{echoed}");
}

/// Log-ish lines around a planted secret.
fn filler() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("2026-11-30T04:00:00Z INFO starting dump".to_string()),
            Just("writing rocketchat.users (1200 documents)".to_string()),
            Just("+ mkdir -p /backup/test".to_string()),
            Just("{\"level\":\"info\",\"msg\":\"connected\"}".to_string()),
            "[a-z ]{0,40}",
        ],
        0..6,
    )
    .prop_map(|v| v.join("\n"))
}

/// The forms a secret takes in log text; `{}` is the secret.
const FORMS: &[&str] = &[
    "password={}",
    "DB_PASSWORD={}",
    "MONGO_PASS={}",
    "API_TOKEN: {}",
    "client_secret = \"{}\"",
    "--password {}",
    "-p {}",
    "mongodb://admin:{}@mongo:27017/db",
    "redis://:{}@redis:6379",
    "Authorization: Bearer {}",
    "{\"password\": \"{}\"}",
    "{\"token\":\n  \"{}\"}",
    "PGPASSWORD='{}'",
];

proptest! {
    #[test]
    fn a_secret_planted_anywhere_in_log_text_never_comes_out(
        before in filler(),
        after in filler(),
        form in prop::sample::select(FORMS),
        secret in "[A-Za-z0-9][A-Za-z0-9@%+^]{7,23}",
        glue in prop::sample::select(&[" ", "\n", "\t", " | "][..]),
    ) {
        let planted = form.replace("{}", &secret);
        let text = format!("{before}{glue}{planted}{glue}{after}");
        let out = redact(&text);
        prop_assert!(!out.contains(&secret), "{} -> {}", text, out);
        let defused = outside(&text);
        prop_assert!(!defused.contains(&secret));
    }

    #[test]
    fn redaction_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = outside(&text);
        let _ = outgoing(&text);
    }
}
