//! The Sluice build agent.
//!
//! An agent dials the controller over mutually authenticated TLS, keeps one WebSocket
//! session open, accepts the actions the controller offers, and runs each one in a fresh
//! workspace through a sandboxed WASM plugin.
//!
//! Module map:
//! - [`client`]: joining (pinned CA fingerprint) and the mTLS HTTPS client.
//! - [`session`]: the session loop: hello, heartbeats, offers, reports, reconnects.
//! - [`executor`]: one attempt: workspace, inputs, plugin run, outputs, report.
//! - [`artifacts`]: deterministic tar archives, moved by sha256.
//! - [`plugin_host`]: the wasmtime sandbox; [`builtin`]: the plugins compiled in.

pub mod artifacts;
pub mod builtin;
pub mod client;
pub mod executor;
pub mod masking;
pub mod plugin_host;
pub mod session;

pub use client::{Identity, JoinRequest, StateDir, join};
pub use session::{AgentError, Options, run};
