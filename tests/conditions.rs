//! End-to-end tests of stage beforeEntry conditions: VariableCheck with FAIL and SKIP,
//! a DeploymentWindow that is closed, and overriding a failed condition. Real controller
//! and agent processes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_e2e::*;

/// Source → Deploy (guarded by `condition`) → After.
fn guarded(dir: &Path, name: &str, condition: &str) -> PathBuf {
    Pipeline::new(name)
        .header("variables:\n  - name: Env\n    defaultValue: staging")
        .stage(&format!(
            r#"  - name: Deploy
    beforeEntry:
      conditions:
        - {condition}
    actions:
      - name: Ship
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo shipped"}}
        inputArtifacts: [Code]
"#
        ))
        .build("After", "Report", "echo after")
        .write(dir)
}

const ENV_IS_PROD: &str = "rules: [{name: EnvIsProd, ruleTypeId: {category: Rule, owner: AWS, \
    provider: VariableCheck, version: \"1\"}, configuration: {Variable: \"#{variables.Env}\", \
    Value: prod, Operator: EQ}}]";

#[test]
fn a_variable_check_with_fail_blocks_staging_and_lets_prod_through() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(&guarded(
        dir.path(),
        "gated",
        &format!("{{result: FAIL, {ENV_IS_PROD}}}"),
    ));

    let id = controller.start_pipeline_with("gated", &[]);
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Failed", "{done:#}");
    let deploy = &done["stages"][1];
    assert_eq!(deploy["status"], "Failed", "{done:#}");
    assert_eq!(deploy["conditionStatus"], "Failed", "{done:#}");
    let summary = deploy["summary"].as_str().unwrap();
    assert!(
        summary.contains("rule EnvIsProd (VariableCheck) failed"),
        "{summary}"
    );
    assert!(
        summary.contains(r#"#{variables.Env} is "staging", so EQ "prod" does not hold"#),
        "{summary}"
    );
    assert_eq!(done["statusSummary"], summary);
    // The guarded stage's action never ran, nor did the stage after it.
    assert!(
        deploy["actions"][0]["attempts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(done["stages"][2]["status"].is_null(), "{done:#}");
    // The text view shows the reason.
    let text = ok(controller.cli().args(["execution", "get", &id]));
    assert!(
        text.contains("beforeEntry: beforeEntry condition"),
        "{text}"
    );
    // A retry does not bypass the condition; it points at override-condition.
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "retry", &id, "--stage", "Deploy"]));
    assert!(!out.status.success());
    assert!(stderr.contains("override-condition"), "{stderr}");

    let id = controller.start_pipeline_with("gated", &["--variable", "Env=prod"]);
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["stages"][1]["conditionStatus"], "Succeeded");
    assert!(
        done["stages"][1]["summary"]
            .as_str()
            .unwrap()
            .contains(r#"#{variables.Env} is "prod" (EQ "prod")"#),
        "{done:#}"
    );
    assert_eq!(done["stages"][2]["status"], "Succeeded", "{done:#}");
}

#[test]
fn a_variable_check_with_skip_skips_the_stage_and_runs_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(&guarded(
        dir.path(),
        "skippy",
        &format!("{{result: SKIP, {ENV_IS_PROD}}}"),
    ));

    let id = controller.start_pipeline_with("skippy", &[]);
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let deploy = &done["stages"][1];
    assert_eq!(deploy["status"], "Skipped", "{done:#}");
    assert_eq!(deploy["conditionStatus"], "Skipped", "{done:#}");
    assert!(
        deploy["summary"]
            .as_str()
            .unwrap()
            .contains("(result SKIP): rule EnvIsProd"),
        "{done:#}"
    );
    assert!(
        deploy["actions"][0]["attempts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(done["stages"][2]["status"], "Succeeded", "{done:#}");
    assert_eq!(done["stages"][2]["actions"][0]["status"], "Succeeded");

    // A SKIP condition cannot be overridden.
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "override-condition", &id, "--stage", "Deploy"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("SKIP, which cannot be overridden"),
        "{stderr}"
    );
}

#[test]
fn a_closed_deployment_window_fails_until_a_person_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    // Twelve hours from now (UTC): the window cannot be open during this test.
    let hour = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 12)
        % 24;
    let condition = format!(
        "{{rules: [{{name: NightOnly, ruleTypeId: {{category: Rule, owner: AWS, provider: \
         DeploymentWindow, version: \"1\"}}, configuration: {{Cron: \"* {hour} * * *\", \
         TimeZone: UTC}}}}]}}"
    );
    controller.create_pipeline(&guarded(dir.path(), "windowed", &condition));

    let id = controller.start_pipeline_with("windowed", &[]);
    let failed = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    assert_eq!(failed["stages"][1]["status"], "Failed");
    let summary = failed["statusSummary"].as_str().unwrap();
    assert!(
        summary.contains("rule NightOnly (DeploymentWindow) failed"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "outside the deployment window \"* {hour} * * *\" (UTC); it next opens at"
        )),
        "{summary}"
    );

    let overridden =
        controller.json(&["execution", "override-condition", &id, "--stage", "Deploy"]);
    assert_eq!(overridden["id"], id.as_str(), "{overridden:#}");
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let deploy = &done["stages"][1];
    assert_eq!(deploy["status"], "Succeeded", "{done:#}");
    assert_eq!(deploy["conditionStatus"], "Overridden", "{done:#}");
    assert!(
        deploy["overriddenBy"].as_str().unwrap().ends_with("(CLI)"),
        "{done:#}"
    );
    assert!(deploy["overriddenAtMs"].as_i64().unwrap() > 0);
    let summary = deploy["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("beforeEntry condition overridden by "),
        "{summary}"
    );
    assert!(
        summary.contains("it had failed: beforeEntry condition"),
        "{summary}"
    );
    assert_eq!(deploy["actions"][0]["status"], "Succeeded");
    assert_eq!(done["stages"][2]["status"], "Succeeded");

    // Once overridden, it cannot be overridden again.
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "override-condition", &id, "--stage", "Deploy"]));
    assert!(!out.status.success());
    assert!(stderr.contains("already overridden"), "{stderr}");
}
