//! Failure alerts: watches of the managed namespaces become incidents (one alert each, a repeat
//! counter, a "resolved" follow-up), kept in the store across restarts, rate-limited and mutable.

mod catalogue;
pub mod detect;
mod incidents;

pub use self::incidents::{Incident, Mute, is_muted, mute, open_incidents};
use self::incidents::{Resolved, put_logged, remove_logged, write_failed};

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::detect::{IncidentKey, Reason, Severity, Signal};
use crate::chat::{Chat, MessageRef};
use crate::clock::Clock;
use crate::cluster::Clusters;
use crate::cluster::watch::{ClusterEvent, WatchedKind};
use crate::config::Config;
use crate::store::{Record, Store};

/// A token bucket over all alerts, so a failing cluster cannot flood the channel.
#[derive(Debug)]
pub struct AlertBudget {
    per_minute: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl AlertBudget {
    pub fn new(per_minute: u32, burst: u32) -> AlertBudget {
        AlertBudget {
            per_minute: per_minute.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: tokio::time::Instant::now(),
        }
    }
    pub fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0)
            .min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn age(ms: i64) -> String {
    crate::clock::human(Duration::from_secs((ms.max(0) / 1000) as u64))
}

/// Turns watch events into alerts until `shutdown`.
pub struct Alerter<C: Chat> {
    chat: C,
    store: Store,
    config: std::sync::Arc<Config>,
    clusters: Clusters,
    budget: AlertBudget,
    suppressed: u32,
    /// Last seen StatefulSets and CronJobs, for time-based checks.
    watched: HashMap<(String, WatchedKind, String), Value>,
    unready_since: HashMap<(String, String), i64>,
    http: reqwest::Client,
    clock: Clock,
}

impl<C: Chat> Alerter<C> {
    pub fn new(
        chat: C,
        store: Store,
        config: std::sync::Arc<Config>,
        clusters: Clusters,
        clock: Clock,
    ) -> Alerter<C> {
        let budget = AlertBudget::new(config.alerts.per_minute, config.alerts.burst);
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Alerter {
            chat,
            store,
            config,
            clusters,
            budget,
            suppressed: 0,
            watched: HashMap::new(),
            unready_since: HashMap::new(),
            http,
            clock,
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ClusterEvent>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.alerts.check_every);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn on_event(&mut self, ev: ClusterEvent) {
        tracing::trace!(?ev, "cluster event");
        match ev {
            ClusterEvent::Applied {
                env,
                kind: WatchedKind::Events,
                object,
            } => {
                if let Some(s) =
                    detect::warning_event(&env, &object, &self.config.alerts.warning_events)
                {
                    self.apply(s, None).await;
                }
            }
            ClusterEvent::Applied { env, kind, object } => {
                if matches!(kind, WatchedKind::StatefulSets | WatchedKind::CronJobs) {
                    let name = object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    self.watched
                        .insert((env.clone(), kind, name), detect::kept_fields(&object));
                }
                if kind == WatchedKind::Jobs {
                    self.catalogue(&env, &object).await;
                }
                for s in detect::detect(&env, kind, &object) {
                    self.apply(s, Some(&object)).await;
                }
            }
            ClusterEvent::Deleted { env, kind, object } => {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.watched.remove(&(env.clone(), kind, name.clone()));
                if kind == WatchedKind::Pods {
                    self.apply(
                        Signal::Clear {
                            env,
                            object: format!("pod/{name}"),
                            reason: None,
                        },
                        None,
                    )
                    .await;
                }
            }
            ClusterEvent::Relisted { .. } => {}
            ClusterEvent::Refused {
                env,
                kind,
                environments,
                message,
            } => {
                let plural = kind.plural();
                let scope = if environments > 1 {
                    format!("{environments} environments on this API server")
                } else {
                    env.clone()
                };
                let detail = format!(
                    "the bot may no longer list and watch {plural}, so alerts about them are blind for {scope}; give its Role `list` and `watch` on `{plural}` again ({})",
                    crate::redact::outside(&message.chars().take(300).collect::<String>())
                );
                self.apply(
                    Signal::Firing {
                        key: IncidentKey {
                            env,
                            object: format!("watch/{plural}"),
                            reason: Reason::Other("Forbidden".into()),
                        },
                        severity: Severity::Critical,
                        detail,
                        occurrence: String::new(),
                    },
                    None,
                )
                .await;
            }
            ClusterEvent::Restored { env, kind } => {
                self.apply(
                    Signal::Clear {
                        env,
                        object: format!("watch/{}", kind.plural()),
                        reason: None,
                    },
                    None,
                )
                .await;
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = self.clock.now_ms();
        let grace = self.config.alerts.statefulset_grace.as_millis() as i64;
        let mut signals = Vec::new();
        for ((env, kind, name), o) in &self.watched {
            match kind {
                WatchedKind::StatefulSets => {
                    let key = (env.clone(), name.clone());
                    match detect::statefulset_short(o) {
                        Some(detail) => {
                            let since = *self.unready_since.entry(key).or_insert(now);
                            if now - since >= grace {
                                signals.push(Signal::Firing {
                                    key: IncidentKey {
                                        env: env.clone(),
                                        object: format!("statefulset/{name}"),
                                        reason: Reason::NotReady,
                                    },
                                    severity: Severity::Critical,
                                    detail: format!("{detail} for {}", age(now - since)),
                                    occurrence: String::new(),
                                });
                            }
                        }
                        None => {
                            self.unready_since.remove(&key);
                            signals.push(Signal::Clear {
                                env: env.clone(),
                                object: format!("statefulset/{name}"),
                                reason: Some(Reason::NotReady),
                            });
                        }
                    }
                }
                WatchedKind::CronJobs => match detect::cronjob_stale(o, self.clock.now()) {
                    Some(detail) => signals.push(Signal::Firing {
                        key: IncidentKey {
                            env: env.clone(),
                            object: format!("cronjob/{name}"),
                            reason: Reason::BackupsStopped,
                        },
                        severity: Severity::Critical,
                        detail,
                        occurrence: String::new(),
                    }),
                    None => signals.push(Signal::Clear {
                        env: env.clone(),
                        object: format!("cronjob/{name}"),
                        reason: Some(Reason::BackupsStopped),
                    }),
                },
                _ => {}
            }
        }
        // Warning events do not clear by themselves: an incident with no new event for a while is over.
        let ttl = self.config.alerts.warning_ttl.as_millis() as i64;
        for inc in open_incidents(&self.store) {
            if inc.severity == Severity::Warning && now - inc.last_ms >= ttl {
                signals.push(Signal::Clear {
                    env: inc.key.env.clone(),
                    object: inc.key.object.clone(),
                    reason: Some(inc.key.reason.clone()),
                });
            }
        }
        for s in signals {
            self.apply(s, None).await;
        }
        let quiet = self.quiet();
        if !quiet {
            self.digest().await;
        }
        // Incidents held back by a mute or the budget are posted once they may be.
        for inc in open_incidents(&self.store) {
            let held_for_quiet = quiet && inc.severity == Severity::Warning;
            if inc.message.is_none()
                && !held_for_quiet
                && !self.muted(&inc.key.env)
                && self.suppressed == 0
                && self.budget.take()
            {
                self.post(inc).await;
            }
        }
        if self.suppressed > 0 && self.budget.take() {
            let n = std::mem::take(&mut self.suppressed);
            let text = format!(
                "🔕 {n} more alerts were held back by the alert rate limit; `alerts list` shows every open incident."
            );
            if let Ok(room) = self
                .chat
                .room_id(&self.config.rocketchat.alerts_channel)
                .await
            {
                crate::chat::log_failure("an alert", self.chat.post(&room, None, &text).await);
            }
        }
    }

    fn quiet(&self) -> bool {
        use chrono::Timelike;
        let now = self.clock.now();
        let window = self
            .config
            .alerts
            .quiet_hours
            .as_ref()
            .and_then(|q| q.window());
        detect::in_quiet_hours(window, now.hour() * 60 + now.minute())
    }

    /// Posts the warnings held during quiet hours as one message.
    async fn digest(&mut self) {
        let held: Vec<Incident> = open_incidents(&self.store)
            .into_iter()
            .filter(|i| {
                i.message.is_none() && i.severity == Severity::Warning && !self.muted(&i.key.env)
            })
            .collect();
        if held.is_empty() {
            return;
        }
        let mut text = format!("🌙 {} warnings from quiet hours:", held.len());
        for i in &held {
            let times = if i.count > 1 {
                format!(" (×{})", i.count)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "\n• *{}* {} {}: {}{times}",
                i.key.env, i.key.object, i.key.reason, i.detail
            ));
        }
        let Ok(room) = self
            .chat
            .room_id(&self.config.rocketchat.alerts_channel)
            .await
        else {
            return;
        };
        if let Ok(m) = self.chat.post(&room, None, &text).await {
            for mut i in held {
                i.message = Some((m.room_id.clone(), m.id.clone()));
                i.digest = true;
                put_logged(&self.store, &i.key.id(), &i);
            }
        }
    }

    fn muted(&self, env: &str) -> bool {
        let m: Option<Mute> = self.store.records().get(env).ok().flatten();
        is_muted(m.as_ref(), self.clock.now_ms())
    }

    fn channel(&self, env: &str) -> String {
        self.config
            .environments
            .get(env)
            .and_then(|e| e.alerts_channel.clone())
            .unwrap_or_else(|| self.config.rocketchat.alerts_channel.clone())
    }

    fn render(&self, inc: &Incident) -> String {
        let env_cfg = self.config.environments.get(&inc.key.env);
        let mention = if env_cfg.is_some_and(|e| e.is_production(&inc.key.env))
            && inc.severity == Severity::Critical
        {
            "@here "
        } else {
            ""
        };
        let times = if inc.count > 1 {
            format!(" (×{})", inc.count)
        } else {
            String::new()
        };
        let mark = if inc.resolved_ms.is_some() {
            "✅ resolved:"
        } else {
            "🚨"
        };
        format!(
            "{mention}{mark} *{}* {} {}: {}{times}",
            inc.key.env,
            inc.key.object,
            inc.key.reason,
            crate::redact::outside(&inc.detail)
        )
    }

    /// Sends `text` to the incoming webhook (if configured) once per incident and `stage`, retrying
    /// transient failures.
    async fn webhook(&self, inc: &mut Incident, stage: &str, text: &str) {
        let Some(url) = self.config.alerts.webhook_url.clone() else {
            return;
        };
        if inc.webhook.iter().any(|s| s == stage) {
            return;
        }
        let mut delays =
            crate::backoff::delays(Duration::from_millis(200), Duration::from_secs(5)).take(3);
        for attempt in 0..4u32 {
            let r = self
                .http
                .post(url.expose())
                .json(&serde_json::json!({"text": text, "alias": "rocketops"}))
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {
                    inc.webhook.push(stage.to_string());
                    return;
                }
                // 4xx: the URL or token is wrong; retrying will not help (and the URL must not be logged).
                Ok(resp) if resp.status().is_client_error() => {
                    tracing::error!(
                        status = resp.status().as_u16(),
                        "the alerts webhook refused the alert"
                    );
                    return;
                }
                Ok(resp) => tracing::warn!(
                    status = resp.status().as_u16(),
                    attempt,
                    "alerts webhook failed; retrying"
                ),
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "alerts webhook unreachable; retrying")
                }
            }
            match delays.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
    }

    async fn post(&mut self, mut inc: Incident) {
        let mut text = self.render(&inc);
        if inc.key.reason == Reason::JobFailed
            && let (Some(c), Some(job)) = (self.clusters.get(&inc.key.env), inc.occurrences.last())
            && let Ok(tail) = c.job_log_tail(job, 10).await
            && !tail.is_empty()
        {
            text.push_str(&format!("\n```\n{}\n```", tail.join("\n")));
        }
        let channel = self.channel(&inc.key.env);
        let critical = inc.severity == Severity::Critical;
        match self.chat.room_id(&channel).await {
            Ok(room) => {
                match crate::chat::post_alert(&self.chat, &room, &text, &inc.key.env, critical)
                    .await
                {
                    Ok(m) => {
                        inc.message = Some((m.room_id, m.id));
                        crate::telemetry::metrics()
                            .alerts
                            .get_or_create(&crate::telemetry::labels(&[
                                ("env", &inc.key.env),
                                ("severity", if critical { "critical" } else { "warning" }),
                            ]))
                            .inc();
                    }
                    Err(e) => tracing::error!(error = %e, "cannot post an alert"),
                }
            }
            Err(e) => tracing::error!(error = %e, channel, "no alerts channel"),
        }
        self.webhook(&mut inc, "fired", &text).await;
        put_logged(&self.store, &inc.key.id(), &inc);
    }

    async fn apply(&mut self, s: Signal, _object: Option<&Value>) {
        let now = self.clock.now_ms();
        match s {
            Signal::Firing {
                key,
                severity,
                detail,
                occurrence,
            } => {
                let existing: Option<Incident> = self
                    .store
                    .records::<Incident>()
                    .get(&key.id())
                    .ok()
                    .flatten()
                    .filter(|i| i.resolved_ms.is_none());
                match existing {
                    Some(mut inc) => {
                        let new_occurrence =
                            !occurrence.is_empty() && !inc.occurrences.contains(&occurrence);
                        inc.last_ms = now;
                        if new_occurrence {
                            inc.count += 1;
                            inc.occurrences.push(occurrence);
                            if inc.occurrences.len() > 20 {
                                inc.occurrences.remove(0);
                            }
                            inc.detail = detail;
                            if let Some((room, id)) = &inc.message
                                && !inc.digest
                            {
                                let m = MessageRef {
                                    room_id: room.clone(),
                                    id: id.clone(),
                                };
                                crate::chat::log_failure(
                                    "an alert edit",
                                    self.chat.edit(&m, &self.render(&inc)).await,
                                );
                            }
                        }
                        put_logged(&self.store, &key.id(), &inc);
                    }
                    None => {
                        let inc = Incident {
                            key: key.clone(),
                            severity,
                            detail,
                            first_ms: now,
                            last_ms: now,
                            count: 1,
                            occurrences: if occurrence.is_empty() {
                                Vec::new()
                            } else {
                                vec![occurrence]
                            },
                            message: None,
                            resolved_ms: None,
                            webhook: Vec::new(),
                            digest: false,
                        };
                        put_logged(&self.store, &key.id(), &inc);
                        if self.muted(&key.env) {
                            tracing::info!(incident = %key.id(), "alert held back by a mute");
                        } else if severity == Severity::Warning && self.quiet() {
                            tracing::info!(incident = %key.id(), "warning held for the quiet-hours digest");
                        } else if self.budget.take() {
                            self.post(inc).await;
                        } else {
                            self.suppressed += 1;
                        }
                    }
                }
            }
            Signal::Clear {
                env,
                object,
                reason,
            } => {
                for mut inc in open_incidents(&self.store) {
                    if inc.key.env != env
                        || inc.key.object != object
                        || reason.as_ref().is_some_and(|r| *r != inc.key.reason)
                    {
                        continue;
                    }
                    inc.resolved_ms = Some(now);
                    if let Some((room, id)) = inc.message.clone() {
                        let m = MessageRef { room_id: room, id };
                        if !inc.digest {
                            crate::chat::log_failure(
                                "an alert edit",
                                self.chat.edit(&m, &self.render(&inc)).await,
                            );
                        }
                        crate::chat::log_failure(
                            "an alert resolved",
                            self.chat
                                .post(
                                    &m.room_id,
                                    Some(&m.id),
                                    &format!("✅ Resolved after {}.", age(now - inc.first_ms)),
                                )
                                .await,
                        );
                    }
                    if inc.webhook.iter().any(|s| s == "fired") {
                        let text = format!(
                            "✅ *{}* {} {} resolved after {}.",
                            inc.key.env,
                            inc.key.object,
                            inc.key.reason,
                            age(now - inc.first_ms)
                        );
                        self.webhook(&mut inc, "resolved", &text).await;
                    }
                    // Resolved incidents move out of the open set, which every tick scans.
                    // Kept in the open set (marked resolved, so no tick reopens it) when it
                    // cannot be moved out.
                    if !put_logged(
                        &self.store,
                        &format!("{}/{now}", inc.key.id()),
                        &Resolved(inc.clone()),
                    ) || !remove_logged::<Incident>(&self.store, &inc.key.id())
                    {
                        put_logged(&self.store, &inc.key.id(), &inc);
                    }
                    // Kept 90 days for the record; the key ends with the time it was resolved.
                    if let Err(e) = self.store.records::<Resolved>().retain_keys(|k| {
                        k.rsplit('/')
                            .next()
                            .and_then(|t| t.parse::<i64>().ok())
                            .is_none_or(|t| t >= now - 90 * 86_400_000)
                    }) {
                        write_failed(Resolved::TREE, "(older than 90 days)", &e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_holds_until_its_time() {
        let m = Mute {
            env: "prod".into(),
            until_ms: 1_000,
            by: "alice".into(),
            reason: None,
        };
        assert!(is_muted(Some(&m), 999));
        assert!(!is_muted(Some(&m), 1_000));
        assert!(!is_muted(None, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_alert_budget_allows_a_burst_then_refills_with_time() {
        let mut b = AlertBudget::new(6, 3);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.take());
        assert!(!b.take());
    }
}
