//! High availability: the Lease the replicas elect a leader on, and the bot's state kept in Kubernetes objects with fencing.

pub mod lease;
pub mod preflight;
pub mod run;
pub mod state;

pub use lease::{Elector, LeaseTimings, MonoClock, Term};

use std::time::Duration;

use crate::config::HaConfig;
use crate::store::{Store, StoreError};

/// Why leader election or the state in Kubernetes failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("cannot reach the bot's own cluster ({0})")]
    Client(String),
    #[error("the Kubernetes API refused {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action} took longer than {}ms", .after.as_millis())]
    Timeout { action: String, after: Duration },
    /// Another leader wrote with a newer epoch: this process is deposed and must stop.
    #[error("deposed: {object} was written by a newer leader (epoch {theirs}, ours {ours})")]
    Deposed {
        object: String,
        ours: u64,
        theirs: u64,
    },
    #[error("state object {object} is unreadable: {detail}")]
    Corrupt { object: String, detail: String },
    /// An older leader wrote a state object while this one took over (read again).
    #[error("{object} was written by an older leader while this one took over")]
    Raced { object: String },
}

/// The User-Agent of this process's requests to its own cluster: names the process, so that the
/// API server's audit log (and the simulator's fault control) can tell the replicas apart.
pub fn user_agent(identity: &str) -> String {
    format!("rocketops-ha/{identity}")
}

/// The state for reading from the command line (`rocketops audit`, `rocketops backups`): the store
/// at `bot.store_path` with one replica, or what the state objects hold now with `kubernetes`
/// (read without writing anything, beside a running leader).
pub async fn open_for_reading(config: &crate::config::Config) -> Result<Store, StoreError> {
    match config.ha.store {
        crate::config::StoreBackend::Sled => Store::open(&config.bot.store_path),
        crate::config::StoreBackend::Kubernetes => {
            let failed = |e: HaError| StoreError::Replica {
                detail: e.to_string(),
            };
            let (client, namespace) = client(&config.ha, &user_agent("cli"))
                .await
                .map_err(failed)?;
            state::KubeState::snapshot(client, &namespace)
                .await
                .map_err(failed)
        }
    }
}

/// This process's identity in the Lease: the pod's name (`POD_NAME`, else the host name), then
/// `_` and a random suffix, so that a restarted container is a new holder (and a new epoch).
pub fn identity() -> String {
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rocketops".into());
    format!("{pod}_{}", crate::random::token(b"0123456789abcdef", 8))
}

/// The pod part of an identity (what `status` shows).
pub fn pod_of(identity: &str) -> &str {
    identity.rsplit_once('_').map_or(identity, |(pod, _)| pod)
}

/// A client for the bot's own cluster: its requests carry `agent` as User-Agent, and the client
/// does not retry by itself (a leader's renewal must fail within its deadline, not after fifteen
/// hidden retries). Also returns the namespace to use.
pub async fn client(cfg: &HaConfig, agent: &str) -> Result<(kube::Client, String), HaError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let opts = KubeConfigOptions {
        context: cfg.context.clone(),
        ..KubeConfigOptions::default()
    };
    let bad = |e: String| HaError::Client(e);
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| bad(format!("{}: {e}", path.display())))?
        }
        None if cfg.context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| bad(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| bad(e.to_string()))?,
    };
    config.default_retry = false;
    if let Ok(v) = axum::http::HeaderValue::from_str(agent) {
        config.headers.push((axum::http::header::USER_AGENT, v));
    }
    let namespace = cfg
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| bad(e.to_string()))?;
    Ok((client, namespace))
}
