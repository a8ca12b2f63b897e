//! Harness for the end-to-end tests: real `sluice` and `sluice-agent` processes on
//! 127.0.0.1, real TLS, real SQLite files, real git repositories.

#![allow(clippy::unwrap_used)]
// Killing a process group needs libc::killpg.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod chromium;

/// The directory holding the built binaries.
///
/// `cargo test --workspace` (the README's test command) builds `sluice` and
/// `sluice-agent` before running any test (cargo builds a package's binaries for its
/// integration tests: `cli/tests/` and `agent/tests/`). A narrower run such as
/// `cargo nextest run -p sluice-e2e` does not, so build them first
/// (`cargo build --workspace`) or the tests use stale binaries; they are built here
/// only when missing, because a nested cargo would wait forever on the lock that
/// `cargo test` holds.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        // Tests run from the same profile as the binaries they exercise.
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let dir = target.join(profile);
        if !dir.join("sluice").exists() || !dir.join("sluice-agent").exists() {
            let mut build = Command::new(env!("CARGO"));
            build
                .args(["build", "-p", "sluice-cli", "-p", "sluice-agent"])
                .current_dir(&workspace);
            if profile == "release" {
                build.arg("--release");
            }
            let status = build.status().expect("cargo build");
            assert!(status.success(), "building the binaries failed");
        }
        dir
    })
    .clone()
}

/// A `sluice` command with its client config pointed at `config`.
pub fn sluice(config: &Path) -> Command {
    let mut cmd = Command::new(bin_dir().join("sluice"));
    cmd.env("SLUICE_CONFIG", config)
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_CA");
    cmd
}

/// A `sluice-agent` command.
pub fn sluice_agent() -> Command {
    let mut cmd = Command::new(bin_dir().join("sluice-agent"));
    cmd.env("SLUICE_AGENT_PLUGIN_CACHE", plugin_cache_dir());
    cmd
}

/// Where the agents of the tests keep compiled plugins: one cache for the whole run
/// (as agents on one machine may share one), so each built-in plugin is compiled once
/// rather than by every agent, which takes seconds in a debug build.
pub fn plugin_cache_dir() -> PathBuf {
    bin_dir().join("e2e-plugin-cache")
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let output = cmd.output().expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output, stdout, stderr)
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let (output, stdout, stderr) = run(cmd);
    assert!(
        output.status.success(),
        "command failed with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    stdout
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1 (for a controller that restarts on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (with its whole process group) when dropped.
pub struct Process {
    child: Child,
    killed: bool,
    /// What it wrote to stderr, if that was piped: read as it comes by a thread, so a
    /// chatty process never blocks on a full pipe.
    stderr: Option<(SharedBytes, std::thread::JoinHandle<()>)>,
}

/// Bytes a reader thread appends to.
type SharedBytes = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

impl Process {
    /// Spawns `cmd` as the leader of a new process group, so that `kill` (and drop)
    /// also ends everything it started.
    pub fn spawn(cmd: &mut Command) -> Process {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().map(|mut pipe| {
            let buffer = SharedBytes::default();
            let sink = buffer.clone();
            let reader = std::thread::spawn(move || {
                use std::io::Read;
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (buffer, reader)
        });
        Process {
            child,
            killed: false,
            stderr,
        }
    }

    /// SIGKILLs the process and everything it started, as if the machine died.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            let pgid = self.child.id() as libc::pid_t;
            // The child leads its own process group (see `spawn`); a pgid of 0 or 1
            // would mean "our group" or "everyone", so never signal those.
            if pgid > 1 {
                // SAFETY: killpg only sends a signal to the group the child leads.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited; its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the process has written to stderr so far (empty unless it was piped).
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(|(buffer, _)| String::from_utf8_lossy(&buffer.lock().unwrap()).to_string())
            .unwrap_or_default()
    }

    /// Waits for the process to exit, up to `timeout`, and returns its stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let status = wait_for("the process to exit", timeout, || self.try_wait());
        // The reader ends when the last writer of the pipe is gone; what the process
        // left running (it should have left nothing) must not hold this up for long.
        if let Some((_, reader)) = &self.stderr {
            let start = Instant::now();
            while !reader.is_finished() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (status, self.stderr())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A controller process with its data dir and a client config for the CLI.
pub struct Controller {
    process: Process,
    /// The controller's URL.
    pub url: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The client config the CLI uses.
    pub config: PathBuf,
    /// The port it listens on.
    pub port: u16,
    /// A CA file the CLI should trust instead of what the client config says.
    pub ca_override: Option<PathBuf>,
    /// Every line the controller printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Controller {
    /// An HTTPS client trusting only this controller's CA.
    pub fn https_client(&self) -> reqwest::Client {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(self.ca_file()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .unwrap()
    }

    /// The controller's CA certificate (PEM), in its data dir.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.crt")
    }

    /// The API token the CLI was configured with (the `token = "..."` line of the
    /// client config).
    pub fn api_token(&self) -> String {
        std::fs::read_to_string(&self.config)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("token = "))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    /// Starts `sluice controller` on `port` (0: any) with extra flags.
    pub fn start(root: &Path, port: u16, extra: &[&str]) -> Controller {
        let data_dir = root.join("controller");
        let config = root.join("client.toml");
        let mut cmd = sluice(&config);
        cmd.args(["controller", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut process = Process::spawn(&mut cmd);
        let stdout = process.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("Sluice controller listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the controller did not report its URL");
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Controller {
            process,
            url,
            data_dir,
            config,
            port,
            ca_override: None,
            stdout: printed,
        }
    }

    /// A `sluice` CLI command against this controller.
    pub fn cli(&self) -> Command {
        let mut cmd = sluice(&self.config);
        if let Some(ca) = &self.ca_override {
            cmd.env("SLUICE_CA", ca);
        }
        cmd
    }

    /// Runs the CLI with `-o json` and parses the output.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = ok(self.cli().args(args).args(["-o", "json"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Creates a join token; returns (token, CA fingerprint).
    pub fn join_token(&self, labels: &str, ttl: &str) -> (String, String) {
        let token = self.json(&["agent", "token", "create", "--labels", labels, "--ttl", ttl]);
        (
            token["token"].as_str().unwrap().to_string(),
            token["caFingerprint"].as_str().unwrap().to_string(),
        )
    }

    /// `sluice-agent join` against this controller with `token` and `fingerprint`,
    /// into `state_dir` (not run yet).
    pub fn join_command(&self, token: &str, fingerprint: &str, state_dir: &Path) -> Command {
        let mut cmd = sluice_agent();
        cmd.args([
            "join",
            "--controller",
            &self.url,
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint,
        ])
        .arg("--state-dir")
        .arg(state_dir);
        cmd
    }

    /// Joins a new agent into `state_dir`.
    pub fn join_agent(&self, state_dir: &Path, labels: &str) {
        let (token, fingerprint) = self.join_token(labels, "10m");
        ok(&mut self.join_command(&token, &fingerprint, state_dir));
    }

    /// `sluice pipeline create FILE`, which must succeed.
    pub fn create_pipeline(&self, definition: &Path) {
        ok(self.cli().args(["pipeline", "create"]).arg(definition));
    }

    /// `sluice pipeline update FILE`, which must succeed.
    pub fn update_pipeline(&self, definition: &Path) {
        ok(self.cli().args(["pipeline", "update"]).arg(definition));
    }

    /// `sluice pipeline start NAME`; returns the execution id.
    pub fn start_pipeline(&self, name: &str) -> String {
        self.start_pipeline_with(name, &[])
    }

    /// `sluice pipeline start NAME` with `extra` arguments (such as `--variable K=V`);
    /// returns the execution id.
    pub fn start_pipeline_with(&self, name: &str, extra: &[&str]) -> String {
        ok(self.cli().args(["pipeline", "start", name]).args(extra))
            .trim()
            .to_string()
    }

    /// The executions of `pipeline`, newest first, as `sluice execution list -o json`
    /// shows them.
    pub fn executions(&self, pipeline: &str) -> Vec<Value> {
        self.json(&["execution", "list", "--pipeline", pipeline])
            .as_array()
            .unwrap()
            .clone()
    }

    /// `sluice logs EXECUTION --action STAGE/ACTION`, which must succeed.
    pub fn logs(&self, execution: &str, action: &str) -> String {
        ok(self.cli().args(["logs", execution, "--action", action]))
    }

    /// The execution, as `sluice execution get -o json` shows it.
    pub fn execution(&self, id: &str) -> Value {
        self.json(&["execution", "get", id])
    }

    /// Waits until an execution is no longer InProgress.
    pub fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        wait_for(&format!("execution {id} to finish"), timeout, || {
            let e = self.execution(id);
            (e["status"] != "InProgress" && e["status"] != "Stopping").then_some(e)
        })
    }

    /// Waits until the latest attempt of the first action of stage number `stage` is in
    /// `phase` (such as `running` or `approval`); returns the execution.
    pub fn wait_phase(&self, id: &str, stage: usize, phase: &str, timeout: Duration) -> Value {
        wait_for(
            &format!("stage {stage} of {id} to be in phase {phase}"),
            timeout,
            || {
                let e = self.execution(id);
                let attempt = e["stages"][stage]["actions"][0]["attempts"]
                    .as_array()?
                    .last()?
                    .clone();
                (attempt["phase"] == phase).then_some(e)
            },
        )
    }

    /// Waits until the execution waits in front of the stage called `stage`; returns
    /// the execution.
    pub fn wait_waiting(&self, id: &str, stage: &str, timeout: Duration) -> Value {
        wait_for(
            &format!("{id} to wait in front of {stage}"),
            timeout,
            || {
                let e = self.execution(id);
                (e["waitingForStage"] == stage).then_some(e)
            },
        )
    }

    /// Kills the controller process.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Opens the controller's SQLite database read-only.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.data_dir.join("sluice.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }
}

/// A controller in `root` started with `flags`, and one agent (state dir
/// `root/agent`) joined and running with `capacity`.
pub fn start_with_agent(root: &Path, flags: &[&str], capacity: u32) -> (Controller, Process) {
    start_with_agent_on(root, 0, flags, capacity)
}

/// [`start_with_agent`] with the controller on `port` (0: any), for a test that
/// restarts it on the same port.
pub fn start_with_agent_on(
    root: &Path,
    port: u16,
    flags: &[&str],
    capacity: u32,
) -> (Controller, Process) {
    let controller = Controller::start(root, port, flags);
    let state = root.join("agent");
    controller.join_agent(&state, "");
    let agent = run_agent(&state, capacity);
    (controller, agent)
}

/// Starts `sluice-agent run` for a joined state dir.
pub fn run_agent(state_dir: &Path, capacity: u32) -> Process {
    run_agent_with_labels(state_dir, capacity, "")
}

/// Starts `sluice-agent run` with extra `--labels`.
pub fn run_agent_with_labels(state_dir: &Path, capacity: u32, labels: &str) -> Process {
    run_agent_with_args(
        state_dir,
        &["--capacity", &capacity.to_string(), "--labels", labels],
    )
}

/// Starts `sluice-agent run` with the given extra arguments.
pub fn run_agent_with_args(state_dir: &Path, args: &[&str]) -> Process {
    let mut cmd = sluice_agent();
    cmd.arg("run")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Process::spawn(&mut cmd)
}

/// Makes a git repository with a `main` branch and the given files committed.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "Initial commit"]);
    dir.to_owned()
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Runs `git ARGS` in `repo` (committing as "T"), which must succeed; returns its
/// trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A git repository in `dir` whose `v.txt` says "one" in its first commit and "two"
/// in its second ("Second", the head of `main`); returns (repo, first commit, second).
pub fn two_commit_repo(dir: &Path) -> (PathBuf, String, String) {
    let repo = git_repo(dir, &[("v.txt", "one\n")]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("v.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-qam", "Second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    (repo, first, second)
}

/// The pipeline definition most tests use: a Source stage followed by the stages added
/// with [`Pipeline::build`] and [`Pipeline::stage`], written to `DIR/NAME.yaml`.
///
/// The Source stage has one action: by default `Snapshot` (provider `directory`) over
/// a fresh directory `DIR/NAME-src` holding `a.txt`; with [`Pipeline::git_source`],
/// `Checkout` (provider `git`, namespace `Src`). Either way its output artifact is
/// `Code`, which the stages added with `build` take as input.
#[derive(Clone, Debug)]
pub struct Pipeline {
    name: String,
    header: String,
    source: Source,
    stages: String,
}

/// Where a [`Pipeline`]'s Source stage takes its files from.
#[derive(Clone, Debug)]
enum Source {
    /// A fresh `NAME-src` directory holding this one file (name, contents).
    Fresh(String, String),
    /// An existing directory, used as it is.
    Directory(PathBuf),
    /// A git repository.
    Git(PathBuf),
}

impl Pipeline {
    /// A pipeline called `name` with no stages after Source yet.
    pub fn new(name: &str) -> Pipeline {
        Pipeline {
            name: name.to_string(),
            header: String::new(),
            source: Source::Fresh("a.txt".into(), "a\n".into()),
            stages: String::new(),
        }
    }

    /// Adds top-level YAML to put before `stages:` (such as `executionMode: QUEUED`,
    /// `variables`, `triggers`).
    pub fn header(mut self, yaml: &str) -> Pipeline {
        self.header.push_str(yaml);
        if !self.header.is_empty() && !self.header.ends_with('\n') {
            self.header.push('\n');
        }
        self
    }

    /// The fresh source directory holds this file instead of `a.txt`.
    pub fn source_file(mut self, name: &str, contents: &str) -> Pipeline {
        self.source = Source::Fresh(name.to_string(), contents.to_string());
        self
    }

    /// Snapshots the existing directory `path` instead of a fresh one.
    pub fn source_dir(mut self, path: &Path) -> Pipeline {
        self.source = Source::Directory(path.to_owned());
        self
    }

    /// Checks out the git repository `repo` (action `Checkout`, namespace `Src`)
    /// instead of snapshotting a directory.
    pub fn git_source(mut self, repo: &Path) -> Pipeline {
        self.source = Source::Git(repo.to_owned());
        self
    }

    /// Adds stage `stage` with one Build action `action` (provider `commands`) that
    /// runs `commands` (written in double quotes: no `"` or `\` in it) on `Code`.
    pub fn build(self, stage: &str, action: &str, commands: &str) -> Pipeline {
        let yaml = build_stage(stage, action, commands);
        self.stage(&yaml)
    }

    /// Adds stages written as YAML list items (indented by two spaces).
    pub fn stage(mut self, yaml: &str) -> Pipeline {
        self.stages.push_str(yaml);
        if !self.stages.ends_with('\n') {
            self.stages.push('\n');
        }
        self
    }

    /// Writes `dir/NAME.yaml` (and the fresh source directory, if any); returns the
    /// file's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let name = &self.name;
        let source = match &self.source {
            Source::Fresh(file, contents) => {
                let source = dir.join(format!("{name}-src"));
                std::fs::create_dir_all(&source).unwrap();
                std::fs::write(source.join(file), contents).unwrap();
                snapshot(&source)
            }
            Source::Directory(path) => snapshot(path),
            Source::Git(repo) => format!(
                "      - name: Checkout
        actionTypeId: {{category: Source, provider: git}}
        namespace: Src
        configuration: {{RepositoryPath: {}}}
        outputArtifacts: [Code]
",
                repo.display()
            ),
        };
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}\n{}stages:\n  - name: Source\n    actions:\n{source}{}",
                self.header, self.stages
            ),
        )
        .unwrap();
        file
    }
}

/// YAML for a `directory` Source action `Snapshot` of `path` (output `Code`).
fn snapshot(path: &Path) -> String {
    format!(
        "      - name: Snapshot
        actionTypeId: {{category: Source, provider: directory}}
        configuration: {{Path: {}}}
        outputArtifacts: [Code]
",
        path.display()
    )
}

/// YAML for a stage `stage` with one Build action `action` (provider `commands`)
/// running `commands` on the `Code` artifact (see [`Pipeline::build`]).
pub fn build_stage(stage: &str, action: &str, commands: &str) -> String {
    format!(
        r#"  - name: {stage}
    actions:
      - name: {action}
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "{commands}"}}
        inputArtifacts: [Code]
"#
    )
}

/// A stage `Build` whose action `Flood` prints a 52.4 MB log: 720,000 lines
/// `line N ok the quick brown fox...`, `ok` in green (an ANSI colour), about 73 bytes
/// each. Printed line N is log line N + 3 (the agent writes three lines first).
pub const BIG_LOG_STAGE: &str = r#"  - name: Build
    actions:
      - name: Flood
        actionTypeId: {category: Build, provider: commands}
        inputArtifacts: [Code]
        configuration:
          Commands: |
            esc=$(printf '\033')
            seq -f "line %.0f ${esc}[32mok${esc}[0m the quick brown fox jumps over the lazy dog 0123" 1 720000
"#;

/// Writes the most common pipeline: a directory Source stage (`Snapshot` over a fresh
/// `DIR/NAME-src` holding `a.txt`) and a `Build` stage whose one action `Work` runs
/// `commands`. Returns the definition's path (`DIR/NAME.yaml`).
pub fn source_and_build(dir: &Path, name: &str, commands: &str) -> PathBuf {
    Pipeline::new(name)
        .build("Build", "Work", commands)
        .write(dir)
}

/// A response to an [`ApiClient`] request: status, headers and body.
pub type Answer = (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>);

/// A blocking HTTPS client for one controller: it trusts only the controller's CA,
/// knows the CLI's API token and runs each request on its own runtime, with a 30 s
/// timeout.
pub struct ApiClient {
    /// The controller's URL.
    pub url: String,
    /// The API token of the CLI's client config.
    pub token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ApiClient {
    /// A client for `controller`.
    pub fn new(controller: &Controller) -> ApiClient {
        ApiClient {
            url: controller.url.clone(),
            token: controller.api_token(),
            client: controller.https_client(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    /// Sends `method path` with `headers` and a raw `body` (its content type, if any,
    /// among the headers). A `text/event-stream` body is not read (the stream stays
    /// open): the answer's body is empty.
    pub fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        self.runtime.block_on(async {
            let mut request = self
                .client
                .request(method, format!("{}{path}", self.url))
                .timeout(Duration::from_secs(30));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.body(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let streaming = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if streaming {
                return (status, headers, Vec::new());
            }
            (status, headers, response.bytes().await.unwrap().to_vec())
        })
    }

    /// Sends `method path` with `headers` and, if given, a JSON body (with its content
    /// type).
    pub fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut headers = headers.to_vec();
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send_raw(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
    }

    /// Sends `method path` (with the API token if `token`) and a body given as (content
    /// type, bytes); returns the status, the content type and the body as text.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: bool,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, String, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let bearer = format!("Bearer {}", self.token);
        let mut headers = Vec::new();
        if token {
            headers.push(("authorization", bearer.as_str()));
        }
        let (content_type, bytes) = match body {
            Some((content_type, bytes)) => (Some(content_type), Some(bytes)),
            None => (None, None),
        };
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let (status, headers, body) = self.send_raw(method, path, &headers, bytes);
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            status.as_u16(),
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// An HTTP server on 127.0.0.1 whose URL path is `path`: it calls `handle` with each
/// request's header lines (lower-cased) and body, and answers with the status `handle`
/// returns and no body. A request whose body cannot be read whole gets no answer.
/// Returns the server's URL.
pub fn http_receiver(
    path: &str,
    mut handle: impl FnMut(&[String], Vec<u8>) -> u16 + Send + 'static,
) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut headers, mut length) = (Vec::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let line = line.to_ascii_lowercase();
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push(line.trim_end().to_string());
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let status = handle(&headers, body);
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
        }
    });
    url
}
