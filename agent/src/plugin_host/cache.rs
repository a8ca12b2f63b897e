//! Compiled plugins on disk: `<cache_dir>/<plugin>-<sha256 of wasm>-<engine hash>.cwasm`.
//!
//! Compiling a plugin takes tens of milliseconds in a release agent (seconds in a debug
//! one); loading the cached machine code is a sub-millisecond mmap. The key holds the
//! wasm's digest and wasmtime's `precompile_compatibility_hash` (wasmtime version,
//! engine settings, CPU features), so a stale or foreign artifact is never loaded.

use super::PluginError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now (and stored in the cache if it could be).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// A `Hasher` that feeds sha256, so the engine's compatibility hash is stable across
/// agent runs (std's hashers make no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// A short, stable digest of the engine's compatibility hash.
pub fn engine_key(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}

/// Loads `wasm` from the cache or compiles it (and stores the result).
/// Returns the component, where it came from, and the wasm's sha256.
pub fn load(
    engine: &Engine,
    cache_dir: &Path,
    engine_key: &str,
    plugin: &str,
    wasm: &[u8],
) -> Result<(Component, LoadSource, String), PluginError> {
    let digest = hex::encode(Sha256::digest(wasm));
    let file = cache_dir.join(format!("{plugin}-{digest}-{engine_key}.cwasm"));
    if file.is_file() {
        match deserialize(engine, &file) {
            Ok(c) => return Ok((c, LoadSource::Cached, digest)),
            Err(e) => tracing::warn!(
                path = %file.display(),
                error = %format!("{e:#}"),
                "cached plugin cannot be loaded; compiling it again"
            ),
        }
    }

    let started = Instant::now();
    let compiled = engine
        .precompile_component(wasm)
        .map_err(|e| PluginError::Compile {
            plugin: plugin.to_string(),
            message: format!("{e:#}"),
        })?;
    tracing::info!(plugin, elapsed = ?started.elapsed(), bytes = compiled.len(), "compiled plugin");
    match store(&file, &compiled) {
        Ok(()) => {
            if let Ok(c) = deserialize(engine, &file) {
                remove_stale(cache_dir, plugin, &file);
                return Ok((c, LoadSource::Compiled, digest));
            }
        }
        Err(e) => tracing::warn!(
            path = %file.display(),
            error = %e,
            "cannot store the compiled plugin; it will be compiled again next start"
        ),
    }
    let c = deserialize_bytes(engine, &compiled).map_err(|e| PluginError::Compile {
        plugin: plugin.to_string(),
        message: format!("{e:#}"),
    })?;
    Ok((c, LoadSource::Compiled, digest))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, file: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file is one this host wrote with `precompile_component` for an engine
    // with the same compatibility hash (it is in the name), written to a temporary name
    // and renamed into place, and never modified afterwards (it is mmapped).
    unsafe { Component::deserialize_file(engine, file) }
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` came from `engine.precompile_component` just now.
    unsafe { Component::deserialize(engine, bytes) }
}

/// Writes `bytes` to `file` atomically (temporary file + rename).
fn store(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = file.with_extension(format!("tmp-{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes older compiled versions of `plugin`.
fn remove_stale(cache_dir: &Path, plugin: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let prefix = format!("{plugin}-");
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // "<plugin>-<64 hex>-<16 hex>.cwasm": the hex part rules out plugins whose id
        // merely starts with this one's.
        let is_version_of_plugin = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".cwasm"))
            .is_some_and(|rest| {
                rest.len() == 64 + 1 + 16 && rest.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            });
        if is_version_of_plugin && path != keep {
            let _ = std::fs::remove_file(&path);
        }
    }
}
