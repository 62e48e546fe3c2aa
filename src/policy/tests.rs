//! Tests for authorization, confirmation, approval and rate limiting.

use super::*;
use crate::command::Command;

/// A policy over `envs` (the rest of the configuration as it parses bare).
fn policy_over(envs: BTreeMap<String, EnvironmentConfig>, runbooks: Vec<RunbookSpec>) -> Policy {
    let mut config: crate::config::Config =
        toml::from_str("[rocketchat]\nurl = \"http://127.0.0.1:1\"\n").unwrap();
    config.environments = envs;
    Policy::new(std::sync::Arc::new(config), runbooks)
}

fn envs() -> BTreeMap<String, EnvironmentConfig> {
    let mut test = EnvironmentConfig::named("test");
    test.policy.allow = vec![AllowRule {
        commands: vec!["*".into()],
        users: vec!["bob".into()],
        roles: vec!["ops".into()],
    }];
    let mut prod = EnvironmentConfig::named("prod");
    prod.policy.rooms = vec!["ops".into()];
    prod.policy.approvals = 1;
    prod.policy.allow = vec![
        AllowRule {
            commands: vec!["deploy".into(), "rollback".into()],
            users: vec![],
            roles: vec!["ops".into()],
        },
        AllowRule {
            commands: vec!["lock".into(), "unlock".into()],
            users: vec!["carol".into()],
            roles: vec![],
        },
    ];
    prod.policy.skip_backup = Who {
        users: vec!["carol".into()],
        roles: vec![],
    };
    let dev = EnvironmentConfig::named("dev");
    [("test", test), ("prod", prod), ("dev", dev)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn who<'a>(user: &'a str, roles: &'a [String], room: Option<&'a str>) -> Requester<'a> {
    Requester {
        username: user,
        roles,
        room,
    }
}

fn deploy(env: &str) -> Command {
    Command::Deploy {
        env: env.into(),
        version: "v1".into(),
        no_backup: false,
    }
}

#[test]
fn a_listed_user_may_run_and_gets_no_confirmation_outside_production() {
    let p = policy_over(envs(), vec![]);
    assert_eq!(
        p.authorize(&deploy("test"), &who("bob", &[], Some("ops"))),
        Decision::Allow {
            confirm: false,
            approvals: 0
        }
    );
}

#[test]
fn an_unlisted_user_is_refused_with_who_may() {
    let p = policy_over(envs(), vec![]);
    let Decision::Deny { reason } = p.authorize(&deploy("test"), &who("mallory", &[], Some("ops")))
    else {
        panic!()
    };
    assert_eq!(reason, "in test, `deploy` is for @bob or role ops.");
}

#[test]
fn a_role_grants_what_the_rule_names() {
    let p = policy_over(envs(), vec![]);
    let ops = vec!["ops".to_string()];
    assert_eq!(
        p.authorize(&deploy("prod"), &who("alice", &ops, Some("ops"))),
        Decision::Allow {
            confirm: true,
            approvals: 1
        }
    );
    assert!(matches!(
        p.authorize(
            &Command::Lock {
                env: "prod".into(),
                reason: None
            },
            &who("alice", &ops, Some("ops"))
        ),
        Decision::Deny { .. }
    ));
}

#[test]
fn production_commands_are_accepted_only_from_their_rooms() {
    let p = policy_over(envs(), vec![]);
    let ops = vec!["ops".to_string()];
    let Decision::Deny { reason } =
        p.authorize(&deploy("prod"), &who("alice", &ops, Some("random")))
    else {
        panic!()
    };
    assert_eq!(reason, "commands for prod are accepted only in #ops.");
    assert!(
        matches!(
            p.authorize(&deploy("prod"), &who("alice", &ops, None)),
            Decision::Deny { .. }
        ),
        "not from a DM either"
    );
}

#[test]
fn an_environment_without_policy_denies_changes_but_allows_reading() {
    let p = policy_over(envs(), vec![]);
    let Decision::Deny { reason } = p.authorize(&deploy("dev"), &who("bob", &[], Some("ops")))
    else {
        panic!()
    };
    assert!(reason.contains("default deny"), "{reason}");
    assert_eq!(
        p.authorize(
            &Command::Status {
                env: Some("dev".into())
            },
            &who("bob", &[], Some("ops"))
        ),
        Decision::Allow {
            confirm: false,
            approvals: 0
        }
    );
}

#[test]
fn skipping_the_backup_needs_its_own_permission() {
    let p = policy_over(envs(), vec![]);
    let ops = vec!["ops".to_string()];
    let skip = Command::Deploy {
        env: "prod".into(),
        version: "v1".into(),
        no_backup: true,
    };
    assert!(matches!(
        p.authorize(&skip, &who("alice", &ops, Some("ops"))),
        Decision::Deny { .. }
    ));
}

#[test]
fn a_command_without_environment_must_be_allowed_in_every_one() {
    let p = policy_over(envs(), vec![]);
    assert!(matches!(
        p.authorize(
            &Command::BackupNow { env: None },
            &who("bob", &[], Some("ops"))
        ),
        Decision::Deny { .. }
    ));
}

#[test]
fn where_allowed_lists_the_environments_for_help() {
    let p = policy_over(envs(), vec![]);
    let ops = vec!["ops".to_string()];
    assert_eq!(
        p.where_allowed("deploy", &deploy("test"), &who("alice", &ops, Some("ops"))),
        Some(vec!["prod".to_string(), "test".to_string()])
    );
    assert_eq!(
        p.where_allowed("deploy", &deploy("test"), &who("mallory", &[], Some("ops"))),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_confirmation_code_works_once_for_its_user_before_it_expires() {
    let mut pending: Pending<&str> = Pending::default();
    let code = pending.ask_confirm("alice", "deploy prod v1", Duration::from_secs(120));
    assert_eq!(
        pending.confirm(&code, "bob"),
        Err(PendingError::WrongUser("alice".into()))
    );
    assert_eq!(
        pending.confirm("ZZZZZZ", "alice"),
        Err(PendingError::UnknownCode("ZZZZZZ".into()))
    );
    assert_eq!(
        pending.confirm(&code.to_lowercase(), "alice"),
        Ok("deploy prod v1")
    );
    assert!(pending.confirm(&code, "alice").is_err(), "used once");
    let late = pending.ask_confirm("alice", "deploy prod v2", Duration::from_secs(120));
    tokio::time::advance(Duration::from_secs(121)).await;
    assert_eq!(pending.confirm(&late, "alice"), Err(PendingError::Expired));
}

#[tokio::test(start_paused = true)]
async fn an_approval_needs_a_second_person() {
    let mut pending: Pending<&str> = Pending::default();
    pending.ask_approval(42, "alice", "deploy prod v1", 1, Duration::from_secs(600));
    assert_eq!(
        pending.approve(42, "alice"),
        Err(PendingError::SelfApproval)
    );
    assert_eq!(pending.approve(41, "bob"), Err(PendingError::UnknownOp(41)));
    assert_eq!(
        pending.approve(42, "bob"),
        Ok(Approval::Complete {
            requester: "alice".into(),
            approvers: vec!["bob".into()],
            payload: "deploy prod v1"
        })
    );
    assert_eq!(
        pending.approve(42, "carol"),
        Err(PendingError::UnknownOp(42))
    );
}

#[tokio::test(start_paused = true)]
async fn two_approvals_need_two_different_people_neither_of_them_the_requester() {
    let mut pending: Pending<&str> = Pending::default();
    pending.ask_approval(7, "alice", "deploy prod v1", 2, Duration::from_secs(600));
    assert_eq!(pending.approve(7, "ALICE"), Err(PendingError::SelfApproval));
    assert_eq!(
        pending.approve(7, "bob"),
        Ok(Approval::Counted {
            requester: "alice".into(),
            approvers: vec!["bob".into()],
            missing: 1
        })
    );
    // The same person again counts once, in any spelling.
    assert_eq!(
        pending.approve(7, "Bob"),
        Err(PendingError::AlreadyApproved { op: 7, missing: 1 })
    );
    assert_eq!(
        PendingError::AlreadyApproved { op: 7, missing: 1 }.to_string(),
        "You already approved #7; it still needs 1 approval from someone else."
    );
    assert!(pending.peek_approval(7).is_some(), "still waiting");
    assert_eq!(
        pending.approve(7, "carol"),
        Ok(Approval::Complete {
            requester: "alice".into(),
            approvers: vec!["bob".into(), "carol".into()],
            payload: "deploy prod v1"
        })
    );
    assert!(pending.peek_approval(7).is_none(), "handed over once");
}

#[tokio::test(start_paused = true)]
async fn approvals_collected_so_far_expire_with_the_request() {
    let mut pending: Pending<&str> = Pending::default();
    pending.ask_approval(8, "alice", "deploy prod v1", 3, Duration::from_secs(600));
    assert!(matches!(
        pending.approve(8, "bob"),
        Ok(Approval::Counted { missing: 2, .. })
    ));
    tokio::time::advance(Duration::from_secs(601)).await;
    assert_eq!(pending.approve(8, "carol"), Err(PendingError::UnknownOp(8)));
}

#[tokio::test(start_paused = true)]
async fn a_request_for_zero_approvals_still_waits_for_one() {
    let mut pending: Pending<&str> = Pending::default();
    pending.ask_approval(9, "alice", "x", 0, Duration::from_secs(600));
    assert!(matches!(
        pending.approve(9, "bob"),
        Ok(Approval::Complete { .. })
    ));
}

#[test]
fn an_environment_asking_for_three_approvals_gets_three() {
    let mut e = envs();
    e.get_mut("prod").unwrap().policy.approvals = 3;
    let p = policy_over(e, vec![]);
    let deploy = Command::Deploy {
        env: "prod".into(),
        version: "v1".into(),
        no_backup: false,
    };
    let ops = vec!["ops".to_string()];
    assert!(matches!(
        p.authorize(&deploy, &who("alice", &ops, Some("ops"))),
        Decision::Allow { approvals: 3, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_refuses_a_burst_and_recovers_with_time() {
    let mut r = RateLimiter::new(6, 2);
    assert!(r.check("alice").is_ok());
    assert!(r.check("alice").is_ok());
    assert_eq!(r.check("alice"), Err(10));
    assert!(r.check("bob").is_ok(), "per user");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(r.check("alice").is_ok());
}

#[test]
fn restoring_from_another_environment_needs_access_to_its_backups() {
    let mut e = envs();
    e.get_mut("prod").unwrap().policy.readers = Some(Who {
        users: vec![],
        roles: vec!["ops".into()],
    });
    let p = policy_over(e, vec![]);
    let restore = Command::Restore {
        env: "test".into(),
        backup: crate::command::BackupRef::Latest,
        from: Some("prod".into()),
        no_safety_backup: false,
        offsite: false,
    };
    // bob may restore in test, but may not read prod's backups.
    let Decision::Deny { reason } = p.authorize(&restore, &who("bob", &[], Some("ops"))) else {
        panic!()
    };
    assert!(
        reason.starts_with("restoring from prod needs access to its backups: "),
        "{reason}"
    );
    let ops = vec!["ops".to_string()];
    assert_eq!(
        p.authorize(&restore, &who("bob", &ops, Some("ops"))),
        Decision::Allow {
            confirm: true,
            approvals: 0
        }
    );
}

fn migrate_runbook(roles: &[&str], users: &[&str], environments: &[&str]) -> RunbookSpec {
    RunbookSpec {
        name: "migrate".into(),
        summary: "schema migration".into(),
        environments: environments.iter().map(|s| s.to_string()).collect(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        users: users.iter().map(|s| s.to_string()).collect(),
        confirm: true,
        params: vec![],
        job: String::new(),
        file: "commands/migrate.toml".into(),
    }
}

fn migrate(env: &str) -> Command {
    Command::Runbook {
        name: "migrate".into(),
        env: env.into(),
        params: Default::default(),
    }
}

#[test]
fn a_runbooks_roles_never_widen_the_environments_default_deny() {
    let p = policy_over(envs(), vec![migrate_runbook(&["ops"], &[], &[])]);
    let ops = vec!["ops".to_string()];
    for env in ["dev", "prod"] {
        let d = p.authorize(&migrate(env), &who("alice", &ops, Some("ops")));
        assert!(
            matches!(&d, Decision::Deny { reason } if reason.contains("default deny")),
            "{env}: {d:?}"
        );
    }
}

#[test]
fn a_runbooks_roles_users_and_environments_narrow_what_the_environment_allows() {
    let ops = vec!["ops".to_string()];
    // test allows `*` for bob and role ops; the runbook only for role ops.
    let p = policy_over(envs(), vec![migrate_runbook(&["ops"], &[], &[])]);
    assert!(matches!(
        p.authorize(&migrate("test"), &who("alice", &ops, Some("ops"))),
        Decision::Allow { confirm: true, .. }
    ));
    let d = p.authorize(&migrate("test"), &who("bob", &[], Some("ops")));
    assert!(
        matches!(&d, Decision::Deny { reason } if reason.contains("`migrate` is for role ops")),
        "{d:?}"
    );
    let p = policy_over(envs(), vec![migrate_runbook(&[], &[], &["prod"])]);
    let d = p.authorize(&migrate("test"), &who("bob", &[], Some("ops")));
    assert!(
        matches!(&d, Decision::Deny { reason } if reason.contains("runs only in prod")),
        "{d:?}"
    );
}

#[test]
fn a_misspelt_command_in_a_policy_rule_is_named_with_its_key_and_the_nearest_command() {
    let mut e = crate::config::EnvironmentConfig::named("prod");
    e.policy.allow = vec![AllowRule {
        commands: vec![
            "deploy".into(),
            "rolback".into(),
            "backup-now".into(),
            "migrate".into(),
        ],
        users: vec![],
        roles: vec!["ops".into()],
    }];
    e.policy.allow_when_locked = vec!["status".into(), "unlcok".into()];
    let envs = std::collections::BTreeMap::from([("prod".to_string(), e)]);
    let problems: Vec<String> = unknown_command_names(&envs, &["migrate".to_string()])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(
        problems[0],
        "key `environments.prod.policy.allow[0].commands`: unknown command `rolback`; did you mean `rollback`?"
    );
    assert!(
        problems[1].ends_with("did you mean `backup now`?"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with(
            "key `environments.prod.policy.allow_when_locked`: unknown command `unlcok`"
        ),
        "{}",
        problems[2]
    );
    assert!(
        unknown_command_names(&envs, &[])
            .iter()
            .any(|p| p.name == "migrate")
    );
}
