//! Table-driven tests of every command's accepted forms and of malformed inputs with the exact answer shown.

use super::*;
use proptest::prelude::*;

fn grammar() -> Grammar {
    let env = |name: &str, allow: bool| EnvSpec {
        name: name.into(),
        min_replicas: if name == "prod" { 2 } else { 0 },
        max_replicas: 10,
        allow_image_refs: allow,
        components: vec!["rocketchat".into(), "mongodb".into()],
    };
    let migrate = runbook::parse_runbook(
        std::path::Path::new("commands/migrate.toml"),
        "name = \"migrate\"\nsummary = \"runs the schema migration\"\njob = \"\"\"\nkind: Job\nspec:\n  template:\n    spec:\n      containers:\n      - name: m\n        image: ${image}:${version}\n\"\"\"\n[[params]]\nname = \"version\"\ntype = \"version\"\ndescription = \"the target version\"\n[[params]]\nname = \"steps\"\ntype = \"integer\"\nmin = 1\nmax = 5\nrequired = false\ndefault = \"1\"\ndescription = \"how many steps\"\n",
        &["dev".into(), "test".into(), "prod".into()],
    )
    .unwrap();
    Grammar {
        environments: vec![env("dev", true), env("test", false), env("prod", false)],
        runbooks: vec![migrate],
    }
}

fn ok(input: &str) -> Command {
    parse(input, &grammar()).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
}

#[test]
fn every_command_parses_in_its_accepted_forms() {
    let d = |env: &str, v: &str, nb| Command::Deploy {
        env: env.into(),
        version: v.into(),
        no_backup: nb,
    };
    let cases: Vec<(&str, Command)> = vec![
        ("deploy test v3.1", d("test", "v3.1", false)),
        ("DEPLOY Test v3.1", d("test", "v3.1", false)),
        ("/deploy prod 7.0.0 --no-backup", d("prod", "7.0.0", true)),
        ("deploy prod 7.0.0 —no-backup", d("prod", "7.0.0", true)),
        (
            "deploy dev rocketchat/rocket.chat:7.0.0",
            d("dev", "rocketchat/rocket.chat:7.0.0", false),
        ),
        ("deploy test \"v3.1\"", d("test", "v3.1", false)),
        (
            "rollback prod",
            Command::Rollback {
                env: "prod".into(),
                to: None,
            },
        ),
        (
            "rollback prod 4",
            Command::Rollback {
                env: "prod".into(),
                to: Some(RollbackTarget::Revision(4)),
            },
        ),
        (
            "rollback prod #4",
            Command::Rollback {
                env: "prod".into(),
                to: Some(RollbackTarget::Revision(4)),
            },
        ),
        (
            "rollback test v3.0",
            Command::Rollback {
                env: "test".into(),
                to: Some(RollbackTarget::Version("v3.0".into())),
            },
        ),
        (
            "scale test 5",
            Command::Scale {
                env: "test".into(),
                replicas: 5,
                component: None,
            },
        ),
        (
            "scale test 0",
            Command::Scale {
                env: "test".into(),
                replicas: 0,
                component: None,
            },
        ),
        (
            "scale prod 4 mongodb",
            Command::Scale {
                env: "prod".into(),
                replicas: 4,
                component: Some("mongodb".into()),
            },
        ),
        ("backup now", Command::BackupNow { env: None }),
        (
            "backup now prod",
            Command::BackupNow {
                env: Some("prod".into()),
            },
        ),
        ("backup list", Command::BackupList { env: None }),
        (
            "backup ls test",
            Command::BackupList {
                env: Some("test".into()),
            },
        ),
        (
            "restore test latest from prod",
            Command::Restore {
                env: "test".into(),
                backup: BackupRef::Latest,
                from: Some("prod".into()),
                no_safety_backup: false,
                offsite: false,
            },
        ),
        (
            "restore prod latest from offsite",
            Command::Restore {
                env: "prod".into(),
                backup: BackupRef::Latest,
                from: None,
                no_safety_backup: false,
                offsite: true,
            },
        ),
        (
            "restore prod prod-20261121T000100Z --from offsite",
            Command::Restore {
                env: "prod".into(),
                backup: BackupRef::Named("prod-20261121T000100Z".into()),
                from: None,
                no_safety_backup: false,
                offsite: true,
            },
        ),
        (
            "restore prod prod-20261121T000100Z --no-safety-backup",
            Command::Restore {
                env: "prod".into(),
                backup: BackupRef::Named("prod-20261121T000100Z".into()),
                from: None,
                no_safety_backup: true,
                offsite: false,
            },
        ),
        (
            "verify",
            Command::Verify {
                env: None,
                backup: None,
                offsite: false,
            },
        ),
        (
            "verify prod latest",
            Command::Verify {
                env: Some("prod".into()),
                backup: Some(BackupRef::Latest),
                offsite: false,
            },
        ),
        (
            "verify prod from offsite",
            Command::Verify {
                env: Some("prod".into()),
                backup: None,
                offsite: true,
            },
        ),
        ("status", Command::Status { env: None }),
        (
            "status prod",
            Command::Status {
                env: Some("prod".into()),
            },
        ),
        ("history prod", Command::History { env: "prod".into() }),
        (
            "lock prod",
            Command::Lock {
                env: "prod".into(),
                reason: None,
            },
        ),
        (
            "lock prod release freeze",
            Command::Lock {
                env: "prod".into(),
                reason: Some("release freeze".into()),
            },
        ),
        (
            "lock prod \"db maintenance\"",
            Command::Lock {
                env: "prod".into(),
                reason: Some("db maintenance".into()),
            },
        ),
        ("unlock prod", Command::Unlock { env: "prod".into() }),
        (
            "schedule list",
            Command::Schedule {
                action: ScheduleAction::List,
            },
        ),
        (
            "schedule pause test",
            Command::Schedule {
                action: ScheduleAction::Pause {
                    env: Some("test".into()),
                    kind: None,
                },
            },
        ),
        (
            "schedule resume prod verify",
            Command::Schedule {
                action: ScheduleAction::Resume {
                    env: Some("prod".into()),
                    kind: Some(crate::schedule::Kind::Verify),
                },
            },
        ),
        (
            "backup prune test",
            Command::BackupPrune { env: "test".into() },
        ),
        (
            "schedule resume",
            Command::Schedule {
                action: ScheduleAction::Resume {
                    env: None,
                    kind: None,
                },
            },
        ),
        (
            "migrate test 7.0.0",
            Command::Runbook {
                name: "migrate".into(),
                env: "test".into(),
                params: [
                    ("steps".to_string(), "1".to_string()),
                    ("version".to_string(), "7.0.0".to_string()),
                ]
                .into(),
            },
        ),
        (
            "migrate prod version=7.0.0 steps=3",
            Command::Runbook {
                name: "migrate".into(),
                env: "prod".into(),
                params: [
                    ("steps".to_string(), "3".to_string()),
                    ("version".to_string(), "7.0.0".to_string()),
                ]
                .into(),
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(ok(input), want, "{input}");
    }
    // The queries a module answers by itself: `help`, `ping`, `whoami`.
    let query = |input: &str| match ok(input) {
        Command::Query { query, arg } => (query.name, arg),
        other => panic!("{input}: {other:?}"),
    };
    let cases: Vec<(&str, (&str, Option<String>))> = vec![
        ("help", ("help", None)),
        ("help deploy", ("help", Some("deploy".into()))),
        ("help /deploy", ("help", Some("deploy".into()))),
        ("help migrate", ("help", Some("migrate".into()))),
        ("ping", ("ping", None)),
        ("ping are you there", ("ping", Some("are you there".into()))),
        ("whoami", ("whoami", None)),
    ];
    for (input, want) in cases {
        assert_eq!(query(input), want, "{input}");
    }
}

#[test]
fn the_answers_to_the_bots_questions_parse_as_answers_not_commands() {
    let g = grammar();
    let cases = [
        ("cancel #42", Answer::Cancel { op: OpId::new(42) }),
        ("cancel 42", Answer::Cancel { op: OpId::new(42) }),
        ("approve #7", Answer::Approve { op: OpId::new(7) }),
        (
            "confirm k7q2xm",
            Answer::Confirm {
                code: "K7Q2XM".into(),
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_request(input, &g),
            Ok(Request::Answer(want)),
            "{input}"
        );
        // Where only a command will do (a journaled one, read back), an answer is none.
        assert_eq!(
            parse(input, &g).unwrap_err().to_string(),
            format!(
                "`{}` answers a question of mine; it is not a command of its own.\nUsage: `{}`",
                input.split(' ').next().unwrap(),
                builtin::find(input.split(' ').next().unwrap())
                    .unwrap()
                    .usage
            )
        );
    }
    assert_eq!(
        parse_request("status", &g),
        Ok(Request::Command(Command::Status { env: None }))
    );
}

#[test]
fn malformed_inputs_get_the_exact_answer() {
    let cases: &[(&str, &str)] = &[
        (
            "",
            "I don't know the command ``. Did you mean `help`? Type `help` for the list.",
        ),
        (
            "dploy test v1",
            "I don't know the command `dploy`. Did you mean `deploy`? Type `help` for the list.",
        ),
        (
            "frobnicate",
            "I don't know the command `frobnicate`. Type `help` for the list.",
        ),
        (
            "deploy",
            "`deploy` needs an environment: dev, test or prod.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy stage v1",
            "There is no environment `stage`. Environments: dev, test or prod.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy prd v1",
            "There is no environment `prd`. Did you mean `prod`? Environments: dev, test or prod.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test",
            "`deploy` needs a version, e.g. `v3.1`.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test v3.1!",
            "`v3.1!` is not a valid image tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`).\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test .hidden",
            "`.hidden` is not a valid image tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`).\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test -rc1",
            "`-rc1` is not a valid image tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`).\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test reg.io/app:1",
            "`reg.io/app:1` is a full image reference; test accepts only a tag such as `v3.1`.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test v1 v2",
            "I don't know what `v2` is here.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test v1 --force",
            "`deploy` has no option `--force`; options: `--no-backup`.\nUsage: `deploy ENV VERSION [--no-backup]`",
        ),
        (
            "deploy test \"v1",
            "I couldn't read that: a quote (\") is not closed.",
        ),
        (
            "rollback",
            "`rollback` needs an environment: dev, test or prod.\nUsage: `rollback ENV [REVISION|VERSION]`",
        ),
        (
            "rollback prod 0",
            "Revisions start at 1.\nUsage: `rollback ENV [REVISION|VERSION]`",
        ),
        (
            "rollback prod 99999999999999999999",
            "`99999999999999999999` is too large to be a revision.\nUsage: `rollback ENV [REVISION|VERSION]`",
        ),
        (
            "scale test",
            "`scale` needs a number of replicas (0 to 10 in test).\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "scale test many",
            "`many` is not a number of replicas.\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "scale test -1",
            "`-1` is not a number of replicas.\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "scale prod 50",
            "prod allows 2 to 10 replicas, not 50.\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "scale prod 1",
            "prod allows 2 to 10 replicas, not 1.\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "scale test 3 redis",
            "`redis` is not a component of test; components: rocketchat, mongodb.\nUsage: `scale ENV REPLICAS [COMPONENT]`",
        ),
        (
            "backup",
            "`backup` needs `now`, `list`, `prune` or `report`.\nUsage: `backup now [ENV] | backup list [ENV] | backup prune ENV | backup report [ENV]`",
        ),
        (
            "backup later",
            "`backup` needs `now`, `list`, `prune` or `report`.\nUsage: `backup now [ENV] | backup list [ENV] | backup prune ENV | backup report [ENV]`",
        ),
        (
            "backup now staging",
            "There is no environment `staging`. Environments: dev, test or prod.\nUsage: `backup now [ENV] | backup list [ENV] | backup prune ENV | backup report [ENV]`",
        ),
        (
            "restore test",
            "`restore` needs a backup name or `latest`.\nUsage: `restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]`",
        ),
        (
            "restore test yesterday",
            "`yesterday` is not a backup name (like `prod-20261122T000100Z`) or `latest`.\nUsage: `restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]`",
        ),
        (
            "restore test latest from",
            "`restore … from` needs an environment: dev, test or prod.\nUsage: `restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]`",
        ),
        (
            "restore test latest to prod",
            "I don't know what `to` is here.\nUsage: `restore ENV BACKUP|latest [from ENV|offsite] [--no-safety-backup]`",
        ),
        (
            "history",
            "`history` needs an environment: dev, test or prod.\nUsage: `history ENV`",
        ),
        (
            "status prod extra",
            "I don't know what `extra` is here.\nUsage: `status [ENV]`",
        ),
        (
            "cancel",
            "`cancel` needs an operation number, e.g. `#42`.\nUsage: `cancel OP`",
        ),
        (
            "cancel #abc",
            "`#abc` is not an operation number (like `#42`).\nUsage: `cancel OP`",
        ),
        (
            "approve 4x",
            "`4x` is not an operation number (like `#42`).\nUsage: `approve OP`",
        ),
        (
            "confirm",
            "`confirm` needs the code from my question.\nUsage: `confirm CODE`",
        ),
        (
            "confirm !!",
            "`!!` is not a confirmation code.\nUsage: `confirm CODE`",
        ),
        (
            "schedule",
            "`schedule` needs `list`, `pause` or `resume`.\nUsage: `schedule list | schedule pause [ENV] [KIND] | schedule resume [ENV] [KIND]`",
        ),
        (
            "help nothing",
            "I don't know the command `nothing`. Type `help` for the list.",
        ),
        (
            "help deploy rollback",
            "I don't know what `rollback` is here.\nUsage: `help [COMMAND]`",
        ),
        (
            "migrate test",
            "`migrate` needs VERSION (the target version).\nUsage: `migrate ENV VERSION [STEPS]`",
        ),
        (
            "migrate test 7.0.0 9",
            "STEPS must be between 1 and 5, not 9.\nUsage: `migrate ENV VERSION [STEPS]`",
        ),
        (
            "migrate test 7.0.0 two",
            "STEPS must be a whole number, not `two`.\nUsage: `migrate ENV VERSION [STEPS]`",
        ),
        (
            "deploy\u{7} test v1",
            "I couldn't read that: that command contains a control character (U+0007).",
        ),
    ];
    assert!(cases.len() >= 30);
    for (input, want) in cases {
        let got = parse(input, &grammar())
            .map(|c| format!("parsed as {c:?}"))
            .unwrap_or_else(|e| e.to_string());
        assert_eq!(&got, want, "input: {input:?}");
    }
}

#[test]
fn addressing_rules_follow_the_design() {
    let to = Addressing {
        prefixes: vec!["/".into(), "!".into()],
        bot_name: "rocketops".into(),
    };
    assert_eq!(
        addressed_body("/deploy test v3.1", RoomKind::Channel, &to),
        Some("deploy test v3.1")
    );
    assert_eq!(
        addressed_body("!ping", RoomKind::Channel, &to),
        Some("ping")
    );
    assert_eq!(
        addressed_body("@RocketOps: ping", RoomKind::Channel, &to),
        Some("ping")
    );
    assert_eq!(
        addressed_body("@rocketops /ping now", RoomKind::Private, &to),
        Some("ping now")
    );
    assert_eq!(addressed_body("@alice ping", RoomKind::Channel, &to), None);
    assert_eq!(addressed_body("ping", RoomKind::Channel, &to), None);
    assert_eq!(addressed_body("/ some path", RoomKind::Channel, &to), None);
    assert_eq!(addressed_body("ping", RoomKind::Direct, &to), Some("ping"));
}

#[test]
fn the_answers_the_bot_asks_for_work_bare_in_any_room_and_its_name_alone_asks_for_help() {
    let to = Addressing {
        prefixes: vec!["/".into(), "!".into()],
        bot_name: "rocketops".into(),
    };
    for said in [
        "confirm E2TBR7",
        "Confirm E2TBR7",
        "approve #12",
        "cancel #7",
        "help",
        "Help deploy",
        "help backup now",
        "help backup",
    ] {
        assert_eq!(
            addressed_body(said, RoomKind::Channel, &to),
            Some(said),
            "{said}"
        );
    }
    for chatter in [
        "confirm it with bob",
        "cancel the meeting",
        "approve #12 please",
        "confirm",
        "help me",
        "help with the deploy please",
    ] {
        assert_eq!(
            addressed_body(chatter, RoomKind::Channel, &to),
            None,
            "{chatter}"
        );
    }
    assert_eq!(
        addressed_body("@rocketops", RoomKind::Channel, &to),
        Some("help")
    );
}

#[test]
fn help_lists_only_what_the_asker_may_run_and_explains_one_command() {
    let g = grammar();
    let allowed = |name: &str| match name {
        "deploy" => Some(vec!["test".to_string()]),
        "status" | "help" | "ping" | "history" | "backup list" => Some(vec![]),
        _ => None,
    };
    let h = help_text(None, &g, "rocketops", &allowed);
    assert!(h.contains("`deploy ENV VERSION [--no-backup]`: rolls out a new version (image tag) of the app _(test)_"), "{h}");
    assert!(!h.contains("`rollback"), "{h}");
    assert!(!h.contains("migrate"), "{h}");
    assert!(h.contains("more need permissions you don't have"), "{h}");
    let d = help_text(Some("deploy"), &g, "rocketops", &allowed);
    assert!(
        d.contains("Usage: `deploy ENV VERSION [--no-backup]`")
            && d.contains("`/deploy test v3.1`")
            && d.contains("you may run it in test"),
        "{d}"
    );
    let m = help_text(Some("migrate"), &g, "rocketops", &allowed);
    assert!(
        m.contains("VERSION: the target version") && m.contains("you may not run it"),
        "{m}"
    );
}

#[test]
fn every_help_example_parses_to_its_command_and_back_from_its_normal_form() {
    let g = grammar();
    for b in builtin::ALL {
        assert!(!b.examples.is_empty(), "`{}` shows no example", b.name);
        for example in b.examples {
            let request = parse_request(example, &g)
                .unwrap_or_else(|e| panic!("`help {}` shows `{example}`: {e}", b.name));
            let name = match &request {
                Request::Command(c) => c.name(),
                Request::Answer(a) => a.name(),
            };
            assert_eq!(name, b.name, "`help {}` shows `{example}`", b.name);
            // The normal form the journal and the audit keep means the same; a confirmation
            // code is left out of it on purpose.
            let normal = request.asked().describe();
            if !matches!(request, Request::Answer(Answer::Confirm { .. })) {
                assert_eq!(
                    parse_request(&normal, &g).as_ref(),
                    Ok(&request),
                    "`{example}` is written `{normal}`"
                );
            }
        }
    }
}

#[test]
fn every_usage_starts_with_its_name_and_every_form_has_an_example() {
    let g = grammar();
    for b in builtin::ALL {
        for alternative in b.usage.split(" | ") {
            assert_eq!(
                alternative.split_whitespace().next(),
                Some(b.name),
                "`{}` in the usage of `{}`",
                alternative,
                b.name
            );
            assert!(is_bare_help(&format!("help {}", b.name)), "{alternative}");
        }
        for f in b.forms {
            assert!(
                b.examples
                    .iter()
                    .any(|e| parse_request(e, &g).unwrap().asked().policy_name() == f.policy_name),
                "no example of `help {}` is the form `{}`",
                b.name,
                f.policy_name
            );
        }
    }
}

#[test]
fn every_form_is_one_commands_and_its_sample_is_that_form() {
    for b in builtin::ALL {
        assert_eq!(builtin::find(b.name).map(|f| f.name), Some(b.name));
        for f in b.forms {
            assert_eq!(
                builtin::form(f.policy_name).map(|f| f.policy_name),
                Some(f.policy_name)
            );
            let Some(sample) = f.sample else {
                // An answer: anyone may give one, so there is nothing to ask the policy.
                assert!(
                    matches!(b.kind, builtin::Kind::Answer { .. }) && f.open,
                    "{}",
                    b.name
                );
                continue;
            };
            let sample = sample("test".into());
            let owners: Vec<&str> = builtin::ALL
                .iter()
                .filter(|o| match o.kind {
                    builtin::Kind::Command { view, .. } => view(&sample).is_some(),
                    builtin::Kind::Answer { .. } => false,
                })
                .map(|o| o.name)
                .collect();
            assert_eq!(owners, vec![b.name], "{sample:?}");
            assert_eq!(sample.policy_name(), f.policy_name);
            assert_eq!(sample.is_mutating(), f.mutating, "{}", f.policy_name);
        }
    }
}

#[test]
fn only_what_changes_something_counts_as_a_change() {
    let g = grammar();
    let reads = [
        "backup list prod",
        "backup report",
        "status",
        "history prod",
        "help",
        "ping",
        "whoami",
        "alerts list",
        "schedule list",
    ];
    for r in reads {
        assert!(!ok(r).is_mutating(), "{r}");
    }
    let changes = [
        "deploy test v3.1",
        "rollback prod",
        "scale test 5",
        "backup now prod",
        "backup prune test",
        "restore test latest",
        "verify prod",
        "lock prod",
        "unlock prod",
        "schedule pause test",
        "alerts mute test 2h",
        "migrate test v2",
    ];
    for c in changes {
        assert!(parse(c, &g).unwrap().is_mutating(), "{c}");
    }
    // Cancelling stops something; confirming and approving only let through what was asked.
    let answer = |s: &str| match parse_request(s, &g) {
        Ok(Request::Answer(a)) => a,
        other => panic!("{other:?}"),
    };
    assert!(answer("cancel #4").is_mutating());
    assert!(!answer("confirm K7Q2XM").is_mutating() && !answer("approve #4").is_mutating());
    let open: Vec<&str> = builtin::ALL
        .iter()
        .flat_map(|b| b.forms)
        .filter(|f| f.open)
        .map(|f| f.policy_name)
        .collect();
    assert_eq!(
        open,
        ["cancel", "approve", "confirm", "whoami", "help", "ping"]
    );
}

#[test]
fn what_a_locked_environment_still_allows_by_default_names_built_in_commands() {
    let defaults = crate::config::policy::EnvPolicy::default().allow_when_locked;
    assert!(!defaults.is_empty());
    for name in defaults {
        assert!(
            builtin::form(&name).is_some(),
            "`{name}` is no built-in command"
        );
    }
}

#[test]
fn what_runs_as_a_journaled_operation_names_its_environment() {
    let operations = [
        "deploy test v3.1",
        "rollback prod",
        "scale test 5",
        "backup now prod",
        "backup prune test",
        "restore test latest",
        "verify prod",
        "migrate test v2",
    ];
    for o in operations {
        assert!(ok(o).is_operation(), "{o}");
    }
    // Without an environment, one operation starts per environment; the rest answer at once.
    let others = [
        "backup now",
        "verify",
        "backup list prod",
        "lock prod",
        "unlock prod",
        "alerts mute test 2h",
        "schedule pause test",
        "status prod",
        "help",
        "whoami",
    ];
    for o in others {
        assert!(!ok(o).is_operation(), "{o}");
    }
}

#[test]
fn a_restore_always_asks_its_requester_and_a_verify_asks_no_one_as_their_help_says() {
    assert_eq!(ok("restore test latest").asks(), Asks::AlwaysConfirm);
    assert_eq!(ok("verify prod").asks(), Asks::Nobody);
    assert_eq!(ok("deploy test v3.1").asks(), Asks::AsConfigured);
    assert_eq!(ok("migrate test v2").asks(), Asks::AsConfigured);
    for b in builtin::ALL {
        let always = b.forms.iter().any(|f| f.asks == Asks::AlwaysConfirm);
        assert_eq!(
            b.details.contains("Always asks for confirmation"),
            always,
            "{}",
            b.name
        );
        for f in b.forms.iter().filter(|f| !f.mutating) {
            assert_eq!(f.asks, Asks::AsConfigured, "{} only reads", f.policy_name);
        }
    }
}

#[test]
fn a_sample_exists_only_for_a_command_the_bot_knows() {
    let g = grammar();
    assert_eq!(
        sample("backup list", &g),
        Some(Command::BackupList {
            env: Some("dev".into())
        })
    );
    assert!(matches!(
        sample("migrate", &g),
        Some(Command::Runbook { name, .. }) if name == "migrate"
    ));
    assert_eq!(sample("frobnicate", &g), None);
    assert_eq!(sample("", &g), None);
}

#[test]
fn the_help_for_rollback_says_it_goes_back_to_the_last_good_revision() {
    let h = help_text(Some("rollback"), &grammar(), "rocketops", &|_| None);
    assert!(
        h.contains("the last good revision: the newest earlier one that succeeded"),
        "{h}"
    );
    assert!(!h.contains("before the current one"), "{h}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_input_parses_or_gets_a_chat_safe_error(s in "\\PC{0,300}|[\\x00-\\x1f\"'“”—\\-=# a-z0-9]{0,80}") {
        let g = grammar();
        match parse(&s, &g) {
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.is_empty());
                prop_assert!(text.chars().count() < 1000, "answers stay short");
                prop_assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"));
            }
        }
    }

    #[test]
    fn very_long_input_is_refused_quickly(n in 2001usize..20_000) {
        let s = "deploy ".repeat(n / 7 + 1);
        prop_assert!(parse(&s, &grammar()).is_err());
    }
}

#[test]
fn a_suggested_command_carries_the_prefix_in_a_channel_and_stays_bare_in_a_direct_message() {
    let text = "test is locked. `unlock test` lifts it; `confirm AB12CD` and `help deploy` work bare.\nUsage: `scale ENV REPLICAS`\n```\nstatus ok\n```\n`v3.1` is a tag";
    assert_eq!(
        typable_hints(text, "/", RoomKind::Channel),
        "test is locked. `/unlock test` lifts it; `confirm AB12CD` and `help deploy` work bare.\nUsage: `/scale ENV REPLICAS`\n```\nstatus ok\n```\n`v3.1` is a tag"
    );
    assert_eq!(typable_hints(text, "/", RoomKind::Direct), text);
    assert_eq!(
        typable_hints("`/unlock x`", "/", RoomKind::Channel),
        "`/unlock x`"
    );
    assert_eq!(typable_hints("a ` b", "!", RoomKind::Channel), "a ` b");
    assert_eq!(
        typable_hints("`backup now test`", "!", RoomKind::Private),
        "`!backup now test`"
    );
    assert_eq!(
        typable_hints(
            "`backup now [ENV] | backup list [ENV]`",
            "/",
            RoomKind::Channel
        ),
        "`/backup now [ENV] | /backup list [ENV]`"
    );
}
