//! The operation engine: one journaled task per operation, one operation per environment, a progress message edited in place, resume after a crash or shutdown, cancel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::operation::{self, Sources, Step, Undo};
use super::progress;
use crate::chat::{Chat, MessageRef};
use crate::clock::Clock;
use crate::cluster::rollout;
use crate::cluster::{Cluster, ClusterError, Clusters};
use crate::command::{self, Command, Grammar};
use crate::config::{Config, EnvironmentConfig};
use crate::error::{Holder, UserError};
use crate::journal::{ChosenBackup, Facts, JOURNAL_VERSION, LockKey, OpId, OpSpec, StepKind};
use crate::store::{AuditDecision, AuditEntry, OpRecord, OpState, StepState, Store};

pub(super) const ROLLOUT_LIMIT: Duration = Duration::from_secs(30 * 60);
pub(super) const JOB_LIMIT: Duration = Duration::from_secs(60 * 60);
/// How often a step that reports nothing has its elapsed time shown.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Restores and test-restores of big databases take long.
pub(super) const RESTORE_LIMIT: Duration = Duration::from_secs(4 * 60 * 60);

/// Why a step failed, keeping what kind of failure it was (a cluster error stays retryable,
/// not-found or forbidden); its text is what the progress message shows.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// A Job template did not render (a placeholder without a value, YAML that is not a Job).
    #[error("{0}")]
    Template(#[from] crate::cluster::jobs::TemplateError),
    /// The journal could not be written: the operation stops before acting on it.
    #[error("{0}")]
    Journal(String),
    /// A Job the step ran ended in failure.
    #[error("{0}")]
    Job(String),
    /// The app did not answer its smoke test as expected.
    #[error("{0}")]
    Smoke(String),
    /// Anything else, said for people.
    #[error("{0}")]
    Step(String),
}

impl OpError {
    /// Whether running the step again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, OpError::Cluster(e) if e.is_retryable())
    }

    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::Cluster(e) => e.label(),
            OpError::Template(_) => "template",
            OpError::Journal(_) => "journal",
            OpError::Job(_) => "job",
            OpError::Smoke(_) => "smoke",
            OpError::Step(_) => "step",
        }
    }
}

impl From<String> for OpError {
    fn from(s: String) -> OpError {
        OpError::Step(s)
    }
}

/// How a step went.
pub(crate) enum StepEnd {
    Done(String),
    Failed(OpError),
    /// Shutdown: stop here, resume on restart.
    Interrupted,
    Cancelled,
}

impl StepEnd {
    /// A step failed for a reason said in words.
    pub(crate) fn failed(why: String) -> StepEnd {
        StepEnd::Failed(OpError::Step(why))
    }
}

/// Who asked for an operation, where, and by which message.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub user: &'a str,
    pub room_id: &'a str,
    /// The room's label (`#ops`, `@alice`).
    pub room: &'a str,
    pub thread: Option<&'a str>,
    /// The chat message whose command this is (`None` for a schedule).
    pub origin: Option<&'a str>,
}

/// Runs operations. Cheap to clone.
pub struct Engine<C: Chat> {
    pub(super) inner: Arc<Inner<C>>,
}

impl<C: Chat> Clone for Engine<C> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

pub(super) struct Inner<C: Chat> {
    pub(super) chat: C,
    pub(super) store: Store,
    clusters: Clusters,
    pub(super) config: Arc<Config>,
    grammar: Grammar,
    shutdown: CancellationToken,
    cancels: Mutex<HashMap<OpId, CancellationToken>>,
    /// Who cancelled a running operation, until it has stopped.
    cancelled_by: Mutex<HashMap<OpId, String>>,
    /// What each running operation's progress message last showed, and when (for the heartbeat).
    shown: Mutex<HashMap<OpId, (OpRecord, tokio::time::Instant)>>,
    tasks: tokio_util::task::TaskTracker,
    pub(super) http: reqwest::Client,
    clock: Clock,
}

impl<C: Chat> Engine<C> {
    pub fn new(
        chat: C,
        store: Store,
        clusters: Clusters,
        config: Arc<Config>,
        grammar: Grammar,
        shutdown: CancellationToken,
        clock: Clock,
    ) -> Engine<C> {
        crate::tls::install_crypto_provider();
        Engine {
            inner: Arc::new(Inner {
                chat,
                store,
                clusters,
                config,
                grammar,
                shutdown,
                cancels: Mutex::new(HashMap::new()),
                cancelled_by: Mutex::new(HashMap::new()),
                shown: Mutex::new(HashMap::new()),
                tasks: tokio_util::task::TaskTracker::new(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                clock,
            }),
        }
    }

    /// The clock operations read time from.
    pub fn clock(&self) -> Clock {
        self.inner.clock
    }

    /// Now on the engine's clock, in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Starts `cmd` as operation `op`: takes the environment, journals, posts the progress message
    /// and runs in the background. Refused (naming the holder) when the environment is busy.
    pub async fn start(
        &self,
        cmd: &Command,
        op: OpId,
        user: &str,
        room: (&str, &str),
        thread: Option<&str>,
    ) -> Result<(), UserError> {
        let asked = Asked {
            user,
            room_id: room.0,
            room: room.1,
            thread,
            origin: None,
        };
        self.start_planned(cmd, None, op, asked, || {}).await
    }

    /// As [`Engine::start`], running the backup `planned` names when the question named one
    /// (a restore or verify of `latest` runs what its plan said, not a newer backup). `journaled`
    /// runs once the operation is journaled and before that is made durable, so that what it
    /// records (the audit record) is written with the journal, before anything acts.
    pub async fn start_planned(
        &self,
        cmd: &Command,
        planned: Option<ChosenBackup>,
        op: OpId,
        asked: Asked<'_>,
        journaled: impl FnOnce() + Send,
    ) -> Result<(), UserError> {
        let Asked {
            user,
            room_id,
            room,
            thread,
            origin,
        } = asked;
        let env = cmd.env().ok_or(UserError::Internal)?.to_string();
        let s = &self.inner;
        let e = s.config.environment(&env);
        if let (Command::Deploy { version, .. }, Some(c)) = (cmd, s.clusters.get(&env))
            && let Ok(d) = c.deployment(&e.deployment).await
            && rollout::current_image(&d, Some(e.container())).as_deref()
                == Some(super::image_for(&e, version).as_str())
        {
            return Err(UserError::AlreadyThere {
                env,
                version: version.clone(),
            });
        }
        let spec = operation::resolve(
            cmd,
            &env,
            &e,
            Sources {
                store: &s.store,
                grammar: &s.grammar,
                chosen: planned,
            },
        )?;
        let keys = operation::locks(&spec, &env);
        let mut taken = Vec::new();
        for key in &keys {
            let got = s
                .store
                .acquire_env_op(key, op)
                .map_err(|_| UserError::Internal);
            let holder = match got {
                Ok(Ok(())) => {
                    taken.push(key.clone());
                    continue;
                }
                Ok(Err(holder)) => holder,
                Err(e) => {
                    self.release(&taken, op).await;
                    return Err(e);
                }
            };
            self.release(&taken, op).await;
            let now = self.now_ms();
            return Err(UserError::Busy {
                env,
                op: holder.get(),
                holder: s.store.get_op(holder).ok().flatten().map(|h| Holder {
                    command: h
                        .command
                        .split_whitespace()
                        .next()
                        .unwrap_or("an operation")
                        .to_string(),
                    by: super::who(&h.user),
                    ago: crate::clock::ago(h.started_ms, now),
                }),
            });
        }
        let rec = OpRecord {
            id: op,
            env: env.clone(),
            v: JOURNAL_VERSION,
            command: super::describe(cmd),
            steps: operation::steps(&spec, &env, &e),
            spec: Some(spec),
            user: user.to_string(),
            room_id: room_id.to_string(),
            thread: thread.map(str::to_string),
            message_id: Some(s.chat.new_message_id()),
            state: OpState::Running,
            started_ms: self.now_ms(),
            finished_ms: None,
            facts: Facts {
                locks: keys.clone(),
                ..Facts::default()
            },
            legacy_data: Default::default(),
            summary: None,
            mark: OpRecord::new_mark(),
            room: room.trim_start_matches('#').to_string(),
            origin: origin.map(str::to_string),
        };
        let journaled = match s.store.put_op(&rec) {
            Ok(()) => {
                journaled();
                s.store.flush_journal().await
            }
            Err(e) => Err(e),
        };
        if let Err(err) = journaled {
            self.release(&keys, op).await;
            tracing::error!(error = %err, "cannot journal the operation");
            return Err(UserError::Internal);
        }
        // The progress message's id was journaled with the operation: a restart between here
        // and the post posts it under the same id, never a second message.
        if let Some(id) = &rec.message_id
            && let Err(err) = s
                .chat
                .post_as(room_id, thread, id, &progress::render(&rec, self.now_ms()))
                .await
        {
            tracing::warn!(error = %err, "cannot post the progress message; the next edit posts it");
        }
        self.spawn(rec);
        Ok(())
    }

    /// Releases `keys` held by `op`, durably; a failure is logged (the start-up sweep releases
    /// any lock whose operation is not running).
    async fn release(&self, keys: &[LockKey], op: OpId) {
        for k in keys {
            if let Err(e) = self.inner.store.release_env_op(k, op) {
                tracing::error!(error = %e, op = op.get(), lock = %k, "cannot release a lock");
            }
        }
        if let Err(e) = self.inner.store.flush_journal().await {
            tracing::error!(error = %e, op = op.get(), "cannot flush the released locks");
        }
    }

    fn spawn(&self, rec: OpRecord) {
        let token = self.inner.shutdown.child_token();
        if let Ok(mut c) = self.inner.cancels.lock() {
            c.insert(rec.id, token.clone());
        }
        let me = self.clone();
        self.inner.tasks.spawn(async move {
            let id = rec.id;
            me.drive(rec, token).await;
            if let Ok(mut c) = me.inner.cancels.lock() {
                c.remove(&id);
            }
        });
    }

    /// Resumes every operation the journal says was running (after a crash or a shutdown).
    pub async fn resume_interrupted(&self) {
        let running = match self.inner.store.running_ops() {
            Ok(r) => r,
            Err(e) => {
                // Nothing can be resumed without the journal; the locks the operations hold stay
                // held (so nothing else starts on their environments) and the error says why.
                tracing::error!(error = %e, "cannot read the journal: interrupted operations are not resumed");
                return;
            }
        };
        for mut rec in running {
            if rec.mark.is_empty() {
                // Journaled before this version: give it a mark before it creates anything more.
                rec.mark = OpRecord::new_mark();
            }
            if rec.spec.is_none()
                && let Err(why) = self.upgrade(&mut rec)
            {
                rec.state = OpState::Failed;
                rec.summary = Some(format!("Could not resume after a restart: {why}"));
                self.finish(&mut rec).await;
                continue;
            }
            if let Err(why) = self.journal(&rec).await {
                rec.state = OpState::Failed;
                rec.summary = Some(format!("Could not resume after a restart: {why}"));
                self.finish(&mut rec).await;
                continue;
            }
            tracing::info!(op = rec.id.get(), command = %crate::telemetry::short(&rec.command), "resuming an interrupted operation");
            for k in rec.lock_keys() {
                if let Err(e) = self.inner.store.acquire_env_op(&k, rec.id) {
                    tracing::error!(error = %e, op = rec.id.get(), lock = %k, "cannot take the lock again");
                }
            }
            self.spawn(rec);
        }
        self.sweep_locks().await;
    }

    /// A record journaled before operations had a typed spec: its text is read once, here, and
    /// what it had already chosen (its backup) is kept; from now on it resumes from the spec.
    fn upgrade(&self, rec: &mut OpRecord) -> Result<(), String> {
        let cmd = command::parse(&rec.command, &self.inner.grammar).map_err(|e| e.to_string())?;
        let e = self.env_config(&rec.env);
        let spec = operation::resolve(
            &cmd,
            &rec.env,
            &e,
            Sources {
                store: &self.inner.store,
                grammar: &self.inner.grammar,
                chosen: rec.legacy_backup(),
            },
        )
        .map_err(|e| e.to_string())?;
        if rec.facts.locks.is_empty() {
            rec.facts.locks = operation::locks(&spec, &rec.env);
        }
        rec.spec = Some(spec);
        rec.v = JOURNAL_VERSION;
        rec.legacy_data.clear();
        Ok(())
    }

    /// Releases every lock whose operation is not running: an environment is never left held
    /// by an operation that has ended (a crash between its end and its release).
    async fn sweep_locks(&self) {
        let store = &self.inner.store;
        let Ok(held) = store.held_locks() else {
            return;
        };
        for (key, op) in held {
            let running = self
                .inner
                .cancels
                .lock()
                .map(|c| c.contains_key(&op))
                .unwrap_or(true);
            if !running {
                tracing::warn!(lock = %key, op = op.get(), "releasing a lock left by an operation that has ended");
                self.release(&[key], op).await;
            }
        }
    }

    /// The store the engine journals to.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// An environment's configuration (a bare one for an environment no longer configured).
    pub(crate) fn env_config(&self, env: &str) -> EnvironmentConfig {
        self.inner.config.environment(env)
    }

    /// Asks a running operation to stop at once and undo what it changed (a rollout being
    /// followed is abandoned and undone; a restore always scales the app back); `false` if none
    /// runs under that number.
    pub fn cancel(&self, op: OpId, by: &str) -> bool {
        match self
            .inner
            .cancels
            .lock()
            .ok()
            .and_then(|c| c.get(&op).cloned())
        {
            Some(t) => {
                if let Ok(mut c) = self.inner.cancelled_by.lock() {
                    c.insert(op, by.to_string());
                }
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// The running operation's requester, if `op` runs.
    pub fn requester(&self, op: OpId) -> Option<String> {
        self.inner.cancels.lock().ok()?.get(&op)?;
        self.inner.store.get_op(op).ok().flatten().map(|r| r.user)
    }

    /// Waits (bounded) for operations to reach a safe point after shutdown.
    pub async fn wait_idle(&self, limit: Duration) {
        self.inner.tasks.close();
        let _ = tokio::time::timeout(limit, self.inner.tasks.wait()).await;
    }

    /// Journals `rec` durably and edits its progress message; `Err` (what to report) when the
    /// journal write failed.
    pub(super) async fn save(&self, rec: &OpRecord) -> Result<(), OpError> {
        let journaled = self.journal(rec).await;
        self.show(rec).await;
        journaled
    }

    /// A progress tick: the record is written (not waited on to reach the disk) and shown.
    pub(super) async fn tick(&self, rec: &OpRecord) {
        if let Err(e) = self.inner.store.put_op(rec) {
            tracing::warn!(error = %e, op = rec.id.get(), "journal write of a progress tick failed");
        }
        self.show(rec).await;
    }

    /// Edits the progress message to show `rec`.
    async fn show(&self, rec: &OpRecord) {
        if let Ok(mut s) = self.inner.shown.lock() {
            if rec.state == OpState::Running {
                s.insert(rec.id, (rec.clone(), tokio::time::Instant::now()));
            } else {
                s.remove(&rec.id);
            }
        }
        if let Some(id) = &rec.message_id {
            let m = MessageRef {
                room_id: rec.room_id.clone(),
                id: id.clone(),
            };
            let text = progress::render(rec, self.now_ms());
            if let Err(e) = self.inner.chat.edit(&m, &text).await {
                // Perhaps it was never posted (a restart came first): post it under its id,
                // which cannot make a second one.
                if let Err(again) = self
                    .inner
                    .chat
                    .post_as(&rec.room_id, rec.thread.as_deref(), id, &text)
                    .await
                {
                    tracing::warn!(error = %e, post = %again, "cannot edit or post the progress message");
                }
            }
        }
    }

    /// While a step runs without news, shows its elapsed time: every `HEARTBEAT` the progress
    /// message is drawn again from what it last showed. Never ends; dropped when the step ends.
    async fn heartbeat(&self, op: OpId) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let stale = self.inner.shown.lock().ok().and_then(|s| {
                s.get(&op)
                    .filter(|(_, at)| at.elapsed() >= HEARTBEAT)
                    .map(|(r, _)| r.clone())
            });
            if let Some(rec) = stale {
                self.show(&rec).await;
            }
        }
    }

    /// Writes `rec` to the journal and waits until it is on disk; `Err` says what could not be
    /// recorded.
    pub(super) async fn journal(&self, rec: &OpRecord) -> Result<(), OpError> {
        let written = match self.inner.store.put_op(rec) {
            Ok(()) => self.inner.store.flush_journal().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| {
            tracing::error!(error = %e, op = rec.id.get(), "journal write failed");
            OpError::Journal(format!(
                "cannot write the operation's journal ({e}); stopping before acting on it"
            ))
        })
    }

    async fn finish(&self, rec: &mut OpRecord) {
        rec.finished_ms = Some(self.now_ms());
        // Journaled, then released, then shown: whoever reads the result may send the next
        // command at once and find the environment free. The end is released and reported even
        // when the journal cannot be written (logged by `journal`): a lock kept for a record
        // that cannot be saved would hold the environment.
        let _ = self.journal(rec).await;
        self.release(&rec.lock_keys(), rec.id).await;
        self.show(rec).await;
        if rec.message_id.is_none() {
            crate::chat::log_failure(
                "the operation's result",
                self.inner
                    .chat
                    .post(
                        &rec.room_id,
                        rec.thread.as_deref(),
                        &progress::render(rec, self.now_ms()),
                    )
                    .await,
            );
        }
        let outcome = format!("{:?}", rec.state).to_lowercase();
        let m = crate::telemetry::metrics();
        let command = rec
            .command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let secs =
            (rec.finished_ms.unwrap_or(rec.started_ms) - rec.started_ms).max(0) as f64 / 1000.0;
        m.operation_seconds
            .get_or_create(&crate::telemetry::labels(&[
                ("command", &command),
                ("state", &outcome),
            ]))
            .observe(secs);
        for s in rec.steps.iter().filter(|s| {
            s.kind == StepKind::Rollout && matches!(s.state, StepState::Done | StepState::Failed)
        }) {
            let o = if s.state == StepState::Done {
                "complete"
            } else {
                "failed"
            };
            m.rollouts
                .get_or_create(&crate::telemetry::labels(&[
                    ("env", &rec.env),
                    ("outcome", o),
                ]))
                .inc();
        }
        let entry = AuditEntry {
            at_ms: self.now_ms(),
            user: rec.user.clone(),
            room: if rec.room.is_empty() {
                rec.room_id.clone()
            } else {
                rec.room.clone()
            },
            text: rec.command.clone(),
            command: rec.command.clone(),
            env: Some(rec.env.clone()),
            decision: AuditDecision::Finished,
            reason: rec.summary.clone(),
            op: Some(rec.id),
            outcome: Some(rec.state.describe().to_string()),
            ..AuditEntry::default()
        };
        if let Err(e) = self.inner.store.audit(&entry) {
            tracing::error!(error = %e, op = rec.id.get(), "cannot write the operation's audit record");
        }
        if matches!(rec.state, OpState::Failed | OpState::RolledBack) {
            let text = format!(
                "🚨 #{} {} by {} failed: {}",
                rec.id,
                rec.command,
                super::who(&rec.user),
                crate::redact::outside(&rec.summary.clone().unwrap_or_default()),
            );
            self.alert(&rec.env, &text).await;
        }
    }

    /// Posts `text` into `env`'s alerts channel, paging the channel for production.
    pub(crate) async fn alert(&self, env: &str, text: &str) {
        let alerts = self
            .inner
            .config
            .environments
            .get(env)
            .and_then(|e| e.alerts_channel.clone())
            .unwrap_or_else(|| self.inner.config.rocketchat.alerts_channel.clone());
        crate::telemetry::metrics()
            .alerts
            .get_or_create(&crate::telemetry::labels(&[
                ("env", env),
                ("severity", "critical"),
            ]))
            .inc();
        if let Ok(room) = self.inner.chat.room_id(&alerts).await {
            let production = self
                .inner
                .config
                .environments
                .get(env)
                .is_some_and(|e| e.is_production(env));
            // Production failures page whoever is in the channel, as the alerter's do; the
            // page leads the message, the only place the chat boundary leaves one working.
            let text = format!("{}{text}", if production { "@here " } else { "" });
            crate::chat::log_failure(
                "an operation alert",
                crate::chat::post_alert(&self.inner.chat, &room, &text, env, true).await,
            );
        }
    }

    /// Runs the steps from the first unfinished one.
    async fn drive(&self, mut rec: OpRecord, token: CancellationToken) {
        let env = rec.env.clone();
        let e = self.env_config(&env);
        let Some(spec) = rec.spec.clone() else {
            rec.state = OpState::Failed;
            rec.summary = Some("the journal does not say what the operation is".into());
            return self.finish(&mut rec).await;
        };
        let Some(cluster) = self.inner.clusters.get(&env).cloned() else {
            rec.state = OpState::Failed;
            rec.summary = Some(format!("{env} has no cluster connection configured."));
            return self.finish(&mut rec).await;
        };
        let mut i = 0;
        while i < rec.steps.len() {
            if matches!(rec.steps[i].state, StepState::Done | StepState::Skipped) {
                i += 1;
                continue;
            }
            if rec.steps[i].state == StepState::Failed {
                break;
            }
            rec.steps[i].state = StepState::Running;
            if rec.steps[i].started_ms.is_none() {
                rec.steps[i].started_ms = Some(self.now_ms());
            }
            // Journal first: a step whose start cannot be written down does not run.
            let journaled = self.save(&rec).await;
            let rec_id = rec.id;
            let kind = rec.steps[i].kind.clone();
            let end = tokio::select! {
                end = async {
                    match journaled {
                        Ok(()) => {
                            let mut cx = Step { engine: self, cluster: &cluster, e: &e, rec: &mut rec, index: i };
                            operation::step(&spec, &kind, &mut cx).await
                        }
                        Err(why) => StepEnd::Failed(why),
                    }
                } => end,
                _ = token.cancelled() => {
                    if self.inner.shutdown.is_cancelled() { StepEnd::Interrupted } else { StepEnd::Cancelled }
                }
                _ = self.heartbeat(rec_id) => StepEnd::Interrupted,
            };
            match end {
                StepEnd::Done(detail) => {
                    rec.steps[i].state = StepState::Done;
                    rec.steps[i].detail = detail;
                    rec.steps[i].finished_ms = Some(self.now_ms());
                    i += 1;
                }
                StepEnd::Failed(err) => {
                    let detail = err.to_string();
                    tracing::info!(op = rec.id.get(), step = %kind.name(), kind = err.kind(), retryable = err.is_retryable(), "step failed");
                    crate::telemetry::metrics()
                        .step_failures
                        .get_or_create(&crate::telemetry::labels(&[
                            (
                                "command",
                                rec.command.split_whitespace().next().unwrap_or_default(),
                            ),
                            ("kind", err.kind()),
                        ]))
                        .inc();
                    rec.steps[i].state = StepState::Failed;
                    rec.steps[i].detail = detail.clone();
                    rec.steps[i].finished_ms = Some(self.now_ms());
                    return self.fail(rec, &spec, &cluster, &e, detail).await;
                }
                StepEnd::Cancelled => {
                    let by = self
                        .inner
                        .cancelled_by
                        .lock()
                        .ok()
                        .and_then(|mut c| c.remove(&rec.id))
                        .map(|u| format!("cancelled by {}", super::who(&u)))
                        .unwrap_or_else(|| "cancelled".into());
                    rec.steps[i].state = StepState::Failed;
                    rec.steps[i].detail = by.clone();
                    rec.steps[i].finished_ms = Some(self.now_ms());
                    rec.state = OpState::Cancelled;
                    return self.fail(rec, &spec, &cluster, &e, by).await;
                }
                StepEnd::Interrupted => {
                    // The journal keeps the step as running; the next start resumes here.
                    if let Err(e) = self.inner.store.put_op(&rec) {
                        tracing::warn!(error = %e, op = rec.id.get(), "cannot journal the stop; the step's start is journaled");
                    }
                    tracing::info!(op = rec.id.get(), step = %kind.name(), "stopping at a safe point for shutdown");
                    return;
                }
            }
        }
        rec.state = OpState::Succeeded;
        rec.summary = Some(operation::summary(&spec, &rec));
        self.finish(&mut rec).await;
    }

    /// After a failed or cancelled step: put back what the operation says it changed, then report.
    async fn fail(
        &self,
        mut rec: OpRecord,
        spec: &OpSpec,
        cluster: &Cluster,
        e: &EnvironmentConfig,
        why: String,
    ) {
        let undo = operation::undo(spec, &rec, e);
        for s in rec
            .steps
            .iter_mut()
            .filter(|s| s.state == StepState::Pending)
        {
            s.state = StepState::Skipped;
        }
        match undo {
            Undo::Revision {
                revision,
                version,
                step,
            } => {
                self.put_back(&mut rec, cluster, e, (revision, version, step), &why)
                    .await
            }
            Undo::ScaleBack | Undo::Nothing => {
                rec.summary = Some(format!("{} failed: {why}.", rec.command));
                if undo == Undo::ScaleBack {
                    // Still shown as running while the app is put back.
                    self.recover_after_restore(&mut rec, cluster, e, &why).await;
                }
                if rec.state != OpState::Cancelled {
                    rec.state = OpState::Failed;
                }
            }
        }
        if rec.state == OpState::Cancelled
            && let Some(summary) = rec.summary.take()
        {
            let failed = [
                format!("{} failed ({why})", rec.command),
                format!("{} failed: {why}", rec.command),
            ];
            let was = format!("{} was {why}", rec.command);
            rec.summary = Some(
                failed
                    .iter()
                    .fold(summary, |s, f| s.replacen(f.as_str(), &was, 1)),
            );
        }
        self.finish(&mut rec).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_error_keeps_the_nature_of_the_cluster_error_behind_it() {
        let forbidden = OpError::from(ClusterError::Forbidden {
            action: "patch deployments".into(),
            message: "no".into(),
        });
        assert_eq!(
            (forbidden.kind(), forbidden.is_retryable()),
            ("forbidden", false)
        );
        let down = OpError::from(ClusterError::Unavailable {
            action: "get deployments".into(),
            message: "connection refused".into(),
        });
        assert_eq!((down.kind(), down.is_retryable()), ("unavailable", true));
        assert!(down.to_string().contains("connection refused"));
        let said = OpError::from("no revision ran v9".to_string());
        assert_eq!((said.kind(), said.is_retryable()), ("step", false));
    }
}
