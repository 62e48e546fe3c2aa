//! Renders an operation's journal as the one progress message edited in place: a title, a step list with ✓/…/✗ and durations, and a summary.

use crate::store::{OpRecord, OpState, StepState};

fn secs(from: Option<i64>, to: Option<i64>) -> Option<String> {
    let (a, b) = (from?, to?);
    Some(crate::clock::human(std::time::Duration::from_millis(
        (b - a).max(0) as u64,
    )))
}

/// The progress message for `op` (Rocket.Chat markdown), as of `now_ms`.
pub fn render(op: &OpRecord, now_ms: i64) -> String {
    let icon = match op.state {
        OpState::Running => "⏳",
        OpState::Succeeded => "✅",
        OpState::Failed => "❌",
        OpState::RolledBack => "↩️",
        OpState::Cancelled => "🚫",
    };
    let total =
        secs(Some(op.started_ms), Some(op.finished_ms.unwrap_or(now_ms))).unwrap_or_default();
    let mut out = format!(
        "{icon} *#{} {}* · {} · {total}",
        op.id,
        op.command,
        super::who(&op.user)
    );
    for s in &op.steps {
        let (mark, time) = match s.state {
            StepState::Done => ("✓", secs(s.started_ms, s.finished_ms)),
            StepState::Running => ("…", secs(s.started_ms, Some(now_ms))),
            StepState::Failed => ("✗", secs(s.started_ms, s.finished_ms)),
            StepState::Pending => ("·", None),
            StepState::Skipped => ("–", None),
        };
        out.push_str(&format!("\n{mark} {}", s.kind.label()));
        if let Some(t) = time {
            out.push_str(&format!(" ({t})"));
        }
        if !s.detail.is_empty() {
            out.push_str(&format!(": {}", s.detail));
        }
    }
    // A one-step operation's summary often says what its step said: say it once.
    let repeats = |s: &str| {
        op.steps
            .last()
            .is_some_and(|l| s.trim_end_matches('.') == l.detail.trim_end_matches('.'))
    };
    if let Some(summary) = op.summary.as_ref().filter(|s| !repeats(s)) {
        out.push_str(&format!("\n{summary}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::StepKind;
    use crate::store::{OpId, StepRecord};

    fn step(name: &str, state: StepState, detail: &str, from: i64, to: Option<i64>) -> StepRecord {
        StepRecord {
            kind: StepKind::parse(name),
            state,
            detail: detail.into(),
            started_ms: Some(from),
            finished_ms: to,
        }
    }

    fn op(state: OpState, steps: Vec<StepRecord>, summary: Option<&str>) -> OpRecord {
        OpRecord {
            id: OpId::new(42),
            env: "prod".into(),
            command: "deploy prod v3.1".into(),
            user: "alice".into(),
            room_id: "r".into(),
            thread: None,
            message_id: None,
            steps,
            state,
            started_ms: 0,
            finished_ms: (state != OpState::Running).then_some(74_000),
            summary: summary.map(str::to_string),
            mark: String::new(),
            room: "ops".into(),
            origin: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_summary_that_repeats_the_only_step_is_said_once() {
        let said = "backup-1 restored in 41 s into a throwaway database; it was 4 s old";
        let o = op(
            OpState::Succeeded,
            vec![step("verify", StepState::Done, said, 0, Some(300))],
            Some(&format!("{said}.")),
        );
        assert_eq!(render(&o, 400).matches(said).count(), 1);
    }

    #[test]
    fn a_running_deploy_shows_done_running_and_pending_steps() {
        let o = op(
            OpState::Running,
            vec![
                step(
                    "backup",
                    StepState::Done,
                    "mongodb-backup-pre-42, 48.2 MB",
                    0,
                    Some(12_000),
                ),
                step("set image", StepState::Done, "", 12_000, Some(12_300)),
                step(
                    "rollout",
                    StepState::Running,
                    "2 of 3 updated replicas are available",
                    12_300,
                    None,
                ),
                StepRecord::pending(StepKind::SmokeTest),
            ],
            None,
        );
        insta::assert_snapshot!(render(&o, 30_000));
    }

    #[test]
    fn a_failed_deploy_that_was_rolled_back_says_why() {
        let o = op(
            OpState::RolledBack,
            vec![
                StepRecord {
                    state: StepState::Skipped,
                    detail: "not production".into(),
                    ..StepRecord::pending(StepKind::Backup)
                },
                step("set image", StepState::Done, "", 0, Some(300)),
                step(
                    "rollout",
                    StepState::Failed,
                    "pod rocketchat-7d9f-x2x9k: ImagePullBackOff",
                    300,
                    Some(60_300),
                ),
                step(
                    "rollback",
                    StepState::Done,
                    "back on revision 3 (6.5.0)",
                    60_300,
                    Some(74_000),
                ),
                StepRecord {
                    state: StepState::Skipped,
                    ..StepRecord::pending(StepKind::SmokeTest)
                },
            ],
            Some("Deploy of v3.1 failed (ImagePullBackOff); prod is back on 6.5.0."),
        );
        insta::assert_snapshot!(render(&o, 80_000));
    }

    #[test]
    fn a_successful_deploy_ends_with_its_summary() {
        let o = op(
            OpState::Succeeded,
            vec![
                step("backup", StepState::Done, "48.2 MB", 0, Some(12_000)),
                step("set image", StepState::Done, "", 12_000, Some(12_300)),
                step(
                    "rollout",
                    StepState::Done,
                    "3/3 ready",
                    12_300,
                    Some(70_000),
                ),
                step(
                    "smoke test",
                    StepState::Done,
                    "GET /api/info → 200, version v3.1",
                    70_000,
                    Some(74_000),
                ),
            ],
            Some("prod runs v3.1 (revision 4)."),
        );
        insta::assert_snapshot!(render(&o, 80_000));
    }
}
