//! End-to-end tests of the plugin platform: installing plugins with grants, versions
//! side by side, distribution to agents by digest, secrets (encrypted at rest, delivered
//! only to granted plugins, masked on the way out), test reports in history, the
//! invoke-wasm provider, and plugins built against the previous WIT version.
//! Real `sluice` and `sluice-agent` processes, real TLS, the real WASM plugins.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_e2e::*;

/// A test-only plugin built by agent/build.rs (never embedded): (wasm, manifest).
fn test_plugin(name: &str) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let wasm = root
        .join("target/plugins/wasm32-wasip2/release")
        .join(format!("sluice_plugin_{}.wasm", name.replace('-', "_")));
    assert!(
        wasm.is_file(),
        "{} is missing: build the workspace first",
        wasm.display()
    );
    (
        wasm,
        root.join("plugins").join(name).join("test-plugin.toml"),
    )
}

/// A controller with one running agent.
struct Setup {
    dir: tempfile::TempDir,
    controller: Controller,
    _agent: Process,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (controller, agent) = start_with_agent(dir.path(), &[], 4);
    Setup {
        dir,
        controller,
        _agent: agent,
    }
}

impl Setup {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a pipeline whose first stage snapshots `source` (a directory).
    fn pipeline(&self, name: &str, source: &Path, later_stages: &str) -> PathBuf {
        let file = self.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}
stages:
  - name: Source
    actions:
      - name: Snapshot
        actionTypeId: {{category: Source, owner: Sluice, provider: directory, version: \"1\"}}
        configuration: {{Path: {}}}
        outputArtifacts: [Src]
{later_stages}",
                source.display()
            ),
        )
        .unwrap();
        file
    }

    fn run(&self, pipeline: &str) -> serde_json::Value {
        let id = self.controller.start_pipeline(pipeline);
        self.controller.wait_finished(&id, Duration::from_secs(120))
    }
}

fn attempt<'a>(
    execution: &'a serde_json::Value,
    stage: &str,
    action: &str,
) -> &'a serde_json::Value {
    let stage = execution["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {execution:#}"));
    let action = stage["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == action)
        .unwrap_or_else(|| panic!("no action {action} in {stage:#}"));
    action["attempts"].as_array().unwrap().last().unwrap()
}

/// `sluice plugin install WASM --manifest MANIFEST`, to add grants to.
fn install(c: &Controller, wasm: &Path, manifest: &Path) -> std::process::Command {
    let mut cmd = c.cli();
    cmd.args(["plugin", "install"])
        .arg(wasm)
        .arg("--manifest")
        .arg(manifest);
    cmd
}

const PROBE_STAGE: &str = "  - name: Probe
    actions:
      - name: Answer
        actionTypeId: {category: Invoke, owner: Custom, provider: sluice-test-probe, version: \"2\"}
        namespace: P
        configuration: {Mode: var, Name: Answer, Size: \"3\"}
";

#[test]
fn installed_plugins_are_granted_versioned_validated_and_fetched_by_digest() {
    let s = setup();
    let c = &s.controller;
    let (wasm, manifest) = test_plugin("test-probe");

    // Asking for programs that are not granted: refused at install, naming them.
    let (out, _, stderr) = run(&mut install(c, &wasm, &manifest));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs program:sh"), "{stderr}");
    assert!(stderr.contains("--grant program:echo"), "{stderr}");
    // Granting what it does not ask for is refused too.
    let (out, _, stderr) =
        run(install(c, &wasm, &manifest).args(["--grant-all", "--grant", "program:curl"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("program:curl is granted, but plugin test-probe does not ask for it"),
        "{stderr}"
    );

    // Version 1 and version 2 side by side.
    let shown = ok(install(c, &wasm, &manifest).arg("--grant-all"));
    assert!(
        shown.contains("Asks for: program:sh, program:echo, host:* (any you grant), secret:* (any you grant), env:* (any you grant)"),
        "{shown}"
    );
    assert!(shown.contains("Installed test-probe version 1"), "{shown}");
    let v2 = s.path().join("probe-v2.toml");
    std::fs::write(
        &v2,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("version = \"1\"", "version = \"2\""),
    )
    .unwrap();
    ok(install(c, &wasm, &v2).args(["--grant", "program:sh", "--grant", "program:echo"]));
    let versions = c.json(&["plugin", "show", "test-probe"]);
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1", "2"]);
    assert_eq!(
        versions[1]["grants"],
        serde_json::json!(["program:sh", "program:echo"])
    );
    let all = c.json(&["plugin", "list"]);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "build-commands" && p["builtin"] == true)
    );

    // The configuration is checked against the manifest when the pipeline is created.
    let source = s.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "a\n").unwrap();
    let bad = s.pipeline(
        "probe",
        &source,
        &PROBE_STAGE.replace(
            "{Mode: var, Name: Answer, Size: \"3\"}",
            "{Name: Answer, Bogus: x}",
        ),
    );
    let (out, _, stderr) = run(c.cli().args(["pipeline", "create"]).arg(&bad));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stages[1].actions[0].configuration.Bogus: unknown configuration key Bogus (plugin test-probe knows: Mode, Program, Args, Cwd, Name, Size, SecretName)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stages[1].actions[0].configuration.Mode: configuration key Mode is required by plugin test-probe"),
        "{stderr}"
    );

    // Version 2 runs on the agent, which fetched it by digest: it is not built in.
    let good = s.pipeline("probe", &source, PROBE_STAGE);
    // Offline validation knows only the built-ins, and says where to look instead.
    let (out, _, stderr) = run(c.cli().args(["pipeline", "validate"]).arg(&good));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("hint: offline validation knows only the built-in providers"),
        "{stderr}"
    );
    let remote = ok(c
        .cli()
        .args(["pipeline", "validate", "--remote"])
        .arg(&good));
    assert!(
        remote.contains("pipeline \"probe\" is valid on https://"),
        "{remote}"
    );
    c.create_pipeline(&good);
    let execution = s.run("probe");
    assert_eq!(execution["status"], "Succeeded", "{execution:#}");
    let answer = attempt(&execution, "Probe", "Answer");
    assert_eq!(answer["outputVariables"]["Answer"], "vvv");
    let digest = versions[1]["sha256"].as_str().unwrap();
    let cached: Vec<String> = std::fs::read_dir(plugin_cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached
            .iter()
            .any(|f| f.starts_with(&format!("test-probe-{digest}-"))),
        "the agent cached no compiled form of {digest}: {cached:?}"
    );

    // A version a pipeline uses cannot be removed; one nobody uses can.
    let (out, _, stderr) = run(c
        .cli()
        .args(["plugin", "remove", "test-probe", "--version", "2"]));
    assert!(!out.status.success());
    assert!(stderr.contains("would break pipeline(s) probe"), "{stderr}");
    ok(c.cli()
        .args(["plugin", "remove", "test-probe", "--version", "1"]));
    let (out, _, stderr) = run(c.cli().args(["plugin", "remove", "build-commands"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("built into Sluice and cannot be removed"),
        "{stderr}"
    );
}

#[test]
fn secrets_reach_only_granted_plugins_and_leave_the_agent_masked() {
    let s = setup();
    let c = &s.controller;
    let (wasm, manifest) = test_plugin("test-probe");
    ok(install(c, &wasm, &manifest).arg("--grant-all"));

    // Set through standard input; listed by name only; encrypted at rest.
    let value = "s3cr3t-Value-42";
    let mut set = c.cli();
    set.args(["secret", "set", "DEPLOY_TOKEN"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{value}").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let listed = ok(c.cli().args(["secret", "list", "-o", "json"]));
    assert!(listed.contains("DEPLOY_TOKEN"), "{listed}");
    assert!(!listed.contains(value), "{listed}");
    let db = std::fs::read(c.data_dir.join("sluice.db")).unwrap();
    let wal = std::fs::read(c.data_dir.join("sluice.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "the secret is in the database in clear"
        );
    }

    // A pipeline naming a secret its plugin was not granted is refused at creation.
    let source = s.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    let leak = s.pipeline(
        "leak",
        &source,
        &PROBE_STAGE
            .replace("version: \"2\"", "version: \"1\"")
            .replace(
                "{Mode: var, Name: Answer, Size: \"3\"}",
                "{Mode: secret, SecretName: DEPLOY_TOKEN}",
            ),
    );
    let (out, _, stderr) = run(c.cli().args(["pipeline", "create"]).arg(&leak));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("plugin test-probe is not granted secret:DEPLOY_TOKEN; an operator grants it with `sluice plugin grant test-probe secret:DEPLOY_TOKEN`"),
        "{stderr}"
    );

    ok(c.cli()
        .args(["plugin", "grant", "test-probe", "secret:DEPLOY_TOKEN"]));
    c.create_pipeline(&leak);
    let execution = s.run("leak");
    // The probe fails on purpose, with the value in its error.
    assert_eq!(execution["status"], "Failed", "{execution:#}");
    let probe = attempt(&execution, "Probe", "Answer");
    let error = probe["error"].as_str().unwrap();
    assert_eq!(error, "failing with *** in the message");

    // Every way the plugin wrote it, the log shows the mask instead.
    let id = execution["id"].as_str().unwrap();
    let log = ok(c.cli().args(["logs", id, "--action", "Probe/Answer"]));
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    for line in ["plain: ***", "split: ***", "exec: ***"] {
        assert!(log.contains(line), "{line:?} missing from:\n{log}");
    }
    assert!(!log.contains(value), "{log}");
    assert!(!log.contains(&encoded), "{log}");
    assert!(
        log.contains("***\n"),
        "the base64 line is masked too:\n{log}"
    );
    let api = ok(c.cli().args(["execution", "get", id, "-o", "json"]));
    assert!(!api.contains(value));
    for entry in walk(&c.data_dir.join("logs")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            !text.contains(value) && !text.contains(&encoded),
            "{}",
            entry.display()
        );
    }

    // Taking the grant back while the pipeline needs it is refused.
    let (out, _, stderr) =
        run(c
            .cli()
            .args(["plugin", "revoke", "test-probe", "secret:DEPLOY_TOKEN"]));
    assert!(!out.status.success());
    assert!(stderr.contains("would break pipeline(s) leak"), "{stderr}");
    ok(c.cli().args(["secret", "rm", "DEPLOY_TOKEN"]));
    let execution = s.run("leak");
    let probe = attempt(&execution, "Probe", "Answer");
    assert_eq!(
        probe["error"],
        "secret DEPLOY_TOKEN is not set; set it with `sluice secret set DEPLOY_TOKEN`"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn invoke_wasm_junit_and_a_plugin_of_the_previous_wit_version_run_in_pipelines() {
    let s = setup();
    let c = &s.controller;

    // A 0.1.0 plugin installs and runs; a mismatched or unsupported one is refused.
    let (legacy, legacy_manifest) = test_plugin("test-legacy");
    let lying = s.path().join("lying.toml");
    std::fs::write(
        &lying,
        std::fs::read_to_string(&legacy_manifest)
            .unwrap()
            .replace("api_version = \"0.1.0\"", "api_version = \"0.2.0\""),
    )
    .unwrap();
    let (out, _, stderr) = run(install(c, &legacy, &lying).arg("--grant-all"));
    assert!(!out.status.success());
    assert!(
        stderr.contains("its component is built for sluice:plugin@0.1.0, but plugin.toml says api_version \"0.2.0\""),
        "{stderr}"
    );
    let future = s.path().join("future.toml");
    std::fs::write(
        &future,
        std::fs::read_to_string(&legacy_manifest)
            .unwrap()
            .replace("api_version = \"0.1.0\"", "api_version = \"0.9.0\""),
    )
    .unwrap();
    let (out, _, stderr) = run(&mut install(c, &legacy, &future));
    assert!(!out.status.success());
    assert!(
        stderr.contains("api_version \"0.9.0\" is not supported: this Sluice runs plugins built for sluice:plugin@0.1.0 or @0.2.0"),
        "{stderr}"
    );
    ok(install(c, &legacy, &legacy_manifest).arg("--grant-all"));

    // The source carries a component for invoke-wasm and a JUnit report.
    let source = s.path().join("src");
    std::fs::create_dir_all(source.join("reports")).unwrap();
    std::fs::copy(test_plugin("test-probe").0, source.join("step.wasm")).unwrap();
    std::fs::write(
        source.join("reports/TEST-unit.xml"),
        r#"<testsuite name="unit" tests="2">
  <testcase classname="shop.Cart" name="adds" time="0.25"/>
  <testcase classname="shop.Cart" name="removes" time="1.5"><failure message="expected 0, got 1">trace</failure></testcase>
</testsuite>"#,
    )
    .unwrap();
    let stages = "  - name: Work
    actions:
      - name: Score
        actionTypeId: {category: Invoke, owner: Sluice, provider: wasm, version: \"1\"}
        namespace: Score
        inputArtifacts: [Src]
        configuration:
          ComponentPath: step.wasm
          Parameters: |
            Mode=var
            Name=Answer
            Size=4
      - name: Sneaky
        actionTypeId: {category: Invoke, owner: Sluice, provider: wasm, version: \"1\"}
        inputArtifacts: [Src]
        runOrder: 2
        configuration:
          ComponentPath: step.wasm
          Parameters: |
            Mode=exec
            Program=sh
            Args=-c
      - name: Greet
        actionTypeId: {category: Build, owner: Custom, provider: sluice-test-legacy, version: \"1\"}
        inputArtifacts: [Src]
        configuration: {Name: \"#{Score.Answer}\"}
        runOrder: 2
      - name: Unit
        actionTypeId: {category: Test, owner: Sluice, provider: junit, version: \"1\"}
        inputArtifacts: [Src]
        configuration: {ReportPaths: \"reports/*.xml\"}
        runOrder: 2
";
    let file = s.pipeline("mixed", &source, stages);
    c.create_pipeline(&file);
    let execution = s.run("mixed");
    assert_eq!(execution["status"], "Failed", "{execution:#}");

    let score = attempt(&execution, "Work", "Score");
    assert_eq!(score["status"], "Succeeded", "{score:#}");
    assert_eq!(score["outputVariables"]["Answer"], "vvvv");
    let sneaky = attempt(&execution, "Work", "Sneaky");
    assert_eq!(sneaky["status"], "Failed");
    assert!(
        sneaky["error"]
            .as_str()
            .unwrap()
            .contains("program \"sh\" is not granted to plugin component; granted: none"),
        "{sneaky:#}"
    );
    let greet = attempt(&execution, "Work", "Greet");
    assert_eq!(greet["status"], "Succeeded", "{greet:#}");
    assert_eq!(greet["outputVariables"]["Greeting"], "hello vvvv");
    assert_eq!(greet["summary"], "greeted vvvv with 0.1.0");

    // Test results are kept in history and shown by `sluice execution get`.
    let unit = attempt(&execution, "Work", "Unit");
    assert_eq!(unit["status"], "Failed");
    assert_eq!(unit["tests"]["total"], 2);
    assert_eq!(unit["tests"]["failed"], 1);
    assert_eq!(unit["tests"]["failures"][0]["name"], "removes");
    assert_eq!(unit["tests"]["failures"][0]["message"], "expected 0, got 1");
    assert_eq!(unit["tests"]["slowest"][0]["durationMs"], 1500);
    let shown = ok(c
        .cli()
        .args(["execution", "get", execution["id"].as_str().unwrap()]));
    assert!(
        shown.contains("tests: 2 total, 1 passed, 1 failed, 0 errored, 0 skipped"),
        "{shown}"
    );
    assert!(
        shown.contains("FAILED unit / removes: expected 0, got 1"),
        "{shown}"
    );
}

#[test]
fn plugin_run_runs_built_in_plugins_locally_and_checks_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("name.txt"), "world\n").unwrap();
    let out = dir.path().join("out");
    let stdout = ok(sluice(&config)
        .args(["plugin", "run", "build-commands", "--config"])
        .arg("Commands=echo \"hello $(cat name.txt)\" > greeting.txt")
        .args(["--config", "OutputPaths=greeting.txt", "--input"])
        .arg(format!("Source={}", input.display()))
        .arg("--output")
        .arg(&out)
        .env("XDG_CACHE_HOME", dir.path().join("cache")));
    assert!(stdout.starts_with("Succeeded: "), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("greeting.txt")).unwrap(),
        "hello world\n"
    );

    // A failing run exits 4 with its message; secrets given to the run are masked.
    let (status, stdout, stderr) = run(sluice(&config)
        .args(["plugin", "run", "build-commands", "--config"])
        .arg("Commands=echo \"token is $(cat name.txt)-42\"; exit 3")
        .args(["--secret", "T=world-42", "--input"])
        .arg(format!("Source={}", input.display()))
        .env("XDG_CACHE_HOME", dir.path().join("cache")));
    assert_eq!(status.status.code(), Some(4), "{stdout}{stderr}");
    assert!(stdout.contains("Failed: "), "{stdout}");
    assert!(stderr.contains("token is ***"), "{stderr}");
    assert!(!stderr.contains("world-42"), "{stderr}");

    // --check lists new commits of a git source, oldest first.
    let repo = git_repo(&dir.path().join("repo"), &[("a.txt", "a\n")]);
    let check = |last: Option<&str>| {
        let mut cmd = sluice(&config);
        cmd.args(["plugin", "run", "source-git", "--check", "--config"])
            .arg(format!("RepositoryUrl={}", repo.display()))
            .env("XDG_CACHE_HOME", dir.path().join("cache"));
        if let Some(last) = last {
            cmd.args(["--last", last]);
        }
        ok(&mut cmd)
    };
    let first = check(None);
    let head = first.split_whitespace().next().unwrap().to_string();
    assert_eq!(head.len(), 40, "{first}");
    assert!(first.contains("Initial commit"), "{first}");
    assert_eq!(check(Some(&head)).trim(), "No new revisions.");
}

#[test]
fn grants_to_a_built_in_plugin_survive_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut controller = Controller::start(dir.path(), port, &[]);
    ok(controller
        .cli()
        .args(["plugin", "grant", "deploy-http", "host:hooks.example.com"]));
    controller.kill();
    let controller = Controller::start(dir.path(), port, &[]);
    let shown = controller.json(&["plugin", "show", "deploy-http"]);
    assert_eq!(
        shown[0]["grants"],
        serde_json::json!(["host:hooks.example.com"]),
        "{shown:#}"
    );
}

#[test]
fn hostile_plugins_fail_only_their_own_actions_while_the_agent_serves_others() {
    let s = setup();
    let c = &s.controller;
    let (wasm, manifest) = test_plugin("test-probe");
    ok(install(c, &wasm, &manifest).arg("--grant-all"));
    let source = s.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "a\n").unwrap();
    let probe = |name: &str, config: &str| {
        format!(
            "      - name: {name}
        actionTypeId: {{category: Invoke, owner: Custom, provider: sluice-test-probe, version: \"1\"}}
        configuration: {config}
"
        )
    };
    let hostile = format!(
        "  - name: Hostile
    actions:
{}{}{}",
        probe("Bomb", "{Mode: alloc}"),
        probe("Panic", "{Mode: panic}"),
        probe("Escape", "{Mode: read, Cwd: /etc/passwd}"),
    );
    let fine = "  - name: Build
    actions:
      - name: Work
        actionTypeId: {category: Build, owner: Sluice, provider: commands, version: \"1\"}
        inputArtifacts: [Src]
        configuration: {Commands: \"sleep 1; cat a.txt\"}
";
    c.create_pipeline(&s.pipeline("hostile", &source, &hostile));
    c.create_pipeline(&s.pipeline("fine", &source, fine));

    // Both at once on the one agent (capacity 4).
    let bad = c.start_pipeline("hostile");
    let good = c.start_pipeline("fine");
    let bad = c.wait_finished(&bad, Duration::from_secs(120));
    let good = c.wait_finished(&good, Duration::from_secs(120));
    assert_eq!(good["status"], "Succeeded", "{good:#}");
    assert_eq!(bad["status"], "Failed", "{bad:#}");
    let error = |action: &str| {
        attempt(&bad, "Hostile", action)["error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        error("Bomb").contains("the memory limit is 256 MiB"),
        "{}",
        error("Bomb")
    );
    assert!(
        error("Panic").contains("the probe panicked on purpose"),
        "{}",
        error("Panic")
    );
    assert!(
        error("Escape").contains("cannot read /etc/passwd"),
        "{}",
        error("Escape")
    );

    // The agent is still there and runs the next execution.
    let again = s.run("fine");
    assert_eq!(again["status"], "Succeeded", "{again:#}");
}
