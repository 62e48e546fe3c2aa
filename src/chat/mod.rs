//! The chat boundary: the neutral message model and the `Chat` trait every chat platform implements.

pub mod rocketchat;
pub mod split;

use std::future::Future;

/// What kind of room a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A public channel.
    Channel,
    /// A private group.
    Private,
    /// A direct message with the bot.
    Direct,
}

/// A message someone sent where the bot can hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub id: String,
    pub room_id: String,
    /// Channel name, if the room has one (DMs have none).
    pub room_name: Option<String>,
    pub room_kind: RoomKind,
    pub user_id: String,
    pub username: String,
    pub text: String,
    /// The thread this message is in (its parent's id), if any.
    pub thread: Option<String>,
    /// Server timestamp, milliseconds since the epoch.
    pub ts_ms: i64,
    /// Fetched while catching up after a disconnection, rather than live.
    pub caught_up: bool,
    /// The server sent this message again because something about it changed after it was
    /// posted (a reaction, a thread reply, a pin or star, `_updatedAt` later than `ts`): it is
    /// never a new command when it arrives live.
    pub redelivered: bool,
}

/// A message the bot posted, to edit or react to later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef {
    pub room_id: String,
    pub id: String,
}

/// Why a chat action failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("login as {user} on {server} failed: {reason}")]
    LoginRejected {
        user: String,
        server: String,
        reason: String,
    },
    #[error("cannot reach the chat server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the chat server refused {action}: {reason}")]
    Rejected { action: String, reason: String },
    #[error("gave up on {action}: not connected for {waited_secs}s")]
    GaveUp { action: String, waited_secs: u64 },
    #[error("unknown room `{0}`")]
    UnknownRoom(String),
    #[error("{0}")]
    UnsupportedServer(String),
    #[error("the chat connection is shut down")]
    Closed,
}

/// A file to upload (a report's chart).
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Posting, editing and reacting: what the rest of the bot may do in chat.
pub trait Chat: Clone + Send + Sync + 'static {
    /// The bot's own username (for `@mentions`).
    fn bot_username(&self) -> String;

    /// Posts `text` in a room (in `thread` when given); a text over the server's limit is split.
    fn post(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// A fresh id for a message not posted yet. The chat server takes client-chosen ids, so the id
    /// can be written down (journaled) before the post, and the post repeated without a duplicate.
    fn new_message_id(&self) -> String;

    /// Posts `text` as [`Chat::post`] does, each chunk under an id derived from `seed` (see
    /// [`first_id_of`]): posting it again adds nothing, and whether it was posted can be asked.
    fn post_derived(
        &self,
        room_id: &str,
        thread: Option<&str>,
        seed: &str,
        text: &str,
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// Whether message `id` is on the server (`false` also when it cannot be asked).
    fn has_message(&self, id: &str) -> impl Future<Output = bool> + Send;

    /// Posts `text` as message `id`; when a message with that id exists already, nothing changes
    /// and it is returned.
    fn post_as(
        &self,
        room_id: &str,
        thread: Option<&str>,
        id: &str,
        text: &str,
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// Replaces the text of a message the bot posted.
    fn edit(
        &self,
        message: &MessageRef,
        text: &str,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;

    /// Adds an emoji reaction (`white_check_mark`, without colons) to a message.
    fn react(
        &self,
        message: &MessageRef,
        emoji: &str,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;

    /// Finds a channel's room id by name (`ops` or `#ops`).
    fn room_id(&self, name: &str) -> impl Future<Output = Result<String, ChatError>> + Send;

    /// Posts `text` with buttons; clicking one posts its `message` as the clicking user.
    fn post_with_buttons(
        &self,
        room_id: &str,
        thread: Option<&str>,
        text: &str,
        buttons: &[Button],
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// Posts `text` with Rocket.Chat message attachments (coloured blocks with fields).
    fn post_attachments(
        &self,
        room_id: &str,
        text: &str,
        attachments: &[serde_json::Value],
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// Uploads a file into a room, posted with `text`.
    fn upload(
        &self,
        room_id: &str,
        file: &File,
        text: &str,
    ) -> impl Future<Output = Result<MessageRef, ChatError>> + Send;

    /// A user's roles on the chat server (for role-based policy).
    fn user_roles(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Vec<String>, ChatError>> + Send;
}

/// A button under a message that, when clicked, sends `message` as the user who clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub message: String,
}

/// Pure: the id of the first message [`Chat::post_derived`] posts for `seed`.
pub fn first_id_of(seed: &str) -> String {
    rocketchat::derived_message_id(seed, "chunk-0")
}

/// The end of a chat call whose failure the caller can do nothing more about (a report, an
/// alert, a "resolved" note): the chat layer already retried it until its send deadline, so it is
/// logged as lost, with what it was, instead of being dropped in silence.
pub fn log_failure<T>(what: &str, r: Result<T, ChatError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, what, "a chat message could not be posted or edited");
            None
        }
    }
}

/// Posts an alert: its text, with a coloured block naming the environment and the severity (the
/// text alone still says everything; a server that refuses the block gets the plain text).
pub async fn post_alert<C: Chat>(
    chat: &C,
    room_id: &str,
    text: &str,
    env: &str,
    critical: bool,
) -> Result<MessageRef, ChatError> {
    let severity = if critical { "critical" } else { "warning" };
    let block = serde_json::json!({
        "color": if critical { "#d0021b" } else { "#f5a623" },
        "fields": [
            {"short": true, "title": "Environment", "value": env},
            {"short": true, "title": "Severity", "value": severity},
        ],
    });
    match chat
        .post_attachments(room_id, text, std::slice::from_ref(&block))
        .await
    {
        Ok(m) => Ok(m),
        Err(e) => {
            tracing::debug!(error = %e, "alert with its block refused; posting plain text");
            chat.post(room_id, None, text).await
        }
    }
}
