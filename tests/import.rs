//! End to end: `sluice pipeline import` through the real binary. `--dry-run` with no
//! controller; then a real controller where imported pipelines are created, a disabled
//! transition is applied, and an imported CodeCommit → CodeBuild pipeline runs on an agent.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_e2e::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures/import")
        .join(name)
}

/// A client config that points nowhere: `--dry-run` must not need a controller.
fn offline() -> std::process::Command {
    let dir = std::env::temp_dir().join("sluice-import-offline.toml");
    let mut cmd = sluice(&dir);
    cmd.env("SLUICE_URL", "https://127.0.0.1:9");
    cmd
}

#[test]
fn dry_run_prints_the_definition_and_reports_on_stderr() {
    let (output, stdout, stderr) = run(offline()
        .args(["pipeline", "import", "--dry-run"])
        .arg(fixture("get-pipeline.json"))
        .args([
            "--map",
            "repo:shop=https://git.example.com/shop.git",
            "--map",
            "buildspec:shop-deploy=deploy/buildspec.yml",
            "--buildspec",
            "ci/buildspec.yml",
            "--approvals",
            "drop",
        ]));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        r##"name: shop
pipelineType: V2
stages:
  - name: Source
    actions:
      - name: Source
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: SourceVariables
        configuration:
          BranchName: main
          RepositoryUrl: https://git.example.com/shop.git
        outputArtifacts: [SourceArtifact]
  - name: Build
    actions:
      - name: Build
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        namespace: BuildVariables
        configuration:
          BuildspecPath: ci/buildspec.yml
          EnvironmentVariables: "[{\"name\":\"STAGE\",\"value\":\"prod\",\"type\":\"PLAINTEXT\"}]"
          SourceVersion: "#{SourceVariables.CommitId}"
        inputArtifacts: [SourceArtifact]
        outputArtifacts: [BuildArtifact]
  - name: Deploy
    actions:
      - name: Deploy
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        configuration:
          BuildspecPath: deploy/buildspec.yml
        inputArtifacts: [BuildArtifact, SourceArtifact]
"##
    );
    let file = fixture("get-pipeline.json");
    let file = file.display();
    for expected in [
        format!(
            "warning: {file}: pipeline.roleArn: AWS-only, dropped: Sluice agents run actions with their own credentials (line 4)"
        ),
        format!(
            "warning: {file}: pipeline.stages[2]: stage left out: it held only manual approvals, which --approvals drop leaves out (line 74)"
        ),
        format!("{file}: 1 pipeline converted, 0 errors, 12 warnings"),
    ] {
        assert!(
            stderr.lines().any(|l| l == expected),
            "{expected}\nnot in:\n{stderr}"
        );
    }

    // What it prints is a definition `pipeline validate` accepts.
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("shop.yaml");
    std::fs::write(&converted, &stdout).unwrap();
    let validated = ok(offline().args(["pipeline", "validate"]).arg(&converted));
    assert!(validated.contains("pipeline \"shop\" is valid (3 stages, 3 actions)"));
}

#[test]
fn unmappable_and_broken_files_exit_3() {
    let (output, stdout, stderr) = run(offline()
        .args(["pipeline", "import", "--dry-run"])
        .arg(fixture("get-pipeline.json")));
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    // The definition is still printed, as a starting point.
    assert!(stdout.contains("provider: CodeCommit"), "{stdout}");
    let file = fixture("get-pipeline.json");
    assert!(
        stderr.contains(&format!(
            "error: {}: pipeline.stages[0].actions[0].configuration.RepositoryName: CodeCommit repository \"shop\" \
             has no git URL in its configuration: pass --map repo:shop=URL",
            file.display()
        )),
        "{stderr}"
    );

    for (name, message) in [
        (
            "broken.json",
            "invalid JSON: expected `,` or `]` at line 9 column 13",
        ),
        (
            "broken-indent.yaml",
            "invalid YAML: while parsing a block mapping, did not find expected key (line 14, column 24)",
        ),
    ] {
        let (output, stdout, stderr) = run(offline()
            .args(["pipeline", "import", "--dry-run"])
            .arg(fixture(name)));
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert_eq!(stdout, "");
        assert_eq!(
            stderr.trim(),
            format!("error: {}: {message}", fixture(name).display())
        );
    }

    let (output, _, stderr) = run(offline()
        .args(["pipeline", "import", "--dry-run", "--map", "git:x=y"])
        .arg(fixture("get-pipeline.json")));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("unknown kind \"git\""), "{stderr}");
}

#[test]
fn imported_pipelines_are_created_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);

    // Two pipelines from one template, and the transition the template disables.
    let repo = "repo:billing=/srv/git/billing.git";
    let out = ok(controller
        .cli()
        .args(["pipeline", "import"])
        .arg(fixture("two-pipelines.yaml"))
        .args(["--map", repo, "--buildspec", "ci/buildspec.yml"]));
    assert_eq!(
        out,
        "Created pipeline \"billing-ci\" (version 1) from Resources.CiPipeline\n\
         Created pipeline \"billing-release\" (version 1) from Resources.ReleasePipeline\n\
         Disabled the transition into stage Release of billing-release: Release freeze until the audit ends\n"
    );
    let stored = controller.json(&["pipeline", "get", "billing-release"]);
    let stages = &stored["definition"]["stages"];
    assert_eq!(
        stages[1]["actions"][0]["actionTypeId"]["provider"],
        "buildspec"
    );
    assert_eq!(
        stages[1]["actions"][0]["configuration"]["SourceVersion"],
        "#{Release.CommitId}"
    );
    let transitions = controller.json(&["pipeline", "transitions", "billing-release"]);
    let release = transitions
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["stageName"] == "Release")
        .unwrap_or_else(|| panic!("{transitions}"));
    assert_eq!(release["enabled"], false);
    assert_eq!(release["reason"], "Release freeze until the audit ends");

    // Importing again fails on the existing names; --update stores new versions.
    let (output, _, stderr) = run(controller
        .cli()
        .args(["pipeline", "import"])
        .arg(fixture("two-pipelines.yaml"))
        .args(["--map", repo, "--buildspec", "ci/buildspec.yml"]));
    assert!(!output.status.success());
    assert!(
        stderr.contains("pipeline \"billing-ci\" from Resources.CiPipeline"),
        "{stderr}"
    );
    let out = ok(controller
        .cli()
        .args(["pipeline", "import", "--update"])
        .arg(fixture("two-pipelines.yaml"))
        .args(["--map", repo, "--buildspec", "ci/buildspec.yml"]));
    assert!(
        out.starts_with("Updated pipeline \"billing-ci\" (version 2) from Resources.CiPipeline\n"),
        "{out}"
    );

    // An imported CodeCommit → CodeBuild pipeline runs: the buildspec sees the commit.
    let repo = git_repo(
        &dir.path().join("shop"),
        &[(
            "buildspec.yml",
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"stage=$STAGE commit=$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n",
        )],
    );
    let definition = dir.path().join("shop.json");
    std::fs::write(
        &definition,
        r#"{"pipeline": {"name": "shop", "roleArn": "arn:aws:iam::123456789012:role/p",
  "stages": [
    {"name": "Source", "actions": [{"name": "Source",
      "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeCommit", "version": "1"},
      "configuration": {"RepositoryName": "shop", "BranchName": "main", "PollForSourceChanges": "false"},
      "outputArtifacts": [{"name": "SourceArtifact"}]}]},
    {"name": "Build", "actions": [{"name": "Build",
      "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
      "configuration": {"ProjectName": "shop-build",
        "EnvironmentVariables": "[{\"name\":\"STAGE\",\"value\":\"prod\",\"type\":\"PLAINTEXT\"}]"},
      "inputArtifacts": [{"name": "SourceArtifact"}]}]}]},
 "metadata": {"pipelineArn": "arn:aws:codepipeline:eu-west-1:123456789012:shop"}}"#,
    )
    .unwrap();
    let out = ok(controller
        .cli()
        .args(["pipeline", "import"])
        .arg(&definition)
        .args(["--map", &format!("repo:shop={}", repo.display())]));
    assert_eq!(out, "Created pipeline \"shop\" (version 1) from pipeline\n");
    let agent = dir.path().join("agent");
    controller.join_agent(&agent, "");
    let _agent = run_agent(&agent, 1);
    let id = controller.start_pipeline("shop");
    let execution = controller.wait_finished(&id, Duration::from_secs(180));
    assert_eq!(execution["status"], "Succeeded", "{execution:#}");
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let log = controller.logs(&id, "Build/Build");
    assert!(
        log.contains(&format!("stage=prod commit={}", commit.trim())),
        "{log}"
    );
}

#[test]
fn dry_run_prints_stage_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let definition = dir.path().join("gated.json");
    std::fs::write(
        &definition,
        r##"{"pipeline": {"name": "gated", "pipelineType": "V2",
  "stages": [
    {"name": "Source", "actions": [{"name": "Get",
      "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeCommit", "version": "1"},
      "configuration": {"RepositoryName": "shop", "BranchName": "main", "PollForSourceChanges": "false"},
      "outputArtifacts": [{"name": "Src"}], "namespace": "Src"}]},
    {"name": "Build", "actions": [{"name": "Make",
      "actionTypeId": {"category": "Compute", "owner": "AWS", "provider": "Commands", "version": "1"},
      "commands": ["make"], "inputArtifacts": [{"name": "Src"}]}],
     "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [{"name": "OnlyMain",
       "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
       "configuration": {"Variable": "#{Src.BranchName}", "Value": "main", "Operator": "EQ"}}]}]},
     "onFailure": {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}}}]}}"##,
    )
    .unwrap();
    let (output, stdout, stderr) = run(offline()
        .args(["pipeline", "import", "--dry-run"])
        .arg(&definition)
        .args(["--map", "repo:shop=https://git.example.com/shop.git"]));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for expected in [
        "    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - name: OnlyMain
              ruleTypeId: {category: Rule, owner: AWS, provider: VariableCheck, version: \"1\"}
              configuration:
                Operator: EQ
                Value: main
                Variable: \"#{Src.BranchName}\"
",
        "    onFailure:
      result: RETRY
      retryConfiguration: {retryMode: ALL_ACTIONS}
",
    ] {
        assert!(stdout.contains(expected), "{expected}\nnot in:\n{stdout}");
    }
    assert!(
        stderr.contains("1 pipeline converted, 0 errors"),
        "{stderr}"
    );
}
