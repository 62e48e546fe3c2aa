//! Message-to-answer benchmark: the bot as a separate process against the Rocket.Chat simulator, driven by N users.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::sandbox::rocketchat::{RocketChatSim, SimConfig, SimEvent};

pub mod chaos;
pub mod ha;
mod phases;

use self::phases::{alert_phase, deploy_phase, ping_while, pong_of, store_writes};

/// Load shape.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Simulated users, each in a direct message with the bot.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Offered load for the latency phase, messages per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Length of the latency phase, seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Length of the saturation phase, seconds.
    #[arg(long, default_value_t = 5)]
    pub saturate_seconds: u64,
    /// Pings in flight per user during saturation.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Deploys through chat for the deploy-overhead phase.
    #[arg(long, default_value_t = 10)]
    pub deploys: usize,
    /// Environments the bot manages, one namespace each, seeded as the sandbox seeds them.
    #[arg(long, default_value_t = 3)]
    pub environments: usize,
    /// Simulated clusters the environments are spread over (one kubeconfig context each).
    #[arg(long, default_value_t = 1)]
    pub clusters: usize,
    /// Soak: answered pings before the last memory reading; growth is measured from message
    /// 10,000 to this one (0: no soak).
    #[arg(long, default_value_t = 0)]
    pub messages: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// The binary to run as the bot (default: this one), e.g. the image's build, made with
    /// `--no-default-features` (no simulators).
    #[arg(long, value_name = "PATH")]
    pub bot: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub chaos: chaos::ChaosArgs,
    #[command(flatten)]
    pub ha: ha::HaArgs,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the simulator: {0}")]
    Simulator(std::io::Error),
    #[error("cannot start the bot process: {0}")]
    Spawn(std::io::Error),
    #[error("the bot was not ready (logged in, /readyz 200) within 120 s")]
    BotNotReady,
    #[error("bench setup failed: {0}")]
    Setup(String),
}

/// The figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub users: usize,
    pub offered_rate: u32,
    pub sent: usize,
    pub answered: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub saturated_answers_per_sec: f64,
    /// The most RSS seen (sampled every 50 ms) during the fixed-rate phase.
    pub rate_peak_rss_kib: Option<u64>,
    /// The bot's lifetime peak RSS (VmHWM: start-up included) after saturation.
    pub peak_rss_kib: Option<u64>,
    /// Median deploy through chat, median of the same rollout driven directly, and their difference.
    pub deploy_chat: Duration,
    pub deploy_direct: Duration,
    /// Ping latency at a quarter of the offered rate while deploys run and edit their progress
    /// messages: p50, p99 and how many answers.
    pub deploying_p50: Duration,
    pub deploying_p99: Duration,
    pub deploying_answered: usize,
    /// From the simulator marking a Job failed to its alert arriving in #alerts: p50, p99, and how many.
    pub alert_p50: Duration,
    pub alert_p99: Duration,
    pub alerts_measured: usize,
    pub environments: usize,
    pub clusters: usize,
    /// From starting the bot to its `/readyz` answering 200.
    pub ready: Duration,
    /// Resident set once ready, before any message.
    pub idle_rss_kib: Option<u64>,
    /// Of that, anonymous memory (heap, stacks, relocated tables); the rest is mapped from files,
    /// mostly the program's own code, which the kernel can drop and read back at any time.
    pub idle_anon_kib: Option<u64>,
    /// The most anonymous memory seen during the fixed-rate phase.
    pub rate_peak_anon_kib: Option<u64>,
    /// Anonymous memory growth over the same stretch as `rss_growth_kib`.
    pub anon_growth_kib: Option<i64>,
    /// Resident set growth from message 10,000 to the last of the soak (`None` without a soak).
    pub rss_growth_kib: Option<i64>,
    pub soak_messages: usize,
    /// Open connections from the bot to each simulated API server, once ready.
    pub api_connections: Vec<usize>,
    /// One `status` naming no environment: time to the answer, and its first line.
    pub status: Duration,
    pub status_head: String,
    /// The store's writes for one command, made on the runtime threads as `handle` makes them
    /// (seen, being handled, handled, read mark, one audit record), timed on this machine's
    /// disk: p50 and p99.
    pub store_p50: Duration,
    pub store_p99: Duration,
}

impl BenchReport {
    /// The figures as one JSON object (`--json`).
    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        let mb = |k: Option<u64>| k.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0);
        serde_json::json!({
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "offered_rate": self.offered_rate,
            "answered": self.answered,
            "sent": self.sent,
            "answers_per_s": self.saturated_answers_per_sec.round(),
            "idle_rss_mb": mb(self.idle_rss_kib),
            "idle_anon_mb": mb(self.idle_anon_kib),
            "rate_peak_anon_mb": mb(self.rate_peak_anon_kib),
            "anon_growth_mb": self.anon_growth_kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
            "rate_peak_rss_mb": mb(self.rate_peak_rss_kib),
            "peak_rss_mb": mb(self.peak_rss_kib),
            "rss_growth_mb": self.rss_growth_kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
            "soak_messages": self.soak_messages,
            "environments": self.environments,
            "clusters": self.clusters,
            "ready_ms": ms(self.ready),
            "alert_p50_ms": ms(self.alert_p50),
            "alert_p99_ms": ms(self.alert_p99),
            "alerts_measured": self.alerts_measured,
            "api_connections": self.api_connections,
            "status_ms": ms(self.status),
            "status_head": self.status_head,
            "store_writes_p50_us": (self.store_p50.as_secs_f64() * 1e6).round(),
            "store_writes_p99_us": (self.store_p99.as_secs_f64() * 1e6).round(),
            "deploy_chat_ms": ms(self.deploy_chat),
            "deploy_direct_ms": ms(self.deploy_direct),
            "deploying_p50_ms": ms(self.deploying_p50),
            "deploying_p99_ms": ms(self.deploying_p99),
        })
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "rocketops bench: {} users, /ping in direct messages",
            self.users
        )?;
        writeln!(
            f,
            "  latency at {} msg/s: {} sent, {} answered",
            self.offered_rate, self.sent, self.answered
        )?;
        writeln!(
            f,
            "    p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )?;
        writeln!(
            f,
            "  saturated: {:.0} answers/s",
            self.saturated_answers_per_sec
        )?;
        writeln!(
            f,
            "  deploy: {:.0} ms through chat vs {:.0} ms driven directly (median): bot overhead {:.0} ms",
            ms(self.deploy_chat),
            ms(self.deploy_direct),
            ms(self.deploy_chat.saturating_sub(self.deploy_direct))
        )?;
        writeln!(
            f,
            "  latency while deploys report progress: p50 {:.2} ms   p99 {:.2} ms ({} answers)",
            ms(self.deploying_p50),
            ms(self.deploying_p99),
            self.deploying_answered
        )?;
        writeln!(
            f,
            "  alert latency (Job failed → alert in #alerts), {} incidents: p50 {:.0} ms, p99 {:.0} ms",
            self.alerts_measured,
            ms(self.alert_p50),
            ms(self.alert_p99)
        )?;
        let mb = |k: Option<u64>| {
            k.map_or("unavailable".to_string(), |k| {
                format!("{:.1} MB", k as f64 / 1024.0)
            })
        };
        writeln!(
            f,
            "  {} environments on {} cluster(s): ready in {:.0} ms, idle RSS {} ({} anonymous), API connections per cluster {:?}",
            self.environments,
            self.clusters,
            ms(self.ready),
            mb(self.idle_rss_kib),
            mb(self.idle_anon_kib),
            self.api_connections
        )?;
        writeln!(
            f,
            "  `status` of every environment answered in {:.0} ms: {}",
            ms(self.status),
            self.status_head
        )?;
        writeln!(
            f,
            "  store writes per command (on the runtime threads): p50 {:.0} µs   p99 {:.0} µs",
            self.store_p50.as_secs_f64() * 1e6,
            self.store_p99.as_secs_f64() * 1e6
        )?;
        if let Some(g) = self.rss_growth_kib {
            writeln!(
                f,
                "  soak: {} messages, RSS growth from message 10,000 to the last {:+.1} MB ({:+.1} MB anonymous)",
                self.soak_messages,
                g as f64 / 1024.0,
                self.anon_growth_kib.unwrap_or_default() as f64 / 1024.0
            )?;
        }
        write!(
            f,
            "  bot RSS: at most {} during the {} msg/s phase ({} anonymous), lifetime peak {} after saturation",
            mb(self.rate_peak_rss_kib),
            self.offered_rate,
            mb(self.rate_peak_anon_kib),
            mb(self.peak_rss_kib)
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident set (VmHWM) of a process, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident set now (VmRSS) of a process, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// Anonymous resident memory now (RssAnon) of a process, from /proc.
fn anon_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "RssAnon:")
}

/// Samples a process's resident set and its anonymous part every 50 ms and keeps the most of each
/// seen during a phase (the kernel's own high-water mark, VmHWM, also counts start-up).
struct PhasePeak {
    rss: Arc<std::sync::atomic::AtomicU64>,
    anon: Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PhasePeak {
    fn start(pid: u32) -> Self {
        let rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let anon = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (r, a) = (rss.clone(), anon.clone());
        let sampler = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                every.tick().await;
                if let Some(k) = rss_kib(pid) {
                    r.fetch_max(k, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(k) = anon_kib(pid) {
                    a.fetch_max(k, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self { rss, anon, sampler }
    }

    /// The most resident and the most anonymous memory seen (`None` when never read).
    fn most(&self) -> (Option<u64>, Option<u64>) {
        let read = |a: &std::sync::atomic::AtomicU64| {
            Some(a.load(std::sync::atomic::Ordering::Relaxed)).filter(|k| *k > 0)
        };
        (read(&self.rss), read(&self.anon))
    }
}

impl Drop for PhasePeak {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Established TCP connections whose server end is this machine's `port` (from /proc/net):
/// what the simulated API server holds open.
fn established_to(port: u16) -> usize {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&hex) && f[3] == "01"
                })
                .count()
        })
        .sum()
}

/// A kubeconfig with one context per simulated cluster (`cluster-N`), plus `bench` and
/// `direct` on the first.
fn kubeconfig_yaml(sims: &[crate::sandbox::kube::KubeSim]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (i, s) in sims.iter().enumerate() {
        out.push_str(&format!(
            "- name: sim-{i}\n  cluster:\n    server: {}\n",
            s.url()
        ));
    }
    out.push_str("users:\n- name: bench\n  user:\n    token: bench\ncontexts:\n");
    let mut context = |name: &str, i: usize, ns: &str| {
        out.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: sim-{i}\n    user: bench\n    namespace: {ns}\n"
        ));
    };
    context("bench", 0, "bench");
    context("direct", 0, "direct");
    for i in 0..sims.len() {
        context(&format!("cluster-{i}"), i, "default");
    }
    out.push_str("current-context: bench\n");
    out
}

/// The extra environments' names: `env-0001` … (`bench` is the first environment).
fn extra_environments(total: usize) -> Vec<String> {
    (1..total.max(1)).map(|i| format!("env-{i:04}")).collect()
}

struct Tracker {
    sent: HashMap<u64, (Instant, usize)>,
    latencies: Vec<Duration>,
}

/// Runs both phases and reports.
pub async fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    let sim = RocketChatSim::start(SimConfig::default())
        .await
        .map_err(BenchError::Simulator)?;
    let clusters = args.clusters.max(1);
    let mut sims = Vec::new();
    for i in 0..clusters {
        sims.push(
            crate::sandbox::kube::KubeSim::start(crate::sandbox::kube::KubeSimConfig {
                pod_ready_after: Duration::from_millis(20),
                // The first cluster runs the deploy and alert phases; the others only hold
                // environments to be watched.
                tick: Duration::from_millis(if i == 0 { 100 } else { 1000 }),
                ..Default::default()
            })
            .await
            .map_err(BenchError::Simulator)?,
        );
    }
    let kube = sims[0].clone();
    let extras = extra_environments(args.environments);
    let mut on_cluster: Vec<Vec<&str>> = vec![Vec::new(); clusters];
    on_cluster[0].extend(["bench", "direct"]);
    for (i, e) in extras.iter().enumerate() {
        on_cluster[(i + 1) % clusters].push(e);
    }
    let seeding = Instant::now();
    for (sim, envs) in sims.iter().zip(&on_cluster) {
        sim.seed_environments(envs)
            .map_err(|e| BenchError::Setup(e.status().to_string()))?;
    }
    tracing::info!(
        environments = args.environments,
        clusters,
        secs = seeding.elapsed().as_secs_f64(),
        "seeded the simulated clusters"
    );
    let users: Vec<String> = (0..args.users.max(1))
        .map(|i| format!("bench{i}"))
        .collect();
    for u in &users {
        sim.add_user(u, &["user"]);
    }
    let dir = tempfile_dir()?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(&sims))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut environments = String::new();
    for (i, e) in extras.iter().enumerate() {
        environments.push_str(&format!(
            "[environments.{e}]\nkubeconfig = \"{}\"\ncontext = \"cluster-{}\"\nimage = \"{}\"\n",
            kubeconfig.display(),
            (i + 1) % clusters,
            crate::sandbox::kube::seed::ROCKETCHAT_REPO,
        ));
    }
    let cfg_path = dir.join("rocketops.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[bot]\nstore_path = \"{}\"\n[rocketchat]\nurl = \"{}\"\nusername = \"rocketops\"\nrooms = [\"ops\"]\n[telemetry]\nlisten = \"{telemetry}\"\n[alerts]\nper_minute = 100000\nburst = 100000\ncheck_every = \"1s\"\n[policy]\nrate_per_minute = 100000000\nrate_burst = 1000000\n[environments.bench]\nkubeconfig = \"{}\"\ncontext = \"bench\"\nimage = \"{}\"\n[[environments.bench.policy.allow]]\ncommands = [\"*\"]\nroles = [\"ops\"]\n{environments}",
            dir.join("data").display(),
            sim.url(),
            kubeconfig.display(),
            crate::sandbox::kube::seed::ROCKETCHAT_REPO,
        ),
    )
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    let exe = match &args.bot {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(BenchError::Spawn)?,
    };
    let started = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .env("ROCKETOPS_RC_PASSWORD", "rocketops")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(BenchError::Spawn)?;
    let pid = child.id().unwrap_or(0);
    let probe = reqwest::Client::new();
    let readyz = format!("http://{telemetry}/readyz");
    let ready = loop {
        let up = probe
            .get(&readyz)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up && sim.sessions_of("rocketops") > 0 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(BenchError::BotNotReady);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let the watches settle before reading memory and connections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);
    let idle_anon = anon_kib(pid);
    let api_connections: Vec<usize> = sims
        .iter()
        .map(|s| established_to(s.addr().port()))
        .collect();
    // One `status` for every environment: how long, and its first line.
    let (status_time, status_head) = {
        let mut events = sim.events();
        let asked = Instant::now();
        sim.post(&users[0], "@rocketops", "status")
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let deadline = asked + Duration::from_secs(30);
        let mut answer = None;
        while answer.is_none() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(SimEvent::Message { message, .. }))
                    if message["u"]["username"] == "rocketops" =>
                {
                    let text = message["msg"].as_str().unwrap_or_default().to_string();
                    if text.starts_with('*') {
                        answer = Some((asked.elapsed(), text));
                    }
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        let (t, text) = answer.unwrap_or_default();
        (t, text.lines().next().unwrap_or_default().to_string())
    };
    // Open each user's DM and let the bot see one message there first.
    for u in &users {
        sim.post(u, "@rocketops", "hello")
            .map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let tracker = Arc::new(Mutex::new(Tracker {
        sent: HashMap::new(),
        latencies: Vec::new(),
    }));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut events = sim.events();
    let t2 = tracker.clone();
    let listener = tokio::spawn(async move {
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
                    let now = Instant::now();
                    let mut t = t2.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((at, user)) = t.sent.remove(&seq) {
                        t.latencies.push(now - at);
                        let _ = done_tx.send(user);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!(lost = n, "bench listener lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    });

    let mut seq: u64 = 0;
    let mut post = |user: usize, sim: &RocketChatSim, tracker: &Mutex<Tracker>| {
        seq += 1;
        tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sent
            .insert(seq, (Instant::now(), user));
        let _ = sim.post(&users[user], "@rocketops", &format!("ping {seq}"));
    };

    // Phase 1: open loop at the offered rate.
    let phase_peak = PhasePeak::start(pid);
    let total = (args.rate as u64 * args.seconds) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        post(i % users.len(), &sim, &tracker);
    }
    let drain = Instant::now();
    while !tracker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sent
        .is_empty()
        && drain.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while done_rx.try_recv().is_ok() {}
    let (answered, mut lat) = {
        let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
        t.sent.clear();
        (t.latencies.len(), std::mem::take(&mut t.latencies))
    };
    lat.sort();
    let (rate_rss, rate_anon) = phase_peak.most();
    drop(phase_peak);

    // Phase 2: closed loop, `window` pings in flight per user.
    for u in 0..users.len() {
        for _ in 0..args.window.max(1) {
            post(u, &sim, &tracker);
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(args.saturate_seconds.max(1));
    let mut answers = 0usize;
    while Instant::now() < end {
        tokio::select! {
            u = done_rx.recv() => match u {
                Some(u) => { answers += 1; post(u, &sim, &tracker); }
                None => break,
            },
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Soak: the same closed loop for `messages` answers; memory read at 10,000 and at the end.
    let mut rss_growth = None;
    let mut anon_growth = None;
    let mut soaked = 0usize;
    if args.messages > 0 {
        let mut at_10k = None;
        let mut anon_at_10k = None;
        let deadline = Instant::now() + Duration::from_secs(900);
        while soaked < args.messages && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await {
                Ok(Some(u)) => {
                    soaked += 1;
                    if soaked == 10_000 {
                        at_10k = rss_kib(pid);
                        anon_at_10k = anon_kib(pid);
                    }
                    post(u, &sim, &tracker);
                }
                _ => break,
            }
        }
        rss_growth = at_10k.zip(rss_kib(pid)).map(|(a, b)| b as i64 - a as i64);
        anon_growth = anon_at_10k
            .zip(anon_kib(pid))
            .map(|(a, b)| b as i64 - a as i64);
    }
    let rss = peak_rss_kib(pid);
    listener.abort();

    // Phase 3: deploys through chat versus the same rollout driven directly through the cluster layer.
    let stop = tokio_util::sync::CancellationToken::new();
    let pinger = tokio::spawn(ping_while(
        sim.clone(),
        users.clone(),
        (args.rate / 4).max(1),
        stop.clone(),
    ));
    let deploys = deploy_phase(&sim, &kube, &kubeconfig, args.deploys.max(1)).await;
    stop.cancel();
    let mut during = pinger.await.unwrap_or_default();
    during.sort();
    let (deploy_chat, deploy_direct) = deploys?;
    let (alert_lat, alerts_measured) = alert_phase(&sim, &kube, 100).await?;
    for s in &sims {
        s.stop();
    }
    let _ = child.kill().await;
    sim.stop();
    let (store_p50, store_p99) = store_writes(&dir.join("store-cost"), 5_000)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(BenchReport {
        users: users.len(),
        offered_rate: args.rate,
        sent: total,
        answered,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        saturated_answers_per_sec: answers as f64 / elapsed,
        rate_peak_rss_kib: rate_rss,
        peak_rss_kib: rss,
        deploy_chat,
        deploy_direct,
        deploying_p50: percentile(&during, 0.50),
        deploying_p99: percentile(&during, 0.99),
        deploying_answered: during.len(),
        alert_p50: percentile(&alert_lat, 0.50),
        alert_p99: percentile(&alert_lat, 0.99),
        alerts_measured,
        environments: 1 + extras.len(),
        clusters,
        ready,
        idle_rss_kib: idle_rss,
        idle_anon_kib: idle_anon,
        rate_peak_anon_kib: rate_anon,
        anon_growth_kib: anon_growth,
        rss_growth_kib: rss_growth,
        soak_messages: soaked,
        api_connections,
        status: status_time,
        status_head,
        store_p50,
        store_p99,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("rocketops-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_writes_of_a_command_are_timed_on_a_real_store_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (p50, p99) = store_writes(&path, 20).unwrap();
        assert!(p50 > Duration::ZERO && p50 <= p99, "{p50:?} {p99:?}");
        assert!(!path.exists());
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
