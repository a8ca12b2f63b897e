//! `sluice`: the command line for Sluice, and the way to run a controller.

mod client;
mod commands;
mod server;
mod show;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use client::ConnectArgs;

/// Sluice: continuous delivery on your own machines.
#[derive(Parser)]
#[command(name = "sluice", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 error (request failed, controller unreachable), \
2 usage error, 3 invalid pipeline definition, 4 execution did not succeed, 5 not found, 6 unauthorized.";

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts: one JSON document.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a controller and a local agent in one process, create the sample
    /// pipeline and run it once (the quickest way to see Sluice work).
    Up(server::UpArgs),
    /// Run a controller.
    Controller(server::ControllerArgs),
    /// Create, update, inspect, validate and start pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Inspect executions.
    #[command(subcommand)]
    Execution(ExecutionCommand),
    /// Print the logs of an execution's actions.
    Logs {
        /// Execution id.
        execution_id: String,
        /// Only this action, as STAGE/ACTION.
        #[arg(long)]
        action: Option<String>,
        /// Keep printing as the logs grow, until the actions finish.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Create a pipeline from a definition file (YAML or JSON, ours or CodePipeline's).
    Create {
        /// The definition file.
        file: PathBuf,
    },
    /// Store a new version of a pipeline from a definition file.
    Update {
        /// The definition file.
        file: PathBuf,
    },
    /// Show a pipeline's definition.
    Get {
        /// Pipeline name.
        name: String,
        /// A past version instead of the current one.
        #[arg(long)]
        version: Option<i64>,
    },
    /// List pipelines.
    List,
    /// Check a definition file without a controller; prints every problem with its path.
    Validate {
        /// The definition file.
        file: PathBuf,
    },
    /// Start an execution; prints its id.
    Start {
        /// Pipeline name.
        name: String,
        /// Wait for the execution to end, showing its progress; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum ExecutionCommand {
    /// Show an execution with its stages, actions, attempts and artifacts.
    Get {
        /// Execution id.
        id: String,
    },
    /// List executions, newest first.
    List {
        /// Only this pipeline's.
        #[arg(long)]
        pipeline: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List agents with their state, labels, version and last heartbeat.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a single-use join token and print the command to join an agent with it.
    Create {
        /// Labels the agent gets, k=v,k2=v2.
        #[arg(long, value_parser = sluice_proto::parse_labels, default_value = "")]
        labels: BTreeMap<String, String>,
        /// How long the token stays valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Up(_) | Command::Controller(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| if quiet { "warn".into() } else { "error".into() }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(client::exit::ERROR);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e
                .downcast_ref::<client::ApiFailure>()
                .map(client::ApiFailure::exit_code)
                .unwrap_or(client::exit::ERROR);
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let out = cli.output;
    let connect = &cli.connect;
    match cli.command {
        Command::Up(args) => server::up(args, out).await,
        Command::Controller(args) => server::controller(args).await,
        Command::Pipeline(PipelineCommand::Validate { file }) => commands::validate(&file, out),
        Command::Pipeline(PipelineCommand::Create { file }) => {
            commands::save_pipeline(connect, &file, false, out).await
        }
        Command::Pipeline(PipelineCommand::Update { file }) => {
            commands::save_pipeline(connect, &file, true, out).await
        }
        Command::Pipeline(PipelineCommand::Get { name, version }) => {
            commands::get_pipeline(connect, &name, version, out).await
        }
        Command::Pipeline(PipelineCommand::List) => commands::list_pipelines(connect, out).await,
        Command::Pipeline(PipelineCommand::Start { name, wait }) => {
            commands::start(connect, &name, wait, out).await
        }
        Command::Execution(ExecutionCommand::Get { id }) => {
            commands::get_execution(connect, &id, out).await
        }
        Command::Execution(ExecutionCommand::List { pipeline, limit }) => {
            commands::list_executions(connect, pipeline.as_deref(), limit, out).await
        }
        Command::Logs {
            execution_id,
            action,
            follow,
        } => commands::logs(connect, &execution_id, action.as_deref(), follow).await,
        Command::Agent(AgentCommand::Token(TokenCommand::Create { labels, ttl })) => {
            commands::create_token(connect, labels, ttl, out).await
        }
        Command::Agent(AgentCommand::List) => commands::list_agents(connect, out).await,
    }
}
