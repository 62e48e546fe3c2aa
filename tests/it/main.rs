//! Integration tests: the real bot against the simulators over loopback sockets.

mod alerts;
mod backups;
mod cluster;
mod commands;
mod ha;
mod journal;
mod partition;
mod realjobs;
mod releases;
mod rocketchat;
mod sandbox;
mod shipping;
mod simulator;
mod support;
mod telemetry;
mod trust;
mod week;
