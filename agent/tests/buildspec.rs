//! The `build-buildspec` plugin against real buildspecs, run through the real plugin
//! host and a real shell.

mod common;
use common::{failed, succeeded, tree};

use sluice_agent::plugin_host::{LoadedPlugin, PluginHost, RunOutcome, RunRequest};
use sluice_proto::{TestCase, TestStatus};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tempfile::TempDir;

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(common::builtin_host)
}

fn plugin() -> Arc<LoadedPlugin> {
    host()
        .find("Build", "buildspec", "1")
        .expect("no plugin for Build/buildspec/1")
}

struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn input(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("inputs").join(name);
        std::fs::create_dir_all(&dir).expect("input dir");
        dir
    }

    fn output(&self, name: &str) -> PathBuf {
        self.dir.path().join("outputs").join(name)
    }

    fn request(&self, config: &[(&str, &str)], inputs: &[&str], outputs: &[&str]) -> RunRequest {
        RunRequest {
            workspace: self.dir.path().to_path_buf(),
            pipeline: "shop".to_string(),
            execution_id: "exec-1".to_string(),
            stage: "Build".to_string(),
            action: "Compile".to_string(),
            category: "Build".to_string(),
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

    /// Writes `buildspec.yml` into input `Src` and runs it with `outputs`.
    async fn run_spec(&self, spec: &str, outputs: &[&str]) -> (RunOutcome, String) {
        let src = self.input("Src");
        std::fs::write(src.join("buildspec.yml"), spec).expect("write buildspec");
        run(self.request(&[], &["Src"], outputs)).await
    }
}

/// A JUnit report from `tests/fixtures/junit/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit")
        .join(name)
}

/// The test cases the run reported, whether it succeeded or failed.
fn tests(outcome: &RunOutcome) -> &[TestCase] {
    match outcome {
        RunOutcome::Succeeded { tests, .. } | RunOutcome::Failed { tests, .. } => tests,
    }
}

/// The reported case called `name` in suite `suite`.
fn case<'a>(tests: &'a [TestCase], suite: &str, name: &str) -> &'a TestCase {
    tests
        .iter()
        .find(|c| c.suite == suite && c.name == name)
        .unwrap_or_else(|| panic!("no test case {suite:?} / {name:?} in {tests:#?}"))
}

async fn run(request: RunRequest) -> (RunOutcome, String) {
    common::run_on(host(), &plugin(), request).await
}

#[tokio::test]
async fn phases_share_one_shell_session_and_see_the_codebuild_environment() {
    let ws = Workspace::new();
    ws.input("Other");
    let spec = r#"version: 0.2
env:
  variables:
    GREETING: hello
    PORT: 8080
    RATIO: 3.10
    ENABLED: true
    LONG: >-
      folded
      onto one line
phases:
  install:
    commands: mkdir -p work && cd work
  pre_build:
    commands:
      - export CARRIED=from-pre-build
      - SHELL_VAR=plain
  build:
    commands:
      - echo "pwd=$(basename "$PWD") carried=$CARRIED shell=$SHELL_VAR"
      - echo "env=$GREETING/$PORT/$RATIO/$ENABLED/$LONG"
      - |
        for x in a b; do
          echo "loop $x"
        done
      - test "$CODEBUILD_SRC_DIR" = "$(cd .. && pwd)" && echo src-dir-ok
      - test -d "$CODEBUILD_SRC_DIR_Other" && echo other-dir-ok
      - echo "id=$CODEBUILD_BUILD_ID initiator=$CODEBUILD_INITIATOR succeeding=$CODEBUILD_BUILD_SUCCEEDING"
      - echo "override=$OVERRIDDEN"
"#;
    let src = ws.input("Src");
    std::fs::write(src.join("buildspec.yml"), spec).expect("write");
    let request = ws.request(
        &[(
            "EnvironmentVariables",
            r#"[{"name":"OVERRIDDEN","value":"from-config","type":"PLAINTEXT"},{"name":"GREETING","value":"hi"}]"#,
        )],
        &["Src", "Other"],
        &[],
    );
    let (outcome, log) = run(request).await;
    let (summary, _) = succeeded(outcome, &log);
    assert!(summary.contains("ran 3 buildspec phase(s)"), "{summary}");
    for line in [
        "[buildspec] Entering phase INSTALL",
        "[buildspec] Entering phase BUILD",
        "pwd=work carried=from-pre-build shell=plain\n",
        "env=hi/8080/3.10/true/folded onto one line\n",
        "loop a\nloop b\n",
        "src-dir-ok\n",
        "other-dir-ok\n",
        "id=shop:exec-1 initiator=codepipeline/shop succeeding=1\n",
        "override=from-config\n",
    ] {
        assert!(log.contains(line), "missing {line:?} in log:\n{log}");
    }
}

#[tokio::test]
async fn post_build_runs_after_a_failed_build_and_the_action_names_the_phase() {
    let ws = Workspace::new();
    let spec = r#"version: "0.2"
phases:
  pre_build:
    commands:
      - echo pre
  build:
    commands:
      - echo building
      - sh -c 'exit 2'
      - echo never-after-failure
    finally:
      - echo build-finally
  post_build:
    commands:
      - echo "post succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#;
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let message = failed(outcome, &log);
    assert_eq!(
        message,
        "phase BUILD failed: command exited with status 2: sh -c 'exit 2'"
    );
    assert!(log.contains("building\n"), "{log}");
    assert!(!log.contains("never-after-failure\n"), "{log}");
    assert!(log.contains("build-finally\n"), "{log}");
    assert!(log.contains("post succeeding=0\n"), "{log}");
    assert!(
        log.contains(
            "[buildspec] Phase BUILD failed: command exited with status 2: sh -c 'exit 2'"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn abort_skips_later_phases_and_continue_goes_on() {
    let ws = Workspace::new();
    let spec = r#"version: 0.2
phases:
  install:
    on-failure: CONTINUE
    commands:
      - "false"
    finally:
      - echo install-finally
  pre_build:
    commands:
      - echo "pre succeeding=$CODEBUILD_BUILD_SUCCEEDING"
      - exit_code_seven() { return 7; }; exit_code_seven
    finally:
      - echo pre-finally
      - "false"
      - echo never-in-finally
  build:
    commands:
      - echo never-build
  post_build:
    commands:
      - echo never-post
"#;
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let message = failed(outcome, &log);
    assert!(
        message.starts_with("phase INSTALL failed: command exited with status 1: false; phase PRE_BUILD failed: command exited with status 7"),
        "{message}"
    );
    for line in ["install-finally\n", "pre succeeding=0\n", "pre-finally\n"] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    for line in ["never-in-finally", "never-build", "never-post"] {
        assert!(!log.contains(&format!("{line}\n")), "{line} ran:\n{log}");
    }
    assert!(log.contains("Skipping phase POST_BUILD"), "{log}");
}

#[tokio::test]
async fn a_failing_finally_command_fails_its_phase() {
    let ws = Workspace::new();
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\n    finally:\n      - exit_three() { return 3; }; exit_three\n";
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    assert_eq!(
        failed(outcome, &log),
        "phase BUILD failed: finally command exited with status 3: exit_three() { return 3; }; exit_three"
    );
}

#[tokio::test]
async fn exported_variables_become_output_variables() {
    let ws = Workspace::new();
    let spec = r#"version: 0.2
env:
  exported-variables:
    - IMAGE_TAG
    - MULTI
    - NEVER_SET
phases:
  build:
    commands:
      - IMAGE_TAG=v1.2.3
      - export MULTI="line one
        line two"
"#;
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let (_, vars) = succeeded(outcome, &log);
    assert_eq!(vars.get("IMAGE_TAG").map(String::as_str), Some("v1.2.3"));
    assert!(
        vars.get("MULTI").is_some_and(|v| v.contains("line one")),
        "{vars:?}"
    );
    assert!(!vars.contains_key("NEVER_SET"));
    assert!(log.contains("NEVER_SET is not set"), "{log}");
}

#[tokio::test]
async fn artifacts_honour_base_directory_discard_paths_exclude_paths_and_secondaries() {
    let ws = Workspace::new();
    let spec = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p dist/js/deep dist/css docs
      - echo app > dist/js/app.js
      - echo deep > dist/js/deep/lib.js
      - echo map > dist/js/app.js.map
      - echo css > dist/css/site.css
      - printf '#!/bin/sh\necho hi\n' > dist/run.sh && chmod 755 dist/run.sh
      - echo readme > docs/README.md
artifacts:
  base-directory: dist
  files:
    - '**/*'
  exclude-paths:
    - '**/*.map'
  name: site-$(date +%Y)
  secondary-artifacts:
    Docs:
      files: docs/*.md
      discard-paths: yes
"#;
    let (outcome, log) = ws.run_spec(spec, &["Site", "Docs"]).await;
    let (summary, _) = succeeded(outcome, &log);
    assert!(summary.contains("packed 5 file(s)"), "{summary}");
    let site = ws.output("Site");
    assert_eq!(
        tree(&site),
        [
            "css/",
            "css/site.css",
            "js/",
            "js/app.js",
            "js/deep/",
            "js/deep/lib.js",
            "run.sh"
        ]
    );
    let mode = std::fs::metadata(site.join("run.sh"))
        .expect("run.sh")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(tree(&ws.output("Docs")), ["README.md"]);
}

#[tokio::test]
async fn artifacts_that_match_nothing_fail_and_an_unknown_secondary_is_named() {
    let ws = Workspace::new();
    let spec = "version: 0.2\nphases:\n  build:\n    commands: [echo hi]\nartifacts:\n  files: ['out/**/*']\n";
    let (outcome, log) = ws.run_spec(spec, &["Out"]).await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("no matching artifact paths found"),
        "{message}"
    );

    let ws = Workspace::new();
    let spec = "version: 0.2\nphases:\n  build:\n    commands: [echo never-ran]\nartifacts:\n  files: ['**/*']\n  secondary-artifacts:\n    Missing:\n      files: ['**/*']\n";
    let (outcome, log) = ws.run_spec(spec, &["Out"]).await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("secondary artifact Missing") && message.contains("Out"),
        "{message}"
    );
    assert!(!log.contains("never-ran\n"), "{log}");
}

#[tokio::test]
async fn junit_reports_are_counted_into_output_variables() {
    let ws = Workspace::new();
    let spec = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p reports/a
      - |
        cat > reports/a/TEST-one.xml <<'EOF'
        <?xml version="1.0"?>
        <testsuite name="one" tests="3">
          <!-- <testcase name="commented-out"/> -->
          <testcase name="ok"/>
          <testcase name="bad"><failure message="boom">trace</failure></testcase>
          <testcase name="skip"><skipped/></testcase>
        </testsuite>
        EOF
      - |
        cat > reports/TEST-two.xml <<'EOF'
        <testsuites><testsuite name="two">
          <testcase name="err"><error type="x"><![CDATA[<failure>not real</failure>]]></error></testcase>
          <testcase name="fine"></testcase>
        </testsuite></testsuites>
        EOF
reports:
  unit-tests:
    files:
      - '**/*.xml'
    base-directory: reports
    file-format: JunitXml
  coverage:
    files: ['**/*']
    file-format: COBERTURAXML
"#;
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let (summary, vars) = succeeded(outcome, &log);
    assert!(
        summary.contains("unit-tests: 2/5 tests passed"),
        "{summary}"
    );
    assert_eq!(vars.get("unit-tests_Tests").map(String::as_str), Some("5"));
    assert_eq!(
        vars.get("unit-tests_Failures").map(String::as_str),
        Some("1")
    );
    assert_eq!(vars.get("unit-tests_Errors").map(String::as_str), Some("1"));
    assert_eq!(
        vars.get("unit-tests_Skipped").map(String::as_str),
        Some("1")
    );
    assert!(
        log.contains("Report group unit-tests: 5 test(s), 2 passed, 1 failed, 1 error(s), 1 skipped (2 file(s))"),
        "{log}"
    );
    assert!(
        log.contains("file-format COBERTURAXML is not supported"),
        "{log}"
    );
}

#[tokio::test]
async fn unsupported_keys_warn_and_inline_buildspec_overrides_the_file() {
    let ws = Workspace::new();
    let src = ws.input("Src");
    std::fs::write(
        src.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo from-file]\n",
    )
    .expect("write");
    let inline = "version: 0.2\ncache:\n  paths: ['/root/.m2/**/*']\nenv:\n  secrets-manager:\n    TOKEN: prod/token\nphases:\n  install:\n    runtime-versions:\n      python: 3.10\n    commands: [echo from-inline]\n";
    let (outcome, log) = run(ws.request(&[("Buildspec", inline)], &["Src"], &[])).await;
    succeeded(outcome, &log);
    assert!(
        log.contains("from-inline\n") && !log.contains("from-file\n"),
        "{log}"
    );
    for w in [
        "`cache` is not supported",
        "env.secrets-manager is not supported",
        "runtime-versions is not supported",
    ] {
        assert!(log.contains(w), "missing warning {w:?}:\n{log}");
    }
}

#[tokio::test]
async fn buildspec_yaml_is_found_and_buildspec_path_is_honoured() {
    let ws = Workspace::new();
    let src = ws.input("Src");
    std::fs::write(
        src.join("buildspec.yaml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo from-yaml]\n",
    )
    .expect("write");
    let (outcome, log) = run(ws.request(&[], &["Src"], &[])).await;
    succeeded(outcome, &log);
    assert!(log.contains("from-yaml\n"), "{log}");

    std::fs::create_dir_all(src.join("ci")).expect("mkdir");
    std::fs::write(
        src.join("ci/spec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo from-ci]\n",
    )
    .expect("write");
    let (outcome, log) = run(ws.request(&[("BuildspecPath", "ci/spec.yml")], &["Src"], &[])).await;
    succeeded(outcome, &log);
    assert!(log.contains("from-ci\n"), "{log}");
}

#[tokio::test]
async fn a_missing_buildspec_a_bad_version_and_bad_yaml_are_clear_errors() {
    let ws = Workspace::new();
    ws.input("Src");
    let (outcome, log) = run(ws.request(&[], &["Src"], &[])).await;
    assert_eq!(
        failed(outcome, &log),
        "buildspec file buildspec.yml or buildspec.yaml not found in the primary input (Src); set BuildspecPath or Buildspec"
    );

    let (outcome, log) = ws
        .run_spec(
            "version: 0.1\nphases:\n  build:\n    commands: [echo hi]\n",
            &[],
        )
        .await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("version 0.1 is not supported"),
        "{message}"
    );

    let (outcome, log) = ws
        .run_spec("phases:\n  build:\n    commands: [echo hi]\n", &[])
        .await;
    let message = failed(outcome, &log);
    assert!(message.contains("has no version"), "{message}");

    let (outcome, log) = ws
        .run_spec(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo key: value\n",
            &[],
        )
        .await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("phases.build.commands[0] must be a string, found a mapping"),
        "{message}"
    );

    std::fs::write(
        ws.input("Src").join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo hi]\n",
    )
    .expect("write");
    let (outcome, log) = run(ws.request(
        &[(
            "EnvironmentVariables",
            r#"[{"name":"X","value":"/ssm/x","type":"PARAMETER_STORE"}]"#,
        )],
        &["Src"],
        &[],
    ))
    .await;
    let message = failed(outcome, &log);
    assert!(message.contains("only PLAINTEXT is supported"), "{message}");
}

#[tokio::test]
async fn a_command_that_exits_the_shell_is_named() {
    let ws = Workspace::new();
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo before\n      - exit 4\n  post_build:\n    commands: [echo never-post]\n";
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("ended early with status 4 during phase BUILD (command: exit 4)"),
        "{message}"
    );
    assert!(!log.contains("never-post\n"), "{log}");
}

/// A buildspec whose build copies JUnit fixtures (Surefire, pytest) and writes a report
/// with no named suite, read by a group with a base-directory and one with discard-paths.
const REPORTS_SPEC: &str = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p build/reports/java build/reports/py build/reports/smoke
      - cp fixtures/TEST-com.example.shop.CartTest.xml build/reports/java/
      - cp fixtures/pytest-xunit2.xml build/reports/py/pytest.xml
      - echo '<testsuites><testcase classname="smoke" name="starts" time="0.5"/></testsuites>' > build/reports/smoke/smoke.xml
reports:
  unit:
    files: ['**/*.xml']
    base-directory: build/reports
  smoke:
    files: ['build/reports/smoke/*.xml']
    discard-paths: yes
"#;

#[tokio::test]
async fn junit_reports_are_recorded_as_test_results_with_the_group_as_suite_prefix() {
    let ws = Workspace::new();
    let src = ws.input("Src");
    std::fs::create_dir_all(src.join("fixtures")).expect("mkdir");
    for name in ["TEST-com.example.shop.CartTest.xml", "pytest-xunit2.xml"] {
        std::fs::copy(fixture(name), src.join("fixtures").join(name)).expect("copy fixture");
    }
    let (outcome, log) = ws.run_spec(REPORTS_SPEC, &[]).await;
    let recorded = tests(&outcome).to_vec();
    let (summary, vars) = succeeded(outcome, &log);

    // unit: CartTest (5 cases), pytest (4) and smoke (1); smoke: the smoke report again.
    assert_eq!(recorded.len(), 11, "{recorded:#?}");
    let failure = case(
        &recorded,
        "unit / com.example.shop.CartTest",
        "appliesDiscount",
    );
    assert_eq!(failure.status, TestStatus::Failed);
    assert_eq!(failure.classname, "com.example.shop.CartTest");
    assert_eq!(failure.duration_ms, 27);
    assert_eq!(
        failure.message.as_deref(),
        Some("expected: <90.00> but was: <100.00>")
    );
    assert!(
        failure
            .details
            .as_deref()
            .is_some_and(|d| d.contains("CartTest.java:42")),
        "{failure:?}"
    );
    assert_eq!(
        case(
            &recorded,
            "unit / com.example.shop.CartTest",
            "checksOutEmptyCart"
        )
        .status,
        TestStatus::Errored
    );
    let skipped = case(&recorded, "unit / pytest", "test_search_unicode");
    assert_eq!(skipped.status, TestStatus::Skipped);
    assert_eq!(skipped.message.as_deref(), Some("ICU not installed"));
    assert_eq!(
        case(&recorded, "unit / pytest", "test_search[shoes]").duration_ms,
        1052
    );
    // A case outside any named suite takes the report's path under base-directory, or
    // only its file name with discard-paths.
    let nested = case(&recorded, "unit / smoke/smoke.xml", "starts");
    assert_eq!(
        (nested.status, nested.duration_ms),
        (TestStatus::Passed, 500)
    );
    assert_eq!(
        case(&recorded, "smoke / smoke.xml", "starts").classname,
        "smoke"
    );
    assert!(
        recorded
            .iter()
            .all(|c| c.suite.starts_with("unit / ") || c.suite.starts_with("smoke / ")),
        "{recorded:#?}"
    );

    // The count variables and the summary are still there.
    for (name, value) in [
        ("unit_Tests", "10"),
        ("unit_Failures", "1"),
        ("unit_Errors", "1"),
        ("unit_Skipped", "2"),
        ("smoke_Tests", "1"),
        ("smoke_Failures", "0"),
    ] {
        assert_eq!(
            vars.get(name).map(String::as_str),
            Some(value),
            "{name}: {vars:?}"
        );
    }
    assert!(summary.contains("unit: 6/10 tests passed"), "{summary}");
    assert!(summary.contains("smoke: 1/1 tests passed"), "{summary}");
    assert!(
        log.contains(
            "Report group unit: 10 test(s), 6 passed, 1 failed, 1 error(s), 2 skipped (3 file(s))\n"
        ),
        "{log}"
    );

    // A failed build still records its reports, as CodeBuild does.
    let failing = REPORTS_SPEC.replace("reports:\n", "      - sh -c 'exit 2'\nreports:\n");
    let (outcome, log) = ws.run_spec(&failing, &[]).await;
    assert_eq!(tests(&outcome).len(), 11, "{:#?}", tests(&outcome));
    assert_eq!(
        failed(outcome, &log),
        "phase BUILD failed: command exited with status 2: sh -c 'exit 2'"
    );
}

#[tokio::test]
async fn a_malformed_report_is_a_warning_naming_the_file_and_the_build_succeeds() {
    let ws = Workspace::new();
    let src = ws.input("Src");
    std::fs::create_dir_all(src.join("fixtures")).expect("mkdir");
    for name in ["broken.xml", "pytest-xunit2.xml"] {
        std::fs::copy(fixture(name), src.join("fixtures").join(name)).expect("copy fixture");
    }
    let spec = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p reports
      - cp fixtures/broken.xml reports/TEST-broken.xml
      - cp fixtures/pytest-xunit2.xml reports/pytest.xml
      - echo '<project><modelVersion>4.0.0</modelVersion></project>' > reports/pom.xml
reports:
  unit:
    files: ['*.xml']
    base-directory: reports
"#;
    let (outcome, log) = ws.run_spec(spec, &[]).await;
    let recorded = tests(&outcome).to_vec();
    let (summary, vars) = succeeded(outcome, &log);

    for warning in [
        "WARN: [buildspec] report group unit: report reports/TEST-broken.xml is not \
         well-formed XML: line 5, column 34: expected 'failure' tag, not 'failre'; fix the \
         report or leave it out of reports.unit.files. Its test cases are not recorded; a bad \
         report does not fail the build\n",
        "WARN: [buildspec] report group unit: report reports/pom.xml is not a JUnit XML \
         report: its root element is <project>, not <testsuites> or <testsuite>; leave it out \
         of reports.unit.files.",
        "Report group unit: 4 test(s), 3 passed, 0 failed, 0 error(s), 1 skipped (3 file(s), \
         2 of them not read: see the warnings above)\n",
    ] {
        assert!(log.contains(warning), "missing {warning:?} in log:\n{log}");
    }
    // The good report is recorded; nothing of the broken one (not even its first case).
    assert_eq!(recorded.len(), 4, "{recorded:#?}");
    assert!(
        recorded.iter().all(|c| c.suite == "unit / pytest"),
        "{recorded:#?}"
    );
    assert_eq!(vars.get("unit_Tests").map(String::as_str), Some("4"));
    assert!(summary.contains("unit: 3/4 tests passed"), "{summary}");
}

#[tokio::test]
async fn source_version_and_build_number_set_the_codebuild_variables() {
    let ws = Workspace::new();
    let src = ws.input("Src");
    std::fs::write(
        src.join("buildspec.yml"),
        r#"version: 0.2
env:
  variables:
    CODEBUILD_SOURCE_VERSION: from-the-buildspec
phases:
  build:
    commands:
      - echo "resolved=${CODEBUILD_RESOLVED_SOURCE_VERSION-unset} source=${CODEBUILD_SOURCE_VERSION-unset}"
      - echo "number=$CODEBUILD_BUILD_NUMBER"
"#,
    )
    .expect("write buildspec");
    let commit = "9fceb02d0ae598e95dc970b74767f19372d61af8";
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    };
    let before = now();
    let padded = format!(" {commit}\n");
    let (outcome, log) = run(ws.request(&[("SourceVersion", &padded)], &["Src"], &[])).await;
    let after = now();
    succeeded(outcome, &log);
    assert!(
        log.contains(&format!("resolved={commit} source={commit}\n")),
        "{log}"
    );
    // The build number: digits, the build's start in seconds since the epoch.
    let number = log
        .lines()
        .find_map(|l| l.strip_prefix("number="))
        .unwrap_or_else(|| panic!("no number= line in log:\n{log}"));
    let number: u64 = number
        .parse()
        .unwrap_or_else(|e| panic!("CODEBUILD_BUILD_NUMBER {number:?} is not a number: {e}"));
    assert!(
        (before..=after).contains(&number),
        "{before} <= {number} <= {after}"
    );

    // Without SourceVersion neither variable is set by Sluice.
    let (outcome, log) = run(ws.request(&[], &["Src"], &[])).await;
    succeeded(outcome, &log);
    assert!(
        log.contains("resolved=unset source=from-the-buildspec\n"),
        "{log}"
    );
}
