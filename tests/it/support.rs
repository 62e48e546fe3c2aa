//! Test fixtures: a simulator, a bot on a real store, and waiting for what a room shows.

use std::path::PathBuf;
use std::time::Duration;

use rocketops::app::AppError;
use rocketops::config::Config;
use rocketops::sandbox::rocketchat::{Release, RocketChatSim, SimConfig};
use rocketops::store::Store;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The audit key of the tests' bots.
pub const AUDIT_KEY: &str = "test-audit-key-0123456789abcdef";

/// How long a test waits for something the bot should do in well under a second, or a few seconds
/// where a smoke test must time out first. Generous: the whole suite shares two cores, and a wait
/// ends as soon as its condition holds.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct World {
    pub sim: RocketChatSim,
    pub dir: tempfile::TempDir,
    bot: Option<(JoinHandle<Result<(), AppError>>, CancellationToken)>,
    /// The Kubernetes simulator, when the world has one (`with_cluster`).
    pub kube: Option<rocketops::sandbox::kube::KubeSim>,
    /// Where the running bot serves /healthz /readyz /metrics.
    pub telemetry: Option<std::net::SocketAddr>,
}

impl World {
    /// A world whose Rocket.Chat is the newest release the simulator serves.
    pub async fn new() -> World {
        World::new_on(Release::NEWEST).await
    }

    /// A world whose Rocket.Chat serves what `release` serves.
    pub async fn new_on(release: Release) -> World {
        rocketops::tls::install_crypto_provider();
        let _ = tracing_subscriber_init();
        let sim = RocketChatSim::start(SimConfig {
            release,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        World {
            sim,
            dir: tempfile::tempdir().expect("temp dir"),
            bot: None,
            kube: None,
            telemetry: None,
        }
    }

    /// A world with a Kubernetes simulator seeded with `test` and `prod`, and a policy:
    /// in test anyone with role `ops` may run anything; in prod deploys and rollbacks are for role
    /// `ops` and @admin, only from #ops, confirmed, and approved by a second person.
    pub async fn with_cluster() -> World {
        World::with_cluster_running(None, &["test", "prod"]).await
    }

    /// As [`World::with_cluster`], seeding `envs`, with Jobs of the images `local` lists run for
    /// real by the simulator's local Job runtime.
    pub async fn with_cluster_running(
        local: Option<rocketops::sandbox::kube::runtime::LocalJobs>,
        envs: &[&str],
    ) -> World {
        World::with_cluster_on(Release::NEWEST, local, envs).await
    }

    /// As [`World::with_cluster_running`], with Rocket.Chat serving what `release` serves.
    pub async fn with_cluster_on(
        release: Release,
        local: Option<rocketops::sandbox::kube::runtime::LocalJobs>,
        envs: &[&str],
    ) -> World {
        let mut w = World::new_on(release).await;
        let kube =
            rocketops::sandbox::kube::KubeSim::start(rocketops::sandbox::kube::KubeSimConfig {
                pod_ready_after: Duration::from_millis(40),
                tick: Duration::from_millis(20),
                local_jobs: local,
                ..Default::default()
            })
            .await
            .expect("kube simulator starts");
        kube.seed_environments(envs).expect("seed");
        kube.write_kubeconfig(&w.kubeconfig(), envs)
            .expect("kubeconfig");
        w.kube = Some(kube);
        w
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The kube simulator (panics in a world without one).
    pub fn kube(&self) -> &rocketops::sandbox::kube::KubeSim {
        self.kube.as_ref().expect("a world with a cluster")
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The sandbox's bot configuration with test-sized timers.
    pub fn config(&self) -> Config {
        let mut c = rocketops::sandbox::bot_config(&self.sim.url(), None);
        let rc = &mut c.rocketchat;
        rc.ping_interval = Duration::from_millis(300);
        rc.ping_timeout = Duration::from_millis(300);
        rc.connect_timeout = Duration::from_secs(1);
        rc.call_timeout = Duration::from_secs(5);
        rc.reconnect_min = Duration::from_millis(50);
        rc.reconnect_max = Duration::from_millis(400);
        c.bot.store_path = self.store_path();
        // One key for every start of the bot in a test (the sandbox makes a new one each run).
        c.audit.key = Some(rocketops::config::Secret::new(AUDIT_KEY));
        // The tests send bursts on purpose; the per-user limit has tests of its own.
        c.policy.rate_burst = 1000;
        c.policy.rate_per_minute = 60_000;
        if self.kube.is_some() {
            use rocketops::config::EnvironmentConfig;
            use rocketops::policy::{AllowRule, EnvPolicy};
            let env = |name: &str, policy: EnvPolicy| {
                let mut e = EnvironmentConfig::named(name);
                e.kubeconfig = Some(self.kubeconfig());
                e.context = Some(name.to_string());
                e.image = Some(rocketops::sandbox::kube::seed::ROCKETCHAT_REPO.to_string());
                e.min_replicas = 1;
                e.policy = policy;
                e.smoke = Some(rocketops::config::SmokeConfig {
                    url: self.kube().app_info_url(name, "rocketchat"),
                    status: 200,
                    version_field: Some("version".into()),
                    timeout: Duration::from_secs(3),
                    interval: Duration::from_millis(100),
                });
                (name.to_string(), e)
            };
            let test = EnvPolicy {
                allow: vec![AllowRule {
                    commands: vec!["*".into()],
                    users: vec![],
                    roles: vec!["ops".into()],
                }],
                ..EnvPolicy::default()
            };
            let prod = EnvPolicy {
                rooms: vec!["ops".into()],
                approvals: 1,
                allow: vec![AllowRule {
                    commands: vec!["deploy".into(), "rollback".into()],
                    users: vec!["admin".into()],
                    roles: vec!["ops".into()],
                }],
                ..EnvPolicy::default()
            };
            c.environments = [env("test", test), env("prod", prod)].into_iter().collect();
        }
        c
    }

    pub async fn start_bot(&mut self) {
        let config = self.config();
        self.start_bot_with(config).await;
    }

    /// Starts the bot without waiting for it to log in; returns its health/metrics address.
    pub async fn launch_bot(&mut self, config: Config) -> std::net::SocketAddr {
        let store = open_store(&config.bot.store_path).await;
        let token = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(rocketops::app::run(
            config,
            token.clone(),
            rocketops::app::RunOptions {
                store: Some(store),
                telemetry_addr: Some(tx),
                ..Default::default()
            },
        ));
        let addr = tokio::time::timeout(PATIENCE, rx)
            .await
            .expect("telemetry listener")
            .expect("address");
        self.telemetry = Some(addr);
        self.bot = Some((task, token));
        addr
    }

    /// Waits for the bot's confirmation question in `room`; returns it and its code.
    pub async fn confirmation(&self, room: &str) -> (String, String) {
        let question = self
            .wait_bot_text(room, "the confirmation question", |t| {
                t.contains("`confirm ")
            })
            .await;
        let code = question
            .split("`confirm ")
            .nth(1)
            .and_then(|s| s.split('`').next())
            .unwrap()
            .to_string();
        (question, code)
    }

    /// Waits for the bot's confirmation question in `room`, answers it as `user`; returns the question.
    pub async fn confirm(&self, user: &str, room: &str) -> String {
        let (question, code) = self.confirmation(room).await;
        self.sim
            .post(user, room, &format!("/confirm {code}"))
            .unwrap();
        question
    }

    /// A configuration file for running `rocketops` commands (audit, backups) on this world's
    /// store; `extra` is appended TOML.
    pub fn cli_config(&self, extra: &str) -> PathBuf {
        let cfg = self.dir.path().join("rocketops.toml");
        std::fs::write(
            &cfg,
            format!(
                "[bot]\nstore_path = \"{}\"\n[rocketchat]\nurl = \"http://127.0.0.1:9\"\ntoken = \"unused\"\n{extra}",
                self.store_path().display()
            ),
        )
        .unwrap();
        cfg
    }

    /// The bot's store, opened by the test. A bot just stopped releases it when its last task
    /// drops it: retry briefly.
    pub fn open_store(&self) -> Store {
        let started = std::time::Instant::now();
        loop {
            match Store::open(&self.store_path()) {
                Ok(s) => return s,
                Err(_) if started.elapsed() < PATIENCE => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("store did not open: {e}"),
            }
        }
    }

    /// Puts backups into the catalog before the bot starts (as if taken earlier).
    pub fn seed_catalog(&self, records: &[(&str, &str, i64)]) {
        let store = self.open_store();
        for (env, name, finished_ms) in records {
            rocketops::catalog::record(
                &store,
                &rocketops::catalog::BackupRecord::from_result(
                    env,
                    name,
                    &format!(r#"{{"name":"{name}","bytes":1000000,"sha256":"ab"}}"#),
                    "schedule (cronjob mongodb-backup)",
                    *finished_ms,
                ),
            )
            .unwrap();
        }
    }

    /// An autoscaler (2 to 6 replicas) on test's app.
    pub fn add_test_autoscaler(&self) {
        self.kube()
        .create(
            "horizontalpodautoscalers",
            "test",
            serde_json::json!({"metadata": {"name": "rocketchat", "labels": {"team": "chat"}},
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rocketchat"},
                            "minReplicas": 2, "maxReplicas": 6}}),
        )
        .unwrap();
    }

    /// Starts the bot and waits until it has logged in and subscribed.
    pub async fn start_bot_with(&mut self, config: Config) {
        self.start_bot_at(config, rocketops::schedule::Clock::System)
            .await;
    }

    /// As `start_bot_with`, with the schedules following `clock`.
    pub async fn start_bot_at(&mut self, config: Config, clock: rocketops::schedule::Clock) {
        let store = open_store(&config.bot.store_path).await;
        self.start_bot_on(config, clock, store).await;
    }

    /// As `start_bot_with`; returns the store the bot runs on (the same database), so that a
    /// test can fail its writes.
    pub async fn start_bot_sharing_store(&mut self, config: Config) -> Store {
        let store = open_store(&config.bot.store_path).await;
        let shared = store.clone();
        self.start_bot_on(config, rocketops::schedule::Clock::System, store)
            .await;
        shared
    }

    async fn start_bot_on(
        &mut self,
        config: Config,
        clock: rocketops::schedule::Clock,
        store: Store,
    ) {
        let token = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(rocketops::app::run(
            config,
            token.clone(),
            rocketops::app::RunOptions {
                store: Some(store),
                telemetry_addr: Some(tx),
                clock,
                readiness: None,
            },
        ));
        self.telemetry = rx.await.ok();
        let started = tokio::time::Instant::now();
        while self.sim.sessions_of("rocketops") == 0 {
            assert!(!task.is_finished(), "bot exited during start-up");
            assert!(started.elapsed() < PATIENCE, "bot did not log in");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.bot = Some((task, token));
    }

    /// Stops the bot cleanly and waits for it to release the store. Every test that stops its
    /// bot so also checks that the bot used the socket for nothing but `login`: Rocket.Chat 9
    /// serves no other method there.
    pub async fn stop_bot(&mut self) {
        if let Some((task, token)) = self.bot.take() {
            token.cancel();
            let _ = tokio::time::timeout(PATIENCE, task)
                .await
                .expect("bot stops");
        }
        let other = self.bot_methods_other_than_login();
        assert!(
            other.is_empty(),
            "the bot called realtime methods besides `login`: {other:?}"
        );
    }

    /// The DDP methods the bot called, over the socket or `method.call`, other than `login`.
    pub fn bot_methods_other_than_login(&self) -> Vec<String> {
        self.sim
            .methods_called()
            .into_iter()
            .filter(|(user, method)| user == "rocketops" && method != "login")
            .map(|(_, method)| method)
            .collect()
    }

    /// Waits until `room`'s messages satisfy `done`; returns them.
    pub async fn wait_for(
        &self,
        room: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let started = tokio::time::Instant::now();
        loop {
            let msgs = self.sim.messages(room).expect("room exists");
            if done(&msgs) {
                return msgs;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "timed out waiting for {what} in {room}; room has: {:#?}",
                    texts(&msgs)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until one of the bot's messages in `room` satisfies `done`; returns that message's text.
    pub async fn wait_bot_text(
        &self,
        room: &str,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let msgs = self
            .wait_for(room, what, |m| bot_texts(m).iter().any(|t| done(t)))
            .await;
        bot_texts(&msgs)
            .into_iter()
            .find(|t| done(t))
            .unwrap_or_default()
    }

    /// Posts `/ping TAG` as alice in #ops and waits for `pong TAG`: the bot is up and answering.
    pub async fn ping_ok(&self, tag: &str) {
        self.sim
            .post("alice", "#ops", &format!("/ping {tag}"))
            .unwrap();
        let want = format!("pong {tag}");
        self.wait_for("#ops", &want, |m| bot_texts(m).contains(&want))
            .await;
    }
}

async fn open_store(path: &std::path::Path) -> Store {
    // A stopped bot's store is released when its last task drops it: retry briefly.
    let started = tokio::time::Instant::now();
    loop {
        match Store::open(path) {
            Ok(s) => return s,
            Err(e) if started.elapsed() < PATIENCE => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store did not open: {e}"),
        }
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    if std::env::var("TEST_LOG").is_ok() {
        rocketops::telemetry::init(rocketops::config::LogFormat::Text);
    }
    Ok(())
}

/// Every message's text.
pub fn texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The texts the bot wrote, oldest first.
pub fn bot_texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["u"]["username"] == "rocketops" && m.get("t").is_none())
        .map(|m| m["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// How many of the bot's messages say exactly `text`.
pub fn count(msgs: &[Value], text: &str) -> usize {
    bot_texts(msgs).iter().filter(|t| *t == text).count()
}

/// Whether `kubectl` can be run here. Without it a test that drives kubectl is skipped loudly, or
/// fails where `ROCKETOPS_REQUIRE_REAL` is set (CI installs kubectl).
pub fn kubectl_or_skip(test: &str) -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("ROCKETOPS_REQUIRE_REAL").is_none(),
        "{test} needs kubectl (Debian's kubernetes-client)"
    );
    eprintln!(
        "\n!!!!! SKIPPED {test}: it needs kubectl. Install Debian's `kubernetes-client`; `.ci/run` does.\n"
    );
    false
}

/// Polls `check` every `every` until it gives a value, failing the test with `what` after
/// [`PATIENCE`]: the one deadline loop of the tests, for conditions that are not a room's messages
/// (those have [`World::wait_for`]).
pub async fn eventually<T, F, Fut>(what: &str, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}
