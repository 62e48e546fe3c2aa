//! Simulators of a Kubernetes API server and a Rocket.Chat server over real loopback sockets, with fault injection, for testing clients of either without the servers.

pub mod kube;
pub mod postgres;
pub mod rocketchat;

mod ids;
