//! `rollback ENV [REVISION|VERSION]`: kubectl's rollout undo, watched and smoke-tested, rolling forward again if it fails; and what a plain rollback goes back to, the newest earlier revision that succeeded, chosen before anyone confirms.

use super::engine::StepEnd;
use super::operation::{self, Operation, Step, Undo};
use crate::chat::Chat;
use crate::cluster::Cluster;
use crate::cluster::rollout::{self, Revision};
use crate::config::EnvironmentConfig;
use crate::journal::{OpRecord, Rollback, RollbackTo, StepKind, StepRecord};
use crate::store::{OpId, OpState, Store};

/// Whether a revision is one to go back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// Never go back to it, and why (`rolled back by #3`).
    Bad(String),
}

/// The revision a plain rollback goes to, and what it passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub target: i64,
    pub version: String,
    /// The immediately previous revision (what `kubectl rollout undo` would pick).
    pub previous: i64,
    /// Newer revisions passed over: (revision, version, why).
    pub skipped: Vec<(i64, String, String)>,
}

impl Choice {
    /// Going anywhere but the immediately previous revision is a surprise worth a confirmation.
    pub fn needs_confirmation(&self) -> bool {
        self.target != self.previous
    }

    /// The plan, as the confirmation question and the audit log show it.
    pub fn describe(&self, env: &str, e: &EnvironmentConfig) -> String {
        let mut s = format!(
            "roll back deployment {}/{} to revision {} ({}), the newest earlier revision that succeeded",
            e.namespace_or(env),
            e.deployment,
            self.target,
            self.version
        );
        if !self.skipped.is_empty() {
            let passed: Vec<String> = self
                .skipped
                .iter()
                .map(|(n, v, why)| format!("revision {n} ({v}: {why})"))
                .collect();
            s.push_str(&format!("; passing over {}", passed.join(", ")));
        }
        s.push('.');
        s
    }
}

/// The tag of a revision's first image.
pub fn version_of(r: &Revision) -> String {
    r.images
        .first()
        .map(|i| crate::cluster::split_image(i).1.to_string())
        .unwrap_or_default()
}

/// Pure: the newest revision other than `current` that `verdict` calls good and that runs
/// something other than what runs now.
pub fn choose(
    history: &[Revision],
    current: i64,
    verdict: impl Fn(&Revision) -> Verdict,
) -> Result<Choice, String> {
    let now = history.iter().find(|r| r.number == current);
    let mut earlier: Vec<&Revision> = history.iter().filter(|r| r.number != current).collect();
    earlier.sort_by_key(|r| std::cmp::Reverse(r.number));
    let Some(previous) = earlier.first().map(|r| r.number) else {
        return Err("there is no earlier revision to go back to".into());
    };
    let mut skipped = Vec::new();
    for r in earlier {
        let why = match verdict(r) {
            Verdict::Bad(why) => why,
            Verdict::Good if now.is_some_and(|n| n.images == r.images) => {
                "the same version as now".to_string()
            }
            Verdict::Good => {
                return Ok(Choice {
                    target: r.number,
                    version: version_of(r),
                    previous,
                    skipped,
                });
            }
        };
        skipped.push((r.number, version_of(r), why));
    }
    let passed: Vec<String> = skipped
        .iter()
        .map(|(n, v, why)| format!("revision {n} ({v}: {why})"))
        .collect();
    Err(format!(
        "no earlier revision succeeded: {}. Name one with `rollback ENV REVISION` if you are sure.",
        passed.join(", ")
    ))
}

/// The operation number a revision's change cause names (`deploy 7.0.0 by alice (#12)`).
pub fn op_of(r: &Revision) -> Option<OpId> {
    r.change_cause
        .as_deref()?
        .rsplit_once("(#")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
}

/// A revision made by one of the bot's operations is good only if that operation succeeded;
/// others (made by hand, by another tool) are taken as good.
pub fn verdict_from_journal(store: &Store, r: &Revision) -> Verdict {
    let Some(id) = op_of(r) else {
        return Verdict::Good;
    };
    match store.get_op(id).ok().flatten().map(|o| o.state) {
        Some(OpState::Succeeded) | None => Verdict::Good,
        Some(OpState::RolledBack) => Verdict::Bad(format!("rolled back by #{id}")),
        Some(OpState::Failed) => Verdict::Bad(format!("failed in #{id}")),
        Some(OpState::Cancelled) => Verdict::Bad(format!("cancelled in #{id}")),
        Some(OpState::Running) => Verdict::Bad(format!("#{id} is still running")),
    }
}

/// Chooses the target of a plain rollback from the cluster's history and the journal.
pub async fn resolve(c: &Cluster, store: &Store, e: &EnvironmentConfig) -> Result<Choice, String> {
    let d = c
        .deployment(&e.deployment)
        .await
        .map_err(|e| e.to_string())?;
    let current = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(rollout::REVISION))
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0);
    let history = c.history(&e.deployment).await.map_err(|e| e.to_string())?;
    choose(&history, current, |r| verdict_from_journal(store, r))
}

impl Operation for Rollback {
    fn steps(&self, _env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
        vec![
            StepRecord::pending(StepKind::Undo),
            StepRecord::pending(StepKind::Rollout),
            operation::smoke_step(e),
        ]
    }

    async fn step<C: Chat>(&self, kind: &StepKind, cx: &mut Step<'_, C>) -> StepEnd {
        match kind {
            StepKind::Undo => self.undo_step(cx).await,
            StepKind::Rollout => {
                cx.engine
                    .follow(cx.cluster, &cx.e.deployment, cx.rec, cx.index)
                    .await
            }
            StepKind::SmokeTest => match &cx.e.smoke {
                Some(smoke) => cx.engine.smoke(smoke, None).await,
                None => StepEnd::Done("none configured".into()),
            },
            other => operation::foreign(other, "a rollback"),
        }
    }

    /// A rollback that fails goes forward again to where it started.
    fn undo(&self, rec: &OpRecord, _e: &EnvironmentConfig) -> Undo {
        match rec.facts.undo_from {
            Some(from) if operation::started(rec, &StepKind::Undo) => Undo::Revision {
                // Revision 0 (the Deployment had none): the previous one, as kubectl's.
                revision: (from > 0).then_some(from),
                version: rec.facts.undo_from_version.clone(),
                step: StepKind::RollForward,
            },
            _ => Undo::Nothing,
        }
    }

    fn summary(&self, rec: &OpRecord) -> String {
        format!(
            "{} is back on {}{}.",
            rec.env,
            rec.facts
                .undo_version
                .clone()
                .unwrap_or_else(|| "the earlier version".into()),
            rec.facts
                .revision
                .map(|r| format!(" (revision {r})"))
                .unwrap_or_default()
        )
    }
}

impl Rollback {
    /// Journals the revision it starts from, then undoes to the target; a resumed rollback whose
    /// undo was already applied does not undo twice.
    async fn undo_step<C: Chat>(&self, cx: &mut Step<'_, C>) -> StepEnd {
        let (c, e) = (cx.cluster, cx.e);
        // 0: the Deployment has no revision yet.
        let current = match c.deployment(&e.deployment).await {
            Ok(d) => d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(rollout::REVISION))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            Err(err) => return StepEnd::Failed(err.into()),
        };
        if let Some(from) = cx.rec.facts.undo_from
            && from != current
        {
            return StepEnd::Done(format!(
                "to revision {}",
                cx.rec
                    .facts
                    .undo_to
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            ));
        }
        let history = match c.history(&e.deployment).await {
            Ok(h) => h,
            Err(err) => return StepEnd::Failed(err.into()),
        };
        if let Some(now) = history.iter().find(|r| r.number == current) {
            cx.rec.facts.undo_from_version = Some(version_of(now));
        }
        cx.rec.facts.undo_from = Some(current);
        if let Err(why) = cx.engine.journal(cx.rec).await {
            return StepEnd::Failed(why);
        }
        let target = match &self.to {
            None => None,
            Some(RollbackTo::Revision(r)) => Some(*r),
            Some(RollbackTo::Version(v)) => {
                let wanted = super::image_for(e, v);
                match history.iter().rev().find(|r| {
                    r.images
                        .iter()
                        .any(|i| *i == wanted || i.ends_with(&format!(":{v}")))
                }) {
                    Some(r) => Some(r.number),
                    None => {
                        return StepEnd::failed(format!(
                            "no revision ran {v}; see `history {}`",
                            cx.rec.env
                        ));
                    }
                }
            }
        };
        match c.undo(&e.deployment, target).await {
            Ok(rev) => {
                let version = history
                    .iter()
                    .find(|r| r.number == rev)
                    .map(version_of)
                    .unwrap_or_default();
                cx.rec.facts.undo_to = Some(rev);
                cx.rec.facts.undo_version = Some(version.clone());
                // The revision is renumbered by the rollout: name the version here and only the
                // new number after it, so one state never has two numbers.
                StepEnd::Done(format!("to {version}"))
            }
            Err(err) => StepEnd::Failed(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: i64, tag: &str) -> Revision {
        Revision {
            number: n,
            change_cause: Some(format!("deploy {tag} (#{n})")),
            images: vec![format!("rocketchat/rocket.chat:{tag}")],
        }
    }

    fn bad_if(numbers: &'static [i64]) -> impl Fn(&Revision) -> Verdict {
        move |r| {
            if numbers.contains(&r.number) {
                Verdict::Bad("rolled back".into())
            } else {
                Verdict::Good
            }
        }
    }

    #[test]
    fn a_plain_rollback_after_a_rolled_back_deploy_skips_the_broken_revision() {
        // 6.5.0 (1), 9.9.9-missing (3, rolled back), 7.0.0 is current again as revision 4.
        let h = [rev(1, "6.5.0"), rev(3, "9.9.9-missing"), rev(4, "7.0.0")];
        let c = choose(&h, 4, bad_if(&[3])).unwrap();
        assert_eq!((c.target, c.version.as_str(), c.previous), (1, "6.5.0", 3));
        assert_eq!(
            c.skipped,
            vec![(3, "9.9.9-missing".into(), "rolled back".into())]
        );
        assert!(c.needs_confirmation());
    }

    #[test]
    fn the_immediately_previous_good_revision_needs_no_extra_confirmation() {
        let h = [rev(1, "6.5.0"), rev(2, "7.0.0")];
        let c = choose(&h, 2, bad_if(&[])).unwrap();
        assert_eq!(c.target, 1);
        assert!(!c.needs_confirmation());
    }

    #[test]
    fn a_revision_running_what_runs_now_is_passed_over() {
        let mut same = rev(2, "7.0.0");
        same.change_cause = None;
        let h = [rev(1, "6.5.0"), same, rev(3, "7.0.0")];
        let c = choose(&h, 3, bad_if(&[])).unwrap();
        assert_eq!(c.target, 1);
        assert_eq!(c.skipped[0].2, "the same version as now");
    }

    #[test]
    fn no_good_revision_is_an_error_naming_each_one_passed_over() {
        let h = [rev(1, "6.5.0"), rev(2, "7.0.0")];
        let err = choose(&h, 2, bad_if(&[1])).unwrap_err();
        assert!(err.contains("revision 1 (6.5.0: rolled back)"), "{err}");
        let err = choose(&[rev(1, "6.5.0")], 1, bad_if(&[])).unwrap_err();
        assert!(err.contains("no earlier revision"), "{err}");
    }

    #[test]
    fn the_operation_is_read_from_the_change_cause() {
        assert_eq!(op_of(&rev(12, "7.0.0")), Some(OpId::new(12)));
        let mut r = rev(1, "6.5.0");
        r.change_cause = Some("initial install 6.5.0".into());
        assert_eq!(op_of(&r), None);
    }
}
