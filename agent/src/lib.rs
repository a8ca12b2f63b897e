//! The Sluice build agent.
//!
//! An agent dials the controller over mutually authenticated TLS, keeps one WebSocket
//! session open, accepts the actions the controller offers, and runs each one in a fresh
//! workspace through a sandboxed WASM plugin.

pub mod builtin;
pub mod plugin_host;
