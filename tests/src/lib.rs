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

/// The directory holding the built binaries.
///
/// `cargo test --workspace` (the README's test command) builds `sluice` and
/// `sluice-agent` before running any test. A narrower run such as
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
    Command::new(bin_dir().join("sluice-agent"))
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
}

impl Process {
    fn spawn(cmd: &mut Command) -> Process {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Process {
            child: cmd.spawn().expect("spawn"),
            killed: false,
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

    /// Waits for the process to exit, up to `timeout`, and returns its stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let status = wait_for("the process to exit", timeout, || self.try_wait());
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
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
        let pem = std::fs::read(self.data_dir.join("tls").join("ca.crt")).unwrap();
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

    /// Joins a new agent into `state_dir`.
    pub fn join_agent(&self, state_dir: &Path, labels: &str) {
        let (token, fingerprint) = self.join_token(labels, "10m");
        ok(sluice_agent()
            .args([
                "join",
                "--controller",
                &self.url,
                "--token",
                &token,
                "--ca-fingerprint",
                &fingerprint,
            ])
            .arg("--state-dir")
            .arg(state_dir));
    }

    /// `sluice pipeline create FILE`, which must succeed.
    pub fn create_pipeline(&self, definition: &Path) {
        ok(self.cli().args(["pipeline", "create"]).arg(definition));
    }

    /// `sluice pipeline start NAME`; returns the execution id.
    pub fn start_pipeline(&self, name: &str) -> String {
        ok(self.cli().args(["pipeline", "start", name]))
            .trim()
            .to_string()
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
    let controller = Controller::start(root, 0, flags);
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
