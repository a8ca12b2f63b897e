//! Built-in plugins embedded in the agent binary.
//!
//! `build.rs` builds every `plugins/<name>` for wasm32-wasip2 and generates the list
//! below; each entry carries the plugin's `plugin.toml` and its WASM component.

/// A plugin shipped inside the agent binary.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPlugin {
    /// The plugin id (its folder under `plugins/`), e.g. "build-commands".
    pub id: &'static str,
    /// The text of its `plugin.toml`.
    pub manifest: &'static str,
    /// The WASM component (wasm32-wasip2).
    pub wasm: &'static [u8],
}

static ALL: &[BuiltinPlugin] = include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Every built-in plugin, sorted by id.
pub fn all() -> &'static [BuiltinPlugin] {
    ALL
}
