//! The connection's life: establishing a session (server version, login resumed by token), supervising it through reconnects and catch-up, and reaching the configured rooms.

use super::*;

/// Keeps looking for the needed rooms not reached yet, and tells the rooms it did reach which
/// ones it could not (once per change, not on every retry).
pub(super) async fn keep_rooms(chat: RocketChat) {
    let inner = chat.inner.clone();
    let retry = inner.cfg.reconnect_max.max(Duration::from_millis(100));
    let mut announced: Vec<String> = Vec::new();
    loop {
        let missing = chat.missing_rooms();
        // A room that only failed to answer is retried quietly; the others need a person.
        let lasting: Vec<MissingRoom> = missing
            .iter()
            .filter(|m| !matches!(m.problem, RoomProblem::Unreachable(_)))
            .cloned()
            .collect();
        let names: Vec<String> = lasting.iter().map(|m| m.name.clone()).collect();
        if names != announced {
            let text = if lasting.is_empty() {
                format!(
                    "✅ I can reach every room I am configured for now: {}.",
                    rooms::needed_rooms(&inner.cfg)
                        .iter()
                        .map(|r| format!("#{r}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                rooms::announcement(&lasting, &chat.bot_username())
            };
            let reached: Vec<String> = inner
                .rooms
                .lock()
                .map(|r| {
                    rooms::needed_rooms(&inner.cfg)
                        .iter()
                        .filter_map(|n| r.get(n).cloned())
                        .collect()
                })
                .unwrap_or_default();
            let mut posted = HashSet::new();
            for rid in reached {
                if posted.insert(rid.clone())
                    && let Err(e) = chat.post(&rid, None, &text).await
                {
                    tracing::warn!(error = %e, "cannot say which rooms are unreachable");
                }
            }
            announced = names;
        }
        if missing.is_empty() {
            return;
        }
        tokio::select! {
            _ = sleep(retry) => {}
            _ = inner.cancel.cancelled() => return,
        }
        reach_rooms(&inner).await;
    }
}

/// Looks for every needed room not found yet, joining public ones, and records what is missing.
async fn reach_rooms(inner: &Inner) {
    let Some(me) = inner.identity.read().ok().and_then(|g| g.clone()) else {
        return;
    };
    let ep = inner
        .server
        .read()
        .ok()
        .and_then(|g| *g)
        .map(|s| s.endpoints)
        .unwrap_or_else(|| server::routes(server::NEWEST_KNOWN));
    let patience = inner.cfg.call_timeout;
    let member_of: BTreeSet<String> =
        match rooms::memberships(&inner.rest, &me.auth, &ep, patience).await {
            Ok(subs) => subs
                .iter()
                .filter_map(|s| s.get("rid").and_then(Value::as_str).map(str::to_string))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the bot's rooms");
                BTreeSet::new()
            }
        };
    let mut missing = Vec::new();
    for name in rooms::needed_rooms(&inner.cfg) {
        let known = inner
            .rooms
            .lock()
            .ok()
            .is_some_and(|r| r.get(&name).is_some_and(|rid| member_of.contains(rid)));
        if known {
            continue;
        }
        match rooms::reach(&inner.rest, &me.auth, &ep, &name, &member_of, patience).await {
            Ok(rid) => {
                if let Ok(mut r) = inner.rooms.lock() {
                    r.insert(name, rid);
                }
            }
            Err(problem) => {
                let m = MissingRoom { name, problem };
                tracing::error!(room = %m.name, problem = %m.explain(&me.username), "cannot use a configured room");
                missing.push(m);
            }
        }
    }
    if let Ok(mut m) = inner.missing.lock() {
        *m = missing;
    }
}

/// Keeps a session up for as long as the bot runs.
pub(super) async fn supervise(
    inner: Arc<Inner>,
    session_tx: watch::Sender<Option<Arc<Session>>>,
    incoming: mpsc::UnboundedSender<Incoming>,
    first: oneshot::Sender<Result<(), ChatError>>,
    options: ConnectOptions,
) {
    let mut first = Some(first);
    let mut delays = crate::backoff::delays(inner.cfg.reconnect_min, inner.cfg.reconnect_max);
    let mut recent = RecentIds::new(4096);
    let cancel = inner.cancel.clone();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        // Read marks start at the moment before subscribing, not after: a message posted while
        // the subscription is being set up is then caught up in order with the later ones,
        // instead of arriving live behind a newer message that catch-up already handed on.
        let connecting_ms = chrono::Utc::now().timestamp_millis();
        let attempt = tokio::select! {
            r = establish(&inner, first.is_some()) => r,
            _ = cancel.cancelled() => break,
        };
        match attempt {
            Ok((session, mut events, pump)) => {
                delays = crate::backoff::delays(inner.cfg.reconnect_min, inner.cfg.reconnect_max);
                if first.is_none() {
                    crate::telemetry::metrics().reconnects.inc();
                }
                let session = Arc::new(session);
                session_tx.send_replace(Some(session.clone()));
                if let Some(f) = first.take() {
                    if let Some(store) = &options.store
                        && let Err(e) = store.init_global_mark(connecting_ms)
                    {
                        tracing::error!(error = %e, "cannot initialise read marks");
                    }
                    reach_rooms(&inner).await;
                    let _ = f.send(Ok(()));
                }
                let me = inner.identity.read().ok().and_then(|i| i.clone());
                let my_id = me.as_ref().map(|m| m.user_id.clone()).unwrap_or_default();
                let listener = Listener {
                    my_user_id: &my_id,
                    respond_to_bots: options.respond_to_bots,
                };
                if let (Some(store), Some(me)) = (&options.store, &me) {
                    let ep = inner
                        .server
                        .read()
                        .ok()
                        .and_then(|g| *g)
                        .map(|s| s.endpoints)
                        .unwrap_or_else(|| server::routes(server::NEWEST_KNOWN));
                    match catchup::catch_up(
                        &inner.rest,
                        &me.auth,
                        &ep,
                        store,
                        &listener,
                        inner.cfg.call_timeout,
                    )
                    .await
                    {
                        Ok(missed) => {
                            if !missed.is_empty() {
                                tracing::info!(
                                    count = missed.len(),
                                    "catching up on messages sent while disconnected"
                                );
                            }
                            for m in missed {
                                if recent.insert(&m.id) && incoming.send(m).is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "catching up failed; continuing with live messages")
                        }
                    }
                }
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            None => break,
                            Some(Event::RoomMessage { message, meta }) => {
                                match classify(&message, meta.as_ref(), &listener) {
                                    Ok(m) if m.redelivered => tracing::debug!(
                                        id = %m.id,
                                        "message re-sent after a reaction, reply, pin or edit; not a new command"
                                    ),
                                    Ok(m) => {
                                        if recent.insert(&m.id) && incoming.send(m).is_err() {
                                            cancel.cancel();
                                        }
                                    }
                                    Err(why) => tracing::trace!(?why, "message not for the bot"),
                                }
                            }
                            Some(Event::NotifyUser { event, args }) => {
                                tracing::debug!(%event, args = %args, "user notification");
                            }
                        },
                        _ = cancel.cancelled() => break,
                    }
                }
                session_tx.send_replace(None);
                if cancel.is_cancelled() {
                    session.close();
                    let _ = pump.await;
                    break;
                }
                let why = pump.await;
                tracing::warn!(?why, "connection to Rocket.Chat lost; reconnecting");
            }
            Err(EstablishError::Unsupported(why)) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(ChatError::UnsupportedServer(why)));
                    return;
                }
                tracing::error!(%why, "the server is no longer a supported version; will keep trying");
                // Not fixed by retrying fast: skip ahead to longer waits.
                delays.nth(2);
            }
            Err(EstablishError::LoginRejected(reason)) => {
                let user = inner
                    .cfg
                    .username
                    .clone()
                    .unwrap_or_else(|| "(token user)".into());
                let err = ChatError::LoginRejected {
                    user,
                    server: inner.cfg.url.clone(),
                    reason,
                };
                if let Some(f) = first.take() {
                    let _ = f.send(Err(err));
                    return;
                }
                tracing::error!(error = %err, "login rejected after a reconnect; will keep trying");
                // A refused login is not fixed by retrying fast: skip ahead to longer waits.
                delays.nth(2);
            }
            Err(EstablishError::Transient(reason)) => {
                tracing::warn!(%reason, server = %inner.cfg.url, "cannot connect to Rocket.Chat; will retry");
            }
        }
        let wait = delays.next().unwrap_or(inner.cfg.reconnect_max);
        tokio::select! {
            _ = sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    session_tx.send_replace(None);
    if let Some(f) = first.take() {
        let _ = f.send(Err(ChatError::Closed));
    }
}

type Established = (
    Session,
    mpsc::UnboundedReceiver<Event>,
    tokio::task::JoinHandle<conn::SessionEnd>,
);

/// Reads `/api/info`: the server's version and the routes it has, or why it is refused.
async fn learn_server(inner: &Inner) -> Result<Server, EstablishError> {
    let raw = inner
        .rest
        .server_version(inner.cfg.connect_timeout)
        .await
        .map_err(|e| EstablishError::Transient(format!("GET /api/info: {e}")))?;
    let server = match raw.parse::<ServerVersion>() {
        Ok(v) => Server {
            version: Some(v),
            endpoints: server::endpoints(v)
                .map_err(|u| EstablishError::Unsupported(u.to_string()))?,
        },
        Err(e) => {
            tracing::warn!(error = %e, "the server's version is unreadable; taking it for a current release");
            Server {
                version: None,
                endpoints: server::routes(server::NEWEST_KNOWN),
            }
        }
    };
    if let Ok(mut s) = inner.server.write() {
        *s = Some(server);
    }
    Ok(server)
}

/// The token to resume on the socket, and the user document a password login returned: the
/// personal access token, the token of the last password login (so reconnecting, even failing
/// to, mints no new token), or, with `fresh` or none yet, a new password login.
async fn resume_token(
    inner: &Inner,
    fresh: bool,
) -> Result<(String, Option<Value>), EstablishError> {
    let cfg = &inner.cfg;
    if let Some(pat) = &cfg.token {
        return Ok((pat.expose().to_string(), None));
    }
    let (Some(user), Some(pw)) = (&cfg.username, &cfg.password) else {
        return Err(EstablishError::LoginRejected(
            "no credentials configured".into(),
        ));
    };
    if !fresh && let Some(l) = inner.password_login.lock().ok().and_then(|g| g.clone()) {
        return Ok((l.auth.token, Some(l.me)));
    }
    match inner.rest.login(user, pw.expose(), cfg.call_timeout).await {
        Ok(l) => {
            let answer = (l.auth.token.clone(), Some(l.me.clone()));
            if let Ok(mut cached) = inner.password_login.lock() {
                *cached = Some(l);
            }
            Ok(answer)
        }
        Err(RestError::Refused { status, error, .. }) if status < 500 => {
            Err(EstablishError::LoginRejected(login_refusal(&error)))
        }
        Err(e) => Err(EstablishError::Transient(format!(
            "POST /api/v1/login: {e}"
        ))),
    }
}

/// Opens a socket, resumes the login on it and subscribes to the message streams.
async fn establish(inner: &Inner, first: bool) -> Result<Established, EstablishError> {
    let cfg = &inner.cfg;
    let known_server = inner.server.read().ok().and_then(|g| *g);
    let server = match known_server {
        Some(s) if !first => s,
        _ => learn_server(inner).await?,
    };
    let timing = Timing {
        ping_interval: cfg.ping_interval,
        ping_timeout: cfg.ping_timeout,
        connect_timeout: cfg.connect_timeout,
    };
    let (mut token, mut user_doc) = resume_token(inner, false).await?;
    let mut renewed = false;
    let (session, events, pump) = Session::open(&inner.ws_url, timing)
        .await
        .map_err(|e| EstablishError::Transient(e.to_string()))?;
    let transient = |e: CallError| EstablishError::Transient(e.to_string());
    let login = loop {
        match timeout(
            cfg.call_timeout,
            session.call("login", json!([{ "resume": token }])),
        )
        .await
        {
            Err(_) => return Err(EstablishError::Transient("login timed out".into())),
            Ok(Err(CallError::Server(e))) if e.rate_limit_wait_ms().is_some() => {
                return Err(EstablishError::Transient(e.to_string()));
            }
            // The last password login's token expired or was revoked: log in once more.
            Ok(Err(CallError::Server(e))) if !renewed && cfg.token.is_none() => {
                tracing::info!(reason = %e, "the saved login token was refused; logging in again");
                (token, user_doc) = resume_token(inner, true).await?;
                renewed = true;
            }
            Ok(Err(CallError::Server(e))) => {
                return Err(EstablishError::LoginRejected(e.to_string()));
            }
            Ok(Err(e)) => return Err(transient(e)),
            Ok(Ok(None)) => {
                return Err(EstablishError::Transient("login answered nothing".into()));
            }
            Ok(Ok(Some(v))) => break v,
        }
    };
    let user_id = login
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if user_id.is_empty() {
        return Err(EstablishError::Transient(
            "login result lacks the user id".into(),
        ));
    }
    let auth = RestAuth {
        user_id: user_id.clone(),
        token,
    };
    let known = inner.identity.read().ok().and_then(|i| i.clone());
    let user_doc = match (user_doc, &known) {
        (Some(me), _) if !me.is_null() => Some(me),
        (_, Some(k)) if k.user_id == user_id => None,
        _ => match inner.rest.me(&auth, cfg.call_timeout).await {
            Ok(me) => Some(me),
            Err(e) => {
                return Err(EstablishError::Transient(format!(
                    "cannot learn the bot's username: {e}"
                )));
            }
        },
    };
    let (username, roles) = match (user_doc, &known) {
        (Some(me), _) => (
            me.get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| cfg.username.clone())
                .unwrap_or_default(),
            me.get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        (None, Some(k)) => (k.username.clone(), k.roles.clone()),
        (None, None) => (cfg.username.clone().unwrap_or_default(), Vec::new()),
    };
    if let Ok(mut id) = inner.identity.write() {
        *id = Some(Identity {
            user_id: user_id.clone(),
            username: username.clone(),
            roles: roles.clone(),
            auth,
        });
    }
    if first {
        let version = server
            .version
            .map_or_else(|| "unknown".to_string(), |v| v.to_string());
        tracing::info!(server = %cfg.url, %version, user = %username, ?roles, "logged in to Rocket.Chat");
        if !roles.iter().any(|r| r == "bot") {
            tracing::warn!(
                ?roles,
                "the bot account lacks the `bot` role: the server will rate-limit its messages"
            );
        }
    }

    session
        .subscribe(
            "stream-room-messages",
            json!(["__my_messages__", {"useCollection": false, "args": []}]),
        )
        .await
        .map_err(transient)?;
    if let Err(e) = session
        .subscribe(
            "stream-notify-user",
            json!([format!("{user_id}/subscriptions-changed"), {"useCollection": false, "args": []}]),
        )
        .await
    {
        tracing::warn!(error = %e, "no room notifications; new rooms still arrive with their messages");
    }
    Ok((session, events, pump))
}
