//! Wiring: builds the parts (store, clusters, chat, engine, pipeline) and starts the loops beside it (health, alerts, schedules, audit anchor).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::seen::message_clock_ms;
use super::{AppError, Bot, Shared};
use crate::chat::rocketchat::{ConnectOptions, RocketChat};
use crate::chat::{Chat, Incoming};
use crate::clock::Clock;
use crate::cluster::Clusters;
use crate::command::Grammar;
use crate::command::runbook::{self, RunbookSpec};
use crate::config::Config;
use crate::ops;
use crate::policy::{Pending, Policy, RateLimiter, RoleCache, lock};
use crate::store::Store;

/// Loads the runbook commands of `config.bot.commands_dir`, all problems reported at once.
pub fn load_runbooks(config: &Config) -> Result<Vec<RunbookSpec>, AppError> {
    let envs: Vec<String> = config.environments.keys().cloned().collect();
    let templates = crate::ops::templates::check_all(config);
    let runbooks = runbook::load_dir(&config.bot.commands_dir, &envs);
    let mut problems: Vec<String> = match &runbooks {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    };
    problems.extend(templates);
    if let Ok(r) = &runbooks {
        let names: Vec<String> = r.iter().map(|r| r.name.clone()).collect();
        for u in crate::policy::unknown_command_names(&config.environments, &names) {
            match config.position_of(&u.key, &u.name) {
                at if at.is_empty() => problems.push(u.to_string()),
                at => problems.push(format!("{at}: {u}")),
            }
        }
    }
    match runbooks {
        Ok(r) if problems.is_empty() => Ok(r),
        _ => Err(AppError::RunbooksInvalid(problems.join("\n"))),
    }
}

/// What a run is given besides its configuration; the defaults are production's.
#[derive(Default)]
pub struct RunOptions {
    /// An already opened store (the sandbox and tests); `None` opens `config.bot.store_path`.
    pub store: Option<Store>,
    /// Told the health/metrics listener's address once it is bound.
    pub telemetry_addr: Option<oneshot::Sender<SocketAddr>>,
    /// The clock the schedules follow (tests run days of schedules in seconds).
    pub clock: Clock,
    /// Health and readiness already served (a replica serves them from before it leads); `None`
    /// serves them here on `telemetry.listen`.
    pub readiness: Option<Arc<crate::telemetry::Readiness>>,
}

/// Runs the bot until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<(), AppError> {
    let RunOptions {
        store,
        telemetry_addr,
        clock,
        readiness,
    } = options;
    let store = match store {
        Some(store) => store,
        None => Store::open(&config.bot.store_path)?,
    };
    if let Some(why) = config.audit_refusal() {
        return Err(AppError::AuditKey(why));
    }
    store.set_audit_key(config.audit.key.as_ref().map(|k| k.expose().as_bytes()));
    let runbooks = load_runbooks(&config)?;
    // One copy, shared: with hundreds of environments each copy costs megabytes.
    let config = Arc::new(config);
    let clusters = Clusters::connect(&config.environments).await?;
    let served = readiness.is_some();
    let ready = readiness.unwrap_or_default();
    ready
        .store_open
        .store(true, std::sync::atomic::Ordering::Relaxed);
    ready
        .standby
        .store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(listen) = config.telemetry.listen.filter(|_| !served) {
        match crate::telemetry::serve(listen, ready.clone(), shutdown.clone()).await {
            Ok(addr) => {
                tracing::info!(%addr, "serving /healthz /readyz /metrics");
                if let Some(tx) = telemetry_addr {
                    let _ = tx.send(addr);
                }
            }
            Err(e) => tracing::error!(error = %e, %listen, "cannot serve health and metrics"),
        }
    }
    tokio::spawn(probe_clusters(
        clusters.clone(),
        ready.clone(),
        shutdown.clone(),
    ));
    if config.bot.redact_secret_values {
        tokio::spawn(learn_secret_values(
            config.clone(),
            clusters.clone(),
            shutdown.clone(),
        ));
    }
    let is_ready = ready.clone();
    tokio::spawn(crate::memory::trim_periodically(
        Duration::from_secs(10),
        move || is_ready.problems().is_empty(),
        shutdown.clone(),
    ));
    let options = ConnectOptions {
        respond_to_bots: config.bot.respond_to_bots,
        store: Some(store.clone()),
    };
    // The connection outlives the pipeline: answers already being sent finish before it closes.
    let connection = CancellationToken::new();
    let connect = RocketChat::connect(config.rocketchat.clone(), options, connection.clone());
    let (chat, incoming) = tokio::select! {
        r = connect => r?,
        _ = shutdown.cancelled() => {
            connection.cancel();
            return Ok(());
        }
    };
    let unreached: Vec<String> = chat
        .missing_rooms()
        .iter()
        .map(|m| format!("#{}", m.name))
        .collect();
    if unreached.is_empty() {
        tracing::info!(user = %chat.bot_username(), environments = ?clusters.names(), runbooks = runbooks.len(), "rocketops is listening");
    } else {
        tracing::error!(user = %chat.bot_username(), ?unreached, "rocketops is listening, but not in every configured room: not ready until it is");
    }
    tokio::spawn(report_chat_readiness(
        chat.clone(),
        ready.clone(),
        shutdown.clone(),
    ));
    let alerter_task = start_alerter(&config, &clusters, &chat, &store, clock, &shutdown);
    let anchor_task = tokio::spawn(anchor_audit(
        chat.clone(),
        store.clone(),
        config.audit.clone(),
        (clock, shutdown.clone()),
    ));
    let connection_handle = chat.clone();
    let bot = Bot::new(
        chat,
        store.clone(),
        &config,
        runbooks,
        clusters,
        shutdown.clone(),
        clock,
    );
    bot.s.engine.resume_interrupted().await;
    bot.tell_unanswered().await;
    let engine = bot.s.engine.clone();
    let schedules = start_schedules(&bot, &config, clock, &shutdown);
    bot.serve(incoming, shutdown).await;
    let _ = schedules.await;
    let _ = anchor_task.await;
    if let Some(t) = alerter_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // Operations stop at a safe point (their journal says where); they resume on the next start.
    engine.wait_idle(Duration::from_secs(10)).await;
    connection.cancel();
    connection_handle.closed(Duration::from_secs(5)).await;
    store.flush().await?;
    Ok(())
}

/// Keeps `/readyz` told whether the chat connection is up and every configured room reached.
async fn report_chat_readiness(
    chat: RocketChat,
    ready: Arc<crate::telemetry::Readiness>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        ready
            .chat_connected
            .store(chat.is_connected(), std::sync::atomic::Ordering::Relaxed);
        *lock(&ready.rooms_missing, "rooms missing") =
            chat.missing_rooms().into_iter().map(|m| m.name).collect();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => {}
        }
    }
    ready
        .chat_connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Starts the alerter on the environments' watches, when alerts are enabled and there are any.
fn start_alerter(
    config: &Arc<Config>,
    clusters: &Clusters,
    chat: &RocketChat,
    store: &Store,
    clock: Clock,
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    if !config.alerts.enabled || config.environments.is_empty() {
        return None;
    }
    use crate::cluster::watch::{WatchedKind, watch_environments};
    let kinds = [
        WatchedKind::Jobs,
        WatchedKind::Pods,
        WatchedKind::Deployments,
        WatchedKind::StatefulSets,
        WatchedKind::CronJobs,
        WatchedKind::Events,
    ];
    let events = watch_environments(clusters, &kinds, None, stop.clone());
    let alerter = crate::alerts::Alerter::new(
        chat.clone(),
        store.clone(),
        config.clone(),
        clusters.clone(),
        clock,
    );
    Some(tokio::spawn(alerter.run(events, stop.clone())))
}

/// Starts the scheduled commands, run by the pipeline's engine.
fn start_schedules(
    bot: &Bot<RocketChat>,
    config: &Arc<Config>,
    clock: Clock,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let runner = crate::ops::scheduled::Scheduled {
        engine: bot.s.engine.clone(),
        chat: bot.s.chat.clone(),
        store: bot.s.store.clone(),
        config: config.clone(),
    };
    let (config, store, stop) = (config.clone(), bot.s.store.clone(), stop.clone());
    tokio::spawn(async move {
        crate::schedule::run(&config, &store, clock, &runner, stop).await;
    })
}

/// The audit log's anchor outside the store: the head hash and record count, exported as metrics
/// and posted to the audit room at start and every `anchor_every`, so that truncating or
/// rewriting the log is found by `rocketops audit verify --head HASH`.
async fn anchor_audit<C: Chat>(
    chat: C,
    store: Store,
    cfg: crate::config::AuditConfig,
    (clock, stop): (Clock, CancellationToken),
) {
    let mut tick = tokio::time::interval(cfg.anchor_every.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let Ok(Some((seq, head))) = store.audit_head() else {
            continue;
        };
        let m = crate::telemetry::metrics();
        m.audit_records.set(seq as i64);
        m.audit_anchor.clear();
        m.audit_anchor
            .get_or_create(&crate::telemetry::labels(&[
                ("head", &head),
                ("records", &seq.to_string()),
            ]))
            .set(clock.now_ms() / 1000);
        let Some(room) = cfg.room.as_deref() else {
            continue;
        };
        let text = format!(
            "🔏 Audit anchor: {seq} records, head `{head}`. Keep this message: `rocketops audit verify --head {head}` proves the log still holds it."
        );
        match chat.room_id(room).await {
            Ok(rid) => {
                if let Err(e) = chat.post(&rid, None, &text).await {
                    tracing::warn!(error = %e, room, "cannot post the audit anchor");
                }
            }
            Err(e) => tracing::warn!(error = %e, room, "cannot find the audit room"),
        }
    }
}

/// How often the Secrets behind `redact_secret_values` are read again (a rotated value is then
/// removed from chat too; the old one stays removed).
const SECRET_VALUES_EVERY: Duration = Duration::from_secs(15 * 60);

/// With `redact_secret_values`: reads the Secrets each environment's Jobs use and registers their
/// values with the redactor, at start and every [`SECRET_VALUES_EVERY`].
async fn learn_secret_values(config: Arc<Config>, clusters: Clusters, stop: CancellationToken) {
    loop {
        let mut values = Vec::new();
        for (env, e) in &config.environments {
            let Some(c) = clusters.get(env) else { continue };
            for (name, keys) in crate::ops::templates::referenced_secrets(&config, env, e) {
                match c.secret(&name).await {
                    Ok(secret) => {
                        values.extend(crate::redact::values::secret_values(&secret, keys.as_ref()))
                    }
                    Err(err) => tracing::warn!(
                        %env,
                        secret = %name,
                        error = %err,
                        "cannot read a Secret whose values are to be kept out of chat (the Role in manifests/rbac-secret-values grants it)"
                    ),
                }
            }
        }
        let known = crate::redact::values::register(&values);
        tracing::info!(
            secrets_values = values.len(),
            forms = known,
            "exact values of the Jobs' Secrets are kept out of chat"
        );
        tokio::select! {
            _ = tokio::time::sleep(SECRET_VALUES_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Keeps `/readyz` told whether every cluster's API server answers.
async fn probe_clusters(
    clusters: Clusters,
    ready: Arc<crate::telemetry::Readiness>,
    stop: CancellationToken,
) {
    loop {
        let mut all = true;
        // One probe per API server, however many environments it holds.
        let mut probed = std::collections::HashSet::new();
        for (env, c) in clusters.iter() {
            if !probed.insert(c.server().to_string()) {
                continue;
            }
            if let Err(e) = c.probe(Duration::from_secs(5)).await {
                tracing::warn!(%env, error = %e, "cluster unreachable");
                all = false;
            }
        }
        ready
            .clusters_reachable
            .store(all, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl<C: Chat> Bot<C> {
    /// The pipeline; operations stop at a safe point when `shutdown` is cancelled.
    pub fn new(
        chat: C,
        store: Store,
        config: &Arc<Config>,
        runbooks: Vec<RunbookSpec>,
        clusters: Clusters,
        shutdown: CancellationToken,
        clock: Clock,
    ) -> Self {
        let grammar = Grammar::from_config(config, runbooks.clone());
        let policy = Policy::new(config.clone(), runbooks);
        let engine = ops::engine::Engine::new(
            chat.clone(),
            store.clone(),
            clusters.clone(),
            config.clone(),
            grammar.clone(),
            shutdown,
            clock,
        );
        Bot {
            s: Arc::new(Shared {
                chat,
                store,
                grammar,
                policy,
                limiter: Mutex::new(RateLimiter::new(
                    config.policy.rate_per_minute,
                    config.policy.rate_burst,
                )),
                flood: Mutex::new(HashMap::new()),
                pending: Mutex::new(Pending::default()),
                roles: Mutex::new(RoleCache::default()),
                clusters,
                config: config.clone(),
                engine,
                clock,
            }),
        }
    }

    /// Handles messages until the stream ends or `shutdown`. Messages of one room are handled in order;
    /// rooms proceed independently.
    pub async fn serve(
        self,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
        shutdown: CancellationToken,
    ) {
        let mut rooms: HashMap<String, mpsc::UnboundedSender<Incoming>> = HashMap::new();
        let mut workers = tokio::task::JoinSet::new();
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        let mut floods = tokio::time::interval(Duration::from_secs(5));
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                msg = incoming.recv() => {
                    let Some(msg) = msg else { break };
                    let tx = rooms.entry(msg.room_id.clone()).or_insert_with(|| {
                        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
                        let bot = self.clone();
                        workers.spawn(async move {
                            while let Some(m) = rx.recv().await {
                                bot.handle(m).await;
                            }
                        });
                        tx
                    });
                    let _ = tx.send(msg);
                }
                _ = prune.tick() => {
                    // Ids are kept at least as long as a message may still be run.
                    let keep = self.s.config.bot.seen_retention.max(self.s.config.bot.catch_up_max_age);
                    let cutoff = message_clock_ms() - keep.as_millis() as i64;
                    // A scan of the whole tree: off the message loop and the async threads.
                    let store = self.s.store.clone();
                    pruning = Some(tokio::task::spawn_blocking(move || match store.prune_seen(cutoff) {
                        Ok(n) if n > 0 => tracing::debug!(pruned = n, "forgot old message ids"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning seen ids failed"),
                    }));
                }
                _ = floods.tick() => self.flush_floods(false),
                _ = shutdown.cancelled() => break,
            }
        }
        self.flush_floods(true);
        // The store is let go of only when the last pruning scan is over.
        if let Some(p) = pruning {
            let _ = p.await;
        }
        drop(rooms);
        // Let commands already taken finish their answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
    }
}
