//! Tests for configuration loading and its error messages.

use super::*;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::from_toml(src, Path::new("rocketops.toml"), &|_| None)
}

const GOOD: &str = r#"
[bot]
prefixes = ["!"]

[rocketchat]
url = "https://chat.example.org"
username = "rocketops"
password = "hunter2"
rooms = ["ops", "deploys"]
ping_interval = "15s"
"#;

#[test]
fn a_valid_file_loads_with_defaults_filled_in() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.bot.prefixes, vec!["!"]);
    assert_eq!(c.bot.store_path, PathBuf::from("./data"));
    assert_eq!(c.rocketchat.alerts_channel, "alerts");
    assert_eq!(c.rocketchat.ping_interval, Duration::from_secs(15));
    assert_eq!(c.rocketchat.max_message_len, 5000);
}

#[test]
fn an_unknown_key_is_an_error_naming_key_and_line() {
    let src = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\npingg_interval = \"5s\"\n";
    let err = parse(src).unwrap_err().to_string();
    assert!(err.contains("rocketops.toml:4:"), "{err}");
    assert!(err.contains("pingg_interval"), "{err}");
}

#[test]
fn a_bad_url_names_the_key_and_its_line() {
    let src = "[rocketchat]\ntoken = \"t\"\nurl = \"ftp://chat\"\n";
    let err = parse(src).unwrap_err().to_string();
    assert!(
        err.contains("rocketops.toml:3:1: key `rocketchat.url`"),
        "{err}"
    );
    assert!(err.contains("ftp"), "{err}");
}

#[test]
fn a_wrongly_typed_value_names_its_key_and_line() {
    let src = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\nmax_message_len = \"long\"\n";
    let err = parse(src).unwrap_err().to_string();
    assert!(err.contains("rocketops.toml:4:"), "{err}");
    assert!(err.contains("max_message_len"), "{err}");
}

#[test]
fn a_toml_syntax_error_names_the_line() {
    let src = "[rocketchat]\nurl = \"http://x\n";
    let err = parse(src).unwrap_err().to_string();
    assert!(err.contains("rocketops.toml:2:"), "{err}");
}

#[test]
fn missing_credentials_are_reported_with_the_remedy() {
    let err = parse("[rocketchat]\nurl = \"http://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ROCKETOPS_RC_TOKEN"), "{err}");
}

#[test]
fn secrets_can_come_from_the_environment() {
    let src = "[rocketchat]\nurl = \"http://x\"\n";
    let c = Config::from_toml(src, Path::new("f.toml"), &|k| {
        (k == "ROCKETOPS_RC_TOKEN").then(|| "pat-123".to_string())
    })
    .unwrap();
    assert_eq!(c.rocketchat.token.as_ref().unwrap().expose(), "pat-123");
}

#[test]
fn secrets_never_appear_in_debug_output_or_the_summary() {
    let c = parse(GOOD).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!c.summary().contains("hunter2"));
    assert!(c.summary().contains("password"));
}

#[test]
fn several_problems_are_all_reported() {
    let src = "[bot]\nprefixes = [\"a b\"]\n[rocketchat]\nurl = \"nope\"\ntoken = \"t\"\nmax_message_len = 5\n";
    let err = parse(src).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

proptest::proptest! {
    #[test]
    fn no_input_makes_the_loader_panic(s in "\\PC{0,120}") {
        let _ = parse(&s);
    }

    #[test]
    fn unknown_keys_and_broken_values_in_a_real_file_never_make_the_loader_panic(
        junk in "([a-zé_]{1,8} = [0-9\"a-zé{}=]{0,5}\n|\\[[a-z.é]{1,12}\\]\n){0,6}"
    ) {
        let src = format!("[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n{junk}");
        let _ = parse(&src);
    }
}

#[test]
fn the_example_configuration_in_the_repository_is_valid() {
    let src = include_str!("../../rocketops.example.toml");
    let c = Config::from_toml(src, Path::new("rocketops.example.toml"), &|k| {
        (k == "ROCKETOPS_RC_TOKEN").then(|| "t".to_string())
    })
    .unwrap();
    assert_eq!(c.rocketchat.send_deadline, Duration::from_secs(120));
}

#[test]
fn environments_are_read_with_defaults_and_bad_names_are_reported() {
    let src = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\n[environments.prod]\nnamespace = \"rc-prod\"\ncontext = \"big\"\n[environments.test]\n";
    let c = parse(src).unwrap();
    let prod = &c.environments["prod"];
    assert_eq!(prod.namespace_or("prod"), "rc-prod");
    assert_eq!(prod.deployment, "rocketchat");
    assert_eq!(prod.container(), "rocketchat");
    assert!(prod.is_production("prod"));
    assert!(!c.environments["test"].is_production("test"));
    assert!(
        c.summary()
            .contains("prod (namespace rc-prod, context big, production)")
    );
    let bad = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\n[environments.Prod_1]\n";
    let err = parse(bad).unwrap_err().to_string();
    assert!(
        err.contains("rocketops.toml:4:") && err.contains("environments.Prod_1"),
        "{err}"
    );
    let unknown =
        "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\n[environments.dev]\nnamespase = \"x\"\n";
    let err = parse(unknown).unwrap_err().to_string();
    assert!(
        err.contains("rocketops.toml:5:") && err.contains("namespase"),
        "{err}"
    );
}

#[test]
fn a_retention_that_would_not_keep_the_newest_backup_is_refused_with_its_line() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.prod.backup]\nretention = { daily = 0, weekly = 4, monthly = 6 }\n";
    let e = Config::from_toml(src, Path::new("bot.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bot.toml:5") && e.contains("environments.prod.backup.retention"),
        "{e}"
    );
    assert!(e.contains("`daily` must be at least 1"), "{e}");
}

#[test]
fn a_key_without_a_value_is_named_with_what_to_write() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.test]\nmax_replicas = \n";
    let e = Config::from_toml(src, std::path::Path::new("bot.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bot.toml:5:")
            && e.contains("key `environments.test.max_replicas`: has no value after `=`"),
        "{e}"
    );
    assert!(!e.contains("string values must be quoted"), "{e}");
}

#[test]
fn every_unknown_key_is_reported_in_one_run_with_the_nearest_known_one_and_the_other_problems() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nbogus = 1\n[environments.test]\nmax_replica = 3\nfoo = { a = 1 }\n[environments.test.schedule]\nbackup = \"0 25 * * *\"\n";
    let e = Config::from_toml(src, std::path::Path::new("bot.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert!(
        lines[0].starts_with(
            "bot.toml:4:1: key `rocketchat.bogus`: unknown key `bogus`; the keys here are `url`"
        ),
        "{e}"
    );
    assert!(
        lines[1].ends_with("unknown key `max_replica`; did you mean `max_replicas`?"),
        "{e}"
    );
    assert!(lines[2].contains("environments.test.foo"), "{e}");
    assert!(lines[3].ends_with("hour 25 is out of range 0-23"), "{e}");
}

/// The keys a table accepts, as the loader names them when it meets one it does not know.
fn known_keys(table: &str) -> Vec<String> {
    let base = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n";
    let src = if table == "rocketchat" {
        format!("{base}zz_not_a_key = 1\n")
    } else if let Some(array) = table.strip_prefix("[[") {
        format!("{base}[[{array}\nzz_not_a_key = 1\n")
    } else {
        format!("{base}[{table}]\nzz_not_a_key = 1\n")
    };
    let e = parse(&src).unwrap_err().to_string();
    let e = e.lines().next().unwrap_or_default().to_string();
    e.split("the keys here are ")
        .nth(1)
        .unwrap_or_else(|| panic!("{table}: {e}"))
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect()
}

#[test]
fn the_example_configuration_mentions_every_key_the_configuration_accepts() {
    let example = include_str!("../../rocketops.example.toml");
    let written = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} ="))
                || l.contains(&format!(" {key} ="))
                || l.contains(&format!("{{ {key} ="))
                || l.starts_with(&format!("[{key}]"))
                || l.contains(&format!(".{key}]"))
        })
    };
    let mut missing = Vec::new();
    for table in [
        "bot",
        "rocketchat",
        "telemetry",
        "alerts",
        "policy",
        "audit",
        "ha",
        "environments.x",
        "environments.x.policy",
        "[[environments.x.policy.allow]]",
        "environments.x.backup",
        "environments.x.backup.offsite",
        "environments.x.schedule",
    ] {
        for key in known_keys(table) {
            if !written(&key) {
                missing.push(format!("{table}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rocketops.example.toml (the configuration reference) does not mention: {missing:?}"
    );
}

#[test]
fn the_nightly_verify_alternates_between_the_copies_unless_told_otherwise() {
    let src = "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.prod.backup.offsite]\nendpoint = \"https://s3.example.org\"\nbucket = \"acme\"\nsecret = \"s3\"\nencryption_secret = \"key\"\n";
    let c = parse(src).unwrap();
    let o = c.environments["prod"].backup.offsite.clone().unwrap();
    assert_eq!(o.prefix_or("prod"), "prod/");
    assert_eq!(o.region, "us-east-1");
    assert_eq!(o.url("prod", "prod-1"), "s3://acme/prod/prod-1");
    // Day 1 of the year off-site, day 2 on the cluster, …
    let days: Vec<bool> = (1..=4).map(|d| o.verify_offsite(d)).collect();
    assert_eq!(days, [true, false, true, false]);
    let only = parse(&format!("{src}verify = \"offsite\"\n")).unwrap();
    let only = only.environments["prod"].backup.offsite.clone().unwrap();
    assert!((1..=4).all(|d| only.verify_offsite(d)));
    let never = parse(&format!("{src}verify = \"on-cluster\"\n")).unwrap();
    let never = never.environments["prod"].backup.offsite.clone().unwrap();
    assert!((1..=4).all(|d| !never.verify_offsite(d)));
    // A missing bucket is named with its table.
    let err = parse(&src.replace("bucket = \"acme\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket"), "{err}");
}

#[test]
fn an_absurd_or_negative_number_of_approvals_is_refused_with_its_key_and_line() {
    let head =
        "[rocketchat]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n[environments.prod.policy]\n";
    let e = Config::from_toml(
        &format!("{head}approvals = 500\n"),
        Path::new("bot.toml"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bot.toml:5:1: key `environments.prod.policy.approvals`")
            && e.contains("500 is not a number of approvers anyone can gather (at most 10)"),
        "{e}"
    );
    let e = Config::from_toml(
        &format!("{head}approvals = -1\n"),
        Path::new("bot.toml"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bot.toml:5:") && e.contains("approvals"), "{e}");
}

#[test]
fn check_config_says_how_many_people_approve_a_change() {
    let src = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\n[environments.prod.policy]\napprovals = 2\n[environments.test]\n";
    let s = parse(src).unwrap().summary();
    assert!(
        s.contains("policy prod:    changes confirmed by the requester, approved by 2 different people, none of them the requester"),
        "{s}"
    );
    assert!(
        s.contains("policy test:    changes unconfirmed, no approval"),
        "{s}"
    );
}

#[test]
fn a_string_missing_its_closing_quote_is_told_so_not_that_it_needs_quotes() {
    let e = parse("[rocketchat]\nurl = \"http://x\ntoken = \"t\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("key `rocketchat.url`"), "{e}");
    assert!(
        e.contains("opens a string with \" that is not closed on this line: add the closing \""),
        "{e}"
    );
    assert!(!e.contains("strings need quotes"), "{e}");
}

#[test]
fn a_misspelt_table_header_gets_one_did_you_mean_and_no_other_error() {
    let src = "[rocketchat]\nurl = \"http://x\"\ntoken = \"t\"\n[enviroments.test.schedule]\nbackup = \"0 2 * * *\"\n[policy]\nrate_burst = 3\n";
    let e = parse(src).unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "{e}");
    assert!(
        lines[0].contains("unknown key `enviroments`; did you mean `environments`?"),
        "{e}"
    );
    assert!(!e.contains("cannot be empty"), "{e}");
}

#[test]
fn an_item_of_a_list_inside_an_array_of_tables_is_found_at_its_own_line() {
    let src = "[environments.prod]\n[[environments.prod.policy.allow]]\ncommands = [\"deploy\"]\n[[environments.prod.policy.allow]]\ncommands = [\"status\",\n  \"rolback\"]\n";
    let at =
        locate::span_of_item(src, "environments.prod.policy.allow[1].commands", "rolback").unwrap();
    assert_eq!(line_col(src, at), (6, 3));
    assert!(
        locate::span_of_item(src, "environments.prod.policy.allow[0].commands", "rolback")
            .is_none()
    );
    assert!(
        locate::span_of_item(src, "environments.prod.policy.allow[7].commands", "deploy").is_none()
    );
}
