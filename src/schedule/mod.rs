//! Schedules: when each environment's backup, test-restore, prune and report run (cron in a time zone), pause/resume, and a run missed while the bot was down made up once at start.

pub mod retention;

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use crate::clock::Clock;
use crate::config::{Config, ScheduleConfig};
use crate::store::{Record, Store, Tree};

/// Who scheduled runs are recorded as (not a valid chat username, so no one can be mistaken for it).
pub const SYSTEM_USER: &str = "(schedule)";

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Backup,
    Verify,
    Prune,
    Report,
    /// The report with a chart of backup size and duration over the last four weeks.
    Weekly,
    /// `restore ENV latest from SOURCE`: refreshes a test environment with another's data.
    Refresh,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Backup,
        Kind::Verify,
        Kind::Prune,
        Kind::Report,
        Kind::Weekly,
        Kind::Refresh,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Verify => "verify",
            Kind::Prune => "prune",
            Kind::Report => "report",
            Kind::Weekly => "weekly",
            Kind::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ScheduleConfig {
    /// The configured expressions, by kind name.
    pub fn entries(&self) -> Vec<(&'static str, &crate::config::CronExpr)> {
        Kind::ALL
            .into_iter()
            .filter_map(|k| {
                let e = match k {
                    Kind::Backup => self.backup.as_ref(),
                    Kind::Verify => self.verify.as_ref(),
                    Kind::Prune => self.prune.as_ref(),
                    Kind::Report => self.report.as_ref(),
                    Kind::Weekly => self.weekly.as_ref(),
                    Kind::Refresh => self.refresh.as_ref(),
                };
                e.map(|e| (k.name(), e))
            })
            .collect()
    }
}

pub use crate::config::parse_cron;

/// One configured schedule.
#[derive(Debug, Clone)]
pub struct Entry {
    pub env: String,
    pub kind: Kind,
    pub expr: String,
    pub tz: Tz,
    cron: Cron,
}

impl Entry {
    /// Pure: the first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Pure: the latest slot in `(last_run, now]`, if one was missed.
    pub fn missed(&self, last_run: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let prev = self
            .cron
            .find_previous_occurrence(&now.with_timezone(&self.tz), true)
            .ok()?
            .with_timezone(&Utc);
        (prev > last_run).then_some(prev)
    }

    fn key(&self) -> String {
        format!("{}/{}", self.env, self.kind)
    }
}

/// Every schedule in the configuration (invalid ones were refused when it loaded).
pub fn entries(config: &Config) -> Vec<Entry> {
    let mut out = Vec::new();
    for (env, e) in &config.environments {
        let tz = e
            .schedule
            .timezone
            .as_deref()
            .and_then(|t| t.parse::<Tz>().ok())
            .unwrap_or(Tz::UTC);
        for kind in Kind::ALL {
            let expr = match kind {
                Kind::Backup => &e.schedule.backup,
                Kind::Verify => &e.schedule.verify,
                Kind::Prune => &e.schedule.prune,
                Kind::Report => &e.schedule.report,
                Kind::Weekly => &e.schedule.weekly,
                Kind::Refresh => &e.schedule.refresh,
            };
            if let Some(expr) = expr
                && let Ok(cron) = expr.cron()
            {
                out.push(Entry {
                    env: env.clone(),
                    kind,
                    expr: expr.to_string(),
                    tz,
                    cron: cron.clone(),
                });
            }
        }
    }
    out
}

impl Record for State {
    const TREE: Tree = Tree::Schedule;
}

/// What the store remembers about one schedule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// When it last ran.
    pub last_run_ms: Option<i64>,
    /// Slots up to this time are accounted for (run, skipped while paused, or before the bot knew
    /// the schedule).
    #[serde(default)]
    pub since_ms: Option<i64>,
    #[serde(default)]
    pub paused_by: Option<String>,
}

fn state(store: &Store, key: &str) -> State {
    store
        .records::<State>()
        .get(key)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn put_state(store: &Store, key: &str, s: &State) {
    if let Err(e) = store.records().put(key, s) {
        tracing::error!(error = %e, key, "cannot save a schedule's state");
    }
}

/// Pauses (or resumes, with `by: None`) the schedules of `env` of `kinds`; returns how many changed.
pub fn set_paused(
    store: &Store,
    config: &Config,
    env: Option<&str>,
    kind: Option<Kind>,
    by: Option<&str>,
) -> usize {
    let mut n = 0;
    for e in entries(config) {
        if env.is_some_and(|x| x != e.env) || kind.is_some_and(|k| k != e.kind) {
            continue;
        }
        let key = e.key();
        let mut s = state(store, &key);
        let want = by.map(str::to_string);
        if s.paused_by.is_some() != want.is_some() {
            s.paused_by = want;
            put_state(store, &key, &s);
            n += 1;
        }
    }
    n
}

/// `schedule list` as a chat message.
pub fn render_list(store: &Store, config: &Config, now: DateTime<Utc>) -> String {
    let all = entries(config);
    if all.is_empty() {
        return "No schedules are configured (`[environments.NAME.schedule]` in the configuration).".into();
    }
    let mut out = String::from("*Schedules*");
    for e in all {
        let s = state(store, &e.key());
        let next = match e.next_after(now) {
            Some(t) => format!(
                "next {}",
                t.with_timezone(&e.tz).format("%a %Y-%m-%d %H:%M %Z")
            ),
            None => "never runs again".into(),
        };
        let last = s
            .last_run_ms
            .and_then(DateTime::from_timestamp_millis)
            .map(|t| {
                format!(
                    " · last {}",
                    t.with_timezone(&e.tz).format("%Y-%m-%d %H:%M %Z")
                )
            })
            .unwrap_or_default();
        let paused = s
            .paused_by
            .map(|by| format!(" · ⏸ paused by @{by}"))
            .unwrap_or_default();
        let what = match e.kind {
            Kind::Refresh => format!(
                "refresh from {}",
                config
                    .environments
                    .get(&e.env)
                    .and_then(|c| c.schedule.refresh_from.as_deref())
                    .unwrap_or("?")
            ),
            k => k.to_string(),
        };
        out.push_str(&format!(
            "\n• *{}* {what} `{}` ({}) · {next}{last}{paused}",
            e.env, e.expr, e.tz
        ));
    }
    out
}

/// Runs what a schedule fired.
pub trait Runner: Send + Sync + 'static {
    fn run(&self, env: &str, kind: Kind, slot: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// Runs every configured schedule until `shutdown`.
pub async fn run<R: Runner>(
    config: &Config,
    store: &Store,
    clock: Clock,
    runner: &R,
    shutdown: CancellationToken,
) {
    let all = entries(config);
    if all.is_empty() {
        return;
    }
    let now = clock.now();
    // A schedule missed while the bot was down runs once now; one never seen starts counting now.
    for e in &all {
        let key = e.key();
        let mut s = state(store, &key);
        match s
            .since_ms
            .max(s.last_run_ms)
            .and_then(DateTime::from_timestamp_millis)
        {
            None => {
                s.since_ms = Some(now.timestamp_millis());
                put_state(store, &key, &s);
            }
            Some(last) => {
                if let Some(slot) = e.missed(last, now) {
                    s.since_ms = Some(now.timestamp_millis());
                    if s.paused_by.is_none() {
                        s.last_run_ms = s.since_ms;
                    }
                    put_state(store, &key, &s);
                    if s.paused_by.is_none() {
                        tracing::info!(env = %e.env, kind = %e.kind, %slot, "running a schedule missed while the bot was down");
                        runner.run(&e.env, e.kind, slot).await;
                    }
                }
            }
        }
    }
    loop {
        let now = clock.now();
        let Some((slot, _)) = all
            .iter()
            .filter_map(|e| e.next_after(now).map(|t| (t, e)))
            .min_by_key(|(t, _)| *t)
        else {
            return;
        };
        tokio::select! {
            _ = clock.sleep_until(slot) => {}
            _ = shutdown.cancelled() => return,
        }
        for e in &all {
            // Every entry whose next slot after the wait began is due now.
            if e.next_after(now) != Some(slot) {
                continue;
            }
            let key = e.key();
            let mut s = state(store, &key);
            s.since_ms = Some(clock.now().timestamp_millis());
            if s.paused_by.is_none() {
                s.last_run_ms = s.since_ms;
            }
            put_state(store, &key, &s);
            if s.paused_by.is_some() {
                tracing::info!(env = %e.env, kind = %e.kind, "schedule paused; skipping this run");
                continue;
            }
            tracing::info!(env = %e.env, kind = %e.kind, %slot, "schedule fired");
            runner.run(&e.env, e.kind, slot).await;
        }
    }
}

#[cfg(test)]
mod tests;
