//! Builds the built-in plugins (the separate `plugins/` workspace) for wasm32-wasip2 and
//! tells `src/builtin.rs` where the `.wasm` files and manifests are.
//!
//! The nested cargo gets its own target dir (`target/plugins`): sharing the outer one
//! deadlocks on cargo's artifact lock. Flags meant for the native build are removed from
//! its environment so they do not leak into the wasm build.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("agent/ has a parent directory")
        .to_path_buf();
    let plugins_dir = root.join("plugins");
    let sdk_dir = root.join("plugin-sdk");
    let target_dir = root.join("target").join("plugins");

    let plugins = discover(&plugins_dir, "plugin.toml");
    let test_plugins = discover(&plugins_dir, "test-plugin.toml");
    if plugins.is_empty() {
        panic!("no plugins found under {}", plugins_dir.display());
    }
    for path in [
        sdk_dir.join("Cargo.toml"),
        sdk_dir.join("src"),
        sdk_dir.join("wit"),
        plugins_dir.join("Cargo.toml"),
        plugins_dir.join("Cargo.lock"),
    ] {
        watch(&path);
    }
    // Every crate of the plugins workspace, libraries shared by plugins included.
    for name in discover(&plugins_dir, "Cargo.toml") {
        let dir = plugins_dir.join(name);
        for file in ["Cargo.toml", "plugin.toml", "test-plugin.toml", "src"] {
            watch(&dir.join(file));
        }
    }

    ensure_target();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins_dir)
        .arg("build")
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .args(["--target", TARGET, "--release", "--target-dir"])
        .arg(&target_dir);
    scrub_env(&mut cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !output.status.success() {
        panic!(
            "building the plugins failed ({}):\n{}\n\nrun it by hand to see more:\n  cargo build \
             --manifest-path {} --target {TARGET} --release --target-dir {}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            plugins_dir.join("Cargo.toml").display(),
            target_dir.display(),
        );
    }

    let wasm_dir = target_dir.join(TARGET).join("release");
    let wasm_of = |name: &str| {
        let wasm = wasm_dir.join(format!("sluice_plugin_{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            panic!(
                "plugin {name}: {} was not built; is plugins/{name} a member of \
                 plugins/Cargo.toml, with package name sluice-plugin-{name} and crate-type cdylib?",
                wasm.display()
            );
        }
        wasm
    };
    let env_stem = |name: &str| name.replace('-', "_").to_uppercase();

    // Test-only plugins: built, and their paths given to the tests, but not embedded.
    for name in &test_plugins {
        let stem = env_stem(name);
        println!(
            "cargo:rustc-env=SLUICE_TEST_PLUGIN_{stem}_WASM={}",
            wasm_of(name).display()
        );
        let manifest = plugins_dir.join(name).join("test-plugin.toml");
        println!(
            "cargo:rustc-env=SLUICE_TEST_PLUGIN_{stem}_MANIFEST={}",
            manifest.display()
        );
    }

    let mut generated = String::from("&[\n");
    for name in &plugins {
        let wasm = wasm_of(name);
        let manifest = plugins_dir.join(name).join("plugin.toml");
        println!(
            "cargo:rustc-env=SLUICE_PLUGIN_{}_WASM={}",
            env_stem(name),
            wasm.display()
        );
        let _ = writeln!(
            generated,
            "    BuiltinPlugin {{ id: {name:?}, manifest: include_str!({:?}), wasm: include_bytes!({:?}) }},",
            manifest.display().to_string(),
            wasm.display().to_string(),
        );
    }
    generated.push_str("]\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_plugins.rs");
    fs::write(&out, generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// Reruns this script when `path` changes. Only existing paths: cargo treats a missing
/// one as changed on every build.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Folder names: every `plugins/<name>/<file>`, sorted. Built-in plugins have a
/// `plugin.toml`; test-only ones a `test-plugin.toml`; every crate a `Cargo.toml`.
fn discover(plugins_dir: &Path, manifest: &str) -> Vec<String> {
    let entries = fs::read_dir(plugins_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", plugins_dir.display()));
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(manifest).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Makes sure the wasm32-wasip2 standard library is installed (this machine sets
/// RUSTUP_AUTO_INSTALL=0, so cargo will not add it by itself).
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot.join("lib").join("rustlib").join(TARGET).is_dir()
    {
        return;
    }
    println!("cargo:warning=the {TARGET} target is missing; running `rustup target add {TARGET}`");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added {
        panic!(
            "the Rust target {TARGET} is not installed and `rustup target add {TARGET}` failed; \
             run `rustup target add {TARGET}` (or `rustup toolchain install` in the repository \
             root, which installs what rust-toolchain.toml lists) and build again"
        );
    }
}

/// Removes what the outer (native) build would leak into the nested wasm build: rustflags,
/// the target and target dir, wrappers (clippy sets RUSTC_WORKSPACE_WRAPPER), and the
/// variables cargo sets for this build script. Registry, network, terminal and jobserver
/// settings are kept.
fn scrub_env(cmd: &mut Command) {
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
        "CARGO_MAKEFLAGS",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var =
            key.starts_with("CARGO_") && !KEEP_PREFIXES.iter().any(|p| key.starts_with(p));
        let build_script_var = matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTC_LINKER"
                | "TARGET"
                | "HOST"
                | "OUT_DIR"
                | "OPT_LEVEL"
                | "PROFILE"
                | "DEBUG"
                | "NUM_JOBS"
        );
        if cargo_var || build_script_var {
            cmd.env_remove(key);
        }
    }
}
