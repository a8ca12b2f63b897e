//! `sluice plugin …` and `sluice secret …`: installing and granting plugins, managing
//! secrets, and the author's tools: a project template and a local runner that uses
//! the same sandbox as an agent.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_agent::masking::Masker;
use sluice_agent::plugin_host::{CheckRequest, LoadedPlugin, PluginHost, RunOutcome, RunRequest};
use sluice_pipeline::manifest::{Grant, Manifest};

use crate::Output;
use crate::client::{Api, ConnectArgs, exit};
use crate::show;

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The `plugin.toml` for a component: `--manifest`, else beside the file, else in the
/// directory the command runs in.
fn find_manifest(wasm: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let beside = wasm.with_file_name("plugin.toml");
    if beside.is_file() {
        return Ok(beside);
    }
    let here = PathBuf::from("plugin.toml");
    if here.is_file() {
        return Ok(here);
    }
    bail!(
        "no plugin.toml beside {} or in the current directory; pass it with --manifest",
        wasm.display()
    )
}

/// `sluice plugin install FILE.wasm`.
pub async fn install(
    connect: &ConnectArgs,
    wasm_path: &Path,
    manifest_path: Option<&Path>,
    grants: Vec<Grant>,
    grant_all: bool,
    out: Output,
) -> anyhow::Result<u8> {
    use base64::Engine as _;
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let manifest_path = find_manifest(wasm_path, manifest_path)?;
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&manifest_path.display().to_string(), &manifest_text)?;
    let mut grants = grants;
    if grant_all {
        for g in manifest.required_grants() {
            if !grants.contains(&g) {
                grants.push(g);
            }
        }
    }
    if out == Output::Text {
        println!(
            "Plugin {} version {} ({}; {} / {}, built for sluice:plugin@{})",
            manifest.id,
            manifest.version,
            manifest.description,
            manifest.categories.join(", "),
            manifest.provider,
            manifest.api_version
        );
        print_capabilities(&manifest);
        if grants.is_empty() {
            println!("Granting: nothing");
        } else {
            let list: Vec<String> = grants.iter().map(ToString::to_string).collect();
            println!("Granting: {}", list.join(", "));
        }
    }
    let api = Api::from_args(connect)?;
    let installed = api
        .send_json(
            Method::POST,
            "/api/v1/plugins",
            &json!({
                "manifest": manifest_text,
                "wasmBase64": base64::engine::general_purpose::STANDARD.encode(&wasm),
                "grants": grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        )
        .await?;
    match out {
        Output::Json => print_json(&installed),
        Output::Text => println!(
            "Installed {} version {} (sha256 {}). Use it as actionTypeId {{category: {}, owner: {}, provider: {}, version: \"{}\"}}.",
            installed["id"].as_str().unwrap_or(""),
            installed["version"].as_str().unwrap_or(""),
            installed["sha256"].as_str().unwrap_or(""),
            manifest
                .categories
                .first()
                .map(String::as_str)
                .unwrap_or(""),
            manifest.owner,
            manifest.provider,
            manifest.version
        ),
    }
    Ok(exit::OK)
}

fn print_capabilities(manifest: &Manifest) {
    let c = &manifest.capabilities;
    let asked: Vec<String> = [
        ("program", &c.programs),
        ("host", &c.hosts),
        ("secret", &c.secrets),
        ("env", &c.env),
    ]
    .iter()
    .flat_map(|(kind, names)| {
        names.iter().map(move |n| {
            if n == "*" {
                format!("{kind}:* (any you grant)")
            } else {
                format!("{kind}:{n}")
            }
        })
    })
    .collect();
    if asked.is_empty() {
        println!("Asks for: nothing (it only sees its workspace)");
    } else {
        println!("Asks for: {}", asked.join(", "));
    }
}

/// `sluice plugin list`.
pub async fn list(connect: &ConnectArgs, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let plugins = api.get("/api/v1/plugins").await?;
    match out {
        Output::Json => print_json(&plugins),
        Output::Text => {
            println!(
                "{:<20} {:<8} {:<10} {:<26} {:<9} GRANTS",
                "PLUGIN", "VERSION", "API", "PROVIDES", "SOURCE"
            );
            for p in plugins.as_array().into_iter().flatten() {
                let provides = format!(
                    "{} {}",
                    strings(&p["categories"]).join(","),
                    p["provider"].as_str().unwrap_or("")
                );
                let grants = strings(&p["grants"]);
                println!(
                    "{:<20} {:<8} {:<10} {:<26} {:<9} {}",
                    p["id"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or(""),
                    p["apiVersion"].as_str().unwrap_or(""),
                    provides,
                    if p["builtin"].as_bool() == Some(true) {
                        "built-in"
                    } else {
                        "installed"
                    },
                    if grants.is_empty() {
                        "-".to_string()
                    } else {
                        grants.join(",")
                    }
                );
            }
        }
    }
    Ok(exit::OK)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// `sluice plugin show ID`.
pub async fn show(connect: &ConnectArgs, id: &str, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let versions = api.get(&format!("/api/v1/plugins/{id}")).await?;
    if out == Output::Json {
        print_json(&versions);
        return Ok(exit::OK);
    }
    for p in versions.as_array().into_iter().flatten() {
        println!(
            "{} version {} ({})",
            p["id"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or(""),
            if p["builtin"].as_bool() == Some(true) {
                "built-in"
            } else {
                "installed"
            }
        );
        println!("  {}", p["description"].as_str().unwrap_or(""));
        println!(
            "  serves:     {} / {} / {}",
            strings(&p["categories"]).join(", "),
            p["owner"].as_str().unwrap_or(""),
            p["provider"].as_str().unwrap_or("")
        );
        println!(
            "  built for:  sluice:plugin@{}",
            p["apiVersion"].as_str().unwrap_or("")
        );
        println!("  sha256:     {}", p["sha256"].as_str().unwrap_or(""));
        println!("  installed:  {}", show::time(&p["installedAtMs"]));
        println!(
            "  idempotent: {}",
            if p["idempotent"].as_bool() == Some(true) {
                "yes"
            } else {
                "no (a lost attempt is never re-run by itself)"
            }
        );
        let caps = &p["capabilities"];
        for kind in ["programs", "hosts", "secrets", "env"] {
            let asked = strings(&caps[kind]);
            if !asked.is_empty() {
                println!("  asks for {kind}: {}", asked.join(", "));
            }
        }
        let grants = strings(&p["grants"]);
        println!(
            "  granted:    {}",
            if grants.is_empty() {
                "nothing".to_string()
            } else {
                grants.join(", ")
            }
        );
        println!("  configuration:");
        for f in p["config"].as_array().into_iter().flatten() {
            let mut flags = vec![f["type"].as_str().unwrap_or("string").to_string()];
            if f["required"].as_bool() == Some(true) {
                flags.push("required".into());
            }
            if f["secret"].as_bool() == Some(true) {
                flags.push("names a secret".into());
            }
            if let Some(d) = f["default"].as_str() {
                flags.push(format!("default {d:?}"));
            }
            println!(
                "    {:<22} ({}) {}",
                f["name"].as_str().unwrap_or(""),
                flags.join(", "),
                f["description"].as_str().unwrap_or("")
            );
        }
    }
    Ok(exit::OK)
}

/// The one installed version of a plugin, or the one asked for.
async fn pick_version(api: &Api, id: &str, version: Option<String>) -> anyhow::Result<String> {
    if let Some(v) = version {
        return Ok(v);
    }
    let versions = api.get(&format!("/api/v1/plugins/{id}")).await?;
    let list: Vec<String> = versions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["version"].as_str().map(str::to_string))
        .collect();
    match list.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "plugin {id} has versions {}; say which with --version",
            list.join(", ")
        ),
    }
}

/// `sluice plugin remove ID`.
pub async fn remove(
    connect: &ConnectArgs,
    id: &str,
    version: Option<String>,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let version = pick_version(&api, id, version).await?;
    api.send_empty(
        Method::DELETE,
        &format!("/api/v1/plugins/{id}/{version}"),
        None,
    )
    .await?;
    println!("Removed plugin {id} version {version}.");
    Ok(exit::OK)
}

/// `sluice plugin grant|revoke ID KIND:NAME…`: adds to or takes from the grants.
pub async fn change_grants(
    connect: &ConnectArgs,
    id: &str,
    version: Option<String>,
    changes: Vec<Grant>,
    add: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let version = pick_version(&api, id, version).await?;
    let versions = api.get(&format!("/api/v1/plugins/{id}")).await?;
    let current = versions
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["version"].as_str() == Some(version.as_str()))
        .map(|p| strings(&p["grants"]))
        .unwrap_or_default();
    let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
    let grants: Vec<String> = if add {
        let mut all = current;
        for g in changes {
            if !all.contains(&g) {
                all.push(g);
            }
        }
        all
    } else {
        for g in &changes {
            if !current.contains(g) {
                bail!("plugin {id} version {version} is not granted {g}");
            }
        }
        current
            .into_iter()
            .filter(|g| !changes.contains(g))
            .collect()
    };
    let changed = api
        .send_json(
            Method::PUT,
            &format!("/api/v1/plugins/{id}/{version}/grants"),
            &json!({ "grants": grants }),
        )
        .await?;
    match out {
        Output::Json => print_json(&changed),
        Output::Text => {
            let now = strings(&changed["grants"]);
            println!(
                "Plugin {id} version {version} is now granted: {}",
                if now.is_empty() {
                    "nothing".to_string()
                } else {
                    now.join(", ")
                }
            );
        }
    }
    Ok(exit::OK)
}

// ---- secrets ---------------------------------------------------------------------

/// `sluice secret set NAME`: the value from --value, --from-file, or standard input.
pub async fn secret_set(
    connect: &ConnectArgs,
    name: &str,
    value: Option<String>,
    from_file: Option<&Path>,
) -> anyhow::Result<u8> {
    let value = match (value, from_file) {
        (Some(v), None) => v,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (None, None) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the value from standard input")?;
            // `echo value | sluice secret set NAME` adds a newline nobody meant.
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        }
        (Some(_), Some(_)) => bail!("give the value with --value or --from-file, not both"),
    };
    let api = Api::from_args(connect)?;
    api.send_empty(
        Method::PUT,
        &format!("/api/v1/secrets/{name}"),
        Some(&json!({ "value": value })),
    )
    .await?;
    println!(
        "Secret {name} set ({} bytes, encrypted at rest).",
        value.len()
    );
    Ok(exit::OK)
}

/// `sluice secret list`: names and dates, never values.
pub async fn secret_list(connect: &ConnectArgs, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let secrets = api.get("/api/v1/secrets").await?;
    match out {
        Output::Json => print_json(&secrets),
        Output::Text => {
            println!("{:<32} {:<21} UPDATED", "SECRET", "CREATED");
            for s in secrets.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<21} {}",
                    s["name"].as_str().unwrap_or(""),
                    show::time(&s["createdAtMs"]),
                    show::time(&s["updatedAtMs"])
                );
            }
        }
    }
    Ok(exit::OK)
}

/// `sluice secret rm NAME`.
pub async fn secret_rm(connect: &ConnectArgs, name: &str) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    api.send_empty(Method::DELETE, &format!("/api/v1/secrets/{name}"), None)
        .await?;
    println!("Secret {name} removed.");
    Ok(exit::OK)
}

// ---- plugin run --------------------------------------------------------------------

/// What `sluice plugin run` was asked.
pub struct RunArgs {
    pub plugin: String,
    pub manifest: Option<PathBuf>,
    pub category: Option<String>,
    pub config: Vec<(String, String)>,
    pub inputs: Vec<(String, PathBuf)>,
    pub output: Option<PathBuf>,
    pub outputs: Vec<String>,
    pub grants: Vec<Grant>,
    pub secrets: Vec<(String, String)>,
    pub timeout: Duration,
    pub check: bool,
    pub last_revision: Option<String>,
}

/// Where compiled plugins are cached for local runs.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sluice")
        .join("plugin-cache")
}

/// The plugin to run: a built-in id, a `.wasm` file, or a plugin project directory
/// (its `plugin.toml` and its release build for wasm32-wasip2).
fn load_plugin(host: &mut PluginHost, args: &RunArgs) -> anyhow::Result<LoadedPlugin> {
    let path = Path::new(&args.plugin);
    if !path.exists() {
        host.load_builtins()?;
        let found = host
            .plugins()
            .iter()
            .find(|p| p.manifest.id == args.plugin)
            .cloned()
            .with_context(|| {
                let ids: Vec<&str> = host
                    .plugins()
                    .iter()
                    .map(|p| p.manifest.id.as_str())
                    .collect();
                format!(
                    "{} is neither a file, a plugin project directory, nor a built-in plugin ({})",
                    args.plugin,
                    ids.join(", ")
                )
            })?;
        return Ok(found.with_grants(found.grants.clone()));
    }
    let (wasm_path, manifest_path) = if path.is_dir() {
        let manifest = args
            .manifest
            .clone()
            .unwrap_or_else(|| path.join("plugin.toml"));
        let cargo = std::fs::read_to_string(path.join("Cargo.toml"))
            .with_context(|| format!("{} has no Cargo.toml", path.display()))?;
        let package: toml::Table = toml::from_str(&cargo)
            .with_context(|| format!("{}/Cargo.toml is not valid TOML", path.display()))?;
        let name = package
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{}/Cargo.toml names no package", path.display()))?;
        // Where cargo put it: CARGO_TARGET_DIR if set, else the project's target/.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| path.join(t))
            .unwrap_or_else(|| path.join("target"));
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            bail!(
                "{} is not built yet; run `cargo build --release` in {} first",
                wasm.display(),
                path.display()
            );
        }
        (wasm, manifest)
    } else {
        (
            path.to_owned(),
            find_manifest(path, args.manifest.as_deref())?,
        )
    };
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&manifest_path.display().to_string(), &manifest_text)?;
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let plugin = host.compile(manifest, &wasm)?;
    // Like an install with --grant-all, plus what --grant adds for "*" requests.
    let mut grants = plugin.grants.clone();
    for g in &args.grants {
        if !plugin.manifest.asks_for(g) {
            bail!(
                "{g} is granted, but plugin {} does not ask for it in plugin.toml",
                plugin.manifest.id
            );
        }
    }
    let extra = sluice_controller::plugins::grants_from(&args.grants);
    for (to, from) in [
        (&mut grants.programs, extra.programs),
        (&mut grants.hosts, extra.hosts),
        (&mut grants.secrets, extra.secrets),
        (&mut grants.env, extra.env),
    ] {
        for name in from {
            if !to.contains(&name) {
                to.push(name);
            }
        }
    }
    Ok(plugin.with_grants(grants))
}

/// `sluice plugin run`: one action (or `--check`) against local folders, in the same
/// sandbox an agent uses. Exit 0 when it succeeded, 4 when it failed.
pub async fn run(args: RunArgs, out: Output) -> anyhow::Result<u8> {
    let mut host = PluginHost::new(&cache_dir())?;
    let plugin = load_plugin(&mut host, &args)?;
    let workspace = tempfile::tempdir().context("cannot create a workspace")?;
    let masker = Masker::new(args.secrets.iter().map(|(_, v)| v.as_str()));
    let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let printer = {
        let mut stream = masker.stream();
        tokio::spawn(async move {
            use std::io::Write as _;
            while let Some(bytes) = log_rx.recv().await {
                let _ = std::io::stderr().write_all(&stream.push(&bytes));
            }
            let _ = std::io::stderr().write_all(&stream.finish());
        })
    };
    let config: BTreeMap<String, String> = args.config.iter().cloned().collect();

    if args.check {
        let result = host
            .check(
                &plugin,
                CheckRequest {
                    workspace: workspace.path().to_owned(),
                    config,
                    last_revision: args.last_revision.clone(),
                    timeout: args.timeout,
                },
                log_tx,
            )
            .await;
        let _ = printer.await;
        return match result {
            Ok(revisions) => {
                match out {
                    Output::Json => print_json(&json!(
                        revisions
                            .iter()
                            .map(|r| json!({"id": r.id, "summary": masker.mask(&r.summary)}))
                            .collect::<Vec<_>>()
                    )),
                    Output::Text if revisions.is_empty() => println!("No new revisions."),
                    Output::Text => {
                        for r in &revisions {
                            println!("{}  {}", r.id, masker.mask(&r.summary));
                        }
                    }
                }
                Ok(exit::OK)
            }
            Err(message) => {
                eprintln!("check failed: {}", masker.mask(&message));
                Ok(exit::EXECUTION_FAILED)
            }
        };
    }

    for (name, dir) in &args.inputs {
        let dest = workspace.path().join("inputs").join(name);
        copy_tree(dir, &dest, workspace.path())
            .with_context(|| format!("cannot copy input {name} from {}", dir.display()))?;
    }
    let category = match &args.category {
        Some(c) => c.clone(),
        None => plugin
            .manifest
            .categories
            .first()
            .cloned()
            .unwrap_or_default(),
    };
    let mut outputs = args.outputs.clone();
    if outputs.is_empty() && args.output.is_some() {
        outputs.push("Output".to_string());
    }
    let request = RunRequest {
        workspace: workspace.path().to_owned(),
        pipeline: "local".to_string(),
        execution_id: "local-run".to_string(),
        stage: "Local".to_string(),
        action: plugin.manifest.id.clone(),
        category,
        config,
        inputs: args.inputs.iter().map(|(n, _)| n.clone()).collect(),
        outputs: outputs.clone(),
        timeout: args.timeout,
        attempt: 1,
        variables: [
            ("PipelineName".to_string(), "local".to_string()),
            ("PipelineExecutionId".to_string(), "local-run".to_string()),
        ]
        .into_iter()
        .collect(),
        secrets: args.secrets.iter().cloned().collect(),
    };
    let outcome = host.run(&plugin, request, log_tx).await;
    let _ = printer.await;
    let (ok, summary, variables, tests) = match outcome {
        RunOutcome::Succeeded {
            summary,
            output_variables,
            tests,
        } => (true, masker.mask(&summary), output_variables, tests),
        RunOutcome::Failed { message, tests } => {
            (false, masker.mask(&message), BTreeMap::new(), tests)
        }
    };
    let variables: BTreeMap<String, String> = variables
        .into_iter()
        .map(|(k, v)| (k, masker.mask(&v)))
        .collect();
    if ok && let Some(dir) = &args.output {
        for name in &outputs {
            let from = workspace.path().join("outputs").join(name);
            let to = if outputs.len() == 1 {
                dir.clone()
            } else {
                dir.join(name)
            };
            copy_tree(&from, &to, workspace.path())
                .with_context(|| format!("cannot copy output {name} to {}", to.display()))?;
        }
    }
    match out {
        Output::Json => print_json(&json!({
            "succeeded": ok,
            "summary": summary,
            "outputVariables": variables,
            "tests": tests,
        })),
        Output::Text => {
            println!("{}: {summary}", if ok { "Succeeded" } else { "Failed" });
            for (k, v) in &variables {
                println!("  {k} = {v}");
            }
            if !tests.is_empty() {
                let failed = tests
                    .iter()
                    .filter(|t| {
                        matches!(
                            t.status,
                            sluice_proto::TestStatus::Failed | sluice_proto::TestStatus::Errored
                        )
                    })
                    .count();
                println!("  tests: {} reported, {failed} failed", tests.len());
            }
            if ok && let Some(dir) = &args.output {
                println!("  outputs in {}", dir.display());
            }
        }
    }
    Ok(if ok { exit::OK } else { exit::EXECUTION_FAILED })
}

/// Copies a directory tree through the agent's archive code, so modes and symlinks
/// come out exactly as an agent would hand them over.
fn copy_tree(from: &Path, to: &Path, scratch: &Path) -> anyhow::Result<()> {
    let archive = scratch.join(format!("copy-{}.tar", std::process::id()));
    sluice_agent::artifacts::pack(from, &archive)?;
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    sluice_agent::artifacts::unpack(&archive, to)?;
    std::fs::remove_file(&archive).ok();
    Ok(())
}

/// Parses `KEY=value` (for --config, --input, --secret).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} must be KEY=value"))
}

/// Parses `NAME=DIR` for --input.
pub fn named_dir(text: &str) -> Result<(String, PathBuf), String> {
    key_value(text).map(|(k, v)| (k, PathBuf::from(v)))
}
