//! `sluice`: the command line for Sluice, and the way to run a controller.

mod client;
mod commands;
mod events;
mod import;
mod plugins;
mod scaffold;
mod server;
mod show;
mod versions;
mod webhooks;

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
    /// Output format: text for people, json for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    format: Output,
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
    /// Print pipeline, stage and action state-change events (CodePipeline's
    /// EventBridge detail-types), one per line; --follow keeps printing new ones.
    Events {
        /// Keep the stream open and print new events as they happen, until Ctrl-C
        /// (a dropped connection is resumed where it stopped).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this pipeline's events.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this execution's events.
        #[arg(long)]
        execution: Option<String>,
        /// Only events after this id (the first column).
        #[arg(long, value_name = "ID")]
        since: Option<i64>,
    },
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Install, grant and remove plugins; write and run your own.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage secrets (encrypted at rest; values are never shown).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Incoming webhooks (GitHub, GitLab, generic) that start pipelines from git events.
    #[command(subcommand)]
    Webhook(webhooks::WebhookCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Install a plugin: shows what it asks for and records what you grant.
    Install {
        /// The WASM component (built for wasm32-wasip2).
        file: PathBuf,
        /// Its plugin.toml (default: beside the file, or in the current directory).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A capability to grant, KIND:NAME (program:git, host:hooks.example.com,
        /// secret:DEPLOY_TOKEN, env:HTTPS_PROXY); repeat for more.
        #[arg(long = "grant", value_name = "KIND:NAME")]
        grants: Vec<sluice_pipeline::manifest::Grant>,
        /// Grant everything the plugin asks for by name.
        #[arg(long)]
        grant_all: bool,
    },
    /// List installed plugins (built-in ones too) with their grants.
    List,
    /// Show a plugin's versions, what each asks for, its grants and configuration.
    Show {
        /// Plugin id.
        id: String,
    },
    /// Remove an installed plugin version (refused while a pipeline uses it).
    Remove {
        /// Plugin id.
        id: String,
        /// Which version (needed when several are installed).
        #[arg(long)]
        version: Option<String>,
    },
    /// Grant a plugin more capabilities.
    Grant {
        /// Plugin id.
        id: String,
        /// KIND:NAME, e.g. host:hooks.example.com or secret:DEPLOY_TOKEN.
        #[arg(required = true, value_name = "KIND:NAME")]
        grants: Vec<sluice_pipeline::manifest::Grant>,
        /// Which version (needed when several are installed).
        #[arg(long)]
        version: Option<String>,
    },
    /// Take capabilities back (refused while a pipeline needs them).
    Revoke {
        /// Plugin id.
        id: String,
        /// KIND:NAME.
        #[arg(required = true, value_name = "KIND:NAME")]
        grants: Vec<sluice_pipeline::manifest::Grant>,
        /// Which version (needed when several are installed).
        #[arg(long)]
        version: Option<String>,
    },
    /// Write a new plugin project that builds as it is.
    New {
        /// The plugin id (lowercase letters, digits and '-'); also the folder name.
        name: String,
        /// The category it serves.
        #[arg(long, value_enum, default_value_t = scaffold::Category::Build)]
        category: scaffold::Category,
        /// Where to create the folder (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin locally against folders, in the same sandbox an agent uses.
    Run {
        /// A plugin project folder, a .wasm file, or a built-in plugin id.
        plugin: String,
        /// Its plugin.toml, for a .wasm file elsewhere.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The category to run as (default: the first the plugin serves).
        #[arg(long)]
        category: Option<String>,
        /// A configuration value, KEY=value; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = plugins::key_value)]
        config: Vec<(String, String)>,
        /// An input artifact, NAME=DIR; repeat for more (the first is the primary one).
        #[arg(long = "input", value_name = "NAME=DIR", value_parser = plugins::named_dir)]
        inputs: Vec<(String, PathBuf)>,
        /// Where to copy the output artifact(s) when the run succeeds.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Output artifact names (default: one, called Output, if --output is given).
        #[arg(long = "output-name", value_name = "NAME")]
        outputs: Vec<String>,
        /// Grant a capability the plugin asks for with "*", KIND:NAME.
        #[arg(long = "grant", value_name = "KIND:NAME")]
        grants: Vec<sluice_pipeline::manifest::Grant>,
        /// A secret value for the run, NAME=VALUE (masked in everything printed).
        #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = plugins::key_value)]
        secrets: Vec<(String, String)>,
        /// The action timeout.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Run the source plugin's check instead: list revisions newer than --last.
        #[arg(long)]
        check: bool,
        /// With --check: the last revision seen.
        #[arg(long)]
        last: Option<String>,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret; the value comes from --value, --from-file, or standard input.
    Set {
        /// Name: letters, digits and _.
        name: String,
        /// The value (it lands in your shell history; prefer stdin or --from-file).
        #[arg(long)]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List secret names (never values).
    List,
    /// Remove a secret.
    Rm {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Convert AWS CodePipeline definitions (get-pipeline JSON, CloudFormation templates)
    /// and create them, or print them with --dry-run.
    Import(import::ImportArgs),
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
    /// List a pipeline's stored versions, newest first.
    Versions {
        /// Pipeline name.
        name: String,
    },
    /// Show what changed between two stored versions of a pipeline (a unified diff).
    Diff {
        /// Pipeline name.
        name: String,
        /// The older version.
        v1: i64,
        /// The newer version.
        v2: i64,
    },
    /// List pipelines.
    List,
    /// Check a definition file; prints every problem with its path. Offline, it knows the
    /// built-in providers; with --remote the controller checks it against its plugins.
    Validate {
        /// The definition file.
        file: PathBuf,
        /// Ask the controller, which also knows installed plugins and their grants.
        #[arg(long)]
        remote: bool,
    },
    /// Disable the transition into a stage: executions wait in front of it.
    DisableTransition {
        /// Pipeline name.
        name: String,
        /// The stage the transition leads into.
        stage: String,
        /// Why (shown to everyone whose execution waits).
        #[arg(long)]
        reason: String,
    },
    /// Enable the transition into a stage again: the waiting execution goes on.
    EnableTransition {
        /// Pipeline name.
        name: String,
        /// The stage the transition leads into.
        stage: String,
    },
    /// Show the pipeline's disabled (and re-enabled) transitions, with who and when.
    Transitions {
        /// Pipeline name.
        name: String,
    },
    /// Roll a stage back: a new ROLLBACK execution runs it again with the artifacts and
    /// variables of an earlier execution that succeeded in it.
    Rollback {
        /// Pipeline name.
        name: String,
        /// The stage to roll back.
        #[arg(long)]
        stage: String,
        /// The execution to go back to (it must have succeeded in the stage, on the
        /// current pipeline version); by default the newest one before the latest
        /// execution to enter the stage.
        #[arg(long, value_name = "EXECUTION_ID")]
        target: Option<String>,
        /// Wait for the rollback to end, showing its progress; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Start an execution; prints its id.
    Start {
        /// Pipeline name.
        name: String,
        /// Wait for the execution to end, showing its progress; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Override a pipeline variable, NAME=VALUE (it must be declared); repeat for more.
        #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = plugins::key_value)]
        variables: Vec<(String, String)>,
        /// Take this commit instead of the branch head, ACTION=COMMIT (git sources).
        #[arg(long = "revision", value_name = "ACTION=COMMIT", value_parser = plugins::key_value)]
        revisions: Vec<(String, String)>,
        /// Idempotency: starting again with the same token returns the same execution
        /// (CodePipeline's clientRequestToken).
        #[arg(long = "idempotency-token", value_name = "TOKEN")]
        idempotency_token: Option<String>,
    },
}

#[derive(Subcommand)]
enum ExecutionCommand {
    /// Approve a pending manual approval; the execution goes on.
    Approve {
        /// Execution id.
        id: String,
        /// The approval's stage.
        #[arg(long)]
        stage: String,
        /// The approval action's name.
        #[arg(long)]
        action: String,
        /// A comment, kept with the decision.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a pending manual approval; the action and its stage fail.
    Reject {
        /// Execution id.
        id: String,
        /// The approval's stage.
        #[arg(long)]
        stage: String,
        /// The approval action's name.
        #[arg(long)]
        action: String,
        /// Why, kept with the decision.
        #[arg(long)]
        comment: String,
    },
    /// Retry a failed or stopped stage: its failed actions, or with --all every action;
    /// the execution keeps its id and every attempt stays in its history.
    Retry {
        /// Execution id.
        id: String,
        /// The stage's name.
        #[arg(long)]
        stage: String,
        /// Run every action of the stage again, not only the failed ones.
        #[arg(long)]
        all: bool,
        /// Wait for the execution to end, showing its progress; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Bypass a stage's failed beforeEntry condition (the execution enters the stage)
    /// or onSuccess condition (the stage succeeds); who did it is recorded.
    OverrideCondition {
        /// Execution id.
        id: String,
        /// The stage's name.
        #[arg(long)]
        stage: String,
        /// Which condition: before-entry or on-success (by default, the one that failed).
        #[arg(long, value_parser = ["before-entry", "on-success"])]
        condition: Option<String>,
        /// Wait for the execution to end, showing its progress; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Stop an execution: running actions finish and nothing new starts (Stopping →
    /// Stopped), or with --abandon they are abandoned and their processes killed.
    Stop {
        /// Execution id.
        id: String,
        /// Abandon running actions instead of waiting for them.
        #[arg(long)]
        abandon: bool,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until the execution has stopped.
        #[arg(long)]
        wait: bool,
    },
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
    /// Drain an agent: it finishes what it runs and is offered nothing new.
    Drain {
        /// Agent id (`sluice agent list` shows them).
        id: String,
    },
    /// Put a drained agent back to work.
    Undrain {
        /// Agent id.
        id: String,
    },
    /// Revoke an agent: its connection is closed, its certificate refused from now on,
    /// and what it was running fails. Joining again needs a new token.
    Revoke {
        /// Agent id.
        id: String,
    },
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
    let out = cli.format;
    let connect = &cli.connect;
    match cli.command {
        Command::Up(args) => server::up(args, out).await,
        Command::Controller(args) => server::controller(args).await,
        Command::Pipeline(PipelineCommand::Import(args)) => import::run(connect, args, out).await,
        Command::Pipeline(PipelineCommand::Validate {
            file,
            remote: false,
        }) => commands::validate(&file, out),
        Command::Pipeline(PipelineCommand::Validate { file, remote: true }) => {
            commands::validate_remote(connect, &file, out).await
        }
        Command::Pipeline(PipelineCommand::Create { file }) => {
            commands::save_pipeline(connect, &file, false, out).await
        }
        Command::Pipeline(PipelineCommand::Update { file }) => {
            commands::save_pipeline(connect, &file, true, out).await
        }
        Command::Pipeline(PipelineCommand::Get { name, version }) => {
            commands::get_pipeline(connect, &name, version, out).await
        }
        Command::Pipeline(PipelineCommand::Versions { name }) => {
            versions::list(connect, &name, out).await
        }
        Command::Pipeline(PipelineCommand::Diff { name, v1, v2 }) => {
            versions::diff(connect, &name, v1, v2, out).await
        }
        Command::Pipeline(PipelineCommand::List) => commands::list_pipelines(connect, out).await,
        Command::Pipeline(PipelineCommand::DisableTransition {
            name,
            stage,
            reason,
        }) => commands::set_transition(connect, &name, &stage, false, &reason, out).await,
        Command::Pipeline(PipelineCommand::EnableTransition { name, stage }) => {
            commands::set_transition(connect, &name, &stage, true, "", out).await
        }
        Command::Pipeline(PipelineCommand::Transitions { name }) => {
            commands::transitions(connect, &name, out).await
        }
        Command::Pipeline(PipelineCommand::Rollback {
            name,
            stage,
            target,
            wait,
        }) => commands::rollback(connect, &name, &stage, target.as_deref(), wait, out).await,
        Command::Pipeline(PipelineCommand::Start {
            name,
            wait,
            variables,
            revisions,
            idempotency_token,
        }) => {
            let request =
                commands::start_request(&variables, &revisions, idempotency_token.as_deref());
            commands::start(connect, &name, &request, wait, out).await
        }
        Command::Execution(ExecutionCommand::Approve {
            id,
            stage,
            action,
            comment,
        }) => commands::decide(connect, &id, &stage, &action, true, &comment, out).await,
        Command::Execution(ExecutionCommand::Reject {
            id,
            stage,
            action,
            comment,
        }) => commands::decide(connect, &id, &stage, &action, false, &comment, out).await,
        Command::Execution(ExecutionCommand::Retry {
            id,
            stage,
            all,
            wait,
        }) => commands::retry(connect, &id, &stage, all, wait, out).await,
        Command::Execution(ExecutionCommand::OverrideCondition {
            id,
            stage,
            condition,
            wait,
        }) => {
            commands::override_condition(connect, &id, &stage, condition.as_deref(), wait, out)
                .await
        }
        Command::Execution(ExecutionCommand::Stop {
            id,
            abandon,
            reason,
            wait,
        }) => commands::stop(connect, &id, abandon, &reason, wait, out).await,
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
        Command::Agent(AgentCommand::Drain { id }) => {
            commands::agent_control(connect, &id, "drain", out).await
        }
        Command::Agent(AgentCommand::Undrain { id }) => {
            commands::agent_control(connect, &id, "undrain", out).await
        }
        Command::Agent(AgentCommand::Revoke { id }) => {
            commands::agent_control(connect, &id, "revoke", out).await
        }
        Command::Events {
            follow,
            pipeline,
            execution,
            since,
        } => {
            let args = events::EventsArgs {
                follow,
                pipeline,
                execution,
                since,
            };
            events::events(connect, args, out).await
        }
        Command::Plugin(command) => plugin(connect, command, out).await,
        Command::Secret(SecretCommand::Set {
            name,
            value,
            from_file,
        }) => plugins::secret_set(connect, &name, value, from_file.as_deref()).await,
        Command::Secret(SecretCommand::List) => plugins::secret_list(connect, out).await,
        Command::Secret(SecretCommand::Rm { name }) => plugins::secret_rm(connect, &name).await,
        Command::Webhook(command) => webhooks::run(connect, command, out).await,
    }
}

async fn plugin(connect: &ConnectArgs, command: PluginCommand, out: Output) -> anyhow::Result<u8> {
    match command {
        PluginCommand::Install {
            file,
            manifest,
            grants,
            grant_all,
        } => plugins::install(connect, &file, manifest.as_deref(), grants, grant_all, out).await,
        PluginCommand::List => plugins::list(connect, out).await,
        PluginCommand::Show { id } => plugins::show(connect, &id, out).await,
        PluginCommand::Remove { id, version } => plugins::remove(connect, &id, version).await,
        PluginCommand::Grant {
            id,
            grants,
            version,
        } => plugins::change_grants(connect, &id, version, grants, true, out).await,
        PluginCommand::Revoke {
            id,
            grants,
            version,
        } => plugins::change_grants(connect, &id, version, grants, false, out).await,
        PluginCommand::New {
            name,
            category,
            dir,
        } => scaffold::new_plugin(&name, category, &dir),
        PluginCommand::Run {
            plugin,
            manifest,
            category,
            config,
            inputs,
            output,
            outputs,
            grants,
            secrets,
            timeout,
            check,
            last,
        } => {
            plugins::run(
                plugins::RunArgs {
                    plugin,
                    manifest,
                    category,
                    config,
                    inputs,
                    output,
                    outputs,
                    grants,
                    secrets,
                    timeout,
                    check,
                    last_revision: last,
                },
                out,
            )
            .await
        }
    }
}
