//! A replica's life: serve health while standing by, wait for the Lease, take the state over, run the bot while leading, and stop the moment leadership is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::lease::{Elector, LeaseTimings};
use super::state::{KubeState, OnDeposed, StateOptions};
use crate::app::{AppError, RunOptions};
use crate::config::Config;
use crate::telemetry::Readiness;

/// The exit status of a process that lost leadership (it is restarted as a standby).
pub const EXIT_LOST: i32 = 75;

/// How often the state's changes not yet pushed at a flush point are written (alerts, catalog
/// and schedule records). Read marks moved by messages that were no command wait for the next
/// push of something else: a busy room costs no write a second, and a replica taking over with
/// an older mark only reads a few more messages again (the commands among them are on record
/// as taken).
const PUSH_EVERY: Duration = Duration::from_secs(1);

/// What a replica does when it loses leadership, given why.
pub type OnLost = Arc<dyn Fn(&str) + Send + Sync>;

/// What a replica is given besides its configuration.
#[derive(Default)]
pub struct HaOptions {
    /// Told the health/metrics listener's address once it is bound.
    pub telemetry_addr: Option<oneshot::Sender<SocketAddr>>,
    /// Called when leadership is lost (default: log and exit with [`EXIT_LOST`]; in-process
    /// tests cancel a token instead).
    pub on_lost: Option<OnLost>,
}

fn exit_on_loss() -> OnLost {
    Arc::new(|why: &str| {
        crate::telemetry::set_leading(None);
        tracing::error!(
            why,
            "leadership lost: stopping at once (restarted as a standby)"
        );
        std::process::exit(EXIT_LOST);
    })
}

/// Runs one replica until `shutdown` (SIGTERM): stands by until it holds the Lease, then leads
/// until shutdown, when it stops at a safe point, writes its state and hands the Lease over.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    options: HaOptions,
) -> Result<(), AppError> {
    let ha = config.ha.clone();
    let identity = super::identity();
    let agent = super::user_agent(&identity);
    let (client, namespace) = super::client(&ha, &agent)
        .await
        .map_err(|e| AppError::Ha(e.to_string()))?;
    let on_lost = options.on_lost.unwrap_or_else(exit_on_loss);
    crate::cluster::set_user_agent(&agent);

    let ready = Arc::new(Readiness::default());
    ready.standby.store(true, Ordering::Relaxed);
    if let Some(listen) = config.telemetry.listen {
        match crate::telemetry::serve(listen, ready.clone(), shutdown.clone()).await {
            Ok(addr) => {
                tracing::info!(%addr, "serving /healthz /readyz /metrics");
                if let Some(tx) = options.telemetry_addr {
                    let _ = tx.send(addr);
                }
            }
            Err(e) => tracing::error!(error = %e, %listen, "cannot serve health and metrics"),
        }
    }
    let standing_by = CancellationToken::new();
    tokio::spawn(probe_api(
        client.clone(),
        namespace.clone(),
        ha.lease_name.clone(),
        ha.retry_period,
        ready.clone(),
        standing_by.clone(),
    ));
    tracing::info!(%identity, %namespace, lease = %ha.lease_name, "standing by for the Lease");
    let elector = Elector::new(
        client.clone(),
        &namespace,
        &ha.lease_name,
        &identity,
        LeaseTimings::from(&ha),
    );
    let acquired = elector.acquire(&shutdown).await;
    standing_by.cancel();
    let Some(term) = acquired else {
        return Ok(());
    };
    let epoch = term.epoch;
    // From here on, losing the Lease stops the process before it acts again.
    let handing_over = CancellationToken::new();
    {
        let lost = term.lost();
        let handing_over = handing_over.clone();
        let on_lost = on_lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => on_lost("the Lease could not be renewed in time, or another replica holds it"),
                _ = handing_over.cancelled() => {}
            }
        });
    }
    let deposed: OnDeposed = {
        let on_lost = on_lost.clone();
        Arc::new(move |e| on_lost(&e.to_string()))
    };
    let (store, state) = match KubeState::take_over(
        client,
        StateOptions {
            namespace,
            epoch,
            call_timeout: call_timeout(&ha),
            horizon: config.bot.catch_up_max_age,
            on_deposed: deposed,
        },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            handing_over.cancel();
            term.release().await;
            return Err(AppError::Ha(format!("cannot take the state over: {e}")));
        }
    };
    let epoch = state.epoch();
    crate::telemetry::set_leading(Some((super::pod_of(&identity).to_string(), epoch)));
    tracing::info!(%identity, epoch, "leading");
    tokio::spawn(push_periodically(
        store.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    let result = crate::app::run(
        config,
        shutdown,
        RunOptions {
            store: Some(store.clone()),
            readiness: Some(ready),
            ..RunOptions::default()
        },
    )
    .await;
    // Whatever the run wrote is written out before another replica may take over.
    if let Err(e) = store.sync_replica().await {
        tracing::error!(error = %e, "the last state could not be written; the next leader resumes from the one before");
    }
    handing_over.cancel();
    crate::telemetry::set_leading(None);
    let released = term.release().await;
    tracing::info!(
        released,
        writes = state.writes(),
        "handed over: the Lease is free"
    );
    result
}

/// Each state write's bound: one that takes longer than the renew deadline outlived the
/// leadership it was made under (the Lease was lost meanwhile).
pub fn call_timeout(ha: &crate::config::HaConfig) -> Duration {
    ha.renew_deadline
}

/// Writes changes that no flush point covers, every [`PUSH_EVERY`].
async fn push_periodically(
    store: crate::store::Store,
    state: Arc<KubeState>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PUSH_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        if !store.has_changes_beyond(&[crate::store::Tree::Marks]) && !state.has_pending().await {
            continue;
        }
        if let Err(e) = store.sync_replica().await {
            tracing::warn!(error = %e, "cannot write the state to Kubernetes (tried again shortly)");
        }
    }
}

/// Keeps a standby's readiness told whether the API server answers.
async fn probe_api(
    client: kube::Client,
    namespace: String,
    lease: String,
    every: Duration,
    ready: Arc<Readiness>,
    stop: CancellationToken,
) {
    loop {
        let ok = matches!(
            tokio::time::timeout(
                every.max(Duration::from_millis(100)),
                super::lease::holder(&client, &namespace, &lease)
            )
            .await,
            Ok(Ok(_))
        );
        ready.api_reachable.store(ok, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
