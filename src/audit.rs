//! `rocketops audit`: printing and exporting the audit log (text or JSON lines) and verifying its keyed hash chain against an anchor.

use serde::Serialize;

use crate::config::Config;
use crate::store::{AuditEntry, Store, StoreError};

/// `rocketops audit` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// `verify` checks the hash chain instead of printing; `export` prints every record (all of
    /// them, not only the newest `--limit`) for shipping to a log system.
    #[arg(value_parser = ["verify", "export"])]
    pub action: Option<String>,
    /// With `verify`: a head hash posted earlier (the audit room's anchor, or the
    /// `rocketops_audit_anchor` metric); the log must still hold that record.
    #[arg(long, value_name = "HASH")]
    pub head: Option<String>,
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

/// One record as `rocketops audit` prints it: what came from chat (user, room, text, reason,
/// outcome) with its control characters escaped, so a record is one line and cannot move the
/// terminal's cursor.
pub fn text_line(time: &str, e: &AuditEntry) -> String {
    use crate::redact::escape_controls as esc;
    let op = e.op.map(|o| format!("#{o} ")).unwrap_or_default();
    let extra = match (&e.reason, &e.outcome) {
        (Some(r), _) => format!(" — {}", esc(r)),
        (None, Some(o)) => format!(" → {}", esc(o)),
        _ => String::new(),
    };
    format!(
        "{time}  {:<10} {:<10} {op}{:<28} {}{extra}",
        esc(&e.user),
        esc(&e.room),
        esc(&e.text),
        e.decision
    )
}

/// Prints or verifies; `Ok(false)` when verification found a break.
pub fn run(store: &Store, config: &Config, args: &AuditArgs) -> Result<bool, AuditError> {
    if args.action.as_deref() == Some("verify") {
        let key = config.audit.key.as_ref().map(|k| k.expose().as_bytes());
        return match store.verify_audit(key, args.head.as_deref())? {
            Ok(s) => {
                let keyed = match (s.keyed_from, key.is_some()) {
                    (Some(1), _) => "keyed chain verified".to_string(),
                    (Some(n), _) => format!(
                        "keyed chain verified from record {n} (records before it predate the key and are only hash-chained)"
                    ),
                    (None, true) => "hash chain verified (no record is keyed yet)".to_string(),
                    (None, false) => {
                        "hash chain verified WITHOUT a key (set ROCKETOPS_AUDIT_KEY; an unkeyed chain can be recomputed by whoever holds the store)".to_string()
                    }
                };
                let anchor = match &args.head {
                    Some(h) => format!("; the anchored head {h} is in it"),
                    None => {
                        "; give --head HASH (the last posted anchor) to detect truncation".into()
                    }
                };
                println!(
                    "audit log intact: {} records, {keyed}{anchor}; head {}",
                    s.records, s.head
                );
                Ok(true)
            }
            Err(b) => {
                eprintln!("audit log BROKEN: {b}");
                Ok(false)
            }
        };
    }
    let all = store.all_audit()?;
    let selected = if args.action.as_deref() == Some("export") {
        select(
            all,
            &AuditArgs {
                limit: usize::MAX,
                ..args.clone()
            },
        )?
    } else {
        select(all, args)?
    };
    for e in selected {
        let time = chrono::DateTime::from_timestamp_millis(e.at_ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        if args.json || args.action.as_deref() == Some("export") {
            println!(
                "{}",
                serde_json::to_string(&Line { time, entry: &e }).unwrap_or_default()
            );
        } else {
            println!("{}", text_line(&time, &e));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_a_newline_and_a_cursor_movement_prints_as_one_visible_line() {
        let e = AuditEntry {
            user: "mallory".into(),
            room: "ops".into(),
            text: "/ping ok\n2026-12-04T10:31Z alice ops #7 deploy prod v9.9 allowed → started\x1b[1A\x1b[2K".into(),
            reason: Some("line\rover".into()),
            ..AuditEntry::default()
        };
        let line = text_line("2026-12-04T10:30:00Z", &e);
        assert!(!line.contains(['\n', '\r', '\x1b']), "{line}");
        assert!(
            line.contains("/ping ok\\n2026-12-04T10:31Z alice"),
            "{line}"
        );
        assert!(line.contains("\\x1b[1A\\x1b[2K"), "{line}");
        assert!(line.contains("line\\rover"), "{line}");
    }
}
