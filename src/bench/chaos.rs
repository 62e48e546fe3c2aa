//! The benchmark's chaos phase: a mix of operations while the bot process is SIGKILLed and restarted at random points, chat sockets drop and the Kubernetes simulator fails writes and drops watches; then it counts what was lost, run twice, duplicated or left behind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::BenchError;
use crate::sandbox::kube::KubeSim;
use crate::sandbox::rocketchat::{RocketChatSim, SimConfig, SimEvent};

/// The chaos phase's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Run the chaos phase instead of the latency, deploy and alert phases.
    #[arg(long)]
    pub chaos: bool,
    /// Commands to send, each from its own user (deploy, rollback, scale, backup, restore, verify).
    #[arg(long = "chaos-ops", default_value_t = 60)]
    pub ops: usize,
    /// Times the bot process is killed with SIGKILL and started again.
    #[arg(long = "chaos-kills", default_value_t = 20)]
    pub kills: usize,
    /// Seed of the random choices (kill points, faults), for a run that can be repeated.
    #[arg(long = "chaos-seed")]
    pub seed: Option<u64>,
}

/// What the chaos phase found. Every count after `operations` must be 0.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub commands: usize,
    /// Operations the journal holds.
    pub operations: usize,
    pub kills: usize,
    pub socket_drops: usize,
    pub write_faults: usize,
    pub watch_drops: usize,
    pub seconds: f64,
    /// Operations a kill struck while they ran (each was resumed by the next process).
    pub interrupted: usize,
    /// Journaled operations that never reached an end.
    pub lost: usize,
    /// Commands that became more than one operation.
    pub run_twice: usize,
    /// Operations with more than one progress message.
    pub duplicated_progress: usize,
    /// Locks still held by an operation that is not running.
    pub locks_held: usize,
    /// Apps left at 0 replicas.
    pub scaled_down: usize,
    /// Commands that got no answer at all (the bot died between recording the message as seen
    /// and answering it: at most once means such a command is not run).
    pub unanswered: usize,
}

impl ChaosReport {
    /// Whether every guarantee held.
    pub fn clean(&self) -> bool {
        self.lost + self.run_twice + self.duplicated_progress + self.locks_held + self.scaled_down
            == 0
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rocketops bench --chaos (seed {}): {} commands, {} operations in {:.0} s",
            self.seed, self.commands, self.operations, self.seconds
        )?;
        writeln!(
            f,
            "  faults: {} SIGKILLs and restarts ({} operations struck while running), {} chat socket drops, {} failed writes (409/429/500), {} watch drops",
            self.kills, self.interrupted, self.socket_drops, self.write_faults, self.watch_drops
        )?;
        writeln!(
            f,
            "  operations lost {}, run twice {}, progress messages duplicated {}, locks left held {}, apps left scaled down {}",
            self.lost, self.run_twice, self.duplicated_progress, self.locks_held, self.scaled_down
        )?;
        write!(
            f,
            "  commands never answered (killed between seen and answer): {}",
            self.unanswered
        )
    }
}

pub(super) const ENVS: [&str; 3] = ["c1", "c2", "c3"];
const KINDS: [&str; 6] = ["backup", "deploy", "scale", "verify", "rollback", "restore"];
const VERSIONS: [&str; 4] = ["6.5.1", "7.0.0", "v3.1", "6.5.0"];

/// The `i`th command of the mix.
pub(super) fn command(i: usize, rng: &mut fastrand::Rng) -> String {
    let env = ENVS[i % ENVS.len()];
    match KINDS[(i / ENVS.len()) % KINDS.len()] {
        "backup" => format!("backup now {env}"),
        "deploy" => format!("deploy {env} {}", VERSIONS[rng.usize(..VERSIONS.len())]),
        "scale" => format!("scale {env} {}", rng.u32(1..=4)),
        "verify" => format!("verify {env}"),
        "rollback" => format!("rollback {env}"),
        _ => format!("restore {env} latest"),
    }
}

/// Runs the chaos phase.
pub async fn run(args: &ChaosArgs) -> Result<ChaosReport, BenchError> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let (sim, kube, users) = start_simulators(Duration::from_millis(20), args.ops).await?;
    let dir = std::env::temp_dir().join(format!("rocketops-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(e.to_string()))?;
    let store_path = dir.join("data");
    seed_catalog(&store_path)?;
    let cfg = write_config(&dir, &sim, &kube, "")?;
    let started = Instant::now();
    let mut report = ChaosReport {
        seed,
        commands: users.len(),
        ..ChaosReport::default()
    };
    let mut bot = Bot::start(&cfg, &sim).await?;
    let confirmer = tokio::spawn(confirm_restores(sim.events(), sim.clone()));
    let kill_every = (users.len() / args.kills.max(1)).max(1);
    let mut killed_at = Vec::new();
    for (i, user) in users.iter().enumerate() {
        match rng.u32(0..20) {
            0..=2 => {
                sim.drop_connections();
                report.socket_drops += 1;
            }
            3..=5 => {
                kube.fail_next_writes(1, [409, 429, 500][rng.usize(..3)]);
                report.write_faults += 1;
            }
            6 => {
                kube.drop_watches();
                report.watch_drops += 1;
            }
            _ => {}
        }
        let _ = sim.post(user, "@rocketops", &command(i, &mut rng));
        tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
        if report.kills < args.kills && (i + 1) % kill_every == 0 {
            tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
            killed_at.push(chrono::Utc::now().timestamp_millis());
            bot.kill(&sim).await;
            report.kills += 1;
            bot = Bot::start(&cfg, &sim).await?;
        }
    }
    settle(&sim, Duration::from_secs(4), Duration::from_secs(180)).await;
    bot.kill(&sim).await;
    confirmer.abort();
    report.seconds = started.elapsed().as_secs_f64();
    count(&mut report, &store_path, &sim, &kube, &users, &killed_at)?;
    kube.stop();
    sim.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// The simulators of a phase that restarts the bot: chat (its REST limiter off), a cluster with
/// [`ENVS`] whose pods are ready after `pod_ready_after`, and `n` users with role ops.
pub(super) async fn start_simulators(
    pod_ready_after: Duration,
    n: usize,
) -> Result<(RocketChatSim, KubeSim, Vec<String>), BenchError> {
    let sim = RocketChatSim::start(SimConfig::default())
        .await
        .map_err(BenchError::Simulator)?;
    // Every start of the bot reads /api/info and logs in, and these phases start it many times a
    // minute from one address: the server's REST limiter (10 a minute per route and address, which
    // the bot's role does not lift before it has logged in) would hold the restarts back. What is
    // measured here is recovery, so the limiter is off; it has tests of its own.
    sim.set_rest_rate_limit(None);
    let kube = KubeSim::start(crate::sandbox::kube::KubeSimConfig {
        pod_ready_after,
        tick: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .map_err(BenchError::Simulator)?;
    kube.seed_environments(&ENVS)
        .map_err(|e| BenchError::Setup(e.status().to_string()))?;
    let users: Vec<String> = (0..n.max(1)).map(|i| format!("u{i}")).collect();
    for u in &users {
        sim.add_user(u, &["ops"]);
    }
    Ok((sim, kube, users))
}

/// A backup of every environment in the catalog, so that the first restores and verifies have one.
fn seed_catalog(store_path: &Path) -> Result<(), BenchError> {
    let store =
        crate::store::Store::open(store_path).map_err(|e| BenchError::Setup(e.to_string()))?;
    let now = chrono::Utc::now().timestamp_millis();
    for env in ENVS {
        let name = format!("{env}-seed");
        crate::catalog::record(
            &store,
            &crate::catalog::BackupRecord::from_result(
                env,
                &name,
                &format!(r#"{{"name":"{name}","bytes":1000,"sha256":"ab"}}"#),
                "bench",
                now - 3_600_000,
            ),
        )
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    Ok(())
}

/// The bot's configuration for [`ENVS`], with `extra` (more TOML tables) at its end.
pub(super) fn write_config(
    dir: &Path,
    sim: &RocketChatSim,
    kube: &KubeSim,
    extra: &str,
) -> Result<String, BenchError> {
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, &ENVS)
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut cfg = format!(
        "[bot]\nstore_path = \"{}\"\n[rocketchat]\nurl = \"{}\"\nusername = \"rocketops\"\nrooms = [\"ops\"]\nreconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\n[alerts]\nenabled = false\n[policy]\nrate_per_minute = 100000\nrate_burst = 100000\n",
        dir.join("data").display(),
        sim.url(),
    );
    for env in ENVS {
        cfg.push_str(&format!(
            "[environments.{env}]\nkubeconfig = \"{}\"\ncontext = \"{env}\"\nimage = \"{}\"\n[[environments.{env}.policy.allow]]\ncommands = [\"*\"]\nroles = [\"ops\"]\n",
            kubeconfig.display(),
            crate::sandbox::kube::seed::ROCKETCHAT_REPO,
        ));
    }
    cfg.push_str(extra);
    let path = dir.join("rocketops.toml");
    std::fs::write(&path, cfg).map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(path.display().to_string())
}

/// The bot as a child process.
struct Bot {
    child: tokio::process::Child,
}

impl Bot {
    async fn start(cfg: &str, sim: &RocketChatSim) -> Result<Bot, BenchError> {
        let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
        let child = tokio::process::Command::new(exe)
            .args(["run", "--config", cfg])
            .env("ROCKETOPS_RC_PASSWORD", "rocketops")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::Spawn)?;
        let ready = Instant::now();
        while sim.sessions_of("rocketops") == 0 {
            if ready.elapsed() > Duration::from_secs(20) {
                return Err(BenchError::BotNotReady);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Bot { child })
    }

    /// SIGKILL, then waits until the chat server has seen the session go, so that the next
    /// process's session never overlaps the dead one's.
    async fn kill(mut self, sim: &RocketChatSim) {
        let _ = self.child.kill().await;
        let gone = Instant::now();
        while sim.sessions_of("rocketops") > 0 && gone.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Answers every restore's confirmation question in the asker's direct message.
pub(super) async fn confirm_restores(
    mut events: tokio::sync::broadcast::Receiver<SimEvent>,
    sim: RocketChatSim,
) {
    let code = regex::Regex::new(r"@(u\d+), type `confirm ([A-Z0-9]+)`").ok();
    loop {
        match events.recv().await {
            Ok(SimEvent::Message { message, .. }) => {
                let Some(re) = &code else { return };
                if message["u"]["username"] != "rocketops" {
                    continue;
                }
                let text = message["msg"].as_str().unwrap_or_default();
                if let Some(c) = re.captures(text) {
                    let _ = sim.post(&c[1], "@rocketops", &format!("confirm {}", &c[2]));
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// Waits until the bot has been silent for `quiet` (nothing running is still reporting).
pub(super) async fn settle(sim: &RocketChatSim, quiet: Duration, limit: Duration) {
    let mut events = sim.events();
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < limit && last.elapsed() < quiet {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(SimEvent::Message { message, .. }))
                if message["u"]["username"] == "rocketops" =>
            {
                last = Instant::now();
            }
            _ => {}
        }
    }
}

/// Reads the journal, the chat and the cluster after the run.
fn count(
    r: &mut ChaosReport,
    store_path: &Path,
    sim: &RocketChatSim,
    kube: &KubeSim,
    users: &[String],
    killed_at: &[i64],
) -> Result<(), BenchError> {
    let store =
        crate::store::Store::open(store_path).map_err(|e| BenchError::Setup(e.to_string()))?;
    let ops = store
        .recent_ops(None, 100_000)
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    r.operations = ops.len();
    r.interrupted = ops
        .iter()
        .filter(|o| {
            killed_at
                .iter()
                .any(|k| o.started_ms < *k && o.finished_ms.is_none_or(|f| f > *k))
        })
        .count();
    r.lost = ops
        .iter()
        .filter(|o| o.state == crate::journal::OpState::Running)
        .count();
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for o in &ops {
        *per_user.entry(o.user.as_str()).or_default() += 1;
    }
    r.run_twice = per_user.values().filter(|n| **n > 1).count();
    let mut dm: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for u in users {
        let room = sim.direct_room(u, "rocketops").unwrap_or_default();
        dm.insert(u, sim.messages(&room).unwrap_or_default());
    }
    for o in &ops {
        let header = format!("*#{} ", o.id);
        let progress = dm
            .get(o.user.as_str())
            .map(|m| {
                m.iter()
                    .filter(|m| {
                        m["u"]["username"] == "rocketops"
                            && m["msg"].as_str().is_some_and(|t| t.contains(&header))
                            && !m["msg"]
                                .as_str()
                                .is_some_and(|t| t.contains("type `confirm"))
                    })
                    .count()
            })
            .unwrap_or_default();
        if progress > 1 {
            r.duplicated_progress += 1;
        }
    }
    r.unanswered = dm
        .values()
        .filter(|m| !m.iter().any(|m| m["u"]["username"] == "rocketops"))
        .count();
    let running: Vec<crate::journal::OpId> = ops
        .iter()
        .filter(|o| o.state == crate::journal::OpState::Running)
        .map(|o| o.id)
        .collect();
    r.locks_held = store
        .held_locks()
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .into_iter()
        .filter(|(_, op)| !running.contains(op))
        .count();
    r.scaled_down = ENVS
        .iter()
        .filter(|env| {
            kube.get("deployments", env, "rocketchat")
                .map(|d| d["spec"]["replicas"].as_i64() == Some(0))
                .unwrap_or(true)
        })
        .count();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_cycles_through_every_environment_and_every_kind_of_operation() {
        let mut rng = fastrand::Rng::with_seed(1);
        let cmds: Vec<String> = (0..18).map(|i| command(i, &mut rng)).collect();
        for kind in [
            "backup now",
            "deploy",
            "scale",
            "verify",
            "rollback",
            "restore",
        ] {
            for env in ENVS {
                assert!(
                    cmds.iter().any(|c| c.starts_with(kind) && c.contains(env)),
                    "{kind} {env}: {cmds:?}"
                );
            }
        }
    }

    #[test]
    fn a_report_is_clean_only_when_every_count_is_zero() {
        let mut r = ChaosReport::default();
        assert!(r.clean());
        r.unanswered = 1;
        assert!(
            r.clean(),
            "an unanswered command is reported, not a broken guarantee"
        );
        r.duplicated_progress = 1;
        assert!(!r.clean());
    }
}
