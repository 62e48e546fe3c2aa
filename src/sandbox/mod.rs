//! The local stand-ins the bot meets first: simulators over real loopback sockets, and the `sandbox` command that runs the bot against them.

pub mod rocketchat;
