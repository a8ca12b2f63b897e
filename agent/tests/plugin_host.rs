//! The plugin host against the real built-in plugins, real git repositories and real
//! processes. The `test-probe` plugin (plugins/test-probe, built but not embedded)
//! misbehaves on request to exercise the sandbox.

mod common;
use common::{cache_dir, failed, succeeded, tree};

use sluice_agent::plugin_host::{LoadSource, LoadedPlugin, PluginHost, RunOutcome, RunRequest};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// One host shared by all tests: built-ins plus the probe.
fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut host = common::builtin_host();
        host.load("test-probe", &probe_manifest(), &probe_wasm())
            .expect("probe plugin");
        host
    })
}

fn probe_manifest() -> String {
    std::fs::read_to_string(env!("SLUICE_TEST_PLUGIN_TEST_PROBE_MANIFEST")).expect("manifest")
}

fn probe_wasm() -> Vec<u8> {
    std::fs::read(env!("SLUICE_TEST_PLUGIN_TEST_PROBE_WASM")).expect("wasm")
}

fn plugin(category: &str, provider: &str) -> Arc<LoadedPlugin> {
    host()
        .find(category, provider, "1")
        .unwrap_or_else(|| panic!("no plugin for {category}/{provider}/1"))
}

fn probe() -> Arc<LoadedPlugin> {
    plugin("Invoke", "sluice-test-probe")
}

/// An action workspace with optional input artifacts.
struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates input artifact `name` and returns its directory.
    fn input(&self, name: &str) -> PathBuf {
        let dir = self.path().join("inputs").join(name);
        std::fs::create_dir_all(&dir).expect("input dir");
        dir
    }

    fn output(&self, name: &str) -> PathBuf {
        self.path().join("outputs").join(name)
    }

    fn request(
        &self,
        category: &str,
        config: &[(&str, &str)],
        inputs: &[&str],
        outputs: &[&str],
    ) -> RunRequest {
        RunRequest {
            workspace: self.path().to_path_buf(),
            pipeline: "shop".to_string(),
            execution_id: "exec-1".to_string(),
            stage: "Build".to_string(),
            action: "Compile".to_string(),
            category: category.to_string(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(60),
            ..Default::default()
        }
    }
}

/// Runs an action and returns its outcome and its log.
async fn run(plugin: &LoadedPlugin, request: RunRequest) -> (RunOutcome, String) {
    common::run_on(host(), plugin, request).await
}

fn sh(cwd: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", cwd)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn source_directory_copies_modes_and_symlinks_and_digests_them() {
    let src = tempfile::tempdir().expect("tempdir");
    sh(
        src.path(),
        "echo hello > hello.txt
         printf '#!/bin/sh\\necho built\\n' > build.sh && chmod 755 build.sh
         ln -s hello.txt greeting
         mkdir -p nested/empty && echo secret > nested/.hidden && chmod 600 nested/.hidden",
    );
    let path = src.path().to_str().expect("utf-8");

    let digest_of = |ws: &Workspace| {
        let request = ws.request("Source", &[("Path", path)], &[], &["SourceOut"]);
        async move {
            let (outcome, log) = run(&plugin("Source", "directory"), request).await;
            let (_, vars) = succeeded(outcome, &log);
            vars["Digest"].clone()
        }
    };
    let ws = Workspace::new();
    let digest = digest_of(&ws).await;
    let out = ws.output("SourceOut");
    assert_eq!(
        tree(&out),
        [
            "build.sh",
            "greeting",
            "hello.txt",
            "nested/",
            "nested/.hidden",
            "nested/empty/"
        ]
    );
    assert_eq!(mode(&out.join("build.sh")), 0o755);
    assert_eq!(mode(&out.join("nested/.hidden")), 0o600);
    assert_eq!(
        std::fs::read_link(out.join("greeting")).expect("link"),
        Path::new("hello.txt")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("nested/.hidden")).expect("read"),
        "secret\n"
    );
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));

    // Same content, same digest; a mode change alone changes it.
    assert_eq!(digest_of(&Workspace::new()).await, digest);
    sh(src.path(), "chmod 700 build.sh");
    assert_ne!(digest_of(&Workspace::new()).await, digest);

    // A missing directory is named.
    let ws = Workspace::new();
    let request = ws.request(
        "Source",
        &[("Path", "/nonexistent/sluice")],
        &[],
        &["SourceOut"],
    );
    let (outcome, log) = run(&plugin("Source", "directory"), request).await;
    let message = failed(outcome, &log);
    assert!(
        message.starts_with("cannot read directory /nonexistent/sluice"),
        "{message}"
    );
}

#[tokio::test]
async fn build_commands_runs_in_one_shell_and_packs_output_paths() {
    let ws = Workspace::new();
    let src = ws.input("SourceOut");
    std::fs::write(src.join("input.txt"), "from source\n").expect("write");
    let commands = "echo hello-from-build
        cd sub 2>/dev/null || mkdir sub
        VALUE=carried
        echo \"value is $VALUE\"
        mkdir -p dist/js && cp input.txt dist/js/app.js
        echo report > report.txt
        echo not-packed > scratch.txt
        echo to-stderr >&2
        echo \"env: $SLUICE_PIPELINE/$SLUICE_EXECUTION_ID/$SLUICE_STAGE/$SLUICE_ACTION home=$HOME\"
        test \"$SLUICE_SRC_DIR\" = \"$PWD\" && echo src-dir-ok
        echo \"inherited: ${CARGO:-none}\"";
    let request = ws.request(
        "Build",
        &[
            ("Commands", commands),
            ("OutputPaths", "dist\nreport.txt, dist/js/app.js"),
        ],
        &["SourceOut"],
        &["BuildOut"],
    );
    let (outcome, log) = run(&plugin("Build", "commands"), request).await;
    let (summary, _) = succeeded(outcome, &log);
    assert!(summary.contains("packed 3 output path(s)"), "{summary}");

    let out = ws.output("BuildOut");
    assert_eq!(
        tree(&out),
        ["dist/", "dist/js/", "dist/js/app.js", "report.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("dist/js/app.js")).expect("read"),
        "from source\n"
    );
    for line in [
        "hello-from-build\n",
        "value is carried\n",
        "to-stderr\n",
        "src-dir-ok\n",
        "inherited: none\n",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
    let ws_path = ws.path().canonicalize().expect("canonical");
    assert!(
        log.contains(&format!(
            "env: shop/exec-1/Build/Compile home={}\n",
            ws_path.display()
        )),
        "{log}"
    );

    // The same plugin serves Test, but not Deploy.
    assert!(host().find("Test", "commands", "1").is_some());
    let ws = Workspace::new();
    let request = ws.request("Deploy", &[("Commands", "true")], &[], &[]);
    let (outcome, log) = run(&plugin("Build", "commands"), request).await;
    assert_eq!(
        failed(outcome, &log),
        "plugin build-commands does not serve category \"Deploy\" (it serves Build, Test)"
    );
}

#[tokio::test]
async fn build_commands_fails_on_a_non_zero_exit_with_the_status() {
    let ws = Workspace::new();
    ws.input("SourceOut");
    let request = ws.request(
        "Build",
        &[(
            "Commands",
            "echo step one\necho 'compile error: missing semicolon' >&2\nexit 3\necho never",
        )],
        &["SourceOut"],
        &[],
    );
    let (outcome, log) = run(&plugin("Build", "commands"), request).await;
    assert_eq!(
        failed(outcome, &log),
        "command exited with status 3: compile error: missing semicolon"
    );
    assert!(log.contains("step one\n"));
    assert!(!log.contains("never"));
}

#[tokio::test]
async fn build_commands_names_a_missing_output_path() {
    let ws = Workspace::new();
    ws.input("SourceOut");
    let request = ws.request(
        "Build",
        &[
            ("Commands", "mkdir -p dist"),
            ("OutputPaths", "dist, target/app"),
        ],
        &["SourceOut"],
        &["BuildOut"],
    );
    let (outcome, log) = run(&plugin("Build", "commands"), request).await;
    let message = failed(outcome, &log);
    assert!(
        message.starts_with("output path target/app does not exist after the commands ran"),
        "{message}"
    );
}

#[tokio::test]
async fn build_commands_streams_output_while_it_runs() {
    let ws = Workspace::new();
    ws.input("SourceOut");
    let request = ws.request(
        "Build",
        &[("Commands", "echo first-line\nsleep 2\necho second-line")],
        &["SourceOut"],
        &[],
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let plugin = plugin("Build", "commands");
    let task = tokio::spawn(async move { host().run(&plugin, request, tx).await });

    let started = Instant::now();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a log line within 10 s")
            .expect("log open");
        if chunk == b"first-line\n" {
            break;
        }
    }
    assert!(
        !task.is_finished(),
        "the first line must arrive while the commands still run"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let outcome = task.await.expect("join");
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    let mut rest = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("second-line\n"));
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn live_processes_in_group(pgid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            found.push(stat);
        }
    }
    found
}

#[tokio::test]
async fn a_timeout_fails_the_action_and_kills_the_process_group() {
    let ws = Workspace::new();
    let src = ws.input("SourceOut");
    let mut request = ws.request(
        "Build",
        &[("Commands", "echo $$ > shell.pid\nsleep 30")],
        &["SourceOut"],
        &[],
    );
    request.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let (outcome, log) = run(&plugin("Build", "commands"), request).await;
    let elapsed = started.elapsed();
    assert_eq!(failed(outcome, &log), "timed out after 1s");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "took {elapsed:?}"
    );
    println!("sleep 30 with a 1 s timeout ended after {elapsed:?}");

    let pgid: u32 = std::fs::read_to_string(src.join("shell.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let mut left = live_processes_in_group(pgid);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = live_processes_in_group(pgid);
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test]
async fn a_program_that_was_not_granted_is_refused_by_name() {
    // build-commands as an operator would grant it: without `sh`.
    let full = plugin("Build", "commands");
    let mut grants = full.grants.clone();
    grants.programs.retain(|p| p != "sh");
    let restricted = full.with_grants(grants);

    let ws = Workspace::new();
    ws.input("SourceOut");
    let request = ws.request("Build", &[("Commands", "echo hi")], &["SourceOut"], &[]);
    let (outcome, log) = run(&restricted, request).await;
    assert_eq!(
        failed(outcome, &log),
        "program \"sh\" is not granted to plugin build-commands; granted: cp"
    );

    let ws = Workspace::new();
    let request = ws.request(
        "Invoke",
        &[
            ("Mode", "exec"),
            ("Program", "cat"),
            ("Args", "/etc/passwd"),
        ],
        &[],
        &[],
    );
    let (outcome, log) = run(&probe(), request).await;
    assert_eq!(
        failed(outcome, &log),
        "program \"cat\" is not granted to plugin test-probe; granted: sh, echo"
    );
}

#[tokio::test]
async fn a_working_directory_outside_the_workspace_is_refused() {
    for (cwd, expected) in [
        (
            "/workspace/../..",
            "working directory \"/workspace/../..\" escapes /workspace",
        ),
        (
            "/workspace/tmp/../../etc",
            "working directory \"/workspace/tmp/../../etc\" escapes /workspace",
        ),
        ("/etc", "working directory \"/etc\" is outside /workspace"),
    ] {
        let ws = Workspace::new();
        let request = ws.request(
            "Invoke",
            &[
                ("Mode", "exec"),
                ("Program", "sh"),
                ("Args", "-c\npwd"),
                ("Cwd", cwd),
            ],
            &[],
            &[],
        );
        let (outcome, log) = run(&probe(), request).await;
        assert_eq!(failed(outcome, &log), expected);
    }

    // Inside is fine, and /workspace paths in args are translated.
    let ws = Workspace::new();
    let request = ws.request(
        "Invoke",
        &[
            ("Mode", "exec"),
            ("Program", "echo"),
            ("Args", "/workspace/tmp"),
            ("Cwd", "/workspace/tmp/"),
        ],
        &[],
        &[],
    );
    let (outcome, log) = run(&probe(), request).await;
    let (summary, _) = succeeded(outcome, &log);
    let tmp = ws.path().canonicalize().expect("canonical").join("tmp");
    assert_eq!(summary, format!("exit 0: {}", tmp.display()));
}

#[tokio::test]
async fn the_guest_sees_only_its_workspace() {
    let ws = Workspace::new();
    let request = ws.request(
        "Invoke",
        &[("Mode", "read"), ("Cwd", "/etc/passwd")],
        &[],
        &[],
    );
    let (outcome, log) = run(&probe(), request).await;
    let message = failed(outcome, &log);
    assert!(message.starts_with("cannot read /etc/passwd:"), "{message}");

    let ws = Workspace::new();
    let request = ws.request(
        "Invoke",
        &[("Mode", "read"), ("Cwd", "/workspace/../../../etc/passwd")],
        &[],
        &[],
    );
    let (outcome, log) = run(&probe(), request).await;
    let message = failed(outcome, &log);
    assert!(
        message.starts_with("cannot read /workspace/../../../etc/passwd:"),
        "{message}"
    );
}

/// An input artifact may carry symlinks (artifacts keep them). Links that point out of
/// the workspace must not let the guest read what they point at.
#[tokio::test]
async fn symlinks_planted_in_an_input_artifact_do_not_escape_the_workspace() {
    let ws = Workspace::new();
    let evil = ws.input("Evil");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "top secret").expect("write");
    std::os::unix::fs::symlink("/etc/passwd", evil.join("absolute")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), evil.join("to-secret"))
        .expect("symlink");
    std::os::unix::fs::symlink("../../..", evil.join("up")).expect("symlink");
    std::fs::write(evil.join("fine.txt"), "inside").expect("write");
    for path in [
        "/workspace/inputs/Evil/absolute",
        "/workspace/inputs/Evil/to-secret",
        "/workspace/inputs/Evil/up/etc/passwd",
    ] {
        let request = ws.request("Invoke", &[("Mode", "read"), ("Cwd", path)], &["Evil"], &[]);
        let (outcome, log) = run(&probe(), request).await;
        let message = failed(outcome, &log);
        assert!(
            message.starts_with(&format!("cannot read {path}:")),
            "{message}"
        );
    }
    // A file inside the workspace still reads fine.
    let request = ws.request(
        "Invoke",
        &[("Mode", "read"), ("Cwd", "/workspace/inputs/Evil/fine.txt")],
        &["Evil"],
        &[],
    );
    let (outcome, log) = run(&probe(), request).await;
    assert_eq!(succeeded(outcome, &log).0, "read 6 bytes");
}

/// Cancelling an action (dropping its run, as the agent does on Cancel) kills the
/// programs it started, with their whole process group.
#[tokio::test]
async fn cancelling_a_run_kills_its_process_group() {
    let ws = Workspace::new();
    let marker = format!("sluice-cancel-{}", std::process::id());
    let request = ws.request(
        "Build",
        &[(
            "Commands",
            &format!("echo started; sh -c 'sleep 30; echo {marker}' & sleep 30"),
        )],
        &["Src"],
        &[],
    );
    ws.input("Src");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let plugin = plugin("Build", "commands");
    let task = tokio::spawn(async move { host().run(&plugin, request, tx).await });
    // Wait until the commands are running.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("started") {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(chunk)) => seen.extend_from_slice(&chunk),
            other => panic!("the commands never started: {other:?}"),
        }
    }
    let shells = processes_with_arg(&marker);
    assert!(!shells.is_empty(), "the background shell should be running");
    task.abort();
    let _ = task.await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !processes_with_arg(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes survived the cancel: {:?}",
            processes_with_arg(&marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_with_arg(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if !zombie
            && String::from_utf8_lossy(&cmdline).contains(needle)
            && pid != std::process::id()
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn a_panic_a_busy_loop_an_exit_and_a_memory_hog_fail_the_action_only() {
    let run_probe = |mode: &str, timeout: Duration| {
        let ws = Workspace::new();
        let mut request = ws.request("Invoke", &[("Mode", mode)], &[], &[]);
        request.timeout = timeout;
        async move {
            let started = Instant::now();
            let (outcome, log) = run(&probe(), request).await;
            drop(ws);
            (failed(outcome, &log), started.elapsed(), log)
        }
    };

    let (message, _, log) = run_probe("panic", Duration::from_secs(60)).await;
    // The guest's own stderr also went to the action log.
    assert!(log.contains("about to panic\n"), "{log}");
    assert!(
        message.starts_with("plugin test-probe crashed: wasm trap"),
        "{message}"
    );
    assert!(message.contains("about to panic"), "{message}");
    assert!(
        message.contains("the probe panicked on purpose"),
        "{message}"
    );

    let (message, elapsed, _) = run_probe("loop", Duration::from_millis(500)).await;
    assert_eq!(message, "timed out after 500ms");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    // std::process::exit(7): WASI p2's stable `exit` carries only ok/err, so 7 arrives as 1.
    let (message, _, _) = run_probe("exit", Duration::from_secs(60)).await;
    assert_eq!(
        message,
        "plugin test-probe exited with status 1 instead of returning a result"
    );

    let (message, _, _) = run_probe("alloc", Duration::from_secs(60)).await;
    assert!(message.contains("growing memory"), "{message}");
    assert!(message.contains("the memory limit is 256 MiB"), "{message}");

    // The host is still fine.
    let ws = Workspace::new();
    let request = ws.request("Invoke", &[("Mode", "noop")], &[], &[]);
    let (outcome, log) = run(&probe(), request).await;
    succeeded(outcome, &log);
}

#[tokio::test]
async fn output_variables_are_checked_against_their_limits() {
    for (name, size, expected) in [
        ("Ok_name-1", "10", None),
        (
            "bad name",
            "1",
            Some("output variable name \"bad name\" is not valid"),
        ),
        (
            "Big",
            "102401",
            Some("output variable Big is 102401 bytes; the limit is 102400 bytes"),
        ),
    ] {
        let ws = Workspace::new();
        let request = ws.request(
            "Invoke",
            &[("Mode", "var"), ("Name", name), ("Size", size)],
            &[],
            &[],
        );
        let (outcome, log) = run(&probe(), request).await;
        match expected {
            None => {
                let (_, vars) = succeeded(outcome, &log);
                assert_eq!(vars[name], "v".repeat(10));
            }
            Some(prefix) => {
                let message = failed(outcome, &log);
                assert!(message.starts_with(prefix), "{message}");
            }
        }
    }

    // Unknown configuration keys are refused before the plugin runs.
    let ws = Workspace::new();
    let request = ws.request("Invoke", &[("Mode", "noop"), ("Colour", "red")], &[], &[]);
    let (outcome, log) = run(&probe(), request).await;
    let message = failed(outcome, &log);
    assert!(
        message.starts_with("invalid configuration: unknown configuration key Colour"),
        "{message}"
    );
}

/// Deploys `version` (files a.txt..z.txt all holding it) as execution `id`.
async fn deploy(target: &Path, id: &str, version: &str, extra: Option<&str>) -> RunOutcome {
    let ws = Workspace::new();
    let input = ws.input("BuildOut");
    for c in 'a'..='z' {
        std::fs::write(input.join(format!("{c}.txt")), version).expect("write");
    }
    if let Some(extra) = extra {
        std::fs::write(input.join(extra), version).expect("write");
    }
    let mut request = ws.request(
        "Deploy",
        &[("TargetDirectory", target.to_str().expect("utf-8"))],
        &["BuildOut"],
        &[],
    );
    request.execution_id = id.to_string();
    run(&plugin("Deploy", "directory"), request).await.0
}

#[tokio::test]
async fn deploy_directory_switches_releases_atomically() {
    let root = tempfile::tempdir().expect("tempdir");
    let target = root.path().join("site");
    let releases = root.path().join("site.sluice/releases");

    let outcome = deploy(&target, "exec-1", "v1", Some("only-in-v1.txt")).await;
    let (_, vars) = succeeded(outcome, "");
    assert_eq!(
        std::fs::read_link(&target).expect("symlink"),
        Path::new("site.sluice/releases/exec-1")
    );
    assert_eq!(
        vars["DeployedPath"],
        releases.join("exec-1").to_str().expect("utf-8")
    );
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).expect("read"),
        "v1"
    );
    assert!(target.join("only-in-v1.txt").is_file());

    // Readers resolve the symlink once and must always find a complete release.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let target = target.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut checks = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let real = std::fs::canonicalize(&target).expect("target resolves");
                let first = std::fs::read_to_string(real.join("a.txt")).expect("a.txt");
                for c in 'b'..='z' {
                    let other = std::fs::read_to_string(real.join(format!("{c}.txt")))
                        .unwrap_or_else(|e| panic!("{c}.txt missing in {}: {e}", real.display()));
                    assert_eq!(other, first, "mixed release in {}", real.display());
                }
                checks += 1;
            }
            checks
        })
    };

    let outcome = deploy(&target, "exec-2", "v2", None).await;
    succeeded(outcome, "");
    assert_eq!(
        std::fs::read_link(&target).expect("symlink"),
        Path::new("site.sluice/releases/exec-2")
    );
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).expect("read"),
        "v2"
    );
    assert!(
        !target.join("only-in-v1.txt").exists(),
        "v1's files are gone from the view"
    );

    // Five more deployments: only the newest five releases stay.
    for i in 3..=7 {
        succeeded(
            deploy(&target, &format!("exec-{i}"), &format!("v{i}"), None).await,
            "",
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = reader.join().expect("reader saw only complete releases");
    assert!(checks > 0);
    let mut kept: Vec<String> = std::fs::read_dir(&releases)
        .expect("releases")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["exec-3", "exec-4", "exec-5", "exec-6", "exec-7"]);
    assert_eq!(
        std::fs::read_to_string(target.join("z.txt")).expect("read"),
        "v7"
    );

    // A retried attempt of the same execution gets its own release.
    succeeded(deploy(&target, "exec-7", "v7b", None).await, "");
    assert_eq!(
        std::fs::read_link(&target).expect("symlink"),
        Path::new("site.sluice/releases/exec-7-2")
    );
}

#[tokio::test]
async fn deploy_directory_keeps_as_many_releases_as_configured() {
    let root = tempfile::tempdir().expect("tempdir");
    let target = root.path().join("site");
    let target_text = target.to_str().expect("utf-8").to_string();
    for i in 1..=4 {
        let ws = Workspace::new();
        std::fs::write(ws.input("BuildOut").join("a.txt"), format!("v{i}")).expect("write");
        let mut request = ws.request(
            "Deploy",
            &[("TargetDirectory", &target_text), ("KeepReleases", "2")],
            &["BuildOut"],
            &[],
        );
        request.execution_id = format!("exec-{i}");
        let (outcome, log) = run(&plugin("Deploy", "directory"), request).await;
        succeeded(outcome, &log);
    }
    let mut kept: Vec<String> = std::fs::read_dir(root.path().join("site.sluice/releases"))
        .expect("releases")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["exec-3", "exec-4"]);

    // A value that is not a whole number is refused before anything is touched.
    let ws = Workspace::new();
    ws.input("BuildOut");
    let request = ws.request(
        "Deploy",
        &[("TargetDirectory", &target_text), ("KeepReleases", "all")],
        &["BuildOut"],
        &[],
    );
    let (outcome, log) = run(&plugin("Deploy", "directory"), request).await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("KeepReleases: \"all\" is not a whole number"),
        "{message}"
    );
}

#[tokio::test]
async fn deploy_directory_leaves_a_real_directory_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let target = root.path().join("site");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("index.html"), "hand-made").expect("write");
    let message = failed(deploy(&target, "exec-1", "v1", None).await, "");
    let t = target.display();
    assert!(
        message.starts_with(&format!("TargetDirectory {t} exists and is not a symlink")),
        "{message}"
    );
    assert!(message.contains(&format!("mv {t} {t}.old")), "{message}");
    assert_eq!(
        std::fs::read_to_string(target.join("index.html")).expect("read"),
        "hand-made"
    );
}

#[test]
fn builtin_manifests_are_what_the_executor_expects() {
    let host = host();
    let git = host.find("Source", "git", "1").expect("source-git");
    assert_eq!(git.manifest.id, "source-git");
    assert!(git.manifest.idempotent);
    assert_eq!(git.manifest.capabilities.programs, ["git", "tar"]);
    assert_eq!(git.grants.programs, ["git", "tar"]);
    let deploy = host
        .find("Deploy", "directory", "1")
        .expect("deploy-directory");
    assert!(!deploy.manifest.idempotent);
    assert!(host.find("Source", "directory", "1").is_some());
    assert!(host.find("Build", "commands", "2").is_none());
    assert!(host.find("Approval", "commands", "1").is_none());
    assert!(sluice_agent::builtin::all().len() >= 5);
    assert!(
        sluice_agent::builtin::all()
            .iter()
            .all(|b| b.wasm.starts_with(b"\0asm"))
    );
}

#[test]
fn a_plugin_that_imports_sockets_is_refused_at_load() {
    let mut host = PluginHost::new(&cache_dir()).expect("host");
    let manifest =
        std::fs::read_to_string(env!("SLUICE_TEST_PLUGIN_TEST_NET_MANIFEST")).expect("manifest");
    let wasm = std::fs::read(env!("SLUICE_TEST_PLUGIN_TEST_NET_WASM")).expect("wasm");
    let err = host
        .load("test-net", &manifest, &wasm)
        .expect_err("a plugin importing wasi:sockets must be refused");
    let text = err.to_string();
    assert!(
        text.starts_with("plugin test-net imports wasi:sockets/"),
        "{text}"
    );
    assert!(text.contains("plugins get no network access"), "{text}");
    assert!(host.find("Invoke", "sluice-test-net", "1").is_none());

    // Capabilities this host does not know yet are refused, not ignored.
    let manifest = probe_manifest().replace(
        "[capabilities]",
        "[capabilities]\nsockets = [\"example.com:80\"]",
    );
    let err = host
        .load("test-probe", &manifest, &probe_wasm())
        .expect_err("unknown capability");
    let text = err.to_string();
    assert!(
        text.starts_with("plugin test-probe: invalid plugin.toml:"),
        "{text}"
    );
    assert!(text.contains("sockets"), "{text}");
}

#[test]
fn compile_versus_cached_load_times() {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cold = PluginHost::new(cache.path()).expect("host");
    let started = Instant::now();
    cold.load_builtins().expect("load");
    let cold_total = started.elapsed();
    let mut warm = PluginHost::new(cache.path()).expect("host");
    let started = Instant::now();
    warm.load_builtins().expect("load");
    let warm_total = started.elapsed();

    println!(
        "plugin load times ({} build of the agent; pooling allocator: {}):",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cold.uses_pooling_allocator()
    );
    for (c, w) in cold.plugins().iter().zip(warm.plugins()) {
        assert_eq!(c.load_source(), LoadSource::Compiled);
        assert_eq!(w.load_source(), LoadSource::Cached);
        assert_eq!(c.digest(), w.digest());
        println!(
            "  {:<18} {:>7} B wasm  compile {:>9.2?}  cached load {:>9.2?}",
            c.manifest.id,
            sluice_agent::builtin::all()
                .iter()
                .find(|b| b.id == c.manifest.id)
                .map_or(0, |b| b.wasm.len()),
            c.load_time(),
            w.load_time()
        );
    }
    println!("  all built-ins: cold {cold_total:.2?}, cached {warm_total:.2?}");

    // A trivial action end to end (fresh store + instance + call + drop), for scale.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let noop = {
        let mut h = warm.clone();
        h.load("test-probe", &probe_manifest(), &probe_wasm())
            .expect("probe")
    };
    let ws = Workspace::new();
    let request = ws.request("Invoke", &[("Mode", "noop")], &[], &[]);
    let n = 200u32;
    let (tx, _rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    for _ in 0..n {
        let outcome = rt.block_on(warm.run(&noop, request.clone(), tx.clone()));
        assert!(matches!(outcome, RunOutcome::Succeeded { .. }));
    }
    println!(
        "  noop action via PluginHost::run: {:.2?} each (n={n})",
        started.elapsed() / n
    );
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `response`;
/// returns its port and a counter of requests served.
fn http_server(response: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (port, served)
}

#[tokio::test]
async fn http_reaches_only_granted_hosts_and_follows_no_redirect_off_them() {
    let (port, served) =
        http_server("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
    let url = format!("http://127.0.0.1:{port}/ping");
    let ws = Workspace::new();

    // Not granted: refused before any connection, naming the capability.
    let (outcome, log) = run(
        &probe(),
        ws.request("Invoke", &[("Mode", "http"), ("Program", &url)], &[], &[]),
    )
    .await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("host 127.0.0.1 is not granted to plugin test-probe: it needs the capability host:127.0.0.1"),
        "{message}"
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Granted for another port only: still refused.
    let grants = |hosts: &[&str]| sluice_proto::Grants {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..probe().grants.clone()
    };
    let other_port = probe().with_grants(grants(&["127.0.0.1:1"]));
    let (outcome, log) = run(
        &other_port,
        ws.request("Invoke", &[("Mode", "http"), ("Program", &url)], &[], &[]),
    )
    .await;
    assert!(failed(outcome, &log).contains("needs the capability host:127.0.0.1"));

    // Granted: the answer comes back.
    let granted = probe().with_grants(grants(&["127.0.0.1"]));
    let (outcome, log) = run(
        &granted,
        ws.request("Invoke", &[("Mode", "http"), ("Program", &url)], &[], &[]),
    )
    .await;
    let (summary, _) = succeeded(outcome, &log);
    assert_eq!(summary, "status 200: hello");

    // A redirect to a host that is not granted is handed back, never followed.
    let (redirect_port, _) = http_server(
        "HTTP/1.1 302 Found\r\nlocation: http://example.com/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let (outcome, log) = run(
        &granted,
        ws.request(
            "Invoke",
            &[
                ("Mode", "http"),
                ("Program", &format!("http://127.0.0.1:{redirect_port}/")),
            ],
            &[],
            &[],
        ),
    )
    .await;
    let (summary, _) = succeeded(outcome, &log);
    assert_eq!(summary, "status 302: ");
}

#[tokio::test]
async fn environment_variables_and_secrets_are_read_only_when_granted() {
    let ws = Workspace::new();
    // PATH is set for every agent; the plugin still may not read it ungranted.
    let (outcome, log) = run(
        &probe(),
        ws.request("Invoke", &[("Mode", "env"), ("Name", "PATH")], &[], &[]),
    )
    .await;
    assert!(
        failed(outcome, &log).contains(
            "environment variable PATH is not granted to plugin test-probe: it needs the capability env:PATH"
        )
    );
    let granted = probe().with_grants(sluice_proto::Grants {
        env: vec!["PATH".to_string()],
        ..probe().grants.clone()
    });
    let (outcome, log) = run(
        &granted,
        ws.request("Invoke", &[("Mode", "env"), ("Name", "PATH")], &[], &[]),
    )
    .await;
    let (summary, _) = succeeded(outcome, &log);
    assert!(summary.starts_with("PATH=/"), "{summary}");

    // A secret delivered with the job but not granted is never handed to the plugin.
    let mut request = ws.request(
        "Invoke",
        &[("Mode", "secret"), ("SecretName", "TOKEN")],
        &[],
        &[],
    );
    request
        .secrets
        .insert("TOKEN".into(), "hunter22-value".into());
    let (outcome, log) = run(&probe(), request.clone()).await;
    let message = failed(outcome, &log);
    assert!(
        message.contains(
            "secret TOKEN is not granted to plugin test-probe: it needs the capability secret:TOKEN"
        ),
        "{message}"
    );
    assert!(!log.contains("hunter22-value"), "{log}");

    // Granted, it is handed over (the executor, not the host, masks what leaves the agent).
    let granted = probe().with_grants(sluice_proto::Grants {
        secrets: vec!["TOKEN".to_string()],
        ..probe().grants.clone()
    });
    let (outcome, log) = run(&granted, request).await;
    assert!(failed(outcome, &log).contains("failing with hunter22-value"));
}

#[test]
fn the_compiled_cache_counts_its_hits_and_misses() {
    let dir = TempDir::new().unwrap();
    let first = PluginHost::new(dir.path()).unwrap();
    let probe =
        || sluice_agent::plugin_host::Manifest::parse("test-probe", &probe_manifest()).unwrap();
    first.compile(probe(), &probe_wasm()).unwrap();
    let stats = first.cache_stats();
    assert_eq!((stats.hits, stats.misses), (0, 1));
    // A second host over the same cache directory finds the compiled form.
    let second = PluginHost::new(dir.path()).unwrap();
    second.compile(probe(), &probe_wasm()).unwrap();
    second.compile(probe(), &probe_wasm()).unwrap();
    let stats = second.cache_stats();
    assert_eq!((stats.hits, stats.misses), (2, 0));
    // Clones share the counters.
    assert_eq!(second.clone().cache_stats(), stats);
}
