//! `sluice plugin new`: a plugin project that builds as it is.
//!
//! The project carries its own copy of the plugin SDK (the crate and its WIT), so it
//! builds anywhere, offline from Sluice's sources: `cargo build --release` gives
//! `target/wasm32-wasip2/release/<name>.wasm`, ready for `sluice plugin run` and
//! `sluice plugin install`.

use std::path::Path;

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::client::exit;

/// The categories a new plugin can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Category {
    Source,
    Build,
    Test,
    Deploy,
    Invoke,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Source => "Source",
            Category::Build => "Build",
            Category::Test => "Test",
            Category::Deploy => "Deploy",
            Category::Invoke => "Invoke",
        }
    }
}

const SDK_CARGO: &str = include_str!("../../plugin-sdk/Cargo.toml");
const SDK_LIB: &str = include_str!("../../plugin-sdk/src/lib.rs");
const SDK_WIT: &str = include_str!("../../plugin-sdk/wit/0.2.0/plugin.wit");

/// Writes `<dir>/<name>/`.
pub fn new_plugin(name: &str, category: Category, dir: &Path) -> anyhow::Result<u8> {
    if !sluice_pipeline::manifest::is_id(name) {
        bail!("plugin name {name:?} must be 1 to 64 lowercase letters, digits and '-'");
    }
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; pick another name or --dir",
            root.display()
        );
    }
    let crate_name = name.replace('-', "_");
    let files: Vec<(&str, String)> = vec![
        ("Cargo.toml", cargo_toml(name)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        ("plugin.toml", plugin_toml(name, category)),
        ("src/lib.rs", lib_rs(name, category)),
        ("README.md", readme(name, &crate_name, category)),
        ("sluice-plugin-sdk/Cargo.toml", SDK_CARGO.to_string()),
        ("sluice-plugin-sdk/src/lib.rs", SDK_LIB.to_string()),
        (
            "sluice-plugin-sdk/wit/0.2.0/plugin.wit",
            SDK_WIT.to_string(),
        ),
    ];
    for (relative, text) in &files {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "Created plugin project {} ({} plugin).",
        root.display(),
        category.name()
    );
    println!("Next:");
    println!("  cd {}", root.display());
    println!("  rustup target add wasm32-wasip2   # once");
    println!("  cargo build --release");
    println!("  sluice plugin run . {}", run_example(category));
    println!("  sluice plugin install target/wasm32-wasip2/release/{crate_name}.wasm --grant-all");
    Ok(exit::OK)
}

const CARGO_CONFIG: &str = "# Plugins are WASM components.\n[build]\ntarget = \"wasm32-wasip2\"\n";

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-plugin-sdk = {{ path = "sluice-plugin-sdk" }}

# Small, fast components.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A workspace of its own, wherever the folder is.
[workspace]
"#
    )
}

fn plugin_toml(name: &str, category: Category) -> String {
    let (inputs, outputs) = match category {
        Category::Source => ("[0, 0]", "[1, 1]"),
        Category::Build => ("[1, 5]", "[0, 5]"),
        Category::Test | Category::Deploy => ("[1, 5]", "[0, 0]"),
        Category::Invoke => ("[0, 5]", "[0, 0]"),
    };
    let idempotent = !matches!(category, Category::Deploy | Category::Invoke);
    format!(
        r#"# What the plugin is and what it asks for. `sluice plugin install` shows this to the
# operator, who grants the capabilities (or refuses the plugin).
id = "{name}"
version = "1"
api_version = "0.2.0"
owner = "Custom"
categories = ["{category}"]
provider = "{name}"
# Whether running an action twice is safe (a lost attempt of a plugin that is not is
# never re-run by itself).
idempotent = {idempotent}
description = "A {lower} plugin."

[artifacts]
inputs = {inputs}
outputs = {outputs}

# Programs it may run, hosts it may reach, secrets and environment variables it may
# read. Deny by default: it gets only what is listed here and granted on install.
[capabilities]
programs = []
hosts = []
secrets = []
env = []

[[config]]
name = "Greeting"
type = "string"
required = false
default = "hello"
description = "What to say."
"#,
        category = category.name(),
        lower = category.name().to_lowercase(),
    )
}

/// The plugin's code, from templates kept rustfmt-clean in `templates/`.
fn lib_rs(name: &str, category: Category) -> String {
    let template = match category {
        Category::Source => include_str!("templates/source.rs"),
        Category::Build => include_str!("templates/build.rs"),
        Category::Test | Category::Deploy | Category::Invoke => {
            include_str!("templates/action.rs")
        }
    };
    let (trait_name, method) = match category {
        Category::Source => ("SourcePlugin", "fetch"),
        Category::Build => ("BuildPlugin", "build"),
        Category::Test => ("TestPlugin", "test"),
        Category::Deploy => ("DeployPlugin", "deploy"),
        Category::Invoke => ("InvokePlugin", "invoke"),
    };
    // rustfmt's order: upper-case names first, alphabetically, then the lower-case ones.
    let mut types = ["ActionError", "ActionOutcome", "Context", trait_name];
    types.sort_unstable();
    let imports = format!("{}, log, set_output_variable,", types.join(", "));
    template
        .replace("__NAME__", name)
        .replace("__IMPORTS__", &imports)
        .replace("__TRAIT__", trait_name)
        .replace("__METHOD__", method)
        .replace("__CATEGORY__", category.name())
}

fn run_example(category: Category) -> &'static str {
    match category {
        Category::Source => "--output out",
        Category::Build => "--input Source=src --output out",
        _ => "--input Source=src",
    }
}

fn readme(name: &str, crate_name: &str, category: Category) -> String {
    format!(
        r#"# {name}

A Sluice {lower} plugin. `src/lib.rs` is the code, `plugin.toml` says what it is and
what it asks for, and `sluice-plugin-sdk/` is the SDK it builds against (see the
SDK's documentation with `cargo doc --open -p sluice-plugin-sdk`).

```sh
rustup target add wasm32-wasip2        # once
cargo build --release                  # → target/wasm32-wasip2/release/{crate_name}.wasm
sluice plugin run . {run}              # try it locally, sandboxed as on an agent
sluice plugin install target/wasm32-wasip2/release/{crate_name}.wasm --grant-all
```

Then use it in a pipeline:

```yaml
actionTypeId: {{ category: {category}, owner: Custom, provider: {name}, version: "1" }}
configuration:
  Greeting: hi
```
"#,
        lower = category.name().to_lowercase(),
        category = category.name(),
        run = run_example(category),
    )
}
