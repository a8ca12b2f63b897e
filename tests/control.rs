//! End-to-end tests of the controls people use on a running execution: stop and wait,
//! and abandon. Real controller and agent processes, real plugins and processes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use sluice_e2e::*;

/// Source (directory) → Build (one `commands` action) → Ship (one `commands` action).
fn three_stages(dir: &Path, name: &str, build: &str) -> std::path::PathBuf {
    Pipeline::new(name)
        .build("Build", "Work", build)
        .build("Ship", "Publish", "echo shipped")
        .write(dir)
}

fn action(execution: &serde_json::Value, stage: usize) -> &serde_json::Value {
    &execution["stages"][stage]["actions"][0]
}

/// Waits until the Build action runs on the agent.
fn wait_running(controller: &Controller, id: &str) {
    controller.wait_phase(id, 1, "running", Duration::from_secs(60));
}

/// Whether a process with `needle` in its command line is alive.
fn process_alive(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().any(|entry| {
        let path = entry.unwrap().path().join("cmdline");
        std::fs::read(path)
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

#[test]
fn stop_and_wait_lets_running_actions_finish_and_starts_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(&three_stages(
        dir.path(),
        "stoppable",
        "sleep 2; echo built",
    ));

    let id = controller.start_pipeline("stoppable");
    wait_running(&controller, &id);
    let stopping = controller.json(&["execution", "stop", &id, "--reason", "bad change"]);
    assert_eq!(stopping["status"], "Stopping", "{stopping:#}");
    // A second stop-and-wait is refused; it says how to abandon instead.
    let (out, _, stderr) = run(controller.cli().args(["execution", "stop", &id]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("already stopping"), "{stderr}");
    assert!(stderr.contains("--abandon"), "{stderr}");

    let stopped = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(stopped["status"], "Stopped", "{stopped:#}");
    assert_eq!(
        stopped["statusSummary"],
        "Execution stopped by request: bad change"
    );
    // The running action finished; the next stage never started.
    assert_eq!(action(&stopped, 1)["status"], "Succeeded", "{stopped:#}");
    assert_eq!(stopped["stages"][1]["status"], "Stopped");
    assert!(stopped["stages"][2]["status"].is_null(), "{stopped:#}");
    assert!(
        action(&stopped, 2)["attempts"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Only an execution in progress can be stopped.
    let (out, _, stderr) = run(controller.cli().args(["execution", "stop", &id]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("is Stopped; only an execution in progress can be stopped"),
        "{stderr}"
    );
}

#[test]
fn abandon_marks_running_actions_abandoned_and_kills_their_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    // A marker no other process on the machine has in its command line.
    let marker = format!(
        "{}.{}",
        30 + std::process::id() % 100,
        std::process::id() % 1000
    );
    controller.create_pipeline(&three_stages(
        dir.path(),
        "stoppable",
        &format!("sleep {marker}; echo never"),
    ));

    let id = controller.start_pipeline("stoppable");
    wait_running(&controller, &id);
    wait_for("the sleep to start", Duration::from_secs(30), || {
        process_alive(&format!("sleep {marker}")).then_some(())
    });
    let stopped = controller.json(&["execution", "stop", &id, "--abandon", "--wait"]);
    assert_eq!(stopped["status"], "Stopped", "{stopped:#}");
    let work = action(&stopped, 1);
    assert_eq!(work["status"], "Abandoned", "{stopped:#}");
    let attempt = &work["attempts"][0];
    assert_eq!(
        attempt["error"],
        "abandoned: Execution abandoned by request"
    );
    assert!(stopped["stages"][2]["status"].is_null(), "{stopped:#}");
    // The agent was told to cancel: the plugin and its process group are gone.
    wait_for(
        "the abandoned process to die",
        Duration::from_secs(30),
        || (!process_alive(&format!("sleep {marker}"))).then_some(()),
    );

    // The agent is free again and runs the next execution to the end.
    controller.create_pipeline(&three_stages(dir.path(), "quick", "echo quick"));
    let next = controller.start_pipeline("quick");
    let next = controller.wait_finished(&next, Duration::from_secs(60));
    assert_eq!(next["status"], "Succeeded", "{next:#}");
}

#[test]
fn a_start_overrides_variables_and_revisions_and_is_idempotent_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let (repo, first, _) = two_commit_repo(&dir.path().join("repo"));
    let file = Pipeline::new("vars")
        .header("variables:\n  - {name: Env, defaultValue: staging}")
        .git_source(&repo)
        .build(
            "Build",
            "Show",
            "echo env=#{variables.Env} commit=#{Src.CommitId} file=$(cat v.txt)",
        )
        .write(dir.path());
    controller.create_pipeline(&file);

    // The defaults: the branch head and the declared value.
    let plain = controller.start_pipeline("vars");
    let plain = controller.wait_finished(&plain, Duration::from_secs(60));
    assert_eq!(plain["status"], "Succeeded", "{plain:#}");
    assert_eq!(plain["variables"]["Env"], "staging");
    let log = controller.logs(plain["id"].as_str().unwrap(), "Build/Show");
    assert!(log.contains("env=staging commit="), "{log}");
    assert!(log.contains("file=two"), "{log}");

    // Overrides, recorded in history and used by the actions.
    let start = |extra: &[&str]| {
        let mut cmd = controller.cli();
        cmd.args(["pipeline", "start", "vars", "-o", "json"])
            .args(extra);
        run(&mut cmd)
    };
    let args = [
        "--variable",
        "Env=prod",
        "--revision",
        &format!("Checkout={first}"),
        "--idempotency-token",
        "deploy-42",
    ];
    let (out, stdout, stderr) = start(&args);
    assert!(out.status.success(), "{stderr}");
    let started: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["variables"]["Env"], "prod");
    assert_eq!(done["sourceRevisions"]["Checkout"], first.as_str());
    let checkout = &done["stages"][0]["actions"][0]["attempts"][0];
    assert_eq!(
        checkout["resolvedConfiguration"]["CommitId"],
        first.as_str()
    );
    let log = controller.logs(&id, "Build/Show");
    assert!(
        log.contains(&format!("env=prod commit={first} file=one")),
        "{log}"
    );
    let shown = ok(controller.cli().args(["execution", "get", &id]));
    assert!(shown.contains("variable   Env = prod"), "{shown}");

    // The same token again: the same execution, nothing new started.
    let (_, again, _) = start(&args);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["id"], id.as_str());
    let list = controller.json(&["execution", "list", "--pipeline", "vars"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Overrides the pipeline does not declare, or that are not commits, are refused.
    let (out, _, stderr) = start(&["--variable", "Nope=1", "--revision", "Checkout=main"]);
    assert!(!out.status.success());
    assert!(
        stderr.contains("variables.Nope: pipeline vars declares no variable Nope (declared: Env)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sourceRevisions.Checkout: \"main\" is not a commit id"),
        "{stderr}"
    );
}

/// Source → Build with `Steady` (always succeeds) and `Flaky` (fails while `fail` exists)
/// in parallel → Ship.
fn retryable(dir: &Path, fail: &Path) -> std::path::PathBuf {
    Pipeline::new("retryable")
        .stage(&format!(
            r#"  - name: Build
    actions:
      - name: Steady
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo steady"}}
        inputArtifacts: [Code]
      - name: Flaky
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "test ! -e {}"}}
        inputArtifacts: [Code]
"#,
            fail.display()
        ))
        .build("Ship", "Publish", "echo shipped")
        .write(dir)
}

/// The attempts of an action in stage `stage` as (attempt number, status).
fn attempts_of(execution: &serde_json::Value, stage: usize, name: &str) -> Vec<(u64, String)> {
    execution["stages"][stage]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_failed_stage_is_retried_with_the_same_execution_id_and_every_attempt_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let fail = dir.path().join("fail");
    std::fs::write(&fail, "").unwrap();
    controller.create_pipeline(&retryable(dir.path(), &fail));

    // FAILED_ACTIONS: only Flaky runs again; the execution goes on to Ship.
    let first = controller.start_pipeline("retryable");
    let failed = controller.wait_finished(&first, Duration::from_secs(60));
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "retry", &first, "--stage", "Ship"]));
    assert!(!out.status.success());
    assert!(stderr.contains("stage Ship of execution"), "{stderr}");
    assert!(stderr.contains("never started"), "{stderr}");
    std::fs::remove_file(&fail).unwrap();
    let retried = controller.json(&["execution", "retry", &first, "--stage", "Build", "--wait"]);
    assert_eq!(retried["id"], first.as_str());
    assert_eq!(retried["status"], "Succeeded", "{retried:#}");
    assert_eq!(
        attempts_of(&retried, 1, "Steady"),
        [(1, "Succeeded".into())]
    );
    assert_eq!(
        attempts_of(&retried, 1, "Flaky"),
        [(1, "Failed".into()), (2, "Succeeded".into())]
    );
    assert_eq!(
        attempts_of(&retried, 2, "Publish"),
        [(1, "Succeeded".into())]
    );
    // A stage that succeeded cannot be retried.
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "retry", &first, "--stage", "Build"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("only a failed or stopped stage can be retried"),
        "{stderr}"
    );

    // ALL_ACTIONS: every action of the stage runs again.
    std::fs::write(&fail, "").unwrap();
    let second = controller.start_pipeline("retryable");
    assert_eq!(
        controller.wait_finished(&second, Duration::from_secs(60))["status"],
        "Failed"
    );
    // Only the latest execution in a stage can be retried.
    let third = controller.start_pipeline("retryable");
    controller.wait_finished(&third, Duration::from_secs(60));
    let (out, _, stderr) =
        run(controller
            .cli()
            .args(["execution", "retry", &second, "--stage", "Build"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "execution {third} reached stage Build after {second}"
        )),
        "{stderr}"
    );
    std::fs::remove_file(&fail).unwrap();
    let all = controller.json(&[
        "execution",
        "retry",
        &third,
        "--stage",
        "Build",
        "--all",
        "--wait",
    ]);
    assert_eq!(all["status"], "Succeeded", "{all:#}");
    assert_eq!(
        attempts_of(&all, 1, "Steady"),
        [(1, "Succeeded".into()), (2, "Succeeded".into())]
    );
    assert_eq!(
        attempts_of(&all, 1, "Flaky"),
        [(1, "Failed".into()), (2, "Succeeded".into())]
    );
}

/// Source → Build (`sleep SECONDS`) → Ship, in `mode`.
fn modal(dir: &Path, name: &str, mode: &str, seconds: &str) -> std::path::PathBuf {
    Pipeline::new(name)
        .header(&format!("executionMode: {mode}"))
        .build("Build", "Work", &format!("sleep {seconds}"))
        .build("Ship", "Publish", "echo shipped")
        .write(dir)
}

/// (start, finish) of the stage called `stage`.
fn stage_span(execution: &serde_json::Value, stage: &str) -> (i64, i64) {
    let s = execution["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap();
    (
        s["startedAtMs"].as_i64().unwrap(),
        s["finishedAtMs"].as_i64().unwrap(),
    )
}

/// Waits until the execution waits in front of `stage`.
fn wait_waiting(controller: &Controller, id: &str, stage: &str) -> serde_json::Value {
    controller.wait_waiting(id, stage, Duration::from_secs(60))
}

#[test]
fn executions_wait_in_front_of_a_disabled_transition_until_it_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(&modal(dir.path(), "gated", "SUPERSEDED", "0"));

    let (out, _, stderr) = run(controller.cli().args([
        "pipeline",
        "disable-transition",
        "gated",
        "Source",
        "--reason",
        "x",
    ]));
    assert!(!out.status.success());
    assert!(stderr.contains("no inbound transition"), "{stderr}");
    ok(controller.cli().args([
        "pipeline",
        "disable-transition",
        "gated",
        "Ship",
        "--reason",
        "release freeze",
    ]));
    let id = controller.start_pipeline("gated");
    let waiting = wait_waiting(&controller, &id, "Ship");
    assert_eq!(waiting["status"], "InProgress");
    assert!(
        waiting["statusSummary"].as_str().unwrap().starts_with(
            "waiting: the transition into stage Ship is disabled: release freeze (by "
        ),
        "{waiting:#}"
    );
    assert!(waiting["stages"][2]["status"].is_null(), "{waiting:#}");
    let transitions = controller.json(&["pipeline", "transitions", "gated"]);
    assert_eq!(transitions[0]["stageName"], "Ship");
    assert_eq!(transitions[0]["enabled"], false);
    assert!(transitions[0]["changedAtMs"].as_i64().unwrap() > 0);

    ok(controller
        .cli()
        .args(["pipeline", "enable-transition", "gated", "Ship"]));
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(done["waitingForStage"].is_null());
}

#[test]
fn superseded_mode_keeps_only_the_newest_waiting_execution() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 4);
    controller.create_pipeline(&modal(dir.path(), "sup", "SUPERSEDED", "3"));

    let first = controller.start_pipeline("sup");
    wait_running_in(&controller, &first, 1);
    let second = controller.start_pipeline("sup");
    let waiting = wait_waiting(&controller, &second, "Build");
    assert!(
        waiting["statusSummary"]
            .as_str()
            .unwrap()
            .contains(&format!("stage Build is in use by execution {first}")),
        "{waiting:#}"
    );
    let third = controller.start_pipeline("sup");
    wait_waiting(&controller, &third, "Build");

    let second = controller.wait_finished(&second, Duration::from_secs(60));
    assert_eq!(second["status"], "Superseded", "{second:#}");
    assert_eq!(
        second["statusSummary"],
        format!("Superseded by execution {third} while waiting in front of stage Build")
    );
    let first = controller.wait_finished(&first, Duration::from_secs(60));
    let third = controller.wait_finished(&third, Duration::from_secs(60));
    assert_eq!(first["status"], "Succeeded");
    assert_eq!(third["status"], "Succeeded", "{third:#}");
    // One execution at a time in Build.
    assert!(stage_span(&third, "Build").0 >= stage_span(&first, "Build").1);
}

/// Waits until the execution's stage `stage` has a running attempt.
fn wait_running_in(controller: &Controller, id: &str, stage: usize) {
    controller.wait_phase(id, stage, "running", Duration::from_secs(60));
}

#[test]
fn queued_mode_runs_every_execution_one_stage_at_a_time_and_parallel_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 4);
    controller.create_pipeline(&modal(dir.path(), "fifo", "QUEUED", "1"));
    controller.create_pipeline(&modal(dir.path(), "wide", "PARALLEL", "2"));

    let ids: Vec<String> = (0..3).map(|_| controller.start_pipeline("fifo")).collect();
    let done: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| controller.wait_finished(id, Duration::from_secs(90)))
        .collect();
    for e in &done {
        assert_eq!(e["status"], "Succeeded", "{e:#}");
    }
    // First in, first out, never two in Build at once.
    for pair in done.windows(2) {
        assert!(
            stage_span(&pair[1], "Build").0 >= stage_span(&pair[0], "Build").1,
            "{:?} then {:?}",
            stage_span(&pair[0], "Build"),
            stage_span(&pair[1], "Build")
        );
    }

    let a = controller.start_pipeline("wide");
    let b = controller.start_pipeline("wide");
    let a = controller.wait_finished(&a, Duration::from_secs(60));
    let b = controller.wait_finished(&b, Duration::from_secs(60));
    assert_eq!(a["status"], "Succeeded");
    assert_eq!(b["status"], "Succeeded");
    let (a_start, a_end) = stage_span(&a, "Build");
    let (b_start, b_end) = stage_span(&b, "Build");
    assert!(
        b_start < a_end && a_start < b_end,
        "PARALLEL executions overlap in Build: {a_start}..{a_end} and {b_start}..{b_end}"
    );
}

/// An HTTP server on 127.0.0.1 that answers 200 and hands over each request body.
fn receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = http_receiver("/hooks/approvals", move |_, body| {
        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        200
    });
    (url, rx)
}

fn approval_pipeline(dir: &Path, name: &str, notify: &str) -> std::path::PathBuf {
    Pipeline::new(name)
        .stage(&format!(
            r#"  - name: Review
    actions:
      - name: Release
        actionTypeId: {{category: Approval, owner: Sluice, provider: manual, version: "1"}}
        configuration:
          NotificationUrl: "{notify}"
          CustomData: "Check the staging site first"
          ExternalEntityLink: "https://staging.example.com"
"#
        ))
        .build("Ship", "Publish", "echo shipped")
        .write(dir)
}

/// Waits until the Review/Release approval is pending.
fn wait_approval(controller: &Controller, id: &str) -> serde_json::Value {
    controller.wait_phase(id, 1, "approval", Duration::from_secs(60))
}

#[test]
fn manual_approvals_notify_wait_and_are_approved_rejected_or_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let (url, notifications) = receiver();
    controller.create_pipeline(&approval_pipeline(dir.path(), "gate", &url));

    // Pending: the notification carries the review link and the custom data.
    let id = controller.start_pipeline("gate");
    wait_approval(&controller, &id);
    let note: serde_json::Value = serde_json::from_str(
        &notifications
            .recv_timeout(Duration::from_secs(30))
            .expect("no notification"),
    )
    .unwrap();
    assert_eq!(note["executionId"], id.as_str());
    assert_eq!(note["stage"], "Review");
    assert_eq!(note["customData"], "Check the staging site first");
    assert_eq!(note["externalEntityLink"], "https://staging.example.com");
    assert_eq!(
        note["reviewLink"],
        format!("{}/api/v1/executions/{id}", controller.url)
    );
    assert_eq!(
        note["approveCommand"],
        format!("sluice execution approve {id} --stage Review --action Release")
    );
    let shown = ok(controller.cli().args(["execution", "get", &id]));
    assert!(shown.contains("waiting for approval until"), "{shown}");

    // Approved, with who, when and the comment; the execution goes on.
    let decided = ok(controller.cli().args([
        "execution",
        "approve",
        &id,
        "--stage",
        "Review",
        "--action",
        "Release",
        "--comment",
        "looks good",
    ]));
    assert!(decided.starts_with("Approved Review/Release"), "{decided}");
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let approval = &done["stages"][1]["actions"][0]["attempts"][0];
    assert!(
        approval["summary"]
            .as_str()
            .unwrap()
            .ends_with("(CLI): looks good"),
        "{approval:#}"
    );
    assert_eq!(approval["approval"]["decision"], "Approved");
    assert!(approval["approval"]["decidedAtMs"].is_number());
    assert!(approval["approval"]["notifiedAtMs"].is_number());
    // Deciding again is refused.
    let (out, _, stderr) = run(controller.cli().args([
        "execution",
        "approve",
        &id,
        "--stage",
        "Review",
        "--action",
        "Release",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("no approval is pending for Review/Release"),
        "{stderr}"
    );

    // Rejected: the action and its stage fail; Ship never runs.
    let id = controller.start_pipeline("gate");
    wait_approval(&controller, &id);
    ok(controller.cli().args([
        "execution",
        "reject",
        &id,
        "--stage",
        "Review",
        "--action",
        "Release",
        "--comment",
        "not today",
    ]));
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Failed", "{done:#}");
    assert_eq!(done["stages"][1]["status"], "Failed");
    let error = done["stages"][1]["actions"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap();
    assert!(
        error.starts_with("Rejected by ") && error.ends_with(": not today"),
        "{error}"
    );
    assert!(done["stages"][2]["status"].is_null());

    // Timed out: the deadline passes (moved into the past here) and the action fails.
    let id = controller.start_pipeline("gate");
    wait_approval(&controller, &id);
    let db = rusqlite::Connection::open(controller.data_dir.join("sluice.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE approvals SET expires_at_ms = 0 WHERE decision IS NULL",
        [],
    )
    .unwrap();
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Failed", "{done:#}");
    let attempt = &done["stages"][1]["actions"][0]["attempts"][0];
    assert_eq!(
        attempt["error"],
        "approval timed out: no one approved or rejected it in time"
    );
    assert_eq!(attempt["approval"]["decision"], "TimedOut");
}

#[test]
fn an_update_while_running_cancels_the_old_execution_after_its_current_stage() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let file = modal(dir.path(), "evolving", "SUPERSEDED", "2");
    controller.create_pipeline(&file);
    let old = controller.start_pipeline("evolving");
    wait_running_in(&controller, &old, 1);

    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("echo shipped", "echo shipped v2");
    std::fs::write(&file, text).unwrap();
    controller.update_pipeline(&file);

    let old = controller.wait_finished(&old, Duration::from_secs(60));
    assert_eq!(old["status"], "Cancelled", "{old:#}");
    assert_eq!(
        old["statusSummary"],
        "Cancelled: pipeline evolving was updated to version 2 before this execution \
         (version 1) could complete; start it again to run the new version"
    );
    // The stage it was in finished; the next one never started.
    assert_eq!(old["stages"][1]["status"], "Succeeded");
    assert!(old["stages"][2]["status"].is_null());

    let new = controller.start_pipeline("evolving");
    let new = controller.wait_finished(&new, Duration::from_secs(60));
    assert_eq!(new["status"], "Succeeded");
    assert_eq!(new["pipelineVersion"], 2);
}
