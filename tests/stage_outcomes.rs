//! End-to-end tests of what happens around a stage's actions: Commands rules run on an
//! agent (beforeEntry with SKIP, onSuccess with FAIL and an override), onFailure's one
//! automatic retry, and ROLLBACK executions, automatic (onSuccess and onFailure) and by
//! hand. Real controller and agent processes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::*;

const MINUTE: Duration = Duration::from_secs(60);

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn attempts(stage: &Value, action: usize) -> Vec<Value> {
    stage["actions"][action]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn commands_rules_run_on_an_agent_and_a_failed_on_success_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("health.txt"), "degraded\n").unwrap();
    let definition = write(
        dir.path(),
        "checked.yaml",
        &format!(
            r##"name: checked
variables: [{{name: Want, defaultValue: healthy}}]
stages:
  - name: Source
    actions:
      - name: Snapshot
        actionTypeId: {{category: Source, provider: directory}}
        configuration: {{Path: {}}}
        outputArtifacts: [Code]
  - name: Deploy
    actions:
      - name: Ship
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo shipped"}}
        inputArtifacts: [Code]
    onSuccess:
      conditions:
        - result: FAIL
          rules:
            - name: Healthy
              ruleTypeId: {{category: Rule, provider: Commands}}
              inputArtifacts: [Code]
              commands:
                - 'echo "checking for #{{variables.Want}}"'
                - 'grep -q "#{{variables.Want}}" health.txt'
  - name: Optional
    beforeEntry:
      conditions:
        - result: SKIP
          rules:
            - name: OnlyOnFridays
              ruleTypeId: {{category: Rule, provider: Commands}}
              commands: ["exit 3"]
    actions:
      - name: Extra
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo extra"}}
        inputArtifacts: [Code]
  - name: Final
    actions:
      - name: Report
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo final"}}
        inputArtifacts: [Code]
"##,
            source.display()
        ),
    );
    controller.create_pipeline(&definition);

    let id = controller.start_pipeline_with("checked", &[]);
    let done = controller.wait_finished(&id, MINUTE);
    assert_eq!(done["status"], "Failed", "{done:#}");
    let deploy = &done["stages"][1];
    assert_eq!(deploy["status"], "Failed", "{done:#}");
    assert_eq!(deploy["onSuccessStatus"], "Failed", "{done:#}");
    assert_eq!(attempts(deploy, 0)[0]["status"], "Succeeded");
    let runs = deploy["ruleRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{done:#}");
    assert_eq!(runs[0]["actionName"], "onSuccess:Healthy");
    assert_eq!(runs[0]["status"], "Failed");
    assert!(
        runs[0]["agentId"].is_string(),
        "it ran on an agent: {done:#}"
    );
    let summary = deploy["onSuccessSummary"].as_str().unwrap();
    assert!(
        summary.contains("rule Healthy (Commands) failed: command exited with status 1"),
        "{summary}"
    );
    assert!(
        done["statusSummary"]
            .as_str()
            .unwrap()
            .contains("onSuccess condition of stage Deploy not met")
    );
    assert!(done["stages"][2]["status"].is_null(), "{done:#}");
    // The rule's log, with its variables resolved, is there like an action's.
    let log = controller.logs(&id, "Deploy/onSuccess:Healthy");
    assert!(log.contains("checking for healthy"), "{log}");
    let text = ok(controller.cli().args(["execution", "get", &id]));
    assert!(
        text.contains("onSuccess: onSuccess condition of stage Deploy not met"),
        "{text}"
    );
    assert!(text.contains("rule onSuccess:Healthy"), "{text}");

    // Overriding it lets the stage succeed; the next stage's Commands rule fails with
    // result SKIP, so that stage is skipped and the execution goes on.
    ok(controller.cli().args([
        "execution",
        "override-condition",
        &id,
        "--stage",
        "Deploy",
        "--condition",
        "on-success",
    ]));
    let done = controller.wait_finished(&id, MINUTE);
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let deploy = &done["stages"][1];
    assert_eq!(deploy["status"], "Succeeded");
    assert_eq!(deploy["onSuccessStatus"], "Overridden");
    assert!(
        deploy["onSuccessSummary"]
            .as_str()
            .unwrap()
            .starts_with("onSuccess condition overridden by "),
        "{done:#}"
    );
    let optional = &done["stages"][2];
    assert_eq!(optional["status"], "Skipped", "{done:#}");
    assert_eq!(optional["conditionStatus"], "Skipped");
    assert!(attempts(optional, 0).is_empty());
    assert_eq!(optional["ruleRuns"][0]["status"], "Failed");
    assert_eq!(done["stages"][3]["status"], "Succeeded");
    // Nothing is left to override.
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "override-condition", &id, "--stage", "Deploy"]));
    assert!(!out.status.success());
    assert!(stderr.contains("cannot be overridden"), "{stderr}");

    // When the rule passes, the stage succeeds on its own.
    std::fs::write(source.join("health.txt"), "healthy\n").unwrap();
    let id = controller.start_pipeline_with("checked", &[]);
    let done = controller.wait_finished(&id, MINUTE);
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["stages"][1]["onSuccessStatus"], "Succeeded");
    let summary = done["stages"][1]["onSuccessSummary"].as_str().unwrap();
    assert!(
        summary.contains("rule Healthy (Commands) passed on "),
        "{summary}"
    );
}

#[test]
fn on_failure_retries_a_stage_once_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let counter = dir.path().join("tries");
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "a\n").unwrap();
    // Fails until it has been tried `Needed` times.
    let definition = write(
        dir.path(),
        "flaky.yaml",
        &format!(
            r##"name: flaky
variables: [{{name: Needed, defaultValue: "2"}}]
stages:
  - name: Source
    actions:
      - name: Snapshot
        actionTypeId: {{category: Source, provider: directory}}
        configuration: {{Path: {source}}}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Steady
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo steady"}}
        inputArtifacts: [Code]
      - name: Flaky
        actionTypeId: {{category: Build, provider: commands}}
        inputArtifacts: [Code]
        configuration:
          Commands: |
            n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))
            echo $n > {counter}
            echo "try $n"
            test $n -ge #{{variables.Needed}}
    onFailure:
      result: RETRY
      retryConfiguration: {{retryMode: FAILED_ACTIONS}}
"##,
            counter = counter.display(),
            source = source.display()
        ),
    );
    controller.create_pipeline(&definition);

    let id = controller.start_pipeline_with("flaky", &[]);
    let done = controller.wait_finished(&id, MINUTE);
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let build = &done["stages"][1];
    assert_eq!(build["retries"], 1);
    assert_eq!(build["autoRetries"], 1);
    assert_eq!(build["onFailureStatus"], "Succeeded");
    assert!(
        build["onFailureSummary"]
            .as_str()
            .unwrap()
            .starts_with("retried automatically (FAILED_ACTIONS) after: Action Build/Flaky failed"),
        "{done:#}"
    );
    // Only the failed action ran again; both of its attempts are kept.
    assert_eq!(attempts(build, 0).len(), 1, "{done:#}");
    let flaky = attempts(build, 1);
    assert_eq!(flaky.len(), 2, "{done:#}");
    assert_eq!(flaky[0]["status"], "Failed");
    assert_eq!(flaky[1]["status"], "Succeeded");

    // Once only: an action that needs a third try fails the execution after one retry.
    std::fs::remove_file(&counter).unwrap();
    let id = controller.start_pipeline_with("flaky", &["--variable", "Needed=3"]);
    let done = controller.wait_finished(&id, MINUTE);
    assert_eq!(done["status"], "Failed", "{done:#}");
    let build = &done["stages"][1];
    assert_eq!(build["autoRetries"], 1);
    assert_eq!(attempts(build, 1).len(), 2, "{done:#}");
    assert!(
        done["statusSummary"]
            .as_str()
            .unwrap()
            .ends_with("it had already been retried automatically once"),
        "{done:#}"
    );
    // A retry by hand is still possible, and this time the third try passes.
    ok(controller
        .cli()
        .args(["execution", "retry", &id, "--stage", "Build", "--wait"]));
    let done = controller.execution(&id);
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["stages"][1]["retries"], 2);
    assert_eq!(done["stages"][1]["autoRetries"], 1);
}

/// Source (a directory) → Deploy: copies version.txt and the Release variable into a
/// "live" directory, then checks it; onSuccess and onFailure roll back.
fn rollback_pipeline(dir: &Path, live: &Path, source: &Path) -> std::path::PathBuf {
    write(
        dir,
        "shop.yaml",
        &format!(
            r##"name: shop
variables: [{{name: Release, defaultValue: unnamed}}]
stages:
  - name: Source
    actions:
      - name: Snapshot
        actionTypeId: {{category: Source, provider: directory}}
        configuration: {{Path: {source}}}
        outputArtifacts: [Code]
  - name: Deploy
    actions:
      - name: Ship
        actionTypeId: {{category: Build, provider: commands}}
        configuration:
          Commands: |
            if grep -q crash version.txt; then echo "crashed"; exit 1; fi
            cp version.txt {live}/version.txt
            echo "#{{variables.Release}}" > {live}/release.txt
            echo "#{{codepipeline.PipelineExecutionId}}" > {live}/by.txt
        inputArtifacts: [Code]
    onSuccess:
      conditions:
        - result: ROLLBACK
          rules:
            - name: Smoke
              ruleTypeId: {{category: Rule, provider: Commands}}
              commands: ["! grep -q broken {live}/version.txt"]
    onFailure:
      result: ROLLBACK
"##,
            source = source.display(),
            live = live.display()
        ),
    )
}

fn live(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// The ROLLBACK execution a failed execution's summary names.
fn rollback_of(controller: &Controller, failed: &Value) -> Value {
    let summary = failed["statusSummary"].as_str().unwrap();
    let id = summary
        .rsplit("with execution ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    controller.wait_finished(&id, MINUTE)
}

#[test]
fn stages_roll_back_to_the_last_good_execution_automatically_and_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let source = dir.path().join("src");
    let live_dir = dir.path().join("live");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::create_dir_all(&live_dir).unwrap();
    controller.create_pipeline(&rollback_pipeline(dir.path(), &live_dir, &source));
    let version = |v: &str| std::fs::write(source.join("version.txt"), format!("{v}\n")).unwrap();

    // v1 goes live.
    version("v1");
    let good = controller.start_pipeline_with("shop", &["--variable", "Release=one"]);
    let done = controller.wait_finished(&good, MINUTE);
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["executionType"], "STANDARD");
    assert_eq!(live(&live_dir, "version.txt"), "v1");

    // v2 deploys but fails its smoke test: onSuccess rolls the stage back to v1, with
    // v1's artifact and variables, in a new execution of type ROLLBACK.
    version("v2 broken");
    let bad = controller.start_pipeline_with("shop", &["--variable", "Release=two"]);
    let failed = controller.wait_finished(&bad, MINUTE);
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    assert_eq!(failed["stages"][1]["onSuccessStatus"], "Failed");
    let rollback = rollback_of(&controller, &failed);
    assert_eq!(rollback["status"], "Succeeded", "{rollback:#}");
    assert_eq!(rollback["executionType"], "ROLLBACK");
    assert_eq!(rollback["rollbackTarget"], good.as_str());
    assert_eq!(rollback["triggerType"], "AutomatedRollback");
    assert!(
        rollback["triggerDetail"]
            .as_str()
            .unwrap()
            .contains(&format!("stage Deploy of execution {bad} failed")),
        "{rollback:#}"
    );
    // Only the rolled-back stage ran, and no condition was checked in it.
    assert!(rollback["stages"][0]["status"].is_null(), "{rollback:#}");
    assert_eq!(rollback["stages"][1]["status"], "Succeeded");
    assert!(rollback["stages"][1]["ruleRuns"].is_null(), "{rollback:#}");
    assert_eq!(live(&live_dir, "version.txt"), "v1");
    assert_eq!(live(&live_dir, "release.txt"), "one");
    assert_eq!(live(&live_dir, "by.txt"), rollback["id"].as_str().unwrap());
    let text = ok(controller
        .cli()
        .args(["execution", "get", rollback["id"].as_str().unwrap()]));
    assert!(
        text.contains(&format!("ROLLBACK of stage Deploy to execution {good}")),
        "{text}"
    );

    // v3 goes live; then its action crashes in v4: onFailure rolls back to v3.
    version("v3");
    let third = controller.start_pipeline_with("shop", &["--variable", "Release=three"]);
    assert_eq!(
        controller.wait_finished(&third, MINUTE)["status"],
        "Succeeded"
    );
    version("v4 crash");
    let crash = controller.start_pipeline_with("shop", &[]);
    let failed = controller.wait_finished(&crash, MINUTE);
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    assert_eq!(failed["stages"][1]["onFailureStatus"], "Succeeded");
    let rollback = rollback_of(&controller, &failed);
    assert_eq!(rollback["status"], "Succeeded", "{rollback:#}");
    assert_eq!(rollback["rollbackTarget"], third.as_str());
    assert_eq!(live(&live_dir, "version.txt"), "v3");
    assert_eq!(live(&live_dir, "release.txt"), "three");

    // By hand, to a chosen execution.
    let manual = controller.json(&[
        "pipeline", "rollback", "shop", "--stage", "Deploy", "--target", &good, "--wait",
    ]);
    assert_eq!(manual["status"], "Succeeded", "{manual:#}");
    assert_eq!(manual["triggerType"], "ManualRollback");
    assert_eq!(manual["rollbackTarget"], good.as_str());
    assert_eq!(live(&live_dir, "version.txt"), "v1");
    // By hand without a target: the newest good one before the latest to enter the
    // stage (that is the manual rollback itself, so v3's execution).
    let again = controller.json(&[
        "pipeline", "rollback", "shop", "--stage", "Deploy", "--wait",
    ]);
    assert_eq!(again["rollbackTarget"], third.as_str(), "{again:#}");
    assert_eq!(live(&live_dir, "version.txt"), "v3");

    // What cannot be rolled back says why.
    for (args, expected) in [
        (vec!["--stage", "Source"], "is the first stage"),
        (
            vec!["--stage", "Deploy", "--target", &bad],
            "stage Deploy did not succeed in it",
        ),
        (
            vec![
                "--stage",
                "Deploy",
                "--target",
                manual["id"].as_str().unwrap(),
            ],
            "it is itself a ROLLBACK",
        ),
    ] {
        let (out, _, stderr) = run(controller
            .cli()
            .args(["pipeline", "rollback", "shop"])
            .args(&args));
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
