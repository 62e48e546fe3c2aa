//! Wiring and the command pipeline, top-down: addressed? → seen once → rate limit → parse → authorize → confirm/approve → execute → render → audit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::rocketchat::{ConnectOptions, RocketChat};
use crate::chat::{Button, Chat, ChatError, Incoming, RoomKind};
use crate::clock::Clock;
use crate::cluster::Clusters;
use crate::command::runbook::{self, RunbookSpec};
use crate::command::{self, Addressing, Answer, Asked, BackupRef, Command, Grammar, Request};
use crate::config::Config;
use crate::error::UserError;
use crate::journal::ChosenBackup;
use crate::ops;
use crate::policy::{
    Approval, Decision, Pending, Policy, PolicyConfig, RateLimiter, Requester, RoleCache, lock,
};
use crate::store::{AuditDecision, AuditEntry, OpId, Store, StoreError};

/// Why the bot stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    StoreUnavailable(#[from] StoreError),
    #[error(transparent)]
    ChatUnavailable(#[from] ChatError),
    #[error(transparent)]
    ClusterUnavailable(#[from] crate::cluster::ClusterError),
    #[error("invalid runbook commands or Job templates:\n{0}")]
    RunbooksInvalid(String),
    #[error("refusing to start: {0}")]
    AuditKey(String),
}

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

/// Runs the bot until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let store = Store::open(&config.bot.store_path)?;
    run_with_store(config, store, shutdown).await
}

/// Runs the bot on an already opened store (the sandbox and tests use this).
pub async fn run_with_store(
    config: Config,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    run_with(config, store, shutdown, None).await
}

/// As `run_with_store`, reporting the health/metrics listener's address once it is bound.
pub async fn run_with(
    config: Config,
    store: Store,
    shutdown: CancellationToken,
    telemetry_addr: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), AppError> {
    run_with_clock(config, store, shutdown, telemetry_addr, Clock::System).await
}

/// As `run_with`, with the schedules following `clock` (tests run days of schedules in seconds).
pub async fn run_with_clock(
    config: Config,
    store: Store,
    shutdown: CancellationToken,
    telemetry_addr: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    clock: Clock,
) -> Result<(), AppError> {
    if let Some(why) = config.audit_refusal() {
        return Err(AppError::AuditKey(why));
    }
    store.set_audit_key(config.audit.key.as_ref().map(|k| k.expose().as_bytes()));
    let runbooks = load_runbooks(&config)?;
    // One copy, shared: with hundreds of environments each copy costs megabytes.
    let config = Arc::new(config);
    let clusters = Clusters::connect(&config.environments).await?;
    let ready = Arc::new(crate::telemetry::Readiness::default());
    ready
        .store_open
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(listen) = config.telemetry.listen {
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
    {
        let (chat, ready, stop) = (chat.clone(), ready.clone(), shutdown.clone());
        tokio::spawn(async move {
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
        });
    }
    let mut alerter_task = None;
    if config.alerts.enabled && !config.environments.is_empty() {
        use crate::cluster::watch::{WatchedKind, watch_environments};
        let kinds = [
            WatchedKind::Jobs,
            WatchedKind::Pods,
            WatchedKind::Deployments,
            WatchedKind::StatefulSets,
            WatchedKind::CronJobs,
            WatchedKind::Events,
        ];
        let events = watch_environments(&clusters, &kinds, None, shutdown.clone());
        let alerter = crate::alerts::Alerter::new(
            chat.clone(),
            store.clone(),
            config.clone(),
            clusters.clone(),
            clock,
        );
        alerter_task = Some(tokio::spawn(alerter.run(events, shutdown.clone())));
    }
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
    let schedules = {
        let runner = crate::ops::scheduled::Scheduled {
            engine: engine.clone(),
            chat: bot.s.chat.clone(),
            store: store.clone(),
            config: config.clone(),
        };
        let (config, store, stop) = (config.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::schedule::run(&config, &store, clock, &runner, stop).await;
        })
    };
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

/// A command held while it waits for confirmation or approval.
#[derive(Debug, Clone)]
struct Held {
    cmd: Command,
    text: String,
    op: u64,
    room_id: String,
    room_label: String,
    thread: Option<String>,
    requester: String,
    /// The channel it was asked in (`None` in a direct message), as the policy knows rooms.
    room: Option<String>,
    /// Approvals, each by a different person, needed after confirmation.
    approvals: u32,
    /// The plan as decided before confirmation, when it needed the cluster to decide.
    plan: Option<String>,
    /// The backup the plan named (restore, verify): what runs, whatever is newer by then.
    backup: Option<ChosenBackup>,
    /// The app's image when it was asked (deploy, rollback): the plan was made against it.
    image_then: Option<String>,
    /// For a read-only command naming no environment: the ones the asker may see.
    visible: Option<Vec<String>>,
}

impl crate::policy::HasOp for Held {
    fn op(&self) -> u64 {
        self.op
    }
}

struct Shared<C: Chat> {
    chat: C,
    store: Store,
    grammar: Grammar,
    policy: Policy,
    policy_cfg: PolicyConfig,
    prefixes: Vec<String>,
    catch_up_max_age: Duration,
    seen_retention: Duration,
    limiter: Mutex<RateLimiter>,
    /// Users being rate limited now: their window and what it refused.
    flood: Mutex<HashMap<String, Flood>>,
    pending: Mutex<Pending<Held>>,
    roles: Mutex<RoleCache>,
    clusters: Clusters,
    config: Arc<Config>,
    engine: ops::engine::Engine<C>,
    clock: Clock,
}

/// A user's flood window: refused messages are counted here and audited once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flood {
    pub since_ms: i64,
    pub last_ms: i64,
    /// When the window ends: the next refusal after it is answered again.
    pub until_ms: i64,
    pub count: u64,
    pub room: String,
    /// The first refused message's text.
    pub first: String,
}

/// Pure: one message of `user` through the flood window. `limited` is the rate limiter's wait
/// (seconds) when it refused. Returns whether to answer, and a window that ended (to audit).
pub fn flood_step(
    floods: &mut HashMap<String, Flood>,
    (user, room, text): (&str, &str, &str),
    now_ms: i64,
    limited: Option<u64>,
) -> (bool, Option<Flood>) {
    let open = floods.get(user).is_some_and(|f| now_ms < f.until_ms);
    match limited {
        None => (false, floods.remove(user)),
        Some(_) if open => {
            if let Some(f) = floods.get_mut(user) {
                f.count += 1;
                f.last_ms = now_ms;
            }
            (false, None)
        }
        Some(secs) => {
            let ended = floods.remove(user);
            floods.insert(
                user.to_string(),
                Flood {
                    since_ms: now_ms,
                    last_ms: now_ms,
                    until_ms: now_ms + (secs.max(1) * 1000) as i64,
                    count: 1,
                    room: room.to_string(),
                    first: text.chars().take(500).collect(),
                },
            );
            (true, ended)
        }
    }
}

/// Why a message must not run as a command whatever the seen-set remembers, if it must not.
///
/// The rule: a message runs at most once, when it is first delivered. A live message the server
/// re-sent because something changed about it (reaction, reply, pin, edit) is never a command; a
/// live message older than `max_age` is never run (nothing of that age can be a first delivery);
/// a message fetched while catching up is new to the bot by its room's read mark, and runs when it
/// is younger than `max_age` (older ones get a "send it again" answer in `dispatch`).
pub fn never_a_new_command(msg: &Incoming, now_ms: i64, max_age: Duration) -> Option<&'static str> {
    if msg.caught_up {
        return None;
    }
    if msg.redelivered {
        return Some("re-sent after a reaction, reply, pin or edit");
    }
    if now_ms - msg.ts_ms > max_age.as_millis() as i64 {
        return Some(
            "delivered live but older than catch_up_max_age (or the server's clock is off)",
        );
    }
    None
}

/// How far ahead of this machine's clock a message's timestamp may be and still move a read mark
/// (clocks drift; a year-2100 stamp is a forgery or a broken server).
pub const MARK_FUTURE_SKEW: Duration = Duration::from_secs(120);

/// Pure: the read mark a message may set, or `None` when its timestamp lies further in the future
/// than clocks drift. A mark in the future would hide every command sent before that time from
/// the next catch-up.
pub fn mark_to_record(ts_ms: i64, now_ms: i64) -> Option<i64> {
    (ts_ms <= now_ms.saturating_add(MARK_FUTURE_SKEW.as_millis() as i64)).then_some(ts_ms)
}

/// The command pipeline, generic over the chat platform. Cheap to clone.
pub struct Bot<C: Chat> {
    s: Arc<Shared<C>>,
}

impl<C: Chat> Clone for Bot<C> {
    fn clone(&self) -> Self {
        Bot { s: self.s.clone() }
    }
}

/// Where a command came from and who sent it.
struct Origin<'a> {
    msg: &'a Incoming,
    room_label: String,
}

/// A message the bot was handling when it stopped.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Unanswered {
    id: String,
    room_id: String,
    thread: Option<String>,
    /// Its start, to name it.
    text: String,
}

impl<C: Chat> Bot<C> {
    /// Tells the author of every message the bot was handling when it last stopped that it may
    /// not have been run (it is not run again), then forgets them.
    pub async fn tell_unanswered(&self) {
        let left: Vec<Unanswered> = self.s.store.unanswered().unwrap_or_default();
        for m in left {
            let text = format!(
                "I restarted while handling your message (`{}`), so it may not have run. If you got no answer, send it again.",
                crate::redact::defuse(&m.text).replace('`', "'")
            );
            self.reply_to(&m.room_id, m.thread.as_deref(), &text).await;
            if let Err(e) = self.s.store.end_handling(&m.id) {
                tracing::warn!(error = %e, id = %m.id, "cannot forget a message told about");
            }
        }
    }

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
        let policy = Policy::new(config.environments.clone(), runbooks);
        let (chat_for_engine, store_for_engine, clusters_for_engine, grammar_for_engine) = (
            chat.clone(),
            store.clone(),
            clusters.clone(),
            grammar.clone(),
        );
        Bot {
            s: Arc::new(Shared {
                chat,
                store,
                grammar,
                policy,
                policy_cfg: config.policy.clone(),
                prefixes: config.bot.prefixes.clone(),
                catch_up_max_age: config.bot.catch_up_max_age,
                seen_retention: config.bot.seen_retention,
                limiter: Mutex::new(RateLimiter::new(
                    config.policy.rate_per_minute,
                    config.policy.rate_burst,
                )),
                flood: Mutex::new(HashMap::new()),
                pending: Mutex::new(Pending::default()),
                roles: Mutex::new(RoleCache::default()),
                clusters,
                config: config.clone(),
                engine: ops::engine::Engine::new(
                    chat_for_engine,
                    store_for_engine,
                    clusters_for_engine,
                    config.clone(),
                    grammar_for_engine,
                    shutdown,
                    clock,
                ),
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
                    let keep = self.s.seen_retention.max(self.s.catch_up_max_age);
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

    /// One message: answer it if it is a command not handled before, then move the room's read mark.
    pub async fn handle(&self, msg: Incoming) {
        let addressing = Addressing {
            prefixes: self.s.prefixes.clone(),
            bot_name: self.s.chat.bot_username(),
        };
        if let Some(body) = command::addressed_body(&msg.text, msg.room_kind, &addressing) {
            let refused = never_a_new_command(&msg, message_clock_ms(), self.s.catch_up_max_age);
            match refused.map_or_else(
                || self.s.store.mark_seen(&msg.id, message_clock_ms()),
                |_| Ok(false),
            ) {
                Ok(true) => {
                    // Until it is answered, the message is on record as being handled: a bot
                    // killed in between tells its author after the restart instead of staying
                    // silent (it never runs it again: at most once).
                    let handling = Unanswered {
                        id: msg.id.clone(),
                        room_id: msg.room_id.clone(),
                        thread: msg.thread.clone(),
                        text: msg.text.chars().take(80).collect(),
                    };
                    if let Err(e) = self.s.store.begin_handling(&msg.id, &handling) {
                        tracing::warn!(error = %e, id = %msg.id, "cannot record the message as being handled");
                    }
                    self.dispatch(&msg, body).await;
                    if let Err(e) = self.s.store.end_handling(&msg.id) {
                        tracing::warn!(error = %e, id = %msg.id, "cannot record the message as handled");
                    }
                }
                Ok(false) if refused.is_some() => {
                    tracing::info!(id = %msg.id, user = %msg.username, why = refused, "not running a message")
                }
                Ok(false) => tracing::debug!(id = %msg.id, "command already handled; skipping"),
                Err(e) => {
                    tracing::error!(error = %e, id = %msg.id, "cannot record message as seen; not running it")
                }
            }
        }
        match mark_to_record(msg.ts_ms, message_clock_ms()) {
            Some(ts) => {
                if let Err(e) = self.s.store.advance_mark(&msg.room_id, ts) {
                    tracing::warn!(error = %e, "cannot move the read mark");
                }
            }
            None => tracing::warn!(
                id = %msg.id,
                ts_ms = msg.ts_ms,
                "a message stamped in the future; the read mark stays where it is"
            ),
        }
    }

    /// The pipeline for one command text.
    async fn dispatch(&self, msg: &Incoming, body: &str) {
        let origin = Origin {
            msg,
            room_label: match (&msg.room_kind, &msg.room_name) {
                (RoomKind::Direct, _) | (_, None) => format!("@{}", msg.username),
                (_, Some(n)) => n.clone(),
            },
        };
        let age = Duration::from_millis((message_clock_ms() - msg.ts_ms).max(0) as u64);
        if msg.caught_up && age > self.s.catch_up_max_age {
            let e = UserError::MissedWhileOffline {
                age: crate::clock::human(Duration::from_secs(age.as_secs())),
            };
            return self.refuse(&origin, body, None, e).await;
        }
        // Poisoned locks are taken back, never read as "no limit" (see `policy::poison`).
        let limited: Result<(), u64> = lock(&self.s.limiter, "rate limiter").check(&msg.username);
        let now = self.s.clock.now_ms();
        let (answer, ended) = flood_step(
            &mut lock(&self.s.flood, "flood windows"),
            (&msg.username, &origin.room_label, body),
            now,
            limited.err(),
        );
        if let Some(ended) = ended {
            self.audit_flood(&msg.username, &ended);
        }
        if let Err(secs) = limited {
            // One "slow down" per window; the rest of the flood is counted, not answered.
            if answer {
                let e = UserError::RateLimited {
                    retry_after_secs: secs,
                };
                tracing::info!(user = %msg.username, reason = e.label(), "refused");
                self.reply(msg, &e.to_string()).await;
            }
            return;
        }
        let answer = match command::parse_request(body, &self.s.grammar) {
            Ok(Request::Command(cmd)) => return self.authorize_and_run(&origin, body, cmd).await,
            Ok(Request::Answer(a)) => a,
            Err(e) => return self.refuse(&origin, body, None, e).await,
        };
        match &answer {
            Answer::Confirm { code } => {
                let taken = lock(&self.s.pending, "pending").confirm(code, &msg.username);
                match taken {
                    Ok(held) => {
                        if let Some(e) = self.changed_since_asked(&held).await {
                            return self.refuse(&origin, body, Some(&held.cmd), e).await;
                        }
                        self.audit(
                            &origin,
                            body,
                            Some(&held.cmd),
                            AuditDecision::Confirmed,
                            None,
                            Some(held.op),
                            None,
                        );
                        self.after_confirmation(&origin, held).await;
                    }
                    Err(e) => {
                        let e = UserError::Refused(e.to_string());
                        self.refuse(&origin, body, Some(&answer), e).await
                    }
                }
            }
            Answer::Approve { op } => self.approve(&origin, body, &answer, op.get()).await,
            Answer::Cancel { op } => self.cancel(&origin, body, &answer, op.get()).await,
        }
    }

    async fn requester_roles(&self, username: &str) -> Result<Vec<String>, UserError> {
        let ttl = self.s.policy_cfg.role_cache_ttl;
        if let Some(r) = lock(&self.s.roles, "role cache").get(username, ttl) {
            return Ok(r);
        }
        match self.s.chat.user_roles(username).await {
            Ok(roles) => {
                lock(&self.s.roles, "role cache").put(username, roles.clone());
                Ok(roles)
            }
            Err(e) => {
                tracing::error!(error = %e, user = username, "cannot look up roles");
                Err(UserError::RolesUnavailable { why: e.to_string() })
            }
        }
    }

    async fn decide(&self, origin: &Origin<'_>, cmd: &Command) -> Result<Decision, UserError> {
        let roles = if self.s.policy.needs_roles(cmd) {
            self.requester_roles(&origin.msg.username).await?
        } else {
            Vec::new()
        };
        let room = match origin.msg.room_kind {
            RoomKind::Direct => None,
            _ => origin.msg.room_name.as_deref(),
        };
        Ok(self.s.policy.authorize(
            cmd,
            &Requester {
                username: &origin.msg.username,
                roles: &roles,
                room,
            },
        ))
    }

    /// The environments the asker may see with `cmd` (roles as `decide` found them).
    async fn visible_envs(&self, origin: &Origin<'_>, cmd: &Command) -> Vec<String> {
        let roles = if self.s.policy.needs_roles(cmd) {
            self.requester_roles(&origin.msg.username)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let room = match origin.msg.room_kind {
            RoomKind::Direct => None,
            _ => origin.msg.room_name.as_deref(),
        };
        self.s.policy.visible_envs(
            cmd,
            &Requester {
                username: &origin.msg.username,
                roles: &roles,
                room,
            },
        )
    }

    async fn authorize_and_run(&self, origin: &Origin<'_>, body: &str, cmd: Command) {
        let decision = match self.decide(origin, &cmd).await {
            Ok(d) => d,
            Err(e) => return self.refuse(origin, body, Some(&cmd), e).await,
        };
        let (confirm, approvals) = match decision {
            Decision::Deny { reason } => {
                let e = UserError::NotAllowed {
                    action: describe(&cmd),
                    reason,
                };
                return self.refuse(origin, body, Some(&cmd), e).await;
            }
            Decision::Allow { confirm, approvals } => (confirm, approvals),
        };
        if let Some(refusal) = self.locked(&cmd) {
            return self.refuse(origin, body, Some(&cmd), refusal).await;
        }
        let visible = match (cmd.is_mutating(), cmd.env()) {
            (false, None) => Some(self.visible_envs(origin, &cmd).await),
            _ => None,
        };
        let (mut cmd, mut confirm, mut plan) = (cmd, confirm, None);
        if let Command::Rollback { env, to: None } = &cmd {
            // "rollback" means "back to the last good version": fix the target now, so that the
            // confirmation names it and the journal holds it.
            let env = env.clone();
            let choice = match (
                self.s.clusters.get(&env),
                self.s.config.environments.get(&env),
            ) {
                (Some(c), Some(e)) => ops::rollback::resolve(c, &self.s.store, e)
                    .await
                    .map(|choice| (choice.describe(&env, e), choice)),
                _ => Err(format!("{env} has no cluster configured")),
            };
            match choice {
                Ok((text, choice)) => {
                    confirm |= choice.needs_confirmation();
                    plan = Some(text);
                    cmd = Command::Rollback {
                        env,
                        to: Some(command::RollbackTarget::Revision(choice.target)),
                    };
                }
                Err(why) => {
                    let e = UserError::CannotRollBack {
                        env: env.clone(),
                        why: why.to_string(),
                    };
                    return self.refuse(origin, body, Some(&cmd), e).await;
                }
            }
        }
        if let Command::Scale {
            env,
            replicas,
            component,
        } = &cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
        {
            // Checked before anyone is asked to confirm or approve: an autoscaler would undo it.
            let (kind, name) = match component.as_deref() {
                Some(n) if n == e.database => (crate::cluster::Workload::StatefulSet, n),
                _ => (crate::cluster::Workload::Deployment, e.deployment.as_str()),
            };
            if let Ok(Some(why)) = c.scale_refusal(kind, name, *replicas as i32).await {
                let e = UserError::WouldBeUndone {
                    env: env.clone(),
                    workload: name.to_string(),
                    replicas: *replicas,
                    why: why.to_string(),
                };
                return self.refuse(origin, body, Some(&cmd), e).await;
            }
        }
        if let Command::Verify {
            env: None, backup, ..
        } = &cmd
            && self.envs_with_backup(backup.as_ref()).is_empty()
        {
            // Checked before anyone is asked to confirm: there is nothing to test.
            let e = UserError::NothingToVerify;
            return self.refuse(origin, body, Some(&cmd), e).await;
        }
        let offsite_ask = match &cmd {
            Command::Restore {
                env,
                backup,
                offsite: true,
                ..
            } => Some((env.clone(), backup.clone())),
            Command::Verify {
                env: Some(env),
                backup,
                offsite: true,
            } => Some((env.clone(), backup.clone().unwrap_or(BackupRef::Latest))),
            _ => None,
        };
        if let Some((env, which)) = offsite_ask
            && let Some(e) = self.s.config.environments.get(&env)
            && let Err(e) = ops::operation::offsite_backup(&self.s.store, e, &env, &which)
        {
            // Checked before anyone is asked to confirm: there is no copy to fetch.
            return self.refuse(origin, body, Some(&cmd), e).await;
        }
        // The backup a restore or verify runs is decided now, named in the plan, and carried
        // through confirmation and approval: a newer one appearing meanwhile changes nothing.
        let backup = match self.choose_backup(&cmd) {
            Ok(b) => b,
            // Refused before anyone is asked to confirm: there is nothing to restore.
            Err(e) => return self.refuse(origin, body, Some(&cmd), e).await,
        };
        let plan_cmd = planned(&cmd, backup.as_ref());
        if let Command::Restore { env, .. } = &cmd
            && let (Some(c), Some(e)) = (
                self.s.clusters.get(env),
                self.s.config.environments.get(env),
            )
        {
            // The plan names the autoscaler only when the app has one.
            if let Ok(hpa) = c
                .hpa_for(crate::cluster::Workload::Deployment, &e.deployment)
                .await
            {
                let name = hpa.map(|h| h.metadata.name.unwrap_or_default());
                plan = Some(ops::plan_with(
                    &plan_cmd,
                    &self.s.config,
                    &self.s.store,
                    self.s.clock.now_ms(),
                    Some(name),
                ));
            }
        }
        if plan.is_none() && backup.is_some() {
            plan = Some(ops::plan_summary(
                &plan_cmd,
                &self.s.config,
                &self.s.store,
                self.s.clock.now_ms(),
            ));
        }
        let image_then = match &cmd {
            Command::Deploy { env, .. } | Command::Rollback { env, .. } => {
                self.current_image(env).await
            }
            _ => None,
        };
        // A number names an operation (it is journaled and shown in `history`) or a request that
        // waits for someone (`cancel #N`, `approve #N`). A lock, an unlock, a mute or a fan-out
        // that starts at once takes none, so the numbers people see in history do not jump.
        let numbered = ops::operation::is_operation(&cmd) || confirm || approvals > 0;
        let op = if cmd.is_mutating() && numbered {
            match self.s.store.next_op_id() {
                Ok(op) => op.get(),
                Err(e) => {
                    // Never a shared number 0: without the journal nothing changing may start.
                    tracing::error!(error = %e, "cannot number an operation");
                    return self
                        .refuse(origin, body, Some(&cmd), UserError::Internal)
                        .await;
                }
            }
        } else {
            0
        };
        let held = Held {
            cmd,
            text: body.to_string(),
            op,
            room_id: origin.msg.room_id.clone(),
            room_label: origin.room_label.clone(),
            thread: origin.msg.thread.clone(),
            requester: origin.msg.username.clone(),
            room: match origin.msg.room_kind {
                RoomKind::Direct => None,
                _ => origin.msg.room_name.clone(),
            },
            approvals,
            plan,
            backup,
            image_then,
            visible,
        };
        if confirm {
            let code = lock(&self.s.pending, "pending").ask_confirm(
                &origin.msg.username,
                held.clone(),
                self.s.policy_cfg.confirm_ttl,
            );
            let ttl = crate::clock::human(self.s.policy_cfg.confirm_ttl);
            // The need for other people is said now, not only after confirming.
            let second = match held.approvals {
                0 => String::new(),
                1 => format!(
                    "\nIt then needs a second person: another user who may run it types `approve #{}`.",
                    held.op
                ),
                n => format!(
                    "\nIt then needs {n} more people: {n} different users who may run it each type `approve #{}`.",
                    held.op
                ),
            };
            let text = format!(
                "#{op} {plan}\n@{user}, type `confirm {code}` within {ttl} to go ahead, or `cancel #{op}`.{second}",
                op = held.op,
                plan = held.plan.clone().unwrap_or_else(|| ops::plan_summary(
                    &held.cmd,
                    &self.s.config,
                    &self.s.store,
                    self.s.clock.now_ms(),
                )),
                user = origin.msg.username,
            );
            let buttons = [
                Button {
                    label: "Confirm".into(),
                    message: format!("confirm {code}"),
                },
                Button {
                    label: "Cancel".into(),
                    message: format!("cancel #{}", held.op),
                },
            ];
            if let Err(e) = self
                .s
                .chat
                .post_with_buttons(
                    &origin.msg.room_id,
                    origin.msg.thread.as_deref(),
                    &text,
                    &buttons,
                )
                .await
            {
                tracing::error!(error = %e, "could not ask for confirmation");
            }
            self.audit(
                origin,
                body,
                Some(&held.cmd),
                AuditDecision::ConfirmationRequested,
                None,
                Some(held.op),
                None,
            );
            return;
        }
        self.after_confirmation(origin, held).await;
    }

    /// The backup a restore or verify of one environment will run, decided when it is asked.
    fn choose_backup(&self, cmd: &Command) -> Result<Option<ChosenBackup>, UserError> {
        let (env, src, which, offsite) = match cmd {
            Command::Restore {
                env,
                backup,
                from,
                offsite,
                ..
            } => (env, from.as_ref().unwrap_or(env), backup.clone(), *offsite),
            Command::Verify {
                env: Some(env),
                backup,
                offsite,
            } => (
                env,
                env,
                backup.clone().unwrap_or(BackupRef::Latest),
                *offsite,
            ),
            _ => return Ok(None),
        };
        let e = self
            .s
            .config
            .environments
            .get(env)
            .cloned()
            .unwrap_or_else(|| crate::config::EnvironmentConfig::named(env));
        ops::operation::choose_backup(&self.s.store, &e, src, &which, offsite).map(Some)
    }

    /// The image `env`'s app runs now, when the cluster says.
    async fn current_image(&self, env: &str) -> Option<String> {
        let (c, e) = (
            self.s.clusters.get(env)?,
            self.s.config.environments.get(env)?,
        );
        let d = c.deployment(&e.deployment).await.ok()?;
        crate::cluster::rollout::current_image(&d, Some(e.container()))
    }

    /// What changed since `held` was asked for that its decision rested on, if anything: the
    /// environment's lock, the requester's right to run it (today's policy and roles), and the
    /// state its plan read (the app's image, the backup it names). Checked at every step from
    /// the question to the start: at `confirm` and at each `approve`.
    async fn changed_since_asked(&self, held: &Held) -> Option<UserError> {
        let cmd = &held.cmd;
        let changed = |what: String| UserError::ChangedSinceAsked {
            op: held.op,
            what,
            requester: held.requester.clone(),
            action: doing(cmd),
        };
        if cmd.is_mutating() && !matches!(cmd, Command::Lock { .. } | Command::Unlock { .. }) {
            let envs: Vec<String> = match cmd.env() {
                Some(e) => vec![e.to_string()],
                None => self.s.config.environments.keys().cloned().collect(),
            };
            for env in envs {
                if self.s.policy.allowed_when_locked(&env, cmd.policy_name()) {
                    continue;
                }
                match self.s.store.env_lock(&env) {
                    Ok(Some(l)) => {
                        return Some(changed(format!(
                            "{env} was locked by @{} at {}{}",
                            l.by,
                            clock_time(l.at_ms),
                            l.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                        )));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Unknown is not unlocked: the step fails rather than run into a freeze.
                        tracing::error!(error = %e, %env, "cannot read the environment's lock");
                        return Some(UserError::Internal);
                    }
                }
            }
        }
        let roles = if self.s.policy.needs_roles(cmd) {
            match self.requester_roles(&held.requester).await {
                Ok(r) => r,
                Err(e) => return Some(e),
            }
        } else {
            Vec::new()
        };
        let now = self.s.policy.authorize(
            cmd,
            &Requester {
                username: &held.requester,
                roles: &roles,
                room: held.room.as_deref(),
            },
        );
        match now {
            Decision::Deny { reason } => {
                return Some(changed(format!(
                    "@{} may no longer run it ({})",
                    held.requester,
                    reason.trim_end_matches('.')
                )));
            }
            Decision::Allow { approvals, .. } if approvals > held.approvals => {
                return Some(changed(format!(
                    "the policy now asks for {}",
                    crate::policy::approvals(approvals)
                )));
            }
            Decision::Allow { .. } => {}
        }
        if let Some(b) = &held.backup
            && !crate::catalog::list(&self.s.store, Some(&b.env))
                .iter()
                .any(|r| r.job == b.job)
        {
            return Some(changed(format!(
                "{}'s backup `{}` left the catalog",
                b.env, b.name
            )));
        }
        if let (Some(then), Some(env)) = (&held.image_then, cmd.env())
            && let Some(now) = self.current_image(env).await
            && now != *then
        {
            return Some(changed(format!("{env} changed from `{then}` to `{now}`")));
        }
        None
    }

    /// A confirmed (or unconfirmed but allowed) command: ask for approval if needed, else run it.
    async fn after_confirmation(&self, origin: &Origin<'_>, held: Held) {
        if held.approvals > 0 {
            let op = held.op;
            let summary = describe(&held.cmd);
            // Registered whatever a panic elsewhere left behind: the chat is told it waits.
            lock(&self.s.pending, "pending").ask_approval(
                op,
                &held.requester,
                held.clone(),
                held.approvals,
                self.s.policy_cfg.approval_ttl,
            );
            let text = match held.approvals {
                1 => format!(
                    "#{op} {summary} needs a second person: another user who may run it types `approve #{op}`."
                ),
                n => format!(
                    "#{op} {summary} needs {n} more people: {n} different users who may run it each type `approve #{op}`."
                ),
            };
            self.reply(origin.msg, &text).await;
            self.audit(
                origin,
                &held.text,
                Some(&held.cmd),
                AuditDecision::ApprovalRequested,
                None,
                Some(op),
                None,
            );
            return;
        }
        self.run(origin, held).await;
    }

    async fn approve(&self, origin: &Origin<'_>, body: &str, cmd: &Answer, op: u64) {
        let held = lock(&self.s.pending, "pending")
            .peek_approval(op)
            .map(|h| h.payload.clone());
        let Some(held) = held else {
            let e = UserError::Refused(crate::policy::PendingError::UnknownOp(op).to_string());
            return self.refuse(origin, body, Some(cmd), e).await;
        };
        // The approver must be allowed to run the command there too.
        match self.decide(origin, &held.cmd).await {
            Ok(Decision::Allow { .. }) => {}
            Ok(Decision::Deny { reason }) => {
                let e = UserError::NotAllowed {
                    action: format!("approve #{op} ({})", describe(&held.cmd)),
                    reason,
                };
                return self.refuse(origin, body, Some(cmd), e).await;
            }
            Err(e) => return self.refuse(origin, body, Some(cmd), e).await,
        }
        if let Some(e) = self.changed_since_asked(&held).await {
            // What was asked for no longer holds: the request ends here, whoever approves next.
            lock(&self.s.pending, "pending").drop_approval(op);
            return self.refuse(origin, body, Some(&held.cmd), e).await;
        }
        let taken = lock(&self.s.pending, "pending").approve(op, &origin.msg.username);
        let summary = describe(&held.cmd);
        match taken {
            Ok(Approval::Counted {
                requester,
                approvers,
                missing,
            }) => {
                let needed = held.approvals;
                self.reply(
                    origin.msg,
                    &format!(
                        "#{op} {summary}: approved by {} ({} of {needed}). It still needs {}: another user who may run it types `approve #{op}`.",
                        mentions(&approvers),
                        approvers.len(),
                        crate::policy::approvals(missing),
                    ),
                )
                .await;
                self.audit(
                    origin,
                    body,
                    Some(&held.cmd),
                    AuditDecision::Approved,
                    Some(format!(
                        "requested by {requester}; {} of {needed} approvals",
                        approvers.len()
                    )),
                    Some(op),
                    Some(format!("waiting for {}", crate::policy::approvals(missing))),
                );
            }
            Ok(Approval::Complete {
                requester,
                approvers,
                payload,
            }) => {
                if approvers.len() > 1 {
                    self.reply(
                        origin.msg,
                        &format!(
                            "#{op} {summary}: approved by {} ({n} of {n}); starting.",
                            mentions(&approvers),
                            n = approvers.len()
                        ),
                    )
                    .await;
                }
                self.audit(
                    origin,
                    body,
                    Some(&payload.cmd),
                    AuditDecision::Approved,
                    Some(format!("requested by {requester}")),
                    Some(op),
                    None,
                );
                self.run(origin, payload).await;
            }
            Err(e) => {
                self.refuse(origin, body, Some(cmd), UserError::Refused(e.to_string()))
                    .await
            }
        }
    }

    async fn cancel(&self, origin: &Origin<'_>, body: &str, cmd: &Answer, op: u64) {
        let found = lock(&self.s.pending, "pending").withdraw_op(op, &origin.msg.username);
        match found {
            Some(Ok(held)) => {
                self.reply(
                    origin.msg,
                    &format!("#{op} {} is cancelled.", describe(&held.cmd)),
                )
                .await;
                self.audit(
                    origin,
                    body,
                    Some(cmd),
                    AuditDecision::Allowed,
                    None,
                    Some(op),
                    Some("cancelled".into()),
                );
            }
            Some(Err(owner)) => {
                let e = UserError::NotAllowed {
                    action: format!("cancel #{op}"),
                    reason: format!("it is @{owner}'s request."),
                };
                self.refuse(origin, body, Some(cmd), e).await;
            }
            None => self.cancel_running(origin, body, cmd, op).await,
        }
    }

    /// `cancel #N` of a running operation: its requester, or anyone who may run the same command
    /// in that environment, stops it; the engine undoes what it changed.
    async fn cancel_running(&self, origin: &Origin<'_>, body: &str, cmd: &Answer, op: u64) {
        let running =
            self.s.engine.requester(OpId::new(op)).and_then(|owner| {
                Some((owner, self.s.store.get_op(OpId::new(op)).ok().flatten()?))
            });
        let Some((owner, rec)) = running else {
            let e = UserError::NoSuchOperation { op };
            return self.refuse(origin, body, Some(cmd), e).await;
        };
        if owner != origin.msg.username {
            let may = match command::parse(&rec.command, &self.s.grammar) {
                Ok(theirs) => self.decide(origin, &theirs).await,
                Err(e) => Err(e),
            };
            match may {
                Ok(Decision::Allow { .. }) => {}
                Ok(Decision::Deny { reason }) => {
                    let e = UserError::NotAllowed {
                        action: format!("cancel #{op} ({})", rec.command),
                        reason: format!("it is @{owner}'s and {reason}"),
                    };
                    return self.refuse(origin, body, Some(cmd), e).await;
                }
                Err(e) => return self.refuse(origin, body, Some(cmd), e).await,
            }
        }
        if !self.s.engine.cancel(OpId::new(op), &origin.msg.username) {
            let e = UserError::AlreadyFinished { op };
            return self.refuse(origin, body, Some(cmd), e).await;
        }
        self.reply(
            origin.msg,
            &format!(
                "Cancelling #{op} {}: it stops now and puts back what it changed; its progress message says how it ends.",
                rec.command
            ),
        )
        .await;
        self.audit(
            origin,
            body,
            Some(cmd),
            AuditDecision::Allowed,
            None,
            Some(op),
            Some("cancel requested".into()),
        );
    }

    /// A refusal if the command's environment is locked against it.
    fn locked(&self, cmd: &Command) -> Option<UserError> {
        if !cmd.is_mutating() || matches!(cmd, Command::Lock { .. } | Command::Unlock { .. }) {
            return None;
        }
        let envs: Vec<String> = match cmd.env() {
            Some(e) => vec![e.to_string()],
            None => self.s.config.environments.keys().cloned().collect(),
        };
        for env in envs {
            if self.s.policy.allowed_when_locked(&env, cmd.policy_name()) {
                continue;
            }
            if let Ok(Some(l)) = self.s.store.env_lock(&env) {
                return Some(UserError::Locked {
                    env: env.clone(),
                    by: l.by,
                    ago: ago(l.at_ms, self.s.clock.now_ms()),
                    reason: l.reason,
                });
            }
        }
        None
    }

    async fn run(&self, origin: &Origin<'_>, held: Held) {
        if ops::operation::is_operation(&held.cmd) {
            return self.start_operation(origin, held).await;
        }
        if let Command::BackupNow { env: None } = &held.cmd {
            // One operation per environment, each with its own number.
            for env in self.s.config.environments.keys() {
                let mut one = held.clone();
                one.cmd = Command::BackupNow {
                    env: Some(env.clone()),
                };
                let Ok(op) = self.s.store.next_op_id() else {
                    tracing::error!(%env, "cannot number an operation; not starting it");
                    continue;
                };
                one.op = op.get();
                Box::pin(self.start_operation(origin, one)).await;
            }
            return;
        }
        if let Command::Verify {
            env: None,
            backup,
            offsite,
        } = &held.cmd
        {
            // The newest (or named) backup of each environment that has one, each its own operation.
            let envs = self.envs_with_backup(backup.as_ref());
            if envs.is_empty() {
                let _ = self
                    .s
                    .chat
                    .post(
                        &held.room_id,
                        held.thread.as_deref(),
                        "No backups are known yet, so there is nothing to verify; `backup now ENV` takes one.",
                    )
                    .await;
                return;
            }
            for env in envs {
                let mut one = held.clone();
                let Ok(op) = self.s.store.next_op_id() else {
                    tracing::error!(%env, "cannot number an operation; not starting it");
                    continue;
                };
                one.cmd = Command::Verify {
                    env: Some(env),
                    backup: backup.clone(),
                    offsite: *offsite,
                };
                one.op = op.get();
                Box::pin(self.start_operation(origin, one)).await;
            }
            return;
        }
        let roles = lock(&self.s.roles, "role cache")
            .get(&origin.msg.username, Duration::MAX)
            .unwrap_or_default();
        let result = ops::execute(
            &held.cmd,
            &ops::Context {
                chat: &self.s.chat,
                store: &self.s.store,
                clusters: &self.s.clusters,
                config: &self.s.config,
                grammar: &self.s.grammar,
                policy: &self.s.policy,
                user: &held.requester,
                room_id: &held.room_id,
                thread: held.thread.as_deref(),
                op: held.op,
                clock: self.s.clock,
                visible: held.visible.as_deref(),
                roles: &roles,
                help_for: &|name, sample| {
                    let room = match origin.msg.room_kind {
                        RoomKind::Direct => None,
                        _ => origin.msg.room_name.as_deref(),
                    };
                    self.s.policy.where_allowed(
                        name,
                        sample,
                        &Requester {
                            username: &origin.msg.username,
                            roles: &roles,
                            room,
                        },
                    )
                },
            },
        )
        .await;
        let (outcome, text) = match result {
            Ok(Some(text)) => ("done".to_string(), Some(text)),
            Ok(None) => ("done".to_string(), None),
            Err(e) => (format!("failed: {}", e.label()), Some(e.to_string())),
        };
        if let Some(t) = text {
            self.reply_held(&held, &t).await;
        }
        let origin_label = Origin {
            msg: origin.msg,
            room_label: held.room_label.clone(),
        };
        let decision = if held.cmd.is_mutating() {
            AuditDecision::Allowed
        } else {
            AuditDecision::AllowedReadOnly
        };
        self.audit(
            &origin_label,
            &held.text,
            Some(&held.cmd),
            decision,
            None,
            (held.op > 0).then_some(held.op),
            Some(outcome),
        );
    }

    async fn start_operation(&self, origin: &Origin<'_>, held: Held) {
        let label = Origin {
            msg: origin.msg,
            room_label: held.room_label.clone(),
        };
        match self
            .s
            .engine
            .start_planned(
                &held.cmd,
                held.backup.clone(),
                OpId::new(held.op),
                &held.requester,
                (&held.room_id, &held.room_label),
                held.thread.as_deref(),
            )
            .await
        {
            Ok(()) => self.audit(
                &label,
                &held.text,
                Some(&held.cmd),
                AuditDecision::Allowed,
                None,
                Some(held.op),
                Some("started".into()),
            ),
            Err(e) => {
                self.reply_held(&held, &e.to_string()).await;
                self.audit(
                    &label,
                    &held.text,
                    Some(&held.cmd),
                    AuditDecision::Refused,
                    Some(e.to_string()),
                    Some(held.op),
                    None,
                );
            }
        }
    }

    /// One audit record for a whole flood window: how many messages were refused, and the first.
    fn audit_flood(&self, user: &str, f: &Flood) {
        let entry = AuditEntry {
            at_ms: f.since_ms,
            user: user.to_string(),
            room: f.room.clone(),
            text: f.first.chars().take(500).collect(),
            decision: AuditDecision::Refused,
            reason: Some(format!(
                "rate limited: {} message{} in {} s refused, one answer given",
                f.count,
                if f.count == 1 { "" } else { "s" },
                ((f.last_ms - f.since_ms) / 1000).max(0)
            )),
            outcome: Some(format!("rate_limited ×{}", f.count)),
            ..AuditEntry::default()
        };
        crate::telemetry::metrics()
            .commands
            .get_or_create(&crate::telemetry::labels(&[
                ("command", "(unparsed)"),
                ("outcome", "rate_limited"),
            ]))
            .inc_by(f.count);
        if let Err(e) = self.s.store.audit(&entry) {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Writes the audit records of flood windows that have ended (all of them with `all`).
    fn flush_floods(&self, all: bool) {
        let now = self.s.clock.now_ms();
        let ended: Vec<(String, Flood)> = {
            let mut f = lock(&self.s.flood, "flood windows");
            let done: Vec<String> = f
                .iter()
                .filter(|(_, v)| all || v.until_ms <= now)
                .map(|(k, _)| k.clone())
                .collect();
            done.into_iter()
                .filter_map(|k| f.remove(&k).map(|v| (k, v)))
                .collect()
        };
        for (user, f) in ended {
            self.audit_flood(&user, &f);
        }
    }

    async fn refuse(
        &self,
        origin: &Origin<'_>,
        body: &str,
        cmd: Option<&(dyn Asked + Sync)>,
        e: UserError,
    ) {
        tracing::info!(user = %origin.msg.username, command = %crate::telemetry::short(body), reason = e.label(), "refused");
        self.reply(origin.msg, &e.to_string()).await;
        self.audit(
            origin,
            body,
            cmd,
            AuditDecision::Refused,
            Some(e.to_string()),
            None,
            None,
        );
    }

    /// The environments whose catalog holds `backup` (their newest when `None`).
    fn envs_with_backup(&self, backup: Option<&crate::command::BackupRef>) -> Vec<String> {
        let which = backup.unwrap_or(&crate::command::BackupRef::Latest);
        self.s
            .config
            .environments
            .keys()
            .filter(|e| crate::catalog::find(&self.s.store, e, which).is_some())
            .cloned()
            .collect()
    }

    /// Answers a message where it was said, with every suggested command in a form that works there.
    async fn reply(&self, msg: &Incoming, text: &str) {
        let text = self.typable(text, msg.room_kind);
        self.reply_to(&msg.room_id, msg.thread.as_deref(), &text)
            .await;
    }

    /// `text` with the commands it suggests written as they work in a room of `kind`.
    fn typable(&self, text: &str, kind: RoomKind) -> String {
        let prefix = self.s.prefixes.first().map(String::as_str).unwrap_or("");
        crate::command::typable_hints(text, prefix, kind)
    }

    /// Answers a held command in the room it was asked in (a direct message when its label is a
    /// user's), with its suggestions written as they work there.
    async fn reply_held(&self, held: &Held, text: &str) {
        let kind = if held.room_label.starts_with('@') {
            RoomKind::Direct
        } else {
            RoomKind::Channel
        };
        let text = self.typable(text, kind);
        self.reply_to(&held.room_id, held.thread.as_deref(), &text)
            .await;
    }

    async fn reply_to(&self, room: &str, thread: Option<&str>, text: &str) {
        if let Err(e) = self.s.chat.post(room, thread, text).await {
            tracing::error!(error = %e, room, "could not answer a command");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        origin: &Origin<'_>,
        text: &str,
        cmd: Option<&(dyn Asked + Sync)>,
        decision: AuditDecision,
        reason: Option<String>,
        op: Option<u64>,
        outcome: Option<String>,
    ) {
        let entry = AuditEntry {
            at_ms: self.s.clock.now_ms(),
            user: origin.msg.username.clone(),
            room: origin.room_label.clone(),
            text: text.chars().take(500).collect(),
            command: cmd.map(|c| c.describe()).unwrap_or_default(),
            env: cmd.and_then(|c| c.env().map(str::to_string)),
            decision,
            reason,
            op: op.map(OpId::new),
            outcome,
            ..AuditEntry::default()
        };
        let name = cmd
            .map(|c| c.policy_name().to_string())
            .unwrap_or_else(|| "(unparsed)".into());
        let outcome = entry
            .outcome
            .clone()
            .unwrap_or_else(|| entry.decision.to_string());
        crate::telemetry::metrics()
            .commands
            .get_or_create(&crate::telemetry::labels(&[
                ("command", &name),
                ("outcome", &outcome),
            ]))
            .inc();
        if let Err(e) = self.s.store.audit(&entry) {
            tracing::error!(error = %e, "audit write failed");
        }
    }
}

/// A command in normal form, for the audit log and messages.
pub fn describe(cmd: &Command) -> String {
    ops::describe(cmd)
}

fn ago(at_ms: i64, now_ms: i64) -> String {
    crate::clock::ago(at_ms, now_ms)
}

/// `10:31 UTC`: when something happened today, as a refusal names it.
fn clock_time(at_ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at_ms)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_else(|| "an unknown time".into())
}

/// `@bob`, `@bob and @carol`, `@bob, @carol and @dave`.
fn mentions(users: &[String]) -> String {
    let at: Vec<String> = users.iter().map(|u| format!("@{u}")).collect();
    match at.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What not starting `cmd` means, as a refusal says it (`not deploying`).
fn doing(cmd: &Command) -> String {
    match cmd {
        Command::Deploy { .. } => "deploying".into(),
        Command::Rollback { .. } => "rolling back".into(),
        Command::Scale { .. } => "scaling".into(),
        Command::BackupNow { .. } => "backing up".into(),
        Command::BackupPrune { .. } => "pruning".into(),
        Command::Restore { .. } => "restoring".into(),
        Command::Verify { .. } => "verifying".into(),
        Command::Lock { .. } => "locking".into(),
        Command::Unlock { .. } => "unlocking".into(),
        Command::Runbook { name, .. } => format!("running {name}"),
        other => format!("running `{}`", describe(other)),
    }
}

/// `cmd` as its plan names it: a restore or verify of the backup chosen when it was asked.
fn planned(cmd: &Command, chosen: Option<&ChosenBackup>) -> Command {
    let Some(b) = chosen else {
        return cmd.clone();
    };
    let mut cmd = cmd.clone();
    match &mut cmd {
        Command::Restore { backup, .. } => *backup = BackupRef::Named(b.job.clone()),
        Command::Verify { backup, .. } => *backup = Some(BackupRef::Named(b.job.clone())),
        _ => {}
    }
    cmd
}

/// The chat server's time, for judging a message's `ts`: its age is measured on the wall clock
/// the server stamped it with, whatever clock the operations follow.
fn message_clock_ms() -> i64 {
    Clock::System.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_beyond_the_clock_skew_never_moves_a_read_mark() {
        let now = 1_800_000_000_000;
        assert_eq!(mark_to_record(now, now), Some(now));
        assert_eq!(mark_to_record(now - 5_000, now), Some(now - 5_000));
        assert_eq!(
            mark_to_record(now + 60_000, now),
            Some(now + 60_000),
            "drift"
        );
        assert_eq!(
            mark_to_record(4_102_444_800_000, now),
            None,
            "the year 2100"
        );
        assert_eq!(mark_to_record(i64::MAX, i64::MAX), Some(i64::MAX));
    }

    fn live(ts_ms: i64) -> Incoming {
        Incoming {
            id: "m1".into(),
            room_id: "R".into(),
            room_name: Some("ops".into()),
            room_kind: RoomKind::Channel,
            user_id: "u1".into(),
            username: "alice".into(),
            text: "/scale test 2".into(),
            thread: None,
            ts_ms,
            caught_up: false,
            redelivered: false,
        }
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn a_flood_is_answered_once_per_window_and_audited_once_with_its_count() {
        let mut f = HashMap::new();
        let who = ("bob", "ops", "/ping 1");
        assert_eq!(flood_step(&mut f, who, 0, Some(2)), (true, None));
        for t in 1..50 {
            assert_eq!(flood_step(&mut f, who, t * 10, Some(2)), (false, None));
        }
        // The window is over: the next refusal is answered, and the last window is handed back.
        let (answer, ended) = flood_step(&mut f, who, 2_500, Some(2));
        assert!(answer);
        let ended = ended.unwrap();
        assert_eq!((ended.count, ended.first.as_str()), (50, "/ping 1"));
        // An accepted message closes the window too.
        let (answer, ended) = flood_step(&mut f, who, 2_600, None);
        assert!(!answer && ended.unwrap().count == 1);
        assert!(f.is_empty());
    }

    #[test]
    fn a_fresh_live_message_may_run() {
        assert_eq!(never_a_new_command(&live(1_000), 2_000, TEN_MIN), None);
    }

    #[test]
    fn a_re_sent_live_message_never_runs_whatever_its_age() {
        let mut m = live(1_000);
        m.redelivered = true;
        assert!(never_a_new_command(&m, 1_001, TEN_MIN).is_some());
    }

    #[test]
    fn a_live_message_older_than_the_catch_up_horizon_never_runs() {
        let now = 1_000 + TEN_MIN.as_millis() as i64 + 1;
        assert!(never_a_new_command(&live(1_000), now, TEN_MIN).is_some());
    }

    #[test]
    fn a_caught_up_message_is_judged_by_its_read_mark_not_its_marks_of_change() {
        let mut m = live(1_000);
        m.caught_up = true;
        m.redelivered = true;
        assert_eq!(never_a_new_command(&m, 2_000, TEN_MIN), None);
    }
}
