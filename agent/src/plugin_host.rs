//! The wasmtime host for action plugins.
