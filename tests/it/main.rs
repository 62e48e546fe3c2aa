//! Integration tests: the real bot against the simulators over loopback sockets.

mod cluster;
mod commands;
mod rocketchat;
mod sandbox;
mod simulator;
mod support;
