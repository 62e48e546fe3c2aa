//! The local stand-ins the bot meets first: simulators over real loopback sockets, and the `sandbox` command that runs the bot against them.

pub use rocketops_sim::{kube, postgres, rocketchat};
pub mod script;
pub mod terminal;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{BotConfig, Config, RocketChatConfig, Secret, TelemetryConfig};
use crate::store::Store;
use rocketchat::{Release, RocketChatSim, SEED_CHANNELS, SEED_USERS, SimConfig};

/// What `rocketops sandbox` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    pub listen: Option<SocketAddr>,
    pub no_bot: bool,
    /// Run this conversation instead of the prompt, and fail if an expectation is not met.
    pub script: Option<std::path::PathBuf>,
    /// Add a `pg` environment backed by a real local PostgreSQL server, whose backup, verify
    /// and restore Jobs run for real.
    pub real_postgres: bool,
    /// The Rocket.Chat release the simulator plays (default: the newest).
    pub release: Release,
}

/// Why the sandbox could not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the Rocket.Chat simulator on {addr}: {source}")]
    SimulatorFailed {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the bot did not start: {0}")]
    BotFailed(String),
    #[error("cannot read script {path}: {source}")]
    ScriptUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("script {path}: {source}")]
    ScriptFailed {
        path: String,
        #[source]
        source: script::ScriptError,
    },
}

/// The configuration the sandbox gives the bot: the seeded `rocketops` account on the simulator,
/// and, with a kubeconfig, the simulated cluster's environments (one context each).
/// Writes the runbook files built into the binary into `dir`.
fn write_built_in_runbooks(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in crate::command::runbook::BUILT_IN {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A random audit key for one sandbox run.
fn sandbox_audit_key() -> String {
    crate::random::token(b"0123456789abcdef", 32)
}

pub fn bot_config(sim_url: &str, kubeconfig: Option<(&std::path::Path, &kube::KubeSim)>) -> Config {
    let mut rc = RocketChatConfig::new(sim_url);
    rc.username = Some("rocketops".into());
    rc.password = Some(Secret::new("rocketops"));
    rc.rooms = vec!["ops".into(), "alerts".into()];
    Config {
        bot: BotConfig::default(),
        rocketchat: rc,
        telemetry: TelemetryConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..TelemetryConfig::default()
        },
        policy: crate::policy::PolicyConfig::default(),
        alerts: crate::config::AlertsConfig::default(),
        // The sandbox's prod is make-believe: a throwaway key per run keeps its audit chain keyed
        // as production's must be (there, ROCKETOPS_AUDIT_KEY from a Secret).
        audit: crate::config::AuditConfig {
            key: Some(Secret::new(sandbox_audit_key())),
            ..Default::default()
        },
        ha: crate::config::HaConfig::default(),
        source: None,
        environments: kubeconfig
            .map(|(k, sim)| {
                ENVIRONMENTS
                    .iter()
                    .map(|e| {
                        let mut env = crate::config::EnvironmentConfig::named(e);
                        env.kubeconfig = Some(k.to_path_buf());
                        env.context = Some(e.to_string());
                        env.image = Some(kube::seed::ROCKETCHAT_REPO.to_string());
                        env.min_replicas = 1;
                        env.policy = sandbox_policy(e);
                        env.backup.report_channel = Some("ops".into());
                        env.schedule = crate::config::ScheduleConfig {
                            timezone: Some("Europe/Berlin".into()),
                            backup: Some("0 2 * * *".into()),
                            verify: Some("30 3 * * *".into()),
                            prune: Some("0 4 * * 0".into()),
                            report: Some("0 8 * * 0,2-6".into()),
                            weekly: Some("0 8 * * 1".into()),
                            // QA gets production's data every night, as teams do by hand today.
                            refresh: (*e == "test").then(|| "0 5 * * *".into()),
                            refresh_from: (*e == "test").then(|| "prod".into()),
                        };
                        env.smoke = Some(crate::config::SmokeConfig {
                            url: sim.app_info_url(e, "rocketchat"),
                            status: 200,
                            version_field: Some("version".into()),
                            timeout: std::time::Duration::from_secs(60),
                            interval: std::time::Duration::from_secs(1),
                        });
                        (e.to_string(), env)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Runs the simulators (and the bot unless `no_bot`) until `shutdown`; offers a chat prompt on a terminal.
pub async fn run(opts: SandboxOptions, shutdown: CancellationToken) -> Result<(), SandboxError> {
    let listen = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let sim = RocketChatSim::start(SimConfig {
        listen,
        release: opts.release,
        ..SimConfig::default()
    })
    .await
    .map_err(|source| SandboxError::SimulatorFailed {
        addr: listen.to_string(),
        source,
    })?;
    tracing::info!(
        url = %sim.url(),
        release = sim.release().version(),
        "the Rocket.Chat simulator is serving"
    );
    let pg = if opts.real_postgres {
        let pg = postgres::Postgres::start()
            .and_then(|pg| pg.seed_sample().map(|()| pg))
            .map_err(|e| SandboxError::BotFailed(format!("--real-postgres: {e}")))?;
        Some(pg)
    } else {
        None
    };
    let kube = kube::KubeSim::start(kube::KubeSimConfig {
        local_jobs: pg.as_ref().map(|pg| kube::runtime::LocalJobs {
            images: vec!["postgres:*".into()],
            root: pg.dir().join("jobs"),
            path: vec![pg.bin.clone()],
        }),
        ..kube::KubeSimConfig::default()
    })
    .await
    .map_err(|source| SandboxError::SimulatorFailed {
        addr: "127.0.0.1:0".into(),
        source,
    })?;
    let mut environments: Vec<&str> = ENVIRONMENTS.to_vec();
    if pg.is_some() {
        environments.push(PG_ENVIRONMENT);
    }
    kube.seed_environments(&environments).map_err(|e| {
        SandboxError::BotFailed(format!("seeding the cluster failed: {}", e.status()))
    })?;
    if let Some(pg) = &pg {
        seed_postgres_environment(&kube, pg).map_err(|e| {
            SandboxError::BotFailed(format!("seeding the pg environment failed: {}", e.status()))
        })?;
    }
    // The well-known path while no other sandbox uses it (held by a lock for this run).
    let (kubeconfig, _claim) = claim_kubeconfig_path();
    kube.write_kubeconfig(&kubeconfig, &environments)
        .map_err(|source| SandboxError::SimulatorFailed {
            addr: kubeconfig.display().to_string(),
            source,
        })?;
    // Let the seeded environments come up before anyone looks at them.
    for _ in 0..200 {
        let up = environments.iter().all(|e| {
            kube.get("deployments", e, "rocketchat")
                .is_ok_and(|d| d["status"]["availableReplicas"] == 3)
                && kube
                    .get("statefulsets", e, "mongodb")
                    .is_ok_and(|s| s["status"]["readyReplicas"] == 3)
        });
        if up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print_banner(&sim, opts.no_bot);
    println!(
        "  Kubernetes simulator: {}  (environments: {})",
        kube.url(),
        environments.join(", ")
    );
    if let Some(pg) = &pg {
        println!(
            "  pg: a real PostgreSQL at {} (tables items and notes); its backups, verifies and restores run for real, the archives in {}",
            pg.uri(),
            pg.dir().join("jobs/pvc/pg/pg-backup").display()
        );
    }
    println!("  kubeconfig: {}", kubeconfig.display());
    println!(
        "    try: kubectl --kubeconfig {} get deploy,sts,cronjob,jobs -A",
        kubeconfig.display()
    );

    let mut commands_dir: Option<std::path::PathBuf> = None;
    let bot = if opts.no_bot {
        None
    } else {
        let store = Store::temporary().map_err(|e| SandboxError::BotFailed(e.to_string()))?;
        let token = shutdown.child_token();
        let mut config = bot_config(&sim.url(), Some((&kubeconfig, &kube)));
        if pg.is_some() {
            let mut e = config.environments["test"].clone();
            e.namespace = Some(PG_ENVIRONMENT.into());
            e.context = Some(PG_ENVIRONMENT.into());
            if let Some(smoke) = e.smoke.as_mut() {
                smoke.url = kube.app_info_url(PG_ENVIRONMENT, "rocketchat");
            }
            e.backup_cronjob = "postgresql-backup".into();
            e.database = PG_ENVIRONMENT.into();
            e.backup.engine = crate::config::DbEngine::Postgresql;
            e.backup.claim = Some("pg-backup".into());
            e.backup.secret = Some(PG_ENVIRONMENT.into());
            e.schedule.refresh = None;
            e.schedule.refresh_from = None;
            config.environments.insert(PG_ENVIRONMENT.into(), e);
        }
        if !config.bot.commands_dir.is_dir() {
            // Started away from a checkout: the runbooks the binary ships with.
            let dir = commands_dir.get_or_insert_with(|| {
                std::env::temp_dir()
                    .join(format!("rocketops-sandbox-{}-commands", std::process::id()))
            });
            write_built_in_runbooks(dir).map_err(|e| SandboxError::BotFailed(e.to_string()))?;
            println!("  runbooks: the built-in ones, in {}", dir.display());
            config.bot.commands_dir = dir.clone();
        }
        let task = tokio::spawn(crate::app::run(
            config,
            token.clone(),
            crate::app::RunOptions {
                store: Some(store),
                ..Default::default()
            },
        ));
        for _ in 0..100 {
            if sim.sessions_of("rocketops") > 0 || task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if task.is_finished() {
            let why = match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "it exited".into(),
                Err(e) => e.to_string(),
            };
            return Err(SandboxError::BotFailed(why));
        }
        println!("The bot is online as @rocketops in #ops and #alerts.");
        println!(
            "Its audit log is keyed with a throwaway key for this run (in production the bot refuses to start without ROCKETOPS_AUDIT_KEY)."
        );
        Some((task, token))
    };

    let mut outcome = Ok(());
    if let Some(path) = &opts.script {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| SandboxError::ScriptUnreadable {
                path: shown.clone(),
                source,
            })?;
        let steps = script::parse(&text).map_err(|source| SandboxError::ScriptFailed {
            path: shown.clone(),
            source,
        })?;
        println!("Running {shown} ({} steps)", steps.len());
        outcome = script::run(&sim, &steps, Duration::from_secs(60))
            .await
            .map_err(|source| SandboxError::ScriptFailed {
                path: shown.clone(),
                source,
            });
        if outcome.is_ok() {
            println!("{shown}: every expectation met");
        }
        shutdown.cancel();
    } else if std::io::stdin().is_terminal() {
        let saved = terminal_mode();
        terminal::run(&sim, shutdown.clone()).await;
        // The line editor may still be waiting for a key in raw mode: give the terminal back.
        restore_terminal_mode(saved);
        shutdown.cancel();
    } else {
        println!("No terminal on standard input: running headless until SIGINT or SIGTERM.");
        shutdown.cancelled().await;
    }
    if let Some((task, token)) = bot {
        token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    sim.stop();
    kube.stop();
    if let Some(dir) = commands_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    // The kubeconfig points at a simulator that is gone: remove it, and this run's own folder.
    let _ = std::fs::remove_file(&kubeconfig);
    if let Some(dir) = kubeconfig.parent()
        && dir
            .to_string_lossy()
            .ends_with(&format!("-{}", std::process::id()))
    {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

/// The terminal's settings (standard input), to put back after the line editor.
fn terminal_mode() -> Option<libc::termios> {
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the struct when it returns 0; it is read only then.
    unsafe { (libc::tcgetattr(0, t.as_mut_ptr()) == 0).then(|| t.assume_init()) }
}

fn restore_terminal_mode(saved: Option<libc::termios>) {
    if let Some(t) = saved {
        // SAFETY: `t` came from tcgetattr on the same descriptor.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
}

/// The sandbox's policy: role `ops` (alice) and @admin may change dev and test; prod takes
/// changes only from #ops, confirmed, and approved by a second person (try alice, then admin).
pub fn sandbox_policy(env: &str) -> crate::policy::EnvPolicy {
    use crate::policy::{AllowRule, EnvPolicy, Who};
    let everyone_ops = AllowRule {
        commands: vec!["*".into()],
        users: vec!["admin".into()],
        roles: vec!["ops".into()],
    };
    if env == "prod" {
        EnvPolicy {
            rooms: vec!["ops".into()],
            approvals: 1,
            allow: vec![everyone_ops],
            skip_backup: Who {
                users: vec!["admin".into()],
                roles: vec![],
            },
            ..EnvPolicy::default()
        }
    } else {
        EnvPolicy {
            allow: vec![everyone_ops],
            ..EnvPolicy::default()
        }
    }
}

/// The sandbox's environments (one namespace each).
pub const ENVIRONMENTS: &[&str] = &["dev", "test", "prod"];

/// The environment `--real-postgres` adds.
pub const PG_ENVIRONMENT: &str = "pg";

/// The `pg` environment's Secret (the server's connection string) and backup volume.
fn seed_postgres_environment(
    sim: &kube::KubeSim,
    pg: &postgres::Postgres,
) -> Result<(), kube::store::ApiError> {
    use base64::Engine;
    let uri = base64::engine::general_purpose::STANDARD.encode(pg.uri());
    sim.create(
        "secrets",
        PG_ENVIRONMENT,
        serde_json::json!({"metadata": {"name": PG_ENVIRONMENT}, "type": "Opaque", "data": {"uri": uri}}),
    )?;
    sim.create(
        "persistentvolumeclaims",
        PG_ENVIRONMENT,
        serde_json::json!({"metadata": {"name": "pg-backup"},
                           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )?;
    Ok(())
}

/// Where the sandbox writes its kubeconfig (overwritten on each start).
pub fn kubeconfig_path() -> std::path::PathBuf {
    std::env::temp_dir()
        .join("rocketops-sandbox")
        .join("kubeconfig")
}

/// The kubeconfig path for this sandbox: the well-known one, locked for as long as the returned
/// file is held; when another running sandbox holds it, a path of this process's own.
pub fn claim_kubeconfig_path() -> (std::path::PathBuf, Option<std::fs::File>) {
    let path = kubeconfig_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            && f.try_lock().is_ok()
        {
            return (path, Some(f));
        }
    }
    let own = std::env::temp_dir()
        .join(format!("rocketops-sandbox-{}", std::process::id()))
        .join("kubeconfig");
    if let Some(dir) = own.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    (own, None)
}

fn print_banner(sim: &RocketChatSim, no_bot: bool) {
    println!("rocketops sandbox");
    println!(
        "  Rocket.Chat simulator: {}  (Rocket.Chat {}; DDP: ws://{}/websocket)",
        sim.url(),
        sim.release().version(),
        sim.addr()
    );
    println!("  users (password = username):");
    for (name, roles) in SEED_USERS {
        println!("    {name:<10} roles: {}", roles.join(", "));
    }
    println!(
        "  channels: {}",
        SEED_CHANNELS
            .iter()
            .map(|c| format!("#{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  control API: POST {}/_sim/post {{\"user\",\"room\",\"text\"}}, /_sim/drop, /_sim/refuse, /_sim/delay, /_sim/silence, /_sim/inject, /_sim/rest-rate-limit, /_sim/permission",
        sim.url()
    );
    if no_bot {
        println!(
            "  --no-bot: the simulators run alone; point any Rocket.Chat client at the URL above."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sandbox_gets_a_kubeconfig_path_of_its_own_while_the_first_runs() {
        let (first, held) = claim_kubeconfig_path();
        // Another sandbox may hold it already in this test run; then both are private paths.
        if held.is_some() {
            assert_eq!(first, kubeconfig_path());
        }
        let (second, none) = claim_kubeconfig_path();
        if held.is_some() {
            assert!(none.is_none());
            assert_ne!(second, first);
            assert!(
                second
                    .to_string_lossy()
                    .contains(&std::process::id().to_string())
            );
        }
        drop(held);
        drop(none);
    }
}
