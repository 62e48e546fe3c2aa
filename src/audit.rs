//! `rocketops audit`: printing the audit log with filters (text or JSON lines) and verifying its hash chain.

use serde::Serialize;

use crate::config::Config;
use crate::store::{AuditEntry, Store, StoreError};

/// `rocketops audit` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// `verify` checks the hash chain instead of printing.
    #[arg(value_parser = ["verify"])]
    pub action: Option<String>,
    /// Only records at or after this date (`2026-11-21` or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this user's commands.
    #[arg(long)]
    pub user: Option<String>,
    /// Only commands on this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// JSON lines, for export.
    #[arg(long)]
    pub json: bool,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Why `audit` failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--since `{0}` is not a date (use 2026-11-21 or 2026-11-21T10:00:00Z)")]
    BadDate(String),
}

fn since_ms(s: &str) -> Result<i64, AuditError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| AuditError::BadDate(s.to_string()))
}

/// The records that pass the filters, oldest first.
pub fn select(entries: Vec<AuditEntry>, args: &AuditArgs) -> Result<Vec<AuditEntry>, AuditError> {
    let since = args.since.as_deref().map(since_ms).transpose()?;
    let mut out: Vec<AuditEntry> = entries
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.at_ms >= s))
        .filter(|e| {
            args.user
                .as_ref()
                .is_none_or(|u| e.user.eq_ignore_ascii_case(u))
        })
        .filter(|e| {
            args.env
                .as_ref()
                .is_none_or(|v| e.env.as_deref() == Some(v.as_str()))
        })
        .collect();
    let skip = out.len().saturating_sub(args.limit);
    out.drain(..skip);
    Ok(out)
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a AuditEntry,
}

/// Prints or verifies; `Ok(false)` when verification found a break.
pub fn run(config: &Config, args: &AuditArgs) -> Result<bool, AuditError> {
    let store = Store::open(&config.bot.store_path)?;
    if args.action.as_deref() == Some("verify") {
        return match store.verify_audit()? {
            Ok(n) => {
                println!("audit log intact: {n} records, hash chain verified");
                Ok(true)
            }
            Err(b) => {
                eprintln!("audit log BROKEN: {b}");
                Ok(false)
            }
        };
    }
    for e in select(store.all_audit()?, args)? {
        let time = chrono::DateTime::from_timestamp_millis(e.at_ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&Line { time, entry: &e }).unwrap_or_default()
            );
        } else {
            let op = e.op.map(|o| format!("#{o} ")).unwrap_or_default();
            let extra = match (&e.reason, &e.outcome) {
                (Some(r), _) => format!(" — {r}"),
                (None, Some(o)) => format!(" → {o}"),
                _ => String::new(),
            };
            println!(
                "{time}  {:<10} {:<10} {op}{:<28} {}{extra}",
                e.user, e.room, e.text, e.decision
            );
        }
    }
    Ok(true)
}
