//! What a schedule runs: backups, test-restores and pruning as journaled operations of the system user (the same locks, journal and audit as a chat command), and the daily report posted into the environment's channel.

use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::{chart, report};
use crate::catalog;
use crate::chat::Chat;
use crate::command::Command;
use crate::config::Config;
use crate::schedule::{Kind, Runner, SYSTEM_USER};
use crate::store::{AuditDecision, AuditEntry, OpId, Store};

const DAY_MS: i64 = 86_400_000;

/// Runs what the schedules fire.
pub struct Scheduled<C: Chat> {
    pub engine: Engine<C>,
    pub chat: C,
    pub store: Store,
    pub config: std::sync::Arc<Config>,
}

fn count(env: &str, kind: Kind, outcome: &str) {
    crate::telemetry::metrics()
        .scheduled_runs
        .get_or_create(&crate::telemetry::labels(&[
            ("env", env),
            ("kind", kind.name()),
            ("outcome", outcome),
        ]))
        .inc();
}

/// Where an environment's reports and scheduled operations are posted.
pub fn report_channel(config: &Config, env: &str) -> String {
    config
        .environments
        .get(env)
        .and_then(|e| e.backup.report_channel.clone())
        .or_else(|| config.rocketchat.rooms.first().cloned())
        .unwrap_or_else(|| config.rocketchat.alerts_channel.clone())
}

impl<C: Chat> Scheduled<C> {
    fn audit(
        &self,
        env: &str,
        room: &str,
        command: &str,
        decision: AuditDecision,
        reason: Option<String>,
        op: Option<OpId>,
    ) {
        let entry = AuditEntry {
            at_ms: self.engine.now_ms(),
            user: SYSTEM_USER.into(),
            room: room.trim_start_matches('#').into(),
            text: command.into(),
            command: command.into(),
            env: Some(env.into()),
            decision,
            reason,
            op,
            ..AuditEntry::default()
        };
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, "cannot audit a scheduled run");
        }
    }

    /// Posts the daily report of `env` into `room`.
    pub async fn post_report(&self, env: &str, room: &str, slot: Option<String>) {
        let r = report::for_env(&self.store, env, self.engine.now_ms());
        if let Err(e) = self
            .chat
            .post_attachments(room, &r.text, &r.attachments)
            .await
        {
            tracing::warn!(error = %e, "attachments refused; posting the report as text");
            crate::chat::log_failure(
                "the daily report as text",
                self.chat.post(room, None, &report::plain(&r)).await,
            );
        }
        self.audit(env, room, "report", AuditDecision::Scheduled, slot, None);
    }
}

impl<C: Chat> Scheduled<C> {
    /// Uploads the chart of the last four weeks of `env`'s backups into `room`; the caption
    /// alone when there is nothing to draw or the picture cannot be made.
    pub async fn post_chart(&self, env: &str, room: &str) {
        let now = self.engine.now_ms();
        let since = now - 28 * DAY_MS;
        let points: Vec<chart::Point> = catalog::list(&self.store, Some(env))
            .into_iter()
            .filter(|b| b.finished_ms > since)
            .filter_map(|b| {
                b.bytes.map(|bytes| chart::Point {
                    at_ms: b.finished_ms,
                    bytes,
                    secs: b.duration_secs,
                    verified: b.verified,
                })
            })
            .collect();
        let failures: Vec<i64> = catalog::failures(&self.store, env, since)
            .iter()
            .map(|f| f.at_ms)
            .collect();
        let daily = self
            .config
            .environments
            .get(env)
            .map(|e| e.backup.retention.daily)
            .unwrap_or_default();
        let c = chart::Chart {
            env,
            now_ms: now,
            days: 28,
            points: &points,
            failures: &failures,
            daily,
        };
        let caption = chart::caption(&c);
        if points.is_empty() {
            crate::chat::log_failure(
                "the weekly chart caption",
                self.chat.post(room, None, &caption).await,
            );
            return;
        }
        let day = chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .format("%Y-%m-%d");
        let uploaded = match chart::render(&c) {
            Ok(bytes) => {
                let file = crate::chat::File {
                    name: format!("{env}-backups-{day}.png"),
                    content_type: "image/png".into(),
                    bytes,
                };
                self.chat
                    .upload(room, &file, &caption)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = uploaded {
            tracing::warn!(error = %e, "cannot post the weekly chart");
            crate::chat::log_failure(
                "the weekly chart caption",
                self.chat
                    .post(
                        room,
                        None,
                        &format!("{caption}\n(The chart could not be posted: {e}.)"),
                    )
                    .await,
            );
        }
    }
}

impl<C: Chat> Runner for Scheduled<C> {
    async fn run(&self, env: &str, kind: Kind, slot: DateTime<Utc>) {
        let channel = report_channel(&self.config, env);
        let room = match self.chat.room_id(&channel).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%env, %kind, %channel, error = %e, "cannot find the channel for a scheduled run");
                return;
            }
        };
        // The slot in the schedule's own zone, for the audit log.
        let tz = self
            .config
            .environments
            .get(env)
            .and_then(|e| e.schedule.timezone.as_deref())
            .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
            .unwrap_or(chrono_tz::Tz::UTC);
        let slot_text = format!(
            "{kind} schedule, slot {}",
            slot.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
        );
        let cmd = match kind {
            Kind::Report => {
                count(env, kind, "started");
                return self.post_report(env, &room, Some(slot_text)).await;
            }
            Kind::Weekly => {
                count(env, kind, "started");
                self.post_report(env, &room, Some(slot_text)).await;
                return self.post_chart(env, &room).await;
            }
            Kind::Backup => Command::BackupNow {
                env: Some(env.into()),
            },
            Kind::Verify => Command::Verify {
                env: Some(env.into()),
                backup: None,
                // The nightly verify proves the off-site copy too, on the nights its setting says.
                offsite: self
                    .config
                    .environments
                    .get(env)
                    .and_then(|e| e.backup.offsite.as_ref())
                    .is_some_and(|o| o.verify_offsite(chrono::Datelike::ordinal(&slot))),
            },
            Kind::Prune => Command::BackupPrune { env: env.into() },
            Kind::Refresh => Command::Restore {
                env: env.into(),
                backup: crate::command::BackupRef::Latest,
                from: self
                    .config
                    .environments
                    .get(env)
                    .and_then(|e| e.schedule.refresh_from.clone()),
                no_safety_backup: false,
                offsite: false,
            },
        };
        let text = super::describe(&cmd);
        // A frozen environment keeps its backups and reports; deleting old backups waits.
        if kind == Kind::Prune
            && let Ok(Some(l)) = self.store.env_lock(env)
        {
            count(env, kind, "skipped");
            let why = format!("{env} is locked by @{}", l.by);
            self.audit(
                env,
                &channel,
                &text,
                AuditDecision::Skipped,
                Some(why.clone()),
                None,
            );
            crate::chat::log_failure(
                "a skipped schedule",
                self.chat
                    .post(
                        &room,
                        None,
                        &format!("⏭ Scheduled `{text}` skipped: {why}."),
                    )
                    .await,
            );
            return;
        }
        let op = match self.store.next_op_id() {
            Ok(op) => op,
            Err(e) => {
                tracing::error!(error = %e, "cannot number a scheduled operation");
                return;
            }
        };
        tracing::info!(%env, %kind, %slot, op = op.get(), "starting a scheduled operation");
        self.audit(
            env,
            &channel,
            &text,
            AuditDecision::Scheduled,
            Some(slot_text),
            Some(op),
        );
        let started = self
            .engine
            .start(&cmd, op, SYSTEM_USER, (&room, &channel), None)
            .await;
        count(
            env,
            kind,
            if started.is_ok() {
                "started"
            } else {
                "skipped"
            },
        );
        if let Err(e) = started {
            self.audit(
                env,
                &room,
                &text,
                AuditDecision::Skipped,
                Some(e.to_string()),
                Some(op),
            );
            crate::chat::log_failure(
                "a skipped schedule",
                self.chat
                    .post(
                        &room,
                        None,
                        &format!("⏭ Scheduled `{text}` (#{op}) skipped: {e}"),
                    )
                    .await,
            );
        }
    }
}
