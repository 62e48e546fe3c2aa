//! The journal's formats: every identity and fact reads back as written, and every golden journal of an earlier version still loads.

use super::*;

#[test]
fn an_operation_number_is_stored_as_the_plain_number_it_always_was() {
    assert_eq!(serde_json::to_string(&OpId::new(41)).unwrap(), "41");
    assert_eq!(serde_json::from_str::<OpId>("41").unwrap(), OpId::new(41));
    assert_eq!("41".parse::<OpId>().unwrap().to_string(), "41");
    assert_eq!(OpId::from_key(&OpId::new(41).to_key()), Some(OpId::new(41)));
}

#[test]
fn every_step_keeps_the_name_journals_have_always_held_and_reads_back_as_itself() {
    // The names journals written by every earlier version hold: never change one.
    let names = [
        "backup",
        "safety backup",
        "off-site copy",
        "fetch off-site",
        "prune off-site",
        "runbook migrate",
        "set image",
        "rollout",
        "smoke test",
        "undo",
        "scale down",
        "restore",
        "scale up",
        "recover",
        "scale",
        "verify",
        "prune",
        "job",
        "rollback",
        "roll forward",
    ];
    for name in names {
        let kind = StepKind::parse(name);
        assert!(!matches!(kind, StepKind::Unknown(_)), "{name}");
        assert_eq!(kind.name(), name);
        assert_eq!(kind.label(), name, "shown as it always was");
        let json = serde_json::to_string(&StepRecord::pending(kind.clone())).unwrap();
        assert!(
            json.starts_with(&format!(r#"{{"name":"{name}","#)),
            "{json}"
        );
        let back: StepRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kind, kind);
    }
    assert_eq!(
        StepKind::parse("runbook migrate"),
        StepKind::Runbook("migrate".into())
    );
}

#[test]
fn a_step_this_version_does_not_know_is_kept_as_written() {
    let kind = StepKind::parse("defragment");
    assert_eq!(kind, StepKind::Unknown("defragment".into()));
    assert_eq!(serde_json::to_string(&kind).unwrap(), r#""defragment""#);
}

fn golden(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn read(json: &str) -> OpRecord {
    let mut rec: OpRecord = serde_json::from_str(json).unwrap();
    rec.upgrade();
    rec
}

#[test]
fn a_deploy_journaled_by_the_second_format_reads_its_previous_revision_as_a_number() {
    let rec = read(&golden("journal-v2-deploy.json"));
    assert_eq!(rec.v, JOURNAL_VERSION, "held in this version's types");
    assert_eq!(rec.id, OpId::new(57));
    assert_eq!(rec.facts.previous_revision, Some(3));
    assert_eq!(rec.lock_keys(), vec![LockKey::env("prod")]);
    assert_eq!(rec.steps[2].kind, StepKind::Runbook("migrate".into()));
    assert_eq!(rec.steps[4].kind, StepKind::Rollout);
    // A Deployment without a revision was journaled as "": no revision, but recorded.
    let none = read(
        &golden("journal-v2-deploy.json")
            .replace(r#""previous_revision": "3""#, r#""previous_revision": """#),
    );
    assert_eq!(none.facts.previous_revision, None);
    assert!(none.facts.previous_image.is_some());
}

#[test]
fn a_journal_of_this_format_is_written_exactly_as_its_golden_file() {
    let text = golden("journal-v3-deploy.json");
    let rec = read(&text);
    assert_eq!(rec.facts.previous_revision, Some(3));
    let written = serde_json::to_value(&rec).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written, expected);
}

#[test]
fn a_restore_journaled_with_an_autoscaler_reads_it_typed_and_writes_it_back_as_it_was() {
    let text = golden("journal-v2-restore-hpa.json");
    let rec = read(&text);
    let Some(SavedHpa::Spec(hpa)) = &rec.facts.hpa else {
        panic!("{:?}", rec.facts.hpa);
    };
    assert_eq!(hpa.metadata.name.as_deref(), Some("rocketchat"));
    assert_eq!(hpa.spec.as_ref().unwrap().min_replicas, Some(2));
    assert_eq!(hpa.metadata.labels.as_ref().unwrap()["team"], "chat");
    let written = serde_json::to_value(&rec).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written["facts"]["hpa"], expected["facts"]["hpa"]);
    assert_eq!(read(&written.to_string()), rec);
}

#[test]
fn an_autoscaler_snapshot_that_was_journaled_empty_still_loads_its_record() {
    let text = golden("journal-v2-restore-hpa.json");
    let start = text.find(r#""hpa": ""#).unwrap() + r#""hpa": "#.len();
    let end = start + text[start..].find('\n').unwrap() - 1;
    let rec = read(&format!("{}\"\"{}", &text[..start], &text[end..]));
    assert_eq!(rec.facts.hpa, Some(SavedHpa::Unreadable(String::new())));
    assert_eq!(
        rec.facts.replicas,
        Some(3),
        "the app can still be scaled back"
    );
    assert_eq!(rec.facts.hpa_name.as_deref(), Some("rocketchat"));
}

#[test]
fn a_lock_key_is_stored_as_the_text_it_always_was_and_reads_back_typed() {
    let keys = vec![LockKey::env("prod"), LockKey::backups("prod")];
    let json = serde_json::to_string(&keys).unwrap();
    assert_eq!(json, r#"["prod","prod#backups"]"#);
    assert_eq!(serde_json::from_str::<Vec<LockKey>>(&json).unwrap(), keys);
    assert_eq!(LockKey::parse("prod#backups").environment(), "prod");
}

#[test]
fn a_rollback_journaled_by_the_second_format_reads_the_revision_it_started_from_as_a_number() {
    let rec = read(&golden("journal-v2-rollback.json"));
    assert_eq!(rec.facts.undo_from, Some(4));
    assert_eq!(rec.facts.undo_to, Some(2));
    assert_eq!(
        rec.spec,
        Some(OpSpec::Rollback(Rollback {
            to: Some(RollbackTo::Revision(2))
        }))
    );
    // A Deployment without a revision was journaled as "": revision 0, still recorded.
    let none = read(
        &golden("journal-v2-rollback.json").replace(r#""undo_from": "4""#, r#""undo_from": """#),
    );
    assert_eq!(none.facts.undo_from, Some(0));
    let written = serde_json::to_value(&rec).unwrap();
    assert_eq!(written["facts"]["undo_from"], 4);
}
