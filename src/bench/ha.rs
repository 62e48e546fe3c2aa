//! The benchmark's high-availability phase: two replica processes on a Lease while the leader is killed, cut off from the API and slowed; reports takeover times and counts what was lost, run twice, posted twice, written by a deposed leader or left locked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;

use super::BenchError;
use super::chaos::{ENVS, command, confirm_restores, settle, start_simulators, write_config};
use crate::sandbox::kube::{KubeSim, Partition, WriteRecord};
use crate::sandbox::rocketchat::RocketChatSim;

/// The bot's own namespace in the phase.
const NS: &str = "rocketops";
/// The Lease timings of the phase: the defaults (15/10/2 s) divided by [`SCALE`].
const LEASE_MS: u64 = 3000;
const RENEW_MS: u64 = 2000;
const RETRY_MS: u64 = 400;
const SCALE: f64 = 5.0;

/// The phase's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    /// Run the high-availability phase instead of the others: two replicas, one Lease.
    #[arg(long)]
    pub ha: bool,
    /// Commands to send, each from its own user.
    #[arg(id = "ha-commands", long = "ha-commands", default_value_t = 48)]
    pub commands: usize,
    /// Times the leader is killed with SIGKILL (then started again as a standby).
    #[arg(id = "ha-kills", long = "ha-kills", default_value_t = 4)]
    pub kills: usize,
    /// Times the leader is cut off from the API server while its chat socket stays up.
    #[arg(id = "ha-partitions", long = "ha-partitions", default_value_t = 2)]
    pub partitions: usize,
    /// Times the API slows down for the leader: alternately shorter than the renew deadline (no
    /// change of leader expected) and longer (one change expected).
    #[arg(id = "ha-delays", long = "ha-delays", default_value_t = 2)]
    pub delays: usize,
    /// Seed of the random choices, for a run that can be repeated.
    #[arg(id = "ha-seed", long = "ha-seed")]
    pub seed: Option<u64>,
}

/// What the phase found. Every count from `lost` on must be 0.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HaReport {
    pub seed: u64,
    pub commands: usize,
    pub kills: usize,
    pub partitions: usize,
    pub delays: usize,
    /// Changes of leader measured (kills, partitions and long delays).
    pub takeovers: usize,
    /// From the fault to the new leader's first write of the state, at the phase's timings.
    pub takeover_p50_ms: u64,
    pub takeover_p99_ms: u64,
    /// The same at the default timings (15/10/2 s): the lease-bound part scales, the rest does not.
    pub default_takeover_p50_ms: u64,
    pub default_takeover_p99_ms: u64,
    pub seconds: f64,
    /// Operations still running at the end.
    pub lost: usize,
    /// Commands that became more than one operation.
    pub run_twice: usize,
    /// Commands answered more than once (a progress message or an answer posted twice).
    pub double_posts: usize,
    /// Writes of state objects accepted with an epoch older than one accepted before.
    pub deposed_writes_accepted: usize,
    /// Locks held by an operation that is not running.
    pub locks_held: usize,
    /// Slowdowns shorter than the renew deadline that changed the leader anyway.
    pub needless_changes: usize,
    /// Commands with no answer at all.
    pub unanswered: usize,
    /// API writes of state objects per command, the pings included (all of them: answers,
    /// operations' steps, takeovers).
    pub state_writes_per_command: f64,
    /// Message-to-answer latency of `ping` with the state in Kubernetes, before any fault: p50
    /// and p99 of [`PINGS`] sent one after another.
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
}

/// Pings sent before the faults (the first, which warms up, is not timed).
const PINGS: u64 = 41;

impl HaReport {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.run_twice == 0
            && self.double_posts == 0
            && self.deposed_writes_accepted == 0
            && self.locks_held == 0
            && self.needless_changes == 0
            && self.unanswered == 0
    }

    /// The figures as one JSON object (`--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl fmt::Display for HaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "high availability (seed {}): {} commands, {} kills, {} partitions, {} slowdowns in {:.0} s",
            self.seed, self.commands, self.kills, self.partitions, self.delays, self.seconds
        )?;
        writeln!(
            f,
            "  takeover p50 {} ms, p99 {} ms at lease/renew/retry {}/{}/{} ms ({} measured); at the default 15/10/2 s: p50 {} ms, p99 {} ms",
            self.takeover_p50_ms,
            self.takeover_p99_ms,
            LEASE_MS,
            RENEW_MS,
            RETRY_MS,
            self.takeovers,
            self.default_takeover_p50_ms,
            self.default_takeover_p99_ms
        )?;
        writeln!(
            f,
            "  ping answered in p50 {:.2} ms, p99 {:.2} ms (state in Kubernetes); state writes per command {:.1}",
            self.ping_p50_ms, self.ping_p99_ms, self.state_writes_per_command
        )?;
        write!(
            f,
            "  lost {}, run twice {}, double posts {}, deposed writes accepted {}, locks held {}, needless leader changes {}, unanswered {}",
            self.lost,
            self.run_twice,
            self.double_posts,
            self.deposed_writes_accepted,
            self.locks_held,
            self.needless_changes,
            self.unanswered
        )
    }
}

/// Pure: accepted writes of state objects whose epoch is older than one accepted before them
/// (writes of a deposed leader: none when fencing works).
pub fn deposed_writes(log: &[WriteRecord]) -> Vec<WriteRecord> {
    let mut newest = 0u64;
    let mut out = Vec::new();
    for r in log {
        let Some(epoch) = r.epoch.as_deref().and_then(|e| e.parse::<u64>().ok()) else {
            continue;
        };
        if !(200..300).contains(&r.status) {
            continue;
        }
        if epoch < newest {
            out.push(r.clone());
        }
        newest = newest.max(epoch);
    }
    out
}

/// Pure: the `q` quantile of `v` (sorted here).
fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Pure: a takeover measured at the scaled timings, at the default ones: the part bound by the
/// Lease (up to lease duration plus a retry) scales, the rest (reading the state, logging in to
/// chat) does not.
fn at_default_timings(ms: u64) -> u64 {
    let bound = LEASE_MS + RETRY_MS;
    let scaled = ms.min(bound);
    (scaled as f64 * SCALE) as u64 + ms.saturating_sub(bound)
}

/// A fault done to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Partition,
    /// A slowdown; `true`: longer than the renew deadline.
    Delay(bool),
}

/// The two replica processes.
struct Replicas {
    cfg: String,
    children: BTreeMap<String, Child>,
}

impl Replicas {
    fn spawn(&mut self, pod: &str) -> Result<(), BenchError> {
        let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
        let child = tokio::process::Command::new(exe)
            .args(["run", "--config", &self.cfg])
            .env("POD_NAME", pod)
            .env("ROCKETOPS_RC_PASSWORD", "rocketops")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::Spawn)?;
        self.children.insert(pod.to_string(), child);
        Ok(())
    }

    async fn stop_all(&mut self) {
        for child in self.children.values_mut() {
            if let Some(pid) = child.id() {
                // SIGTERM: the leader hands over and the standby stops.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for child in self.children.values_mut() {
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// The pod holding the Lease and the Lease's transitions.
fn lease(kube: &KubeSim) -> (Option<String>, u64) {
    match kube.get("leases", NS, "rocketops-leader") {
        Ok(l) => (
            l["spec"]["holderIdentity"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|id| crate::ha::pod_of(id).to_string()),
            l["spec"]["leaseTransitions"].as_u64().unwrap_or(0),
        ),
        Err(_) => (None, 0),
    }
}

/// Waits for a leader other than `old` that has written the state under its epoch; returns when.
async fn new_leader(kube: &KubeSim, old: Option<&str>, limit: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let (holder, transitions) = lease(kube);
        if holder.is_some() && holder.as_deref() != old {
            let epoch = transitions.to_string();
            let written = kube.write_log().iter().any(|r| {
                r.name == "rocketops-state-0"
                    && (200..300).contains(&r.status)
                    && r.epoch.as_deref() == Some(epoch.as_str())
            });
            if written {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The `[telemetry]` and `[ha]` tables of the replicas' configuration.
fn ha_tables(dir: &Path) -> String {
    format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[ha]\nstore = \"kubernetes\"\nkubeconfig = \"{}\"\ncontext = \"{}\"\nnamespace = \"{NS}\"\nlease_duration = \"{LEASE_MS}ms\"\nrenew_deadline = \"{RENEW_MS}ms\"\nretry_period = \"{RETRY_MS}ms\"\n",
        dir.join("kubeconfig").display(),
        ENVS[0],
    )
}

/// Runs the phase.
pub async fn run(args: &HaArgs) -> Result<HaReport, BenchError> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let (sim, kube, users) = start_simulators(Duration::from_millis(200), args.commands).await?;
    let setup =
        |e: crate::sandbox::kube::store::ApiError| BenchError::Setup(e.status().to_string());
    kube.create(
        "namespaces",
        "",
        serde_json::json!({"metadata": {"name": NS}}),
    )
    .map_err(setup)?;
    let dir = std::env::temp_dir().join(format!("rocketops-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(e.to_string()))?;
    let cfg = write_config(&dir, &sim, &kube, &ha_tables(&dir))?;
    let mut replicas = Replicas {
        cfg,
        children: BTreeMap::new(),
    };
    let started = Instant::now();
    replicas.spawn("r0")?;
    if new_leader(&kube, None, Duration::from_secs(60))
        .await
        .is_none()
    {
        return Err(BenchError::BotNotReady);
    }
    // Its read marks start when it first logs in: commands before that are history to it.
    let ready = Instant::now();
    while sim.sessions_of("rocketops") == 0 {
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::BotNotReady);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicas.spawn("r1")?;
    let (p50, p99) = ping_latency(&sim).await?;
    let confirmer = tokio::spawn(confirm_restores(sim.events(), sim.clone()));

    let mut faults: Vec<Fault> = Vec::new();
    faults.extend(std::iter::repeat_n(Fault::Kill, args.kills));
    faults.extend(std::iter::repeat_n(Fault::Partition, args.partitions));
    faults.extend((0..args.delays).map(|i| Fault::Delay(i % 2 == 1)));
    rng.shuffle(&mut faults);
    let every = (users.len() / (faults.len() + 1)).max(1);
    let mut report = HaReport {
        seed,
        commands: users.len(),
        ping_p50_ms: p50,
        ping_p99_ms: p99,
        ..HaReport::default()
    };
    let mut takeovers: Vec<u64> = Vec::new();
    let mut pending = faults.into_iter();
    for (i, user) in users.iter().enumerate() {
        let _ = sim.post(user, "@rocketops", &command(i, &mut rng));
        tokio::time::sleep(Duration::from_millis(rng.u64(50..250))).await;
        if (i + 1) % every != 0 {
            continue;
        }
        let Some(fault) = pending.next() else {
            continue;
        };
        // The fault strikes whoever leads (after a takeover, once someone does).
        let waited = Instant::now();
        let (leader, transitions) = loop {
            match lease(&kube) {
                (Some(l), t) => break (l, t),
                _ if waited.elapsed() > Duration::from_secs(60) => {
                    return Err(BenchError::Setup("no replica leads".into()));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let agent = format!("{leader}_");
        let t0 = Instant::now();
        match fault {
            Fault::Kill => {
                report.kills += 1;
                if let Some(c) = replicas.children.get_mut(&leader) {
                    let _ = c.kill().await;
                }
            }
            Fault::Partition => {
                report.partitions += 1;
                kube.partition(&agent, Some(Partition::Drop));
            }
            Fault::Delay(long) => {
                report.delays += 1;
                let d = if long {
                    Duration::from_millis(RENEW_MS * 3)
                } else {
                    Duration::from_millis(RENEW_MS / 4)
                };
                kube.set_agent_delay(&agent, d);
                if !long {
                    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
                    kube.set_agent_delay(&agent, Duration::ZERO);
                    if lease(&kube).1 != transitions {
                        report.needless_changes += 1;
                    }
                    continue;
                }
            }
        }
        // Commands keep coming while nobody leads.
        let _ = sim.post(&users[(i + 1) % users.len()], "@rocketops", "ping takeover");
        match new_leader(&kube, Some(&leader), Duration::from_secs(60)).await {
            Some(at) => takeovers.push(at.duration_since(t0).as_millis() as u64),
            None => return Err(BenchError::Setup("no replica took over within 60 s".into())),
        }
        // The old leader has stopped (or was killed); heal and start it again as a standby.
        if let Some(mut c) = replicas.children.remove(&leader)
            && tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .is_err()
        {
            let _ = c.kill().await;
        }
        kube.partition(&agent, None);
        kube.set_agent_delay(&agent, Duration::ZERO);
        replicas.spawn(&leader)?;
    }
    settle(&sim, Duration::from_secs(4), Duration::from_secs(180)).await;
    replicas.stop_all().await;
    confirmer.abort();
    report.seconds = started.elapsed().as_secs_f64();
    report.takeovers = takeovers.len();
    report.takeover_p50_ms = quantile(&mut takeovers, 0.5);
    report.takeover_p99_ms = quantile(&mut takeovers, 0.99);
    report.default_takeover_p50_ms = at_default_timings(report.takeover_p50_ms);
    report.default_takeover_p99_ms = at_default_timings(report.takeover_p99_ms);
    let log = kube.write_log();
    report.deposed_writes_accepted = deposed_writes(&log).len();
    let state_writes = log
        .iter()
        .filter(|r| r.resource == "configmaps" && r.epoch.is_some())
        .count();
    // The pings are commands too.
    report.state_writes_per_command = state_writes as f64 / (users.len() as u64 + PINGS) as f64;
    count(&mut report, &kube, &sim, &users).await?;
    kube.stop();
    sim.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// `ping` after `ping`, each timed from its post to its answer: p50 and p99 in ms.
async fn ping_latency(sim: &RocketChatSim) -> Result<(f64, f64), BenchError> {
    sim.add_user("pinger", &["ops"]);
    let mut events = sim.events();
    let mut took: Vec<u64> = Vec::new();
    for i in 0..PINGS {
        let sent = Instant::now();
        sim.post("pinger", "@rocketops", &format!("ping {i}"))
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Ok(crate::sandbox::rocketchat::SimEvent::Message { message, .. })
                        if super::phases::pong_of(&message) == Some(i) =>
                    {
                        return true;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if answered != Ok(true) {
            return Err(BenchError::Setup(format!("ping {i} got no answer")));
        }
        // The first opens the connections and creates the audit log's first chunk.
        if i > 0 {
            took.push(sent.elapsed().as_micros() as u64);
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok((ms(quantile(&mut took, 0.5)), ms(quantile(&mut took, 0.99))))
}

/// Reads the state, the chat and the cluster after the run.
async fn count(
    r: &mut HaReport,
    kube: &KubeSim,
    sim: &RocketChatSim,
    users: &[String],
) -> Result<(), BenchError> {
    let mut cfg = kube::Config::new(
        kube.url()
            .parse()
            .map_err(|e| BenchError::Setup(format!("{e}")))?,
    );
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).map_err(|e| BenchError::Setup(e.to_string()))?;
    let store = crate::ha::state::KubeState::snapshot(client, NS)
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let ops = store
        .recent_ops(None, 100_000)
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let running: Vec<crate::journal::OpId> = ops
        .iter()
        .filter(|o| o.state == crate::journal::OpState::Running)
        .map(|o| o.id)
        .collect();
    r.lost = running.len();
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for o in &ops {
        *per_user.entry(o.user.as_str()).or_default() += 1;
    }
    r.run_twice = per_user.values().filter(|n| **n > 1).count();
    for u in users {
        let room = sim.direct_room(u, "rocketops").unwrap_or_default();
        let msgs = sim.messages(&room).unwrap_or_default();
        let bot: Vec<&str> = msgs
            .iter()
            .filter(|m| m["u"]["username"] == "rocketops")
            .filter_map(|m| m["msg"].as_str())
            .collect();
        if bot.is_empty() {
            r.unanswered += 1;
            tracing::warn!(user = %u, asked = ?msgs.iter().filter_map(|m| m["msg"].as_str()).collect::<Vec<_>>(), "a command got no answer");
        }
        // An operation's progress message, or any answer, posted twice.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &bot {
            let key = t.lines().next().unwrap_or_default();
            *seen.entry(key).or_default() += 1;
        }
        let progress_twice = ops.iter().filter(|o| o.user == *u).any(|o| {
            let header = format!("*#{} ", o.id);
            bot.iter()
                .filter(|t| t.contains(&header) && !t.contains("type `confirm"))
                .count()
                > 1
        });
        if progress_twice || seen.values().any(|n| *n > 1) {
            r.double_posts += 1;
            tracing::warn!(user = %u, answers = ?bot, "a command answered twice");
        }
    }
    r.locks_held = store
        .held_locks()
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .into_iter()
        .filter(|(_, op)| !running.contains(op))
        .count();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(seq: u64, epoch: Option<&str>, status: u16) -> WriteRecord {
        WriteRecord {
            seq,
            agent: "a".into(),
            verb: "update".into(),
            resource: "configmaps".into(),
            namespace: Some(NS.into()),
            name: "rocketops-state-0".into(),
            status,
            epoch: epoch.map(str::to_string),
        }
    }

    #[test]
    fn a_write_accepted_with_an_older_epoch_after_a_newer_one_counts_as_deposed() {
        let log = [
            write(1, Some("1"), 200),
            write(2, Some("2"), 200),
            write(3, Some("1"), 409),
            write(4, None, 200),
            write(5, Some("1"), 200),
            write(6, Some("2"), 200),
        ];
        assert_eq!(deposed_writes(&log), vec![log[4].clone()]);
        assert_eq!(deposed_writes(&log[..4]), vec![]);
    }

    #[test]
    fn only_the_lease_bound_part_of_a_takeover_scales_to_the_default_timings() {
        assert_eq!(at_default_timings(1000), 5000);
        assert_eq!(at_default_timings(LEASE_MS + RETRY_MS), 17_000);
        assert_eq!(at_default_timings(LEASE_MS + RETRY_MS + 300), 17_300);
    }

    #[test]
    fn quantiles_come_from_the_sorted_figures() {
        assert_eq!(quantile(&mut [5, 1, 3], 0.5), 3);
        assert_eq!(quantile(&mut [5, 1, 3], 0.99), 5);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }
}
