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
    "redis-cli -h redis -a {} ping",
    "rclone copy /backup store: --crypt-password {}",
    "rclone lsd sealed: --crypt-password2={}",
    "curl -fsS -u backup:{} https://store.example/upload",
    "mysql -uroot -p{} chat",
    "sshpass -p {} ssh backup@host",
    "htpasswd -b /etc/nginx/.htpasswd admin {}",
    "CREATE USER backup WITH PASSWORD '{}';",
    "CREATE USER 'app'@'%' IDENTIFIED BY '{}';",
    "requirepass {}",
    "encryption_key={}",
    "AWS_SECRET_ACCESS_KEY={}",
    "amqp://guest:{}@rabbit:5672/",
    "docker login -u bot -p {} registry.example",
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

#[test]
fn every_rule_builds_and_the_vendor_list_is_loaded() {
    let (set, errors) = rules::RuleSet::build();
    assert!(errors.is_empty(), "{errors:?}");
    let vendor = set
        .rules
        .iter()
        .filter(|r| r.id.starts_with("vendor:"))
        .count();
    assert!(vendor >= 30, "{vendor} vendor rules");
}

/// One shape per rule family: the text with `{}` where the secret goes, the secret, and what must
/// stay readable around it.
const SHAPES: &[(&str, &str, &str)] = &[
    (
        "redis-cli -h redis -a {} ping",
        "Rd7pQ2xLm9Vw",
        "redis-cli -h redis -a",
    ),
    (
        "rclone copy /backup store: --crypt-password {}",
        "Rc7pQ2xLm9Vw",
        "--crypt-password",
    ),
    (
        "rclone lsd sealed: --crypt-password2={}",
        "Rc8pQ2xLm9Vw",
        "--crypt-password2=",
    ),
    (
        "curl -fsS -u backup:{} https://store.example/upload",
        "Cu7pQ2xLm9Vw",
        "-u backup:",
    ),
    (
        "curl --user backup:{} https://store.example",
        "Cu8pQ2xLm9Vw",
        "--user backup:",
    ),
    ("mysql -uroot -p{} chat", "My7pQ2xLm9Vw", "mysql -uroot -p"),
    ("mysqldump -u root -p {} chat", "My8pQ2xLm9Vw", "mysqldump"),
    (
        "mongodump --username admin --password {} --gzip",
        "Mo7pQ2xLm9Vw",
        "--password",
    ),
    (
        "mongodump --password={} --gzip",
        "Mo8pQ2xLm9Vw",
        "--password=",
    ),
    (
        "mongorestore -u admin -p {} --drop",
        "Mo9pQ2xLm9Vw",
        "-u admin -p",
    ),
    (
        "sshpass -p {} ssh backup@host",
        "Ss7pQ2xLm9Vw",
        "sshpass -p",
    ),
    (
        "htpasswd -b /etc/nginx/.htpasswd admin {}",
        "Ht7pQ2xLm9Vw",
        "htpasswd -b",
    ),
    ("htpasswd -nb admin {}", "Ht8pQ2xLm9Vw", "admin"),
    (
        "ldapsearch -x -D cn=admin -w {} -b dc=x",
        "Ld7pQ2xLm9Vw",
        "-D cn=admin -w",
    ),
    (
        "openssl enc -aes-256-cbc -pass pass:{} -in x",
        "Os7pQ2xLm9Vw",
        "-pass pass:",
    ),
    (
        "docker login -u bot -p {} registry.example",
        "Dk7pQ2xLm9Vw",
        "docker login",
    ),
    (
        "PGPASSWORD={} pg_dump -h db chat",
        "Pg7pQ2xLm9Vw",
        "PGPASSWORD=",
    ),
    ("MYSQL_PWD={} mysqldump chat", "My9pQ2xLm9Vw", "MYSQL_PWD="),
    (
        "REDISCLI_AUTH={} redis-cli ping",
        "Rd8pQ2xLm9Vw",
        "REDISCLI_AUTH=",
    ),
    (
        "mongodb://admin:{}@mongodb-0:27017/rocketchat",
        "Mu7pQ2/xLm9Vw",
        "mongodb-0:27017",
    ),
    (
        "mongodb+srv://app:{}@cluster0.example.net/chat",
        "Mu8pQ2xLm9Vw",
        "cluster0.example.net",
    ),
    (
        "postgresql://app:{}@db:5432/chat",
        "Pu7pQ2xLm9Vw",
        "db:5432/chat",
    ),
    ("redis://:{}@redis:6379/0", "Ru7pQ2xLm9Vw", "redis:6379"),
    (
        "amqp://guest:{}@rabbit:5672/",
        "Au7pQ2xLm9Vw",
        "rabbit:5672",
    ),
    ("password: {}", "Kv1pQ2xLm9Vw", "password"),
    ("encryption_key={}", "Kv2pQ2xLm9Vw", "encryption_key"),
    (
        "AWS_SECRET_ACCESS_KEY={}",
        "Kv3pQ2xLm9Vw",
        "AWS_SECRET_ACCESS_KEY",
    ),
    ("apiKey: {}", "Kv4pQ2xLm9Vw", "apiKey"),
    ("client_secret = {}", "Kv5pQ2xLm9Vw", "client_secret"),
    ("Credentials={}", "Kv6pQ2xLm9Vw", "Credentials"),
    ("auth: {}", "Kv7pQ2xLm9Vw", "auth"),
    ("pw={}", "Kv8pQ2xLm9Vw", "pw="),
    ("X-Auth-Token: {}", "Kv9pQ2xLm9Vw", "X-Auth-Token"),
    (
        "CREATE USER backup WITH PASSWORD '{}';",
        "Sq1pQ2xLm9Vw",
        "CREATE USER backup",
    ),
    (
        "ALTER ROLE app PASSWORD {}",
        "Sq2pQ2xLm9Vw",
        "ALTER ROLE app",
    ),
    (
        "CREATE USER 'app'@'%' IDENTIFIED BY '{}';",
        "Sq3pQ2xLm9Vw",
        "IDENTIFIED BY",
    ),
    ("requirepass {}", "Rq1pQ2xLm9Vw", "requirepass"),
    ("CONFIG SET masterauth {}", "Rq2pQ2xLm9Vw", "masterauth"),
    (
        "redis-server --requirepass {}",
        "Rq3pQ2xLm9Vw",
        "--requirepass",
    ),
    ("token {}", "Hq9Zr2LxV0aPf7Tn", "token"),
    ("Authorization: Bearer {}", "Be7pQ2xLm9Vw", "Authorization"),
    ("aws {}", "AKIAQ3ZXAMPLE7TOKEN2", "aws"),
    ("{}", "ghp_Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2", ""),
    (
        "{}",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "",
    ),
    ("{}", "glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn", ""),
    (
        "slack {}",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "slack",
    ),
    (
        "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{}",
        "AbCdEfGhIjKlMnOpQrStUvWx",
        "hooks.slack.com",
    ),
    (
        "https://chat.example.org/hooks/6f1e2d3c4b5a69788f7e6d5c/{}",
        "AbCdEf123456GhIjKl7890MnOp",
        "chat.example.org/hooks/",
    ),
    (
        "//registry.npmjs.org/:_authToken={}",
        "npm_Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2",
        "_authToken",
    ),
    ("{}", "npm_Zb1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2", ""),
    ("stripe {}", "sk_live_Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8", "stripe"),
    ("maps {}", "AIzaSyAb1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0U", "maps"),
    (
        "sendgrid {}",
        "SG.Ab1Cd2Ef3Gh4Ij5Kl6Mn7.Op8Qr9St0Uv1Wx2Yz3Ab4Cd5Ef6Gh7Ij8Kl",
        "sendgrid",
    ),
    (
        "do {}",
        "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "",
    ),
    (
        "session {}",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXZhbHVl",
        "session",
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA{}\n-----END OPENSSH PRIVATE KEY-----",
        "KeyMaterial9Zq",
        "BEGIN OPENSSH PRIVATE KEY",
    ),
];

/// The ways a line reaches us: `{}` is the shaped text.
const FRAMINGS: &[(&str, &str)] = &[
    ("line start", "{}"),
    ("set -x", "+ {}"),
    ("nested set -x", "++ {}"),
    ("single-quoted", "sh -c '{}'"),
    ("double-quoted", "sh -c \"{}\""),
    ("JSON", "{\"level\":\"error\",\"msg\":\"{}\",\"ts\":1}"),
    ("YAML", "env:\n  - name: CMD\n    value: {}\n"),
    (
        "end of line",
        "2026-11-30T04:00:01Z ERROR backup failed running {}",
    ),
    (
        "middle of a long line",
        "2026-11-30T04:00:01Z INFO [worker-3] rocketchat.rocketchat_message 120431 documents, 812 MiB, sha256 9f2c5d0e8b7a1f2e3d4c5b6a79881726354453627180919a8b7c6d5e4f3a2b1c0; then {} ; done in 41.2s (image rocketchat/rocket.chat:7.0.0, pod mongodb-backup-29384-x7k2q)",
    ),
];

fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

#[test]
fn every_rule_in_every_framing_removes_its_secret_and_keeps_what_names_it() {
    let mut failures = Vec::new();
    for (shape, secret, keep) in SHAPES {
        let line = shape.replace("{}", secret);
        for (framing, frame) in FRAMINGS {
            let body = if *framing == "JSON" {
                json_escaped(&line)
            } else {
                line.clone()
            };
            let text = frame.replace("{}", &body);
            let out = redact(&text);
            if out.contains(secret) {
                failures.push(format!(
                    "[{framing}] `{secret}` survived:\n  {text}\n→ {out}"
                ));
            }
            if !keep.is_empty() && !out.contains(keep) && *framing != "JSON" {
                failures.push(format!("[{framing}] `{keep}` was lost:\n  {text}\n→ {out}"));
            }
            if redact(&out) != out {
                failures.push(format!("[{framing}] a second pass changed:\n  {out}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ordinary_operations_text_is_left_alone() {
    for text in [
        "key rotation done",
        "token bucket refilled: 10 of 10",
        "rocketchat/rocket.chat:7.0.0 rolled out (3/3 ready)",
        "sha256:9f2c5d0e8b7a1f2e3d4c5b6a79881726354453627180919a8b7c6d5e4f3a2b1c0",
        "backup rocketchat-20261130-0400.gz sha256 9f2c5d0e8b7a1f2e3d4c5b6a79881726354453627180919a8b7c6d5e4f3a2b1c0",
        "pod mongodb-backup-29384-x7k2q in rocketchat-prod: Completed",
        "+ mkdir -p /backup/prod",
        "+ psql -h db -p 5432 -U app chat",
        "redis-cli -h redis -p 6379 ping",
        "docker run -p 8080:80 nginx",
        "ssh -p 22 backup@host",
        "password authentication failed for user \"app\"",
        "the monkey ate the bypass",
        "secretKeyRef name mongodb",
        "mongodump --authenticationDatabase admin --gzip",
        "curl -fsS https://chat.example.org/api/info",
        "deploy prod 7.0.0 by @alice: ✅ done",
        "tokens used: 1200",
        "https://chat.example.org:8443/hooks",
    ] {
        assert_eq!(redact(text), text, "over-redacted");
    }
}

#[test]
fn redaction_cost_per_kilobyte_of_log_is_printed() {
    let plain: String = (0..64)
        .map(|i| format!("2026-11-30T04:00:{:02}Z INFO writing rocketchat.rocketchat_message chunk {i} (1200 documents)\n", i % 60))
        .collect();
    let leaky: String = (0..64)
        .map(|i| match i % 8 {
            0 => "+ redis-cli -h redis -a Rd7pQ2xLm9Vw ping\n".to_string(),
            1 => "connecting to mongodb://admin:Mu7pQ2xLm9Vw@mongodb-0:27017/rocketchat\n".into(),
            2 => "{\"password\": \"Kv1pQ2xLm9Vw\", \"user\": \"admin\"}\n".into(),
            _ => format!(
                "2026-11-30T04:00:{:02}Z INFO writing chunk {i} (1200 documents)\n",
                i % 60
            ),
        })
        .collect();
    let _ = redact("warm up the rule table");
    for (name, text) in [("plain", &plain), ("with secrets", &leaky)] {
        let rounds = 50;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(redact(std::hint::black_box(text)));
        }
        let per_kb =
            start.elapsed().as_secs_f64() * 1e6 / rounds as f64 / (text.len() as f64 / 1024.0);
        println!(
            "redaction cost, {name} log: {per_kb:.1} µs per KB ({} bytes)",
            text.len()
        );
    }
}
