//! Helpers shared by the plugin tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use sluice_agent::plugin_host::{LoadedPlugin, PluginHost, RunOutcome, RunRequest};

/// Where the test binaries cache compiled plugins (shared across tests and runs).
pub fn cache_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A plugin host with the built-in plugins loaded.
pub fn builtin_host() -> PluginHost {
    let mut host = PluginHost::new(&cache_dir()).expect("plugin host");
    host.load_builtins().expect("built-in plugins");
    host
}

/// Runs an action on `host`; returns its outcome and its whole log.
pub async fn run_on(
    host: &PluginHost,
    plugin: &LoadedPlugin,
    request: RunRequest,
) -> (RunOutcome, String) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = host.run(plugin, request, tx).await;
    let mut log = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        log.extend_from_slice(&chunk);
    }
    (outcome, String::from_utf8_lossy(&log).into_owned())
}

/// The summary and output variables of a successful run; panics with the log otherwise.
pub fn succeeded(outcome: RunOutcome, log: &str) -> (String, BTreeMap<String, String>) {
    match outcome {
        RunOutcome::Succeeded {
            summary,
            output_variables,
            ..
        } => (summary, output_variables),
        RunOutcome::Failed { message, .. } => panic!("action failed: {message}\nlog:\n{log}"),
    }
}

/// The message of a failed run; panics with the log otherwise.
pub fn failed(outcome: RunOutcome, log: &str) -> String {
    match outcome {
        RunOutcome::Failed { message, .. } => message,
        other => panic!("action should have failed: {other:?}\nlog:\n{log}"),
    }
}

/// Relative paths of everything under `dir`, sorted (directories end in `/`).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
