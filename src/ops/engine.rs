//! The operation engine: one journaled task per operation, one operation per environment, a progress message edited in place, resume after a crash or shutdown, cancel.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::progress;
use crate::chat::{Chat, MessageRef};
use crate::clock::Clock;
use crate::cluster::jobs::{self, JobEnd};
use crate::cluster::rollout::{self, RolloutState};
use crate::cluster::{Cluster, ClusterError, Clusters, HpaPolicy, RolloutOutcome, Workload};
use crate::command::{self, Command, Grammar, RollbackTarget};
use crate::config::{Config, EnvironmentConfig, SmokeConfig};
use crate::error::UserError;
use crate::store::{AuditEntry, OpRecord, OpState, StepRecord, StepState, Store};

pub(super) const ROLLOUT_LIMIT: Duration = Duration::from_secs(30 * 60);
pub(super) const JOB_LIMIT: Duration = Duration::from_secs(60 * 60);
/// Restores and test-restores of big databases take long.
pub(super) const RESTORE_LIMIT: Duration = Duration::from_secs(4 * 60 * 60);

/// Pure: the steps of an operation in an environment.
pub fn plan_steps(cmd: &Command, env: &str, e: &EnvironmentConfig) -> Vec<StepRecord> {
    let skipped = |name: &str, why: &str| StepRecord {
        state: StepState::Skipped,
        detail: why.into(),
        ..StepRecord::pending(name)
    };
    let smoke = || {
        if e.smoke.is_some() {
            StepRecord::pending("smoke test")
        } else {
            skipped("smoke test", "none configured")
        }
    };
    match cmd {
        Command::Deploy { no_backup, .. } => {
            let mut steps = Vec::new();
            let wanted = e.pre_deploy_backup.unwrap_or_else(|| e.is_production(env));
            steps.push(match (wanted, *no_backup) {
                (true, false) => StepRecord::pending("backup"),
                (true, true) => skipped("backup", "skipped with --no-backup"),
                (false, _) => skipped("backup", "not production"),
            });
            for r in &e.pre_deploy {
                steps.push(StepRecord::pending(&format!("runbook {r}")));
            }
            steps.push(StepRecord::pending("set image"));
            steps.push(StepRecord::pending("rollout"));
            steps.push(smoke());
            steps
        }
        Command::Rollback { .. } => vec![
            StepRecord::pending("undo"),
            StepRecord::pending("rollout"),
            smoke(),
        ],
        Command::Scale { .. } => vec![StepRecord::pending("scale")],
        Command::BackupNow { .. } => vec![StepRecord::pending("backup")],
        Command::Runbook { .. } => vec![StepRecord::pending("job")],
        Command::Restore {
            no_safety_backup, ..
        } => vec![
            if *no_safety_backup {
                skipped("safety backup", "skipped with --no-safety-backup")
            } else {
                StepRecord::pending("safety backup")
            },
            StepRecord::pending("scale down"),
            StepRecord::pending("restore"),
            StepRecord::pending("scale up"),
            smoke(),
        ],
        Command::Verify { .. } => vec![StepRecord::pending("verify")],
        Command::BackupPrune { .. } => vec![StepRecord::pending("prune")],
        _ => Vec::new(),
    }
}

/// Pure: the locks an operation takes. Changes to the app hold the environment; backups,
/// test-restores and pruning hold its backup volume, so that a long nightly verify never blocks
/// an urgent rollback; a restore, which changes both, holds both.
pub fn lock_keys(cmd: &Command, env: &str) -> Vec<String> {
    let backups = format!("{env}#backups");
    match cmd {
        Command::BackupNow { .. } | Command::Verify { .. } | Command::BackupPrune { .. } => {
            vec![backups]
        }
        Command::Restore { .. } => vec![env.to_string(), backups],
        _ => vec![env.to_string()],
    }
}

fn keys_of(rec: &OpRecord) -> Vec<String> {
    match rec.data.get("locks") {
        Some(k) => k.split(',').map(str::to_string).collect(),
        None => vec![rec.env.clone()],
    }
}

/// Whether a command runs as a journaled operation.
pub fn is_operation(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Deploy { .. }
            | Command::Rollback { .. }
            | Command::Scale { .. }
            | Command::BackupNow { env: Some(_) }
            | Command::BackupPrune { .. }
            | Command::Restore { .. }
            | Command::Verify { env: Some(_), .. }
            | Command::Runbook { .. }
    )
}

/// How a step went.
pub(super) enum StepEnd {
    Done(String),
    Failed(String),
    /// Shutdown: stop here, resume on restart.
    Interrupted,
    Cancelled,
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
    pub(super) config: Config,
    grammar: Grammar,
    shutdown: CancellationToken,
    cancels: Mutex<HashMap<u64, CancellationToken>>,
    /// Who cancelled a running operation, until it has stopped.
    cancelled_by: Mutex<HashMap<u64, String>>,
    tasks: tokio_util::task::TaskTracker,
    http: reqwest::Client,
    clock: Clock,
}

impl<C: Chat> Engine<C> {
    pub fn new(
        chat: C,
        store: Store,
        clusters: Clusters,
        config: Config,
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
        op: u64,
        user: &str,
        (room_id, room): (&str, &str),
        thread: Option<&str>,
    ) -> Result<(), UserError> {
        let env = cmd.env().ok_or(UserError::Internal)?.to_string();
        let s = &self.inner;
        let e = s
            .config
            .environments
            .get(&env)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(&env));
        if let (Command::Deploy { version, .. }, Some(c)) = (cmd, s.clusters.get(&env))
            && let Ok(d) = c.deployment(&e.deployment).await
            && rollout::current_image(&d, Some(e.container())).as_deref()
                == Some(super::image_for(&e, version).as_str())
        {
            return Err(UserError::Refused(format!(
                "{env} is already running {version}; nothing to do."
            )));
        }
        let mut data = super::backup::resolve_backup(&s.store, cmd, &env)?;
        let keys = lock_keys(cmd, &env);
        data.insert("locks".into(), keys.join(","));
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
                    for k in &taken {
                        let _ = s.store.release_env_op(k, op);
                    }
                    return Err(e);
                }
            };
            for k in &taken {
                let _ = s.store.release_env_op(k, op);
            }
            let who = s.store.get_op(holder).ok().flatten();
            let text = match who {
                Some(h) => {
                    let mins = ((self.now_ms() - h.started_ms) / 60_000).max(0);
                    format!(
                        "{env} is busy with {} #{holder} (started by {} {mins} min ago).",
                        h.command
                            .split_whitespace()
                            .next()
                            .unwrap_or("an operation"),
                        super::who(&h.user)
                    )
                }
                None => format!("{env} is busy with operation #{holder}."),
            };
            return Err(UserError::Refused(text));
        }
        let mut rec = OpRecord {
            id: op,
            env: env.clone(),
            command: super::describe(cmd),
            user: user.to_string(),
            room_id: room_id.to_string(),
            thread: thread.map(str::to_string),
            message_id: None,
            steps: plan_steps(cmd, &env, &e),
            state: OpState::Running,
            started_ms: self.now_ms(),
            finished_ms: None,
            data,
            summary: None,
            mark: OpRecord::new_mark(),
            room: room.trim_start_matches('#').to_string(),
        };
        let journaled = match s.store.put_op(&rec) {
            Ok(()) => s.store.flush_journal().await,
            Err(e) => Err(e),
        };
        if let Err(err) = journaled {
            for k in &keys {
                let _ = s.store.release_env_op(k, op);
            }
            tracing::error!(error = %err, "cannot journal the operation");
            return Err(UserError::Internal);
        }
        match s
            .chat
            .post(room_id, thread, &progress::render(&rec, self.now_ms()))
            .await
        {
            Ok(m) => {
                rec.message_id = Some(m.id);
                let _ = s.store.put_op(&rec);
            }
            Err(err) => tracing::warn!(error = %err, "cannot post the progress message"),
        }
        self.spawn(rec, cmd.clone());
        Ok(())
    }

    fn spawn(&self, rec: OpRecord, cmd: Command) {
        let token = self.inner.shutdown.child_token();
        if let Ok(mut c) = self.inner.cancels.lock() {
            c.insert(rec.id, token.clone());
        }
        let me = self.clone();
        self.inner.tasks.spawn(async move {
            let id = rec.id;
            me.drive(rec, cmd, token).await;
            if let Ok(mut c) = me.inner.cancels.lock() {
                c.remove(&id);
            }
        });
    }

    /// Resumes every operation the journal says was running (after a crash or a shutdown).
    pub async fn resume_interrupted(&self) {
        let running = self.inner.store.running_ops().unwrap_or_default();
        for mut rec in running {
            if rec.mark.is_empty() {
                // Journaled before this version: give it a mark before it creates anything more.
                rec.mark = OpRecord::new_mark();
                if let Err(e) = self.inner.store.put_op(&rec) {
                    tracing::error!(error = %e, op = rec.id, "cannot journal the operation's mark");
                }
            }
            match command::parse(&rec.command, &self.inner.grammar) {
                Ok(cmd) => {
                    tracing::info!(op = rec.id, command = %rec.command, "resuming an interrupted operation");
                    for k in keys_of(&rec) {
                        let _ = self.inner.store.acquire_env_op(&k, rec.id);
                    }
                    self.spawn(rec, cmd);
                }
                Err(e) => {
                    rec.state = OpState::Failed;
                    rec.summary = Some(format!("Could not resume after a restart: {e}"));
                    self.finish(&mut rec).await;
                }
            }
        }
    }

    /// Asks a running operation to stop at once and undo what it changed (a rollout being
    /// followed is abandoned and undone; a restore always scales the app back); `false` if none
    /// runs under that number.
    pub fn cancel(&self, op: u64, by: &str) -> bool {
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
    pub fn requester(&self, op: u64) -> Option<String> {
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
    pub(super) async fn save(&self, rec: &OpRecord) -> Result<(), String> {
        let journaled = self.journal(rec).await;
        self.show(rec).await;
        journaled
    }

    /// A progress tick: the record is written (not waited on to reach the disk) and shown.
    pub(super) async fn tick(&self, rec: &OpRecord) {
        if let Err(e) = self.inner.store.put_op(rec) {
            tracing::warn!(error = %e, op = rec.id, "journal write of a progress tick failed");
        }
        self.show(rec).await;
    }

    /// Edits the progress message to show `rec`.
    async fn show(&self, rec: &OpRecord) {
        if let Some(id) = &rec.message_id {
            let m = MessageRef {
                room_id: rec.room_id.clone(),
                id: id.clone(),
            };
            if let Err(e) = self
                .inner
                .chat
                .edit(&m, &progress::render(rec, self.now_ms()))
                .await
            {
                tracing::warn!(error = %e, "cannot edit the progress message");
            }
        }
    }

    /// Writes `rec` to the journal and waits until it is on disk; `Err` says what could not be
    /// recorded.
    pub(super) async fn journal(&self, rec: &OpRecord) -> Result<(), String> {
        let written = match self.inner.store.put_op(rec) {
            Ok(()) => self.inner.store.flush_journal().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| {
            tracing::error!(error = %e, op = rec.id, "journal write failed");
            format!("cannot write the operation's journal ({e}); stopping before acting on it")
        })
    }

    async fn finish(&self, rec: &mut OpRecord) {
        rec.finished_ms = Some(self.now_ms());
        let _ = self.save(rec).await;
        if rec.message_id.is_none() {
            let _ = self
                .inner
                .chat
                .post(
                    &rec.room_id,
                    rec.thread.as_deref(),
                    &progress::render(rec, self.now_ms()),
                )
                .await;
        }
        for k in keys_of(rec) {
            let _ = self.inner.store.release_env_op(&k, rec.id);
        }
        if let Err(e) = self.inner.store.flush_journal().await {
            tracing::error!(error = %e, op = rec.id, "cannot flush the released locks");
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
            s.name == "rollout" && matches!(s.state, StepState::Done | StepState::Failed)
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
            decision: "finished".into(),
            reason: rec.summary.clone(),
            op: Some(rec.id),
            outcome: Some(rec.state.describe().to_string()),
            ..AuditEntry::default()
        };
        let _ = self.inner.store.audit(&entry);
        if matches!(rec.state, OpState::Failed | OpState::RolledBack) {
            let alerts = self
                .inner
                .config
                .environments
                .get(&rec.env)
                .and_then(|e| e.alerts_channel.clone())
                .unwrap_or_else(|| self.inner.config.rocketchat.alerts_channel.clone());
            crate::telemetry::metrics()
                .alerts
                .get_or_create(&crate::telemetry::labels(&[
                    ("env", &rec.env),
                    ("severity", "critical"),
                ]))
                .inc();
            if let Ok(room) = self.inner.chat.room_id(&alerts).await {
                let production = self
                    .inner
                    .config
                    .environments
                    .get(&rec.env)
                    .is_some_and(|e| e.is_production(&rec.env));
                // Production failures page whoever is in the channel, as the alerter's do; the
                // page leads the message, the only place the chat boundary leaves one working.
                let text = format!(
                    "{}🚨 #{} {} by {} failed: {}",
                    if production { "@here " } else { "" },
                    rec.id,
                    rec.command,
                    super::who(&rec.user),
                    crate::redact::outside(&rec.summary.clone().unwrap_or_default()),
                );
                let _ = self.inner.chat.post(&room, None, &text).await;
            }
        }
    }

    /// Runs the steps from the first unfinished one.
    async fn drive(&self, mut rec: OpRecord, cmd: Command, token: CancellationToken) {
        let env = rec.env.clone();
        let e = self
            .inner
            .config
            .environments
            .get(&env)
            .cloned()
            .unwrap_or_else(|| EnvironmentConfig::named(&env));
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
            let name = rec.steps[i].name.clone();
            let end = tokio::select! {
                end = async {
                    match journaled {
                        Ok(()) => self.step(&name, &cmd, &cluster, &e, &mut rec, i).await,
                        Err(why) => StepEnd::Failed(why),
                    }
                } => end,
                _ = token.cancelled() => {
                    if self.inner.shutdown.is_cancelled() { StepEnd::Interrupted } else { StepEnd::Cancelled }
                }
            };
            match end {
                StepEnd::Done(detail) => {
                    rec.steps[i].state = StepState::Done;
                    rec.steps[i].detail = detail;
                    rec.steps[i].finished_ms = Some(self.now_ms());
                    i += 1;
                }
                StepEnd::Failed(detail) => {
                    rec.steps[i].state = StepState::Failed;
                    rec.steps[i].detail = detail.clone();
                    rec.steps[i].finished_ms = Some(self.now_ms());
                    return self.fail(rec, &cmd, &cluster, &e, detail).await;
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
                    return self.fail(rec, &cmd, &cluster, &e, by).await;
                }
                StepEnd::Interrupted => {
                    // The journal keeps the step as running; the next start resumes here.
                    let _ = self.inner.store.put_op(&rec);
                    tracing::info!(op = rec.id, step = %name, "stopping at a safe point for shutdown");
                    return;
                }
            }
        }
        rec.state = OpState::Succeeded;
        rec.summary = Some(self.success_summary(&cmd, &rec, &e));
        self.finish(&mut rec).await;
    }

    fn success_summary(&self, cmd: &Command, rec: &OpRecord, _e: &EnvironmentConfig) -> String {
        match cmd {
            Command::Deploy { env, version, .. } => {
                let rev = rec
                    .data
                    .get("revision")
                    .map(|r| format!(" (revision {r})"))
                    .unwrap_or_default();
                format!("{env} runs {version}{rev}.")
            }
            Command::Rollback { env, .. } => format!(
                "{env} is back on {}{}.",
                rec.data
                    .get("undo_version")
                    .cloned()
                    .unwrap_or_else(|| "the earlier version".into()),
                rec.data
                    .get("revision")
                    .map(|r| format!(" (revision {r})"))
                    .unwrap_or_default()
            ),
            Command::Restore { env, .. } => {
                let step = |n: &str| {
                    rec.steps
                        .iter()
                        .find(|s| s.name == n)
                        .map(|s| s.detail.clone())
                        .unwrap_or_default()
                };
                let safety = rec
                    .data
                    .get("safety_name")
                    .map(|n| format!(" Safety backup: `{n}`."))
                    .unwrap_or_default();
                format!(
                    "{env} now holds {}; {}.{safety}",
                    step("restore"),
                    step("scale up")
                )
            }
            Command::BackupNow { .. } => format!(
                "{} is backed up: `{}`.",
                rec.env,
                rec.data
                    .get("backup_name")
                    .cloned()
                    .unwrap_or_else(|| "?".into())
            ),
            Command::Verify { .. } | Command::BackupPrune { .. } => rec
                .steps
                .last()
                .map(|s| format!("{}.", s.detail))
                .unwrap_or_else(|| "Done.".into()),
            _ => "Done.".into(),
        }
    }

    /// After a failed step: roll back what the deploy changed (if configured), then report.
    async fn fail(
        &self,
        mut rec: OpRecord,
        cmd: &Command,
        cluster: &Cluster,
        e: &EnvironmentConfig,
        why: String,
    ) {
        let changed = |step: &str| {
            rec.steps.iter().any(|s| {
                s.name == step
                    && matches!(
                        s.state,
                        StepState::Done | StepState::Running | StepState::Failed
                    )
                    && s.started_ms.is_some()
            })
        };
        let tag_of = |key: &str| {
            rec.data
                .get(key)
                .map(|i| crate::cluster::split_image(i).1.to_string())
        };
        // Where to put the app back, what it ran there, and what the step is called.
        let put_back: Option<(Option<i64>, Option<String>, &str)> = match cmd {
            Command::Deploy { .. } if e.auto_rollback && changed("set image") => Some((
                rec.data
                    .get("previous_revision")
                    .and_then(|r| r.parse::<i64>().ok()),
                tag_of("previous_image"),
                "rollback",
            )),
            // A rollback that fails goes forward again to where it started.
            Command::Rollback { .. } if changed("undo") && rec.data.contains_key("undo_from") => {
                Some((
                    rec.data
                        .get("undo_from")
                        .and_then(|r| r.parse::<i64>().ok()),
                    rec.data.get("undo_from_version").cloned(),
                    "roll forward",
                ))
            }
            _ => None,
        };
        if let Some((prev, old, step_name)) = put_back {
            for s in rec
                .steps
                .iter_mut()
                .filter(|s| s.state == StepState::Pending)
            {
                s.state = StepState::Skipped;
            }
            rec.steps.push(StepRecord {
                state: StepState::Running,
                started_ms: Some(self.now_ms()),
                ..StepRecord::pending(step_name)
            });
            // Putting the app back goes ahead even when the journal cannot be written (logged).
            let _ = self.save(&rec).await;
            let last = rec.steps.len() - 1;
            let result = async {
                match cluster.undo(&e.deployment, prev).await {
                    Ok(_) | Err(ClusterError::Undo(crate::cluster::UndoError::AlreadyThere(_))) => {
                    }
                    Err(err) => return Err(err.to_string()),
                }
                match cluster
                    .watch_rollout(&e.deployment, None, ROLLOUT_LIMIT)
                    .await
                {
                    Ok(RolloutOutcome::Complete { .. }) => {}
                    Ok(RolloutOutcome::Failed { message, .. }) => return Err(message),
                    Err(err) => return Err(err.to_string()),
                }
                // The old version must answer too.
                if let Some(smoke) = &e.smoke
                    && let StepEnd::Failed(why) = self.smoke(smoke, old.as_deref()).await
                {
                    return Err(format!("put back, but {why}"));
                }
                Ok(())
            }
            .await;
            rec.steps[last].finished_ms = Some(self.now_ms());
            let old = old.unwrap_or_else(|| "the previous version".into());
            match result {
                Ok(()) => {
                    rec.steps[last].state = StepState::Done;
                    rec.steps[last].detail = format!("back on {old}");
                    if rec.state != OpState::Cancelled {
                        rec.state = OpState::RolledBack;
                    }
                    rec.summary = Some(format!(
                        "{} failed ({why}); {} is back on {old}.",
                        rec.command, rec.env
                    ));
                }
                Err(err) => {
                    rec.steps[last].state = StepState::Failed;
                    rec.steps[last].detail = err.clone();
                    rec.state = OpState::Failed;
                    rec.summary = Some(format!(
                        "{} failed ({why}) and the rollback failed too ({err}): {} needs attention.",
                        rec.command, rec.env
                    ));
                }
            }
        } else {
            for s in rec
                .steps
                .iter_mut()
                .filter(|s| s.state == StepState::Pending)
            {
                s.state = StepState::Skipped;
            }
            rec.summary = Some(format!("{} failed: {why}.", rec.command));
            if matches!(cmd, Command::Restore { .. }) {
                // Still shown as running while the app is put back.
                self.recover_after_restore(&mut rec, cluster, e, &why).await;
            }
            if rec.state != OpState::Cancelled {
                rec.state = OpState::Failed;
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

    /// One step; idempotent, so that a resumed operation can run it again.
    async fn step(
        &self,
        name: &str,
        cmd: &Command,
        c: &Cluster,
        e: &EnvironmentConfig,
        rec: &mut OpRecord,
        index: usize,
    ) -> StepEnd {
        let op = rec.id;
        match (name, cmd) {
            ("backup", _) => {
                let label = if matches!(cmd, Command::BackupNow { .. }) {
                    "manual"
                } else {
                    "pre"
                };
                self.take_backup(c, e, rec, "backup", label).await
            }
            ("safety backup", _) => self.take_backup(c, e, rec, "safety", "safety").await,
            ("scale down", _) => self.scale_down(c, e, rec).await,
            ("restore", _) => self.restore_job(c, e, rec).await,
            ("scale up", _) => match self.scale_back(c, e, rec).await {
                Ok(detail) => StepEnd::Done(detail),
                Err(err) => StepEnd::Failed(err),
            },
            ("verify", _) => self.verify_job(c, e, rec).await,
            ("prune", _) => self.prune(c, e, rec).await,
            (n, Command::Deploy { version, .. }) if n.starts_with("runbook ") => {
                let rb = n.trim_start_matches("runbook ");
                let mut params = BTreeMap::new();
                params.insert("version".to_string(), version.clone());
                let (env, suffix, mark) = (rec.env.clone(), rec.job_suffix(), rec.mark.clone());
                self.run_runbook(rb, &env, &params, c, e, (op, &suffix, &mark))
                    .await
            }
            ("job", Command::Runbook { name, params, .. }) => {
                let (env, suffix, mark) = (rec.env.clone(), rec.job_suffix(), rec.mark.clone());
                self.run_runbook(name, &env, params, c, e, (op, &suffix, &mark))
                    .await
            }
            ("set image", Command::Deploy { version, .. }) => {
                if !rec.data.contains_key("previous_revision") {
                    match c.deployment(&e.deployment).await {
                        Ok(d) => {
                            let rev = d
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(rollout::REVISION))
                                .cloned()
                                .unwrap_or_default();
                            rec.data.insert("previous_revision".into(), rev);
                            rec.data.insert(
                                "previous_image".into(),
                                rollout::current_image(&d, Some(e.container())).unwrap_or_default(),
                            );
                            if let Err(why) = self.journal(rec).await {
                                return StepEnd::Failed(why);
                            }
                        }
                        Err(err) => return StepEnd::Failed(err.to_string()),
                    }
                }
                let image = super::image_for(e, version);
                match c
                    .set_image(
                        &e.deployment,
                        e.container(),
                        &image,
                        &format!("deploy {version} by {} (#{op})", rec.user),
                    )
                    .await
                {
                    Ok(_) => StepEnd::Done(image),
                    Err(err) => StepEnd::Failed(err.to_string()),
                }
            }
            ("rollout", _) => self.follow(c, &e.deployment, rec, index).await,
            ("smoke test", _) => {
                let Some(smoke) = e.smoke.clone() else {
                    return StepEnd::Done("none configured".into());
                };
                let version = match cmd {
                    Command::Deploy { version, .. } => Some(version.clone()),
                    _ => None,
                };
                self.smoke(&smoke, version.as_deref()).await
            }
            ("undo", Command::Rollback { to, .. }) => {
                let current = match c.deployment(&e.deployment).await {
                    Ok(d) => d
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(rollout::REVISION))
                        .cloned()
                        .unwrap_or_default(),
                    Err(err) => return StepEnd::Failed(err.to_string()),
                };
                // Resumed after the undo was applied: the revision has moved on, do not undo twice.
                if let Some(from) = rec.data.get("undo_from")
                    && *from != current
                {
                    return StepEnd::Done(format!(
                        "to revision {}",
                        rec.data.get("undo_to").cloned().unwrap_or_default()
                    ));
                }
                let history = match c.history(&e.deployment).await {
                    Ok(h) => h,
                    Err(err) => return StepEnd::Failed(err.to_string()),
                };
                if let Some(now) = history.iter().find(|r| r.number.to_string() == current) {
                    rec.data
                        .insert("undo_from_version".into(), super::rollback::version_of(now));
                }
                rec.data.insert("undo_from".into(), current);
                if let Err(why) = self.journal(rec).await {
                    return StepEnd::Failed(why);
                }
                let target = match to {
                    None => None,
                    Some(RollbackTarget::Revision(r)) => Some(*r),
                    Some(RollbackTarget::Version(v)) => {
                        let wanted = super::image_for(e, v);
                        match history.iter().rev().find(|r| {
                            r.images
                                .iter()
                                .any(|i| *i == wanted || i.ends_with(&format!(":{v}")))
                        }) {
                            Some(r) => Some(r.number),
                            None => {
                                return StepEnd::Failed(format!(
                                    "no revision ran {v}; see `history {}`",
                                    rec.env
                                ));
                            }
                        }
                    }
                };
                match c.undo(&e.deployment, target).await {
                    Ok(rev) => {
                        let version = history
                            .iter()
                            .find(|r| r.number == rev)
                            .map(super::rollback::version_of)
                            .unwrap_or_default();
                        rec.data.insert("undo_to".into(), rev.to_string());
                        rec.data.insert("undo_version".into(), version.clone());
                        // The revision is renumbered by the rollout: name the version here and
                        // only the new number after it, so one state never has two numbers.
                        StepEnd::Done(format!("to {version}"))
                    }
                    Err(err) => StepEnd::Failed(err.to_string()),
                }
            }
            (
                "scale",
                Command::Scale {
                    replicas,
                    component,
                    ..
                },
            ) => {
                let (kind, wname) = match component.as_deref() {
                    Some(n) if n == e.database => (Workload::StatefulSet, n.to_string()),
                    _ => (Workload::Deployment, e.deployment.clone()),
                };
                match c
                    .scale(kind, &wname, *replicas as i32, HpaPolicy::Respect)
                    .await
                {
                    Ok(out) => {
                        let hpa = out
                            .hpa
                            .map(|h| {
                                format!(
                                    " (autoscaler {} keeps it between {} and {})",
                                    h.name, h.after.0, h.after.1
                                )
                            })
                            .unwrap_or_default();
                        StepEnd::Done(format!(
                            "{wname} from {} to {} replicas{hpa}",
                            out.from, out.to
                        ))
                    }
                    Err(err) => StepEnd::Failed(err.to_string()),
                }
            }
            (other, _) => {
                StepEnd::Failed(format!("step `{other}` does not apply to {}", rec.command))
            }
        }
    }

    async fn run_runbook(
        &self,
        name: &str,
        env: &str,
        params: &BTreeMap<String, String>,
        c: &Cluster,
        e: &EnvironmentConfig,
        (op, suffix, mark): (u64, &str, &str),
    ) -> StepEnd {
        let Some(spec) = self.inner.grammar.runbooks.iter().find(|r| r.name == name) else {
            return StepEnd::Failed(format!("runbook `{name}` is not defined in commands/"));
        };
        let mut values = params.clone();
        values.insert("env".into(), env.to_string());
        values.insert("namespace".into(), e.namespace_or(env).to_string());
        values.insert("image".into(), e.image.clone().unwrap_or_default());
        values.insert("op".into(), op.to_string());
        let mut job = match jobs::render_job_template(name, &spec.job, &values) {
            Ok(j) => j,
            Err(err) => return StepEnd::Failed(err.to_string()),
        };
        let base = job
            .metadata
            .name
            .take()
            .or_else(|| {
                job.metadata
                    .generate_name
                    .take()
                    .map(|g| g.trim_end_matches('-').to_string())
            })
            .unwrap_or_else(|| name.to_string());
        let job_name = jobs::job_name(&base, suffix);
        job.metadata.name = Some(job_name.clone());
        if let Err(err) = c.create_owned_job(&mut job, op, mark).await {
            return StepEnd::Failed(err.to_string());
        }
        match c.wait_job(&job_name, JOB_LIMIT).await {
            Ok(r) => match r.end {
                JobEnd::Complete => StepEnd::Done(if r.message.is_empty() {
                    format!("job {job_name} finished")
                } else {
                    format!("job {job_name}: {}", r.message)
                }),
                JobEnd::Failed { reason, .. } => StepEnd::Failed(format!(
                    "job {job_name} failed ({reason}){}",
                    super::tail(&r.log_tail)
                )),
            },
            Err(err) => StepEnd::Failed(err.to_string()),
        }
    }

    /// Follows a rollout, editing the step's detail as it moves.
    async fn follow(
        &self,
        c: &Cluster,
        deployment: &str,
        rec: &mut OpRecord,
        index: usize,
    ) -> StepEnd {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = c.watch_rollout(deployment, Some(tx), ROLLOUT_LIMIT);
        tokio::pin!(watch);
        loop {
            tokio::select! {
                r = &mut watch => {
                    return match r {
                        Ok(RolloutOutcome::Complete { revision }) => {
                            if let Some(r) = revision {
                                rec.data.insert("revision".into(), r.to_string());
                            }
                            StepEnd::Done(format!("complete{}", revision.map(|r| format!(", revision {r}")).unwrap_or_default()))
                        }
                        Ok(RolloutOutcome::Failed { message, pod, reason }) => StepEnd::Failed(format!("{message}{}", super::failing(pod, reason))),
                        Err(err) => StepEnd::Failed(err.to_string()),
                    };
                }
                Some(p) = rx.recv() => {
                    if !matches!(p.state, RolloutState::Complete) {
                        rec.steps[index].detail = format!("{} ({}/{} ready)", p.state.describe(deployment), p.ready, p.desired);
                        self.tick(rec).await;
                    }
                }
            }
        }
    }

    pub(super) async fn smoke(&self, smoke: &SmokeConfig, version: Option<&str>) -> StepEnd {
        let deadline = tokio::time::Instant::now() + smoke.timeout;
        loop {
            let last;
            match self.inner.http.get(&smoke.url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value =
                        resp.json().await.unwrap_or(serde_json::Value::Null);
                    if status != smoke.status {
                        last = format!("GET {} → {status}, expected {}", smoke.url, smoke.status);
                    } else {
                        match (&smoke.version_field, version) {
                            (Some(field), Some(v)) => {
                                let got = crate::redact::outside(
                                    body.get(field).and_then(|x| x.as_str()).unwrap_or_default(),
                                );
                                let want = v.trim_start_matches('v');
                                if !got.is_empty()
                                    && (got == v || want.starts_with(got.trim_start_matches('v')))
                                {
                                    return StepEnd::Done(format!("{status}, {field} {got}"));
                                }
                                last =
                                    format!("GET {} → {field} is `{got}`, expected {v}", smoke.url);
                            }
                            _ => return StepEnd::Done(format!("{status}")),
                        }
                    }
                }
                Err(e) => {
                    last = format!(
                        "GET {} failed: {}",
                        smoke.url,
                        crate::redact::outside(&e.to_string())
                    )
                }
            }
            if tokio::time::Instant::now() + smoke.interval > deadline {
                return StepEnd::Failed(format!("smoke test failed: {last}"));
            }
            tokio::time::sleep(smoke.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::BackupRef;

    #[test]
    fn app_changes_backup_work_and_restores_take_the_locks_they_conflict_on() {
        let restore = Command::Restore {
            env: "prod".into(),
            backup: BackupRef::Latest,
            from: None,
            no_safety_backup: false,
        };
        let cases: Vec<(Command, Vec<&str>)> = vec![
            (
                Command::Rollback {
                    env: "prod".into(),
                    to: None,
                },
                vec!["prod"],
            ),
            (
                Command::Verify {
                    env: Some("prod".into()),
                    backup: None,
                },
                vec!["prod#backups"],
            ),
            (
                Command::BackupNow {
                    env: Some("prod".into()),
                },
                vec!["prod#backups"],
            ),
            (
                Command::BackupPrune { env: "prod".into() },
                vec!["prod#backups"],
            ),
            (restore, vec!["prod", "prod#backups"]),
        ];
        for (cmd, want) in cases {
            assert_eq!(lock_keys(&cmd, "prod"), want, "{cmd:?}");
        }
    }
}
