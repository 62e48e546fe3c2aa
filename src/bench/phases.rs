//! The benchmark's measuring phases beside the message-to-answer run: alerts, deploys through chat, pings while deploys report, and the store's writes per command.

use super::*;

/// Times the store's writes for one command, `n` times, on a store at `path` (a keyed audit log,
/// as production runs): what `handle` and the audit do on the runtime threads per message.
/// Percentiles p50 and p99.
pub(super) fn store_writes(
    path: &std::path::Path,
    n: usize,
) -> Result<(Duration, Duration), BenchError> {
    let setup = |e: crate::store::StoreError| BenchError::Setup(e.to_string());
    let store = crate::store::Store::open(path).map_err(setup)?;
    store.set_audit_key(Some(b"bench-audit-key-0123456789abcdef"));
    let mut took = Vec::with_capacity(n);
    let base = chrono::Utc::now().timestamp_millis();
    for i in 0..n {
        let id = format!("bench-message-{i}");
        let now = base + i as i64;
        let started = Instant::now();
        store.mark_seen(&id, now).map_err(setup)?;
        store
            .begin_handling(&id, &serde_json::json!({"id": id, "room_id": "bench"}))
            .map_err(setup)?;
        store
            .audit(&crate::store::AuditEntry {
                at_ms: now,
                user: "bench0".into(),
                room: "@bench0".into(),
                text: "/ping".into(),
                command: "ping".into(),
                decision: crate::store::AuditDecision::AllowedReadOnly,
                outcome: Some("answered".into()),
                ..Default::default()
            })
            .map_err(setup)?;
        store.end_handling(&id).map_err(setup)?;
        store.advance_mark("bench", now).map_err(setup)?;
        took.push(started.elapsed());
    }
    took.sort();
    drop(store);
    let _ = std::fs::remove_dir_all(path);
    Ok((percentile(&took, 0.50), percentile(&took, 0.99)))
}

/// Fails `n` Jobs in the `bench` namespace and times each alert from the moment the simulator marks the Job failed.
pub(super) async fn alert_phase(
    sim: &RocketChatSim,
    kube: &crate::sandbox::kube::KubeSim,
    n: usize,
) -> Result<(Vec<Duration>, usize), BenchError> {
    use crate::sandbox::kube::JobScript;
    kube.script_job(
        "alert-bench-",
        JobScript {
            exit_code: 1,
            runtime: Duration::from_millis(50),
            ..JobScript::default()
        },
    );
    let mut changes = kube.changes();
    let mut events = sim.events();
    let failed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let f2 = failed_at.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(c) = changes.recv().await {
            if c.plural != "jobs" {
                continue;
            }
            let failed = c.object["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == "Failed" && x["status"] == "True")
                });
            if failed {
                let name = c.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                f2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    for i in 0..n {
        let job = serde_json::json!({"metadata": {"name": format!("alert-bench-{i}")}, "spec": {"backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox:1"}]}}}});
        kube.create("jobs", "bench", job)
            .map_err(|e| BenchError::Setup(e.status().to_string()))?;
    }
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n && Instant::now() < deadline {
        let Ok(ev) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        if let Ok(SimEvent::Message {
            message,
            edited: false,
            ..
        }) = ev
        {
            let text = message["msg"].as_str().unwrap_or_default();
            if message["u"]["username"] != "rocketops"
                || !text.starts_with('🚨') && !text.contains("🚨")
            {
                continue;
            }
            if let Some(name) = text
                .split("job/")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                let at = Instant::now();
                if seen.insert(name.to_string())
                    && let Some(failed) = failed_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(name)
                {
                    lat.push(at.saturating_duration_since(*failed));
                }
            }
        }
    }
    watcher.abort();
    lat.sort();
    let measured = lat.len();
    Ok((lat, measured))
}

pub(super) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Alternates two versions: `n` deploys by chat in `bench`, `n` by the cluster layer in `direct`.
pub(super) async fn deploy_phase(
    sim: &RocketChatSim,
    kube: &crate::sandbox::kube::KubeSim,
    kubeconfig: &std::path::Path,
    n: usize,
) -> Result<(Duration, Duration), BenchError> {
    use crate::sandbox::kube::seed::ROCKETCHAT_REPO;
    let _ = kube;
    let versions = ["7.0.0", "6.5.0"];
    let mut events = sim.events();
    let mut chat = Vec::new();
    for i in 0..n {
        let v = versions[i % 2];
        let started = Instant::now();
        sim.post("alice", "#ops", &format!("/deploy bench {v}"))
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let deadline = started + Duration::from_secs(60);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.recv())
                .await
                .map_err(|_| BenchError::Setup(format!("deploy {v} did not finish")))?;
            match ev {
                Ok(SimEvent::Message { message, .. }) => {
                    let t = message["msg"].as_str().unwrap_or_default();
                    if message["u"]["username"] == "rocketops"
                        && (t.starts_with('✅') || t.starts_with('❌') || t.starts_with('↩'))
                        && t.contains(&format!("deploy bench {v}"))
                    {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    return Err(BenchError::Setup("simulator stopped".into()));
                }
            }
        }
        chat.push(started.elapsed());
    }
    let cluster = crate::cluster::Cluster::from_kubeconfig(kubeconfig, Some("direct"), None)
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut direct = Vec::new();
    for i in 0..n {
        let v = versions[i % 2];
        let started = Instant::now();
        cluster
            .set_image(
                "rocketchat",
                "rocketchat",
                &format!("{ROCKETCHAT_REPO}:{v}"),
                "bench",
            )
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        cluster
            .watch_rollout("rocketchat", None, Duration::from_secs(60))
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        direct.push(started.elapsed());
    }
    Ok((median(chat), median(direct)))
}

/// Pings from every user at `rate` until `stop`, timing each answer with a listener of its own
/// (sequence numbers from 10^9, apart from the other phases').
pub(super) async fn ping_while(
    sim: RocketChatSim,
    users: Vec<String>,
    rate: u32,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Duration> {
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let got: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut events = sim.events();
    let listener = {
        let (sent, got) = (sent.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(SimEvent::Message {
                        message,
                        edited: false,
                        ..
                    }) => {
                        let Some(seq) = pong_of(&message) else {
                            continue;
                        };
                        let at = sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq);
                        if let Some(at) = at {
                            got.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(at.elapsed());
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut seq = 1_000_000_000u64;
    while !stop.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        seq += 1;
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, Instant::now());
        let user = &users[(seq as usize) % users.len().max(1)];
        let _ = sim.post(user, "@rocketops", &format!("ping {seq}"));
    }
    // The last answers arrive.
    let drain = Instant::now();
    while !sent.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
        && drain.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.abort();
    std::mem::take(&mut *got.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The number in the bot's `pong N`, if `message` is one.
pub(super) fn pong_of(message: &serde_json::Value) -> Option<u64> {
    if message["u"]["username"] != "rocketops" {
        return None;
    }
    message["msg"].as_str()?.strip_prefix("pong ")?.parse().ok()
}
