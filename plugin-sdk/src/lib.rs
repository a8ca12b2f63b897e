//! The Sluice plugin SDK: what an action plugin is written against.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`. It implements the trait of
//! each category it serves ([`SourcePlugin`], [`BuildPlugin`], [`TestPlugin`],
//! [`DeployPlugin`], [`InvokePlugin`]) and exports itself with [`plugin!`]:
//!
//! ```ignore
//! use sluice_plugin_sdk::{ActionError, ActionOutcome, BuildPlugin, Context, log};
//!
//! struct Hello;
//!
//! impl BuildPlugin for Hello {
//!     fn build(ctx: &Context) -> Result<ActionOutcome, ActionError> {
//!         let name = ctx.require("Name")?;
//!         log::info(&format!("hello, {name}"));
//!         sluice_plugin_sdk::set_output_variable("Greeted", name).map_err(ActionError::Failed)?;
//!         Ok(ActionOutcome { summary: format!("greeted {name}") })
//!     }
//! }
//!
//! sluice_plugin_sdk::plugin!(Hello: Build);
//! ```
//!
//! A plugin serving several categories lists them all: `plugin!(Commands: Build, Test)`
//! needs `impl BuildPlugin` and `impl TestPlugin`. The manifest (`plugin.toml`) must name
//! the same categories.
//!
//! The plugin sees one directory, the action workspace, as `/workspace`: inputs are
//! unpacked under `/workspace/inputs/<name>`, outputs are filled under
//! `/workspace/outputs/<name>`, and `/workspace/tmp` is scratch space. It has no
//! environment and no network of its own. Programs ([`exec`], [`Command`]), secrets
//! ([`get_secret`]), agent environment variables ([`get_env`]) and HTTP ([`http`]) go
//! through the host, and only what the manifest asks for and the operator granted is
//! allowed; a refusal names the missing capability.
//!
//! This SDK targets the WIT package `sluice:plugin@0.2.0` ([`API_VERSION`]); set
//! `api_version = "0.2.0"` in `plugin.toml`.

use std::collections::BTreeMap;

/// The WIT package version this SDK builds plugins for (`api_version` in `plugin.toml`).
pub const API_VERSION: &str = "0.2.0";

/// The generated guest bindings of `sluice:plugin@0.2.0` (world `action-plugin`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "action-plugin",
        path: "wit/0.2.0",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "sluice_plugin_sdk::bindings",
    });
}

pub use bindings::sluice::plugin::types::{
    Artifact, CheckContext, ComponentOutcome, ExecRequest, ExecResult, HttpRequest, HttpResponse,
    LogLevel, SourceRevision, TestCase, TestStatus,
};
pub use bindings::{ActionContext, ActionError, ActionOutcome, Guest, export_plugin};

/// A Source action: takes a snapshot of a revision into the first output artifact, and
/// finds new revisions for polling.
///
/// ```ignore
/// use sluice_plugin_sdk::*;
///
/// struct Releases;
///
/// impl SourcePlugin for Releases {
///     fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError> {
///         let out = ctx.primary_output().ok_or_else(|| {
///             ActionError::InvalidConfig("declare one output artifact".into())
///         })?;
///         std::fs::write(format!("{out}/VERSION"), "1.4.2\n")
///             .map_err(|e| ActionError::Failed(e.to_string()))?;
///         set_output_variable("Version", "1.4.2").map_err(ActionError::Failed)?;
///         Ok(ActionOutcome { summary: "release 1.4.2".into() })
///     }
///
///     fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError> {
///         let newest = SourceRevision { id: "1.4.2".into(), summary: "release 1.4.2".into() };
///         Ok(if ctx.last_revision.as_deref() == Some("1.4.2") { vec![] } else { vec![newest] })
///     }
/// }
///
/// sluice_plugin_sdk::plugin!(Releases: Source);
/// ```
pub trait SourcePlugin {
    /// Fetches one revision (the newest, or the one the configuration pins) into the
    /// output artifact, and sets output variables that describe it.
    fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError>;

    /// The revisions newer than `ctx.last_revision`, oldest first; only the newest one
    /// when there is no last revision.
    fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError>;
}

/// A Build action: turns input artifacts into output artifacts.
///
/// ```ignore
/// use sluice_plugin_sdk::*;
///
/// struct Make;
///
/// impl BuildPlugin for Make {
///     fn build(ctx: &Context) -> Result<ActionOutcome, ActionError> {
///         let src = ctx.primary_input().unwrap_or("/workspace");
///         // `make` must be listed in plugin.toml's capabilities.programs and granted.
///         Command::new("make").arg("dist").cwd(src).run_checked("make dist")?;
///         Ok(ActionOutcome { summary: "built dist".into() })
///     }
/// }
///
/// sluice_plugin_sdk::plugin!(Make: Build);
/// ```
pub trait BuildPlugin {
    /// Runs the build.
    fn build(ctx: &Context) -> Result<ActionOutcome, ActionError>;
}

/// A Test action: checks input artifacts; fails when tests fail. Report test cases with
/// [`report_tests`] so that they are kept in the execution history.
///
/// ```ignore
/// use sluice_plugin_sdk::*;
///
/// struct Smoke;
///
/// impl TestPlugin for Smoke {
///     fn test(ctx: &Context) -> Result<ActionOutcome, ActionError> {
///         let src = ctx.primary_input().unwrap_or("/workspace");
///         let present = std::path::Path::new(&format!("{src}/index.html")).is_file();
///         report_tests(&[TestCase {
///             suite: "smoke".into(),
///             classname: String::new(),
///             name: "index.html exists".into(),
///             status: if present { TestStatus::Passed } else { TestStatus::Failed },
///             duration_ms: 0,
///             message: (!present).then(|| "index.html is missing".to_string()),
///             details: None,
///         }])
///         .map_err(ActionError::Failed)?;
///         if !present {
///             return Err(ActionError::Failed("1 of 1 tests failed".into()));
///         }
///         Ok(ActionOutcome { summary: "1 test passed".into() })
///     }
/// }
///
/// sluice_plugin_sdk::plugin!(Smoke: Test);
/// ```
pub trait TestPlugin {
    /// Runs the tests.
    fn test(ctx: &Context) -> Result<ActionOutcome, ActionError>;
}

/// A Deploy action: puts an input artifact somewhere. Say in `plugin.toml` whether it is
/// idempotent: a deploy that is not is never re-run by itself after its agent was lost.
///
/// ```ignore
/// use sluice_plugin_sdk::*;
///
/// struct Notify;
///
/// impl DeployPlugin for Notify {
///     fn deploy(ctx: &Context) -> Result<ActionOutcome, ActionError> {
///         // The host must be granted (host:deploy.example.com), and the key that
///         // names the secret declared `secret = true` in plugin.toml.
///         let token = get_secret(ctx.require("TokenSecret")?).map_err(ActionError::Failed)?;
///         let answer = http(&HttpRequest {
///             method: "POST".into(),
///             url: "https://deploy.example.com/hooks/shop".into(),
///             headers: vec![("authorization".into(), format!("Bearer {token}"))],
///             body: ctx.execution_id().as_bytes().to_vec(),
///             timeout_ms: None,
///         })
///         .map_err(ActionError::Failed)?;
///         if !(200..300).contains(&answer.status) {
///             return Err(ActionError::Failed(format!("the hook answered {}", answer.status)));
///         }
///         Ok(ActionOutcome { summary: format!("hook answered {}", answer.status) })
///     }
/// }
///
/// sluice_plugin_sdk::plugin!(Notify: Deploy);
/// ```
pub trait DeployPlugin {
    /// Runs the deployment.
    fn deploy(ctx: &Context) -> Result<ActionOutcome, ActionError>;
}

/// An Invoke action: runs some logic with the pipeline's context; its output variables
/// are what later actions see.
///
/// ```ignore
/// use sluice_plugin_sdk::*;
///
/// struct Window;
///
/// impl InvokePlugin for Window {
///     fn invoke(ctx: &Context) -> Result<ActionOutcome, ActionError> {
///         let attempt = ctx.attempt();
///         set_output_variable("Attempt", &attempt.to_string()).map_err(ActionError::Failed)?;
///         Ok(ActionOutcome { summary: format!("attempt {attempt}") })
///     }
/// }
///
/// sluice_plugin_sdk::plugin!(Window: Invoke);
/// ```
pub trait InvokePlugin {
    /// Runs the invocation.
    fn invoke(ctx: &Context) -> Result<ActionOutcome, ActionError>;
}

/// Exports a plugin type for the categories it serves:
/// `plugin!(MyGit: Source)`, `plugin!(Commands: Build, Test)`.
///
/// The type must implement the trait of each category listed. `check` is answered by
/// the [`SourcePlugin`] implementation when `Source` is listed, and refused otherwise.
#[macro_export]
macro_rules! plugin {
    ($ty:ty : $($category:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluicePluginExport;

        impl $crate::Guest for __SluicePluginExport {
            fn run(
                ctx: $crate::ActionContext,
            ) -> ::core::result::Result<$crate::ActionOutcome, $crate::ActionError> {
                let ctx = $crate::Context::new(ctx);
                $(
                    if ctx.category() == ::core::stringify!($category) {
                        return $crate::__plugin_run!($category, $ty, &ctx);
                    }
                )+
                ::core::result::Result::Err($crate::ActionError::Failed(::std::format!(
                    "this plugin does not serve category {} (it serves {})",
                    ctx.category(),
                    [$(::core::stringify!($category)),+].join(", ")
                )))
            }

            fn check(
                ctx: $crate::CheckContext,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::SourceRevision>, $crate::ActionError>
            {
                $crate::__plugin_check!($ty, &ctx; $($category),+)
            }
        }

        $crate::export_plugin!(__SluicePluginExport);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_run {
    (Source, $ty:ty, $ctx:expr) => {
        <$ty as $crate::SourcePlugin>::fetch($ctx)
    };
    (Build, $ty:ty, $ctx:expr) => {
        <$ty as $crate::BuildPlugin>::build($ctx)
    };
    (Test, $ty:ty, $ctx:expr) => {
        <$ty as $crate::TestPlugin>::test($ctx)
    };
    (Deploy, $ty:ty, $ctx:expr) => {
        <$ty as $crate::DeployPlugin>::deploy($ctx)
    };
    (Invoke, $ty:ty, $ctx:expr) => {
        <$ty as $crate::InvokePlugin>::invoke($ctx)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_check {
    ($ty:ty, $ctx:expr; Source $(, $rest:ident)*) => {
        <$ty as $crate::SourcePlugin>::check($ctx)
    };
    ($ty:ty, $ctx:expr; $other:ident $(, $rest:ident)*) => {
        $crate::__plugin_check!($ty, $ctx; $($rest),*)
    };
    ($ty:ty, $ctx:expr;) => {
        ::core::result::Result::Err($crate::ActionError::Failed(
            "this plugin is not a source plugin: it has no revisions to check".to_string(),
        ))
    };
}

/// Lines for the action log.
pub mod log {
    use crate::bindings::sluice::plugin::host;
    use crate::bindings::sluice::plugin::types::LogLevel;

    /// Writes a debug line.
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message);
    }

    /// Writes an informational line.
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message);
    }

    /// Writes a warning line (shown with a `WARN` prefix).
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message);
    }

    /// Writes an error line (shown with an `ERROR` prefix).
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message);
    }
}

/// Runs a granted program on the agent and waits for it; see [`Command`] for a builder.
///
/// `args` and `env` values that start with `/workspace` are translated to the real
/// workspace location by the host; `cwd` must lie inside `/workspace` (default: `/workspace`).
/// The program's output goes to the action log as it runs; the result holds its exit
/// code and the last 64 KiB of each stream. `Err` means the program could not run at all
/// (not granted, not found, bad working directory).
pub fn exec(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: Option<&str>,
) -> Result<ExecResult, String> {
    let request = ExecRequest {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: cwd.map(str::to_string),
    };
    bindings::sluice::plugin::host::exec(&request)
}

/// A builder for [`exec`].
#[derive(Debug, Clone)]
pub struct Command {
    request: ExecRequest,
}

impl Command {
    /// A command running `program` (a name looked up in /usr/local/bin, /usr/bin and /bin
    /// on the agent) with no
    /// arguments, no extra environment and `/workspace` as working directory.
    pub fn new(program: &str) -> Command {
        Command {
            request: ExecRequest {
                program: program.to_string(),
                args: Vec::new(),
                env: Vec::new(),
                cwd: None,
            },
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Command {
        self.request.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable of the child.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Command {
        self.request.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory (a path under `/workspace`).
    pub fn cwd(mut self, dir: impl Into<String>) -> Command {
        self.request.cwd = Some(dir.into());
        self
    }

    /// Runs the program and waits for it.
    pub fn run(&self) -> Result<ExecResult, String> {
        bindings::sluice::plugin::host::exec(&self.request)
    }

    /// Runs the program and turns a failure to start or a non-zero exit into
    /// [`ActionError::Failed`], naming `what` and the last line of standard error.
    pub fn run_checked(&self, what: &str) -> Result<ExecResult, ActionError> {
        let result = self
            .run()
            .map_err(|e| ActionError::Failed(format!("{what}: {e}")))?;
        if result.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "{what}: {} exited with status {}{}",
                self.request.program,
                result.exit_code,
                last_line_suffix(&result.stderr_tail)
            )));
        }
        Ok(result)
    }
}

/// `": <last non-empty line>"` of `text`, or `""` if it has none.
pub fn last_line_suffix(text: &str) -> String {
    match text.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

/// Normalises a path from the configuration key `key` that must be relative to the
/// source directory (`./a//b/` → `a/b`, empty → `.`), refusing absolute paths and `..`
/// with an error that names the key.
pub fn relative_path(key: &str, path: &str) -> Result<String, ActionError> {
    if path.starts_with('/') {
        return Err(ActionError::InvalidConfig(format!(
            "{key}: {path:?} must be relative to the source directory"
        )));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(ActionError::InvalidConfig(format!(
            "{key}: {path:?} must stay inside the source directory (no '..')"
        )));
    }
    if parts.is_empty() {
        return Ok(".".to_string());
    }
    Ok(parts.join("/"))
}

/// Sets an output variable of the action, visible to later actions as
/// `#{Namespace.Name}`. Names are 1–128 characters of `A-Z a-z 0-9 _ -`; a value is at
/// most 100 KiB, and all of an action's variables together at most 122,880 bytes.
pub fn set_output_variable(name: &str, value: &str) -> Result<(), String> {
    bindings::sluice::plugin::host::set_output_variable(name, value)
}

/// The value of a secret, by name. The plugin must have been granted it (`secret:NAME`);
/// an action configuration key declared `secret = true` holds the name to pass here.
/// The value is masked in everything the action's log, summary and errors show.
pub fn get_secret(name: &str) -> Result<String, String> {
    bindings::sluice::plugin::host::get_secret(name)
}

/// The value of one of the agent's environment variables, if the plugin was granted it
/// (`env:NAME`); `Ok(None)` when it is granted but not set.
pub fn get_env(name: &str) -> Result<Option<String>, String> {
    bindings::sluice::plugin::host::get_env(name)
}

/// Sends an HTTP request to a granted host (`host:NAME`) and waits for the answer.
/// Redirects are not followed; any status is an `Ok` answer.
pub fn http(request: &HttpRequest) -> Result<HttpResponse, String> {
    bindings::sluice::plugin::host::http(request)
}

/// Adds test cases to the action's test report, kept in the execution history.
pub fn report_tests(cases: &[TestCase]) -> Result<(), String> {
    bindings::sluice::plugin::host::report_tests(cases)
}

/// Runs a WASM component from the workspace (a path under `/workspace`, e.g. in an input
/// artifact) as an Invoke action with `config`. The component gets no capabilities; its
/// log goes to this action's log and its output variables come back in the outcome.
pub fn run_component(path: &str, config: &[(String, String)]) -> Result<ComponentOutcome, String> {
    bindings::sluice::plugin::host::run_component(path, config)
}

/// The action context with lookups by name.
#[derive(Debug, Clone)]
pub struct Context {
    inner: ActionContext,
    config: BTreeMap<String, String>,
}

impl Context {
    /// Wraps the context the host passed to `run`.
    pub fn new(inner: ActionContext) -> Context {
        let config = inner.config.iter().cloned().collect();
        Context { inner, config }
    }

    /// The raw context.
    pub fn raw(&self) -> &ActionContext {
        &self.inner
    }

    /// A configuration value, if set and not blank.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A configuration value, or [`ActionError::InvalidConfig`] naming the key.
    pub fn require(&self, key: &str) -> Result<&str, ActionError> {
        self.config(key).ok_or_else(|| {
            ActionError::InvalidConfig(format!("configuration key {key} is required"))
        })
    }

    /// The path of the input artifact called `name`, e.g. `/workspace/inputs/SourceOut`.
    pub fn input(&self, name: &str) -> Option<&str> {
        find_artifact(&self.inner.inputs, name)
    }

    /// The path of the first (primary) input artifact.
    pub fn primary_input(&self) -> Option<&str> {
        self.inner.inputs.first().map(|a| a.path.as_str())
    }

    /// The path of the output artifact called `name`, e.g. `/workspace/outputs/BuildOut`.
    pub fn output(&self, name: &str) -> Option<&str> {
        find_artifact(&self.inner.outputs, name)
    }

    /// The path of the first output artifact.
    pub fn primary_output(&self) -> Option<&str> {
        self.inner.outputs.first().map(|a| a.path.as_str())
    }

    /// Input artifacts in declaration order.
    pub fn inputs(&self) -> &[Artifact] {
        &self.inner.inputs
    }

    /// Output artifacts in declaration order.
    pub fn outputs(&self) -> &[Artifact] {
        &self.inner.outputs
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.inner.pipeline
    }

    /// The pipeline execution id.
    pub fn execution_id(&self) -> &str {
        &self.inner.execution_id
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.inner.stage
    }

    /// The action's name.
    pub fn action(&self) -> &str {
        &self.inner.action
    }

    /// The category the action runs as: "Source", "Build", "Test", "Deploy" or "Invoke".
    pub fn category(&self) -> &str {
        &self.inner.category
    }

    /// The workspace root as the plugin sees it (`/workspace`).
    pub fn workspace(&self) -> &str {
        &self.inner.workspace
    }

    /// The attempt number of this action in this execution, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// A pipeline-level fact, e.g. `variable("PipelineExecutionId")`.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.inner
            .variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Scratch space inside the workspace (`/workspace/tmp`), created by the host.
    pub fn tmp_dir(&self) -> String {
        format!("{}/tmp", self.inner.workspace)
    }
}

fn find_artifact<'a>(artifacts: &'a [Artifact], name: &str) -> Option<&'a str> {
    artifacts
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.path.as_str())
}
