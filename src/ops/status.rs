//! The read-only answers about environments: `status` (one, all, or a summary past 20) and the failed operations `alerts list` shows.

use super::*;

/// Above this many environments, a bare `status` is a summary: counts, and only the
/// environments that need attention.
const STATUS_SUMMARY_OVER: usize = 20;

pub(super) async fn status<C: Chat>(ctx: &Context<'_, C>, env: Option<&str>) -> String {
    let envs: Vec<String> = match env {
        Some(e) => vec![e.to_string()],
        None => ctx.envs(),
    };
    if envs.is_empty() {
        return "No environments are configured.".into();
    }
    // Environments are read concurrently: 500 of them answer within a second.
    let mut lines: Vec<(String, bool)> = Vec::with_capacity(envs.len());
    for chunk in envs.chunks(32) {
        let read = chunk.iter().map(|e| status_line(ctx, e));
        lines.extend(futures_util::future::join_all(read).await);
    }
    let text = if env.is_some() || lines.len() <= STATUS_SUMMARY_OVER {
        lines
            .into_iter()
            .map(|(l, _)| l)
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        summary(&lines)
    };
    match crate::telemetry::leading() {
        Some(term) => format!("{text}\n{}", leader_line(&term)),
        None => text,
    }
}

/// Pure: who answers, with replicas: the leading pod and its term.
fn leader_line((pod, epoch): &(String, u64)) -> String {
    format!("_Answered by the leader, pod `{pod}` (term {epoch}); the other replica stands by._")
}

/// Pure: the summary of many environments' status lines (`true`: fine).
fn summary(lines: &[(String, bool)]) -> String {
    let attention: Vec<&String> = lines.iter().filter(|(_, ok)| !ok).map(|(l, _)| l).collect();
    let locked = lines
        .iter()
        .filter(|(l, _)| l.contains("🔒 locked"))
        .count();
    let running = lines
        .iter()
        .filter(|(l, _)| l.contains(" · running #"))
        .count();
    let mut out = format!(
        "*{} environments*: {} fine, {} need attention{}{}.",
        lines.len(),
        lines.len() - attention.len(),
        attention.len(),
        if locked > 0 {
            format!(", {locked} locked")
        } else {
            String::new()
        },
        if running > 0 {
            format!(", {running} running an operation")
        } else {
            String::new()
        }
    );
    for l in attention.iter().take(STATUS_SUMMARY_OVER) {
        out.push_str(&format!("\n{l}"));
    }
    if attention.len() > STATUS_SUMMARY_OVER {
        out.push_str(&format!(
            "\n… and {} more",
            attention.len() - STATUS_SUMMARY_OVER
        ));
    }
    out.push_str("\n`status ENV` shows one environment in full.");
    out
}

/// One environment's status line, and whether all is well there (app and database ready, no
/// rollout stuck, the cluster reachable).
async fn status_line<C: Chat>(ctx: &Context<'_, C>, env: &str) -> (String, bool) {
    let env = env.to_string();
    let mut ok = true;
    let e = ctx.config.environment(&env);
    let mut line = format!("*{env}*");
    match ctx.clusters.get(&env) {
        Some(c) => {
            match c.deployment(&e.deployment).await {
                Ok(d) => {
                    let version = rollout::current_image(&d, Some(e.container()))
                        .map(|i| crate::cluster::split_image(&i).1.to_string())
                        .unwrap_or_else(|| "?".into());
                    let st = d.status.clone().unwrap_or_default();
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    let state = match rollout::rollout_state(&d) {
                        RolloutState::Complete => String::new(),
                        other => {
                            ok = false;
                            format!(", {}", other.describe(&e.deployment))
                        }
                    };
                    if st.ready_replicas.unwrap_or(0) < want {
                        ok = false;
                    }
                    line.push_str(&format!(
                        ": {} {version}, {}/{want} ready{state}",
                        e.deployment,
                        st.ready_replicas.unwrap_or(0)
                    ));
                }
                Err(err) => {
                    ok = false;
                    line.push_str(&format!(": {} unavailable ({err})", e.deployment))
                }
            }
            if let Ok(s) = c.statefulset(&e.database).await {
                let st = s.status.clone().unwrap_or_default();
                let want = s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0);
                if st.ready_replicas.unwrap_or(0) < want {
                    ok = false;
                }
                line.push_str(&format!(
                    " · {} {}/{} ready",
                    e.database,
                    st.ready_replicas.unwrap_or(0),
                    s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0)
                ));
            }
        }
        None => {
            ok = false;
            line.push_str(": no cluster connection configured")
        }
    }
    if let Ok(Some(l)) = ctx.store.env_lock(&env) {
        line.push_str(&format!(
            " · 🔒 locked by @{}{}",
            l.by,
            l.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ));
    }
    let mut running: Vec<OpId> = [
        crate::journal::LockKey::env(&env),
        crate::journal::LockKey::backups(&env),
    ]
    .iter()
    .filter_map(|k| ctx.store.env_op(k).ok().flatten())
    .collect();
    running.dedup();
    for op in running
        .into_iter()
        .filter_map(|id| ctx.store.get_op(id).ok().flatten())
    {
        line.push_str(&format!(
            " · running #{} {} by {}",
            op.id,
            op.command,
            who(&op.user)
        ));
    }
    let backups = catalog::list(ctx.store, Some(&env));
    if let Some(b) = backups.first() {
        line.push_str(&format!(
            " · last backup {} ({})",
            catalog::ago(b.finished_ms, ctx.clock.now_ms()),
            catalog::size(b.bytes)
        ));
    }
    if let Some(v) = backups
        .iter()
        .filter_map(|b| b.verify.as_ref())
        .max_by_key(|v| v.at_ms)
    {
        line.push_str(&format!(
            " · last verify {} {}{}",
            if v.ok { "✓" } else { "✗" },
            catalog::ago(v.at_ms, ctx.clock.now_ms()),
            v.restore_secs
                .map(|s| format!(" (restore {s} s)"))
                .unwrap_or_default()
        ));
    }
    let last = ctx
        .store
        .recent_ops(Some(&env), 50)
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.command.starts_with("deploy ") && o.state == crate::store::OpState::Succeeded);
    if let Some(d) = last {
        line.push_str(&format!(
            " · last deploy #{} by {} {}",
            d.id,
            who(&d.user),
            crate::clock::ago(d.finished_ms.unwrap_or(d.started_ms), ctx.clock.now_ms())
        ));
    }
    (line, ok)
}

/// How long `alerts list` keeps showing the 🚨 an operation's failure posted.
const ALERTED_FAILURES_FOR_MS: i64 = 24 * 3_600_000;

/// The operations whose failure was alerted in the last day, for `alerts list`: they are not
/// incidents (nothing to acknowledge; each closed when its operation ended), but a reader who saw
/// the 🚨 finds it here. Empty, or a block that starts on a new line.
pub(super) fn alerted_failures<C: Chat>(ctx: &Context<'_, C>, now: i64) -> String {
    let ops = ctx.store.recent_ops(None, 200).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the journal could not be read for `alerts list`");
        Vec::new()
    });
    let lines: Vec<String> = ops
        .iter()
        .filter(|r| {
            matches!(
                r.state,
                crate::journal::OpState::Failed | crate::journal::OpState::RolledBack
            )
        })
        .filter(|r| {
            r.finished_ms
                .is_some_and(|f| now - f <= ALERTED_FAILURES_FOR_MS)
        })
        .filter(|r| ctx.sees(&r.env))
        .map(|r| {
            let mins = (now - r.finished_ms.unwrap_or(now)).max(0) / 60_000;
            format!(
                "• #{} {} — {} {mins} min ago: {}",
                r.id,
                r.command,
                r.state.describe(),
                crate::redact::outside(r.summary.as_deref().unwrap_or("no summary")),
            )
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n*Failed operations alerted in the last 24 h* (closed: each ended; `status ENV` shows the environment now)\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_line_names_the_pod_and_its_term() {
        let line = leader_line(&("rocketops-7d9f-x2".into(), 4));
        assert!(
            line.contains("`rocketops-7d9f-x2`") && line.contains("term 4"),
            "{line}"
        );
    }

    #[test]
    fn a_status_of_many_environments_counts_them_and_lists_only_those_needing_attention() {
        let mut lines: Vec<(String, bool)> = (0..498)
            .map(|i| (format!("*env-{i:04}*: rocketchat 6.5.0, 3/3 ready"), true))
            .collect();
        lines.push((
            "*env-0498*: rocketchat 7.0.0, 1/3 ready · 🔒 locked by @alice".into(),
            false,
        ));
        lines.push((
            "*env-0499*: rocketchat unavailable (timed out)".into(),
            false,
        ));
        lines[3]
            .0
            .push_str(" · running #7 backup now env-0003 by @bob");
        assert_eq!(
            summary(&lines),
            "*500 environments*: 498 fine, 2 need attention, 1 locked, 1 running an operation.\n\
             *env-0498*: rocketchat 7.0.0, 1/3 ready · 🔒 locked by @alice\n\
             *env-0499*: rocketchat unavailable (timed out)\n\
             `status ENV` shows one environment in full."
        );
        // A long list of trouble is cut, and says how much was left out.
        let bad: Vec<(String, bool)> = (0..30).map(|i| (format!("*e{i}*: down"), false)).collect();
        let s = summary(&bad);
        assert_eq!(s.lines().count(), 1 + STATUS_SUMMARY_OVER + 2, "{s}");
        assert!(s.contains("… and 10 more"), "{s}");
    }
}
