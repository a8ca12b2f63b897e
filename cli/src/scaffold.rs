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
# Whether a lost attempt may be run again by itself.
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

fn lib_rs(name: &str, category: Category) -> String {
    let body = match category {
        Category::Source => r#"use sluice_plugin_sdk::{
    ActionError, ActionOutcome, CheckContext, Context, SourcePlugin, SourceRevision, log,
    set_output_variable,
};

struct Plugin;

impl SourcePlugin for Plugin {
    fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let greeting = ctx.require("Greeting")?;
        let out = ctx.primary_output().ok_or_else(|| {
            ActionError::InvalidConfig("declare one output artifact".to_string())
        })?;
        std::fs::write(format!("{out}/greeting.txt"), format!("{greeting}\n"))
            .map_err(|e| ActionError::Failed(format!("cannot write greeting.txt: {e}")))?;
        set_output_variable("Revision", "1").map_err(ActionError::Failed)?;
        log::info(&format!("wrote {greeting:?}"));
        Ok(ActionOutcome {
            summary: format!("fetched revision 1: {greeting}"),
        })
    }

    fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError> {
        // One revision that never changes: replace with a real lookup.
        if ctx.last_revision.as_deref() == Some("1") {
            return Ok(Vec::new());
        }
        Ok(vec![SourceRevision {
            id: "1".to_string(),
            summary: "the first revision".to_string(),
        }])
    }
}
"#
        .to_string(),
        _ => {
            let (trait_name, method) = match category {
                Category::Build => ("BuildPlugin", "build"),
                Category::Test => ("TestPlugin", "test"),
                Category::Deploy => ("DeployPlugin", "deploy"),
                _ => ("InvokePlugin", "invoke"),
            };
            let write_output = if category == Category::Build {
                r#"
    // Output artifacts are folders to fill; declared ones are created empty.
    if let Some(out) = ctx.primary_output() {
        std::fs::write(format!("{out}/greeting.txt"), format!("{greeting}, {files} file(s)\n"))
            .map_err(|e| ActionError::Failed(format!("cannot write greeting.txt: {e}")))?;
    }"#
            } else {
                ""
            };
            format!(
                r#"use sluice_plugin_sdk::{{
    ActionError, ActionOutcome, Context, {trait_name}, log, set_output_variable,
}};

struct Plugin;

impl {trait_name} for Plugin {{
    fn {method}(ctx: &Context) -> Result<ActionOutcome, ActionError> {{
        let greeting = ctx.require("Greeting")?;
        // Input artifacts are folders under /workspace/inputs; the plugin sees nothing else.
        let files = match ctx.primary_input() {{
            Some(dir) => std::fs::read_dir(dir)
                .map_err(|e| ActionError::Failed(format!("cannot read {{dir}}: {{e}}")))?
                .count(),
            None => 0,
        }};
        log::info(&format!("{{greeting}} from {{}} ({{files}} input file(s))", ctx.action()));{write_output}
        set_output_variable("Files", &files.to_string()).map_err(ActionError::Failed)?;
        Ok(ActionOutcome {{
            summary: format!("{{greeting}}: {{files}} file(s)"),
        }})
    }}
}}
"#
            )
        }
    };
    format!(
        "//! The `{name}` plugin.\n\n{body}\nsluice_plugin_sdk::plugin!(Plugin: {});\n",
        category.name()
    )
}

fn run_example(category: Category) -> &'static str {
    match category {
        Category::Source => "--output out",
        Category::Build => "--input Source=. --output out",
        _ => "--input Source=.",
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
