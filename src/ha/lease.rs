//! Leader election on a `coordination.k8s.io/v1` Lease: client-go's algorithm, judged on this process's monotonic clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::HaError;
use crate::config::HaConfig;

/// client-go's jitter for the acquire loop: each wait is the retry period plus up to 1.2 times it
/// again, so that standbys started together do not keep colliding.
const JITTER: f64 = 1.2;
/// How long after the judged expiry a standby tries: the Lease is then surely expired to it.
const EXPIRY_MARGIN: Duration = Duration::from_millis(5);

/// How long `holder` waits for the API (the per-call timeout at the default timings).
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The monotonic clock expiry is judged on. Only the instants this process saw the Lease change
/// are compared with it, never the times written in the Lease, so another node's clock being off
/// does not matter; a clock that runs at another *rate* does (see `LeaseTimings`).
pub trait MonoClock: Send + Sync {
    fn now(&self) -> Instant;
}

/// tokio's clock, so that a paused test clock is followed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl MonoClock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// client-go's three durations, plus the bound on each API call.
///
/// A leader stops at most `renew_deadline` after the start of its last successful renewal; a
/// standby takes over `lease_duration` after it last saw the Lease change. The gap between the
/// two is what absorbs a standby's clock running fast (up to `lease_duration / renew_deadline`
/// times) and the time the leader's work needs to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Each read or write of the Lease fails after this long. A leader's renewal is bounded by
    /// its deadline anyway; bounding each call by the retry period instead would make every
    /// request slower than 2 s fail at the defaults, so that an API server answering slowly but
    /// well within the renew deadline would still lose the leader.
    pub call_timeout: Duration,
}

impl LeaseTimings {
    /// The timings, with each call bounded by the renew deadline.
    pub fn new(lease_duration: Duration, renew_deadline: Duration, retry_period: Duration) -> Self {
        LeaseTimings {
            lease_duration,
            renew_deadline,
            retry_period,
            call_timeout: renew_deadline,
        }
    }

    /// `leaseDurationSeconds` as written: whole seconds, rounded up, at least one.
    fn lease_seconds(&self) -> i32 {
        let seconds = self.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(seconds).unwrap_or(i32::MAX).max(1)
    }
}

impl From<&HaConfig> for LeaseTimings {
    fn from(cfg: &HaConfig) -> Self {
        LeaseTimings::new(cfg.lease_duration, cfg.renew_deadline, cfg.retry_period)
    }
}

/// A candidate for the Lease, until it holds it.
pub struct Elector {
    core: Core,
}

impl Elector {
    /// A candidate named `identity` (unique per process: see `super::identity`) for the Lease
    /// `namespace/lease_name`. `client` should not retry by itself (see `super::client`).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Self {
        Elector {
            core: Core {
                api: Api::namespaced(client, namespace),
                namespace: namespace.to_string(),
                name: lease_name.to_string(),
                identity: identity.to_string(),
                timings,
                clock: Arc::new(TokioClock),
                observed: None,
                last_holder: None,
            },
        }
    }

    /// Judges expiry on `clock` instead of tokio's.
    pub fn with_clock(mut self, clock: Arc<dyn MonoClock>) -> Self {
        self.core.clock = clock;
        self
    }

    pub fn identity(&self) -> &str {
        &self.core.identity
    }

    /// Tries every retry period (with client-go's jitter) until this process holds the Lease;
    /// `None` if `stop` is cancelled first.
    pub async fn acquire(self, stop: &CancellationToken) -> Option<Term> {
        let mut core = self.core;
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                a = core.attempt(false) => a,
            };
            let mut wait = jittered(core.timings.retry_period);
            match attempt {
                Attempt::Holding(epoch) => return Some(Term::begin(core, epoch, started)),
                Attempt::HeldBy(holder) => {
                    tracing::debug!(%holder, lease = %core.what(), "the leader lease is held; waiting");
                    // The next try as the Lease expires, if that is before the retry period: a
                    // standby takes over at the expiry it judged, not up to a retry later.
                    if let Some(left) = core.until_expiry() {
                        wait = wait.min(left + EXPIRY_MARGIN);
                    }
                }
                Attempt::Failed(e) if is_conflict(&e) => {
                    tracing::debug!(error = %e, "another candidate wrote the leader lease first");
                }
                Attempt::Failed(e) => {
                    tracing::warn!(error = %e, "could not try for the leader lease; trying again");
                }
                // Only a leader finds its Lease gone.
                Attempt::Gone(_) => {}
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                _ = sleep(wait) => {}
            }
        }
    }
}

/// One spell of leadership: renewed in the background until lost, released or dropped.
pub struct Term {
    /// The Lease's `leaseTransitions` once this process acquired it: it grows with every change
    /// of holder, so a later leader always has a greater epoch.
    pub epoch: u64,
    pub identity: String,
    leadership: Arc<Leadership>,
    stop_renewing: CancellationToken,
    renewing: Option<JoinHandle<Core>>,
}

impl Term {
    fn begin(core: Core, epoch: u64, renewed_at: Instant) -> Term {
        crate::telemetry::metrics().leader.set(1);
        tracing::info!(identity = %core.identity, epoch, lease = %core.what(), "acquired the leader lease");
        let leadership = Arc::new(Leadership {
            identity: core.identity.clone(),
            epoch,
            lost: CancellationToken::new(),
            ended: AtomicBool::new(false),
        });
        let stop_renewing = CancellationToken::new();
        let identity = core.identity.clone();
        let renewing = tokio::spawn(renew(
            core,
            renewed_at,
            leadership.clone(),
            stop_renewing.clone(),
        ));
        Term {
            epoch,
            identity,
            leadership,
            stop_renewing,
            renewing: Some(renewing),
        }
    }

    /// Cancelled the moment leadership is lost: the renewals did not succeed within the renew
    /// deadline, or the Lease shows another holder (also on `release` or drop). A child token:
    /// cancelling it does not end the term.
    pub fn lost(&self) -> CancellationToken {
        self.leadership.lost.child_token()
    }

    pub fn is_lost(&self) -> bool {
        self.leadership.lost.is_cancelled()
    }

    /// The handover: stops renewing, then gives the Lease up as client-go does (no holder, one
    /// second, renewed now, transitions kept) by compare-and-swap, so a standby takes it at its
    /// next try. Call it once the guarded work has stopped. Whether the Lease was released: not
    /// if leadership was lost already, the Lease is someone else's, or the API did not answer.
    pub async fn release(mut self) -> bool {
        self.stop_renewing.cancel();
        let core = match self.renewing.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        if !self.leadership.end() {
            tracing::info!(identity = %self.identity, epoch = self.epoch, "not releasing the leader lease: it was lost already");
            return false;
        }
        let Some(mut core) = core else {
            return false;
        };
        match core.release().await {
            Ok(true) => {
                tracing::info!(identity = %self.identity, epoch = self.epoch, "released the leader lease");
                true
            }
            Ok(false) => {
                tracing::warn!(identity = %self.identity, epoch = self.epoch, "the leader lease was no longer this process's to release");
                false
            }
            Err(e) => {
                tracing::warn!(identity = %self.identity, epoch = self.epoch, error = %e, "could not release the leader lease; a standby takes it once it expires");
                false
            }
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.stop_renewing.cancel();
        if self.leadership.end() {
            tracing::warn!(identity = %self.identity, epoch = self.epoch, "stopped renewing the leader lease without releasing it");
        }
    }
}

/// What the renewals and the `Term` share: leadership ends once, whoever ends it.
struct Leadership {
    identity: String,
    epoch: u64,
    lost: CancellationToken,
    ended: AtomicBool,
}

impl Leadership {
    /// Ends leadership: cancels `lost` and updates the metrics. False if it had ended already.
    fn end(&self) -> bool {
        if self.ended.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.lost.cancel();
        let m = crate::telemetry::metrics();
        m.leader.set(0);
        m.leader_transitions.inc();
        true
    }
}

/// The leader's loop: a round every retry period; within a round, a try every retry period until
/// one succeeds. Leadership is lost when no try has succeeded by `renew_deadline` after the start
/// of the last successful one (measured from before the request was sent, so a standby, which
/// saw that renewal no earlier than it was applied, cannot take over before this process stops),
/// or at once when the Lease shows another holder. An error is never taken for a renewal.
async fn renew(
    mut core: Core,
    mut renewed_at: Instant,
    leadership: Arc<Leadership>,
    stop: CancellationToken,
) -> Core {
    let t = core.timings;
    let mut last_error: Option<HaError> = None;
    let reason = 'leading: loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return core,
            _ = sleep(t.retry_period) => {}
        }
        let deadline = renewed_at + t.renew_deadline;
        loop {
            let started = Instant::now();
            let step = tokio::select! {
                biased;
                _ = stop.cancelled() => Step::Stopped,
                _ = sleep_until(deadline) => Step::Missed,
                a = core.attempt(true) => Step::Tried(a),
            };
            match step {
                Step::Stopped => return core,
                Step::Missed => break 'leading missed(t.renew_deadline, last_error.take()),
                Step::Tried(Attempt::Holding(_)) => {
                    renewed_at = started;
                    last_error = None;
                    break;
                }
                Step::Tried(Attempt::HeldBy(why) | Attempt::Gone(why)) => break 'leading why,
                Step::Tried(Attempt::Failed(e)) => {
                    tracing::debug!(error = %e, "could not renew the leader lease; trying again");
                    last_error = Some(e);
                }
            }
            // The next try one retry period after this one started: at once if it took longer.
            tokio::select! {
                biased;
                _ = stop.cancelled() => return core,
                _ = sleep_until(deadline) => break 'leading missed(t.renew_deadline, last_error.take()),
                _ = sleep_until(started + t.retry_period) => {}
            }
        }
    };
    if leadership.end() {
        tracing::warn!(identity = %leadership.identity, epoch = leadership.epoch, %reason, "lost the leader lease");
    }
    core
}

/// How a renewal try ended: stopped by `release` or drop, past the deadline, or answered.
enum Step {
    Stopped,
    Missed,
    Tried(Attempt),
}

fn missed(deadline: Duration, last_error: Option<HaError>) -> String {
    let why = last_error.map_or_else(|| "no answer in time".to_string(), |e| e.to_string());
    format!(
        "not renewed within the renew deadline ({} ms): {why}",
        deadline.as_millis()
    )
}

/// The wait before a standby's next try.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(fastrand::f64() * JITTER)
}

/// Who holds the Lease now, if anyone holds one that has not expired. For display (`status`) and
/// tests only: a single read can only compare the holder's `renewTime` with this node's wall
/// clock, which the election itself never does.
pub async fn holder(
    client: &kube::Client,
    namespace: &str,
    lease_name: &str,
) -> Result<Option<String>, HaError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let action = format!("reading Lease {namespace}/{lease_name}");
    let lease = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(lease_name)).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(source)) => return Err(HaError::Api { action, source }),
        Err(_) => {
            return Err(HaError::Timeout {
                action,
                after: READ_TIMEOUT,
            });
        }
    };
    Ok(lease.and_then(|l| current_holder(&l, wall_now())))
}

/// The Lease's holder, unless its `renewTime` plus its duration is before `now`.
fn current_holder(lease: &Lease, now: MicroTime) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    if let Some(renewed) = &spec.renew_time {
        let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
        let expires = renewed
            .0
            .as_microsecond()
            .saturating_add(seconds * 1_000_000);
        if expires < now.0.as_microsecond() {
            return None;
        }
    }
    Some(holder.to_string())
}

/// Now on the wall clock, for the times written into the Lease (informational: nothing here
/// judges expiry by them).
fn wall_now() -> MicroTime {
    let micros = chrono::Utc::now().timestamp_micros();
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

fn epoch_of(lease: &Lease) -> u64 {
    let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
    u64::try_from(transitions.unwrap_or(0)).unwrap_or(0)
}

fn is_conflict(e: &HaError) -> bool {
    matches!(e, HaError::Api { source: kube::Error::Api(s), .. } if s.code == 409)
}

fn is_gone_or_conflict(e: &HaError) -> bool {
    matches!(e, HaError::Api { source: kube::Error::Api(s), .. } if matches!(s.code, 404 | 409))
}

/// The outcome of one try.
enum Attempt {
    /// This process holds the Lease, at this epoch.
    Holding(u64),
    /// Another holder's Lease has not expired.
    HeldBy(String),
    /// A leader's Lease is no longer its own (why).
    Gone(String),
    /// The API refused or did not answer: this try neither acquired nor renewed.
    Failed(HaError),
}

/// What one try will write, decided from what it read.
enum Plan {
    Create(Lease),
    Update(Lease),
    Held(String),
    Gone(String),
}

/// The election's state: the last Lease record seen and when it was seen to change.
struct Core {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: LeaseTimings,
    clock: Arc<dyn MonoClock>,
    observed: Option<Observed>,
    /// The last holder seen, for the transitions metric.
    last_holder: Option<String>,
}

struct Observed {
    /// As last read or written (its resourceVersion guards the next write).
    lease: Lease,
    /// When its record (the spec) was last seen to change, on `Core::clock`.
    at: Instant,
}

impl Core {
    fn what(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }

    /// client-go's tryAcquireOrRenew. A leader first renews what it last wrote (one call); when
    /// that write finds the Lease changed or gone, it reads the Lease like a candidate does.
    async fn attempt(&mut self, leading: bool) -> Attempt {
        if leading
            && self.holds()
            && self.unexpired()
            && let Some(next) = self.renewal()
        {
            match self.put(next).await {
                Ok(epoch) => return Attempt::Holding(epoch),
                Err(e) if is_gone_or_conflict(&e) => {}
                Err(e) => return Attempt::Failed(e),
            }
        }
        let current = match self.read().await {
            Ok(current) => current,
            Err(e) => return Attempt::Failed(e),
        };
        let plan = self.plan(current, leading);
        self.write(plan).await
    }

    async fn call<T>(
        &self,
        doing: &str,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, HaError> {
        let action = || format!("{doing} {}", self.what());
        match tokio::time::timeout(self.timings.call_timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(HaError::Api {
                action: action(),
                source,
            }),
            Err(_) => Err(HaError::Timeout {
                action: action(),
                after: self.timings.call_timeout,
            }),
        }
    }

    async fn read(&mut self) -> Result<Option<Lease>, HaError> {
        self.call("reading", self.api.get_opt(&self.name)).await
    }

    /// Remembers `lease`; its record counts as changed (and the expiry clock restarts) only when
    /// its spec differs from the last one seen.
    fn observe(&mut self, lease: &Lease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.lease.spec != lease.spec);
        if changed {
            self.saw_holder(holder_of(lease));
            self.observed = Some(Observed {
                lease: lease.clone(),
                at: self.clock.now(),
            });
        } else if let Some(o) = &mut self.observed {
            o.lease = lease.clone();
        }
    }

    /// Counts a change of holder: this process acquiring, or, as a standby, a new leader (not the
    /// first one it sees).
    fn saw_holder(&mut self, holder: Option<&str>) {
        let Some(holder) = holder else {
            return;
        };
        let change = match &self.last_holder {
            Some(last) => last != holder,
            None => holder == self.identity,
        };
        if change {
            crate::telemetry::metrics().leader_transitions.inc();
        }
        self.last_holder = Some(holder.to_string());
    }

    /// Whether the last record seen names this process.
    fn holds(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| holder_of(&o.lease) == Some(self.identity.as_str()))
    }

    /// Whether the last record seen has not expired: judged from when this process saw it change,
    /// for the longer of the duration it states and this process's own (so that replicas
    /// configured differently, as during a rollout of new timings, still wait out the holder's).
    /// How long until the Lease held by another expires, as this process judges it; `None`
    /// when it has seen no Lease.
    fn until_expiry(&self) -> Option<Duration> {
        let o = self.observed.as_ref()?;
        let stated = o
            .lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map_or(Duration::ZERO, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expiry = o.at + stated.max(self.timings.lease_duration);
        Some(expiry.saturating_duration_since(self.clock.now()))
    }

    fn unexpired(&self) -> bool {
        let Some(o) = &self.observed else {
            return false;
        };
        let stated = o
            .lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map_or(Duration::ZERO, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        o.at + stated.max(self.timings.lease_duration) > self.clock.now()
    }

    /// The last record this process wrote, renewed now.
    fn renewal(&self) -> Option<Lease> {
        let mut next = self.observed.as_ref()?.lease.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.timings.lease_seconds());
        spec.renew_time = Some(wall_now());
        Some(next)
    }

    /// Decides from the Lease as read: create it, take it (expired or free), renew it, or wait.
    /// A leader never takes its Lease anew: finding another holder (or none) means it lost.
    fn plan(&mut self, current: Option<Lease>, leading: bool) -> Plan {
        let now = wall_now();
        let Some(current) = current else {
            if leading {
                return Plan::Gone("the Lease was deleted".into());
            }
            return Plan::Create(Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.timings.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            });
        };
        self.observe(&current);
        let holder = holder_of(&current).map(str::to_string);
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if leading && !ours {
            return Plan::Gone(match holder {
                Some(h) => format!("the Lease is held by {h}"),
                None => "the Lease was given up by another process".into(),
            });
        }
        if let Some(h) = holder.filter(|_| !ours)
            && self.unexpired()
        {
            return Plan::Held(h);
        }
        let mut next = current;
        let old = next.spec.take().unwrap_or_default();
        let transitions = old.lease_transitions.unwrap_or(0);
        let (acquire_time, lease_transitions) = if ours {
            (old.acquire_time.clone(), transitions)
        } else {
            (Some(now.clone()), transitions.saturating_add(1))
        };
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_seconds()),
            acquire_time,
            renew_time: Some(now),
            lease_transitions: Some(lease_transitions),
            ..old
        });
        Plan::Update(next)
    }

    async fn write(&mut self, plan: Plan) -> Attempt {
        let written = match plan {
            Plan::Held(holder) => return Attempt::HeldBy(holder),
            Plan::Gone(why) => return Attempt::Gone(why),
            Plan::Create(lease) => self.create(lease).await,
            Plan::Update(lease) => self.put(lease).await,
        };
        match written {
            Ok(epoch) => Attempt::Holding(epoch),
            Err(e) => Attempt::Failed(e),
        }
    }

    async fn create(&mut self, lease: Lease) -> Result<u64, HaError> {
        let created = self
            .call("creating", self.api.create(&PostParams::default(), &lease))
            .await?;
        self.observe(&created);
        Ok(epoch_of(&created))
    }

    /// Replaces the Lease; the resourceVersion it carries makes this a compare-and-swap (409 if
    /// anyone wrote since it was read).
    async fn put(&mut self, lease: Lease) -> Result<u64, HaError> {
        let written = self
            .call(
                "updating",
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await?;
        self.observe(&written);
        Ok(epoch_of(&written))
    }

    /// client-go's release: if the Lease still names this process, clear the holder, by
    /// compare-and-swap on a fresh read.
    async fn release(&mut self) -> Result<bool, HaError> {
        let Some(current) = self.read().await? else {
            return Ok(false);
        };
        if holder_of(&current) != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = wall_now();
        let mut next = current;
        let old = next.spec.take().unwrap_or_default();
        next.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..old
        });
        self.put(next).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketops_sim::kube::{KubeSim, KubeSimConfig, Partition};
    use tokio::task::JoinHandle;

    const NS: &str = "rocketops";
    const LEASE: &str = "rocketops-leader";
    const ALPHA: &str = "alpha_0001";
    const BRAVO: &str = "bravo_0002";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// client-go's 15/10/2 s scaled down, keeping the lease a whole second (as it is written).
    fn timings() -> LeaseTimings {
        LeaseTimings::new(ms(1000), ms(700), ms(150))
    }

    /// Room for the scheduler in the assertions on time.
    const SLACK: Duration = Duration::from_millis(250);

    struct Cluster {
        sim: KubeSim,
        dir: tempfile::TempDir,
    }

    impl Cluster {
        async fn start() -> Cluster {
            crate::tls::install_crypto_provider();
            let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
            sim.create(
                "namespaces",
                "",
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            sim.write_kubeconfig(&dir.path().join("kubeconfig"), &[])
                .unwrap();
            Cluster { sim, dir }
        }

        /// A client as the bot builds it, its User-Agent naming `identity`.
        async fn client(&self, identity: &str) -> kube::Client {
            let cfg = HaConfig {
                kubeconfig: Some(self.dir.path().join("kubeconfig")),
                namespace: Some(NS.into()),
                ..HaConfig::default()
            };
            let (client, namespace) =
                super::super::client(&cfg, &super::super::user_agent(identity))
                    .await
                    .unwrap();
            assert_eq!(namespace, NS);
            client
        }

        async fn elector(&self, identity: &str) -> Elector {
            self.elector_for(LEASE, identity).await
        }

        async fn elector_for(&self, lease: &str, identity: &str) -> Elector {
            Elector::new(self.client(identity).await, NS, lease, identity, timings())
        }

        async fn holder(&self) -> Option<String> {
            holder(&self.client("observer_0000").await, NS, LEASE)
                .await
                .unwrap()
        }

        /// The sequence numbers of the Lease writes `identity` got accepted.
        fn accepted_writes(&self, identity: &str) -> Vec<u64> {
            self.sim
                .write_log()
                .iter()
                .filter(|w| w.resource == "leases" && w.agent.contains(identity) && w.accepted())
                .map(|w| w.seq)
                .collect()
        }
    }

    /// Acquires in the background; the term and when it began.
    fn standby(elector: Elector, stop: CancellationToken) -> JoinHandle<Option<(Term, Instant)>> {
        tokio::spawn(async move {
            let term = elector.acquire(&stop).await?;
            Some((term, Instant::now()))
        })
    }

    /// When `term` is lost.
    fn when_lost(term: &Term) -> JoinHandle<Instant> {
        let lost = term.lost();
        tokio::spawn(async move {
            lost.cancelled().await;
            Instant::now()
        })
    }

    async fn lead(cluster: &Cluster, identity: &str) -> Term {
        let stop = CancellationToken::new();
        tokio::time::timeout(ms(1000), cluster.elector(identity).await.acquire(&stop))
            .await
            .expect("a free lease is acquired at the first try")
            .expect("not stopped")
    }

    /// A clock that runs `rate` times as fast as tokio's.
    struct Fast {
        start: Instant,
        rate: f64,
    }

    impl MonoClock for Fast {
        fn now(&self) -> Instant {
            self.start + self.start.elapsed().mul_f64(self.rate)
        }
    }

    /// A clock an hour ahead of tokio's.
    struct Ahead;

    impl MonoClock for Ahead {
        fn now(&self) -> Instant {
            Instant::now() + Duration::from_secs(3600)
        }
    }

    #[test]
    fn the_default_timings_are_client_gos_with_each_call_bounded_by_the_renew_deadline() {
        let t = LeaseTimings::from(&HaConfig::default());
        assert_eq!(
            t,
            LeaseTimings {
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
                call_timeout: Duration::from_secs(10),
            }
        );
        assert_eq!(t.lease_seconds(), 15);
    }

    #[test]
    fn the_lease_duration_is_written_in_whole_seconds_rounded_up() {
        let secs = |d| LeaseTimings::new(d, ms(1), ms(1)).lease_seconds();
        assert_eq!(secs(ms(1000)), 1);
        assert_eq!(secs(ms(1200)), 2);
        assert_eq!(secs(ms(300)), 1);
        assert_eq!(secs(Duration::ZERO), 1);
    }

    #[test]
    fn the_holder_shown_is_nobody_once_its_renewal_is_older_than_its_duration() {
        let lease = |holder: &str, renewed_micros: i64| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    Timestamp::from_microsecond(renewed_micros).unwrap(),
                )),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let at = |secs: i64| MicroTime(Timestamp::from_second(1_800_000_000 + secs).unwrap());
        let renewed = 1_800_000_000 * 1_000_000;
        assert_eq!(
            current_holder(&lease("pod-a_1", renewed), at(14)).as_deref(),
            Some("pod-a_1")
        );
        assert_eq!(current_holder(&lease("pod-a_1", renewed), at(16)), None);
        assert_eq!(current_holder(&lease("", renewed), at(0)), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_electors_started_together_exactly_one_leads_and_the_other_waits() {
        let c = Cluster::start().await;
        let stop = CancellationToken::new();
        let mut a = standby(c.elector(ALPHA).await, stop.clone());
        let mut b = standby(c.elector(BRAVO).await, stop.clone());
        let first = tokio::time::timeout(ms(1500), async {
            tokio::select! {
                r = &mut a => (r, b),
                r = &mut b => (r, a),
            }
        });
        let (first, waiting) = first.await.expect("one of them leads");
        let (leader, _) = first.unwrap().unwrap();
        // Several lease durations: the leader keeps renewing, the other keeps waiting.
        tokio::time::sleep(ms(2500)).await;
        assert!(!waiting.is_finished(), "a second leader");
        assert!(!leader.is_lost());
        assert_eq!(leader.epoch, 0, "the Lease was created by its first leader");
        assert_eq!(c.holder().await.as_deref(), Some(leader.identity.as_str()));
        let metrics = crate::telemetry::metrics().render();
        assert!(metrics.contains("\nrocketops_leader "), "{metrics}");
        assert!(
            metrics.contains("\nrocketops_leader_transitions_total "),
            "{metrics}"
        );
        stop.cancel();
        assert!(waiting.await.unwrap().is_none(), "stopped without leading");
        c.sim.stop();
    }

    /// The leader is cut off from the API: it must step down within the renew deadline, and the
    /// standby take over only after that, a lease duration after it last saw a renewal, with the
    /// next epoch; nothing the old leader sends afterwards is accepted.
    async fn cut_off_leader_is_replaced(
        mode: Partition,
        standby_clock: Option<Arc<dyn MonoClock>>,
    ) {
        let c = Cluster::start().await;
        let a = lead(&c, ALPHA).await;
        let mut b = c.elector(BRAVO).await;
        if let Some(clock) = standby_clock {
            b = b.with_clock(clock);
        }
        let b = standby(b, CancellationToken::new());
        tokio::time::sleep(ms(500)).await;
        assert!(!a.is_lost() && !b.is_finished(), "renewals keep the lease");

        let a_lost = when_lost(&a);
        let cut = Instant::now();
        c.sim.partition(ALPHA, Some(mode));
        let t = timings();
        let lost_at = tokio::time::timeout(t.renew_deadline + SLACK, a_lost)
            .await
            .expect("the leader steps down within the renew deadline")
            .unwrap();
        let (b_term, b_at) = tokio::time::timeout(ms(3000), b)
            .await
            .expect("the standby takes over")
            .unwrap()
            .unwrap();
        assert!(
            b_at >= lost_at,
            "the standby led before the leader stepped down"
        );
        let after = b_at - cut;
        assert!(
            after >= t.lease_duration - t.retry_period - SLACK,
            "taken over after {after:?}, before the lease could expire"
        );
        assert_eq!(b_term.epoch, a.epoch + 1);
        assert_eq!(c.holder().await.as_deref(), Some(BRAVO));

        c.sim.partition(ALPHA, None);
        assert!(!a.release().await, "a lost lease is not released");
        tokio::time::sleep(ms(300)).await;
        let bravo_first = c.accepted_writes(BRAVO)[0];
        let late: Vec<u64> = c
            .accepted_writes(ALPHA)
            .into_iter()
            .filter(|seq| *seq > bravo_first)
            .collect();
        assert!(
            late.is_empty(),
            "the old leader wrote after the takeover: {late:?}"
        );
        assert!(!b_term.is_lost());
        c.sim.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_requests_are_dropped_steps_down_and_the_standby_takes_over_with_the_next_epoch()
     {
        cut_off_leader_is_replaced(Partition::Drop, None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_requests_are_rejected_steps_down_and_the_standby_takes_over_with_the_next_epoch()
     {
        cut_off_leader_is_replaced(Partition::Reject, None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_whose_clock_runs_fast_within_the_tolerance_still_waits_for_the_leader_to_step_down()
     {
        // 1000 / 700 ms tolerates a rate up to about 1.4.
        let clock = Arc::new(Fast {
            start: Instant::now(),
            rate: 1.2,
        });
        cut_off_leader_is_replaced(Partition::Drop, Some(clock)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_api_and_a_stall_shorter_than_the_renew_deadline_change_nothing() {
        let c = Cluster::start().await;
        let a = lead(&c, ALPHA).await;
        let b = standby(c.elector(BRAVO).await, CancellationToken::new());
        tokio::time::sleep(ms(300)).await;

        // Every request slower than the retry period, but a renewal still well within the
        // deadline.
        c.sim.set_agent_delay(ALPHA, ms(200));
        tokio::time::sleep(ms(1200)).await;
        c.sim.set_agent_delay(ALPHA, Duration::ZERO);
        // No answer at all for a while.
        c.sim.partition(ALPHA, Some(Partition::Drop));
        tokio::time::sleep(ms(200)).await;
        c.sim.partition(ALPHA, None);
        tokio::time::sleep(ms(1500)).await;

        assert!(!a.is_lost(), "the leader stepped down");
        assert!(!b.is_finished(), "the standby took over");
        assert_eq!(c.holder().await.as_deref(), Some(ALPHA));
        b.abort();
        c.sim.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_released_lease_is_taken_by_the_standby_within_about_one_retry_period() {
        let c = Cluster::start().await;
        let a = lead(&c, ALPHA).await;
        let b = standby(c.elector(BRAVO).await, CancellationToken::new());
        tokio::time::sleep(ms(400)).await;
        let a_lost = a.lost();
        let epoch = a.epoch;
        let released_at = Instant::now();
        assert!(a.release().await);
        assert!(a_lost.is_cancelled(), "leadership ends with the release");
        let t = timings();
        let (b_term, b_at) = tokio::time::timeout(t.retry_period.mul_f64(1.0 + JITTER) + SLACK, b)
            .await
            .expect("the standby takes over at its next try")
            .unwrap()
            .unwrap();
        assert!(b_at - released_at < t.lease_duration);
        assert_eq!(b_term.epoch, epoch + 1, "the release keeps the transitions");
        c.sim.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_renewed_by_a_clock_an_hour_off_is_judged_by_when_this_process_saw_it_change() {
        let c = Cluster::start().await;
        for (name, offset) in [("behind", -3600), ("ahead", 3600)] {
            let renewed = (chrono::Utc::now() + chrono::Duration::seconds(offset))
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            c.sim
                .create(
                    "leases",
                    NS,
                    serde_json::json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": {"holderIdentity": "elsewhere_0000", "leaseDurationSeconds": 1,
                                 "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 4},
                    }),
                )
                .unwrap();
        }
        let started = Instant::now();
        // This process's own clock an hour ahead makes no difference either.
        let behind = standby(
            c.elector_for("behind", ALPHA)
                .await
                .with_clock(Arc::new(Ahead)),
            CancellationToken::new(),
        );
        let ahead = standby(
            c.elector_for("ahead", BRAVO).await,
            CancellationToken::new(),
        );
        let t = timings();
        for task in [behind, ahead] {
            let (term, at) = tokio::time::timeout(ms(3000), task)
                .await
                .expect("taken a lease duration after it was first seen, not an hour")
                .unwrap()
                .unwrap();
            assert!(
                at - started >= t.lease_duration,
                "taken after {:?}, before the lease expired",
                at - started
            );
            assert_eq!(term.epoch, 5);
        }
        c.sim.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_candidates_who_read_the_same_version_get_one_lease_and_one_conflict() {
        let c = Cluster::start().await;
        let mut a = c.elector(ALPHA).await.core;
        let mut b = c.elector(BRAVO).await.core;

        // Both find no Lease and create one: the second create is refused.
        let (ra, rb) = (a.read().await.unwrap(), b.read().await.unwrap());
        let (pa, pb) = (a.plan(ra, false), b.plan(rb, false));
        assert!(matches!((&pa, &pb), (Plan::Create(_), Plan::Create(_))));
        assert!(matches!(a.write(pa).await, Attempt::Holding(0)));
        assert!(matches!(b.write(pb).await, Attempt::Failed(e) if is_conflict(&e)));

        // Both read the released Lease and take it: the second update is refused.
        assert!(a.release().await.unwrap());
        let (ra, rb) = (a.read().await.unwrap(), b.read().await.unwrap());
        let (pa, pb) = (a.plan(ra, false), b.plan(rb, false));
        assert!(matches!((&pa, &pb), (Plan::Update(_), Plan::Update(_))));
        assert!(matches!(b.write(pb).await, Attempt::Holding(1)));
        assert!(matches!(a.write(pa).await, Attempt::Failed(e) if is_conflict(&e)));

        // Its next try finds the Lease held.
        assert!(matches!(a.attempt(false).await, Attempt::HeldBy(h) if h == BRAVO));
        let codes: Vec<(bool, &str, u16)> = c
            .sim
            .write_log()
            .iter()
            .filter(|w| w.resource == "leases")
            .map(|w| (w.agent.contains(ALPHA), w.verb.as_str(), w.status))
            .map(|(alpha, verb, status)| {
                (
                    alpha,
                    if verb == "create" { "create" } else { "update" },
                    status,
                )
            })
            .collect();
        assert_eq!(
            codes,
            [
                (true, "create", 201),
                (false, "create", 409),
                (true, "update", 200),
                (false, "update", 200),
                (true, "update", 409),
            ]
        );
        c.sim.stop();
    }
}
