//! Embeds the built-in plugins' manifests (`../plugins/*/plugin.toml`), so that the
//! catalog of built-in providers comes from the same files the agent runs the plugins by.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let plugins = dir.join("..").join("plugins");
    println!("cargo:rerun-if-changed={}", plugins.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&plugins).expect("read plugins/") {
        let path = entry.expect("plugins/ entry").path();
        let manifest = path.join("plugin.toml");
        if manifest.is_file() {
            println!("cargo:rerun-if-changed={}", manifest.display());
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("plugin folder name")
                .to_string();
            found.push((id, manifest));
        }
    }
    found.sort();
    let mut out = String::from("&[\n");
    for (id, manifest) in found {
        writeln!(
            out,
            "    ({id:?}, include_str!({:?})),",
            manifest.display().to_string()
        )
        .expect("write");
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_manifests.rs");
    std::fs::write(dest, out).expect("write builtin_manifests.rs");
}
