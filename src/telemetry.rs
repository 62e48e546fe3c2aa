//! Logs (text or JSON), Prometheus metrics, and the `/healthz` `/readyz` `/metrics` endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat) {
    init_with_filter(format, "info");
}

/// As `init`, with `default` as the filter when `RUST_LOG` is unset.
pub fn init_with_filter(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let colours = std::io::stderr().is_terminal() && format == LogFormat::Text;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(move || RedactingWriter(std::io::stderr(), colours));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// As `init_with_filter`, writing to the file at `path` (appended, no colours) instead of standard
/// error: the sandbox keeps its terminal for the chat.
pub fn init_to_file(
    format: LogFormat,
    default: &str,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let file = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || RedactingWriter(file.clone(), false));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// Text a person typed, shortened for a log field: a log line stays a line, and control
/// characters show as escapes (`\n`, `\x1b`) instead of acting on the terminal.
pub fn short(text: &str) -> String {
    const MAX: usize = 200;
    let cut = match text.char_indices().nth(MAX) {
        Some((i, _)) => &text[..i],
        None => text,
    };
    let mut s = crate::redact::escape_controls(cut).into_owned();
    if cut.len() < text.len() {
        s.push_str(&format!("… ({} characters)", text.chars().count()));
    }
    s
}

/// Standard error through the redactor: a log line never carries a secret, whichever field it
/// came in (the formatter writes each event in one call), and stays one line: a newline or an
/// escape sequence inside a field is written as a visible escape (colours are kept when on).
struct RedactingWriter<W: std::io::Write>(W, bool);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let redacted = crate::redact::redact(&text);
        let safe = crate::redact::escape_log_record(&redacted, self.1);
        self.0.write_all(safe.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

type Labels = Vec<(String, String)>;

fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 20))
}

/// The bot's metrics.
pub struct Metrics {
    registry: Registry,
    /// Commands by name and outcome (`done`, `refused`, `started`, ...).
    pub commands: Family<Labels, Counter>,
    /// Operation durations by command and final state.
    pub operation_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Rollouts by environment and outcome.
    pub rollouts: Family<Labels, Counter>,
    /// Failed operation steps by command and kind of failure (`unavailable`, `forbidden`, `job`, ...).
    pub step_failures: Family<Labels, Counter>,
    /// Size of the newest backup per environment.
    pub backup_bytes: Family<Labels, Gauge>,
    /// Unix time of the newest backup per environment (its age is now minus this).
    pub backup_timestamp: Family<Labels, Gauge>,
    /// Scheduled runs by environment, kind and outcome (`started`, `skipped`).
    pub scheduled_runs: Family<Labels, Counter>,
    /// Whether the last test-restore per environment proved its backup (1) or not (0).
    pub verify_ok: Family<Labels, Gauge>,
    /// How long the last test-restore per environment took (the recovery time).
    pub restore_seconds: Family<Labels, Gauge>,
    /// Alerts posted, by environment and severity.
    pub alerts: Family<Labels, Counter>,
    /// Reconnections to Rocket.Chat.
    pub reconnects: Counter,
    /// Rocket.Chat REST request round-trip time (every post, edit and lookup).
    pub chat_request_seconds: Histogram,
    /// REST answers 429 (rate limited) from Rocket.Chat.
    pub chat_rate_limited: Counter,
    /// Records in the audit log (a drop means truncation).
    pub audit_records: Gauge,
    /// The audit anchor: one series, labelled with the head hash and its record number.
    pub audit_anchor: Family<Labels, Gauge>,
    /// Store writes that failed where nothing could be failed instead (each is logged too), by tree.
    pub store_write_failures: Family<Labels, Counter>,
    /// 1 while this process holds the leader Lease, 0 otherwise.
    pub leader: Gauge,
    /// Changes of leader this process made (acquired, lost, released) or saw as a standby.
    pub leader_transitions: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rocketops");
        let m = Metrics {
            commands: Family::default(),
            operation_seconds: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            rollouts: Family::default(),
            step_failures: Family::default(),
            backup_bytes: Family::default(),
            backup_timestamp: Family::default(),
            verify_ok: Family::default(),
            scheduled_runs: Family::default(),
            restore_seconds: Family::default(),
            alerts: Family::default(),
            reconnects: Counter::default(),
            chat_request_seconds: seconds_buckets(),
            chat_rate_limited: Counter::default(),
            audit_records: Gauge::default(),
            audit_anchor: Family::default(),
            store_write_failures: Family::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "commands",
            "Commands by name and outcome",
            m.commands.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Operation durations by command and final state",
            m.operation_seconds.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts by environment and outcome",
            m.rollouts.clone(),
        );
        registry.register(
            "step_failures",
            "Failed operation steps by command and kind of failure",
            m.step_failures.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Size of the newest backup per environment",
            m.backup_bytes.clone(),
        );
        registry.register(
            "backup_timestamp_seconds",
            "Unix time of the newest backup per environment",
            m.backup_timestamp.clone(),
        );
        registry.register(
            "scheduled_runs",
            "Scheduled runs by environment, kind and outcome",
            m.scheduled_runs.clone(),
        );
        registry.register(
            "verify_success",
            "Whether the last test-restore per environment proved its backup",
            m.verify_ok.clone(),
        );
        registry.register(
            "verify_restore_seconds",
            "How long the last test-restore per environment took",
            m.restore_seconds.clone(),
        );
        registry.register(
            "alerts",
            "Alerts posted by environment and severity",
            m.alerts.clone(),
        );
        registry.register(
            "chat_reconnects",
            "Reconnections to Rocket.Chat",
            m.reconnects.clone(),
        );
        registry.register(
            "chat_request_seconds",
            "Rocket.Chat REST request round-trip time",
            m.chat_request_seconds.clone(),
        );
        registry.register(
            "chat_rate_limited",
            "Rocket.Chat REST answers 429 too-many-requests",
            m.chat_rate_limited.clone(),
        );
        registry.register(
            "audit_records",
            "Records in the audit log",
            m.audit_records.clone(),
        );
        registry.register(
            "audit_anchor",
            "The audit log's head hash and record number at the last anchor (value: Unix time)",
            m.audit_anchor.clone(),
        );
        registry.register(
            "store_write_failures",
            "Store writes that failed where nothing could be failed instead (each is logged), by tree",
            m.store_write_failures.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease, 0 otherwise",
            m.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Changes of leader this process made (acquired, lost, released) or saw as a standby",
            m.leader_transitions.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What `/readyz` checks; each part is updated by its owner.
#[derive(Debug, Default)]
pub struct Readiness {
    /// A replica waiting for the Lease: ready when it reaches the API server (a standby that is
    /// never Ready would block draining the leader's node), whatever chat says.
    pub standby: AtomicBool,
    /// Whether a standby's last call to the API server got an answer.
    pub api_reachable: AtomicBool,
    pub chat_connected: AtomicBool,
    pub store_open: AtomicBool,
    pub clusters_reachable: AtomicBool,
    /// Configured rooms the bot could not reach (names, without `#`).
    pub rooms_missing: std::sync::Mutex<Vec<String>>,
}

impl Readiness {
    /// Why not ready (empty when ready).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.standby.load(Ordering::Relaxed) {
            if !self.api_reachable.load(Ordering::Relaxed) {
                out.push("standby: the Kubernetes API server does not answer".to_string());
            }
            return out;
        }
        if !self.chat_connected.load(Ordering::Relaxed) {
            out.push("not connected to Rocket.Chat".to_string());
        }
        if !self.store_open.load(Ordering::Relaxed) {
            out.push("store not open".to_string());
        }
        if !self.clusters_reachable.load(Ordering::Relaxed) {
            out.push("a cluster is unreachable".to_string());
        }
        let rooms = self
            .rooms_missing
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        if !rooms.is_empty() {
            let names: Vec<String> = rooms.iter().map(|r| format!("#{r}")).collect();
            out.push(format!(
                "cannot reach configured rooms {} (see the log for the fix)",
                names.join(", ")
            ));
        }
        out
    }
}

/// This process's term as leader, with state in Kubernetes: its pod and epoch (`status` shows them).
static LEADING: std::sync::Mutex<Option<(String, u64)>> = std::sync::Mutex::new(None);

/// Records that this process leads (pod, epoch), or no longer does.
pub fn set_leading(term: Option<(String, u64)>) {
    *LEADING.lock().unwrap_or_else(|p| p.into_inner()) = term;
}

/// This process's pod and epoch while it leads replicas; `None` with one replica (sled).
pub fn leading() -> Option<(String, u64)> {
    LEADING.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listen` until `shutdown`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    ready: Arc<Readiness>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics().render(),
                )
            }),
        )
        .with_state(ready);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "the health and metrics listener stopped");
        }
    });
    Ok(addr)
}

async fn readyz(State(ready): State<Arc<Readiness>>) -> impl IntoResponse {
    let problems = ready.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn text_a_person_typed_is_one_short_line_in_the_log() {
        assert_eq!(short("deploy\ntest\x1b[2K"), "deploy\\ntest\\x1b[2K");
        let long = "x".repeat(6000);
        let s = short(&long);
        assert!(s.chars().count() < 240, "{}", s.len());
        assert!(s.ends_with("… (6000 characters)"));
    }

    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_line_is_redacted_before_it_is_written() {
        let mut w = RedactingWriter(Vec::new(), false);
        w.write_all(b"INFO connecting uri=mongodb://admin:hunter2@db:27017 token=abc123\n")
            .unwrap();
        let out = String::from_utf8(w.0).unwrap();
        assert!(!out.contains("hunter2") && !out.contains("abc123"), "{out}");
        assert!(out.starts_with("INFO connecting"), "{out}");
    }
}
