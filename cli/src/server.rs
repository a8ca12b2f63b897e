//! `sluice controller` and `sluice up`: running the controller, and the one-command
//! quickstart (controller + local agent + sample pipeline).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use sluice_controller::{Config, Controller, Settings};

use crate::Output;
use crate::client::{Api, ClientConfig, exit};
use crate::commands;

/// Flags of `sluice controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Where the database, certificates, logs and artifacts live.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
    data_dir: PathBuf,
    /// Address to listen on (HTTPS).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Server certificate chain (PEM) to use instead of the generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Extra host name or IP for the generated server certificate (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// How long an action survives without a heartbeat from its agent before it fails as lost.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// How often agents send heartbeats.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Shortest source polling interval: a pipeline's `polling.intervalSeconds` below it
    /// is raised to it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    min_poll_interval: Duration,
    /// Do not write the client config file.
    #[arg(long)]
    no_client_config: bool,
    /// POST every pipeline, stage and action state-change event to this URL as JSON, in
    /// order, at least once, retrying with backoff (repeatable).
    #[arg(long = "event-webhook", value_name = "URL")]
    event_webhooks: Vec<String>,
    /// Sign every event webhook delivery with the value of this secret (set it with
    /// `sluice secret set NAME`): header X-Sluice-Signature-256: sha256=<HMAC of the body>.
    #[arg(long = "event-webhook-secret", value_name = "SECRET_NAME")]
    event_webhook_secret: Option<String>,
    /// The web UI `admin` user's password, set when the first start creates the user
    /// (at least 8 characters); without it one is generated and printed once.
    #[arg(long, env = "SLUICE_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
}

/// Flags of `sluice up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the controller and the local agent keep their state.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
    data_dir: PathBuf,
    /// Address to listen on (HTTPS); use 127.0.0.1:0 for any free port.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// How many actions the local agent runs at once.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
    /// Exit after the sample execution ends (with code 4 if it did not succeed),
    /// instead of serving until interrupted.
    #[arg(long)]
    exit: bool,
    /// The web UI `admin` user's password, set when the first start creates the user
    /// (at least 8 characters); without it one is generated and printed once.
    #[arg(long, env = "SLUICE_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
}

fn settings(lease_ttl: Duration, heartbeat_interval: Duration) -> anyhow::Result<Settings> {
    if heartbeat_interval < Duration::from_millis(100) {
        anyhow::bail!("--heartbeat-interval must be at least 100ms");
    }
    if heartbeat_interval >= lease_ttl {
        anyhow::bail!(
            "--heartbeat-interval ({}) must be shorter than --lease-ttl ({})",
            humantime::format_duration(heartbeat_interval),
            humantime::format_duration(lease_ttl)
        );
    }
    Ok(Settings {
        lease_ttl,
        heartbeat_interval,
        ..Settings::default()
    })
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path))
    }
}

/// Writes the client config for this controller, keeping a token that still works,
/// else minting one. Returns the token and whether it is new.
fn write_client_config(
    controller: &Controller,
    own_ca: bool,
) -> anyhow::Result<(String, bool, PathBuf)> {
    let existing = ClientConfig::load().unwrap_or_default();
    let (token, minted) = match existing.token {
        Some(token)
            if existing.url.as_deref() == Some(controller.url().as_str())
                && controller.api_token_is_valid(&token) =>
        {
            (token, false)
        }
        _ => (controller.create_api_token("admin")?, true),
    };
    let config = ClientConfig {
        url: Some(controller.url()),
        token: Some(token.clone()),
        // With the operator's own server certificate, the CLI trusts the system's roots
        // (or SLUICE_CA); otherwise it trusts the controller's CA.
        ca: own_ca.then(|| controller.ca_path()),
    };
    let path = config.save()?;
    Ok((token, minted, path))
}

async fn start_controller(config: Config) -> anyhow::Result<Controller> {
    let data_dir = config.data_dir.clone();
    Controller::start(config).await.with_context(|| {
        format!(
            "cannot start the controller (data dir {})",
            data_dir.display()
        )
    })
}

/// The plugins built into this binary, for the controller to register and serve.
pub fn builtin_plugins() -> Vec<(&'static str, &'static [u8])> {
    sluice_agent::builtin::all()
        .iter()
        .map(|b| (b.manifest, b.wasm))
        .collect()
}

/// `sluice controller`.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<u8> {
    let data_dir = absolute(&args.data_dir)?;
    let operator_cert = args.tls_cert.zip(args.tls_key);
    let own_ca = operator_cert.is_none();
    let controller = start_controller(Config {
        data_dir: data_dir.clone(),
        listen: args.listen,
        tls_cert_and_key: operator_cert,
        tls_names: args.tls_names,
        settings: Settings {
            min_poll_interval: args.min_poll_interval.max(Duration::from_secs(1)),
            ..settings(args.lease_ttl, args.heartbeat_interval)?
        },
        builtin_plugins: builtin_plugins(),
        event_webhooks: args.event_webhooks,
        event_webhook_secret: args.event_webhook_secret,
        admin_password: args.admin_password,
    })
    .await?;
    // The client config is written before the URL is announced, so that whoever waits
    // for the announcement can use the CLI at once.
    let client = if args.no_client_config {
        None
    } else {
        Some(write_client_config(&controller, own_ca)?)
    };
    println!("Sluice controller listening on {}", controller.url());
    println!("  data dir:          {}", data_dir.display());
    println!("  CA certificate:    {}", controller.ca_path().display());
    println!("  CA fingerprint:    {}", controller.ca_fingerprint());
    if let Some((token, minted, path)) = client {
        println!("  client config:     {}", path.display());
        if minted {
            println!(
                "  admin API token:   {token}   (shown once; also saved in the client config)"
            );
        }
    }
    print_web_ui(&controller);
    if !own_ca {
        println!(
            "  server certificate: the one given with --tls-cert; agents joining need --server-ca with its issuer (or `system`)"
        );
    }
    println!("Add a build machine: sluice agent token create, then run the printed command there.");
    wait_for_shutdown().await;
    controller.shutdown();
    Ok(0)
}

/// Where the web UI is, and the admin password if this start made one up.
fn print_web_ui(controller: &Controller) {
    match controller.generated_admin_password() {
        Some(password) => println!(
            "  web UI:            {}  (user admin, password {password}; shown once: keep it)",
            controller.url()
        ),
        None => println!(
            "  web UI:            {}  (sign in as admin)",
            controller.url()
        ),
    }
}

async fn wait_for_shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("Shutting down.");
}

const SAMPLE_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../examples/sample-project/README.md"),
    ),
    (
        "build.sh",
        include_str!("../../examples/sample-project/build.sh"),
    ),
    (
        "src/greet.sh",
        include_str!("../../examples/sample-project/src/greet.sh"),
    ),
    (
        "tests/unit.sh",
        include_str!("../../examples/sample-project/tests/unit.sh"),
    ),
    (
        "tests/lint.sh",
        include_str!("../../examples/sample-project/tests/lint.sh"),
    ),
];
const SAMPLE_PIPELINE: &str = include_str!("../../examples/sample-pipeline.yaml");

/// Writes the sample project into a git repository (once).
fn prepare_sample_project(dir: &Path) -> anyhow::Result<()> {
    if dir.join(".git").exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for (name, contents) in SAMPLE_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if name.ends_with(".sh") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Sluice quickstart")
            .env("GIT_AUTHOR_EMAIL", "quickstart@sluice.invalid")
            .env("GIT_COMMITTER_NAME", "Sluice quickstart")
            .env("GIT_COMMITTER_EMAIL", "quickstart@sluice.invalid")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("the quickstart needs git on the PATH to make the sample repository")?;
        anyhow::ensure!(
            status.success(),
            "git {} failed in {}",
            args.join(" "),
            dir.display()
        );
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&[
        "commit",
        "-q",
        "-m",
        "Sample project for the Sluice quickstart",
    ])?;
    Ok(())
}

/// `sluice up`.
pub async fn up(args: UpArgs, out: Output) -> anyhow::Result<u8> {
    let data_dir = absolute(&args.data_dir)?;
    let controller = start_controller(Config {
        data_dir: data_dir.join("controller"),
        listen: args.listen,
        tls_cert_and_key: None,
        tls_names: Vec::new(),
        settings: Settings::default(),
        builtin_plugins: builtin_plugins(),
        event_webhooks: Vec::new(),
        event_webhook_secret: None,
        admin_password: args.admin_password.clone(),
    })
    .await
    .context(
        "is another `sluice up` running? Pass --listen 127.0.0.1:0 for any free port, or --data-dir for a separate instance",
    )?;
    let (token, _, config_path) = write_client_config(&controller, true)?;

    // The local agent joins like any other: a token, a pinned CA, a client certificate.
    let agent_state = data_dir.join("agent");
    let state = sluice_agent::StateDir::new(&agent_state);
    let joined_here = state
        .identity()
        .map(|i| i.controller_url == controller.url())
        .unwrap_or(false);
    if !state.is_joined() || !joined_here {
        let join_token = controller.create_join_token(
            &BTreeMap::from([("local".to_string(), "true".to_string())]),
            Duration::from_secs(300),
        )?;
        sluice_agent::join(
            &state,
            sluice_agent::JoinRequest {
                controller_url: &controller.url(),
                token: &join_token,
                ca_fingerprint: &controller.ca_fingerprint(),
                labels: BTreeMap::new(),
                capacity: args.capacity,
                server_ca: None,
            },
        )
        .await
        .context("the local agent could not join")?;
    }
    let agent = tokio::spawn(sluice_agent::run(sluice_agent::Options {
        state_dir: agent_state,
        capacity: args.capacity,
        extra_labels: BTreeMap::new(),
        max_log_bytes: sluice_agent::executor::DEFAULT_MAX_LOG_BYTES,
        plugin_cache: None,
    }));

    let project = data_dir.join("sample-project");
    prepare_sample_project(&project)?;
    let deploy_dir = data_dir.join("deployed").join("sample");
    std::fs::create_dir_all(deploy_dir.parent().unwrap_or(&data_dir))?;
    let definition = SAMPLE_PIPELINE
        .replace("${SAMPLE_PROJECT}", &project.display().to_string())
        .replace("${DEPLOY_DIR}", &deploy_dir.display().to_string());

    let api = Api::new(&controller.url(), Some(token), Some(&controller.ca_path()))?;
    let exists = api.get("/api/v1/pipelines/sample").await.is_ok();
    if exists {
        api.send_text(
            Method::PUT,
            "/api/v1/pipelines/sample?format=yaml",
            definition,
        )
        .await?;
    } else {
        api.send_text(Method::POST, "/api/v1/pipelines?format=yaml", definition)
            .await?;
    }
    let started = api
        .send_json(
            Method::POST,
            "/api/v1/pipelines/sample/executions",
            &serde_json::json!({}),
        )
        .await?;
    let id = started["id"].as_str().unwrap_or("").to_string();
    if out == Output::Text {
        println!("Sluice is up at {}", controller.url());
        print_web_ui(&controller);
        println!("Running the sample pipeline (execution {id})...");
    }
    let done = tokio::select! {
        done = commands::wait_for(&api, &id, out == Output::Text) => done?,
        ended = agent => {
            let message = match ended {
                Ok(Ok(())) => "the local agent stopped".to_string(),
                Ok(Err(e)) => format!("the local agent stopped: {e}"),
                Err(e) => format!("the local agent crashed: {e}"),
            };
            anyhow::bail!(message);
        }
    };
    let succeeded = done["status"] == "Succeeded";
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&done).unwrap_or_default()
        ),
        Output::Text => {
            print!("{}", crate::show::execution(&done));
            println!();
            println!(
                "Result: {}. Deployed files: {}",
                done["status"].as_str().unwrap_or("?"),
                deploy_dir.display()
            );
            println!();
            println!("The CLI is configured ({}). Try:", config_path.display());
            println!("  sluice execution list");
            println!("  sluice execution get {id}");
            println!("  sluice logs {id} --action Build/Package");
            println!("  sluice pipeline start sample --wait");
            println!("  sluice agent list");
            println!(
                "Data lives in {}; run `sluice up` again to reuse it.",
                data_dir.display()
            );
        }
    }
    if args.exit {
        controller.shutdown();
        return Ok(if succeeded { 0 } else { exit::EXECUTION_FAILED });
    }
    if out == Output::Text {
        println!("Serving until interrupted (Ctrl-C).");
    }
    wait_for_shutdown().await;
    controller.shutdown();
    Ok(if succeeded { 0 } else { exit::EXECUTION_FAILED })
}
