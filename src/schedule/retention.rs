//! Grandfather-father-son retention: which backups to keep and which to prune, as a pure function.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

pub use crate::config::Retention;

/// What the plan needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub at: DateTime<Utc>,
    pub verified: bool,
}

/// Names to keep and to drop (each sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub keep: BTreeSet<String>,
    pub drop: BTreeSet<String>,
}

/// Keeps the newest backup of each of the newest `daily` days, `weekly` ISO weeks and `monthly`
/// months that have backups (UTC); always keeps the newest verified backup and every backup newer
/// than it (so an unproven run can never push out the last proven one); drops the rest.
pub fn plan(backups: &[Candidate], r: Retention) -> Plan {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.name.cmp(&a.name)));
    let mut keep = BTreeSet::new();
    let mut bucketed = |limit: usize, bucket: &dyn Fn(&DateTime<Utc>) -> (i32, u32)| {
        let mut seen = Vec::new();
        for c in &sorted {
            let b = bucket(&c.at);
            if seen.contains(&b) {
                continue;
            }
            if seen.len() == limit {
                break;
            }
            seen.push(b);
            keep.insert(c.name.clone());
        }
    };
    bucketed(r.daily, &|t| (t.year(), t.ordinal()));
    bucketed(r.weekly, &|t| (t.iso_week().year(), t.iso_week().week()));
    bucketed(r.monthly, &|t| (t.year(), t.month()));
    if let Some(pos) = sorted.iter().position(|c| c.verified) {
        for c in &sorted[..=pos] {
            keep.insert(c.name.clone());
        }
    }
    let drop = sorted
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| !keep.contains(n))
        .collect();
    Plan { keep, drop }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn c(name: &str, t: &str, verified: bool) -> Candidate {
        Candidate {
            name: name.into(),
            at: at(t),
            verified,
        }
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_retention_table() {
        struct Case {
            what: &'static str,
            backups: Vec<Candidate>,
            r: Retention,
            keep: &'static [&'static str],
        }
        let daily = |n: usize| Retention {
            daily: n,
            weekly: 0,
            monthly: 0,
        };
        let cases = vec![
            Case {
                what: "several a day: the newest of each day counts",
                backups: vec![
                    c("d1-a", "2026-11-20T01:00:00Z", false),
                    c("d1-b", "2026-11-20T13:00:00Z", false),
                    c("d2-a", "2026-11-21T01:00:00Z", false),
                    c("d2-b", "2026-11-21T13:00:00Z", false),
                ],
                r: daily(2),
                keep: &["d1-b", "d2-b"],
            },
            Case {
                what: "gaps: days without backups do not use up the count",
                backups: vec![
                    c("nov01", "2026-11-01T01:00:00Z", false),
                    c("nov10", "2026-11-10T01:00:00Z", false),
                    c("nov20", "2026-11-20T01:00:00Z", false),
                    c("nov21", "2026-11-21T01:00:00Z", false),
                ],
                r: daily(3),
                keep: &["nov10", "nov20", "nov21"],
            },
            Case {
                what: "month boundaries: the newest of each month is a monthly",
                backups: vec![
                    c("sep30", "2026-09-30T23:00:00Z", false),
                    c("oct01", "2026-10-01T01:00:00Z", false),
                    c("oct31", "2026-10-31T23:59:00Z", false),
                    c("nov01", "2026-11-01T00:01:00Z", false),
                ],
                r: Retention {
                    daily: 1,
                    weekly: 0,
                    monthly: 3,
                },
                keep: &["nov01", "oct31", "sep30"],
            },
            Case {
                what: "weeks are ISO weeks (Monday to Sunday)",
                backups: vec![
                    c("sun", "2026-11-15T12:00:00Z", false),
                    c("mon", "2026-11-16T12:00:00Z", false),
                    c("tue", "2026-11-17T12:00:00Z", false),
                ],
                r: Retention {
                    daily: 0,
                    weekly: 2,
                    monthly: 0,
                },
                keep: &["sun", "tue"],
            },
            Case {
                what: "the newest verified backup and everything newer are always kept",
                backups: vec![
                    c("old-verified", "2026-11-01T01:00:00Z", true),
                    c("a", "2026-11-19T01:00:00Z", false),
                    c("b", "2026-11-20T01:00:00Z", false),
                    c("c", "2026-11-21T01:00:00Z", false),
                ],
                r: daily(1),
                keep: &["a", "b", "c", "old-verified"],
            },
            Case {
                what: "nothing to keep: nothing kept",
                backups: vec![c("x", "2026-11-21T01:00:00Z", false)],
                r: Retention {
                    daily: 0,
                    weekly: 0,
                    monthly: 0,
                },
                keep: &[],
            },
        ];
        for case in cases {
            let p = plan(&case.backups, case.r);
            assert_eq!(p.keep, names(case.keep), "{}", case.what);
            let all: BTreeSet<String> = case.backups.iter().map(|b| b.name.clone()).collect();
            assert_eq!(
                p.drop,
                all.difference(&p.keep).cloned().collect::<BTreeSet<_>>(),
                "{}: drop is the rest",
                case.what
            );
        }
    }

    #[test]
    fn the_default_keeps_seven_daily_four_weekly_six_monthly() {
        let backups: Vec<Candidate> = (0..400)
            .map(|d| {
                let t = at("2026-11-21T01:00:00Z") - chrono::Duration::days(d);
                Candidate {
                    name: format!("b{d:03}"),
                    at: t,
                    verified: false,
                }
            })
            .collect();
        let p = plan(&backups, Retention::default());
        assert!(p.keep.len() >= 7 && p.keep.len() <= 17, "{}", p.keep.len());
        assert!(p.keep.contains("b000") && p.keep.contains("b006") && !p.keep.contains("b399"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        #[test]
        fn every_plan_splits_the_backups_and_never_drops_the_newest_or_the_newest_proven(
            backups in proptest::collection::vec((0i64..400 * 24, proptest::bool::ANY), 0..60),
            daily in 1usize..10,
            weekly in 0usize..6,
            monthly in 0usize..8,
        ) {
            let start = at("2026-01-01T00:00:00Z");
            let all: Vec<Candidate> = backups
                .iter()
                .enumerate()
                .map(|(i, (hours, verified))| Candidate {
                    name: format!("b{i}"),
                    at: start + chrono::Duration::hours(*hours),
                    verified: *verified,
                })
                .collect();
            let p = plan(&all, Retention { daily, weekly, monthly });
            let every: BTreeSet<String> = all.iter().map(|c| c.name.clone()).collect();
            proptest::prop_assert!(p.keep.is_disjoint(&p.drop));
            proptest::prop_assert_eq!(p.keep.union(&p.drop).cloned().collect::<BTreeSet<_>>(), every);
            let newest = all.iter().max_by(|a, b| a.at.cmp(&b.at).then_with(|| a.name.cmp(&b.name)));
            if let Some(n) = newest {
                proptest::prop_assert!(p.keep.contains(&n.name));
            }
            if let Some(v) = all.iter().filter(|c| c.verified).map(|c| c.at).max() {
                // The newest proven backup, and everything newer, is kept.
                for c in all.iter().filter(|c| c.at > v) {
                    proptest::prop_assert!(p.keep.contains(&c.name), "{} is newer than the newest verified", c.name);
                }
            }
            // No more kept than the policy allows, besides the proven rule.
            let proven_and_newer = all
                .iter()
                .filter(|c| all.iter().filter(|x| x.verified).map(|x| x.at).max().is_some_and(|v| c.at >= v))
                .count();
            proptest::prop_assert!(p.keep.len() <= daily + weekly + monthly + proven_and_newer);
        }
    }
}
