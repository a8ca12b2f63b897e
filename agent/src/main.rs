//! `sluice-agent`: joins a controller once, then runs actions for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// A Sluice build agent.
#[derive(Parser)]
#[command(name = "sluice-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exchange a join token for a client certificate (once per machine).
    Join {
        /// The controller's URL, e.g. https://ci.example.com:8443.
        #[arg(long, env = "SLUICE_URL")]
        controller: String,
        /// The join token from `sluice agent token create`.
        #[arg(long, env = "SLUICE_JOIN_TOKEN")]
        token: String,
        /// The controller CA's sha256 fingerprint, printed with the token.
        #[arg(long)]
        ca_fingerprint: String,
        /// Where to keep the agent's key, certificates and workspaces.
        #[arg(long, env = "SLUICE_AGENT_STATE_DIR")]
        state_dir: PathBuf,
        /// Labels to ask for, k=v,k2=v2 (the token's labels win).
        #[arg(long, value_parser = sluice_proto::parse_labels, default_value = "")]
        labels: BTreeMap<String, String>,
        /// If the controller serves a certificate of your own rather than one from its
        /// CA: the PEM file of the CA that issued it, or `system` for the system's roots.
        #[arg(long)]
        server_ca: Option<PathBuf>,
    },
    /// Connect to the controller and run actions until stopped.
    Run {
        /// The state dir written by `join`.
        #[arg(long, env = "SLUICE_AGENT_STATE_DIR")]
        state_dir: PathBuf,
        /// How many actions to run at once.
        #[arg(long, default_value_t = 1)]
        capacity: u32,
        /// Extra labels, k=v,k2=v2.
        #[arg(long, value_parser = sluice_proto::parse_labels, default_value = "")]
        labels: BTreeMap<String, String>,
        /// Cap on one action's log, in bytes; output past it is dropped with a marker.
        #[arg(long, default_value_t = sluice_agent::executor::DEFAULT_MAX_LOG_BYTES)]
        max_log_bytes: u64,
        /// Where compiled plugins are kept [default: plugin-cache in the state dir].
        /// Agents on one machine may share one: entries are named by the plugin's
        /// digest and the engine's settings, and written whole.
        #[arg(long, env = "SLUICE_AGENT_PLUGIN_CACHE")]
        plugin_cache: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Join {
            controller,
            token,
            ca_fingerprint,
            state_dir,
            labels,
            server_ca,
        } => {
            let state = sluice_agent::StateDir::new(&state_dir);
            let identity = sluice_agent::join(
                &state,
                sluice_agent::JoinRequest {
                    controller_url: &controller,
                    token: &token,
                    ca_fingerprint: &ca_fingerprint,
                    labels,
                    capacity: 1,
                    server_ca: server_ca.as_deref(),
                },
            )
            .await
            .context("joining failed")?;
            println!(
                "Joined {} as {}. Start it with: sluice-agent run --state-dir {}",
                identity.controller_url,
                identity.agent_id,
                state_dir.display()
            );
            Ok(())
        }
        Command::Run {
            state_dir,
            capacity,
            labels,
            max_log_bytes,
            plugin_cache,
        } => {
            sluice_agent::run(sluice_agent::Options {
                state_dir,
                capacity,
                extra_labels: labels,
                max_log_bytes,
                plugin_cache,
            })
            .await?;
            Ok(())
        }
    }
}
