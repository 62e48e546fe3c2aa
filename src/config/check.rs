//! The checks a configuration passes after it parses (each problem naming its key and line) and the summary `check-config` prints.

use super::*;

/// The problems found so far, each placed at its key's line in the source.
struct Problems<'a> {
    src: &'a str,
    out: Vec<Problem>,
}

impl Problems<'_> {
    fn bad(&mut self, key: &str, message: String) {
        let position = span_of_key(self.src, key).map(|s| line_col(self.src, s));
        self.out.push(Problem {
            key: key.to_string(),
            position,
            message,
        });
    }
}

impl Config {
    /// Semantic checks, each naming its key and, where the key is in the file, its line.
    pub(super) fn problems(&self, src: &str, secrets_present: bool) -> Vec<Problem> {
        let mut p = Problems {
            src,
            out: Vec::new(),
        };
        rocketchat(&mut p, &self.rocketchat, secrets_present);
        for (name, env) in &self.environments {
            environment(&mut p, self, name, env);
        }
        bot_and_alerts(&mut p, self);
        p.out
    }

    /// A human summary for `check-config`, with no secret in it.
    pub fn summary(&self) -> String {
        let rc = &self.rocketchat;
        format!(
            "Rocket.Chat:  {}\n\
             login:        {} ({})\n\
             rooms:        {}\n\
             alerts:       #{}\n\
             prefixes:     {}\n\
             store:        {}\n\
             catch-up:     commands younger than {} run after a reconnect\n\
             audit:        {}\n\
             environments: {}",
            rc.url,
            rc.username.as_deref().unwrap_or("(learnt from the token)"),
            rc.auth_method(),
            rc.rooms
                .iter()
                .map(|r| format!("#{}", r.trim_start_matches('#')))
                .collect::<Vec<_>>()
                .join(", "),
            rc.alerts_channel.trim_start_matches('#'),
            self.bot.prefixes.join(" "),
            self.bot.store_path.display(),
            humantime_serde::re::humantime::format_duration(self.bot.catch_up_max_age),
            match (self.audit_refusal(), &self.audit.key) {
                (Some(why), _) => format!("NOT READY: {why}"),
                (None, Some(_)) => format!(
                    "keyed chain (ROCKETOPS_AUDIT_KEY); anchor {}",
                    self.audit
                        .room
                        .as_deref()
                        .map(|r| format!(
                            "posted to #{} and exported as metrics",
                            r.trim_start_matches('#')
                        ))
                        .unwrap_or_else(|| "exported as metrics".into())
                ),
                (None, None) => "hash chain without a key (set ROCKETOPS_AUDIT_KEY)".into(),
            },
            if self.environments.is_empty() {
                "(none)".to_string()
            } else {
                self.environments
                    .iter()
                    .map(|(n, e)| {
                        let place = match (&e.kubeconfig, &e.context) {
                            (Some(k), Some(c)) => format!("{} context {c}", k.display()),
                            (Some(k), None) => k.display().to_string(),
                            (None, Some(c)) => format!("context {c}"),
                            (None, None) => "in-cluster or default kubeconfig".into(),
                        };
                        let prod = if e.is_production(n) {
                            ", production"
                        } else {
                            ""
                        };
                        format!("{n} (namespace {}, {place}{prod})", e.namespace_or(n))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ) + &self.backup_summary()
            + &self.policy_summary()
    }

    /// Per environment: what a change needs before it runs (confirmation, approvers).
    fn policy_summary(&self) -> String {
        let mut out = String::new();
        for (n, e) in &self.environments {
            let confirm = e.policy.confirm.unwrap_or_else(|| e.is_production(n));
            let approvals = match e.policy.approvals {
                0 => "no approval".to_string(),
                1 => "approved by 1 other person".to_string(),
                a => format!("approved by {a} different people, none of them the requester"),
            };
            out.push_str(&format!(
                "\npolicy {n}:    changes {}, {approvals}",
                if confirm {
                    "confirmed by the requester"
                } else {
                    "unconfirmed"
                }
            ));
        }
        out
    }

    /// Per environment: the backup engine and volume, retention, and schedules.
    fn backup_summary(&self) -> String {
        let mut out = String::new();
        for (n, e) in &self.environments {
            let b = &e.backup;
            let r = b.retention;
            let schedules: Vec<String> = e
                .schedule
                .entries()
                .into_iter()
                .map(|(k, expr)| format!("{k} `{expr}`"))
                .collect();
            out.push_str(&format!(
                "\nbackups {n}:   {} on volume {}, keep {} daily / {} weekly / {} monthly; schedules: {}{}",
                b.engine.name(),
                b.claim_or(e),
                r.daily,
                r.weekly,
                r.monthly,
                if schedules.is_empty() {
                    "none".to_string()
                } else {
                    schedules.join(", ")
                },
                e.schedule
                    .timezone
                    .as_deref()
                    .filter(|_| !schedules.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ));
            out.push_str(&format!(
                "\noff-site {n}:  {}",
                match &b.offsite {
                    Some(o) => format!(
                        "ON: every backup copied, encrypted, to bucket `{}` at {}",
                        o.bucket, o.endpoint
                    ),
                    None => "off".into(),
                }
            ));
            if let Some(when) = &e.schedule.refresh {
                out.push_str(&format!(
                    "\nrefresh {n}:   ON: {n}'s data is REPLACED by {}'s newest backup at `{when}`",
                    e.schedule
                        .refresh_from
                        .as_deref()
                        .unwrap_or("(no refresh_from)")
                ));
            }
        }
        out
    }
}

/// A DNS-1123 label, as namespaces and most object names are.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Rocket.Chat's default username and channel-name rule.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `[rocketchat]`: the URL, the credentials, names, timeouts and limits.
fn rocketchat(p: &mut Problems<'_>, rc: &RocketChatConfig, secrets_present: bool) {
    let mut bad = |key: &str, message: String| p.bad(key, message);
    match url::Url::parse(&rc.url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            if u.host_str().is_none() {
                bad("rocketchat.url", format!("`{}` has no host", rc.url));
            }
        }
        Ok(u) => bad(
            "rocketchat.url",
            format!("scheme `{}` is not http or https", u.scheme()),
        ),
        Err(e) => bad("rocketchat.url", format!("`{}` is not a URL: {e}", rc.url)),
    }
    if secrets_present && rc.token.is_none() && rc.password.is_none() {
        bad(
            "rocketchat",
            "no credentials: set `token` (or ROCKETOPS_RC_TOKEN), or `username` with `password` (or ROCKETOPS_RC_PASSWORD)".into(),
        );
    }
    if rc.password.is_some() && rc.token.is_none() && rc.username.is_none() {
        bad(
            "rocketchat.username",
            "a password login needs `username`".into(),
        );
    }
    if let Some(u) = &rc.username
        && !valid_name(u)
    {
        bad(
            "rocketchat.username",
            format!("`{u}` is not a valid Rocket.Chat username"),
        );
    }
    for room in &rc.rooms {
        if !valid_name(room.trim_start_matches('#')) {
            bad(
                "rocketchat.rooms",
                format!("`{room}` is not a valid channel name"),
            );
        }
    }
    if !valid_name(rc.alerts_channel.trim_start_matches('#')) {
        bad(
            "rocketchat.alerts_channel",
            format!("`{}` is not a valid channel name", rc.alerts_channel),
        );
    }
    if rc.ping_interval.is_zero() {
        bad("rocketchat.ping_interval", "must be more than zero".into());
    }
    if rc.ping_timeout.is_zero() {
        bad("rocketchat.ping_timeout", "must be more than zero".into());
    }
    if rc.call_timeout.is_zero() {
        bad("rocketchat.call_timeout", "must be more than zero".into());
    }
    if rc.reconnect_min > rc.reconnect_max {
        bad(
            "rocketchat.reconnect_min",
            "must not exceed `reconnect_max`".into(),
        );
    }
    if rc.max_message_len < 100 {
        bad(
            "rocketchat.max_message_len",
            format!("{} is too small (at least 100)", rc.max_message_len),
        );
    }
}

/// One `[environments.NAME]`: names Kubernetes accepts, bounds, backups, schedules.
fn environment(p: &mut Problems<'_>, config: &Config, name: &str, env: &EnvironmentConfig) {
    let mut bad = |key: &str, message: String| p.bad(key, message);
    let key = format!("environments.{name}");
    if !dns_label(name) {
        bad(
            &key,
            format!("`{name}` is not a valid environment name (lowercase letters, digits and `-`)"),
        );
    }
    if let Some(ns) = &env.namespace
        && !dns_label(ns)
    {
        bad(
            &format!("{key}.namespace"),
            format!("`{ns}` is not a valid namespace"),
        );
    }
    if !dns_label(&env.deployment) {
        bad(
            &format!("{key}.deployment"),
            format!("`{}` is not a valid Deployment name", env.deployment),
        );
    }
    if env.min_replicas > env.max_replicas {
        bad(
            &format!("{key}.min_replicas"),
            format!(
                "{} is more than max_replicas ({})",
                env.min_replicas, env.max_replicas
            ),
        );
    }
    if env.policy.approvals > policy::MAX_APPROVALS {
        bad(
            &format!("{key}.policy.approvals"),
            format!(
                "{} is not a number of approvers anyone can gather (at most {})",
                env.policy.approvals,
                policy::MAX_APPROVALS
            ),
        );
    }
    if let Some(p) = &env.kubeconfig
        && p.as_os_str().is_empty()
    {
        bad(&format!("{key}.kubeconfig"), "must not be empty".into());
    }
    for (k, v) in [
        ("claim", env.backup.claim.as_ref()),
        ("secret", env.backup.secret.as_ref()),
    ] {
        if let Some(v) = v
            && !dns_label(v)
        {
            bad(
                &format!("{key}.backup.{k}"),
                format!("`{v}` is not a valid Kubernetes name"),
            );
        }
    }
    if env.backup.retention.daily == 0 {
        bad(
            &format!("{key}.backup.retention"),
            "`daily` must be at least 1, so that the newest backup is always kept".into(),
        );
    }
    if let Some(c) = &env.backup.report_channel
        && !valid_name(c.trim_start_matches('#'))
    {
        bad(
            &format!("{key}.backup.report_channel"),
            format!("`{c}` is not a valid channel name"),
        );
    }
    if let Some(tz) = &env.schedule.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        bad(
            &format!("{key}.schedule.timezone"),
            format!("`{tz}` is not a time zone (use an IANA name like \"Europe/Berlin\")"),
        );
    }
    match (&env.schedule.refresh, &env.schedule.refresh_from) {
        (Some(_), None) => bad(
            &format!("{key}.schedule.refresh"),
            "needs `refresh_from`, the environment whose backup it restores".into(),
        ),
        (Some(_), Some(_)) if env.is_production(name) => bad(
            &format!("{key}.schedule.refresh"),
            format!(
                "{name} is production: its data is never replaced on a schedule (run `restore` by hand)"
            ),
        ),
        (_, Some(src)) if !config.environments.contains_key(src) || src == name => bad(
            &format!("{key}.schedule.refresh_from"),
            format!("`{src}` is not another configured environment"),
        ),
        _ => {}
    }
    for (kind, expr) in env.schedule.entries() {
        if let Err(e) = expr.cron() {
            bad(&format!("{key}.schedule.{kind}"), e.to_string());
        }
    }
}

/// `[bot]` and `[alerts]`: prefixes and quiet hours.
fn bot_and_alerts(p: &mut Problems<'_>, config: &Config) {
    let mut bad = |key: &str, message: String| p.bad(key, message);
    if let Some(q) = &config.alerts.quiet_hours
        && q.window().is_none()
    {
        bad(
            "alerts.quiet_hours",
            format!("`{}` is not a window like \"22:00-07:00\"", q.as_str()),
        );
    }
    let ha = &config.ha;
    if ha.lease_duration <= ha.renew_deadline {
        bad(
            "ha.lease_duration",
            format!(
                "must be longer than ha.renew_deadline ({}), or a standby could take over while the leader still acts",
                humantime_serde::re::humantime::format_duration(ha.renew_deadline)
            ),
        );
    }
    if ha.renew_deadline.as_secs_f64() <= 1.2 * ha.retry_period.as_secs_f64() {
        bad(
            "ha.renew_deadline",
            format!(
                "must be more than 1.2 × ha.retry_period ({}), so that a leader can try to renew more than once",
                humantime_serde::re::humantime::format_duration(ha.retry_period)
            ),
        );
    }
    if ha.retry_period.is_zero() {
        bad("ha.retry_period", "must be more than 0".into());
    }
    if !dns_label(&ha.lease_name) {
        bad(
            "ha.lease_name",
            format!(
                "`{}` is not a Kubernetes name (lowercase letters, digits, `-`)",
                ha.lease_name
            ),
        );
    }
    if config.bot.prefixes.is_empty() {
        bad(
            "bot.prefixes",
            "needs at least one prefix, e.g. \"!\"".into(),
        );
    }
    for p in &config.bot.prefixes {
        if p.is_empty() || p.chars().any(char::is_whitespace) || p.chars().count() > 3 {
            bad(
                "bot.prefixes",
                format!("`{p}` must be 1 to 3 characters without spaces"),
            );
        }
    }
}
