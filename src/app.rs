//! Wiring and the command pipeline: incoming message → addressed? → seen once → parse → answer → audit.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::rocketchat::{ConnectOptions, RocketChat};
use crate::chat::{Chat, ChatError, Incoming};
use crate::command::{self, Addressing, Command};
use crate::config::Config;
use crate::error::UserError;
use crate::store::{AuditEntry, Store, StoreError};

/// Why the bot stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    StoreUnavailable(#[from] StoreError),
    #[error(transparent)]
    ChatUnavailable(#[from] ChatError),
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
    tracing::info!(user = %chat.bot_username(), "rocketops is listening");
    let bot = Bot::new(chat, store.clone(), &config);
    bot.serve(incoming, shutdown).await;
    connection.cancel();
    store.flush().await?;
    Ok(())
}

/// The command pipeline, generic over the chat platform.
pub struct Bot<C: Chat> {
    chat: C,
    store: Store,
    prefixes: Vec<String>,
    catch_up_max_age: Duration,
    seen_retention: Duration,
}

impl<C: Chat> Clone for Bot<C> {
    fn clone(&self) -> Self {
        Bot {
            chat: self.chat.clone(),
            store: self.store.clone(),
            prefixes: self.prefixes.clone(),
            catch_up_max_age: self.catch_up_max_age,
            seen_retention: self.seen_retention,
        }
    }
}

impl<C: Chat> Bot<C> {
    pub fn new(chat: C, store: Store, config: &Config) -> Self {
        Bot {
            chat,
            store,
            prefixes: config.bot.prefixes.clone(),
            catch_up_max_age: config.bot.catch_up_max_age,
            seen_retention: config.bot.seen_retention,
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
                    let cutoff = now_ms() - self.seen_retention.as_millis() as i64;
                    match self.store.prune_seen(cutoff) {
                        Ok(n) if n > 0 => tracing::debug!(pruned = n, "forgot old message ids"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning seen ids failed"),
                    }
                }
                _ = shutdown.cancelled() => break,
            }
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
            prefixes: self.prefixes.clone(),
            bot_name: self.chat.bot_username(),
        };
        if let Some(body) = command::addressed_body(&msg.text, msg.room_kind, &addressing) {
            match self.store.mark_seen(&msg.id, now_ms()) {
                Ok(true) => self.answer(&msg, body).await,
                Ok(false) => tracing::debug!(id = %msg.id, "command already handled; skipping"),
                Err(e) => {
                    tracing::error!(error = %e, id = %msg.id, "cannot record message as seen; not running it")
                }
            }
        }
        if let Err(e) = self.store.advance_mark(&msg.room_id, msg.ts_ms) {
            tracing::warn!(error = %e, "cannot move the read mark");
        }
    }

    async fn answer(&self, msg: &Incoming, body: &str) {
        let age = Duration::from_millis((now_ms() - msg.ts_ms).max(0) as u64);
        let result = if msg.caught_up && age > self.catch_up_max_age {
            Err(UserError::MissedWhileOffline {
                age: humantime_serde::re::humantime::format_duration(Duration::from_secs(
                    age.as_secs(),
                ))
                .to_string(),
            })
        } else {
            command::parse(body)
        };
        let (reply, outcome) = match result {
            Ok(cmd) => (self.execute(cmd), "done".to_string()),
            Err(e) => (e.to_string(), format!("refused: {}", e.label())),
        };
        tracing::info!(user = %msg.username, room = %msg.room_id, command = %body, %outcome, "command");
        if let Err(e) = self
            .chat
            .post(&msg.room_id, msg.thread.as_deref(), &reply)
            .await
        {
            tracing::error!(error = %e, room = %msg.room_id, "could not answer a command");
        }
        let entry = AuditEntry {
            at_ms: now_ms(),
            user: msg.username.clone(),
            room: msg.room_name.clone().unwrap_or_else(|| msg.room_id.clone()),
            command: body.chars().take(500).collect(),
            outcome,
        };
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    fn execute(&self, cmd: Command) -> String {
        match cmd {
            Command::Ping { echo: None } => "pong".to_string(),
            Command::Ping { echo: Some(t) } => format!("pong {t}"),
            Command::Help { topic } => {
                command::help_text(topic.as_deref(), &self.chat.bot_username())
            }
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
