//! `rocketops backups`: the backup catalog read from the store without chat — the list, the retention plan (what `backup prune` would delete), and the daily report.

use serde::Serialize;

use crate::catalog::{self, BackupRecord};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// `rocketops backups` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupsArgs {
    /// `list` (default), `plan` (what a prune would keep and delete) or `report`.
    #[arg(value_parser = ["list", "plan", "report"])]
    pub action: Option<String>,
    /// Only this environment (`plan` and `report`: each environment when left out).
    #[arg(long)]
    pub env: Option<String>,
    /// JSON lines, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Why `backups` failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{0}` is not a configured environment")]
    UnknownEnvironment(String),
}

#[derive(Serialize)]
struct PlanLine<'a> {
    env: &'a str,
    name: &'a str,
    finished: String,
    verified: Option<bool>,
    keep: bool,
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Pure: the text of `backups list`.
pub fn render_list(records: &[BackupRecord]) -> String {
    let mut out = String::new();
    for b in records {
        let verified = match &b.verify {
            Some(v) if v.ok => format!(
                "verified ✓{}",
                v.restore_secs
                    .map(|s| format!(" (restore {s} s)"))
                    .unwrap_or_default()
            ),
            Some(_) => "verify failed ✗".into(),
            None => "verified never".into(),
        };
        out.push_str(&format!(
            "{}  {:<8} {:<40} {:>10}  {:<36} {verified}\n",
            time(b.finished_ms),
            b.env,
            b.name,
            catalog::size(b.bytes),
            b.by
        ));
    }
    out
}

/// Pure: the text of `backups plan` for one environment.
pub fn render_plan(
    env: &str,
    records: &[BackupRecord],
    plan: &crate::schedule::retention::Plan,
) -> String {
    let mut out = format!(
        "{env}: keep {}, delete {} (a dry run of `backup prune {env}`)\n",
        plan.keep.len(),
        plan.drop.len()
    );
    for b in records {
        out.push_str(&format!(
            "  {} {}  {}\n",
            if plan.keep.contains(&b.job) {
                "keep  "
            } else {
                "delete"
            },
            time(b.finished_ms),
            b.name
        ));
    }
    out
}

/// Prints what was asked.
pub fn run(store: &Store, config: &Config, args: &BackupsArgs) -> Result<(), BackupsError> {
    if let Some(e) = &args.env
        && !config.environments.contains_key(e)
    {
        return Err(BackupsError::UnknownEnvironment(e.clone()));
    }
    let envs: Vec<String> = match &args.env {
        Some(e) => vec![e.clone()],
        None => config.environments.keys().cloned().collect(),
    };
    match args.action.as_deref().unwrap_or("list") {
        "plan" => {
            for env in envs {
                let e = &config.environments[&env];
                let records = catalog::list(store, Some(&env));
                let plan = catalog::retention_plan(&records, e.backup.retention);
                if args.json {
                    for b in &records {
                        let line = PlanLine {
                            env: &env,
                            name: &b.name,
                            finished: time(b.finished_ms),
                            verified: b.verified,
                            keep: plan.keep.contains(&b.job),
                        };
                        println!("{}", serde_json::to_string(&line).unwrap_or_default());
                    }
                } else {
                    print!("{}", render_plan(&env, &records, &plan));
                }
            }
        }
        "report" => {
            for env in envs {
                let r =
                    crate::ops::report::for_env(store, &env, crate::clock::Clock::System.now_ms());
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"env": env, "text": r.text, "attachments": r.attachments})
                    );
                } else {
                    println!("{}\n", crate::ops::report::plain(&r));
                }
            }
        }
        _ => {
            let mut records = catalog::list(store, args.env.as_deref());
            records.reverse(); // oldest first, newest last, like `audit`
            if args.json {
                for b in &records {
                    println!("{}", serde_json::to_string(b).unwrap_or_default());
                }
            } else {
                print!("{}", render_list(&records));
            }
        }
    }
    Ok(())
}
