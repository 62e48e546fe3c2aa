//! rocketops: a ChatOps bot for Rocket.Chat that runs deploys, backups and restores on Kubernetes.

/// Failure alerts from the managed namespaces.
pub mod alerts;
/// Wiring and the command pipeline.
pub mod app;
/// The audit log command.
pub mod audit;
pub mod backoff;
/// The backup catalog command (list, retention dry run, report).
pub mod backups;
/// Message-to-answer benchmark against the simulator.
#[cfg(feature = "sandbox")]
pub mod bench;
/// The backup catalog: what was backed up, verified and pruned.
pub mod catalog;
/// The chat boundary and the Rocket.Chat adapter.
pub mod chat;
/// The one clock.
pub mod clock;
/// Everything the bot does to Kubernetes.
pub mod cluster;
/// Command recognition, grammar and help.
pub mod command;
/// The TOML configuration.
pub mod config;
/// The chat-safe user error.
pub mod error;
/// High availability: leader election and state in Kubernetes.
pub mod ha;
/// The operations journal's record types.
pub mod journal;
/// The process's memory footprint.
pub mod memory;
/// The operations behind the commands.
pub mod ops;
/// Who may run what where.
pub mod policy;
/// Unguessable codes, marks and ids from the operating system's generator.
pub mod random;
/// The one redaction pass for outside text.
pub mod redact;
/// The local simulators.
#[cfg(feature = "sandbox")]
pub mod sandbox;
/// Schedules and retention planning.
pub mod schedule;
/// The embedded store.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// The TLS crypto provider.
pub mod tls;
